/**
 * Inline-PTX wrappers of the Hopper warpgroup MMA (`wgmma.mma_async`, sm_90a, PTX ISA 8.0) used by
 * the prefill kernel's sm_90a body. An m64nN accumulator is N / 2 floats per thread, each one an
 * asm operand, so the operand lists are written here rather than by hand in the template.
 * Pure: strings only.
 */

/** `{%from, ..., %(from + count - 1)}` */
const regList = (from: number, count: number): string =>
  `{${Array.from({ length: count }, (_, i) => `%${from + i}`).join(", ")}}`;

/** `"+f"(d[0]), ...` (or `"=f"` where the instruction ignores the old value). */
const accOperands = (count: number, constraint: "+f" | "=f"): string =>
  Array.from({ length: count }, (_, i) => `"${constraint}"(d[${i}])`).join(", ");

/**
 * The two MMAs of the prefill body, for one variant:
 * `wgmma_qk<ACC>(d, a_desc, b_desc)`: d (m64 x keyTile, fp32) = A B, plus d when ACC is 1; A
 * (64 x 16) and B (16 x keyTile, K-major) from shared memory through matrix descriptors.
 * `wgmma_pv(d, a, b_desc)`: d (m64 x headDim) += A B; A (64 x 16) from registers (four 16-bit
 * pairs per thread, per warp the mma.sync A-fragment layout), B (16 x headDim) N-major in shared
 * memory (imm-trans-b = 1).
 */
export function wgmmaWrappers(
  mmaType: "f16" | "bf16",
  keyTile: number,
  headDim: number,
): string {
  for (const [what, n] of [["keyTile", keyTile], ["headDim", headDim]] as const) {
    if (!(Number.isInteger(n) && n >= 8 && n <= 256 && n % 8 === 0)) {
      throw new RangeError(`wgmmaWrappers: ${what} ${n}; allowed: a multiple of 8 in [8, 256]`);
    }
  }
  const op = (n: number) => `wgmma.mma_async.sync.aligned.m64n${n}k16.f32.${mmaType}.${mmaType}`;
  const s = keyTile / 2, o = headDim / 2;
  return `template <int ACC>
DS_INLINE void wgmma_qk(float (&d)[${s}], u64 a_desc, u64 b_desc);
template <>
DS_INLINE void wgmma_qk<0>(float (&d)[${s}], u64 a_desc, u64 b_desc) {
  asm volatile("${op(keyTile)} ${regList(0, s)}, %${s}, %${s + 1}, 0, 1, 1, 0, 0;"
               : ${accOperands(s, "=f")}
               : "l"(a_desc), "l"(b_desc));
}
template <>
DS_INLINE void wgmma_qk<1>(float (&d)[${s}], u64 a_desc, u64 b_desc) {
  asm volatile("${op(keyTile)} ${regList(0, s)}, %${s}, %${s + 1}, 1, 1, 1, 0, 0;"
               : ${accOperands(s, "+f")}
               : "l"(a_desc), "l"(b_desc));
}
DS_INLINE void wgmma_pv(float (&d)[${o}], const u32 (&a)[4], u64 b_desc) {
  asm volatile("${op(headDim)} ${regList(0, o)}, ${regList(o, 4)}, %${o + 4}, 1, 1, 1, 1;"
               : ${accOperands(o, "+f")}
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_desc));
}`;
}
