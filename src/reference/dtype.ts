/**
 * Host-side element formats: fp16 and bf16 as 16-bit patterns, with the same rounding the
 * kernels use (round to nearest, ties to even), and IEEE single rounding helpers.
 */
import type { KvDtype } from "../dsl/spec.ts";

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
const f16 = new Float16Array(1);
const u16 = new Uint16Array(f16.buffer);

export function f16BitsFromFloat(x: number): number {
  f16[0] = x;
  return u16[0];
}

export function floatFromF16Bits(bits: number): number {
  u16[0] = bits;
  return f16[0];
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

export function encodeArray(dtype: KvDtype, values: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(values.length);
  if (dtype === "fp16") {
    out.set(new Uint16Array(Float16Array.from(values as ArrayLike<number>).buffer));
  } else {
    for (let i = 0; i < values.length; i++) out[i] = bf16BitsFromFloat(values[i]);
  }
  return out;
}

export function decodeArray(dtype: KvDtype, bits: Uint16Array): Float32Array {
  if (dtype === "fp16") {
    return Float32Array.from(new Float16Array(bits.buffer, bits.byteOffset, bits.length));
  }
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
