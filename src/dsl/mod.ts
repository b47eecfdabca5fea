/**
 * The attention-variant DSL: `defineAttention` validates a description of a Double Sparsity
 * decode-attention variant; the cache layout the kernels, the CPU reference and the runtime share.
 * Pure; runs under Deno and Node. Also the project's error family (`DsError` and its kinds), which
 * every entry point throws for bad input.
 *
 * @module
 */
export * from "./spec.ts";
export * from "./layout.ts";
export * from "../util/errors.ts";
