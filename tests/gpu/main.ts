/**
 * `deno task test:gpu`: every generated kernel and the whole decode step against the CPU
 * reference (float64), on fresh random inputs, with outputs poisoned before each run, over a grid
 * of shapes: batch 1/3/8, ragged contexts incl. 1, 15, 16, 17, 1000, 4099 and 32768, pages of 16
 * and 64, MHA / GQA 2 / GQA 4, fp16 and bf16, label bits 16/8/4/2, head and group selection,
 * fixed and ratio budgets. Each case runs two layers (the selection workspaces must be left clean
 * between them) and checks, in order:
 *   append   the paged K/V and label pools equal the reference cache word for word;
 *   score    each 16-bit key brackets the reference score (within rounding), and the histogram
 *            counts the keys exactly;
 *   select   the selected set equals the reference top-k up to ties within rounding; histogram and
 *            counters are zero afterwards;
 *   attend   sparse + dense + merge equal the reference attention over the GPU's selection, and
 *            the reference Double Sparsity step end to end;
 *   persist  at batch <= 4 with every sequence routed sparse, the persistent step (one cooperative
 *            launch) selects exactly the chain's token sets, leaves the workspaces zeroed, and
 *            its output equals the chain's within the output tolerance (splits differ);
 *   graph    a CUDA-graph replay of the step reproduces the direct launches (the persistent
 *            step where the plan chooses it, so its grid barrier is replayed twice).
 * Then the prefill checks (tests/gpu/prefill.ts), the builtin GEMM (tests/gpu/gemm.ts; its decoder
 * comparison only with the model), the offload prediction's query kernel
 * (tests/gpu/predict_query.ts), the GPU decoder (tests/gpu/model.ts), token choice on the
 * device (tests/gpu/token_choice.ts) and Double Sparsity-Offload (tests/gpu/offload.ts: K/V in
 * host memory against the on-GPU decoders).
 * Prints one line per case and a summary; exits 1 on any failure.
 *
 *   deno task test:gpu [--reduced] [--case NAME] [--seed N] [--json FILE]
 */
import { intFlag, openCommand } from "../../src/cli/front_door.ts";
import { requireGpu } from "../../src/runtime/device.ts";
import { type AttentionInput, type AttentionSpec, defineAttention } from "../../src/dsl/spec.ts";
import { cacheLayout, kvRowOffset, labelMetaOffset, labelRowOffset } from "../../src/dsl/layout.ts";
import type { DeviceBuffer, MappedHostBuffer, Stream } from "../../src/cuda/driver.ts";
import { Variant } from "../../src/runtime/variant.ts";
import { PagedKvCache } from "../../src/runtime/caches.ts";
import { DecodePlan } from "../../src/runtime/decode_plan.ts";
import { CpuPagedCache } from "../../src/reference/paged_cache.ts";
import {
  doubleSparsityDecode,
  labelScores,
  sparseDecode,
  topK,
} from "../../src/reference/attention.ts";
import { decodeArray, encodeArray } from "../../src/util/dtype.ts";
import { checkSelection, key16Interval, Random, relativeError, table } from "./support.ts";
import { writeFileAtomic } from "../../src/util/fs.ts";
import { runModelChecks } from "./model.ts";
import { runPrefillChecks } from "./prefill.ts";
import { runGemmChecks } from "./gemm.ts";
import { runTokenChoiceChecks } from "./token_choice.ts";
import { runPredictQueryChecks } from "./predict_query.ts";
import { runOffloadChecks } from "./offload.ts";
import { persistentWanted } from "../../src/runtime/persistent_step.ts";

interface Case {
  readonly name: string;
  readonly spec: AttentionInput;
  readonly lens: number[];
  /** All-zero queries: every score ties, so the tie-break decides the whole selection. */
  readonly zeroQuery?: boolean;
  readonly graph?: boolean;
  /** Part of the reduced grid (sanitizer runs). */
  readonly reduced?: boolean;
}

const shape = (headDim: number, q: number, kv: number, dtype: "fp16" | "bf16", page: number) => ({
  headDim,
  numQHeads: q,
  numKvHeads: kv,
  kvDtype: dtype,
  pageSize: page,
});
const ratio = { ratio: 1 / 16, min: 16 };

export const CASES: Case[] = [
  {
    name: "mha-fp16-p16-r8b16-head-ratio",
    spec: {
      ...shape(128, 4, 4, "fp16", 16),
      labels: { channels: 8, bits: 16 },
      selection: "head",
      budget: ratio,
    },
    lens: [1, 17, 1000],
    reduced: true,
    graph: true,
  },
  {
    name: "gqa2-fp16-p64-r16b8-group-fixed",
    spec: {
      ...shape(128, 4, 2, "fp16", 64),
      labels: { channels: 16, bits: 8 },
      selection: "group",
      budget: { tokens: 64 },
    },
    lens: [1, 15, 16, 17, 1000, 4099, 65, 64],
    reduced: true,
  },
  {
    name: "gqa4-bf16-p16-r32b4-head-ratio-32k",
    spec: {
      ...shape(128, 8, 2, "bf16", 16),
      labels: { channels: 32, bits: 4 },
      selection: "head",
      budget: ratio,
    },
    lens: [32768],
  },
  {
    name: "gqa4-fp16-p16-r16b8-headkv-ratio",
    spec: {
      ...shape(128, 8, 2, "fp16", 16),
      labels: { channels: 16, bits: 8, heads: "kv" },
      selection: "head",
      budget: ratio,
    },
    lens: [4099, 1000, 17],
    graph: true,
  },
  {
    // Per-head selection over kv labels with two query heads per kv head: score blocks of two
    // heads (16-bit counter pairs), many chunks per label head at 9000 tokens.
    name: "gqa2-bf16-p64-r16b4-headkv-fixed",
    spec: {
      ...shape(128, 4, 2, "bf16", 64),
      labels: { channels: 16, bits: 4, heads: "kv" },
      selection: "head",
      budget: { tokens: 200 },
    },
    lens: [9000, 257, 4096],
  },
  {
    name: "gqa4-fp16-p16-r16b8-group-ratio-32k",
    spec: {
      ...shape(128, 8, 2, "fp16", 16),
      labels: { channels: 16, bits: 8 },
      selection: "group",
      budget: ratio,
    },
    lens: [32768],
    graph: true,
  },
  {
    // Pages of 2 tokens: the longest context (4100 tokens) is no multiple of the select kernel's
    // 8-key vectors, so the key rows' stride is rounded up past it.
    name: "gqa2-fp16-p2-r16b8-head-ratio",
    spec: {
      ...shape(128, 4, 2, "fp16", 2),
      labels: { channels: 16, bits: 8 },
      selection: "head",
      budget: ratio,
    },
    lens: [4099, 1001, 3, 2050],
  },
  {
    name: "gqa2-bf16-p64-r16b16-group-ratio8",
    spec: {
      ...shape(128, 4, 2, "bf16", 64),
      labels: { channels: 16, bits: 16 },
      selection: "group",
      budget: { ratio: 1 / 8, min: 16 },
    },
    lens: [4099, 64, 129],
  },
  {
    name: "mha-bf16-p64-r16b4-group-fixed",
    spec: {
      ...shape(128, 2, 2, "bf16", 64),
      labels: { channels: 16, bits: 4 },
      selection: "group",
      budget: { tokens: 100 },
    },
    lens: [1, 15, 16, 17, 1000, 4099, 101, 100],
  },
  {
    name: "d64-gqa4-fp16-p64-r16b4-group-threshold",
    spec: {
      ...shape(64, 8, 2, "fp16", 64),
      labels: { channels: 16, bits: 4 },
      selection: "group",
      budget: { tokens: 256 },
      denseThreshold: 1024,
    },
    lens: [1000, 1024, 4099],
  },
  {
    name: "d256-gqa2-fp16-p16-r16b8-head",
    spec: {
      ...shape(256, 4, 2, "fp16", 16),
      labels: { channels: 16, bits: 8 },
      selection: "head",
      budget: ratio,
    },
    lens: [17, 300, 2000],
  },
  {
    name: "gqa2-fp16-p16-r32b2-head",
    spec: {
      ...shape(128, 4, 2, "fp16", 16),
      labels: { channels: 32, bits: 2 },
      selection: "head",
      budget: ratio,
    },
    lens: [4099],
  },
  {
    name: "oracle-gqa2-fp16-p16-r128b16-head",
    spec: {
      ...shape(128, 4, 2, "fp16", 16),
      labels: { channels: 128, bits: 16 },
      selection: "head",
      budget: ratio,
    },
    lens: [1000, 2048],
  },
  {
    name: "ties-gqa2-fp16-p16-r16b8-group-zeroq-32k",
    spec: {
      ...shape(128, 4, 2, "fp16", 16),
      labels: { channels: 16, bits: 8 },
      selection: "group",
      budget: ratio,
    },
    lens: [32768, 5000],
    zeroQuery: true,
    reduced: true,
  },
];

const { values: args } = openCommand({
  name: "test:gpu",
  usage: `deno task test:gpu [--reduced] [--case NAME] [--seed N] [--json FILE] [--no-model]
  --reduced     the reduced grid (sanitizer runs)
  --case NAME   only the cases whose name contains NAME
  --seed N      random seed (an integer >= 0; default: from the clock, printed)
  --json FILE   write the results as JSON
  --no-model    skip the model checks`,
  options: {
    reduced: { type: "boolean", default: false },
    case: { type: "string" },
    seed: { type: "string" },
    json: { type: "string" },
    "no-model": { type: "boolean", default: false },
  },
});

const seed = intFlag("seed", args.seed, { min: 0 }) ?? Date.now() % 2 ** 31;
const random = new Random(seed);
const cuda = requireGpu("deno task test:gpu");
const stream = cuda.stream();

interface CaseResult {
  name: string;
  variant: string;
  lens: number[];
  routes: string;
  appendMismatch: number;
  keyViolations: number;
  selectionAgreement: number;
  tieSwaps: number;
  attentionError: number;
  endToEndError: number;
  graphError: number | null;
  /** Largest output difference of the persistent step from the chain; null when not run. */
  persistentError: number | null;
  failures: string[];
  seconds: number;
}

const NUM_LAYERS = 2;
const outputTolerance = (s: AttentionSpec) => (s.kvDtype === "fp16" ? 2e-3 : 1.2e-2);

function download<T extends Uint8Array | Uint16Array | Int32Array | Uint32Array | Float32Array>(
  buf: DeviceBuffer | MappedHostBuffer,
  ctor: { new (n: number): T; BYTES_PER_ELEMENT: number },
  s: Stream,
): T {
  const out = new ctor(buf.bytes / ctor.BYTES_PER_ELEMENT);
  buf.download(out, s);
  return out;
}

/**
 * The persistent step against the chain on one layer (the plan's step inputs, q in `q`): first
 * stopped after top-k, whose token sets must equal `chainSets` (the chain's, sorted) exactly and
 * whose histograms and counters must be zero; then whole, into a poisoned `outBuf`, whose output
 * must equal `chainOut` within the output tolerance. Returns the largest relative error.
 */
function checkPersistentStep(
  plan: DecodePlan,
  layer: number,
  q: bigint,
  outBuf: DeviceBuffer,
  chainSets: Int32Array[][],
  chainOut: Float32Array,
  failures: string[],
): number {
  const spec = plan.spec;
  const SH = spec.numSelectionHeads, B = plan.batch, Hq = spec.numQHeads, d = spec.headDim;
  plan.workspace.selIdx.fill8(0xff, stream);
  plan.persistentStep(layer, q, outBuf.ptr, 0n, "top-k");
  const sel = download(plan.workspace.selIdx, Int32Array, stream);
  for (let b = 0; b < B; b++) {
    const k = plan.budgets[b];
    for (let sh = 0; sh < SH; sh++) {
      const at = (b * SH + sh) * plan.selStride;
      const got = sel.slice(at, at + k).sort();
      const want = chainSets[b][sh];
      if (got.length !== want.length || got.some((t, i) => t !== want[i])) {
        const differ = got.filter((t, i) => t !== want[i]).length;
        failures.push(
          `persistent: layer ${layer} seq ${b} head ${sh}: ${differ} of ${k} selected tokens ` +
            "differ from the chain's",
        );
      }
    }
  }
  if (download(plan.workspace.hist, Uint32Array, stream).some((v) => v !== 0)) {
    failures.push("persistent: histogram not reset");
  }
  if (download(plan.workspace.counters, Uint32Array, stream).some((v) => v !== 0)) {
    failures.push("persistent: counters not reset");
  }
  plan.workspace.partialO.fill8(0xff, stream);
  plan.workspace.partialLse.fill8(0xff, stream);
  outBuf.fill8(0xff, stream);
  plan.persistentStep(layer, q, outBuf.ptr);
  const got = decodeArray(spec.kvDtype, download(outBuf, Uint16Array, stream));
  let worst = 0;
  for (let i = 0; i < B * Hq; i++) {
    worst = Math.max(
      worst,
      relativeError(got.subarray(i * d, (i + 1) * d), chainOut.subarray(i * d, (i + 1) * d)),
    );
  }
  if (!(worst <= outputTolerance(spec))) {
    failures.push(`persistent: output differs from the chain's by ${worst.toExponential(2)}`);
  }
  return worst;
}

async function runCase(c: Case): Promise<CaseResult> {
  const started = performance.now();
  const spec = defineAttention(c.spec);
  const failures: string[] = [];
  const variant = await Variant.load(cuda, spec, { stream });
  variant.bindStream(stream);
  const B = c.lens.length;
  const maxContext = Math.max(...c.lens);
  const P = spec.pageSize;
  const maxPages = Math.ceil(maxContext / P);
  const numPages = c.lens.reduce((n, l) => n + Math.ceil(l / P), 0) + 2 * B;
  const d = spec.headDim, Hkv = spec.numKvHeads, Hq = spec.numQHeads, r = spec.labelChannels;

  // Reference caches (one per layer) sharing one page table, scattered over the pool.
  const channels = Array.from({ length: NUM_LAYERS }, () => {
    const ch = new Int32Array(spec.numLabelHeads * r);
    for (let h = 0; h < spec.numLabelHeads; h++) ch.set(random.permutation(d, r), h * r);
    return ch;
  });
  const ref0 = new CpuPagedCache(spec, channels[0], B, numPages, maxPages);
  ref0.pages.scrambleFreeList(() => random.next());
  const refs = [
    ref0,
    ...channels.slice(1).map((ch) =>
      new CpuPagedCache(spec, ch, B, numPages, maxPages, ref0.pages)
    ),
  ];
  using cache = new PagedKvCache(cuda, spec, {
    numLayers: NUM_LAYERS,
    numSeqs: B,
    maxContext,
    pageTable: ref0.pages,
  });
  cache.layers.forEach((l, i) => l.setChannels(channels[i], stream));
  // The persistent step is off by default (measured slower); the grid still runs it at batch <= 4
  // (attention() then takes it, and the persistent check compares it with the chain's launches).
  using plan = new DecodePlan(cuda, variant, cache, stream, {
    persistentStep: persistentWanted("auto", B),
  });

  // Prefill L-1 tokens per sequence through the bulk (row) append.
  const rowSeq: number[] = [], rowPos: number[] = [];
  for (let b = 0; b < B; b++) {
    const n = c.lens[b] - 1;
    const start = n > 0 ? ref0.pages.grow(b, n) : 0;
    for (let i = 0; i < n; i++) {
      rowSeq.push(b);
      rowPos.push(start + i);
    }
  }
  cache.syncBlockTables(stream);
  const rowElems = Hkv * d;
  if (rowSeq.length > 0) {
    using seqBuf = cuda.alloc(rowSeq.length * 4);
    using posBuf = cuda.alloc(rowSeq.length * 4);
    seqBuf.upload(Int32Array.from(rowSeq), stream);
    posBuf.upload(Int32Array.from(rowPos), stream);
    for (let layer = 0; layer < NUM_LAYERS; layer++) {
      const kBits = encodeArray(spec.kvDtype, random.floats(rowSeq.length * rowElems));
      const vBits = encodeArray(spec.kvDtype, random.floats(rowSeq.length * rowElems));
      for (let i = 0; i < rowSeq.length; i++) {
        refs[layer].writeToken(rowSeq[i], rowPos[i], kBits, vBits, i * rowElems);
      }
      using kBuf = cuda.alloc(kBits.byteLength);
      using vBuf = cuda.alloc(vBits.byteLength);
      kBuf.upload(kBits, stream);
      vBuf.upload(vBits, stream);
      plan.appendRows(layer, kBuf.ptr, vBuf.ptr, seqBuf.ptr, posBuf.ptr, rowSeq.length);
      stream.synchronize(); // the upload sources are freed at the end of this iteration
    }
  }

  // One decode step: append the new token of every sequence, then attend.
  const positions = plan.beginStep();
  plan.upload(stream);
  const qBits: Uint16Array[] = [];
  using kNew = cuda.alloc(B * rowElems * 2);
  using vNew = cuda.alloc(B * rowElems * 2);
  for (let layer = 0; layer < NUM_LAYERS; layer++) {
    const kBits = encodeArray(spec.kvDtype, random.floats(B * rowElems));
    const vBits = encodeArray(spec.kvDtype, random.floats(B * rowElems));
    for (let b = 0; b < B; b++) refs[layer].writeToken(b, positions[b], kBits, vBits, b * rowElems);
    kNew.upload(kBits, stream);
    vNew.upload(vBits, stream);
    plan.append(layer, kNew.ptr, vNew.ptr);
    stream.synchronize();
    qBits.push(
      c.zeroQuery
        ? new Uint16Array(B * Hq * d)
        : encodeArray(spec.kvDtype, random.floats(B * Hq * d)),
    );
  }

  // append: pools equal the reference word for word, row by row.
  const layout = cacheLayout(spec);
  let appendMismatch = 0;
  for (let layer = 0; layer < NUM_LAYERS; layer++) {
    const l = cache.layers[layer], ref = refs[layer];
    const kPool = download(l.k, Uint16Array, stream), vPool = download(l.v, Uint16Array, stream);
    const labels = download(l.labels, Uint32Array, stream),
      meta = download(l.meta, Uint32Array, stream);
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < c.lens[b]; t++) {
        const { page, row } = ref.pages.locate(b, t);
        for (let h = 0; h < Hkv; h++) {
          const o = kvRowOffset(spec, page, h, row);
          for (let i = 0; i < d; i++) {
            if (kPool[o + i] !== ref.k[o + i] || vPool[o + i] !== ref.v[o + i]) appendMismatch++;
          }
        }
        for (let lh = 0; lh < spec.numLabelHeads; lh++) {
          const o = labelRowOffset(spec, page, lh, row);
          for (let w = 0; w < layout.labelRowWords; w++) {
            if (labels[o + w] !== ref.labels[o + w]) appendMismatch++;
          }
          if (layout.quantized) {
            const m = labelMetaOffset(spec, page, lh, row);
            if (meta[m] !== ref.meta[m]) appendMismatch++;
          }
        }
      }
    }
  }
  if (appendMismatch > 0) {
    failures.push(`append: ${appendMismatch} words differ from the reference cache`);
  }

  using qBuf = cuda.alloc(B * Hq * d * 2);
  using outBuf = cuda.alloc(B * Hq * d * 2);
  const SH = spec.numSelectionHeads;
  let keyViolations = 0, minAgreement = 1, tieSwaps = 0, attentionError = 0, endToEndError = 0;
  let persistentError: number | null = null;
  const outputs: Float32Array[] = [];
  const tol = outputTolerance(spec);
  for (let layer = 0; layer < NUM_LAYERS; layer++) {
    const ref = refs[layer];
    qBuf.upload(qBits[layer], stream);
    const qF = decodeArray(spec.kvDtype, qBits[layer]);
    const qOf = (b: number) => qF.subarray(b * Hq * d, (b + 1) * Hq * d);
    const refScores = c.lens.map((
      _,
      b,
    ) => (plan.routes[b] === "sparse" ? labelScores(ref, b, qOf(b)) : undefined));

    // score: keys bracket the reference scores; the histogram counts the keys.
    plan.workspace.keys.fill8(0xff, stream);
    plan.score(layer, qBuf.ptr);
    const keys = download(plan.workspace.keys, Uint16Array, stream);
    const hist = download(plan.workspace.hist, Uint32Array, stream);
    for (let b = 0; b < B; b++) {
      const sc = refScores[b];
      if (!sc) continue;
      for (let sh = 0; sh < SH; sh++) {
        const counts = new Uint32Array(4096);
        const base = (b * SH + sh) * plan.keyStride;
        for (let t = 0; t < c.lens[b]; t++) {
          const key = keys[base + t];
          counts[key >> 4]++;
          const [lo, hi] = key16Interval(key);
          const s = sc.scores[sh][t], slack = 1e-6 * r * sc.magnitudes[sh][t] + 1e-30;
          if (s < lo - slack || s > hi + slack) keyViolations++;
        }
        const h = hist.subarray((b * SH + sh) * 4096, (b * SH + sh + 1) * 4096);
        if (!h.every((v, i) => v === counts[i])) {
          failures.push(`score: histogram of layer ${layer} seq ${b} head ${sh} wrong`);
        }
      }
    }
    if (keyViolations > 0) {
      failures.push(`score: ${keyViolations} keys outside the reference score's rounding band`);
    }

    // select + resolve: top-k up to ties; workspaces left zeroed.
    plan.workspace.selIdx.fill8(0xff, stream);
    plan.select();
    plan.resolve(layer, qBuf.ptr);
    const sel = download(plan.workspace.selIdx, Int32Array, stream);
    if (download(plan.workspace.hist, Uint32Array, stream).some((v) => v !== 0)) {
      failures.push("select: histogram not reset");
    }
    if (download(plan.workspace.counters, Uint32Array, stream).some((v) => v !== 0)) {
      failures.push("select: counters not reset");
    }
    const gpuSets: Int32Array[][] = [];
    for (let b = 0; b < B; b++) {
      const sc = refScores[b];
      if (!sc) {
        gpuSets.push([]);
        continue;
      }
      const k = plan.budgets[b];
      const sets: Int32Array[] = [];
      for (let sh = 0; sh < SH; sh++) {
        const g = sel.slice((b * SH + sh) * plan.selStride, (b * SH + sh) * plan.selStride + k);
        const want = topK(sc.scores[sh], k);
        const check = checkSelection(
          g,
          want,
          sc.scores[sh],
          (t) => 1e-6 * r * sc.magnitudes[sh][t] + 1e-30,
        );
        if (check.error) {
          failures.push(`select: layer ${layer} seq ${b} head ${sh}: ${check.error}`);
        }
        if (c.zeroQuery && check.agreement !== 1) {
          failures.push(`select: ties must go to the lowest indices (seq ${b})`);
        }
        minAgreement = Math.min(minAgreement, check.agreement);
        tieSwaps += check.tieSwaps;
        sets.push(g.sort());
      }
      gpuSets.push(sets);
    }

    // attend: poisoned partials and output, then sparse + dense + merge.
    plan.workspace.partialO.fill8(0xff, stream);
    plan.workspace.partialLse.fill8(0xff, stream);
    outBuf.fill8(0xff, stream);
    plan.sparse(layer, qBuf.ptr);
    plan.dense(layer, qBuf.ptr, false);
    plan.merge(outBuf.ptr, false);
    const out = decodeArray(spec.kvDtype, download(outBuf, Uint16Array, stream));
    outputs.push(out);
    for (let b = 0; b < B; b++) {
      const got = out.subarray(b * Hq * d, (b + 1) * Hq * d);
      const viaGpuSelection = plan.routes[b] === "sparse"
        ? sparseDecode(ref, b, qOf(b), gpuSets[b])
        : doubleSparsityDecode(ref, b, qOf(b)).out;
      for (let h = 0; h < Hq; h++) {
        const e = relativeError(
          got.subarray(h * d, (h + 1) * d),
          viaGpuSelection.subarray(h * d, (h + 1) * d),
        );
        attentionError = Math.max(attentionError, e);
      }
      const e2e = doubleSparsityDecode(ref, b, qOf(b));
      if (e2e.route !== plan.routes[b]) {
        failures.push(`route of seq ${b}: reference ${e2e.route}, plan ${plan.routes[b]}`);
      }
      for (let h = 0; h < Hq; h++) {
        endToEndError = Math.max(
          endToEndError,
          relativeError(got.subarray(h * d, (h + 1) * d), e2e.out.subarray(h * d, (h + 1) * d)),
        );
      }
    }
    if (plan.usesPersistentStep) {
      const e = checkPersistentStep(plan, layer, qBuf.ptr, outBuf, gpuSets, out, failures);
      persistentError = Math.max(persistentError ?? 0, e);
    }
  }
  if (!(attentionError <= tol)) {
    failures.push(`attention: relative error ${attentionError.toExponential(2)} > ${tol}`);
  }
  if (tieSwaps === 0 && !(endToEndError <= tol)) {
    failures.push(`end to end: relative error ${endToEndError.toExponential(2)} > ${tol}`);
  }

  // graph: capture the step's attention for both layers, replay, compare.
  let graphError: number | null = null;
  if (c.graph) {
    const qs = qBits.map((bits) => {
      const buf = cuda.alloc(bits.byteLength);
      buf.upload(bits, stream);
      return buf;
    });
    const outs = qs.map(() => cuda.alloc(B * Hq * d * 2));
    try {
      stream.synchronize();
      using graph = stream.capture(() => {
        plan.uploadStepInputs(stream);
        for (let layer = 0; layer < NUM_LAYERS; layer++) {
          plan.attention(layer, qs[layer].ptr, outs[layer].ptr);
        }
      });
      for (const o of outs) o.fill8(0xff, stream);
      graph.launch(stream);
      graph.launch(stream); // twice: the replay must leave the workspaces reusable
      graphError = 0;
      for (let layer = 0; layer < NUM_LAYERS; layer++) {
        const got = decodeArray(spec.kvDtype, download(outs[layer], Uint16Array, stream));
        graphError = Math.max(graphError, relativeError(got, outputs[layer]));
      }
      if (!(graphError <= tol)) {
        failures.push(`graph replay differs from direct launches by ${graphError}`);
      }
    } finally {
      for (const b of [...qs, ...outs]) b.dispose();
    }
  }
  variant.dispose();
  return {
    name: c.name,
    variant: spec.variant,
    lens: c.lens,
    routes: plan.routes.map((r) => (r === "sparse" ? "S" : "D")).join(""),
    appendMismatch,
    keyViolations,
    selectionAgreement: minAgreement,
    tieSwaps,
    attentionError,
    endToEndError,
    graphError,
    persistentError,
    failures,
    seconds: (performance.now() - started) / 1000,
  };
}

const selected = CASES.filter((c) =>
  (!args.reduced || c.reduced) && (!args.case || c.name.includes(args.case))
);
console.log(
  `GPU checks on ${cuda.info.name} (${cuda.info.arch}, ${cuda.info.multiprocessors} SMs, driver ${cuda.info.driverVersion}); ` +
    `${selected.length} cases, seed ${seed}`,
);
const results: CaseResult[] = [];
for (const c of selected) {
  let res: CaseResult;
  try {
    res = await runCase(c);
  } catch (e) {
    res = {
      name: c.name,
      variant: "",
      lens: c.lens,
      routes: "",
      appendMismatch: -1,
      keyViolations: -1,
      selectionAgreement: 0,
      tieSwaps: 0,
      attentionError: NaN,
      endToEndError: NaN,
      graphError: null,
      persistentError: null,
      failures: [`threw: ${e instanceof Error ? e.stack ?? e.message : e}`],
      seconds: 0,
    };
  }
  results.push(res);
  console.log(
    `${
      res.failures.length === 0 ? "PASS" : "FAIL"
    } ${res.name} lens=[${res.lens}] routes=${res.routes} ` +
      `sel=${(res.selectionAgreement * 100).toFixed(2)}% swaps=${res.tieSwaps} ` +
      `attn=${res.attentionError.toExponential(2)} e2e=${res.endToEndError.toExponential(2)}` +
      (res.graphError !== null ? ` graph=${res.graphError.toExponential(2)}` : "") +
      (res.persistentError !== null ? ` persist=${res.persistentError.toExponential(2)}` : "") +
      ` ${res.seconds.toFixed(1)}s`,
  );
  for (const f of res.failures) console.log(`     ${f}`);
}
stream.synchronize();

console.log(
  "\n" + table(
    [
      "case",
      "routes",
      "append",
      "keys",
      "selection",
      "ties",
      "attn err",
      "e2e err",
      "graph",
      "persistent",
      "result",
    ],
    results.map((r) => [
      r.name,
      r.routes,
      r.appendMismatch === 0 ? "exact" : String(r.appendMismatch),
      r.keyViolations === 0 ? "ok" : String(r.keyViolations),
      `${(r.selectionAgreement * 100).toFixed(2)}%`,
      String(r.tieSwaps),
      r.attentionError.toExponential(2),
      r.endToEndError.toExponential(2),
      r.graphError === null ? "-" : r.graphError.toExponential(2),
      r.persistentError === null ? "-" : r.persistentError.toExponential(2),
      r.failures.length === 0 ? "pass" : "FAIL",
    ]),
  ),
);
const failed = results.filter((r) => r.failures.length > 0).length;
console.log(
  `\n${results.length - failed}/${results.length} cases passed on ${cuda.info.name}; ` +
    `worst attention error ${
      Math.max(...results.map((r) => r.attentionError)).toExponential(2)
    }, ` +
    `worst selection agreement ${
      (Math.min(...results.map((r) => r.selectionAgreement)) * 100).toFixed(2)
    }%; persistent step checked in ${
      results.filter((r) => r.persistentError !== null).length
    } cases; seed ${seed}`,
);
let prefillOk = true;
if (!args.case) {
  console.log("\nPrefill attention (tests/gpu/prefill.ts):");
  using prefillStream = cuda.stream();
  prefillOk = await runPrefillChecks(cuda, prefillStream, seed);
}
let gemmOk = true;
if (!args.case) {
  console.log("\nBuiltin GEMM (tests/gpu/gemm.ts):");
  gemmOk = await runGemmChecks(cuda, { seed, model: !args["no-model"] });
  console.log(gemmOk ? "builtin GEMM checks passed" : "builtin GEMM checks failed");
}
let predictOk = true;
if (!args.case) {
  console.log("\nOffload prediction's query (tests/gpu/predict_query.ts):");
  predictOk = runPredictQueryChecks(cuda, seed);
}
let modelFailures: string[] = [];
if (!args["no-model"] && !args.case) {
  console.log("\nDecoder on the GPU (tiny-code-llama-8k):");
  try {
    modelFailures = await runModelChecks();
  } catch (e) {
    modelFailures = [`threw: ${e instanceof Error ? e.stack ?? e.message : e}`];
  }
  for (const f of modelFailures) console.log(`FAIL decoder: ${f}`);
  console.log(
    modelFailures.length === 0
      ? "decoder checks passed"
      : `${modelFailures.length} decoder checks failed`,
  );
}
if (!args["no-model"] && !args.case) {
  console.log("\nToken choice on the device (tests/gpu/token_choice.ts):");
  let choiceFailures: string[];
  try {
    choiceFailures = await runTokenChoiceChecks();
  } catch (e) {
    choiceFailures = [`threw: ${e instanceof Error ? e.stack ?? e.message : e}`];
  }
  for (const f of choiceFailures) console.log(`FAIL token choice: ${f}`);
  console.log(
    choiceFailures.length === 0
      ? "token choice checks passed"
      : `${choiceFailures.length} token choice checks failed`,
  );
  modelFailures = [...modelFailures, ...choiceFailures.map((f) => `token choice: ${f}`)];
}
if (!args["no-model"] && !args.case) {
  console.log("\nDouble Sparsity-Offload (tests/gpu/offload.ts):");
  const offloadFailures = await runOffloadChecks(cuda, seed);
  for (const f of offloadFailures) console.log(`FAIL offload: ${f}`);
  modelFailures = [...modelFailures, ...offloadFailures.map((f) => `offload: ${f}`)];
}
if (args.json) {
  writeFileAtomic(
    args.json,
    JSON.stringify({ device: cuda.info, seed, results, modelFailures }, null, 2),
  );
}
Deno.exit(
  failed === 0 && results.length > 0 && modelFailures.length === 0 && prefillOk && gemmOk &&
    predictOk
    ? 0
    : 1,
);
