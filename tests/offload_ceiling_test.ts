import assert from "node:assert/strict";
import { computeCeilings, ON_GPU_METHOD } from "../bench/offload_ceiling.ts";

Deno.test("offload ceiling: the selected bytes' bound over the on-GPU step, per shape", () => {
  const rows = [
    { batch: 1, context: 32768, method: "offload", stepMs: 13, selectedBytesPerStep: 0.269e9 },
    { batch: 1, context: 32768, method: ON_GPU_METHOD, stepMs: 7.27, selectedBytesPerStep: 0 },
    { batch: 4, context: 131072, method: "offload", stepMs: 96, selectedBytesPerStep: 4.3e9 },
    { batch: 1, context: 65536, method: ON_GPU_METHOD, stepMs: 7.48, selectedBytesPerStep: 0 },
  ];
  const ceilings = computeCeilings(rows, 55);
  // 4 x 128K has no on-GPU row and 1 x 64K no offloaded row: one ceiling only.
  assert.equal(ceilings.length, 1);
  const [c] = ceilings;
  assert.equal(c.batch, 1);
  assert.equal(c.context, 32768);
  assert.ok(Math.abs(c.boundMs - 0.269e9 / 55e6) < 1e-12);
  assert.ok(Math.abs(c.share - 0.269e9 / 55e6 / 7.27) < 1e-12);
  assert.ok(c.share > 0.67 && c.share < 0.68);
});
