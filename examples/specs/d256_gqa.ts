// A head dimension of 256 (e.g. Gemma-style): 8 query heads, 4 kv heads, 8-bit labels. Head
// dimension 256 takes the CUDA-core attention body (the tensor-core one covers 64 and 128).
import { defineAttention } from "../../src/dsl/mod.ts";

export default defineAttention({
  headDim: 256,
  numQHeads: 8,
  numKvHeads: 4,
  kvDtype: "bf16",
  pageSize: 32,
  labels: { channels: 16, bits: 8 },
  selection: "head",
  budget: { ratio: 1 / 16, min: 64 },
});
