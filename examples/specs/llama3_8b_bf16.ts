// Llama-3-8B attention with a bf16 KV cache, 32 channels at 4 bits per query head.
import { defineAttention } from "../../src/dsl/mod.ts";

export default defineAttention({
  headDim: 128,
  numQHeads: 32,
  numKvHeads: 8,
  kvDtype: "bf16",
  pageSize: 16,
  labels: { channels: 32, bits: 4 },
  selection: "head",
  budget: { ratio: 1 / 16, min: 16, max: 4096 },
  denseThreshold: 4096,
  denseLayers: [0, 1],
});
