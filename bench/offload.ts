/**
 * Double Sparsity-Offload on one card (GPU machine), `deno task bench:offload`:
 *  - a Llama-3-8B-shaped decoder (32 layers, 32/8 heads, d = 128, fp16), random weights, its
 *    Double Sparsity variant (group selection, 16 label channels at 8 bits, budget 1/16) with NO
 *    dense layers, so every layer's K/V is in pinned host memory; random caches filled on the
 *    device through the mapping, allocated once per (batch, context) and shared by the methods:
 *    offload (no reuse), offload + reuse, offload + prediction (next-layer prediction with
 *    overlap, exact), offload + prediction + reuse, offload + prediction with the missed rows
 *    skipped (the paper's scheme, approximate), full-KV offload (FlexGen-style), and the same
 *    decoder with all K/V on the GPU where it fits. Batch 1 and 4 at 32K, 64K and 128K (256K at
 *    batch 1 where host memory allows; skipped with the reason otherwise).
 *  - per row: step ms (wall-clock median of `stepChoose` steps, greedy, or with `--inputs repeat`
 *    every sequence's first token fed again: the offload step copies nothing back but ids) and
 *    tokens/s, GPU memory in use, PCIe bytes per step (gather counters), % of the PCIe bound
 *    (bytes / measured H2D bandwidth / step time), rows reused, bytes saved by reuse, ratio vs
 *    full-KV offload; with prediction, its recall per layer (rows
 *    of the exact selection found in the prefetch; mean and min over the predicted layers; with
 *    reuse, the share the prefetch served after reuse) and PCIe bytes include its own gathers.
 *  - the measured host-to-device bandwidth (cuMemcpyHtoDAsync of 1 GiB pinned, events, median)
 *    and the gather kernel's (all layers' selected rows from host memory, as a graph);
 *  - random weights make consecutive steps' selections unrealistically alike or unlike (and the
 *    next layer's query unrealistically predictable or not), so the reuse hit rate and the
 *    prediction's recall are also measured on the bundled tiny-code-llama-8k with real text at
 *    ~7K context over 32 greedy steps.
 * Writes ./results/offload-<card>-<date>.{json,md} (offload-repeat-inputs-... with --inputs repeat;
 * or under --out / $DS_RESULTS_DIR).
 *
 *   deno task bench:offload [--quick] [--configs LIST] [--prefetch-fractions LIST] [--two-streams]
 *                           [--inputs greedy|repeat] [--out DIR] [--json FILE]
 */
import { join } from "node:path";
import { batchContextListFlag, openCommand } from "../src/cli/front_door.ts";
import { defaultResultsDir } from "../src/cli/results.ts";
import { writeJsonReport } from "../src/cli/json_report.ts";
import { Progress } from "../src/cli/progress.ts";
import { requireGpu } from "../src/runtime/device.ts";
import type { AttentionSpec } from "../src/dsl/spec.ts";
import { GpuDecoder } from "../src/decoding/gpu_decoder.ts";
import { argmax } from "../src/decoding/cpu_decoder.ts";
import {
  type GatherCounts,
  gatherCountsSince,
  type OffloadOptions,
  predictionRecall,
  rowCacheSlotBytes,
} from "../src/runtime/offload_plan.ts";
import { UtilKernels } from "../src/runtime/util_kernels.ts";
import { medianEventMs, medianWallMs } from "../src/runtime/timing.ts";
import { packageRoot } from "../src/util/package_root.ts";
import { writeFileAtomic } from "../src/util/fs.ts";
import { UsageError } from "../src/util/errors.ts";
import { LLAMA3_8B, LLAMA3_8B_GROUP_SPEC_NO_DENSE } from "./llama3_shape.ts";
import { loadTinyBench } from "./tiny_model.ts";
import { computeCeilings, ON_GPU_METHOD } from "./offload_ceiling.ts";
import {
  fillRandomCache,
  firstTokens,
  hostKvCache,
  kvCacheBytes,
  offloadDecoderOptions,
} from "./random_cache.ts";

/**
 * Warm-up steps of a row-cache method: a cache of a quarter to a half of the K/V fills from the
 * rows selected at a sixteenth of the context per step; about 30 steps reach its steady state.
 */
const ROW_CACHE_WARMUP = 32;
const pct = (x: number) => `${(100 * x).toFixed(0)}%`;
const { values: args } = openCommand({
  name: "bench:offload",
  usage: `deno task bench:offload [--quick] [--configs LIST] [--out DIR] [--json FILE]
  --quick     batch 1 and 4 at 32K only
  --configs   batch x context pairs instead, e.g. 4x32768,4x131072
  --prefetch-fractions LIST  prediction rows that prefetch only part of each budget (default 0.5)
  --row-cache-shares LIST  rows with a row cache (offload.rowCacheBytes) of these shares of the
              configuration's K/V bytes (default 0.25,0.5; "" for none), each after
              ${ROW_CACHE_WARMUP} warm-up steps that fill it
  --two-streams  also time even batches as two half-batch decoders on two streams (measured
              slower than one decoder: docs/offload.md)
  --inputs MODE  greedy (default: each step feeds the tokens the last step chose) or repeat
              (each step feeds every sequence its first token again: the queries then change
              only with position and context, so consecutive selections overlap as on real
              text, where random weights' greedy tokens make them nearly independent)
  --out DIR   results folder (default ./results or $DS_RESULTS_DIR)
  --json FILE write the JSON report here instead of <out>/offload-<card>-<date>.json`,
  options: {
    quick: { type: "boolean", default: false },
    configs: { type: "string" },
    "two-streams": { type: "boolean", default: false },
    "prefetch-fractions": { type: "string", default: "0.5" },
    "row-cache-shares": { type: "string", default: "0.25,0.5" },
    inputs: { type: "string", default: "greedy" },
    out: { type: "string" },
    json: { type: "string" },
  },
});
const outDir = args.out ?? defaultResultsDir();
const INPUT_MODES = ["greedy", "repeat"] as const;
const inputs = args.inputs as (typeof INPUT_MODES)[number];
if (!INPUT_MODES.includes(inputs)) {
  throw new UsageError(
    `--inputs: got ${JSON.stringify(args.inputs)}; allowed: ${INPUT_MODES.join(", ")}`,
  );
}
const cuda = requireGpu("deno task bench:offload");
const info = cuda.info;
const GiB = 2 ** 30;

/** The Llama-3-8B group variant without dense layers: every layer offloaded. */
const SPEC: AttentionSpec = LLAMA3_8B_GROUP_SPEC_NO_DENSE;
const C = LLAMA3_8B;
/** Measured steps per method (after WARMUP); full-KV steps move the whole K/V, so fewer. */
const STEPS = 8, FULL_KV_STEPS = 3, WARMUP = 2;

/** The approximate method's row name (offload.skipMissed). */
const SKIP_MISSED_METHOD = "offload + prediction, missed rows skipped (approximate)";
/** The methods every (batch, context) runs; two more per `--prefetch-fractions` value. */
const BASE_METHODS: [string, OffloadOptions][] = [
  ["full-KV offload", { mode: "full-kv" }],
  ["offload", { mode: "selected" }],
  ["offload + reuse", { mode: "selected", reuse: true }],
  ["offload + prediction", { mode: "selected", prediction: true }],
  ["offload + prediction + reuse", { mode: "selected", prediction: true, reuse: true }],
  // The paper's scheme: predicted layers attend the prefetch as it is (approximate).
  [SKIP_MISSED_METHOD, { mode: "selected", prediction: true, skipMissed: true }],
];
/** Most `--prefetch-fractions` values. */
const MAX_PREFETCH_FRACTIONS = 7;
/** Bytes of one selected row pair (K and V of one kv head). */
const ROW_BYTES = 2 * C.headDim * 2;
/** Host memory of the H100 machines is 128 GiB; leave room for the process and the OS. */
const HOST_LIMIT = 110 * GiB;
/** Device memory a row-cache decoder needs beside its cache (weights 16 GB, labels, workspaces). */
const ROW_CACHE_HEADROOM = 24 * GiB;
/** Weights (16 GB) + activations; on-GPU K/V must fit beside them. */
const WEIGHTS_AND_WORKSPACE = 20e9;

interface OffloadRow {
  batch: number;
  context: number;
  method: string;
  stepMs: number;
  tokensPerSecond: number;
  /** Device memory in use (total - free) while this method's decoder exists. */
  gpuGiB: number;
  /** Bytes read over PCIe per step (gather counters; full-KV: both pools of every layer). */
  pcieBytesPerStep: number;
  /** pcieBytesPerStep / measured H2D bandwidth / step time. */
  pcieBoundShare: number;
  /**
   * Bytes of the exact selection's rows per step (issue 11's bound: these bytes / measured H2D
   * bandwidth), wherever they came from; 0 for full-KV and on-GPU rows.
   */
  selectedBytesPerStep: number;
  /** selectedBytesPerStep / measured H2D bandwidth / step time. */
  selectedBoundShare: number;
  /** Share of selected rows taken from the previous step's staging. */
  reuseHitRate: number;
  /** Share of selected rows taken from the row cache. */
  cacheHitRate: number;
  /** Device bytes of the row cache (offload.rowCacheBytes asked), 0 without one. */
  rowCacheBytes: number;
  /** Bytes per step reuse and the row cache saved (rows found on the device x row bytes). */
  bytesSavedPerStep: number;
  /** With prediction: its recall per layer (predictionRecall), mean and min over the layers. */
  recallMean: number | null;
  recallMin: number | null;
}
const rows: OffloadRow[] = [];

/**
 * A row of the table, its GPU memory read now (while the method's decoders exist); `pcie` bytes
 * per step; reuse and recall fields where the method has them.
 */
function rowOf(
  batch: number,
  context: number,
  method: string,
  stepMs: number,
  pcie: number,
  extra: Partial<
    Pick<
      OffloadRow,
      | "reuseHitRate"
      | "cacheHitRate"
      | "rowCacheBytes"
      | "bytesSavedPerStep"
      | "recallMean"
      | "recallMin"
    >
  > = {},
  selectedBytes = 0,
): OffloadRow {
  const mem = cuda.memInfo();
  return {
    selectedBytesPerStep: selectedBytes,
    selectedBoundShare: selectedBytes / (h2dGBs * 1e6) / stepMs,
    batch,
    context,
    method,
    stepMs,
    tokensPerSecond: (1000 * batch) / stepMs,
    gpuGiB: (mem.total - mem.free) / GiB,
    pcieBytesPerStep: pcie,
    pcieBoundShare: pcie / (h2dGBs * 1e6) / stepMs,
    reuseHitRate: 0,
    cacheHitRate: 0,
    rowCacheBytes: 0,
    bytesSavedPerStep: 0,
    recallMean: null,
    recallMin: null,
    ...extra,
  };
}
const skipped: string[] = [];

// ---- measured bandwidths ----
/**
 * One trial: a fresh 1 GiB pinned buffer copied to the device, the median of 5 copies after 2.
 * Trials on fresh buffers differed by up to 20% in one process (45.6 vs 54.7 GB/s in two calls of
 * the same machine type), so the bound takes the best of three: what the bus demonstrably did.
 */
function hostToDeviceGBs(): number {
  const bytes = GiB;
  using host = cuda.allocHostMapped(bytes);
  using dev = cuda.alloc(bytes);
  using stream = cuda.stream();
  const ms = medianEventMs(cuda, stream, () => host.copyTo(dev.ptr, stream, bytes), 5, 2);
  return bytes / (ms * 1e6);
}
const h2dTrials = [hostToDeviceGBs(), hostToDeviceGBs(), hostToDeviceGBs()];
const h2dGBs = Math.max(...h2dTrials);
console.log(
  `host-to-device copy (1 GiB pinned, median of 5, best of 3 buffers: ${
    h2dTrials.map((x) => x.toFixed(1)).join(", ")
  }): ${h2dGBs.toFixed(1)} GB/s`,
);
let gatherGBs = 0;

using util = new UtilKernels(cuda, "fp16");
const model = { config: C, seed: 7, scale: 0.02 };
const configs: [number, number][] = args.configs !== undefined
  ? batchContextListFlag("configs", args.configs)
  : args.quick
  ? [[1, 32768], [4, 32768]]
  : [[1, 32768], [1, 65536], [1, 131072], [1, 262144], [4, 32768], [4, 65536], [4, 131072]];

/** A comma list of numbers ("" for none), each passing `ok`; `allowed` says which pass. */
function numberList(
  flag: string,
  text: string,
  ok: (f: number) => boolean,
  allowed: string,
): number[] {
  return text.split(",").filter((x) => x.trim()).map((x) => {
    const f = Number(x);
    if (!ok(f)) throw new UsageError(`--${flag}: got ${JSON.stringify(x)}; allowed: ${allowed}`);
    return f;
  });
}
/** `--prefetch-fractions`: the prediction rows with a partial prefetch (offload.prefetchFraction). */
const PREFETCH_FRACTIONS = numberList(
  "prefetch-fractions",
  args["prefetch-fractions"]!,
  (f) => f > 0 && f < 1,
  "numbers in (0, 1), e.g. 0.5",
);
if (PREFETCH_FRACTIONS.length > MAX_PREFETCH_FRACTIONS) {
  throw new UsageError(
    `--prefetch-fractions: got ${PREFETCH_FRACTIONS.length} values; allowed: at most ${MAX_PREFETCH_FRACTIONS}`,
  );
}
/** `--row-cache-shares`: row-cache sizes as shares of each configuration's K/V bytes. */
const ROW_CACHE_SHARES = numberList(
  "row-cache-shares",
  args["row-cache-shares"]!,
  (f) => f > 0 && f <= 1,
  "numbers in (0, 1], e.g. 0.25",
);
/** The fastest mode without a cache, the row-cache rows' companion (docs/offload.md). */
const BEST_PREFETCH = 0.5;
/**
 * The row-cache methods: [name, options without the bytes, share of the K/V]. Plain offload (the
 * cache alone) and the best mode with prediction and reuse, each per share.
 */
const ROW_CACHE_METHODS: [string, OffloadOptions, number][] = ROW_CACHE_SHARES.flatMap((
  share,
): [string, OffloadOptions, number][] => [
  [`offload + row cache ${pct(share)} of K/V`, { mode: "selected" }, share],
  [
    `offload + prediction + reuse, prefetch ${BEST_PREFETCH} + row cache ${pct(share)} of K/V`,
    { mode: "selected", prediction: true, reuse: true, prefetchFraction: BEST_PREFETCH },
    share,
  ],
]);
/** Every method of the table, in the order each (batch, context) runs them (row cache last). */
const METHODS: [string, OffloadOptions][] = [
  ...BASE_METHODS,
  ...PREFETCH_FRACTIONS.flatMap((f): [string, OffloadOptions][] => [
    [
      `offload + prediction, prefetch ${f}`,
      { mode: "selected", prediction: true, prefetchFraction: f },
    ],
    [
      `offload + prediction + reuse, prefetch ${f}`,
      { mode: "selected", prediction: true, reuse: true, prefetchFraction: f },
    ],
  ]),
];

/**
 * Tokens the methods of one (batch, context) append to its shared cache: warm-up + measured steps
 * (+ 1) for each method.
 */
const SLACK = METHODS.length * (STEPS + WARMUP + 1) +
  ROW_CACHE_METHODS.length * (STEPS + ROW_CACHE_WARMUP + 1);
const bar = new Progress("bench:offload", "configurations");

for (const [ci, [batch, L]] of configs.entries()) {
  bar.update(ci, configs.length);
  const maxContext = L + SLACK;
  const kvBytes = kvCacheBytes(batch, maxContext);
  if (kvBytes > HOST_LIMIT) {
    skipped.push(
      `B=${batch} L=${L}: ${(kvBytes / GiB).toFixed(0)} GiB of K/V > ${
        HOST_LIMIT / GiB
      } GiB of host memory to pin`,
    );
    console.log(`skip ${skipped.at(-1)}`);
    continue;
  }
  // One pinned cache per (batch, context), every layer in host memory, shared by the methods.
  using cache = hostKvCache(cuda, batch, maxContext);
  using fillStream = cuda.stream();
  fillRandomCache(util, cache, batch, L, fillStream);
  const tokens = firstTokens(batch);
  let fullKvMs = 0;
  const methods: [string, OffloadOptions, number][] = [
    ...METHODS.map(([m, o]): [string, OffloadOptions, number] => [m, o, 0]),
    ...ROW_CACHE_METHODS,
  ];
  for (const [method, baseOffload, share] of methods) {
    const offload: OffloadOptions = share
      ? { ...baseOffload, rowCacheBytes: Math.floor(share * kvCacheBytes(batch, L)) }
      : baseOffload;
    // A row cache must fit beside the decoder's own memory (weights, labels, workspaces).
    const free = cuda.memInfo().free;
    if (share && offload.rowCacheBytes! + ROW_CACHE_HEADROOM > free) {
      skipped.push(
        `B=${batch} L=${L} ${method}: ${(offload.rowCacheBytes! / GiB).toFixed(1)} GiB of row ` +
          `cache + ${ROW_CACHE_HEADROOM / GiB} GiB for the decoder > ${(free / GiB).toFixed(1)} ` +
          "GiB free",
      );
      console.log(`skip ${skipped.at(-1)}`);
      continue;
    }
    // Full-KV attends densely over the same pinned pools (its plan ignores the selection).
    using dec = await GpuDecoder.create(
      cuda,
      model,
      offloadDecoderOptions(batch, maxContext, offload, cache),
    );
    const steps = offload.mode === "full-kv" ? FULL_KV_STEPS : STEPS;
    let next = tokens;
    // greedy: the tokens the last step chose; repeat: every sequence's first token again.
    const step = () => {
      const chosen = Array.from(dec.stepChoose(next));
      if (inputs === "greedy") next = chosen;
    };
    for (let i = 0; i < (share ? ROW_CACHE_WARMUP : WARMUP); i++) step();
    const before = offload.mode === "selected" ? dec.gatherCounts() : [];
    const stepMs = medianWallMs(step, steps);
    let pcie = 0, reused = 0, cached = 0, selected = 0;
    let recall: { mean: number; min: number } | null = null;
    if (offload.mode === "selected") {
      const counts = gatherCountsSince(dec.gatherCounts(), before);
      for (const a of counts) {
        // The prediction's own gathers cross PCIe too.
        pcie += a.fromHost + a.prefetchFromHost;
        reused += a.fromPrevious;
        cached += a.fromCache;
        selected += a.fromHost + a.fromPrevious + a.fromPrefetch + a.fromCache;
        // skipMissed: a predicted layer runs no exact gather and attends its prefetch, so the
        // rows it selected are the prefetch's (the same budget).
        if (offload.skipMissed) {
          selected += a.prefetchFromHost + a.prefetchFromPrevious + a.prefetchFromCache;
        }
      }
      selected /= steps;
      pcie = (pcie * ROW_BYTES) / steps;
      reused /= steps;
      cached /= steps;
      if (offload.prediction) recall = recallOf(counts, (l) => dec.offload!.predicts(l));
      if (!offload.reuse && !offload.prediction && !share) {
        const g = dec.timeGather(5);
        gatherGBs = Math.max(gatherGBs, g.bytes / (g.ms * 1e6));
      }
    } else {
      pcie = dec.cache.hostBytes;
      fullKvMs = stepMs;
    }
    rows.push(rowOf(batch, L, method, stepMs, pcie, {
      reuseHitRate: selected ? reused / selected : 0,
      cacheHitRate: selected ? cached / selected : 0,
      rowCacheBytes: offload.rowCacheBytes ?? 0,
      bytesSavedPerStep: (reused + cached) * ROW_BYTES,
      recallMean: recall?.mean ?? null,
      recallMin: recall?.min ?? null,
    }, selected * ROW_BYTES));
    report(rows.at(-1)!, fullKvMs);
  }
  // The same decoder with every layer's K/V on the GPU, where it fits.
  if (kvBytes + WEIGHTS_AND_WORKSPACE < info.totalMemBytes * 0.9) {
    using dec = await GpuDecoder.create(cuda, model, offloadDecoderOptions(batch, maxContext));
    fillRandomCache(util, dec.cache, batch, L, dec.stream);
    dec.stepChoose(tokens);
    const stepMs = dec.timeStep(10, true);
    rows.push(rowOf(batch, L, ON_GPU_METHOD, stepMs, 0));
    report(rows.at(-1)!, fullKvMs);
  } else {
    skipped.push(
      `on-GPU DS at B=${batch} L=${L}: ${(kvBytes / 1e9).toFixed(0)} GB of K/V + ` +
        `${(WEIGHTS_AND_WORKSPACE / 1e9).toFixed(0)} GB do not fit ${
          (info.totalMemBytes / 1e9).toFixed(0)
        } GB`,
    );
    console.log(`skip ${skipped.at(-1)}`);
  }
}
bar.update(configs.length, configs.length);

// ---- two half-batches on two streams (even batches) ----
// An offloaded step cannot overlap its own transfer with its own compute (docs/offload.md, "The
// step against its floors"). Two decoders of half the batch each, over two caches, on two
// streams, launched together (GpuDecoder.stepChooseTogether): one half's kernels run while the
// other half waits on PCIe. Each decoder holds its own copy of the weights (16 GB more of device
// memory; the weights are read twice per step), so this is a benchmark of the overlap, not a
// decoder mode. Host memory: the two half caches hold what the batch's cache held, allocated
// after it is gone. Measured slower than one decoder (docs/offload.md), hence behind a flag.
for (const [batch, L] of args["two-streams"] ? configs : []) {
  if (batch % 2 !== 0) continue;
  const maxContext = L + SLACK, half = batch / 2;
  if (kvCacheBytes(batch, maxContext) > HOST_LIMIT) continue; // skipped above
  using cacheA = hostKvCache(cuda, half, maxContext);
  using cacheB = hostKvCache(cuda, half, maxContext);
  using fillStream = cuda.stream();
  fillRandomCache(util, cacheA, half, L, fillStream);
  fillRandomCache(util, cacheB, half, L, fillStream);
  const offload: OffloadOptions = { mode: "selected" };
  using decA = await GpuDecoder.create(
    cuda,
    model,
    offloadDecoderOptions(half, maxContext, offload, cacheA),
  );
  using decB = await GpuDecoder.create(
    cuda,
    model,
    offloadDecoderOptions(half, maxContext, offload, cacheB),
  );
  const first = firstTokens(batch);
  let nextA = first.slice(0, half), nextB = first.slice(half);
  for (let i = 0; i < WARMUP; i++) {
    nextA = Array.from(decA.stepChoose(nextA)); // captures each decoder's graph
    nextB = Array.from(decB.stepChoose(nextB));
  }
  const beforeA = decA.gatherCounts(), beforeB = decB.gatherCounts();
  const stepMs = medianWallMs(() => {
    const [a, b] = GpuDecoder.stepChooseTogether([
      { decoder: decA, tokens: nextA },
      { decoder: decB, tokens: nextB },
    ]);
    nextA = Array.from(a);
    nextB = Array.from(b);
  }, STEPS);
  let fromHost = 0;
  for (
    const counts of [
      gatherCountsSince(decA.gatherCounts(), beforeA),
      gatherCountsSince(decB.gatherCounts(), beforeB),
    ]
  ) {
    for (const a of counts) fromHost += a.fromHost + a.prefetchFromHost;
  }
  // No reuse, no prediction: every selected row crossed PCIe.
  const pcie = (fromHost * ROW_BYTES) / STEPS;
  rows.push(rowOf(batch, L, "offload, 2 half-batches on 2 streams", stepMs, pcie, {}, pcie));
  const full = rows.find((f) =>
    f.batch === batch && f.context === L && f.method === "full-KV offload"
  );
  report(rows.at(-1)!, full?.stepMs ?? 0);
}

/**
 * Mean and min of the prediction's recall over the layers it predicted (with a selection): a
 * layer the prediction skips (layer 0) selects too, but nothing of it is prefetched.
 */
function recallOf(
  counts: GatherCounts[],
  predicted: (layer: number) => boolean,
): { mean: number; min: number } | null {
  return meanMin(
    counts.map(predictionRecall).filter((x, l) => predicted(l) && !Number.isNaN(x)),
  );
}

function meanMin(r: number[]): { mean: number; min: number } | null {
  return r.length ? { mean: r.reduce((a, b) => a + b, 0) / r.length, min: Math.min(...r) } : null;
}

// ---- reuse and prediction on real text: tiny-code-llama-8k, ~7K context, greedy ----
const REAL_L = 7000, REAL_STEPS = 32;
const tinyBench = await loadTinyBench(packageRoot());
/** Per-layer gather counts of REAL_STEPS greedy steps after the first (which has nothing to reuse). */
async function realTextCounts(offload: OffloadOptions): Promise<GatherCounts[]> {
  const { model: tiny, text, channels: config, spec } = tinyBench;
  const c = tiny.config;
  using dec = await GpuDecoder.create(cuda, tiny, {
    batch: 1,
    maxContext: REAL_L + REAL_STEPS + 1,
    spec,
    channels: { config },
    maxPrefillRows: 8192,
    offload,
  });
  const logits = dec.prefill([Array.from(text.subarray(0, REAL_L))]);
  let next = [argmax(logits, 0, c.vocabSize)];
  next = Array.from(dec.stepChoose(next));
  const before = dec.gatherCounts();
  for (let i = 0; i < REAL_STEPS; i++) next = Array.from(dec.stepChoose(next));
  return gatherCountsSince(dec.gatherCounts(), before);
}
const realText: { layer: number; hitRate: number }[] = [];
for (const [layer, a] of (await realTextCounts({ mode: "selected", reuse: true })).entries()) {
  if (a.fromHost + a.fromPrevious > 0) {
    realText.push({ layer, hitRate: a.fromPrevious / (a.fromHost + a.fromPrevious) });
  }
}
console.log(
  `tiny-code-llama-8k, ${REAL_L} bytes of Python, ${REAL_STEPS} greedy steps: reuse hit rate ` +
    "per layer " + realText.map((r) => `${r.layer}:${(100 * r.hitRate).toFixed(0)}%`).join(" "),
);
// The row cache on real text: slots for a quarter of the positions of every offloaded layer.
const REAL_CACHE_SHARE = 0.25;
const realCache: { layer: number; hitRate: number }[] = [];
{
  const { model: tiny, spec } = tinyBench;
  const offloadedLayers = tiny.config.numLayers - spec.denseLayers.length;
  const slots = Math.floor(REAL_CACHE_SHARE * (REAL_L + REAL_STEPS + 1));
  const bytes = slots * offloadedLayers * rowCacheSlotBytes(1, spec.numKvHeads, spec.headDim);
  const counts = await realTextCounts({ mode: "selected", rowCacheBytes: bytes });
  for (const [layer, a] of counts.entries()) {
    const selected = a.fromHost + a.fromPrevious + a.fromPrefetch + a.fromCache;
    if (selected > 0) realCache.push({ layer, hitRate: a.fromCache / selected });
  }
}
console.log(
  `tiny-code-llama-8k: row cache of ${pct(REAL_CACHE_SHARE)} of the positions, hit rate per ` +
    "layer " + realCache.map((r) => `${r.layer}:${(100 * r.hitRate).toFixed(0)}%`).join(" "),
);
// Prediction without reuse: the exact recall, |exact and predicted| / |exact|, per layer.
const realRecall: { layer: number; recall: number }[] = [];
for (
  const [layer, a] of (await realTextCounts({ mode: "selected", prediction: true })).entries()
) {
  const recall = predictionRecall(a);
  if (!Number.isNaN(recall)) realRecall.push({ layer, recall });
}
const realRecallSummary = meanMin(realRecall.map((r) => r.recall));
console.log(
  `tiny-code-llama-8k: prediction recall per layer ` +
    realRecall.map((r) => `${r.layer}:${(100 * r.recall).toFixed(0)}%`).join(" "),
);

// ---- report ----
const date = new Date().toISOString().slice(0, 10);
const card = info.name.replace(/[^A-Za-z0-9]+/g, "-").replace(/^-|-$/g, "");
const lines = [
  `# Double Sparsity-Offload on ${info.name} (${date})`,
  "",
  `Llama-3-8B shape, random weights, ${SPEC.variant} without dense layers (every layer's K/V in ` +
  "pinned host memory), caches filled on the device. Step = wall-clock median of " +
  (inputs === "greedy"
    ? "greedy `stepChoose` steps"
    : "`stepChoose` steps that feed every sequence its first token again (`--inputs repeat`: " +
      "consecutive queries differ only by position and context)") +
  " (on-GPU DS: graph replay, device time). PCIe bytes from the gather " +
  "counters (full-KV: both pools of every layer). Bound share = bytes / measured H2D " +
  "bandwidth / step time; the selected-bytes share counts only the exact selection's rows " +
  "(issue 11's bound), whatever moved; for the approximate row (missed rows skipped), the rows " +
  "its layers attended: the predicted selection, of the same budget.",
  "",
  `Measured host-to-device copy (1 GiB pinned, best of 3 buffers: ${
    h2dTrials.map((x) => x.toFixed(1)).join(", ")
  }): ${h2dGBs.toFixed(1)} GB/s; gather kernel ` +
  `(all layers' selected rows from host memory): ${gatherGBs.toFixed(1)} GB/s.`,
  "",
  "| batch | context | method | step ms | tokens/s | GPU GiB | PCIe GB/step | % of PCIe bound | % of bound, selected bytes | reuse hit | cache hit | GB saved/step | recall mean/min | vs full-KV |",
  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
];
// Rows of one (batch, context) together, in the order they were measured.
const ordered = rows.map((r, i) => ({ r, i })).sort((x, y) =>
  x.r.batch - y.r.batch || x.r.context - y.r.context || x.i - y.i
).map((x) => x.r);
for (const r of ordered) {
  const full = rows.find((f) =>
    f.batch === r.batch && f.context === r.context && f.method === "full-KV offload"
  );
  lines.push(
    `| ${r.batch} | ${r.context} | ${r.method} | ${r.stepMs.toFixed(2)} | ` +
      `${r.tokensPerSecond.toFixed(1)} | ${r.gpuGiB.toFixed(1)} | ` +
      `${(r.pcieBytesPerStep / 1e9).toFixed(3)} | ${
        r.pcieBytesPerStep ? pct(r.pcieBoundShare) : "-"
      } | ${r.selectedBytesPerStep ? pct(r.selectedBoundShare) : "-"} | ` +
      `${r.method.includes("reuse") ? pct(r.reuseHitRate) : "-"} | ` +
      `${r.rowCacheBytes ? pct(r.cacheHitRate) : "-"} | ` +
      `${(r.bytesSavedPerStep / 1e9).toFixed(3)} | ` +
      `${r.recallMean === null ? "-" : `${pct(r.recallMean)} / ${pct(r.recallMin!)}`} | ` +
      `${full ? (full.stepMs / r.stepMs).toFixed(1) + "x" : "-"} |`,
  );
}
const ceilings = computeCeilings(rows, h2dGBs);
if (ceilings.length > 0) {
  lines.push(
    "",
    "Compute ceiling: an offloaded step runs every kernel of the on-GPU DS step plus its " +
      "transfers, so with or without reuse it reaches at most the bound (selected bytes / " +
      "measured copy rate) over the on-GPU DS step (bench/offload_ceiling.ts):",
    "",
    ...ceilings.map((c) =>
      `- ${c.batch} x ${c.context}: bound ${c.boundMs.toFixed(2)} ms, on-GPU DS ` +
      `${c.onGpuMs.toFixed(2)} ms, ceiling ${pct(c.share)}` +
      (c.share < 0.8 ? " (below 80%: compute, not the bus, sets the pace)" : "")
    ),
  );
}
lines.push(
  "",
  "Reuse hit rate on real text (tiny-code-llama-8k, 7,000 bytes of held-out Python, 32 greedy " +
    "steps, head selection r16b16, budget 1/16, layers 0 and 1 dense on the device): " +
    realText.map((r) => `layer ${r.layer} ${pct(r.hitRate)}`).join(", ") + ".",
  "",
  `Row cache on real text (same model and text, no reuse, slots for ${
    pct(REAL_CACHE_SHARE)
  } of the positions, filled from the first step on): hit rate ` +
    realCache.map((r) => `layer ${r.layer} ${pct(r.hitRate)}`).join(", ") + ".",
  "",
  "Prediction recall on real text (same model and text, prediction without reuse: rows of the " +
    "exact selection found in the prefetch): " +
    realRecall.map((r) => `layer ${r.layer} ${pct(r.recall)}`).join(", ") +
    (realRecallSummary
      ? `; mean ${pct(realRecallSummary.mean)}, min ${pct(realRecallSummary.min)}.`
      : "."),
  "",
  "Recall with random weights (table) says little about real models; with reuse it is the share " +
    "of the selection the prefetch served after the previous step's staging (a lower bound).",
  "",
  ...skipped.map((s) => `Skipped: ${s}.`),
);
const md = lines.join("\n");
console.log("\n" + md);
const stem = join(outDir, `offload-${inputs === "repeat" ? "repeat-inputs-" : ""}${card}-${date}`);
writeJsonReport(args.json ?? `${stem}.json`, {
  device: info,
  date,
  h2dGBs,
  gatherGBs,
  inputs,
  rows,
  realText,
  realCache,
  realRecall,
  skipped,
});
writeFileAtomic(`${stem}.md`, md + "\n");
console.log(`wrote ${stem}.md`);

function report(r: OffloadRow, fullKvMs: number): void {
  console.log(
    `B=${r.batch} L=${r.context} ${r.method}: ${r.stepMs.toFixed(2)} ms/step, ` +
      `${r.tokensPerSecond.toFixed(1)} tokens/s, GPU ${r.gpuGiB.toFixed(1)} GiB, PCIe ${
        (r.pcieBytesPerStep / 1e9).toFixed(3)
      } GB/step (${(100 * r.pcieBoundShare).toFixed(0)}% of the bound; selected bytes ${
        (100 * r.selectedBoundShare).toFixed(0)
      }%), reuse ${(100 * r.reuseHitRate).toFixed(1)}%, row cache ${
        (100 * r.cacheHitRate).toFixed(1)
      }%` +
      (r.recallMean === null
        ? ""
        : `, recall mean ${(100 * r.recallMean).toFixed(1)}% min ${
          (100 * r.recallMin!).toFixed(1)
        }%`) +
      (fullKvMs ? `, ${(fullKvMs / r.stepMs).toFixed(1)}x vs full-KV` : ""),
  );
}
