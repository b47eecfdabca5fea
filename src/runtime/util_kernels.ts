/**
 * Utility kernels for benchmarks and smoke runs (templates/util.cu.hbs): fill device buffers
 * with fresh random K/V values and label rows without a host round trip.
 */
import { renderExtra } from "../codegen/render.ts";
import type { Cuda, DeviceBuffer, LaunchSlot, Module, Stream } from "../cuda/driver.ts";
import { sharedCompiler } from "./variant.ts";

export class UtilKernels implements Disposable {
  readonly #module: Module;
  readonly #normal: LaunchSlot;
  readonly #labels: LaunchSlot;

  constructor(cuda: Cuda, readonly dtype: "fp16" | "bf16") {
    const { source } = renderExtra("util", dtype);
    const compiled = sharedCompiler().compile({
      source,
      programName: "util.cu",
      arch: cuda.info.arch,
    });
    this.#module = cuda.loadModule(compiled.cubin!, "util.cu");
    this.#normal = this.#module.function(`ds_util_fill_normal_${dtype}`).slot(4, [256, 1, 1]);
    this.#labels = this.#module.function(`ds_util_fill_labels_${dtype}`).slot(5, [256, 1, 1]);
  }

  /** buf[0..n) = scale * N(0,1) in the KV dtype. */
  fillNormal(
    buf: DeviceBuffer,
    seed: number,
    scale: number,
    stream: Stream,
    n = buf.bytes / 2,
  ): void {
    const s = this.#normal;
    s.stream = stream;
    s.args.setBigUint64(0, buf.ptr, true);
    s.args.setBigUint64(8, BigInt(n), true);
    s.args.setUint32(16, seed >>> 0, true);
    s.args.setFloat32(24, scale, true);
    s.launch([Math.min(4096, Math.ceil(n / 256)), 1, 1]);
  }

  /** Random label codes and plausible (scale, min) meta words. */
  fillLabels(codes: DeviceBuffer, meta: DeviceBuffer, seed: number, stream: Stream): void {
    const s = this.#labels;
    s.stream = stream;
    s.args.setBigUint64(0, codes.ptr, true);
    s.args.setBigUint64(8, BigInt(codes.bytes / 4), true);
    s.args.setBigUint64(16, meta.ptr, true);
    s.args.setBigUint64(24, BigInt(meta.bytes / 4), true);
    s.args.setUint32(32, seed >>> 0, true);
    s.launch([4096, 1, 1]);
  }

  [Symbol.dispose](): void {
    this.#module.dispose();
  }
}
