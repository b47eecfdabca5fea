/**
 * Utility kernels for benchmarks and smoke runs (templates/util.cu.hbs): fill device buffers
 * with fresh random K/V values and label rows without a host round trip.
 */
import { renderFamilySource } from "../codegen/render.ts";
import { UTIL_KERNELS } from "../codegen/families.ts";
import { codeLevels } from "../dsl/layout.ts";
import type { Cuda, DeviceBuffer, Stream } from "../cuda/driver.ts";
import { FamilyModule } from "./family_module.ts";

export class UtilKernels implements Disposable {
  readonly #kernels: FamilyModule<typeof UTIL_KERNELS>;

  constructor(cuda: Cuda, readonly dtype: "fp16" | "bf16") {
    const { source } = renderFamilySource("util", dtype);
    this.#kernels = new FamilyModule(cuda, UTIL_KERNELS, source, `util_${dtype}.cu`, dtype);
  }

  /** buf[0..n) = scale * N(0,1) in the KV dtype (device memory or a mapped host buffer). */
  fillNormal(
    buf: { readonly ptr: bigint; readonly bytes: number },
    seed: number,
    scale: number,
    stream: Stream,
    n = buf.bytes / 2,
  ): void {
    this.#kernels.bindStream(stream);
    this.#kernels.launch("fill_normal", [Math.min(4096, Math.ceil(n / 256)), 1, 1], {
      out: buf.ptr,
      n: BigInt(n),
      seed: seed >>> 0,
      scale,
    });
  }

  /**
   * Random labels of `bits` bits: 16-bit labels are raw channel values (normal, into `codes`);
   * narrower ones random codes with the (scale, min) meta words of per-row quantization.
   */
  fillLabels(
    codes: DeviceBuffer,
    meta: DeviceBuffer,
    bits: number,
    seed: number,
    stream: Stream,
  ): void {
    if (bits === 16) {
      this.fillNormal(codes, seed, 1, stream);
      return;
    }
    this.#kernels.bindStream(stream);
    this.#kernels.launch("fill_labels", [4096, 1, 1], {
      codes: codes.ptr,
      nCodes: BigInt(codes.bytes / 4),
      meta: meta.ptr,
      nMeta: BigInt(meta.bytes / 4),
      seed: seed >>> 0,
      levels: codeLevels(bits),
    });
  }

  [Symbol.dispose](): void {
    this.#kernels[Symbol.dispose]();
  }
}
