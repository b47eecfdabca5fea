/**
 * Host-side element formats: fp16 and bf16 as 16-bit patterns, with the same rounding the
 * kernels use (round to nearest, ties to even), and IEEE single rounding helpers.
 */
import type { KvDtype } from "../dsl/spec.ts";

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
// Deno has Float16Array (fast, native rounding); Node 20 does not: fall back to arithmetic.
const NativeF16 =
  (globalThis as unknown as { Float16Array?: Float32ArrayConstructor }).Float16Array;

/** Nearest integer of a non-negative value, ties to even. */
function roundHalfEven(v: number): number {
  const f = Math.floor(v);
  const d = v - f;
  return d > 0.5 || (d === 0.5 && f % 2 !== 0) ? f + 1 : f;
}

/** x -> fp16 bit pattern, round to nearest even (what `Float16Array` does; Node 20 lacks it). */
export function f16BitsFromFloat(x: number): number {
  if (Number.isNaN(x)) return 0x7e00;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  // Subnormals (and zero) are whole multiples of 2^-24; rounding up to 2^10 gives the least normal.
  if (a < 2 ** -14) return sign | roundHalfEven(a * 2 ** 24);
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  else if (2 ** (e + 1) <= a) e++;
  let m = roundHalfEven((a / 2 ** e) * 1024); // 1024..2048, exact scaling by a power of two
  if (m === 2048) (e++, m = 1024);
  if (e > 15) return sign | 0x7c00;
  return sign | ((e + 15) << 10) | (m - 1024);
}

export function floatFromF16Bits(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const e = (bits >> 10) & 0x1f;
  const m = bits & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 31) return m === 0 ? sign * Infinity : NaN;
  return sign * (1024 + m) * 2 ** (e - 25);
}

/** fp32 -> bf16 with round-to-nearest-even (NaN stays NaN), as `cvt.rn.bf16.f32`. */
export function bf16BitsFromFloat(x: number): number {
  f32[0] = x;
  const u = u32[0];
  if ((u & 0x7f800000) === 0x7f800000 && (u & 0x007fffff) !== 0) return (u >>> 16) | 0x40;
  const rounded = u + 0x7fff + ((u >>> 16) & 1);
  return (rounded >>> 16) & 0xffff;
}

export function floatFromBf16Bits(bits: number): number {
  u32[0] = (bits & 0xffff) << 16;
  return f32[0];
}

export function toBits(dtype: KvDtype, x: number): number {
  return dtype === "fp16" ? f16BitsFromFloat(x) : bf16BitsFromFloat(x);
}

export function fromBits(dtype: KvDtype, bits: number): number {
  return dtype === "fp16" ? floatFromF16Bits(bits) : floatFromBf16Bits(bits);
}

/** Rounds to the nearest value of the dtype (what storing then loading does). */
export function roundTo(dtype: KvDtype, x: number): number {
  return fromBits(dtype, toBits(dtype, x));
}

/** Rounds every value of `values` to the dtype in place (what storing then loading does). */
export function roundArrayTo(dtype: KvDtype, values: Float32Array): Float32Array {
  values.set(decodeArray(dtype, encodeArray(dtype, values)));
  return values;
}

export function encodeArray(dtype: KvDtype, values: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(values.length);
  if (dtype === "fp16" && NativeF16) {
    out.set(new Uint16Array(NativeF16.from(values).buffer));
  } else if (dtype === "fp16") {
    for (let i = 0; i < values.length; i++) out[i] = f16BitsFromFloat(values[i]);
  } else {
    for (let i = 0; i < values.length; i++) out[i] = bf16BitsFromFloat(values[i]);
  }
  return out;
}

export function decodeArray(dtype: KvDtype, bits: Uint16Array): Float32Array {
  if (dtype === "fp16" && NativeF16) {
    return Float32Array.from(new NativeF16(bits.buffer, bits.byteOffset, bits.length));
  }
  if (dtype === "fp16") return Float32Array.from(bits, floatFromF16Bits);
  const out = new Float32Array(bits.length);
  const view = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) view[i] = bits[i] << 16;
  return out;
}

/** IEEE round half to even on an already-fp32 value, as `rintf`. */
export function rintHalfEven(x: number): number {
  const r = Math.round(x);
  // Math.round rounds .5 up; step back where that landed on an odd integer from an exact half.
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

export const fround = Math.fround;
