// Rotary position embedding in Hugging Face's rotate-half layout: channel i < d/2 is
// paired with channel i + d/2 and both rotate by angle position * invFreq[i], where invFreq
// is theta^(-2i/d) rescaled by the model's RoPE scaling (ropeTables). Angles are computed in
// float64 (the GPU path uploads float32 values derived from ropeTables).

import type { ModelConfig, RopeScaling } from "./config.ts";

/** inv_freq[i] = theta^(-2i/d) for i in [0, d/2). */
export function ropeInverseFrequencies(headDim: number, theta: number): Float64Array {
  if (!Number.isInteger(headDim) || headDim <= 0 || headDim % 2 !== 0) {
    throw new Error(`RoPE: head dim ${headDim} must be a positive even integer`);
  }
  const half = headDim / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = Math.pow(theta, (-2 * i) / headDim);
  return inv;
}

/** What a model's RoPE needs: rotate by position * invFreq[i], scale cos and sin by the factor. */
export interface RopeTables {
  /** headDim / 2 inverse frequencies (radians per position), float64. */
  invFreq: Float64Array;
  /**
   * Multiplies cos and sin (so q.k scales by its square): YaRN's attention scaling, 1 for the
   * other types. transformers applies it the same way (`attention_scaling`).
   */
  attentionFactor: number;
}

/** The config fields RoPE depends on. */
export type RopeConfig = Pick<ModelConfig, "headDim" | "ropeTheta" | "ropeScaling">;

/**
 * The one place RoPE scaling is computed (the CPU decoder's RopeCache and the GPU tables use
 * it): inverse frequencies and attention factor of `config`, as transformers'
 * ROPE_INIT_FUNCTIONS compute them (in float64 here; transformers uses float32).
 */
export function ropeTables(config: RopeConfig): RopeTables {
  const d = config.headDim;
  const base = ropeInverseFrequencies(d, config.ropeTheta);
  const scaling = config.ropeScaling ?? { type: "default" };
  switch (scaling.type) {
    case "default":
      return { invFreq: base, attentionFactor: 1 };
    case "linear":
      return { invFreq: base.map((f) => f / scaling.factor), attentionFactor: 1 };
    case "llama3":
      return { invFreq: llama3Frequencies(base, scaling), attentionFactor: 1 };
    case "yarn":
      return yarnTables(base, d, config.ropeTheta, scaling);
  }
}

/**
 * Llama 3.1: wavelengths longer than original/low_freq_factor are stretched by `factor`,
 * shorter than original/high_freq_factor kept, and those between blended linearly in
 * original/wavelength.
 */
function llama3Frequencies(
  base: Float64Array,
  s: Extract<RopeScaling, { type: "llama3" }>,
): Float64Array {
  const lowFreqWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
  const highFreqWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
  return base.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < highFreqWavelen) return f;
    if (wavelen > lowFreqWavelen) return f / s.factor;
    const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) /
      (s.highFreqFactor - s.lowFreqFactor);
    return (1 - smooth) * (f / s.factor) + smooth * f;
  });
}

/** YaRN's mscale: 0.1 * m * ln(scale) + 1 for scale > 1, else 1. */
function yarnMscale(scale: number, m = 1): number {
  return scale <= 1 ? 1 : 0.1 * m * Math.log(scale) + 1;
}

/**
 * YaRN ("NTK-by-parts"): dimensions that rotate more than beta_fast times over the original
 * context keep their frequency, those rotating fewer than beta_slow times are interpolated by
 * `factor`, with a linear ramp between; cos/sin are scaled by the attention factor.
 */
function yarnTables(
  base: Float64Array,
  d: number,
  theta: number,
  s: Extract<RopeScaling, { type: "yarn" }>,
): RopeTables {
  let attentionFactor = s.attentionFactor;
  if (attentionFactor === null) {
    attentionFactor = s.mscale !== null && s.mscaleAllDim !== null
      ? yarnMscale(s.factor, s.mscale) / yarnMscale(s.factor, s.mscaleAllDim)
      : yarnMscale(s.factor);
  }
  // The dimension (of d) at which a frequency turns `rotations` times over the original context.
  const correctionDim = (rotations: number) =>
    (d * Math.log(s.originalMaxPositionEmbeddings / (rotations * 2 * Math.PI))) /
    (2 * Math.log(theta));
  let low = correctionDim(s.betaFast);
  let high = correctionDim(s.betaSlow);
  if (s.truncate) {
    low = Math.floor(low);
    high = Math.ceil(high);
  }
  low = Math.max(low, 0);
  high = Math.min(high, d - 1);
  if (low === high) high += 0.001; // transformers' guard against a zero-width ramp
  const invFreq = base.map((f, i) => {
    const ramp = Math.min(1, Math.max(0, (i - low) / (high - low)));
    const extrapolation = 1 - ramp; // weight of the unscaled frequency
    return (f / s.factor) * (1 - extrapolation) + f * extrapolation;
  });
  return { invFreq, attentionFactor };
}

/** Float32 cos/sin tables of positions [0, numPositions), [position][d/2], times the factor. */
export interface RopeCosSin {
  numPositions: number;
  /** headDim / 2: the row length of cos and sin. */
  half: number;
  cos: Float32Array;
  sin: Float32Array;
}

export function ropeCosSin(tables: RopeTables, numPositions: number): RopeCosSin {
  const { invFreq, attentionFactor } = tables;
  const half = invFreq.length;
  const cos = new Float32Array(numPositions * half);
  const sin = new Float32Array(numPositions * half);
  for (let p = 0; p < numPositions; p++) {
    for (let i = 0; i < half; i++) {
      const angle = p * invFreq[i];
      cos[p * half + i] = Math.cos(angle) * attentionFactor;
      sin[p * half + i] = Math.sin(angle) * attentionFactor;
    }
  }
  return { numPositions, half, cos, sin };
}

/**
 * Rotates `numHeads` consecutive head vectors of `vec` (starting at 0) in place for one
 * position, using float64 cos/sin rows of length d/2.
 */
export function applyRopeRows(
  vec: Float32Array | Float64Array,
  numHeads: number,
  headDim: number,
  cos: Float64Array,
  sin: Float64Array,
): void {
  const half = headDim / 2;
  for (let h = 0; h < numHeads; h++) {
    const base = h * headDim;
    for (let i = 0; i < half; i++) {
      const x1 = vec[base + i];
      const x2 = vec[base + half + i];
      vec[base + i] = x1 * cos[i] - x2 * sin[i];
      vec[base + half + i] = x2 * cos[i] + x1 * sin[i];
    }
  }
}

/** Caches float64 cos/sin rows (times the attention factor) per position, growing on demand. */
export class RopeCache {
  readonly headDim: number;
  private readonly inv: Float64Array;
  private readonly factor: number;
  private readonly cosRows: Float64Array[] = [];
  private readonly sinRows: Float64Array[] = [];

  constructor(tables: RopeTables) {
    this.inv = tables.invFreq;
    this.factor = tables.attentionFactor;
    this.headDim = 2 * this.inv.length;
  }

  private ensure(position: number): void {
    if (!Number.isInteger(position) || position < 0) {
      throw new Error(`RoPE: position ${position} must be a non-negative integer`);
    }
    for (let p = this.cosRows.length; p <= position; p++) {
      const c = new Float64Array(this.inv.length);
      const s = new Float64Array(this.inv.length);
      for (let i = 0; i < this.inv.length; i++) {
        c[i] = Math.cos(p * this.inv[i]) * this.factor;
        s[i] = Math.sin(p * this.inv[i]) * this.factor;
      }
      this.cosRows.push(c);
      this.sinRows.push(s);
    }
  }

  /** Rotates `numHeads` head vectors at the start of `vec` in place for `position`. */
  apply(vec: Float32Array | Float64Array, numHeads: number, position: number): void {
    this.ensure(position);
    applyRopeRows(vec, numHeads, this.headDim, this.cosRows[position], this.sinRows[position]);
  }
}

/** Rotates one head vector (length headDim) in place; computes the angles directly. */
export function applyRope(
  vec: Float32Array | Float64Array,
  position: number,
  theta: number,
): void {
  const headDim = vec.length;
  const inv = ropeInverseFrequencies(headDim, theta);
  const cos = inv.map((f) => Math.cos(position * f));
  const sin = inv.map((f) => Math.sin(position * f));
  applyRopeRows(vec, 1, headDim, cos, sin);
}
