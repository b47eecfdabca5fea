/**
 * One decode-attention step on the GPU: dense vs Double Sparsity
 * ==============================================================
 *
 * A smoke example of the runtime below the model: a Llama-3-8B-shaped attention layer (32 query
 * heads, 8 kv heads, head dim 128, fp16 K/V), group selection with 16 label channels at 8 bits,
 * a budget of 1/16 of the context, batch 4 at 16K tokens of random K/V. It runs one decode step
 * with dense attention and with Double Sparsity, times each (CUDA events, median of 20 runs
 * after warm-up) and prints the relative difference between the two outputs.
 *
 *     deno run -A examples/attention.ts [--batch 4] [--context 16384]
 *
 * Without a GPU it says why in one line and exits with code 1.
 */
import { intFlag, openCommand } from "../src/cli/front_door.ts";
import { requireGpu } from "../src/runtime/device.ts";
import { defineAttention, denseStepBytes, sparseStepBytes } from "../src/dsl/spec.ts";
import { PagedKvCache } from "../src/runtime/caches.ts";
import { DecodePlan } from "../src/runtime/decode_plan.ts";
import { Variant } from "../src/runtime/variant.ts";
import { decodeArray, encodeArray } from "../src/util/dtype.ts";
import { mulberry32 } from "../src/util/random.ts";
import { medianEventMs } from "../src/runtime/timing.ts";

const { values: args } = openCommand({
  name: "attention",
  usage: `deno run -A examples/attention.ts [--batch 4] [--context 16384]
  --batch B     sequences (an integer >= 1, default 4)
  --context L   tokens per sequence (an integer >= 2, default 16384)`,
  options: {
    batch: { type: "string", default: "4" },
    context: { type: "string", default: "16384" },
  },
});
const B = intFlag("batch", args.batch, { min: 1 });
const L = intFlag("context", args.context, { min: 2 });

// 1. A GPU, or a one-line error and exit code 1.
const cuda = requireGpu("examples/attention.ts");
console.log(`device: ${cuda.info.name} (${cuda.info.arch}, ${cuda.info.multiprocessors} SMs)`);

// 2. The variant: the DSL validates it and names its kernels; Variant.load generates (if needed),
//    compiles with NVRTC (cached on disk) and loads them.
const spec = defineAttention({
  headDim: 128,
  numQHeads: 32,
  numKvHeads: 8,
  kvDtype: "fp16",
  pageSize: 16,
  labels: { channels: 16, bits: 8 },
  selection: "group",
  budget: { ratio: 1 / 16, min: 16 },
});
using stream = cuda.stream();
using variant = await Variant.load(cuda, spec, { stream });
variant.bindStream(stream);
console.log(`variant: ${spec.variant}; batch ${B}, context ${L}`);

// 3. A one-layer paged cache (K, V, labels) and a decode plan for the batch.
using cache = new PagedKvCache(cuda, spec, { numLayers: 1, numSeqs: B, maxContext: L });
const d = spec.headDim, Hq = spec.numQHeads, Hkv = spec.numKvHeads, r = spec.labelChannels;
// Random K has no outlier channels, so any label channels do: a random set per label head.
const channels = new Int32Array(spec.numLabelHeads * r);
const rand = mulberry32(1);
for (let h = 0; h < spec.numLabelHeads; h++) {
  const perm = Array.from({ length: d }, (_, i) => i);
  for (let i = 0; i < r; i++) {
    const j = i + Math.floor(rand() * (d - i));
    [perm[i], perm[j]] = [perm[j], perm[i]];
  }
  channels.set(perm.slice(0, r), h * r);
}
cache.layers[0].setChannels(channels, stream);
using plan = new DecodePlan(cuda, variant, cache, stream);

// 4. Fill L-1 tokens per sequence with random K/V through the bulk append (which also writes
//    the quantized labels), in chunks, then append the step's own token with beginStep/append.
const rowElems = Hkv * d;
const start = Array.from({ length: B }, (_, b) => cache.pages.grow(b, L - 1));
cache.syncBlockTables(stream);
const CHUNK = 4096;
{
  using kBuf = cuda.alloc(CHUNK * rowElems * 2);
  using vBuf = cuda.alloc(CHUNK * rowElems * 2);
  using seqBuf = cuda.alloc(CHUNK * 4);
  using posBuf = cuda.alloc(CHUNK * 4);
  for (let b = 0; b < B; b++) {
    for (let at = 0; at < L - 1; at += CHUNK) {
      const n = Math.min(CHUNK, L - 1 - at);
      const k = encodeArray("fp16", normalFloats(n * rowElems, rand));
      const v = encodeArray("fp16", normalFloats(n * rowElems, rand));
      kBuf.upload(k, stream);
      vBuf.upload(v, stream);
      seqBuf.upload(new Int32Array(n).fill(b), stream);
      posBuf.upload(Int32Array.from({ length: n }, (_, i) => start[b] + at + i), stream);
      plan.appendRows(0, kBuf.ptr, vBuf.ptr, seqBuf.ptr, posBuf.ptr, n);
      stream.synchronize(); // the host arrays go out of scope
    }
  }
  console.log(`filled ${B} x ${L - 1} tokens`);
}
plan.beginStep();
plan.upload(stream);
using kNew = cuda.alloc(B * rowElems * 2);
using vNew = cuda.alloc(B * rowElems * 2);
const kStep = encodeArray("fp16", normalFloats(B * rowElems, rand));
const vStep = encodeArray("fp16", normalFloats(B * rowElems, rand));
kNew.upload(kStep, stream);
vNew.upload(vStep, stream);
plan.append(0, kNew.ptr, vNew.ptr);
stream.synchronize();
console.log(`routes: ${plan.routes.join(", ")}; budgets: ${Array.from(plan.budgets).join(", ")}`);

// 5. One step, both ways: `plan.attention(layer, q, out, true)` is dense for every sequence;
//    without `true` it scores labels, selects the top-k and attends sparsely.
const qBits = encodeArray("fp16", normalFloats(B * Hq * d, rand));
using q = cuda.alloc(qBits.byteLength);
q.upload(qBits, stream);
using outDense = cuda.alloc(B * Hq * d * 2);
using outSparse = cuda.alloc(B * Hq * d * 2);

// Median of 20 event-timed runs after 5 warm-ups (src/runtime/timing.ts).
const timeMs = (run: () => void) => medianEventMs(cuda, stream, run, 20, 5);
const denseMs = timeMs(() => plan.attention(0, q.ptr, outDense.ptr, true));
const sparseMs = timeMs(() => plan.attention(0, q.ptr, outSparse.ptr));

// 6. Outputs back to the host (fp16 bits -> floats) and compared.
const dense = new Uint16Array(B * Hq * d);
const sparse = new Uint16Array(B * Hq * d);
outDense.download(dense, stream);
outSparse.download(sparse, stream);
const a = decodeArray("fp16", sparse), ref = decodeArray("fp16", dense);
let num = 0, den = 0;
for (let i = 0; i < ref.length; i++) {
  num += (a[i] - ref[i]) ** 2;
  den += ref[i] ** 2;
}
const gb = (bytes: number, ms: number) => (bytes * B) / (ms * 1e6);
console.log(
  `dense:            ${denseMs.toFixed(4)} ms  (${
    gb(denseStepBytes(spec, L), denseMs).toFixed(0)
  } ` +
    `GB/s of modelled bytes)`,
);
console.log(
  `double sparsity:  ${sparseMs.toFixed(4)} ms  (${
    gb(sparseStepBytes(spec, L), sparseMs).toFixed(0)
  } GB/s of modelled bytes)`,
);
console.log(`speed-up:         ${(denseMs / sparseMs).toFixed(2)}x`);
console.log(
  `relative error of Double Sparsity vs dense output: ${Math.sqrt(num / den).toExponential(3)} ` +
    `(random K/V spread attention evenly, so 1/16 of the tokens cannot hold most of the mass; ` +
    `real models concentrate it)`,
);

/** Roughly normal floats (Box-Muller). */
function normalFloats(n: number, random: () => number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u1 = 1 - random(), u2 = random();
    const m = Math.sqrt(-2 * Math.log(u1));
    out[i] = m * Math.cos(2 * Math.PI * u2);
    if (i + 1 < n) out[i + 1] = m * Math.sin(2 * Math.PI * u2);
  }
  return out;
}
