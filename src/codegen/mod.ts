/**
 * The code generator: kernel descriptions, the CUDA sources rendered from the Handlebars
 * templates, typed launcher modules and the writer of a variant's directory. Pure apart from
 * reading the templates and writing where asked; runs under Deno and Node.
 *
 * @module
 */
export * from "./generate.ts";
export * from "./kernels.ts";
export * from "./launchers.ts";
export * from "./prefill_wgmma_variants.ts";
export * from "./render.ts";
