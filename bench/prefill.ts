/**
 * `deno task bench:prefill` (GPU machine): prompt prefill of a Llama-3-8B-shaped decoder (32
 * layers, hidden 4096, 32/8 heads, d 128, ffn 14336, vocab 128256, fp16, random weights drawn on
 * the device) through this project's chunked prefill, against plain PyTorch 2.x prefill of the
 * same shapes (bench/prefill_torch.py: cuBLAS GEMMs + scaled_dot_product_attention(is_causal))
 * run first in the same call on the same GPU.
 *
 * Per prompt: time (CUDA events around `GpuDecoder.prefill`, median of `--repeats` after a
 * warm-up), tokens/s, the attention share (the prefill kernel alone replayed over the same chunks
 * for every layer), the attention kernel's TFLOP/s against the card's dense fp16 tensor-core
 * rate (an 8192^3 cuBLAS GEMM measured here), PyTorch's causal SDPA alone on the same shape, and
 * the decoder's device memory against weights + caches + workspace.
 * Writes ./results/prefill-<card>-<date>.{json,md,svg} (or --out DIR, or $DS_RESULTS_DIR).
 *
 *   deno task bench:prefill [--prompts 2048,8192,16384,32768,131072] [--batch4 8192]
 *                           [--chunk 8192] [--repeats 3] [--no-torch] [--out DIR]
 *                           [--json FILE]
 */
import { intFlag, intListFlag, openCommand } from "../src/cli/front_door.ts";
import { cardSlug, defaultResultsDir } from "../src/cli/results.ts";
import { writeJsonReport } from "../src/cli/json_report.ts";
import { Progress } from "../src/cli/progress.ts";
import { requireGpu } from "../src/runtime/device.ts";
import { join } from "node:path";
import { Cublas } from "../src/cuda/cublas.ts";
import { GpuDecoder } from "../src/decoding/gpu_decoder.ts";
import { workspaceBytes } from "../src/decoding/gpu_decoder_layout.ts";
import { weightBytes } from "../src/decoding/gpu_weights.ts";
import { prefillChunks, prefillFlops } from "../src/runtime/prefill_tiles.ts";
import { medianEventMs } from "../src/runtime/timing.ts";
import { UtilKernels } from "../src/runtime/util_kernels.ts";
import { runPythonBench } from "../src/runtime/python_baseline.ts";
import { writeFileAtomic } from "../src/util/fs.ts";
import { lineChart } from "../src/util/svg.ts";
import { LLAMA3_8B, LLAMA3_8B_GROUP_SPEC } from "./llama3_shape.ts";

const { values: args } = openCommand({
  name: "bench:prefill",
  usage: `deno task bench:prefill [options]
  --prompts LIST   prompt lengths at batch 1 (default 2048,8192,16384,32768,131072)
  --batch4 LIST    prompt lengths at batch 4 (default 8192)
  --chunk N        prefill chunk rows (default 8192)
  --repeats N      timed repeats (default 3)
  --no-torch       skip the PyTorch baseline
  --out DIR        results folder (default ./results or $DS_RESULTS_DIR)
  --json FILE      write the JSON rows here instead of <out>/prefill-<card>-<date>.json`,
  options: {
    prompts: { type: "string", default: "2048,8192,16384,32768,131072" },
    batch4: { type: "string", default: "8192" },
    chunk: { type: "string", default: "8192" },
    repeats: { type: "string", default: "3" },
    "no-torch": { type: "boolean", default: false },
    out: { type: "string" },
    json: { type: "string" },
  },
});
const prompts = intListFlag("prompts", args.prompts!, { min: 1 });
const chunk = intFlag("chunk", args.chunk!, { min: 1 });
const repeats = intFlag("repeats", args.repeats!, { min: 1 });
const outDir = args.out ?? defaultResultsDir();
const jobs = [
  ...prompts.map((p) => ({ batch: 1, prompt: p })),
  ...(args.batch4 ? intListFlag("batch4", args.batch4, { min: 1 }) : []).map((p) => ({
    batch: 4,
    prompt: p,
  })),
];

const llama3 = LLAMA3_8B;
const spec = LLAMA3_8B_GROUP_SPEC;

const cuda = requireGpu("deno task bench:prefill");
const info = cuda.info;

// ---- 1. PyTorch first (a separate process that frees its memory when it exits) ----
interface TorchResult {
  batch: number;
  prompt: number;
  ms: number | null;
}
let torch: TorchResult[] = [];
let torchSdpa: { prompt: number; default?: { ms: number; tflops: number } }[] = [];
let torchNote = "";
if (!args["no-torch"]) {
  const r = runPythonBench("prefill_torch.py", {
    model: {
      layers: 32,
      hidden: 4096,
      heads: 32,
      kv_heads: 8,
      head_dim: 128,
      ffn: 14336,
      vocab: 128256,
    },
    jobs: jobs.filter((j) => j.prompt <= 32768),
    repeats,
    sdpa_only: prompts.filter((p) => p >= 16384 && p <= 32768),
  }, { stderr: "null" });
  if (r.ok) {
    torch = r.out.results as TorchResult[];
    torchSdpa = r.out.sdpa as typeof torchSdpa;
    torchNote = `PyTorch ${r.out.torch} on ${r.out.device}`;
  } else torchNote = `${r.why}; PyTorch columns empty`;
  console.log(torchNote);
}

// ---- 2. The card's fp16 tensor-core rate, through cuBLAS ----
function gemmPeak(): number {
  const n = 8192;
  using stream = cuda.stream();
  using a = cuda.alloc(n * n * 2), b = cuda.alloc(n * n * 2), c = cuda.alloc(n * n * 4);
  using util = new UtilKernels(cuda, "fp16");
  util.fillNormal(a, 1, 1, stream);
  util.fillNormal(b, 2, 1, stream);
  using ws = cuda.alloc(32 << 20);
  using blas = new Cublas(stream, { ptr: ws.ptr, bytes: ws.bytes });
  const ms = medianEventMs(
    cuda,
    stream,
    () => blas.linear(c.ptr, "F32", a.ptr, b.ptr, "F16", n, n, n),
    10,
    3,
  );
  return (2 * n ** 3) / (ms / 1e3);
}
const peak = gemmPeak();
console.log(`${info.name}: cuBLAS fp16 8192^3 GEMM ${(peak / 1e12).toFixed(0)} TFLOP/s`);

// ---- 3. This project ----
interface Row {
  batch: number;
  prompt: number;
  chunk: number;
  ms: number;
  tokensPerS: number;
  attentionMs: number;
  attentionTflops: number;
  torchMs?: number;
  torchSdpaTflops?: number;
  memUsed: number;
  memFormula: number;
}
const rows: Row[] = [];
// Progress over the jobs in prompt tokens benchmarked (each job's repeats and attention-only
// timing included), so the ETA covers the whole run.
const jobTokens = jobs.reduce((sum, j) => sum + j.batch * j.prompt, 0);
const jobsBar = new Progress("bench:prefill", "prompt tokens");
let tokensDone = 0;
for (const { batch, prompt } of jobs) {
  const rowsPerChunk = Math.min(chunk, batch * prompt);
  const before = cuda.memInfo();
  using dec = await GpuDecoder.create(cuda, { config: llama3, seed: 7, scale: 0.02 }, {
    batch,
    maxContext: prompt,
    spec,
    channels: { randomSeed: 3 },
    maxPrefillRows: rowsPerChunk,
  });
  const tokens = Array.from(
    { length: batch },
    (_, b) => Array.from({ length: prompt }, (_, i) => (i * 7919 + b * 104729) % llama3.vocabSize),
  );
  // A 128K prompt takes seconds: one timed run, no warm-up (the kernels were loaded by create).
  const long = prompt >= 65536;
  const ms = medianEventMs(
    cuda,
    dec.stream,
    () => {
      dec.reset();
      dec.prefill(tokens);
    },
    long ? 1 : repeats,
    long ? 0 : 1,
  );
  const after = cuda.memInfo();
  const memUsed = before.free - after.free;
  const memFormula = weightBytes(llama3) + dec.cache.deviceBytes + dec.plan.deviceBytes +
    dec.prefillPlan.deviceBytes + workspaceBytes(llama3, rowsPerChunk, batch);
  // The attention kernel alone over the decoder's own chunks, every layer (the caches hold the
  // prompts). The causal work does not depend on the chunking.
  const chunks = prefillChunks(Array(batch).fill(prompt), rowsPerChunk).map((parts) => {
    let row0 = 0;
    return parts.map(({ seq, offset, rows }) => {
      const segment = { row0, seq, pos0: offset, rows };
      row0 += rows;
      return segment;
    });
  });
  const flops = batch * llama3.numLayers *
    prefillFlops(Int32Array.from([0, 0, 0, prompt]), llama3.numHeads, llama3.headDim);
  const attentionMs = medianEventMs(
    cuda,
    dec.stream,
    () => {
      for (const segments of chunks) {
        dec.prefillPlan.setChunk(segments, dec.stream);
        for (let layer = 0; layer < llama3.numLayers; layer++) {
          dec.prefillPlan.attention(layer, dec.activations.q, dec.activations.attn);
        }
      }
    },
    1,
    1,
  );
  const t = torch.find((r) => r.batch === batch && r.prompt === prompt);
  const sd = torchSdpa.find((r) => r.prompt === prompt && batch === 1);
  const row: Row = {
    batch,
    prompt,
    chunk: rowsPerChunk,
    ms,
    tokensPerS: (batch * prompt) / (ms / 1e3),
    attentionMs,
    attentionTflops: flops / (attentionMs / 1e3) / 1e12,
    torchMs: t?.ms ?? undefined,
    torchSdpaTflops: sd?.default?.tflops,
    memUsed,
    memFormula,
  };
  rows.push(row);
  console.log(
    `B=${batch} P=${prompt} chunk=${rowsPerChunk}: ${ms.toFixed(1)} ms (${
      row.tokensPerS.toFixed(0)
    } tok/s), ` +
      `attention ${attentionMs.toFixed(1)} ms = ${(100 * attentionMs / ms).toFixed(0)}% at ` +
      `${row.attentionTflops.toFixed(0)} TFLOP/s; PyTorch ${t?.ms?.toFixed(1) ?? "-"} ms; ` +
      `memory ${(memUsed / 2 ** 30).toFixed(2)} GiB (formula ${
        (memFormula / 2 ** 30).toFixed(2)
      } GiB)`,
  );
  tokensDone += batch * prompt;
  jobsBar.update(tokensDone, jobTokens);
}

// ---- 4. Report ----
const fmt = (x: number | undefined, d = 1) => (x === undefined ? "-" : x.toFixed(d));
const date = new Date().toISOString().slice(0, 10);
const card = cardSlug(info.name);
const lines = [
  `# Prefill on ${info.name} (${date})`,
  "",
  `Llama-3-8B shape (32 layers, hidden 4096, 32/8 heads, d 128, ffn 14336, vocab 128256), fp16, ` +
  `random weights. ${torchNote}. cuBLAS fp16 GEMM rate ${(peak / 1e12).toFixed(0)} TFLOP/s ` +
  `(8192^3). Times are CUDA-event medians of ${repeats} prefills after a warm-up. "attention" = ` +
  `the generated prefill kernel alone over the same chunks and layers; its TFLOP/s count QK^T and ` +
  `PV over the causal triangle; "SDPA" = PyTorch's causal scaled_dot_product_attention alone on ` +
  `one layer of the same shape. Memory = device memory the decoder took (cuMemGetInfo before ` +
  `and after), against weights + caches + decode/prefill plans + the chunk workspace.`,
  "",
  "| batch | prompt | chunk | this project ms | tokens/s | PyTorch ms | vs PyTorch | attention share | attention TFLOP/s | % of GEMM rate | SDPA TFLOP/s | attention vs SDPA | memory GiB (formula) |",
  "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ...rows.map((r) =>
    `| ${r.batch} | ${r.prompt} | ${r.chunk} | ${fmt(r.ms)} | ${fmt(r.tokensPerS, 0)} | ${
      fmt(r.torchMs)
    } | ` +
    `${r.torchMs ? (r.ms / r.torchMs).toFixed(2) + "x" : "-"} | ${
      fmt((100 * r.attentionMs) / r.ms, 0)
    }% | ` +
    `${fmt(r.attentionTflops, 0)} | ${fmt((100 * r.attentionTflops * 1e12) / peak, 0)}% | ` +
    `${fmt(r.torchSdpaTflops, 0)} | ${
      r.torchSdpaTflops ? (r.attentionTflops / r.torchSdpaTflops).toFixed(2) + "x" : "-"
    } | ` +
    `${(r.memUsed / 2 ** 30).toFixed(2)} (${(r.memFormula / 2 ** 30).toFixed(2)}) |`
  ),
  "",
  "\"vs PyTorch\" is this project's time over PyTorch's (lower is better; the target is <= 1.25x).",
];
const md = lines.join("\n");
console.log("\n" + md);
const stem = join(outDir, `prefill-${card}-${date}`);
writeJsonReport(args.json ?? `${stem}.json`, {
  device: info,
  date,
  peak,
  torchNote,
  torch,
  torchSdpa,
  rows,
});
writeFileAtomic(`${stem}.md`, md + "\n");
writeFileAtomic(
  `${stem}.svg`,
  lineChart(`Prefill on ${info.name}, ${date} (batch 1, time vs prompt)`, [
    {
      panel: "batch 1",
      name: "this project",
      points: rows.filter((r) => r.batch === 1).map((r) => ({ x: r.prompt, y: r.ms })),
    },
    {
      panel: "batch 1",
      name: "PyTorch",
      points: rows.filter((r) => r.batch === 1 && r.torchMs).map((r) => ({
        x: r.prompt,
        y: r.torchMs!,
      })),
    },
  ]),
);
console.log(`wrote ${stem}.{md,svg}`);
