/**
 * The CPU reference of Double Sparsity decode attention in float64: label quantization, a paged
 * KV and label cache, scoring, top-k and attention. Pure; runs under Deno and Node.
 *
 * @module
 */
export * from "./attention.ts";
export * from "./labels.ts";
export * from "./paged_cache.ts";
export { PageTable } from "../util/page_table.ts";
