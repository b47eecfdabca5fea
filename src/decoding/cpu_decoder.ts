// Reference decoder on the CPU: float32 weights and activations, float64 accumulation in
// every dot product, one token at a time through a per-sequence KV cache. It is the ground
// truth the GPU path is compared with, so it favours plain, checkable loops over speed.
// Optionally (`emulate`) it rounds to 16 bits where the GPU decoder stores 16-bit values
// (gpu_precision.ts), to tell the GPU's inherent 16-bit error from a kernel's mistake.

import { type ModelConfig, slidingWindowLimit } from "../checkpoint/config.ts";
import { RopeCache, ropeTables } from "../checkpoint/rope.ts";
import type { LayerWeights, LoadedModel } from "../checkpoint/weights.ts";
import { type AttentionSpec, checkDenseLayers, type KvDtype } from "../dsl/spec.ts";
import { roundArrayTo, roundTo } from "../util/dtype.ts";
import { weightsAsStored } from "./gpu_precision.ts";

/**
 * Attention of one layer for the newest query position. `keys` and `values` hold the
 * layer's cache, [len][numKvHeads][headDim], including the current token (row len-1);
 * `q` is [numHeads*headDim] after RoPE. Returns [numHeads*headDim].
 */
export interface CpuAttention {
  /** The Double Sparsity spec, when there is one: the decoder checks its denseLayers. */
  readonly spec?: AttentionSpec;
  attend(
    layer: number,
    q: Float32Array,
    keys: Float32Array,
    values: Float32Array,
    len: number,
    config: ModelConfig,
  ): Float32Array;
}

/**
 * Exact causal softmax attention with GQA head sharing, over the whole cache or, for a model
 * with a sliding window W, over its last W rows (the current token included), as
 * transformers' sliding-window mask does.
 */
export class DenseAttention implements CpuAttention {
  /** `probabilities`: round each softmax probability to this dtype before the PV product. */
  constructor(private readonly options: { probabilities?: KvDtype } = {}) {}

  attend(
    _layer: number,
    q: Float32Array,
    keys: Float32Array,
    values: Float32Array,
    len: number,
    config: ModelConfig,
  ): Float32Array {
    const { numHeads, numKvHeads, headDim: d } = config;
    const first = Math.max(0, len - slidingWindowLimit(config));
    const rowSize = numKvHeads * d;
    const windowKeys = keys.subarray(first * rowSize, len * rowSize);
    const windowValues = values.subarray(first * rowSize, len * rowSize);
    const rows = len - first;
    const out = new Float32Array(numHeads * d);
    const scores = new Float64Array(rows);
    const acc = new Float64Array(d);
    for (let h = 0; h < numHeads; h++) {
      attendHead(
        q,
        h,
        windowKeys,
        windowValues,
        rows,
        numKvHeads,
        numHeads,
        d,
        scores,
        acc,
        this.options.probabilities,
      );
      out.set(acc, h * d);
    }
    return out;
  }
}

/**
 * softmax(q_h . K / sqrt(d)) V for query head h over cache rows [0, len); result in `acc`.
 * Exported so that sparse references can reuse it over a row subset of the same layout.
 * `roundP`: each probability (relative to the maximum score) is rounded to this dtype before it
 * multiplies V, while the normalizer sums the unrounded ones, as the GPU's tensor-core kernels do.
 */
export function attendHead(
  q: Float32Array,
  h: number,
  keys: Float32Array,
  values: Float32Array,
  len: number,
  numKvHeads: number,
  numHeads: number,
  d: number,
  scores: Float64Array,
  acc: Float64Array,
  roundP?: KvDtype,
): void {
  const kvh = Math.floor(h / (numHeads / numKvHeads));
  const stride = numKvHeads * d;
  const qOff = h * d;
  const scale = 1 / Math.sqrt(d);
  let max = -Infinity;
  for (let t = 0; t < len; t++) {
    const kOff = t * stride + kvh * d;
    let s = 0;
    for (let c = 0; c < d; c++) s += q[qOff + c] * keys[kOff + c];
    s *= scale;
    scores[t] = s;
    if (s > max) max = s;
  }
  let sum = 0;
  for (let t = 0; t < len; t++) {
    const e = Math.exp(scores[t] - max);
    scores[t] = e;
    sum += e;
  }
  acc.fill(0);
  for (let t = 0; t < len; t++) {
    const p = (roundP ? roundTo(roundP, scores[t]) : scores[t]) / sum;
    const vOff = t * stride + kvh * d;
    for (let c = 0; c < d; c++) acc[c] += p * values[vOff + c];
  }
}

/** out[r] = sum_j w[r][j] * x[j] (+ bias[r]), float64 accumulation, w row-major [rows][cols]. */
export function matVec(
  w: Float32Array,
  rows: number,
  cols: number,
  x: Float32Array,
  out: Float32Array,
  bias?: Float32Array,
): void {
  // Four rows at a time: each x[j] load feeds four independent multiply-add chains (about
  // 3x faster than one row at a time in V8). The bias is added before rounding to float32.
  let r = 0;
  for (; r + 3 < rows; r += 4) {
    const o0 = r * cols, o1 = o0 + cols, o2 = o1 + cols, o3 = o2 + cols;
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (let j = 0; j < cols; j++) {
      const xj = x[j];
      s0 += w[o0 + j] * xj;
      s1 += w[o1 + j] * xj;
      s2 += w[o2 + j] * xj;
      s3 += w[o3 + j] * xj;
    }
    if (bias) {
      s0 += bias[r];
      s1 += bias[r + 1];
      s2 += bias[r + 2];
      s3 += bias[r + 3];
    }
    out[r] = s0;
    out[r + 1] = s1;
    out[r + 2] = s2;
    out[r + 3] = s3;
  }
  for (; r < rows; r++) {
    const o = r * cols;
    let s = 0;
    for (let j = 0; j < cols; j++) s += w[o + j] * x[j];
    out[r] = bias ? s + bias[r] : s;
  }
}

/** out = x * rsqrt(mean(x^2) + eps) * weight, computed in float64, stored float32. */
export function rmsNorm(
  x: Float32Array,
  weight: Float32Array,
  eps: number,
  out: Float32Array,
): void {
  let ss = 0;
  for (let i = 0; i < x.length; i++) ss += x[i] * x[i];
  const inv = 1 / Math.sqrt(ss / x.length + eps);
  for (let i = 0; i < x.length; i++) out[i] = x[i] * inv * weight[i];
}

/** Index of the largest value; the first one on ties (like torch.argmax). */
export function argmax(values: ArrayLike<number>, start = 0, length = values.length): number {
  let best = 0;
  let bestValue = -Infinity;
  for (let i = 0; i < length; i++) {
    if (values[start + i] > bestValue) {
      bestValue = values[start + i];
      best = i;
    }
  }
  return best;
}

/**
 * Called for every layer and position with the post-RoPE query [numHeads*headDim] and key
 * [numKvHeads*headDim]. The arrays are the decoder's own buffers: copy them to keep them.
 */
export type QKHook = (layer: number, position: number, q: Float32Array, k: Float32Array) => void;

export interface CpuDecoderOptions {
  /** Default: DenseAttention (rounding P like the GPU when `emulate` is set). */
  attention?: CpuAttention;
  onQK?: QKHook;
  /**
   * Emulate GpuDecoder's precision: round to this dtype wherever it stores 16-bit values (the
   * weight matrices, RMSNorm outputs, q/k/v and the KV cache, P before PV in the default
   * attention, the attention and SwiGLU outputs; see gpu_precision.ts). Default: none, the exact
   * float32/float64 reference.
   */
  emulate?: KvDtype;
}

/** One layer's growing K and V cache, [len][numKvHeads*headDim] each. */
class LayerCache {
  keys: Float32Array;
  values: Float32Array;

  constructor(private readonly rowSize: number, capacity: number) {
    this.keys = new Float32Array(rowSize * capacity);
    this.values = new Float32Array(rowSize * capacity);
  }

  ensureRows(rows: number): void {
    if (rows * this.rowSize <= this.keys.length) return;
    const capacity = Math.max(rows, (2 * this.keys.length) / this.rowSize);
    const keys = new Float32Array(capacity * this.rowSize);
    const values = new Float32Array(capacity * this.rowSize);
    keys.set(this.keys);
    values.set(this.values);
    this.keys = keys;
    this.values = values;
  }
}

const INITIAL_CACHE_ROWS = 256;

export class CpuDecoder {
  readonly config: ModelConfig;
  private readonly attention: CpuAttention;
  private readonly onQK?: QKHook;
  private readonly emulate?: KvDtype;
  private readonly weights: LoadedModel["weights"];
  private readonly rope: RopeCache;
  private caches: LayerCache[] = [];
  private cachedLength = 0;

  // Scratch buffers, reused for every token.
  private readonly x: Float32Array;
  private readonly normed: Float32Array;
  private readonly q: Float32Array;
  private readonly k: Float32Array;
  private readonly v: Float32Array;
  private readonly attnProjected: Float32Array;
  private readonly gate: Float32Array;
  private readonly up: Float32Array;
  private readonly mlpOut: Float32Array;

  constructor(model: LoadedModel, options: CpuDecoderOptions = {}) {
    this.config = model.config;
    this.emulate = options.emulate;
    this.weights = this.emulate ? weightsAsStored(model.weights, this.emulate) : model.weights;
    this.attention = options.attention ??
      new DenseAttention({ probabilities: this.emulate });
    this.onQK = options.onQK;
    const c = this.config;
    if (this.attention.spec) checkDenseLayers(this.attention.spec, c.numLayers, "CpuDecoder");
    this.rope = new RopeCache(ropeTables(c));
    this.x = new Float32Array(c.hiddenSize);
    this.normed = new Float32Array(c.hiddenSize);
    this.q = new Float32Array(c.numHeads * c.headDim);
    this.k = new Float32Array(c.numKvHeads * c.headDim);
    this.v = new Float32Array(c.numKvHeads * c.headDim);
    this.attnProjected = new Float32Array(c.hiddenSize);
    this.gate = new Float32Array(c.intermediateSize);
    this.up = new Float32Array(c.intermediateSize);
    this.mlpOut = new Float32Array(c.hiddenSize);
    this.reset();
  }

  /** Number of tokens in the KV cache (the position of the next token). */
  get length(): number {
    return this.cachedLength;
  }

  /** Empties the KV cache: the next token is at position 0. */
  reset(): void {
    const rowSize = this.config.numKvHeads * this.config.headDim;
    this.caches = Array.from(
      { length: this.config.numLayers },
      () => new LayerCache(rowSize, INITIAL_CACHE_ROWS),
    );
    this.cachedLength = 0;
  }

  /**
   * Runs `tokens` at positions continuing from the cache, appends them to the cache and
   * returns their logits, [tokens.length][vocab].
   */
  forward(tokens: number[]): Float32Array {
    const vocab = this.config.vocabSize;
    const logits = new Float32Array(tokens.length * vocab);
    for (let i = 0; i < tokens.length; i++) {
      this.step(tokens[i], logits.subarray(i * vocab, (i + 1) * vocab));
    }
    return logits;
  }

  /**
   * Feeds `prompt` (continuing the cache; call reset() first for a fresh sequence), then
   * greedily picks `n` tokens, each fed back in. Returns the n picked ids.
   */
  generateGreedy(prompt: number[], n: number): number[] {
    if (prompt.length === 0) throw new Error("generateGreedy: the prompt is empty");
    const vocab = this.config.vocabSize;
    let logits = this.forward(prompt);
    let last = logits.subarray((prompt.length - 1) * vocab);
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const next = argmax(last);
      out.push(next);
      if (i + 1 < n) {
        logits = this.forward([next]);
        last = logits;
      }
    }
    return out;
  }

  /** Rounds an activation the GPU decoder stores in 16 bits, when emulating it. */
  private stored(values: Float32Array): void {
    if (this.emulate) roundArrayTo(this.emulate, values);
  }

  private step(token: number, logitsOut: Float32Array): void {
    const c = this.config;
    const w = this.weights;
    if (!Number.isInteger(token) || token < 0 || token >= c.vocabSize) {
      throw new Error(
        `CpuDecoder: token id ${token} is outside the vocabulary [0, ${c.vocabSize})`,
      );
    }
    const position = this.cachedLength;
    this.x.set(w.embed.subarray(token * c.hiddenSize, (token + 1) * c.hiddenSize));
    for (let l = 0; l < c.numLayers; l++) this.layerStep(l, w.layers[l], position);
    rmsNorm(this.x, w.finalNorm, c.rmsNormEps, this.normed);
    this.stored(this.normed);
    matVec(w.lmHead, c.vocabSize, c.hiddenSize, this.normed, logitsOut);
    this.cachedLength = position + 1;
  }

  private layerStep(l: number, lw: LayerWeights, position: number): void {
    const c = this.config;
    const hidden = c.hiddenSize;
    const qDim = c.numHeads * c.headDim;
    const kvDim = c.numKvHeads * c.headDim;

    rmsNorm(this.x, lw.inputNorm, c.rmsNormEps, this.normed);
    this.stored(this.normed);
    matVec(lw.q, qDim, hidden, this.normed, this.q, lw.qBias);
    matVec(lw.k, kvDim, hidden, this.normed, this.k, lw.kBias);
    matVec(lw.v, kvDim, hidden, this.normed, this.v, lw.vBias);
    this.rope.apply(this.q, c.numHeads, position);
    this.rope.apply(this.k, c.numKvHeads, position);
    this.stored(this.q);
    this.stored(this.k);
    this.stored(this.v);

    const cache = this.caches[l];
    cache.ensureRows(position + 1);
    cache.keys.set(this.k, position * kvDim);
    cache.values.set(this.v, position * kvDim);
    this.onQK?.(l, position, this.q, this.k);

    const len = position + 1;
    const attn = this.attention.attend(
      l,
      this.q,
      cache.keys.subarray(0, len * kvDim),
      cache.values.subarray(0, len * kvDim),
      len,
      c,
    );
    if (attn.length !== qDim) {
      throw new Error(
        `CpuDecoder: attention of layer ${l} returned ${attn.length} values, expected ${qDim}`,
      );
    }
    this.stored(attn);
    matVec(lw.o, hidden, qDim, attn, this.attnProjected, lw.oBias);
    for (let i = 0; i < hidden; i++) this.x[i] += this.attnProjected[i];

    rmsNorm(this.x, lw.postAttentionNorm, c.rmsNormEps, this.normed);
    this.stored(this.normed);
    const f = c.intermediateSize;
    matVec(lw.gate, f, hidden, this.normed, this.gate);
    matVec(lw.up, f, hidden, this.normed, this.up);
    for (let i = 0; i < f; i++) {
      const g = this.gate[i];
      // silu(g) * up, rounded to float32 like the reference's float32 activations.
      this.gate[i] = (g / (1 + Math.exp(-g))) * this.up[i];
    }
    this.stored(this.gate);
    matVec(lw.down, hidden, f, this.gate, this.mlpOut);
    for (let i = 0; i < hidden; i++) this.x[i] += this.mlpOut[i];
  }
}
