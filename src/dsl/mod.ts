/**
 * The attention-variant DSL: `defineAttention` validates a description of a Double Sparsity
 * decode-attention variant; the cache layout the kernels, the CPU reference and the runtime share.
 * Pure; runs under Deno and Node.
 *
 * @module
 */
export * from "./spec.ts";
export * from "./layout.ts";
