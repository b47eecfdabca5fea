/**
 * cuBLAS through Deno FFI, for the decoder's projections: one handle bound to a stream, GEMMs with
 * fp16/bf16 operands and fp32 accumulation (cublasGemmEx). Opened on first use, like the driver.
 */
import { DeviceError } from "../util/errors.ts";
import type { Stream } from "./driver.ts";
import { CUDA_LIB_DIRS, type LibrarySearch, openLibrary } from "./library.ts";

const symbols = {
  // cublasStatus_t cublasCreate_v2(cublasHandle_t* handle)
  cublasCreate_v2: { parameters: ["buffer"], result: "i32" },
  // cublasStatus_t cublasDestroy_v2(cublasHandle_t handle)
  cublasDestroy_v2: { parameters: ["pointer"], result: "i32" },
  // cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t streamId)
  cublasSetStream_v2: { parameters: ["pointer", "pointer"], result: "i32" },
  // cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t handle, void* workspace, size_t bytes)
  cublasSetWorkspace_v2: { parameters: ["pointer", "u64", "usize"], result: "i32" },
  // cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa,
  //   cublasOperation_t transb, int m, int n, int k, const void* alpha, const void* A,
  //   cudaDataType Atype, int lda, const void* B, cudaDataType Btype, int ldb, const void* beta,
  //   void* C, cudaDataType Ctype, int ldc, cublasComputeType_t computeType, cublasGemmAlgo_t algo)
  cublasGemmEx: {
    parameters: [
      "pointer",
      "i32",
      "i32",
      "i32",
      "i32",
      "i32",
      "buffer",
      "u64",
      "i32",
      "i32",
      "u64",
      "i32",
      "i32",
      "buffer",
      "u64",
      "i32",
      "i32",
      "i32",
      "i32",
    ],
    result: "i32",
  },
} as const satisfies Deno.ForeignLibraryInterface;

export const CUBLAS_SEARCH: LibrarySearch = {
  what: "cuBLAS (libcublas)",
  envVar: "DS_CUBLAS_PATH",
  sonames: ["libcublas.so.13", "libcublas.so.12", "libcublas.so"],
  paths: CUDA_LIB_DIRS.flatMap((d) => [`${d}/libcublas.so.13`, `${d}/libcublas.so.12`]),
};

const STATUS_NAMES: Record<number, string> = {
  0: "CUBLAS_STATUS_SUCCESS",
  1: "CUBLAS_STATUS_NOT_INITIALIZED",
  3: "CUBLAS_STATUS_ALLOC_FAILED",
  7: "CUBLAS_STATUS_INVALID_VALUE",
  8: "CUBLAS_STATUS_ARCH_MISMATCH",
  11: "CUBLAS_STATUS_MAPPING_ERROR",
  13: "CUBLAS_STATUS_EXECUTION_FAILED",
  14: "CUBLAS_STATUS_INTERNAL_ERROR",
  15: "CUBLAS_STATUS_NOT_SUPPORTED",
  16: "CUBLAS_STATUS_LICENSE_ERROR",
};

export class CublasError extends DeviceError {
  constructor(readonly call: string, readonly status: number) {
    super(`${call} failed: ${STATUS_NAMES[status] ?? `cublasStatus_t ${status}`} (${status})`);
    this.name = "CublasError";
  }
}

/** cudaDataType values (library_types.h). */
export const DataType = { F32: 0, F16: 2, BF16: 14 } as const;
export type GemmDtype = keyof typeof DataType;
const CUBLAS_COMPUTE_32F = 68;
const CUBLAS_GEMM_DEFAULT = -1;
const OP_N = 0, OP_T = 1;

let lib: Deno.DynamicLibrary<typeof symbols> | undefined;

/**
 * A cuBLAS handle bound to one stream. Disposable (`using`); a set-up call that fails after
 * `cublasCreate` destroys the handle before the error leaves the constructor, and a second
 * dispose does nothing.
 */
export class Cublas implements Disposable {
  readonly #handle: Deno.PointerValue;
  #alive = true;
  readonly #alpha = new Float32Array([1]);
  readonly #beta = new Float32Array([0]);
  readonly #sym: Deno.DynamicLibrary<typeof symbols>["symbols"];

  constructor(stream: Stream, workspace?: { ptr: bigint; bytes: number }) {
    lib ??= openLibrary(CUBLAS_SEARCH, symbols).lib;
    this.#sym = lib.symbols;
    const out = new BigUint64Array(1);
    this.#check("cublasCreate", this.#sym.cublasCreate_v2(out));
    this.#handle = Deno.UnsafePointer.create(out[0]);
    try {
      this.#check("cublasSetStream", this.#sym.cublasSetStream_v2(this.#handle, stream.handle));
      // A fixed workspace keeps cuBLAS from allocating while a CUDA graph is being captured.
      if (workspace) {
        this.#check(
          "cublasSetWorkspace",
          this.#sym.cublasSetWorkspace_v2(this.#handle, workspace.ptr, BigInt(workspace.bytes)),
        );
      }
    } catch (e) {
      this.#alive = false;
      this.#sym.cublasDestroy_v2(this.#handle); // the set-up error is the one to report
      throw e;
    }
  }

  get alive(): boolean {
    return this.#alive;
  }

  #check(call: string, status: number): void {
    if (status !== 0) throw new CublasError(call, status);
  }

  /**
   * Row-major Y[m][n] = X[m][k] . W[n][k]^T (+ beta * Y): the layout of a Hugging Face Linear
   * weight. In cuBLAS's column-major terms that is Y^T = W . X^T, so W is op T and X op N.
   */
  linear(
    y: bigint,
    yType: GemmDtype,
    x: bigint,
    w: bigint,
    operandType: GemmDtype,
    m: number,
    n: number,
    k: number,
    accumulate = false,
  ): void {
    if (!this.#alive) throw new DeviceError("Cublas.linear: the handle was disposed");
    this.#beta[0] = accumulate ? 1 : 0;
    this.#check(
      "cublasGemmEx",
      this.#sym.cublasGemmEx(
        this.#handle,
        OP_T,
        OP_N,
        n,
        m,
        k,
        this.#alpha,
        w,
        DataType[operandType],
        k,
        x,
        DataType[operandType],
        k,
        this.#beta,
        y,
        DataType[yType],
        n,
        CUBLAS_COMPUTE_32F,
        CUBLAS_GEMM_DEFAULT,
      ),
    );
  }

  dispose(): void {
    if (!this.#alive) return;
    this.#alive = false;
    this.#check("cublasDestroy", this.#sym.cublasDestroy_v2(this.#handle));
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
