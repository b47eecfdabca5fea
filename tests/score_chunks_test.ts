import assert from "node:assert/strict";
import { SCORE_KEYS_PER_VECTOR, scoreKeyStride } from "../src/dsl/layout.ts";
import {
  chunkTokens,
  MAX_PACKED_SCORE_TOKENS_PER_BLOCK,
  scoreChunkTokens,
} from "../src/runtime/decode_plan.ts";
import { tuningFor } from "../src/codegen/kernels.ts";
import { defineAttention } from "../src/dsl/spec.ts";

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

Deno.test("score blocks of several heads: 16-bit counters never see 65536 tokens", () => {
  // One block per (sequence, label head) and the whole row in one chunk: capped below 2^16.
  assert.equal(scoreChunkTokens(1024, 131072, 528, 4), MAX_PACKED_SCORE_TOKENS_PER_BLOCK);
  assert.ok(
    MAX_PACKED_SCORE_TOKENS_PER_BLOCK < 65536 && MAX_PACKED_SCORE_TOKENS_PER_BLOCK % 256 === 0,
  );
  assert.equal(scoreChunkTokens(1024, 131072, 528, 1), 131072);
  assert.equal(scoreChunkTokens(64, 131072, 528, 4), chunkTokens(64, 131072, 528, 1024));
  // The floor counts (token, head) scores: 256 tokens of 4 heads at batch 1 (8 label heads, 32K).
  assert.equal(scoreChunkTokens(8, 32768, 528, 4), 512);
  assert.equal(scoreChunkTokens(8, 32768, 528, 1), 1024);
});

Deno.test("score heads per block: the query heads sharing a narrow kv-head label row, at most 4", () => {
  const heads = (
    q: number,
    kv: number,
    labels: "kv" | "query",
    selection: "head" | "group",
    channels = 16,
    bits: 2 | 4 | 8 | 16 = 8,
  ) =>
    tuningFor(defineAttention({
      headDim: 128,
      numQHeads: q,
      numKvHeads: kv,
      kvDtype: "fp16",
      pageSize: 16,
      labels: { channels, bits, heads: labels },
      selection,
      budget: { ratio: 1 / 16 },
    })).scoreHeadsPerBlock;
  assert.equal(heads(32, 8, "kv", "head"), 4);
  assert.equal(heads(4, 2, "kv", "head"), 2);
  assert.equal(heads(64, 8, "kv", "head"), 4); // group of 8: two blocks a label row
  assert.equal(heads(12, 4, "kv", "head"), 1); // group of 3
  assert.equal(heads(32, 8, "query", "head"), 1);
  assert.equal(heads(32, 8, "kv", "group"), 1);
  // Rows wider than 16 channels or 16 bytes would spill with several heads.
  assert.equal(heads(32, 8, "kv", "head", 32, 4), 1);
  assert.equal(heads(32, 8, "kv", "head", 16, 16), 1);
  assert.equal(heads(32, 8, "kv", "head", 16, 2), 4);
});
