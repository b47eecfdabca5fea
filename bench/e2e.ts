/**
 * End-to-end decoding throughput of the GPU decoder, dense vs Double Sparsity (GPU machine):
 *  - the bundled tiny-code-llama-8k at 4,000 of its 8,192 positions: real prefill of held-out
 *    Python, then greedy decoding;
 *  - a Llama-3-8B-shaped decoder (32 layers, 4096 hidden, 32/8 heads, fp16) with random weights
 *    drawn on the device and random caches, batch 8 and 32 at 16K and 32K contexts, and batch 8
 *    at 64K where the card holds its 69 GB of dense K/V (an H200; an H100 skips it); and the same
 *    Double Sparsity decoder with its sparse layers' K/V in pinned host memory
 *    (Double Sparsity-Offload: next-layer prediction, half prefetch), wherever the host holds the
 *    K/V, the GPU or not.
 * Tokens/s = batch / step time, the step replayed as one CUDA graph; the attention share is the
 * attention kernels' graph time over the step's. Host overhead = wall-clock of one greedy step as
 * a caller runs it minus the step's device time, measured both ways in the same run: logits back
 * + argmax on the host (`step`), and token choice on the device with only ids back
 * (`stepChoose`). Writes ./results/e2e-<card>-<date>.{json,md} (or under --out /
 * $DS_RESULTS_DIR).
 *
 *   deno run -A bench/e2e.ts [--quick] [--llama3 BxL,...] [--no-tiny] [--out DIR] [--json FILE]
 */
import { batchContextListFlag, openCommand } from "../src/cli/front_door.ts";
import { cardSlug, defaultResultsDir } from "../src/cli/results.ts";
import { writeJsonReport } from "../src/cli/json_report.ts";
import { requireGpu } from "../src/runtime/device.ts";
import { join } from "node:path";
import type { AttentionSpec } from "../src/dsl/spec.ts";
import { GpuDecoder } from "../src/decoding/gpu_decoder.ts";
import { argmax } from "../src/decoding/cpu_decoder.ts";
import { UtilKernels } from "../src/runtime/util_kernels.ts";
import { packageRoot } from "../src/util/package_root.ts";
import { writeFileAtomic } from "../src/util/fs.ts";
import { LLAMA3_8B, LLAMA3_8B_GROUP_SPEC } from "./llama3_shape.ts";
import { loadTinyBench } from "./tiny_model.ts";
import { Progress } from "../src/cli/progress.ts";
import { medianWallMs } from "../src/runtime/timing.ts";
import type { GemmBackend } from "../src/runtime/gemm_choice.ts";
import type { OffloadOptions } from "../src/runtime/offload_plan.ts";
import { fillRandomCache, firstTokens, kvCacheBytes } from "./random_cache.ts";

const { values: args } = openCommand({
  name: "bench:e2e",
  usage: `deno task bench:e2e [--quick] [--llama3 BxL,...] [--no-tiny] [--out DIR] [--json FILE]
  --quick     fewer configurations
  --llama3 L  the Llama-3-8B-shaped configurations as batch x context, e.g. 8x32768,8x65536
  --no-tiny   skip the tiny-code-llama-8k rows
  --out DIR   results folder (default ./results or $DS_RESULTS_DIR)
  --json FILE write the JSON rows here instead of <out>/e2e-<card>-<date>.json`,
  options: {
    quick: { type: "boolean", default: false },
    llama3: { type: "string" },
    "no-tiny": { type: "boolean", default: false },
    out: { type: "string" },
    json: { type: "string" },
  },
});
/** `--llama3`: "BxL,BxL" as [batch, context] pairs, or the default list. */
function llama3Configs(): number[][] {
  if (args.llama3 === undefined) {
    return args.quick
      ? [[8, 16384]]
      : [[1, 32768], [8, 16384], [8, 32768], [8, 65536], [32, 16384], [32, 32768]];
  }
  // Context >= 2: the random cache holds context - 1 tokens and each step appends one.
  return batchContextListFlag("llama3", args.llama3, 2);
}
const configs = llama3Configs();
const root = packageRoot();
const outDir = args.out ?? defaultResultsDir();
const cuda = requireGpu("deno task bench:e2e");
const info = cuda.info;

interface E2eRow {
  model: string;
  batch: number;
  context: number;
  method: string;
  /** Device time of the step that copies the logits back (`step`). */
  stepMs: number;
  /** Wall-clock of a greedy step with host choice: `step()` (replay, sync, logits copy) + argmax. */
  wallMs: number;
  /** Device time of the step that chooses tokens on the device (`stepChoose`). */
  chooseStepMs: number;
  /** Wall-clock of a greedy `stepChoose()`: replay, sync, ids copy. */
  chooseWallMs: number;
  /** The attention kernels alone; NaN for offloaded rows (their K/V would be read in place). */
  attentionMs: number;
  tokensPerSecond: number;
  /** Device memory in use while the decoder exists (total - free), GiB. */
  gpuGiB: number;
  /** The decoder's projections (GpuDecoderOptions.gemm, from DS_GEMM here). */
  gemm: GemmBackend;
}
const rows: E2eRow[] = [];
// Progress over the measured (model, batch, context, method) rows.
const totalRows = (args["no-tiny"] ? 0 : 4) + 3 * configs.length;
const rowsBar = new Progress("bench:e2e", "configurations");

/** Median wall-clock milliseconds of `run` over 10 calls, after 3 warm-up calls (capture). */
const wallMedian = (run: () => void): number => medianWallMs(run, 10, 3);

/** Greedy decoding from `first` both ways (host choice, then device choice), and the timings. */
async function measure(
  model: string,
  dec: GpuDecoder,
  method: string,
  context: number,
  first: number[],
): Promise<void> {
  const V = dec.config.vocabSize, B = dec.batch;
  let next = first;
  const wallMs = wallMedian(() => {
    const logits = dec.step(next);
    next = Array.from({ length: B }, (_, b) => argmax(logits, b * V, V));
  });
  const stepMs = dec.timeStep(20);
  const chooseWallMs = wallMedian(() => {
    next = Array.from(dec.stepChoose(next));
  });
  const chooseStepMs = dec.timeStep(20, true);
  // An offloaded decoder's attention is the gather pipeline of its steps; timeAttention would
  // read host K/V through the mapping instead, so offloaded rows leave it out.
  const attentionMs = dec.offload ? NaN : dec.timeAttention(20);
  const mem = cuda.memInfo();
  rowsBar.update(rows.length + 1, totalRows);
  rows.push({
    model,
    batch: B,
    context,
    method,
    stepMs,
    wallMs,
    chooseStepMs,
    chooseWallMs,
    attentionMs,
    tokensPerSecond: (B * 1000) / stepMs,
    gpuGiB: (mem.total - mem.free) / 2 ** 30,
    gemm: dec.gemm,
  });
  console.log(
    `${model} B=${B} L=${context} ${method}: step ${stepMs.toFixed(3)} ms ` +
      `(attention ${attentionMs.toFixed(3)} ms), ${((B * 1000) / stepMs).toFixed(0)} tokens/s, ` +
      `GPU ${((mem.total - mem.free) / 2 ** 30).toFixed(1)} GiB; ` +
      `host overhead ${overhead(wallMs, stepMs)} with host choice, ` +
      `${overhead(chooseWallMs, chooseStepMs)} with device choice`,
  );
  await Promise.resolve();
}

/** Wall-clock beyond the device time, as a share of the device time. */
const overhead = (wall: number, device: number) =>
  `${((100 * Math.max(0, wall - device)) / device).toFixed(1)}%`;

// ---- 1. tiny-code-llama-8k at 4K positions ----
if (!args["no-tiny"]) {
  const { model, text, channels: config, spec } = await loadTinyBench(root);
  const c = model.config;
  const L = 4000;
  for (const batch of [1, 8]) {
    for (const s of [undefined, spec]) {
      using dec = await GpuDecoder.create(cuda, model, {
        batch,
        maxContext: L + 64,
        spec: s,
        channels: s ? { config } : undefined,
        maxPrefillRows: 8192,
      });
      const prompts = Array.from(
        { length: batch },
        (_, b) => Array.from(text.subarray(b * 1000, b * 1000 + L)),
      );
      const logits = dec.prefill(prompts);
      const first = Array.from(
        { length: batch },
        (_, b) => argmax(logits, b * c.vocabSize, c.vocabSize),
      );
      await measure("tiny-code-llama-8k", dec, s ? "DS head r16b16, dense 0,1" : "dense", L, first);
    }
  }
}

// ---- 2. Llama-3-8B shape, random weights ----
const llama3 = LLAMA3_8B;
const dsSpec: AttentionSpec = LLAMA3_8B_GROUP_SPEC;
using util = new UtilKernels(cuda, "fp16");
/** Pinned host memory the offloaded rows may take (the H100 and H200 machines have 128 GiB). */
const HOST_KV_LIMIT = 100 * 2 ** 30;
/** The offloaded rows' mode: the fastest without reuse from 128K tokens in the batch (docs/offload.md). */
const OFFLOAD: OffloadOptions = { mode: "selected", prediction: true, prefetchFraction: 0.5 };
const OFFLOAD_METHOD = "DS group r16b8, dense 0,1, offload (prediction, prefetch 0.5)";
for (const [batch, L] of configs) {
  const kvBytes = kvCacheBytes(batch, L);
  const onGpu = kvBytes + 20e9 <= info.totalMemBytes * 0.9;
  if (!onGpu) {
    console.log(
      `skip on-GPU llama3-8b B=${batch} L=${L}: ${
        (kvBytes / 1e9).toFixed(0)
      } GB of K/V + 16 GB of weights`,
    );
  }
  for (const s of onGpu ? [undefined, dsSpec] : []) {
    using dec = await GpuDecoder.create(cuda, { config: llama3, seed: 7, scale: 0.02 }, {
      batch,
      maxContext: L + 32,
      spec: s,
      channels: s ? { randomSeed: 3 } : undefined,
      maxPrefillRows: batch,
    });
    // Random caches of L - 1 tokens per sequence; each step appends one.
    fillRandomCache(util, dec.cache, batch, L, dec.stream);
    const tokens = firstTokens(batch);
    await measure("llama3-8b (random)", dec, s ? "DS group r16b8, dense 0,1" : "dense", L, tokens);
  }
  if (kvBytes > HOST_KV_LIMIT) {
    console.log(
      `skip offloaded llama3-8b B=${batch} L=${L}: ${
        (kvBytes / 2 ** 30).toFixed(0)
      } GiB of K/V to pin`,
    );
    continue;
  }
  // The dense layers 0 and 1 stay on the device (offloadPlacement); the fill writes the host
  // layers through their mapping.
  using dec = await GpuDecoder.create(cuda, { config: llama3, seed: 7, scale: 0.02 }, {
    batch,
    maxContext: L + 32,
    spec: dsSpec,
    channels: { randomSeed: 3 },
    maxPrefillRows: batch,
    offload: OFFLOAD,
  });
  fillRandomCache(util, dec.cache, batch, L, dec.stream);
  await measure("llama3-8b (random)", dec, OFFLOAD_METHOD, L, firstTokens(batch));
}

rowsBar.update(totalRows, totalRows); // skipped configurations count as done

// ---- report ----
const date = new Date().toISOString().slice(0, 10);
const card = cardSlug(info.name);
const lines = [
  `# End-to-end decoding on ${info.name} (${date})`,
  "",
  "Step = one decode step of every layer for the whole batch, replayed as one CUDA graph (median of 20);",
  "attention = the attention kernels of all layers alone, replayed the same way (not for offloaded",
  "rows: K/V in pinned host memory, selected rows over PCIe; their step includes the transfers).",
  "",
  "Host overhead = wall-clock of one greedy step as the caller runs it minus the step's device time,",
  "as a share of the device time: host choice = decoder.step() (graph launch, sync, logits copy) +",
  "argmax on the host; device choice = decoder.stepChoose() (the step + the choose_tokens kernel,",
  "only the ids copied back), against its own step's device time (choice step ms).",
  "",
  `Projections: GEMM ${[...new Set(rows.map((r) => r.gemm))].join(", ")} (DS_GEMM).`,
  "",
  "| model | batch | context | method | step ms | host overhead, host choice | choice step ms | host overhead, device choice | attention ms | attention share | tokens/s | GPU GiB | speedup |",
  "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
];
for (const r of rows) {
  const dense = rows.find((d) =>
    d.model === r.model && d.batch === r.batch && d.context === r.context && d.method === "dense"
  );
  lines.push(
    `| ${r.model} | ${r.batch} | ${r.context} | ${r.method} | ${r.stepMs.toFixed(3)} | ` +
      `${overhead(r.wallMs, r.stepMs)} | ${r.chooseStepMs.toFixed(3)} | ` +
      `${overhead(r.chooseWallMs, r.chooseStepMs)} | ` +
      `${Number.isNaN(r.attentionMs) ? "-" : r.attentionMs.toFixed(3)} | ` +
      `${
        Number.isNaN(r.attentionMs) ? "-" : ((100 * r.attentionMs) / r.stepMs).toFixed(0) + "%"
      } | ` +
      `${r.tokensPerSecond.toFixed(0)} | ${r.gpuGiB.toFixed(1)} | ` +
      `${dense ? (dense.stepMs / r.stepMs).toFixed(2) + "x" : "-"} |`,
  );
}
const md = lines.join("\n");
console.log("\n" + md);
const stem = join(outDir, `e2e-${card}-${date}`);
writeJsonReport(args.json ?? `${stem}.json`, { device: info, date, rows });
writeFileAtomic(`${stem}.md`, md + "\n");
console.log(`wrote ${stem}.md`);
