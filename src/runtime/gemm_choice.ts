/**
 * Which GEMM the GPU decoder's projections run on: cuBLAS (the default, fastest) or the model
 * family's own kernels (templates/model.cu.hbs: the decode GEMM `decode_linear` for steps of at
 * most 16 rows, within a few percent of cuBLAS, and the plain `linear` for prefill), with which a
 * decoder opens no cuBLAS handle at all, so a compute-sanitizer run sees only this project's
 * kernels. The choice comes
 * from `GpuDecoderOptions.gemm`, else from the environment variable DS_GEMM (read here and
 * nowhere else), else cuBLAS.
 */
import { ArgumentError, InputError } from "../util/errors.ts";
import { envSetting } from "./env.ts";

export const GEMM_BACKENDS = ["cublas", "builtin"] as const;
export type GemmBackend = (typeof GEMM_BACKENDS)[number];

/** The environment variable that picks the GEMM where the caller did not. */
export const GEMM_ENV_VAR = "DS_GEMM";

/** The allowed values, as error messages list them. */
export const GEMM_ALLOWED = GEMM_BACKENDS.join(", ");

export const isGemmBackend = (v: unknown): v is GemmBackend =>
  GEMM_BACKENDS.includes(v as GemmBackend);

/** DS_GEMM's value, validated; undefined when it is unset or empty. */
export function gemmFromEnv(): GemmBackend | undefined {
  const value = envSetting(GEMM_ENV_VAR);
  if (value === undefined) return undefined;
  if (!isGemmBackend(value)) {
    throw new InputError(
      `environment variable ${GEMM_ENV_VAR}`,
      `got ${JSON.stringify(value)}; allowed: ${GEMM_ALLOWED}`,
    );
  }
  return value;
}

/**
 * The GEMM a decoder uses: `option` (validated; `fn` names the entry point in the error), else
 * DS_GEMM, else "cublas".
 */
export function chooseGemm(option: unknown, fn: string): GemmBackend {
  if (option !== undefined) {
    if (!isGemmBackend(option)) {
      throw new ArgumentError(fn, "options.gemm", option, GEMM_ALLOWED);
    }
    return option;
  }
  return gemmFromEnv() ?? "cublas";
}
