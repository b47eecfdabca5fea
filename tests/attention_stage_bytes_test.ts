/**
 * The byte count each stage of the timed Double Sparsity step is set against
 * (src/runtime/attention_timing.ts stageBytes): hand-computed for the Llama-3-8B group variant of
 * the benchmark, and, for every example spec, adding up to the step's byte model plus the split
 * partials.
 */
import assert from "node:assert/strict";
import { budgetFor, sparseStepBytes } from "../src/dsl/spec.ts";
import { stageBytes } from "../src/runtime/attention_timing.ts";
import { loadSpecs } from "../src/cli/specs.ts";
import { LLAMA3_8B_GROUP_SPEC_NO_DENSE } from "../bench/llama3_shape.ts";

Deno.test("stage bytes: Llama-3-8B group r16b8 at batch 8 / 32K, by hand", () => {
  const spec = LLAMA3_8B_GROUP_SPEC_NO_DENSE;
  const batch = 8, context = 32768, splits = 4;
  const stages = stageBytes(spec, batch, context, splits);
  assert.deepEqual(stages.map((s) => s.stage), [
    "score",
    "select + resolve",
    "attend (sparse + merge)",
  ]);
  // per token: 8 label heads x (16 one-byte codes + 4 bytes of scale/min) + 8 selection heads x
  // one 2-byte key written
  assert.equal(stages[0].bytes, batch * context * (8 * (16 + 4) + 8 * 2));
  // the 2-byte keys read back
  assert.equal(stages[1].bytes, batch * context * 8 * 2);
  // k = 2048 rows of K and V (256 bytes each) per selection head, plus per query head and split
  // an fp32 output row and log-sum-exp written and read
  assert.equal(stages[2].bytes, batch * 2048 * 8 * 2 * 256 + batch * 32 * splits * 129 * 4 * 2);
});

Deno.test("stage bytes: the stages add up to the step's byte model plus the split partials", async () => {
  const specs = await loadSpecs();
  assert.ok(specs.length >= 5, "the example specs load");
  for (const spec of specs) {
    for (const [batch, context, splits] of [[1, 4096, 1], [8, 32768, 6], [32, 131072, 2]]) {
      const stages = stageBytes(spec, batch, context, splits);
      const partials = batch * spec.numQHeads * splits * (spec.headDim + 1) * 8;
      const total = stages.reduce((sum, s) => sum + s.bytes, 0);
      const what = `${spec.variant} b${batch} L${context} s${splits}`;
      assert.equal(total, sparseStepBytes(spec, context) * batch + partials, what);
      const k = budgetFor(spec.budget, context);
      assert.equal(stages[2].bytes, batch * k * spec.bytes.selectedRowBytes + partials, what);
      assert.ok(stages.every((s) => s.bytes > 0), what);
    }
  }
});
