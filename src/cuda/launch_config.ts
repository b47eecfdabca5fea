/**
 * The byte layouts `cuLaunchKernelEx` takes (CUDA driver API 12.0+, cuda.h), encoded into plain
 * buffers for Deno FFI, and the one attribute the decode step uses: programmatic stream
 * serialization (Hopper's Programmatic Dependent Launch). Pure: no FFI, no `Deno`, so the byte
 * layout is checked by CPU tests.
 *
 *   struct CUlaunchConfig {           // 56 bytes, 8-byte aligned (x86-64 / aarch64 Linux)
 *     unsigned gridDimX, gridDimY, gridDimZ;     //  0,  4,  8
 *     unsigned blockDimX, blockDimY, blockDimZ;  // 12, 16, 20
 *     unsigned sharedMemBytes;                   // 24 (then 4 bytes of padding)
 *     CUstream hStream;                          // 32
 *     CUlaunchAttribute* attrs;                  // 40
 *     unsigned numAttrs;                         // 48 (then 4 bytes of padding)
 *   };
 *   struct CUlaunchAttribute {        // 72 bytes
 *     CUlaunchAttributeID id;                    //  0 (4 bytes, then 4 of padding)
 *     CUlaunchAttributeValue value;              //  8: a union padded to 64 bytes
 *   };
 *
 * CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION (6) reads the union's first member as
 * `int programmaticStreamSerializationAllowed`: non-zero lets the kernel start before the previous
 * kernel of its stream has finished, once every block of that kernel has executed
 * `griddepcontrol.launch_dependents` (or exited); the kernel itself must execute
 * `griddepcontrol.wait` before it touches what the previous kernel writes.
 */

export const LAUNCH_CONFIG_BYTES = 56;
export const LAUNCH_ATTRIBUTE_BYTES = 72;
/** CUlaunchAttributeID values (cuda.h, CUlaunchAttributeID_enum). */
export const LaunchAttributeId = {
  IGNORE: 0,
  PROGRAMMATIC_STREAM_SERIALIZATION: 6,
} as const;

/** What one launch needs besides the kernel and its parameters. */
export interface LaunchConfig {
  readonly grid: readonly [number, number, number];
  readonly block: readonly [number, number, number];
  readonly sharedBytes: number;
  /** CUstream as an address (0n: the legacy default stream). */
  readonly stream: bigint;
  /** Address of the first CUlaunchAttribute (0n when numAttrs is 0). */
  readonly attrs: bigint;
  readonly numAttrs: number;
}

const u32 = (what: string, v: number): number => {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
    throw new RangeError(`CUlaunchConfig.${what}: got ${v}; allowed: an integer in [0, 2^32)`);
  }
  return v;
};

/** Writes a CUlaunchConfig into `view` (at least LAUNCH_CONFIG_BYTES), padding zeroed. */
export function encodeLaunchConfig(view: DataView, c: LaunchConfig): void {
  if (view.byteLength < LAUNCH_CONFIG_BYTES) {
    throw new RangeError(
      `CUlaunchConfig needs ${LAUNCH_CONFIG_BYTES} bytes; the buffer has ${view.byteLength}`,
    );
  }
  const dims = [...c.grid, ...c.block] as const;
  const names = ["gridDimX", "gridDimY", "gridDimZ", "blockDimX", "blockDimY", "blockDimZ"];
  dims.forEach((d, i) => view.setUint32(4 * i, u32(names[i], d), true));
  view.setUint32(24, u32("sharedMemBytes", c.sharedBytes), true);
  view.setUint32(28, 0, true);
  view.setBigUint64(32, c.stream, true);
  view.setBigUint64(40, c.attrs, true);
  view.setUint32(48, u32("numAttrs", c.numAttrs), true);
  view.setUint32(52, 0, true);
}

/**
 * Writes one CUlaunchAttribute allowing programmatic stream serialization into `view` (at least
 * LAUNCH_ATTRIBUTE_BYTES): id 6, the value union's int = 1, every other byte zero.
 */
export function encodeProgrammaticSerialization(view: DataView): void {
  if (view.byteLength < LAUNCH_ATTRIBUTE_BYTES) {
    throw new RangeError(
      `CUlaunchAttribute needs ${LAUNCH_ATTRIBUTE_BYTES} bytes; the buffer has ${view.byteLength}`,
    );
  }
  for (let i = 0; i < LAUNCH_ATTRIBUTE_BYTES; i++) view.setUint8(i, 0);
  view.setUint32(0, LaunchAttributeId.PROGRAMMATIC_STREAM_SERIALIZATION, true);
  view.setInt32(8, 1, true);
}
