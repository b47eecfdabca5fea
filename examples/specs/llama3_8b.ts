// Llama-3-8B attention: 32 query heads, 8 kv heads (GQA group 4), head dim 128, fp16 K/V.
// Labels at 128 bits per token per kv head.
import { defineAttention } from "../../src/dsl/mod.ts";

const shape = {
  headDim: 128,
  numQHeads: 32,
  numKvHeads: 8,
  kvDtype: "fp16",
  pageSize: 16,
} as const;
const budget = { ratio: 1 / 16, min: 16 };

export default [
  // Group selection: one token set per kv head, K/V read once per group.
  defineAttention({ ...shape, labels: { channels: 16, bits: 8 }, selection: "group", budget }),
  // Per-head selection over per-kv-head labels: each query head picks its own tokens.
  defineAttention({
    ...shape,
    labels: { channels: 16, bits: 8, heads: "kv" },
    selection: "head",
    budget,
  }),
];
