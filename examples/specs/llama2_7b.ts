// Llama-2-7B attention: 32 heads (MHA), head dim 128, fp16 K/V, 8 label channels at 16 bits
// (the paper's 1/16 channel setting).
import { defineAttention } from "../../src/dsl/mod.ts";

export default defineAttention({
  headDim: 128,
  numQHeads: 32,
  numKvHeads: 32,
  kvDtype: "fp16",
  pageSize: 16,
  labels: { channels: 8, bits: 16 },
  selection: "head",
  budget: { ratio: 1 / 16, min: 16 },
});
