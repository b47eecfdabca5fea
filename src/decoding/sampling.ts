/**
 * Choosing the next token from logits: greedy (temperature 0), or temperature sampling with
 * nucleus (top-p) filtering, from a seeded generator so that runs can be repeated.
 */

export interface SamplingOptions {
  /** 0 = greedy (the default). */
  readonly temperature?: number;
  /** Keep the smallest set of tokens whose probability reaches top-p (default 1: all). */
  readonly topP?: number;
}

import { TOKEN_CHOICE_EXP2_POLY, TOKEN_CHOICE_THREADS } from "../codegen/families.ts";

/** A seeded uniform [0, 1) generator (mulberry32). */
export { mulberry32 as seededUniform } from "../util/random.ts";

/** The next token of logits[start, start + length). Ties in greedy mode go to the lower id. */
export function sampleToken(
  logits: ArrayLike<number>,
  opts: SamplingOptions,
  random: () => number,
  start = 0,
  length = logits.length - start,
): number {
  const temperature = checkTemperature(opts.temperature ?? 0);
  const topP = checkTopP(opts.topP ?? 1);
  let best = 0;
  for (let i = 1; i < length; i++) if (logits[start + i] > logits[start + best]) best = i;
  if (temperature === 0) return best;
  // Softmax at the temperature, in float64, relative to the maximum.
  const probs = new Float64Array(length);
  let sum = 0;
  for (let i = 0; i < length; i++) {
    probs[i] = Math.exp((logits[start + i] - logits[start + best]) / temperature);
    sum += probs[i];
  }
  const order = Array.from({ length }, (_, i) => i).sort((a, b) => probs[b] - probs[a] || a - b);
  // The nucleus: the most probable tokens until their mass reaches top-p.
  let kept = 0, mass = 0;
  while (kept < length && mass < topP * sum) mass += probs[order[kept++]];
  let r = random() * mass;
  for (let i = 0; i < kept; i++) {
    r -= probs[order[i]];
    if (r < 0) return order[i];
  }
  return order[kept - 1];
}

/**
 * The device's token-choice rule (kernel `choose_tokens`, templates/model.cu.hbs), reproduced
 * operation for operation in float32 (`Math.fround` after every operation; float64 then float32
 * rounding equals direct float32 rounding for +, x and /) and in the kernel's summation order, so
 * it returns the GPU's token for the same logits and uniform number, bit for bit:
 *  1. m = max logit, g = its lowest index (exactly `argmax` of cpu_decoder.ts). Temperature 0,
 *     log2(e) / temperature not finite, or m not finite: g.
 *  2. p_i = exp2((x_i - m) * (log2(e) / T)) (a fixed polynomial, so p of the maximum is 1);
 *     Z = their sum.
 *  3. top-p < 1: the kept set is {p_i >= tau}, tau the largest float32 with the kept mass
 *     >= top-p * Z: the smallest set of most probable tokens reaching top-p, boundary ties kept.
 *  4. In index order, the first kept token whose cumulative kept mass exceeds uniform * M (M the
 *     kept mass), as the block's chunked scan computes it.
 * `uniform` is one number in [0, 1) (the caller's seeded generator); it is ignored when greedy.
 */
export function chooseToken(
  logits: ArrayLike<number>,
  opts: SamplingOptions,
  uniform: number,
  start = 0,
  length = logits.length - start,
): number {
  const temperature = checkTemperature(opts.temperature ?? 0);
  const topP = checkTopP(opts.topP ?? 1);
  if (!(uniform >= 0 && uniform < 1)) {
    throw new RangeError(`uniform: got ${uniform}; allowed: [0, 1)`);
  }
  const f = Math.fround, T = TOKEN_CHOICE_THREADS;
  const x = Float32Array.from({ length }, (_, i) => logits[start + i]);
  let m = -Infinity, greedy = 0;
  for (let i = 0; i < length; i++) if (x[i] > m) (m = x[i], greedy = i);
  const scale = f(f(Math.LOG2E) / f(temperature));
  if (!(f(temperature) > 0) || !Number.isFinite(scale) || !Number.isFinite(m)) return greedy;

  const p = x.map((xi) => exp2Neg(f(f(xi - m) * scale)));
  // Thread t sums the strided elements t, t + T, ... in order; then the block sum.
  const stridedSum = (keep: (q: number) => boolean) => {
    const partial = new Float64Array(T);
    for (let i = 0; i < length; i++) if (keep(p[i])) partial[i % T] = f(partial[i % T] + p[i]);
    return blockSum(partial);
  };
  const z = stridedSum(() => true);
  let lo = 0;
  if (f(topP) < 1) {
    const need = f(f(topP) * z);
    let hi = 0x3f800001;
    while (hi - lo > 1) {
      const mid = lo + Math.floor((hi - lo) / 2);
      const tau = floatOfBits(mid);
      if (stridedSum((q) => q >= tau) >= need) lo = mid;
      else hi = mid;
    }
  }
  const tau = floatOfBits(lo);
  const kept = (q: number) => q >= tau && q > 0;

  // Contiguous chunks in index order, a two-level sequential scan, the owner's walk.
  const per = Math.ceil(length / T);
  const chunk = (t: number) => [Math.min(length, t * per), Math.min(length, t * per + per)];
  const mass = new Float64Array(T);
  for (let t = 0; t < T; t++) {
    const [i0, i1] = chunk(t);
    for (let i = i0; i < i1; i++) if (kept(p[i])) mass[t] = f(mass[t] + p[i]);
  }
  const groups = T / 32;
  const groupStart = new Float64Array(groups + 1);
  for (let j = 0; j < groups; j++) {
    let g = 0;
    for (let k = 0; k < 32; k++) g = f(g + mass[j * 32 + k]);
    groupStart[j + 1] = f(groupStart[j] + g);
  }
  const chunkStart = new Float64Array(T);
  for (let j = 0; j < groups; j++) {
    let e = groupStart[j];
    for (let k = 0; k < 32; k++) (chunkStart[j * 32 + k] = e, e = f(e + mass[j * 32 + k]));
  }
  const target = f(f(uniform) * groupStart[groups]);
  let owner = -1;
  for (let t = 0; t < T; t++) if (mass[t] > 0 && chunkStart[t] <= target) owner = t;
  const [i0, i1] = chunk(owner);
  let run = chunkStart[owner], pick = -1;
  for (let i = i0; i < i1; i++) {
    if (!kept(p[i])) continue;
    pick = i;
    run = f(run + p[i]);
    if (run > target) break;
  }
  return pick;
}

/** The temperature, or a RangeError naming it and the allowed range. */
export function checkTemperature(t: number): number {
  if (!(t >= 0)) throw new RangeError(`temperature: got ${t}; allowed: >= 0`);
  return t;
}

/** The top-p value, or a RangeError naming it and the allowed range. */
export function checkTopP(p: number): number {
  if (!(p > 0 && p <= 1)) throw new RangeError(`top-p: got ${p}; allowed: (0, 1]`);
  return p;
}

/** 2^z for z <= 0 as the kernel's `choice_exp2` computes it (0 below 2^-126 and for NaN). */
function exp2Neg(z: number): number {
  const f = Math.fround, c = TOKEN_CHOICE_EXP2_POLY;
  if (!(z >= -126)) return 0;
  const n = Math.floor(z);
  const frac = f(z - n);
  let p = c[c.length - 1];
  for (let k = c.length - 2; k >= 0; k--) p = f(f(p * frac) + c[k]);
  return f(p * 2 ** n);
}

/** The kernel's block sum of one value per thread: xor butterfly per warp, then over warps. */
function blockSum(partial: Float64Array): number {
  const butterfly = (lanes: Float64Array) => {
    let v = lanes;
    for (let o = 16; o > 0; o >>= 1) {
      const next = new Float64Array(32);
      for (let l = 0; l < 32; l++) next[l] = Math.fround(v[l] + v[l ^ o]);
      v = next;
    }
    return v[0];
  };
  const warps = new Float64Array(partial.length / 32);
  for (let w = 0; w < warps.length; w++) {
    warps[w] = butterfly(partial.subarray(w * 32, w * 32 + 32));
  }
  return butterfly(warps);
}

const bitsView = new DataView(new ArrayBuffer(4));
function floatOfBits(bits: number): number {
  bitsView.setUint32(0, bits);
  return bitsView.getFloat32(0);
}
