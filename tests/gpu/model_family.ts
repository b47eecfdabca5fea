/** The model kernel family compiled standalone, for the GPU checks of its single kernels. */
import type { Cuda, Stream } from "../../src/cuda/driver.ts";
import { MODEL_KERNELS, MODEL_ROW_THREADS } from "../../src/codegen/families.ts";
import { renderFamilySource } from "../../src/codegen/render.ts";
import { FamilyModule } from "../../src/runtime/family_module.ts";

/** A model shape of the family's source. */
export interface FamilyShape {
  readonly hidden: number;
  readonly headDim: number;
  readonly numQHeads: number;
  readonly numKvHeads: number;
  readonly intermediate: number;
}

/** The bundled model's shape (tiny-code-llama-8k). */
export const BUNDLED_SHAPE: FamilyShape = {
  hidden: 512,
  headDim: 128,
  numQHeads: 4,
  numKvHeads: 2,
  intermediate: 1408,
};

/** The family for `shape` in `dtype`, its launches on `stream`. */
export function modelFamily(
  cuda: Cuda,
  dtype: "fp16" | "bf16",
  stream: Stream,
  shape: FamilyShape,
): FamilyModule<typeof MODEL_KERNELS> {
  const { source } = renderFamilySource("model", dtype, {
    ...shape,
    rowThreads: MODEL_ROW_THREADS,
  });
  return new FamilyModule(cuda, MODEL_KERNELS, source, "model.cu", dtype, stream);
}

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
  return modelFamily(cuda, dtype, stream, BUNDLED_SHAPE);
}
