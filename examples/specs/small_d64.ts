// A small-head model: head dim 64, 16 query heads, 4 kv heads, 64-token pages, 4-bit labels.
import { defineAttention } from "../../src/dsl/mod.ts";

export default defineAttention({
  headDim: 64,
  numQHeads: 16,
  numKvHeads: 4,
  kvDtype: "fp16",
  pageSize: 64,
  labels: { channels: 16, bits: 4 },
  selection: "group",
  budget: { tokens: 256 },
  denseThreshold: 1024,
});
