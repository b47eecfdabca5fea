/** The model kernel family compiled standalone, for the GPU checks of its single kernels. */
import type { Cuda, Stream } from "../../src/cuda/driver.ts";
import { MODEL_KERNELS, MODEL_ROW_THREADS } from "../../src/codegen/families.ts";
import { renderFamilySource } from "../../src/codegen/render.ts";
import { FamilyModule } from "../../src/runtime/family_module.ts";

/**
 * The family for the bundled model's shape (hidden 512, 4/2 heads of 128, intermediate 1408) in
 * `dtype`, its launches on `stream`. Token choice and the GEMM take their sizes as arguments, so
 * any shape serves their checks.
 */
export function bundledModelFamily(
  cuda: Cuda,
  dtype: "fp16" | "bf16",
  stream: Stream,
): FamilyModule<typeof MODEL_KERNELS> {
  const { source } = renderFamilySource("model", dtype, {
    hidden: 512,
    headDim: 128,
    numQHeads: 4,
    numKvHeads: 2,
    intermediate: 1408,
    rowThreads: MODEL_ROW_THREADS,
  });
  return new FamilyModule(cuda, MODEL_KERNELS, source, "model.cu", dtype, stream);
}
