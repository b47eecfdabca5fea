/** Random data, comparisons and reporting shared by the GPU checks. */

/** xorshift128+ -> doubles in [0, 1); seeded so a failing case can be replayed. */
export class Random {
  #s0: bigint;
  #s1: bigint;
  constructor(readonly seed: number) {
    this.#s0 = BigInt(seed >>> 0) * 0x9e3779b97f4a7c15n + 1n;
    this.#s1 = (this.#s0 ^ 0xbf58476d1ce4e5b9n) * 0x94d049bb133111ebn;
    this.#s0 &= 0xffffffffffffffffn;
    this.#s1 &= 0xffffffffffffffffn;
    for (let i = 0; i < 8; i++) this.nextU64();
  }

  nextU64(): bigint {
    let s1 = this.#s0;
    const s0 = this.#s1;
    this.#s0 = s0;
    s1 ^= (s1 << 23n) & 0xffffffffffffffffn;
    this.#s1 = s1 ^ s0 ^ (s1 >> 17n) ^ (s0 >> 26n);
    return (this.#s1 + s0) & 0xffffffffffffffffn;
  }

  /** Uniform in [0, 1). BigInt is slow; fill large arrays with `fillNormal` instead. */
  next(): number {
    return Number(this.nextU64() >> 11n) / 2 ** 53;
  }

  /** Fast float stream for bulk data (Mulberry32 seeded from this generator). */
  floats(n: number, scale = 1): Float32Array {
    let a = Number(this.nextU64() & 0xffffffffn) >>> 0;
    const out = new Float32Array(n);
    for (let i = 0; i < n; i += 2) {
      // Box-Muller on two mulberry32 draws: roughly normal data, like activations.
      a = (a + 0x6d2b79f5) >>> 0;
      let t = Math.imul(a ^ (a >>> 15), 1 | a);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      const u1 = (((t ^ (t >>> 14)) >>> 0) + 1) / 4294967297;
      a = (a + 0x6d2b79f5) >>> 0;
      t = Math.imul(a ^ (a >>> 15), 1 | a);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      const u2 = ((t ^ (t >>> 14)) >>> 0) / 4294967296;
      const r = Math.sqrt(-2 * Math.log(u1)) * scale;
      out[i] = r * Math.cos(2 * Math.PI * u2);
      if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * u2);
    }
    return out;
  }

  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** A random permutation of 0..n-1, first `take` entries. */
  permutation(n: number, take = n): number[] {
    const p = Array.from({ length: n }, (_, i) => i);
    for (let i = 0; i < take; i++) {
      const j = i + this.int(n - i);
      [p[i], p[j]] = [p[j], p[i]];
    }
    return p.slice(0, take);
  }
}

/** One case of a kernel check against a per-element bound. */
export interface BoundedCase {
  readonly name: string;
  /** The worst element's error over its bound (<= 1 passes). */
  readonly worstRatio: number;
  readonly failures: string[];
}

/** Cases of one kernel check: counts them, keeps the worst ratio, prints each failure. */
export class CaseTally {
  cases = 0;
  worst = 0;
  ok = true;
  /** `what` prefixes each failure line: `FAIL <what> <case>: <failure>`. */
  constructor(readonly what: string) {}

  add(c: BoundedCase): void {
    this.cases++;
    this.worst = Math.max(this.worst, c.worstRatio);
    for (const f of c.failures) console.log(`FAIL ${this.what} ${c.name}: ${f}`);
    this.ok &&= c.failures.length === 0;
  }
}

/** ||a - b|| / ||b|| over the elements, and whether any a is not finite. */
export function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < b.length; i++) {
    if (!Number.isFinite(a[i])) return Infinity;
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}

/** Largest per-row relative error of two [rows][width] arrays. */
export function maxRowRelativeError(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  width: number,
): number {
  let worst = 0;
  for (let r = 0; r * width < b.length; r++) {
    const sa = Array.prototype.slice.call(a, r * width, (r + 1) * width) as number[];
    const sb = Array.prototype.slice.call(b, r * width, (r + 1) * width) as number[];
    worst = Math.max(worst, relativeError(sa, sb));
  }
  return worst;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** order_key of the kernels (float -> u32, order preserving). */
export function orderKey(x: number): number {
  f32[0] = x;
  const u = u32[0];
  return (u & 0x80000000) !== 0 ? (~u) >>> 0 : (u | 0x80000000) >>> 0;
}

/** Inverse of orderKey. */
export function keyToFloat(key: number): number {
  u32[0] = (key & 0x80000000) !== 0 ? (key & 0x7fffffff) >>> 0 : (~key) >>> 0;
  return f32[0];
}

/** The float interval a 16-bit score key stands for. */
export function key16Interval(key16: number): [number, number] {
  const a = keyToFloat((key16 << 16) >>> 0);
  const b = keyToFloat(((key16 << 16) | 0xffff) >>> 0);
  return a <= b ? [a, b] : [b, a];
}

export interface SelectionCheck {
  /** |gpu ∩ ref| / k */
  agreement: number;
  /** Tokens exchanged with the reference whose reference scores are within rounding of the threshold. */
  tieSwaps: number;
  /** Why the selection is wrong, if it is. */
  error?: string;
}

/**
 * Compares a GPU selection with the reference's: same size, distinct, in range, and every token
 * it has that the reference lacks (and vice versa) scores within `tol(token)` of the reference's
 * k-th score (a tie within single-precision rounding).
 */
export function checkSelection(
  gpu: ArrayLike<number>,
  ref: ArrayLike<number>,
  scores: ArrayLike<number>,
  tol: (token: number) => number,
): SelectionCheck {
  const k = ref.length;
  const g = new Set<number>();
  for (let i = 0; i < gpu.length; i++) {
    const t = gpu[i];
    if (!(t >= 0 && t < scores.length)) {
      return { agreement: 0, tieSwaps: 0, error: `token ${t} out of range` };
    }
    if (g.has(t)) return { agreement: 0, tieSwaps: 0, error: `token ${t} selected twice` };
    g.add(t);
  }
  if (g.size !== k) {
    return { agreement: 0, tieSwaps: 0, error: `selected ${g.size}, expected ${k}` };
  }
  const r = new Set(Array.from(ref));
  let threshold = Infinity;
  for (const t of r) threshold = Math.min(threshold, scores[t]);
  let common = 0, swaps = 0;
  for (const t of g) {
    if (r.has(t)) {
      common++;
      continue;
    }
    if (scores[t] < threshold - tol(t)) {
      return {
        agreement: common / k,
        tieSwaps: swaps,
        error: `token ${t} selected with score ${scores[t]}, below the k-th score ${threshold}`,
      };
    }
    swaps++;
  }
  for (const t of r) {
    if (!g.has(t) && scores[t] > threshold + tol(t)) {
      return {
        agreement: common / k,
        tieSwaps: swaps,
        error: `token ${t} (score ${scores[t]} > k-th ${threshold}) missing from the GPU selection`,
      };
    }
  }
  return { agreement: common / k, tieSwaps: swaps };
}

export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join("  ");
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}
