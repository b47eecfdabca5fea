/**
 * Where an offloaded decode step spends its time, per layer (GPU machine): the Llama-3-8B shape of
 * bench/offload.ts (every layer's K/V in pinned host memory, random weights and caches), one step
 * recorded eagerly with timing events on the main and the prediction's side stream
 * (OffloadPlan.timeline), for plain offload and for offload + prediction. Per layer: the exact
 * top-k, the main stream's stall waiting for the prediction, the gather (the missed rows with
 * prediction), sparse attention + merge, the rest of the layer until the next attention (output
 * projection, MLP, next norm/QKV, the next prediction's query); on the side stream the
 * prediction's top-k and gather. The sums say whether the side stream's work overlapped the
 * layer's own or ran after it.
 *
 *   deno run -A bench/offload_timeline.ts [--batch 1] [--context 65536] [--layers 4]
 *                                         [--row-cache-share S] [--prefetch-fraction F]
 *                                         [--graph]
 *
 * `--graph` records the marks inside the captured step graph (OffloadPlan.graphKey keeps such
 * graphs apart) and reads them from a replay, so the split carries no host launch cost: an eager
 * step with prediction ran 6 ms longer than its graph at B=1 64K (docs/perf-notes.md, "What a
 * host-memory gather costs the kernels beside it").
 *
 * `--prefetch-fraction F` makes the prediction prefetch only the top F of each budget
 * (OffloadOptions.prefetchFraction; default 1, the whole budget).
 *
 * `--row-cache-share S` adds plain offload with a row cache of S x the K/V bytes, timed after 32
 * warm-up steps that fill it (its fill kernel falls in the "rest" column).
 *
 * `--layers N` prints the first N layers in full (every layer counts in the sums). An eager step
 * pays the host's launch cost per kernel, so its total is also printed beside the graph-replayed
 * step's median: the per-layer split is meaningful where the two are close.
 */
import { intFlag, numberFlag, openCommand } from "../src/cli/front_door.ts";
import { requireGpu } from "../src/runtime/device.ts";
import { GpuDecoder } from "../src/decoding/gpu_decoder.ts";
import type { OffloadOptions } from "../src/runtime/offload_plan.ts";
import {
  type OffloadLayerTimes,
  offloadLayerTimes,
  StepTimeline,
} from "../src/runtime/step_timeline.ts";
import { UtilKernels } from "../src/runtime/util_kernels.ts";
import { formatTextTable } from "../src/util/text_table.ts";
import { LLAMA3_8B as C } from "./llama3_shape.ts";
import {
  fillRandomCache,
  firstTokens,
  hostKvCache,
  kvCacheBytes,
  offloadDecoderOptions,
} from "./random_cache.ts";
import { medianWallMs } from "../src/runtime/timing.ts";

const { values: args } = openCommand({
  name: "offload_timeline",
  usage:
    `deno run -A bench/offload_timeline.ts [--batch 1] [--context 65536] [--layers 4] [--row-cache-share S] [--prefetch-fraction F] [--graph]`,
  options: {
    "prefetch-fraction": { type: "string" },
    graph: { type: "boolean", default: false },
    "row-cache-share": { type: "string" },
    batch: { type: "string", default: "1" },
    context: { type: "string", default: "65536" },
    layers: { type: "string", default: "4" },
  },
});
const batch = intFlag("batch", args.batch, { min: 1, max: 16 });
const L = intFlag("context", args.context, { min: 1024 });
const shown = intFlag("layers", args.layers, { min: 0, max: C.numLayers });
const share = numberFlag("row-cache-share", args["row-cache-share"], { min: 0, max: 1 }) ?? 0;
const eager = !args.graph;
const fraction = numberFlag("prefetch-fraction", args["prefetch-fraction"], { min: 0.01, max: 1 });
const cuda = requireGpu("bench/offload_timeline.ts");
using util = new UtilKernels(cuda, "fp16");
/** Warm-up steps of the row-cache method (its cache fills from each step's selection). */
const ROW_CACHE_WARMUP = 32;
const maxContext = L + 64 + ROW_CACHE_WARMUP;
using cache = hostKvCache(cuda, batch, maxContext);
using fillStream = cuda.stream();
fillRandomCache(util, cache, batch, L, fillStream);
console.log(`${cuda.info.name}: Llama-3-8B shape, batch ${batch}, context ${L}, all K/V on host`);

const methods: [string, OffloadOptions][] = [
  ["offload", { mode: "selected" }],
  [
    fraction === undefined ? "offload + prediction" : `offload + prediction, prefetch ${fraction}`,
    { mode: "selected", prediction: true, prefetchFraction: fraction },
  ],
  ...(share > 0
    ? [[`offload + row cache ${share} of K/V`, {
      mode: "selected",
      rowCacheBytes: Math.floor(share * kvCacheBytes(batch, L)),
    }] as [string, OffloadOptions]]
    : []),
];
const fmt = (x: number | null) => (x === null ? "-" : (1000 * x).toFixed(0));
/** The table's columns after the layer: a name and the per-layer duration (ms) it shows. */
type Column = readonly [string, (t: OffloadLayerTimes) => number | null];
const COLUMNS: readonly Column[] = [
  ["top-k", (t) => t.topKMs],
  ["stall", (t) => t.stallMs],
  ["gather", (t) => t.gatherMs],
  ["attend", (t) => t.attendMs],
  ["rest", (t) => t.betweenMs],
  ["side top-k", (t) => t.sideTopKMs],
  ["side gather", (t) => t.sideGatherMs],
];
for (const [method, offload] of methods) {
  using dec = await GpuDecoder.create(
    cuda,
    { config: C, seed: 7, scale: 0.02 },
    offloadDecoderOptions(batch, maxContext, offload, cache),
  );
  let next = firstTokens(batch);
  for (let i = 0; offload.rowCacheBytes && i < ROW_CACHE_WARMUP; i++) {
    next = Array.from(dec.stepChoose(next));
  }
  const graphMs = medianWallMs(
    () => {
      next = Array.from(dec.stepChoose(next));
    },
    5,
    2,
  );
  using timeline = new StepTimeline(cuda, !eager);
  dec.offload!.timeline = timeline;
  const t0 = performance.now();
  next = Array.from(dec.stepChoose(next, {}, !eager));
  const stepMs = performance.now() - t0;
  if (!eager) {
    // The first marked step of each staging parity (one parity without reuse, two with it)
    // captures its graph; after two more steps the last one has replayed a captured graph.
    next = Array.from(dec.stepChoose(next));
    next = Array.from(dec.stepChoose(next));
  }
  dec.offload!.timeline = null;
  const marks = timeline.read();
  const times = offloadLayerTimes(marks, offload.skipMissed ?? false);
  console.log(
    `\n${method}: graph step ${graphMs.toFixed(2)} ms (median of 5), ${
      eager ? `eager step ${stepMs.toFixed(2)} ms, ` : "marks from a replayed graph, "
    }marks span ${marks.at(-1)!.ms.toFixed(2)} ms`,
  );
  const cells = (f: (c: Column) => string) => COLUMNS.map(f);
  console.log(formatTextTable(["layer", ...cells(([name]) => `${name} µs`)], [
    ...times.slice(0, shown).map((t) => [String(t.layer), ...cells(([, of]) => fmt(of(t)))]),
    ["sum", ...cells(([, of]) => fmt(times.reduce((n, t) => n + (of(t) ?? 0), 0)))],
  ]));
}
