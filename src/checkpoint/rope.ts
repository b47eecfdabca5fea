// Rotary position embedding in Hugging Face's rotate-half layout: channel i < d/2 is
// paired with channel i + d/2 and both rotate by angle position * theta^(-2i/d).
// Angles are computed in float64 (the GPU path uploads float32 tables from ropeTables).

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

export interface RopeTables {
  numPositions: number;
  /** headDim / 2: the row length of cos and sin. */
  half: number;
  /** cos(position * inv_freq[i]) at [position][i]. */
  cos: Float32Array;
  sin: Float32Array;
}

/** Float32 cos/sin tables for positions [0, numPositions), layout [position][d/2]. */
export function ropeTables(numPositions: number, headDim: number, theta: number): RopeTables {
  const inv = ropeInverseFrequencies(headDim, theta);
  const half = headDim / 2;
  const cos = new Float32Array(numPositions * half);
  const sin = new Float32Array(numPositions * half);
  for (let p = 0; p < numPositions; p++) {
    for (let i = 0; i < half; i++) {
      const angle = p * inv[i];
      cos[p * half + i] = Math.cos(angle);
      sin[p * half + i] = Math.sin(angle);
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

/** Caches float64 cos/sin rows per position, growing on demand. */
export class RopeCache {
  private readonly inv: Float64Array;
  private readonly cosRows: Float64Array[] = [];
  private readonly sinRows: Float64Array[] = [];

  constructor(readonly headDim: number, readonly theta: number) {
    this.inv = ropeInverseFrequencies(headDim, theta);
  }

  private ensure(position: number): void {
    if (!Number.isInteger(position) || position < 0) {
      throw new Error(`RoPE: position ${position} must be a non-negative integer`);
    }
    for (let p = this.cosRows.length; p <= position; p++) {
      const c = new Float64Array(this.inv.length);
      const s = new Float64Array(this.inv.length);
      for (let i = 0; i < this.inv.length; i++) {
        c[i] = Math.cos(p * this.inv[i]);
        s[i] = Math.sin(p * this.inv[i]);
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
