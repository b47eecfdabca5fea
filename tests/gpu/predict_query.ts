/**
 * The offload prediction's query kernel (`predict_query` of the model kernel family), part of
 * `deno task test:gpu` or alone: `deno run -A tests/gpu/predict_query.ts [--seed N]`.
 *
 * Against float64 on the same dtype-rounded inputs, fp16 and bf16, for two model shapes (the
 * bundled model's, hidden 512 and 4/2 heads of 128, whose rows take the 16-byte path; and hidden
 * 100 with 6/2 heads of 32, whose rows take the element path), rows 1, 4, 5 and 9 (one, two and
 * three passes of PREDICT_QUERY_ROWS = 4), label heads per kv head (group selection) and per query head,
 * with and without Q biases, attention factors 1 and 1.25, random positions below 2^17, and label
 * channels that include both members of a RoPE pair and the pair edges (0, d/2 - 1, d/2, d - 1):
 *  - every label channel of every query head and row is within the fp32 bound of the projection
 *    and rotation plus one rounding to the model dtype;
 *  - every other element of q, and a guard after it, keeps its poison (the kernel writes the label
 *    channels only);
 *  - the K and V rows of the fused weight and the K/V biases are NaN, so reading past the Q rows
 *    shows as a NaN output.
 */
import { intFlag, openCommand } from "../../src/cli/front_door.ts";
import type { Cuda } from "../../src/cuda/driver.ts";
import { requireGpu } from "../../src/runtime/device.ts";
import { PREDICT_QUERY_ITEMS, PREDICT_QUERY_ROWS } from "../../src/codegen/families.ts";
import { decodeArray, encodeArray } from "../../src/util/dtype.ts";
import { BUNDLED_SHAPE, type FamilyShape, modelFamily } from "./model_family.ts";
import { type BoundedCase, CaseTally, Random } from "./support.ts";

/** A shape whose hidden size is not a multiple of 8 (the kernel's element path). */
const ODD_SHAPE: FamilyShape = {
  hidden: 100,
  headDim: 32,
  numQHeads: 6,
  numKvHeads: 2,
  intermediate: 64,
};
/** One, two and three passes over the weight rows, full and partial. */
const ROWS = [1, PREDICT_QUERY_ROWS, PREDICT_QUERY_ROWS + 1, 2 * PREDICT_QUERY_ROWS + 1];
/** q elements after the buffer's end that must stay untouched. */
const GUARD = 64;
const POISON = 0x7e01;
const NAN_BITS = { fp16: 0x7e00, bf16: 0x7fc0 } as const;

/** Distinct label channels of one label head: the pair edges, one whole pair, then random. */
function labelChannels(rng: Random, headDim: number, count: number): number[] {
  const half = headDim / 2;
  const pair = 1 + rng.int(half - 2);
  const picked = new Set([0, half - 1, half, headDim - 1, pair, pair + half].slice(0, count));
  while (picked.size < count) picked.add(rng.int(headDim));
  return [...picked];
}

function runCase(
  cuda: Cuda,
  shape: FamilyShape,
  dtype: "fp16" | "bf16",
  rows: number,
  perQueryHead: boolean,
  withBias: boolean,
  attentionFactor: number,
  rng: Random,
): BoundedCase {
  const { hidden: H, headDim: d, numQHeads: Hq, numKvHeads: Hkv } = shape;
  const half = d / 2, qWidth = Hq * d, qkvWidth = (Hq + 2 * Hkv) * d;
  const r = d >= 64 ? 16 : 5;
  const labelHeads = perQueryHead ? Hq : Hkv;
  const labelHeadOf = (h: number) => perQueryHead ? h : Math.floor(h / (Hq / Hkv));
  const name = `${dtype} hidden ${H} heads ${Hq}/${Hkv}x${d} rows ${rows} r ${r} ` +
    `${perQueryHead ? "per query head" : "per kv head"}${withBias ? " bias" : ""} factor ` +
    `${attentionFactor}`;

  const xBits = encodeArray(dtype, rng.floats(rows * H));
  const wBits = encodeArray(dtype, rng.floats(qkvWidth * H, 0.05));
  wBits.fill(NAN_BITS[dtype], qWidth * H);
  const xs = decodeArray(dtype, xBits), ws = decodeArray(dtype, wBits);
  const bias = withBias ? rng.floats(qkvWidth, 0.5) : null;
  bias?.fill(NaN, qWidth);
  const invFreq = Float32Array.from({ length: half }, (_, j) => 10000 ** (-2 * j / d));
  const positions = Int32Array.from({ length: rows }, () => rng.int(1 << 17));
  const channels = new Int32Array(labelHeads * r);
  for (let l = 0; l < labelHeads; l++) channels.set(labelChannels(rng, d, r), l * r);
  const labelHeadOfQ = Int32Array.from({ length: Hq }, (_, h) => labelHeadOf(h));
  const before = new Uint16Array(rows * qWidth + GUARD).fill(POISON);

  using stream = cuda.stream();
  using kernels = modelFamily(cuda, dtype, stream, shape);
  const upload = (data: ArrayBufferView & { byteLength: number }) => {
    const buf = cuda.alloc(data.byteLength);
    buf.upload(data, stream);
    return buf;
  };
  using x = upload(xBits);
  using w = upload(wBits);
  using b = bias ? upload(bias) : null;
  using inv = upload(invFreq);
  using pos = upload(positions);
  using ch = upload(channels);
  using lh = upload(labelHeadOfQ);
  using q = upload(before);
  kernels.launch("predict_query", [Math.ceil(Hq * r / PREDICT_QUERY_ITEMS), 1, 1], {
    x: x.ptr,
    rows,
    wQ: w.ptr,
    bias: b?.ptr ?? 0n,
    positions: pos.ptr,
    invFreq: inv.ptr,
    attentionFactor,
    channels: ch.ptr,
    labelChannels: r,
    labelHeadOfQ: lh.ptr,
    q: q.ptr,
  });
  const gotBits = new Uint16Array(before.length);
  q.download(gotBits, stream);
  const got = decodeArray(dtype, gotBits);

  const failures: string[] = [];
  let bad = 0, worstRatio = 0, firstBad = "";
  const written = new Uint8Array(before.length);
  const rel = dtype === "fp16" ? 2 ** -11 : 2 ** -8;
  for (let m = 0; m < rows; m++) {
    for (let h = 0; h < Hq; h++) {
      for (let c = 0; c < r; c++) {
        const channel = channels[labelHeadOf(h) * r + c];
        const i = channel % half, col = h * d + i;
        let a = bias ? bias[col] : 0, bb = bias ? bias[col + half] : 0;
        let absA = Math.abs(a), absB = Math.abs(bb);
        for (let t = 0; t < H; t++) {
          const xv = xs[m * H + t];
          a += xv * ws[col * H + t];
          bb += xv * ws[(col + half) * H + t];
          absA += Math.abs(xv * ws[col * H + t]);
          absB += Math.abs(xv * ws[(col + half) * H + t]);
        }
        const angle = Math.fround(positions[m] * invFreq[i]);
        const cs = Math.cos(angle) * attentionFactor, sn = Math.sin(angle) * attentionFactor;
        const want = channel < half ? a * cs - bb * sn : bb * cs + a * sn;
        // fp32 sums of H + 1 terms, sincosf within a few ulp, four fp32 operations, then one
        // rounding to the model dtype (and its subnormal step).
        const sums = (H + 2) * 2 ** -24 * (absA + absB) * attentionFactor;
        const trig = (2 ** -22 + 4 * 2 ** -24) * attentionFactor * (Math.abs(a) + Math.abs(bb));
        const err = sums + trig;
        const bound = 1.01 * (err + rel * (Math.abs(want) + err) + 2 ** -24);
        const at = (m * Hq + h) * d + channel;
        written[at] = 1;
        const diff = Math.abs(got[at] - want);
        const ratio = Number.isFinite(diff) ? diff / bound : Infinity;
        worstRatio = Math.max(worstRatio, ratio);
        if (!(ratio <= 1)) {
          if (bad++ === 0) firstBad = `q[${m}][${h}][${channel}] = ${got[at]}, want ${want}`;
        }
      }
    }
  }
  if (bad > 0) failures.push(`${bad} label channels outside the bound (first: ${firstBad})`);
  let touched = 0, firstTouched = -1;
  for (let e = 0; e < gotBits.length; e++) {
    if (!written[e] && gotBits[e] !== POISON) {
      if (touched++ === 0) firstTouched = e;
    }
  }
  if (touched > 0) {
    failures.push(
      `${touched} elements outside the label channels were written (first: element ` +
        `${firstTouched}${firstTouched >= rows * qWidth ? ", past q's end" : ""})`,
    );
  }
  return { name, worstRatio, failures };
}

/** Every case; prints one summary line (and one line per failing case). */
export function runPredictQueryChecks(cuda: Cuda, seed: number): boolean {
  const rng = new Random(seed);
  const tally = new CaseTally("predict_query");
  for (const shape of [BUNDLED_SHAPE, ODD_SHAPE]) {
    for (const dtype of ["fp16", "bf16"] as const) {
      for (const rows of ROWS) {
        for (const perQueryHead of [false, true]) {
          const withBias = rows % 2 === 1, factor = perQueryHead ? 1.25 : 1;
          tally.add(runCase(cuda, shape, dtype, rows, perQueryHead, withBias, factor, rng));
        }
      }
    }
  }
  console.log(
    `${tally.ok ? "PASS" : "FAIL"} predict_query: ${tally.cases} cases (hidden 512 and 100, ` +
      `fp16/bf16, rows ${ROWS.join("/")}, label heads per kv head and per query head, biases ` +
      `on/off); worst error ${tally.worst.toFixed(3)} of the bound; nothing written outside the ` +
      `label channels; seed ${seed}`,
  );
  return tally.ok;
}

if (import.meta.main) {
  const { values } = openCommand({
    name: "tests/gpu/predict_query.ts",
    usage: `deno run -A tests/gpu/predict_query.ts [--seed N]
  --seed N  random inputs' seed, an integer >= 0 (default: time-based)`,
    options: { seed: { type: "string" } },
  });
  const seed = values.seed !== undefined
    ? intFlag("seed", values.seed, { min: 0 })
    : Date.now() % 2 ** 31;
  Deno.exit(runPredictQueryChecks(requireGpu("tests/gpu/predict_query.ts"), seed) ? 0 : 1);
}
