/**
 * Kernel families outside the per-variant decode kernels: the decoder's own kernels
 * (templates/model.cu.hbs, one source per model shape) and the benchmark utilities
 * (templates/util.cu.hbs, one source per KV dtype). Like `KERNELS`, each kernel is described once:
 * its arguments render the documented CUDA signature (`{{params.<id>}}` in the template) and type
 * its launcher (`ArgsOf`), and the runtime packs argument slots from the same list, so no byte
 * offset is written by hand anywhere.
 *
 * Pure data plus small functions; runs under Deno and Node.
 */
import type { ArgKind } from "./kernels.ts";

/** Argument kinds of family kernels: the decode kinds plus 32/64-bit unsigned integers. */
export type FamilyArgKind = ArgKind | "u32" | "u64";

export interface FamilyArg {
  /** snake_case name in CUDA; the launcher field is its camelCase form. */
  readonly name: string;
  readonly kind: FamilyArgKind;
  /** C type in the kernel signature. */
  readonly cType: string;
  readonly doc: string;
}

export interface FamilyKernel {
  /** Exported symbol; `{dtype}` is replaced by the KV dtype for per-dtype sources. */
  readonly symbol: string;
  readonly threads: number;
  readonly doc: string;
  /** How the caller shapes the grid. */
  readonly grid: string;
  readonly args: readonly FamilyArg[];
}

const arg = <N extends string, K extends FamilyArgKind>(
  name: N,
  kind: K,
  cType: string,
  doc: string,
) => ({ name, kind, cType: kind === "ptr" ? `${cType}__restrict__ ` : cType, doc }) as const;
const ptr = <N extends string>(name: N, cType: string, doc: string) => arg(name, "ptr", cType, doc);

/** Threads of the row-wise model kernels (a block per row, or per row and chunk of it). */
export const MODEL_ROW_THREADS = 256;

/** Blocks per row of a model kernel with one thread per item of the row (grid.y). */
export const rowChunks = (items: number): number => Math.ceil(items / MODEL_ROW_THREADS);

/**
 * Threads of the token-choice kernel (one block per sequence over the whole vocabulary). The CPU
 * reference of the rule (`chooseToken`, src/decoding/sampling.ts) reproduces this block's
 * summation order, so it depends on this number too.
 */
export const TOKEN_CHOICE_THREADS = 1024;

/**
 * Coefficients, lowest power first, of the degree-8 polynomial for 2^f on [0, 1] (Taylor series
 * of e^(f ln 2), relative error below 2e-7) that token choice computes its probabilities with,
 * rounded to float32: the kernel (as exact hex literals) and the CPU reference use these same
 * numbers and the same float32 operations, so both get bit-identical probabilities (a library
 * exp differs by an ulp between the GPU and the host, which would move top-p cut-offs).
 */
export const TOKEN_CHOICE_EXP2_POLY: readonly number[] = Array.from(
  { length: 9 },
  (_, k) => {
    let c = 1;
    for (let j = 1; j <= k; j++) c *= Math.LN2 / j;
    return Math.fround(c);
  },
);

/**
 * The builtin GEMM (`linear`): output tiles of GEMM_TILE x GEMM_TILE, GEMM_THREADS threads each
 * computing a 4 x 4 block of it, k in steps of GEMM_TILE_K through shared memory. Only the
 * decoder's `gemm: "builtin"` uses it (a cuBLAS-free path for compute-sanitizer runs).
 */
export const GEMM_TILE = 64;
export const GEMM_TILE_K = 32;
export const GEMM_THREADS = (GEMM_TILE / 4) ** 2;

/**
 * The decode GEMM (`decode_linear`): y (+)= x . w^T for at most DECODE_GEMM_MAX_ROWS rows on
 * tensor cores, one block of DECODE_GEMM_WARPS warps per DECODE_GEMM_TILE_N outputs, each warp
 * DECODE_GEMM_UNROLL 32-wide slices of k in flight (docs/perf-notes.md, "A decode GEMM").
 */
export const DECODE_GEMM_WARPS = 8;
export const DECODE_GEMM_UNROLL = 4;
export const DECODE_GEMM_TILE_N = 16;
export const DECODE_GEMM_MAX_ROWS = 16;

/**
 * The offload prediction's query kernel (`predict_query`): PREDICT_QUERY_SPLIT warps share one
 * (query head, label channel) item, each a slice of the hidden size, so a launch keeps enough
 * loads in flight for its ~8 MB of weight rows (Llama-3-8B). A block of MODEL_ROW_THREADS holds
 * PREDICT_QUERY_ITEMS items; rows of x are taken PREDICT_QUERY_ROWS per pass.
 */
export const PREDICT_QUERY_SPLIT = 4;
export const PREDICT_QUERY_ITEMS = MODEL_ROW_THREADS / 32 / PREDICT_QUERY_SPLIT;
export const PREDICT_QUERY_ROWS = 4;

/** y[m][n] (+)= x[m][k] . w[n][k]^T: both GEMM kernels' arguments, in signature order. */
const gemmArgs = (rowsDoc: string, kDoc: string) =>
  [
    ptr("x", "const u16* ", "[m][k] activations, model dtype"),
    ptr("w", "const u16* ", "[n][k] weight (a Hugging Face Linear's layout), model dtype"),
    ptr("y", "float* ", "[m][n] output"),
    arg("m", "i32", "int ", rowsDoc),
    arg("n", "i32", "int ", "output columns"),
    arg("k", "i32", "int ", kDoc),
    arg("accumulate", "i32", "int ", "1: add to y; 0: overwrite y (not read)"),
  ] as const;

export const MODEL_KERNELS = {
  embed: {
    symbol: "ds_model_embed",
    threads: MODEL_ROW_THREADS,
    doc: "h[m] = embed[tokens[m]] into the fp32 residual stream.",
    grid: "(rows, 1, 1)",
    args: [
      ptr("tokens", "const int* ", "[rows] token ids"),
      ptr("embed", "const u16* ", "[vocab][HIDDEN] embedding, model dtype"),
      ptr("h", "float* ", "[rows][HIDDEN] residual stream"),
    ],
  },
  rmsnorm: {
    symbol: "ds_model_rmsnorm",
    threads: MODEL_ROW_THREADS,
    doc: "x[m] = h[m] * rsqrt(mean(h[m]^2) + eps) * w, stored in the model dtype.",
    grid: "(rows, 1, 1)",
    args: [
      ptr("h", "const float* ", "[rows][HIDDEN] residual stream"),
      ptr("w", "const float* ", "[HIDDEN] norm weight"),
      arg("eps", "f32", "float ", "variance epsilon"),
      ptr("x", "u16* ", "[rows][HIDDEN] normalized rows, model dtype"),
    ],
  },
  rope: {
    symbol: "ds_model_rope",
    threads: MODEL_ROW_THREADS,
    doc: "Splits the fused QKV projection (+ bias), rotate-half RoPE on q and k at each row's " +
      "position, stores q, k, v in the model dtype.",
    grid:
      "(rows, rowChunks((NUM_Q_HEADS + NUM_KV_HEADS) * HEAD_DIM / 2 + NUM_KV_HEADS * HEAD_DIM), 1)",
    args: [
      ptr("qkv", "const float* ", "[rows][QKV_WIDTH] fused projection"),
      ptr("bias", "const float* ", "[QKV_WIDTH] q/k/v biases, or null"),
      ptr("positions", "const int* ", "[rows] position of each row in its sequence"),
      ptr("inv_freq", "const float* ", "[HEAD_DIM / 2] RoPE inverse frequencies (scaling applied)"),
      arg("attention_factor", "f32", "float ", "cos and sin scale (YaRN); 1 otherwise"),
      ptr("q", "u16* ", "[rows][NUM_Q_HEADS][HEAD_DIM] rotated queries"),
      ptr("k", "u16* ", "[rows][NUM_KV_HEADS][HEAD_DIM] rotated keys"),
      ptr("v", "u16* ", "[rows][NUM_KV_HEADS][HEAD_DIM] values"),
    ],
  },
  predict_query: {
    symbol: "ds_model_predict_query",
    threads: MODEL_ROW_THREADS,
    doc:
      "Offload's next-layer prediction after the input RMSNorm: the rotated query at the label " +
      "channels alone (each channel's RoPE pair of Q rows against x, + the Q biases, RoPE), the " +
      "only channels the prediction's score and select read; other channels of q are not written.",
    grid: "(ceil(NUM_Q_HEADS * label_channels / PREDICT_QUERY_ITEMS), 1, 1)",
    args: [
      ptr("x", "const u16* ", "[rows][HIDDEN] normalized rows, model dtype"),
      arg("rows", "i32", "int ", "rows (the batch)"),
      ptr("w_q", "const u16* ", "[QKV_WIDTH][HIDDEN] fused QKV weight (only Q rows are read)"),
      ptr("bias", "const float* ", "[QKV_WIDTH] q/k/v biases (only the q part is read), or null"),
      ptr("positions", "const int* ", "[rows] position of each row in its sequence"),
      ptr("inv_freq", "const float* ", "[HEAD_DIM / 2] RoPE inverse frequencies (scaling applied)"),
      arg("attention_factor", "f32", "float ", "cos and sin scale (YaRN); 1 otherwise"),
      ptr("channels", "const int* ", "[label heads][label_channels] the layer's label channels"),
      arg("label_channels", "i32", "int ", "label channels per label head"),
      ptr(
        "label_head_of_q",
        "const int* ",
        "[NUM_Q_HEADS] label head each query head is scored on",
      ),
      ptr("q", "u16* ", "[rows][NUM_Q_HEADS][HEAD_DIM] rotated queries at the label channels"),
    ],
  },
  swiglu: {
    symbol: "ds_model_swiglu",
    threads: MODEL_ROW_THREADS,
    doc: "act[m][i] = silu(gu[m][i]) * gu[m][INTERMEDIATE + i] from the fused gate/up projection.",
    grid: "(rows, rowChunks(INTERMEDIATE), 1)",
    args: [
      ptr("gu", "const float* ", "[rows][2 * INTERMEDIATE] gate then up"),
      ptr("act", "u16* ", "[rows][INTERMEDIATE] activation, model dtype"),
    ],
  },
  channel_stats: {
    symbol: "ds_model_channel_stats",
    threads: MODEL_ROW_THREADS,
    doc: "Adds one layer's |q|, |k| and |q k| calibration sums of the rows (float64).",
    grid: "(ceil(NUM_Q_HEADS * HEAD_DIM / threads), 1, 1)",
    args: [
      ptr("q", "const u16* ", "[rows][NUM_Q_HEADS][HEAD_DIM] queries after RoPE"),
      ptr("k", "const u16* ", "[rows][NUM_KV_HEADS][HEAD_DIM] keys after RoPE"),
      arg("rows", "i32", "int ", "rows to add"),
      ptr("stat_q", "double* ", "[NUM_Q_HEADS][HEAD_DIM] sum |q|"),
      ptr("stat_k", "double* ", "[NUM_KV_HEADS][HEAD_DIM] sum |k|"),
      ptr("stat_qk", "double* ", "[NUM_Q_HEADS][HEAD_DIM] sum |q k|"),
    ],
  },
  choose_tokens: {
    symbol: "ds_model_choose_tokens",
    threads: TOKEN_CHOICE_THREADS,
    doc:
      "Chooses each sequence's next token on the device: greedy (argmax, lowest index on ties) " +
      "when its temperature is 0, else temperature + top-p with its uniform number (the rule of " +
      "chooseToken in src/decoding/sampling.ts).",
    grid: "(batch, 1, 1)",
    args: [
      ptr("logits", "const float* ", "[batch][vocab] logits"),
      arg("vocab", "i32", "int ", "vocabulary size"),
      ptr("temperature", "const float* ", "[batch] temperature; 0 = greedy"),
      ptr("top_p", "const float* ", "[batch] nucleus mass, in (0, 1]"),
      ptr("uniform", "const float* ", "[batch] uniform number in [0, 1) of each sequence"),
      ptr("probs", "float* ", "[batch][vocab] scratch: probabilities relative to the maximum"),
      ptr("tokens", "int* ", "[batch] chosen token ids"),
    ],
  },
  gather_rows: {
    symbol: "ds_model_gather_rows",
    threads: MODEL_ROW_THREADS,
    doc: "dst[i] = src[rows[i]] for rows of HIDDEN floats (the prompts' last rows, for logits).",
    grid: "(count, 1, 1)",
    args: [
      ptr("src", "const float* ", "[*][HIDDEN] residual stream"),
      ptr("rows", "const int* ", "[count] source row of each destination row"),
      ptr("dst", "float* ", "[count][HIDDEN] gathered rows"),
    ],
  },
  linear: {
    symbol: "ds_model_linear",
    threads: GEMM_THREADS,
    doc: "y[m][n] (+)= x[m][k] . w[n][k]^T with fp32 accumulation: what Cublas.linear computes, " +
      'without cuBLAS (the decoder\'s `gemm: "builtin"`).',
    grid: "(ceil(n / GEMM_TILE), ceil(m / GEMM_TILE), 1)",
    args: gemmArgs("rows", "reduction length"),
  },
  decode_linear: {
    symbol: "ds_model_decode_linear",
    threads: DECODE_GEMM_WARPS * 32,
    doc: "y[m][n] (+)= x[m][k] . w[n][k]^T for m <= DECODE_GEMM_MAX_ROWS, fp32 accumulation on " +
      "tensor cores, k a multiple of 8, x and w 16-byte aligned: the decoder's projections at " +
      "decode.",
    grid: "(ceil(n / DECODE_GEMM_TILE_N), 1, 1)",
    args: gemmArgs("rows, 1..DECODE_GEMM_MAX_ROWS", "reduction length, a multiple of 8"),
  },
} as const satisfies Record<string, FamilyKernel>;

export const UTIL_KERNELS = {
  fill_normal: {
    symbol: "ds_util_fill_normal_{dtype}",
    threads: 256,
    doc: "out[i] = scale * N(0, 1) (Box-Muller on counter hashes), stored as the KV dtype.",
    grid: "(min(4096, ceil(n / 256)), 1, 1)",
    args: [
      ptr("out", "u16* ", "[n] output"),
      arg("n", "u64", "u64 ", "elements"),
      arg("seed", "u32", "u32 ", "stream of random numbers"),
      arg("scale", "f32", "float ", "standard deviation"),
    ],
  },
  fill_labels: {
    symbol: "ds_util_fill_labels_{dtype}",
    threads: 256,
    doc: "Random label codes and the meta words per-row quantization of normal channel values " +
      "gives: a row range in [3.6, 4.6) (32 normals span about 4.1), scale = range / levels, " +
      "min about -range / 2.",
    grid: "(4096, 1, 1)",
    args: [
      ptr("codes", "u32* ", "[n_codes] label code words"),
      arg("n_codes", "u64", "u64 ", "code words"),
      ptr("meta", "u32* ", "[n_meta] scale | min << 16"),
      arg("n_meta", "u64", "u64 ", "meta words"),
      arg("seed", "u32", "u32 ", "stream of random numbers"),
      arg("levels", "u32", "u32 ", "the highest code, 2^bits - 1"),
    ],
  },
} as const satisfies Record<string, FamilyKernel>;

export type ModelKernelId = keyof typeof MODEL_KERNELS;
export type UtilKernelId = keyof typeof UTIL_KERNELS;

type CamelCase<S extends string> = S extends `${infer H}_${infer T}`
  ? `${H}${Capitalize<CamelCase<T>>}`
  : S;

/** The typed arguments of a family kernel: camelCase field per argument, bigint for pointers. */
export type ArgsOf<K extends FamilyKernel> = {
  readonly [A in K["args"][number] as CamelCase<A["name"]>]: A["kind"] extends "ptr" | "u64"
    ? bigint
    : number;
};

/** The kernel's exported symbol for a KV dtype. */
export const familySymbol = (k: FamilyKernel, dtype: "fp16" | "bf16"): string =>
  k.symbol.replace("{dtype}", dtype);
