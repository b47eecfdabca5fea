/**
 * The arguments of `cuTensorMapEncodeTiled` (CUDA driver API 12.0+, cuda.h), checked against the
 * limits the driver documents, so a bad map is one line naming the field instead of a bare
 * CUDA_ERROR_INVALID_VALUE. Pure: no FFI, no `Deno`; src/cuda/driver.ts makes the call.
 *
 *   CUresult cuTensorMapEncodeTiled(CUtensorMap* tensorMap, CUtensorMapDataType tensorDataType,
 *     cuuint32_t tensorRank, void* globalAddress, const cuuint64_t* globalDim,
 *     const cuuint64_t* globalStrides, const cuuint32_t* boxDim, const cuuint32_t* elementStrides,
 *     CUtensorMapInterleave interleave, CUtensorMapSwizzle swizzle,
 *     CUtensorMapL2promotion l2Promotion, CUtensorMapFloatOOBfill oobFill)
 *
 * CUtensorMap is an opaque 128-byte object, 64-byte aligned; a kernel takes its address in global
 * memory (or as a __grid_constant__ parameter) as the tensor-map operand of
 * `cp.async.bulk.tensor`.
 */

/** sizeof(CUtensorMap); the alignment a copy of one in device memory needs is 64. */
export const TENSOR_MAP_BYTES = 128;
export const TENSOR_MAP_ALIGN = 64;

/** CUtensorMapDataType values (cuda.h); only the element size matters without OOB float fill. */
export const TensorMapDataType = {
  UINT8: 0,
  UINT16: 1,
  UINT32: 2,
  FLOAT16: 6,
  BFLOAT16: 9,
} as const;
/** CUtensorMapSwizzle values: the shared-memory bank swizzle the copies write. */
export const TensorMapSwizzle = { NONE: 0, B32: 1, B64: 2, B128: 3 } as const;
/** CUtensorMapL2promotion values. */
export const TensorMapL2Promotion = { NONE: 0, B64: 1, B128: 2, B256: 3 } as const;
/** CUtensorMapInterleave NONE and CUtensorMapFloatOOBfill NONE (the only ones used here). */
export const TENSOR_MAP_INTERLEAVE_NONE = 0;
export const TENSOR_MAP_OOB_FILL_NONE = 0;

const ELEMENT_BYTES: Readonly<Record<number, number>> = { 0: 1, 1: 2, 2: 4, 6: 2, 9: 2 };
const SWIZZLE_SPAN: Readonly<Record<number, number>> = { 0: Infinity, 1: 32, 2: 64, 3: 128 };

/** A tiled tensor map of rank `globalDim.length`, innermost dimension first. */
export interface TiledTensorMap {
  readonly dataType: number;
  /** Elements along each dimension. */
  readonly globalDim: readonly number[];
  /** Bytes between consecutive indices of dimensions 1.. (rank - 1 entries). */
  readonly globalStrides: readonly number[];
  /** Elements one copy moves along each dimension. */
  readonly boxDim: readonly number[];
  readonly elementStrides: readonly number[];
  readonly swizzle: number;
  readonly l2Promotion: number;
}

/**
 * The problems with `m` against cuTensorMapEncodeTiled's documented limits (empty when none):
 * rank 1-5, dims in [1, 2^32], strides multiples of 16 below 2^40, box dims in [1, 256] with the
 * inner box a multiple of 16 bytes and, when swizzled, no wider than the swizzle span.
 */
export function tensorMapProblems(m: TiledTensorMap): string[] {
  const problems: string[] = [];
  const rank = m.globalDim.length;
  const size = ELEMENT_BYTES[m.dataType];
  if (size === undefined) {
    problems.push(`dataType ${m.dataType}; allowed: ${Object.keys(ELEMENT_BYTES)}`);
  }
  if (rank < 1 || rank > 5) problems.push(`rank ${rank}; allowed: 1 to 5`);
  const lengths = [m.globalStrides.length + 1, m.boxDim.length, m.elementStrides.length];
  if (lengths.some((n) => n !== rank)) {
    problems.push(`globalStrides/boxDim/elementStrides lengths ${lengths}; allowed: rank ${rank}`);
  }
  m.globalDim.forEach((d, i) => {
    if (!Number.isInteger(d) || d < 1 || d > 2 ** 32) {
      problems.push(`globalDim[${i}] ${d}; allowed: 1 to 2^32`);
    }
  });
  m.globalStrides.forEach((s, i) => {
    if (!Number.isInteger(s) || s % 16 !== 0 || s <= 0 || s >= 2 ** 40) {
      problems.push(`globalStrides[${i}] ${s}; allowed: a multiple of 16 below 2^40`);
    }
  });
  m.boxDim.forEach((b, i) => {
    if (!Number.isInteger(b) || b < 1 || b > 256) {
      problems.push(`boxDim[${i}] ${b}; allowed: 1 to 256`);
    }
  });
  m.elementStrides.forEach((e, i) => {
    if (!Number.isInteger(e) || e < 1 || e > 8) {
      problems.push(`elementStrides[${i}] ${e}; allowed: 1 to 8`);
    }
  });
  if (size !== undefined && m.boxDim.length > 0) {
    const inner = m.boxDim[0] * size;
    if (inner % 16 !== 0) problems.push(`inner box ${inner} bytes; allowed: a multiple of 16`);
    const span = SWIZZLE_SPAN[m.swizzle];
    if (span === undefined) problems.push(`swizzle ${m.swizzle}; allowed: 0 to 3`);
    else if (inner > span) {
      problems.push(`inner box ${inner} bytes; allowed: at most the swizzle span, ${span} bytes`);
    }
  }
  return problems;
}
