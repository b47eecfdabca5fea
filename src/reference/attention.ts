/**
 * Reference decode attention over the CPU paged cache, float64 accumulation throughout:
 * dense attention, label scoring, top-k with a documented tie-break, sparse attention over the
 * selected tokens, and the whole Double Sparsity step with its dense fallback.
 *
 * Tie-break: tokens are ranked by score, higher first; equal scores rank the lower token index
 * first. The kernels use the same order (key = order-preserving score bits, then ~index).
 */
import { budgetFor, type Route, routeFor } from "../dsl/spec.ts";
import { labelHeadOfSelectionHead, queryHeadsOfSelectionHead } from "../dsl/layout.ts";
import { labelValues } from "./labels.ts";
import type { CpuPagedCache } from "./paged_cache.ts";
import { ArgumentError } from "../util/errors.ts";

/** The usual softmax scale, 1/sqrt(headDim). */
export const defaultScale = (headDim: number): number => 1 / Math.sqrt(headDim);

/** Softmax attention of query head `h` over `tokens` of `seq`; returns [headDim]. */
function attendHead(
  cache: CpuPagedCache,
  seq: number,
  q: ArrayLike<number>,
  h: number,
  tokens: ArrayLike<number>,
  scale: number,
): Float64Array {
  const s = cache.spec;
  const d = s.headDim;
  const kvh = Math.floor(h / s.groupSize);
  const logits = new Float64Array(tokens.length);
  let max = -Infinity;
  for (let i = 0; i < tokens.length; i++) {
    const k = cache.row("k", seq, tokens[i], kvh);
    let dot = 0;
    for (let c = 0; c < d; c++) dot += q[h * d + c] * k[c];
    logits[i] = dot * scale;
    max = Math.max(max, logits[i]);
  }
  const out = new Float64Array(d);
  let sum = 0;
  for (let i = 0; i < tokens.length; i++) {
    const p = Math.exp(logits[i] - max);
    sum += p;
    const v = cache.row("v", seq, tokens[i], kvh);
    for (let c = 0; c < d; c++) out[c] += p * v[c];
  }
  for (let c = 0; c < d; c++) out[c] /= sum;
  return out;
}

/** Dense decode attention of all query heads over every cached token; returns [Hq * d]. */
export function denseDecode(
  cache: CpuPagedCache,
  seq: number,
  q: ArrayLike<number>,
  scale = defaultScale(cache.spec.headDim),
): Float64Array {
  const len = cache.pages.seqLens[seq];
  const all = Int32Array.from({ length: len }, (_, i) => i);
  return sparseDecode(cache, seq, q, Array(cache.spec.numSelectionHeads).fill(all), scale);
}

/** Attention of every query head over its selection head's token set; returns [Hq * d]. */
export function sparseDecode(
  cache: CpuPagedCache,
  seq: number,
  q: ArrayLike<number>,
  selected: ArrayLike<number>[],
  scale = defaultScale(cache.spec.headDim),
): Float64Array {
  const s = cache.spec;
  const out = new Float64Array(s.numQHeads * s.headDim);
  for (let sh = 0; sh < s.numSelectionHeads; sh++) {
    for (const h of queryHeadsOfSelectionHead(s, sh)) {
      out.set(attendHead(cache, seq, q, h, selected[sh], scale), h * s.headDim);
    }
  }
  return out;
}

/** What {@linkcode labelScores} returns. */
export interface LabelScores {
  /** scores[selHead][token]: approximate score from (quantized) labels. */
  scores: Float64Array[];
  /**
   * Scale of each score's single-precision rounding error: sum_c |q_c| * 3 max_c |k_c| bounds
   * every partial sum the kernels form (including scale * sum q.code + min * sum q).
   */
  magnitudes: Float64Array[];
}

/** Approximate scores q_label . k_label of every cached token, per selection head. */
export function labelScores(cache: CpuPagedCache, seq: number, q: ArrayLike<number>): LabelScores {
  const s = cache.spec;
  const r = s.labelChannels;
  const d = s.headDim;
  const len = cache.pages.seqLens[seq];
  const scores: Float64Array[] = [];
  const magnitudes: Float64Array[] = [];
  for (let sh = 0; sh < s.numSelectionHeads; sh++) {
    const lh = labelHeadOfSelectionHead(s, sh);
    // The selection head's query label: the sum over its query heads of their quantized labels.
    const qLabel = new Float64Array(r);
    for (const h of queryHeadsOfSelectionHead(s, sh)) {
      const values = new Float32Array(r);
      for (let c = 0; c < r; c++) values[c] = q[h * d + cache.channels[lh * r + c]];
      const deq = labelValues(values, s.labelBits);
      for (let c = 0; c < r; c++) qLabel[c] += deq[c];
    }
    const sc = new Float64Array(len);
    const mag = new Float64Array(len);
    for (let t = 0; t < len; t++) {
      const kLabel = cache.labelRow(seq, t, lh);
      let dot = 0;
      let qAbs = 0;
      let kMax = 0;
      for (let c = 0; c < r; c++) {
        dot += qLabel[c] * kLabel[c];
        qAbs += Math.abs(qLabel[c]);
        kMax = Math.max(kMax, Math.abs(kLabel[c]));
      }
      sc[t] = dot;
      mag[t] = 3 * qAbs * kMax;
    }
    scores.push(sc);
    magnitudes.push(mag);
  }
  return { scores, magnitudes };
}

/**
 * Indices of the k highest scores (ties: lower index first), in ascending index order. `k` is an
 * integer >= 0 (k above the count takes every index); a NaN score has no rank (the kernels'
 * order-preserving keys would put it above +Infinity) and is an ArgumentError.
 */
export function topK(scores: ArrayLike<number>, k: number): Int32Array {
  if (!Number.isInteger(k) || k < 0) throw new ArgumentError("topK", "k", k, "an integer >= 0");
  for (let i = 0; i < scores.length; i++) {
    if (Number.isNaN(scores[i])) {
      throw new ArgumentError("topK", `scores[${i}]`, scores[i], "a number (not NaN)");
    }
  }
  const order = Int32Array.from({ length: scores.length }, (_, i) => i);
  order.sort((a, b) => (scores[b] - scores[a]) || (a - b));
  return order.subarray(0, Math.min(k, scores.length)).sort();
}

/** One decode step of the reference: the output and how it was obtained. */
export interface DoubleSparsityResult {
  /** [numQHeads][headDim] attention output. */
  out: Float64Array;
  /** Dense or sparse, by the spec's policy. */
  route: Route;
  /** Tokens selected per selection head (the context length on the dense route). */
  budget: number;
  /** Per selection head, the selected tokens (ascending); every token on the dense route. */
  selected: Int32Array[];
  /** The label scores, on the sparse route. */
  scores?: LabelScores;
}

/** One Double Sparsity decode step for `seq`, with the dense fallback of the spec's policy. */
export function doubleSparsityDecode(
  cache: CpuPagedCache,
  seq: number,
  q: ArrayLike<number>,
  scale = defaultScale(cache.spec.headDim),
): DoubleSparsityResult {
  const s = cache.spec;
  const len = cache.pages.seqLens[seq];
  const budget = budgetFor(s.budget, len);
  const route = routeFor(s, len);
  if (route === "dense") {
    const all = Int32Array.from({ length: len }, (_, i) => i);
    return {
      out: denseDecode(cache, seq, q, scale),
      route,
      budget: len,
      selected: Array(s.numSelectionHeads).fill(all),
    };
  }
  const scores = labelScores(cache, seq, q);
  const selected = scores.scores.map((sc) => topK(sc, budget));
  return { out: sparseDecode(cache, seq, q, selected, scale), route, budget, selected, scores };
}
