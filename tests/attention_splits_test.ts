import assert from "node:assert/strict";
import { attentionSplits, sparseAttentionSplits } from "../src/runtime/decode_plan.ts";

// An H100: 132 multiprocessors, 3 resident attention blocks each (168 registers x 128 threads),
// two waves: the attention goal is 792 blocks.
const GOAL = 2 * 3 * 132;

Deno.test("sparse splits: the counts measured best at batch 1-4 (docs/perf-notes.md)", () => {
  // [sequences x head blocks, selected tokens per head, splits]
  const cases: [number, number, number][] = [
    [8, 2048, 16], // Llama-3-8B group selection (8 head blocks), b1 / 32K: 16 of 128 tokens
    [8, 8192, 32], // b1 / 128K: 32 (the old rule took 49 of 168 tokens)
    [32, 8192, 12], // Llama-2-7B head selection (32 head blocks), b1 / 128K: 12 (was 37)
    [32, 2048, 12], // b1 / 32K
    [64, 2048, 6], // group at batch 8 keeps its splits
    [256, 2048, 3], // MHA at batch 8 keeps its splits
  ];
  for (const [blocksPerSplit, budget, want] of cases) {
    assert.equal(
      sparseAttentionSplits(GOAL, blocksPerSplit, budget),
      want,
      `${blocksPerSplit} blocks a split, ${budget} tokens`,
    );
  }
});

Deno.test("sparse splits: at most 32, and no more than splits of 128 tokens would make", () => {
  for (const blocksPerSplit of [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024]) {
    for (const budget of [1, 16, 100, 127, 128, 129, 1000, 2048, 4096, 8192, 16384, 65536]) {
      const s = sparseAttentionSplits(GOAL, blocksPerSplit, budget);
      assert.ok(s >= 1 && s <= 32, `${blocksPerSplit} x ${budget}: ${s} splits`);
      assert.ok(s <= Math.max(1, Math.ceil(budget / 128)), `${blocksPerSplit} x ${budget}: ${s}`);
    }
  }
});

Deno.test("attention splits: the fullest last wave, fewer splits on ties", () => {
  // 396 blocks a wave. Within the wanted count (25 splits of 32 blocks), 12 fill 384 / 396 and 24
  // fill 768 / 792, no better; beyond it only a nearly full wave counts: 37 x 32 = 1184 of 1188.
  assert.equal(attentionSplits(GOAL, 32, 1 << 20, 1, 32), 12);
  assert.equal(attentionSplits(GOAL, 32, 1 << 20, 1), 37);
  // Never more splits than tokens allow, nor than `most`.
  assert.equal(attentionSplits(GOAL, 100, 300, 100), 3);
  assert.equal(attentionSplits(GOAL, 32, 1 << 20, 1, 7), 7);
  // A split more must fill the last wave by FILL_MARGIN (0.02) more: 2 blocks of 396 do not.
  assert.equal(attentionSplits(GOAL, 1, 300, 256), 1);
});
