import assert from "node:assert/strict";
import { SCORE_KEYS_PER_VECTOR, scoreKeyStride } from "../src/dsl/layout.ts";
import { chunkTokens } from "../src/runtime/decode_plan.ts";

/** Blocks of a score/select launch: pairs x ceil(keyStride / tokens per block). */
const blocks = (pairs: number, keyStride: number, floor: number) =>
  pairs * Math.ceil(keyStride / chunkTokens(pairs, keyStride, 528, floor));

Deno.test("score chunks: whole chunks per selection head, never past one wave of the target", () => {
  // Llama-3-8B group (8 selection heads) and MHA / per-head (32) at batch 1 and 8, H100 target 528.
  for (const pairs of [8, 64, 256]) {
    for (const keyStride of [32768, 131072, 32768 + 64]) {
      assert.ok(blocks(pairs, keyStride, 1024) <= 528, `${pairs} pairs, ${keyStride} tokens`);
    }
  }
  // 256 pairs at 32K: two chunks of 16K (the old sizing made three, the last of 512 tokens).
  assert.equal(chunkTokens(256, 32768, 528, 1024), 16384);
  assert.equal(chunkTokens(64, 131072, 528, 1024), 16384);
  // The floor wins at batch 1 (32 chunks of 1024, not 66 of 512); one chunk past the target.
  assert.equal(chunkTokens(8, 32768, 528, 1024), 1024);
  assert.equal(chunkTokens(8, 32768, 528, 2048), 2048);
  assert.equal(chunkTokens(1024, 32768, 528, 1024), 32768);
  // Never more than the key row; granules of 256.
  assert.equal(chunkTokens(1, 300, 528, 1024), 300);
  assert.equal(chunkTokens(96, 32832, 528, 1024) % 256, 0);
});

Deno.test("score keys: rows and select chunks start on 16-byte key vectors", () => {
  // select loads 8 keys at a time from chunk * tokens_per_block: both must be whole vectors.
  assert.equal(SCORE_KEYS_PER_VECTOR, 8);
  for (const maxTokens of [1, 7, 8, 9, 300, 4099, 32768, 32771]) {
    const stride = scoreKeyStride(maxTokens);
    assert.ok(stride >= maxTokens && stride - maxTokens < 8, `${maxTokens} -> ${stride}`);
    assert.equal(stride % SCORE_KEYS_PER_VECTOR, 0);
    for (const pairs of [1, 8, 256, 1024]) {
      const chunk = chunkTokens(pairs, stride, 528, 2048);
      assert.equal(chunk % SCORE_KEYS_PER_VECTOR, 0, `${pairs} pairs, ${maxTokens} tokens`);
    }
  }
});
