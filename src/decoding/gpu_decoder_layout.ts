/**
 * The GPU decoder's pure layout facts, apart from its FFI code (src/decoding/gpu_decoder.ts): the
 * dense stand-in spec, where each layer's K/V live under offload, how many bytes its workspaces
 * take, and the builtin GEMM's grid. No FFI: tested on the CPU.
 */
import { type AttentionSpec, defineAttention } from "../dsl/spec.ts";
import { DECODE_GEMM_MAX_ROWS, DECODE_GEMM_TILE_N, GEMM_TILE } from "../codegen/families.ts";
import type { ModelConfig } from "../checkpoint/config.ts";
import type { OffloadOptions } from "../runtime/offload_plan.ts";
import type { GemmBackend } from "../runtime/gemm_choice.ts";

/** A dense stand-in variant for a model shape: its dense kernel and caches serve dense decoding. */
export function denseSpecFor(config: ModelConfig, dtype: "fp16" | "bf16" = "fp16"): AttentionSpec {
  return defineAttention({
    headDim: config.headDim,
    numQHeads: config.numHeads,
    numKvHeads: config.numKvHeads,
    kvDtype: dtype,
    pageSize: 16,
    labels: { channels: 2, bits: 16 },
    selection: "head",
    budget: { ratio: 1 },
  });
}

/**
 * Where each layer's K/V live under an offload mode: "selected" puts the sparse layers in host
 * memory and keeps the spec's dense layers on the device (they read every token each step, so
 * reading them over PCIe would cost a full-KV transfer); "full-kv" puts every layer in host
 * memory.
 */
export function offloadPlacement(
  o: OffloadOptions,
  spec: AttentionSpec,
  c: ModelConfig,
): ("device" | "host")[] {
  return Array.from(
    { length: c.numLayers },
    (_, l) => o.mode === "full-kv" || !spec.denseLayers.includes(l) ? "host" : "device",
  );
}

/**
 * cuBLAS workspace: fixed, so cuBLAS never allocates while a graph is being captured (none with
 * the builtin GEMM).
 */
export const CUBLAS_WORKSPACE_BYTES = 32 << 20;
/** Prompt rows of one prefill chunk when GpuDecoderOptions.maxPrefillRows is unset. */
export const DEFAULT_PREFILL_ROWS = 4096;

/**
 * Device bytes of the decoder's activations and workspaces for `rows` prefill rows and a batch:
 * what the decoder adds to the weights and the caches (the decode plan's selection workspaces,
 * which scale with maxContext like the caches, are not included).
 */
export function workspaceBytes(
  c: ModelConfig,
  rows: number,
  batch: number,
  gemm: GemmBackend = "cublas",
): number {
  const r = Math.max(rows, batch);
  const qkvWidth = (c.numHeads + 2 * c.numKvHeads) * c.headDim;
  const perRow = 4 * c.hiddenSize + // h
    2 * Math.max(c.hiddenSize, c.intermediateSize) + // x
    4 * qkvWidth + // qkv
    2 * (c.numHeads + 2 * c.numKvHeads) * c.headDim + // q, k, v
    2 * c.numHeads * c.headDim + // attn
    4 * 2 * c.intermediateSize + // gu
    2 * c.intermediateSize + // act
    3 * 4; // tokens, rowSeq, rowPos
  // Per sequence: logits, token-choice probabilities, last hidden row, last-row index, the
  // choice's three inputs and the chosen id.
  const perSeq = 2 * 4 * c.vocabSize + 4 * c.hiddenSize + 4 + 3 * 4 + 4;
  return r * perRow + batch * perSeq + (gemm === "cublas" ? CUBLAS_WORKSPACE_BYTES : 0);
}

/**
 * Whether the decode GEMM takes y (+)= x . w^T: at most DECODE_GEMM_MAX_ROWS rows, k a multiple of
 * 8 and both operands 16-byte aligned (its whole 16-byte loads).
 */
export function fitsDecodeGemm(m: number, k: number, x: bigint, w: bigint): boolean {
  return m <= DECODE_GEMM_MAX_ROWS && k % 8 === 0 && x % 16n === 0n && w % 16n === 0n;
}

/** The decode GEMM's grid for y[m][n] (m <= DECODE_GEMM_MAX_ROWS): one block per 16 outputs. */
export function decodeLinearGrid(n: number): [number, number, number] {
  return [Math.ceil(n / DECODE_GEMM_TILE_N), 1, 1];
}

/** The builtin `linear` kernel's grid for y[m][n]: one block per GEMM_TILE x GEMM_TILE tile. */
export function linearGrid(m: number, n: number): [number, number, number] {
  return [Math.ceil(n / GEMM_TILE), Math.ceil(m / GEMM_TILE), 1];
}

/** The grid of either family GEMM kernel for y[m][n]. */
export function gemmGrid(
  kernel: "linear" | "decode_linear",
  m: number,
  n: number,
): [number, number, number] {
  return kernel === "linear" ? linearGrid(m, n) : decodeLinearGrid(n);
}
