/**
 * `deno task bench:gemm` (GPU machine): the decoder's projections at decode batch sizes, cuBLAS
 * against the model family's decode GEMM (`decode_linear`, templates/model.cu.hbs), in one process
 * on one card. Llama-3-8B's five weight shapes (fused QKV, output, fused gate/up, down, lm_head)
 * at m = 1, 4, 8, 16 rows, fp16 weights with fp32 output, as GpuDecoder calls them. Each time is a
 * CUDA-event median of runs of LAUNCHES_PER_RUN back-to-back launches over rotating weight copies
 * (at least 256 MB in all, so L2 cannot hold them), divided by that count: the host enqueues
 * ahead of the device, as in the decoder's graph, so a launch's host cost is not timed;
 * "% copy" is the weight bytes' share of the device-to-device copy rate (read + write counted,
 * the project's physical floor), and the step column sums one decode step's projections (32
 * layers plus lm_head). Each shape's decode GEMM output is checked against cuBLAS's first.
 * Writes ./results/decode-gemm-<card>-<date>.{md,json} (or under --out / $DS_RESULTS_DIR).
 *
 *   deno task bench:gemm [--rows 1,4,8,16] [--repeats N] [--out DIR] [--json FILE]
 */
import { join } from "node:path";
import { intFlag, intListFlag, openCommand } from "../src/cli/front_door.ts";
import { cardSlug, defaultResultsDir } from "../src/cli/results.ts";
import { writeJsonReport } from "../src/cli/json_report.ts";
import { DECODE_GEMM_MAX_ROWS, MODEL_KERNELS, MODEL_ROW_THREADS } from "../src/codegen/families.ts";
import { renderFamilySource } from "../src/codegen/render.ts";
import { Cublas } from "../src/cuda/cublas.ts";
import { decodeLinearGrid } from "../src/decoding/gpu_decoder_layout.ts";
import { requireGpu } from "../src/runtime/device.ts";
import { FamilyModule } from "../src/runtime/family_module.ts";
import { copyBandwidth, medianEventMs } from "../src/runtime/timing.ts";
import { UtilKernels } from "../src/runtime/util_kernels.ts";
import { writeFileAtomic } from "../src/util/fs.ts";
import { UsageError } from "../src/util/errors.ts";
import { LLAMA3_8B } from "./llama3_shape.ts";

/** Launches between one pair of events (a single launch would time the host's enqueue too). */
const LAUNCHES_PER_RUN = 10;

const { values: args } = openCommand({
  name: "bench:gemm",
  usage: `deno task bench:gemm [options]
  --rows LIST           comma list of row counts m (default 1,4,8,16; at most ${DECODE_GEMM_MAX_ROWS})
  --repeats N           timed runs of ${LAUNCHES_PER_RUN} launches per measurement (default 20)
  --out DIR             results folder (default ./results or $DS_RESULTS_DIR)
  --json FILE           write the JSON rows here instead of <out>/decode-gemm-<card>-<date>.json`,
  options: {
    rows: { type: "string" },
    repeats: { type: "string" },
    out: { type: "string" },
    json: { type: "string" },
  },
});
const rowsList = args.rows ? intListFlag("rows", args.rows, { min: 1 }) : [1, 4, 8, 16];
const tooMany = rowsList.find((m) => m > DECODE_GEMM_MAX_ROWS);
if (tooMany !== undefined) {
  throw new UsageError(`--rows: got ${tooMany}; allowed: 1..${DECODE_GEMM_MAX_ROWS}`);
}
const repeats = intFlag("repeats", args.repeats, { min: 1 }) ?? 20;
const outDir = args.out ?? defaultResultsDir();

/** The decoder's five projections of the shared Llama-3-8B shape (fused QKV and gate/up). */
const C = LLAMA3_8B;
const L = C.numLayers;
const SHAPES = [
  { name: "qkv", n: (C.numHeads + 2 * C.numKvHeads) * C.headDim, k: C.hiddenSize, perStep: L },
  { name: "o", n: C.hiddenSize, k: C.numHeads * C.headDim, perStep: L },
  { name: "gate_up", n: 2 * C.intermediateSize, k: C.hiddenSize, perStep: L },
  { name: "down", n: C.hiddenSize, k: C.intermediateSize, perStep: L },
  { name: "lm_head", n: C.vocabSize, k: C.hiddenSize, perStep: 1 },
];
const ROTATION_BYTES = 256 << 20;

const cuda = requireGpu("deno task bench:gemm");
const stream = cuda.stream();
const bandwidth = copyBandwidth(cuda, stream);
const { source } = renderFamilySource("model", "fp16", {
  hidden: C.hiddenSize,
  headDim: C.headDim,
  numQHeads: C.numHeads,
  numKvHeads: C.numKvHeads,
  intermediate: C.intermediateSize,
  rowThreads: MODEL_ROW_THREADS,
});
using kernels = new FamilyModule(cuda, MODEL_KERNELS, source, "model.cu", "fp16", stream);
using util = new UtilKernels(cuda, "fp16");
using blas = new Cublas(stream);
console.log(
  `${cuda.info.name}: copy bandwidth ${(bandwidth / 1e12).toFixed(2)} TB/s; ` +
    `${repeats} timed runs of ${LAUNCHES_PER_RUN} launches per row`,
);

interface Row {
  shape: string;
  m: number;
  n: number;
  k: number;
  weightMB: number;
  cublasUs: number;
  decodeUs: number;
  cublasCopyPct: number;
  decodeCopyPct: number;
  speedup: number;
  relErr: number;
}
const rows: Row[] = [];
let failed = false;
for (const s of SHAPES) {
  const bytes = s.n * s.k * 2;
  const copies = Math.max(1, Math.ceil(ROTATION_BYTES / bytes));
  const weights = Array.from({ length: copies }, () => cuda.alloc(bytes));
  try {
    weights.forEach((w, i) => util.fillNormal(w, 17 + i, 0.02, stream));
    for (const m of rowsList) {
      using x = cuda.alloc(m * s.k * 2);
      using yBlas = cuda.alloc(m * s.n * 4);
      using yOwn = cuda.alloc(m * s.n * 4);
      util.fillNormal(x, 5 + m, 1, stream);
      const runBlas = (i: number) =>
        blas.linear(yBlas.ptr, "F32", x.ptr, weights[i % copies].ptr, "F16", m, s.n, s.k);
      const runOwn = (i: number) =>
        kernels.launch("decode_linear", decodeLinearGrid(s.n), {
          x: x.ptr,
          w: weights[i % copies].ptr,
          y: yOwn.ptr,
          m,
          n: s.n,
          k: s.k,
          accumulate: 0,
        });
      runBlas(0);
      runOwn(0);
      const a = new Float32Array(m * s.n), b = new Float32Array(m * s.n);
      yBlas.download(a, stream);
      yOwn.download(b, stream);
      let maxDiff = 0, maxAbs = 0;
      for (let i = 0; i < a.length; i++) {
        maxDiff = Math.max(maxDiff, Math.abs(a[i] - b[i]));
        maxAbs = Math.max(maxAbs, Math.abs(a[i]));
      }
      const relErr = maxDiff / maxAbs;
      // fp32 sums of the same products in another order: far below fp16's 2^-11.
      if (!(relErr < 1e-4)) failed = true;
      const timed = (run: (i: number) => void) =>
        medianEventMs(
          cuda,
          stream,
          (r) => {
            for (let j = 0; j < LAUNCHES_PER_RUN; j++) run(r * LAUNCHES_PER_RUN + j);
          },
          repeats,
          2,
        ) / LAUNCHES_PER_RUN;
      const cublasMs = timed(runBlas);
      const decodeMs = timed(runOwn);
      const pct = (ms: number) => (100 * (bytes / bandwidth)) / (ms / 1e3);
      rows.push({
        shape: s.name,
        m,
        n: s.n,
        k: s.k,
        weightMB: bytes / 1e6,
        cublasUs: cublasMs * 1e3,
        decodeUs: decodeMs * 1e3,
        cublasCopyPct: pct(cublasMs),
        decodeCopyPct: pct(decodeMs),
        speedup: cublasMs / decodeMs,
        relErr,
      });
      const r = rows[rows.length - 1];
      console.log(
        `${s.name.padEnd(8)} m=${String(m).padEnd(2)} cuBLAS ${
          r.cublasUs.toFixed(1).padStart(7)
        } us ` +
          `(${r.cublasCopyPct.toFixed(1)}%)  decode ${r.decodeUs.toFixed(1).padStart(7)} us ` +
          `(${r.decodeCopyPct.toFixed(1)}%)  ${r.speedup.toFixed(2)}x  rel err ${
            relErr.toExponential(2)
          }`,
      );
    }
  } finally {
    for (const w of weights) w[Symbol.dispose]();
  }
}

const step = rowsList.map((m) => {
  const of = (key: "cublasUs" | "decodeUs") =>
    SHAPES.reduce(
      (t, s) => t + s.perStep * rows.find((r) => r.shape === s.name && r.m === m)![key],
      0,
    ) /
    1e3;
  return { m, cublasMs: of("cublasUs"), decodeMs: of("decodeUs") };
});
const date = new Date().toISOString().slice(0, 10);
const stem = join(outDir, `decode-gemm-${cardSlug(cuda.info.name)}-${date}`);
const md = [
  `# Decode GEMM against cuBLAS on ${cuda.info.name} (${date})`,
  "",
  `Copy bandwidth ${(bandwidth / 1e12).toFixed(2)} TB/s (device-to-device, read + write). ` +
  `Llama-3-8B projection shapes, fp16 weights, fp32 output; CUDA-event medians of ${repeats} ` +
  `runs of ${LAUNCHES_PER_RUN} back-to-back launches over rotating weight copies (>= 256 MB), per ` +
  `launch. "% copy" = weight bytes / copy bandwidth / time. "rel err" = max |decode - cuBLAS| / ` +
  `max |cuBLAS|.`,
  "",
  "| shape | m | n | k | weight MB | cuBLAS us | % copy | decode us | % copy | speed-up | rel err |",
  "|---|---|---|---|---|---|---|---|---|---|---|",
  ...rows.map((r) =>
    `| ${r.shape} | ${r.m} | ${r.n} | ${r.k} | ${r.weightMB.toFixed(1)} | ${
      r.cublasUs.toFixed(1)
    } | ` +
    `${r.cublasCopyPct.toFixed(1)} | ${r.decodeUs.toFixed(1)} | ${r.decodeCopyPct.toFixed(1)} | ` +
    `${r.speedup.toFixed(2)}x | ${r.relErr.toExponential(2)} |`
  ),
  "",
  "One decode step's projections (32 layers of qkv, o, gate_up, down, plus lm_head):",
  "",
  "| m | cuBLAS ms | decode GEMM ms | speed-up |",
  "|---|---|---|---|",
  ...step.map((s) =>
    `| ${s.m} | ${s.cublasMs.toFixed(3)} | ${s.decodeMs.toFixed(3)} | ` +
    `${(s.cublasMs / s.decodeMs).toFixed(2)}x |`
  ),
  "",
].join("\n");
Deno.mkdirSync(outDir, { recursive: true });
writeFileAtomic(`${stem}.md`, md);
writeJsonReport(args.json ?? `${stem}.json`, { device: cuda.info.name, bandwidth, rows, step });
console.log(md);
console.log(`wrote ${stem}.{md,json}`);
if (failed) {
  console.error(
    "bench:gemm: a decode GEMM output differs from cuBLAS by more than 1e-4 (rel err column)",
  );
  Deno.exit(1);
}
