/**
 * The GPU decoder's workspace bytes (src/decoding/gpu_decoder_layout.ts) against the closed form
 * the README's "Device memory of the GPU decoder" paragraph gives, so the two cannot drift apart.
 */
import assert from "node:assert/strict";
import { workspaceBytes } from "../src/decoding/gpu_decoder_layout.ts";
import type { ModelConfig } from "../src/checkpoint/config.ts";
import { LLAMA3_8B, LLAMA3_8B_GROUP_SPEC } from "../bench/llama3_shape.ts";
import { GpuDecoder } from "../src/decoding/gpu_decoder.ts";
import { ArgumentError } from "../src/util/errors.ts";

/** The README's formula, written from its text. */
function readmeFormula(c: ModelConfig, chunkRows: number, batch: number, cublas: boolean): number {
  const rows = Math.max(chunkRows, batch);
  const hidden = c.hiddenSize, ffn = c.intermediateSize, d = c.headDim;
  const qkvWidth = (c.numHeads + 2 * c.numKvHeads) * d;
  return rows *
      (4 * hidden + 2 * Math.max(hidden, ffn) + 6 * qkvWidth + 2 * c.numHeads * d + 10 * ffn + 12) +
    batch * (8 * c.vocabSize + 4 * hidden + 20) + (cublas ? 32 * 2 ** 20 : 0);
}

Deno.test("workspaceBytes: the README's closed form, with and without cuBLAS", () => {
  const small: ModelConfig = {
    ...LLAMA3_8B,
    hiddenSize: 64,
    intermediateSize: 32, // narrower than hidden: max(hidden, ffn) takes hidden
    numHeads: 4,
    numKvHeads: 2,
    headDim: 16,
    vocabSize: 256,
  };
  for (const c of [LLAMA3_8B, small]) {
    for (const [rows, batch] of [[8192, 1], [4096, 8], [2, 8]]) {
      assert.equal(workspaceBytes(c, rows, batch), readmeFormula(c, rows, batch, true));
      assert.equal(workspaceBytes(c, rows, batch, "builtin"), readmeFormula(c, rows, batch, false));
    }
  }
});

Deno.test("GpuDecoder.create refuses a spec of another shape before touching the GPU", async () => {
  // No CUDA context and no weights: the shape check comes first.
  const config = { ...LLAMA3_8B, numKvHeads: 4 };
  await assert.rejects(
    GpuDecoder.create({} as never, { config, seed: 1, scale: 1 }, {
      batch: 1,
      maxContext: 64,
      spec: LLAMA3_8B_GROUP_SPEC,
    }),
    (e: unknown) =>
      e instanceof ArgumentError &&
      e.message ===
        `GpuDecoder.create: options.spec: got "${LLAMA3_8B_GROUP_SPEC.variant} (d=128, 32/8 ` +
          `heads)"; allowed: a spec of the model's shape: d=128, 32/4 heads`,
  );
});
