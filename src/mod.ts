/**
 * double-sparsity: a TypeScript DSL for Double Sparsity decode-attention variants, the CUDA code
 * generator, the CPU reference and the formats shared with the paper's authors and SGLang. This
 * root entry point re-exports `./dsl`, `./codegen`, `./reference` and `./interop`.
 *
 * @module
 */
export * from "./dsl/mod.ts";
export * from "./codegen/mod.ts";
export * from "./reference/mod.ts";
export * from "./interop/mod.ts";
export { VERSION } from "./version.ts";
