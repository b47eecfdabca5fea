/**
 * Label quantization exactly as the kernels do it: asymmetric min-max per token vector,
 * scale = max(max - min, 1e-5) / (2^b - 1), code = clamp(rint((x - min) / scale), 0, 2^b - 1),
 * all in IEEE single precision. Stored K labels round scale and min to the KV dtype first and
 * quantize against the rounded values (so codes are optimal for what is stored); query labels
 * keep single-precision scale and min (they never leave the kernel).
 */
import type { KvDtype } from "../dsl/spec.ts";
import { fround, rintHalfEven, roundTo } from "../util/dtype.ts";
import { codeLevels, codesPerWord, LABEL_MIN_RANGE } from "../dsl/layout.ts";
import { ArgumentError } from "../util/errors.ts";

const MIN_RANGE = fround(LABEL_MIN_RANGE);

/** Label widths the functions below handle; anything else is an ArgumentError. */
function checkBits(fn: string, bits: number, allowed: readonly number[]): void {
  if (!allowed.includes(bits)) throw new ArgumentError(fn, "bits", bits, allowed.join(", "));
}

/** One quantized label row: x ~ min + code * scale. */
export interface QuantizedRow {
  /** One code per channel, in [0, 2^bits - 1]. */
  codes: Uint8Array;
  /** Step between codes. */
  scale: number;
  /** Value of code 0. */
  min: number;
}

/** Quantizes single-precision `values`; `storeAs` rounds scale and min to a 16-bit dtype. */
export function quantizeRow(
  values: ArrayLike<number>,
  bits: number,
  storeAs?: KvDtype,
): QuantizedRow {
  checkBits("quantizeRow", bits, [8, 4, 2]);
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < values.length; i++) {
    lo = Math.min(lo, values[i]);
    hi = Math.max(hi, values[i]);
  }
  const levels = codeLevels(bits);
  let scale = fround(Math.max(fround(hi - lo), MIN_RANGE) / levels);
  let min = lo;
  if (storeAs) {
    scale = roundTo(storeAs, scale);
    min = roundTo(storeAs, min);
  }
  const codes = new Uint8Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const t = fround(fround(values[i] - min) / scale);
    codes[i] = Math.min(levels, Math.max(0, rintHalfEven(t)));
  }
  return { codes, scale, min };
}

/** Dequantized values code * scale + min, in float64. */
export function dequantizeRow(q: QuantizedRow): Float64Array {
  const out = new Float64Array(q.codes.length);
  for (let i = 0; i < out.length; i++) out[i] = q.codes[i] * q.scale + q.min;
  return out;
}

/** The values a label holds after quantization (identity at 16 bits). */
export function labelValues(
  values: ArrayLike<number>,
  bits: number,
  storeAs?: KvDtype,
): Float64Array {
  if (bits >= 16) return Float64Array.from(values);
  return dequantizeRow(quantizeRow(values, bits, storeAs));
}

/** Packs b-bit codes little-endian into 32-bit words (codes never straddle words). */
export function packCodes(codes: ArrayLike<number>, bits: number, out: Uint32Array, at = 0): void {
  checkBits("packCodes", bits, [16, 8, 4, 2]);
  const perWord = codesPerWord(bits);
  const words = Math.ceil(codes.length / perWord);
  for (let w = 0; w < words; w++) {
    let word = 0;
    for (let j = 0; j < perWord; j++) {
      const c = w * perWord + j;
      if (c < codes.length) word |= codes[c] << (j * bits);
    }
    out[at + w] = word >>> 0;
  }
}

/** The `count` codes of `bits` bits packed from word `at` of `words` (inverse of packCodes). */
export function unpackCodes(
  words: Uint32Array,
  at: number,
  count: number,
  bits: number,
): Uint8Array {
  checkBits("unpackCodes", bits, [16, 8, 4, 2]);
  const perWord = codesPerWord(bits);
  const mask = codeLevels(bits);
  const out = new Uint8Array(count);
  for (let c = 0; c < count; c++) {
    out[c] = (words[at + Math.floor(c / perWord)] >>> ((c % perWord) * bits)) & mask;
  }
  return out;
}
