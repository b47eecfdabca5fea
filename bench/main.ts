/**
 * `deno task bench` (GPU machine): decode attention, dense vs Double Sparsity vs PyTorch SDPA.
 *
 * For each shape (Llama-3-8B 32/8 heads and Llama-2-7B 32/32, d 128, fp16 K/V, 16-token pages,
 * budget context/16, labels 128 bits per token per kv head), batch and context:
 *  - the measured copy bandwidth (device-to-device copy of 2 GiB, read + write) sets the floor;
 *  - each method runs as a CUDA graph of one step, timed with CUDA events: the median of many
 *    replays after warm-up, rotating over enough cache copies that L2 cannot serve them;
 *  - bytes: dense reads K and V of every token; Double Sparsity reads the labels at their bit
 *    width, writes and reads back 2-byte score keys, and reads the selected K/V rows.
 * Writes ./results/attention-<card>-<date>.{json,md,svg} (or under --out / $DS_RESULTS_DIR).
 *
 *   deno task bench [--quick] [--batches 1,8,32] [--contexts 4096,...] [--no-sdpa] [--out DIR]
 *                  [--json FILE]
 */
import { intFlag, intListFlag, openCommand } from "../src/cli/front_door.ts";
import { defaultResultsDir } from "../src/cli/results.ts";
import { writeJsonReport } from "../src/cli/json_report.ts";
import { requireGpu } from "../src/runtime/device.ts";
import { join } from "node:path";
import {
  type AttentionSpec,
  defineAttention,
  denseStepBytes,
  sparseStepBytes,
} from "../src/dsl/spec.ts";
import type { DeviceBuffer, GraphExec } from "../src/cuda/driver.ts";
import { PagedKvCache } from "../src/runtime/caches.ts";
import { DecodePlan } from "../src/runtime/decode_plan.ts";
import { Variant } from "../src/runtime/variant.ts";
import { UtilKernels } from "../src/runtime/util_kernels.ts";
import { medianEventMs } from "../src/runtime/timing.ts";
import { packageRoot } from "../src/util/package_root.ts";
import { writeFileAtomic } from "../src/util/fs.ts";
import { lineChart } from "./svg.ts";
import { Progress } from "../src/cli/progress.ts";

const { values: args } = openCommand({
  name: "bench",
  usage: `deno task bench [options]
  --quick               batches 1,8 and contexts 4096,32768, fewer repeats
  --batches LIST        comma list of batch sizes (default 1,8,32)
  --contexts LIST       comma list of context lengths (default 4096,...,131072)
  --shapes LIST         comma list of shape names (default all)
  --no-sdpa             skip the PyTorch SDPA baseline
  --repeats N           graph replays per measurement (default 60, quick 30)
  --out DIR             results folder (default ./results or $DS_RESULTS_DIR)
  --json FILE           write the JSON rows here instead of <out>/attention-<card>-<date>.json`,
  options: {
    quick: { type: "boolean", default: false },
    batches: { type: "string" },
    contexts: { type: "string" },
    shapes: { type: "string" },
    "no-sdpa": { type: "boolean", default: false },
    out: { type: "string" },
    json: { type: "string" },
    repeats: { type: "string" },
  },
});

const list = (flag: string, s: string | undefined, def: number[]) =>
  s ? intListFlag(flag, s, { min: 1 }) : def;
const batches = list("batches", args.batches, args.quick ? [1, 8] : [1, 8, 32]);
const contexts = list(
  "contexts",
  args.contexts,
  args.quick ? [4096, 32768] : [4096, 16384, 32768, 65536, 131072],
);
const repeats = intFlag("repeats", args.repeats, { min: 1 }) ?? (args.quick ? 30 : 60);
const outDir = args.out ?? defaultResultsDir();
const cuda = requireGpu("deno task bench");
const stream = cuda.stream();
const info = cuda.info;

interface Method {
  readonly key: string;
  readonly label: string;
  readonly spec?: AttentionSpec;
}

const budget = { ratio: 1 / 16, min: 16 };
const base = { headDim: 128, numQHeads: 32, kvDtype: "fp16", pageSize: 16 } as const;
const SHAPES: { name: string; kv: number; methods: Method[] }[] = [
  {
    name: "llama3-8b",
    kv: 8,
    methods: [
      {
        key: "ds-group",
        label: "DS group r16b8",
        spec: defineAttention({
          ...base,
          numKvHeads: 8,
          labels: { channels: 16, bits: 8 },
          selection: "group",
          budget,
        }),
      },
      {
        key: "ds-head",
        label: "DS head (kv labels) r16b8",
        spec: defineAttention({
          ...base,
          numKvHeads: 8,
          labels: { channels: 16, bits: 8, heads: "kv" },
          selection: "head",
          budget,
        }),
      },
    ],
  },
  {
    name: "llama2-7b",
    kv: 32,
    methods: [
      {
        key: "ds-r8b16",
        label: "DS r8b16 (8 fp16 channels)",
        spec: defineAttention({
          ...base,
          numKvHeads: 32,
          labels: { channels: 8, bits: 16 },
          selection: "head",
          budget,
        }),
      },
      {
        key: "ds-r32b4",
        label: "DS r32b4",
        spec: defineAttention({
          ...base,
          numKvHeads: 32,
          labels: { channels: 32, bits: 4 },
          selection: "head",
          budget,
        }),
      },
    ],
  },
].filter((s) => !args.shapes || args.shapes.split(",").includes(s.name));

/** Median milliseconds of graph replays, rotating over the graphs (one per cache copy). */
function timeGraphs(graphs: GraphExec[], reps = repeats): number {
  return medianEventMs(
    cuda,
    stream,
    (i) => graphs[i % graphs.length].launch(stream),
    reps,
    Math.max(5, graphs.length),
  );
}

// ---- 1. Copy bandwidth: the ceiling every floor is measured against. ----
function copyBandwidth(): number {
  const bytes = 1 << 30;
  using a = cuda.alloc(bytes);
  using b = cuda.alloc(bytes);
  a.fill8(1, stream);
  const ms = medianEventMs(
    cuda,
    stream,
    () => stream.copyDeviceToDevice(b.ptr, a.ptr, bytes),
    10,
    2,
  );
  return (2 * bytes) / (ms / 1e3);
}

const bandwidth = copyBandwidth();
console.log(
  `${info.name} (${info.multiprocessors} SMs, L2 ${info.l2Bytes >> 20} MiB): copy bandwidth ${
    (bandwidth / 1e12).toFixed(2)
  } TB/s (read + write)`,
);

// ---- 2. PyTorch SDPA in the decode layout (separate process, run first: it frees its memory). ----
interface SdpaResult {
  batch: number;
  q_heads: number;
  kv_heads: number;
  context: number;
  ms: number | null;
}
let sdpa: SdpaResult[] = [];
let sdpaNote = "";
if (!args["no-sdpa"]) {
  const jobs = SHAPES.flatMap((s) =>
    batches.flatMap((b) =>
      contexts.map((L) => ({ batch: b, q_heads: 32, kv_heads: s.kv, head_dim: 128, context: L }))
    )
  ).filter((j) => 2 * j.batch * j.kv_heads * j.context * 256 < info.totalMemBytes * 0.4);
  const tmp = Deno.makeTempDirSync();
  Deno.writeTextFileSync(join(tmp, "jobs.json"), JSON.stringify(jobs));
  try {
    const p = new Deno.Command("python3", {
      args: [
        join(packageRoot(), "bench", "sdpa.py"),
        join(tmp, "jobs.json"),
        join(tmp, "out.json"),
      ],
      stdout: "inherit",
      stderr: "inherit",
    }).outputSync();
    if (p.success) {
      const out = JSON.parse(Deno.readTextFileSync(join(tmp, "out.json")));
      sdpa = out.results;
      sdpaNote = `PyTorch ${out.torch} on ${out.device}`;
    } else sdpaNote = "python3 bench/sdpa.py failed; SDPA columns empty";
  } catch (e) {
    sdpaNote = `python3 not available (${e instanceof Error ? e.message : e}); SDPA columns empty`;
  }
  console.log(sdpaNote);
}

// ---- 3. Dense and Double Sparsity through the generated kernels. ----
interface Row {
  shape: string;
  batch: number;
  context: number;
  method: string;
  label: string;
  ms: number;
  bytes: number;
  /** Bytes / copy bandwidth, in ms. */
  floorMs: number;
  scoreMs?: number;
  selectMs?: number;
  sdpaMs?: number;
}
const rows: Row[] = [];
using util = new UtilKernels(cuda, "fp16");

// Progress over the (shape, method, batch, context) cases, skipped ones included.
const totalCases = SHAPES.reduce((n, s) => n + s.methods.length, 0) * batches.length *
  contexts.length;
let casesDone = 0;
const casesBar = new Progress("bench", "cases");
for (const shape of SHAPES) {
  for (const method of shape.methods) {
    const spec = method.spec!;
    using variant = await Variant.load(cuda, spec, { stream });
    variant.bindStream(stream);
    for (const B of batches) {
      for (const L of contexts) {
        casesBar.update(casesDone++, totalCases);
        const kvBytes = denseStepBytes(spec, L) * B;
        if (kvBytes > info.totalMemBytes * 0.4) {
          console.log(
            `skip ${shape.name} B=${B} L=${L}: ${(kvBytes / 2 ** 30).toFixed(0)} GiB of K/V`,
          );
          continue;
        }
        // Enough cache copies ("layers") that one step's bytes cycle through more than 3x L2.
        const stepBytes = Math.min(sparseStepBytes(spec, L) * B, kvBytes);
        const copies = Math.max(
          1,
          Math.min(
            32,
            Math.ceil((3 * info.l2Bytes) / stepBytes),
            Math.floor((info.totalMemBytes * 0.45) / kvBytes),
          ),
        );
        using cache = new PagedKvCache(cuda, spec, {
          numLayers: copies,
          numSeqs: B,
          maxContext: L,
        });
        cache.pages.scrambleFreeList(Math.random);
        for (let b = 0; b < B; b++) cache.pages.grow(b, L);
        cache.syncBlockTables(stream);
        const channels = new Int32Array(spec.numLabelHeads * spec.labelChannels).map((_, i) =>
          (i * 7) % spec.headDim
        );
        const qs: DeviceBuffer[] = [], outs: DeviceBuffer[] = [];
        for (let i = 0; i < copies; i++) {
          const layer = cache.layers[i];
          util.fillNormal(layer.k, 11 * i + 1, 1, stream);
          util.fillNormal(layer.v, 11 * i + 2, 1, stream);
          if (spec.labelBits === 16) util.fillNormal(layer.labels, 11 * i + 3, 1, stream);
          else util.fillLabels(layer.labels, layer.meta, 11 * i + 3, stream);
          layer.setChannels(channels, stream);
          const q = cuda.alloc(B * spec.numQHeads * spec.headDim * 2);
          util.fillNormal(q, 11 * i + 4, 1, stream);
          qs.push(q);
          outs.push(cuda.alloc(B * spec.numQHeads * spec.headDim * 2));
        }
        using plan = new DecodePlan(cuda, variant, cache, stream);
        plan.describeCurrent();
        plan.upload(stream);
        stream.synchronize();
        const capture = (body: (i: number) => void) =>
          Array.from({ length: copies }, (_, i) => stream.capture(() => body(i)));
        const sdpaMs = sdpa.find((r) =>
          r.batch === B && r.context === L && r.kv_heads === shape.kv
        )?.ms ?? undefined;
        try {
          if (method === shape.methods[0]) {
            const dense = capture((i) => plan.attention(i, qs[i].ptr, outs[i].ptr, true));
            const ms = timeGraphs(dense);
            dense.forEach((g) => g.dispose());
            rows.push({
              shape: shape.name,
              batch: B,
              context: L,
              method: "dense",
              label: "dense (generated split-K)",
              ms,
              bytes: kvBytes,
              floorMs: (kvBytes / bandwidth) * 1e3,
              sdpaMs,
            });
          }
          const full = capture((i) => plan.attention(i, qs[i].ptr, outs[i].ptr));
          const topk = capture((i) => plan.topK(i, qs[i].ptr));
          const ms = timeGraphs(full);
          const scoreSelectMs = timeGraphs(topk);
          const scoreOnly = capture((i) => plan.score(i, qs[i].ptr));
          const scoreMs = timeGraphs(scoreOnly, Math.ceil(repeats / 2));
          // score alone leaves histograms filled; clear them for whatever runs next
          for (const g of [...full, ...topk, ...scoreOnly]) g.dispose();
          plan.workspace.hist.fill8(0, stream);
          plan.workspace.counters.fill8(0, stream);
          const bytes = sparseStepBytes(spec, L) * B;
          rows.push({
            shape: shape.name,
            batch: B,
            context: L,
            method: method.key,
            label: method.label,
            ms,
            bytes,
            floorMs: (bytes / bandwidth) * 1e3,
            scoreMs,
            selectMs: Math.max(0, scoreSelectMs - scoreMs),
            sdpaMs,
          });
          const r = rows[rows.length - 1];
          console.log(
            `${shape.name} B=${B} L=${L} ${method.key}: ${ms.toFixed(4)} ms (floor ${
              r.floorMs.toFixed(4)
            }, ` +
              `score ${scoreMs.toFixed(4)}, select ${r.selectMs!.toFixed(4)}), copies ${copies}`,
          );
        } finally {
          for (const b of [...qs, ...outs]) b.dispose();
        }
      }
    }
  }
}

casesBar.update(totalCases, totalCases);

// ---- 4. Report. ----
const fmt = (x: number | undefined, digits = 3) => (x === undefined ? "-" : x.toFixed(digits));
const date = new Date().toISOString().slice(0, 10);
const card = info.name.replace(/[^A-Za-z0-9]+/g, "-").replace(/^-|-$/g, "");
const lines: string[] = [
  `# Decode attention on ${info.name} (${date})`,
  "",
  `Copy bandwidth ${
    (bandwidth / 1e12).toFixed(2)
  } TB/s (device-to-device copy of 1 GiB, read + write). ` +
  `${sdpaNote}. Times are CUDA-event medians of ${repeats} graph replays; budget k = context/16; ` +
  `fp16 K/V, d = 128, 16-token pages. "% floor" = (bytes / copy bandwidth) / time. "score" = the ` +
  `score kernel alone (keys, histogram, and the threshold bin found by its last block); "top-k" = ` +
  `the select and resolve kernels' share of the step, measured as (score+select+resolve) - score.`,
  "",
];
for (const shape of SHAPES) {
  lines.push(`## ${shape.name} (32 query heads, ${shape.kv} kv heads)`, "");
  lines.push(
    "| batch | context | method | time ms | bytes MB | GB/s | % floor | score ms | top-k % | SDPA ms | vs SDPA |",
  );
  lines.push("|---|---|---|---|---|---|---|---|---|---|---|");
  for (const r of rows.filter((r) => r.shape === shape.name)) {
    lines.push(
      `| ${r.batch} | ${r.context} | ${r.label} | ${fmt(r.ms, 4)} | ${fmt(r.bytes / 1e6, 1)} | ` +
        `${fmt(r.bytes / (r.ms / 1e3) / 1e9, 0)} | ${fmt((100 * r.floorMs) / r.ms, 1)} | ${
          fmt(r.scoreMs, 4)
        } | ` +
        `${r.selectMs !== undefined ? fmt((100 * r.selectMs) / r.ms, 1) : "-"} | ${
          fmt(r.sdpaMs, 4)
        } | ` +
        `${r.sdpaMs ? fmt(r.sdpaMs / r.ms, 2) + "x" : "-"} |`,
    );
  }
  lines.push("");
}
const md = lines.join("\n");
console.log("\n" + md);
const stem = join(outDir, `attention-${card}-${date}`);
writeJsonReport(args.json ?? `${stem}.json`, {
  device: info,
  date,
  bandwidth,
  sdpaNote,
  repeats,
  rows,
});
writeFileAtomic(`${stem}.md`, md + "\n");
writeFileAtomic(
  `${stem}.svg`,
  lineChart(
    `Decode attention on ${info.name}, ${date} (time vs context; budget 1/16)`,
    SHAPES.flatMap((s) =>
      batches.flatMap((b) => {
        const of = (m: string) =>
          rows.filter((r) => r.shape === s.name && r.batch === b && r.method === m).map((r) => ({
            x: r.context,
            y: r.ms,
          }));
        const sd = rows.filter((r) =>
          r.shape === s.name && r.batch === b && r.method === "dense" && r.sdpaMs
        )
          .map((r) => ({ x: r.context, y: r.sdpaMs! }));
        return [
          { panel: `${s.name} B=${b}`, name: "SDPA", points: sd },
          { panel: `${s.name} B=${b}`, name: "dense", points: of("dense") },
          ...s.methods.map((m) => ({ panel: `${s.name} B=${b}`, name: m.key, points: of(m.key) })),
        ];
      })
    ),
  ),
);
console.log(`wrote ${stem}.{md,svg}`);
