// The bundled tiny-code-llama (4 query heads, 2 kv heads, head dim 128), in the configurations of
// the accuracy table in docs/method.md.
import { defineAttention } from "../../src/dsl/mod.ts";

const shape = { headDim: 128, numQHeads: 4, numKvHeads: 2, kvDtype: "fp16", pageSize: 16 } as const;
const budget = { ratio: 1 / 16, min: 16 };

export default [
  // Per query head, 16 channels at 16 bits.
  defineAttention({ ...shape, labels: { channels: 16, bits: 16 }, selection: "head", budget }),
  // Per query head, 32 channels at 4 bits (same 256 bits per label row as above).
  defineAttention({ ...shape, labels: { channels: 32, bits: 4 }, selection: "head", budget }),
  // One token set per kv head, scores summed over the group.
  defineAttention({ ...shape, labels: { channels: 16, bits: 16 }, selection: "group", budget }),
];
