/**
 * Formats and settings of other Double Sparsity implementations: the channel-config file of the
 * paper's authors and SGLang, and SGLang's Double Sparsity flags. Pure; runs under Deno and Node.
 *
 * @module
 */
export * from "./channel_config.ts";
export * from "./sglang.ts";
