import assert from "node:assert/strict";
import { prefillChunks, prefillFlops, prefillTiles } from "../src/runtime/prefill_tiles.ts";

Deno.test("prefillTiles: segments split into tiles, longest-reaching first, rows covered once", () => {
  const segments = [
    { row0: 0, seq: 0, pos0: 40, rows: 150 }, // a chunk that starts mid-sequence
    { row0: 150, seq: 2, pos0: 0, rows: 1 },
    { row0: 151, seq: 1, pos0: 7, rows: 64 },
  ];
  const t = prefillTiles(segments, 64);
  const tiles = Array.from(
    { length: t.length / 4 },
    (_, i) => Array.from(t.subarray(4 * i, 4 * i + 4)),
  );
  assert.deepEqual(tiles, [
    [128, 0, 168, 22], // positions 168..189: reaches furthest
    [64, 0, 104, 64],
    [0, 0, 40, 64],
    [151, 1, 7, 64],
    [150, 2, 0, 1],
  ]);
  // Every chunk row in exactly one tile, with the position its segment gives it.
  const covered = new Map<number, [number, number]>();
  for (const [row0, seq, pos0, rows] of tiles) {
    for (let i = 0; i < rows; i++) {
      assert.ok(!covered.has(row0 + i), `row ${row0 + i} twice`);
      covered.set(row0 + i, [seq, pos0 + i]);
    }
  }
  assert.equal(covered.size, 215);
  assert.deepEqual(covered.get(150), [2, 0]);
  assert.deepEqual(covered.get(151 + 63), [1, 70]);
});

Deno.test("prefillTiles: bad inputs are refused", () => {
  assert.throws(() => prefillTiles([], 0), /qTile/);
  assert.throws(() => prefillTiles([{ row0: 0, seq: 0, pos0: -1, rows: 3 }], 16), /segment/);
});

Deno.test("prefillFlops: 4 * d * heads * (keys attended summed over rows)", () => {
  // Rows at positions 2, 3, 4 attend 3 + 4 + 5 keys.
  assert.equal(prefillFlops(Int32Array.from([0, 0, 2, 3]), 2, 8), 4 * 12 * 2 * 8);
});

Deno.test("prefillChunks: prompts fill chunks in sequence order; every token once", () => {
  assert.deepEqual(prefillChunks([5, 0, 3], 4), [
    [{ seq: 0, offset: 0, rows: 4 }],
    [{ seq: 0, offset: 4, rows: 1 }, { seq: 2, offset: 0, rows: 3 }],
  ]);
  // A long prompt spans chunks; a short one shares the chunk its predecessor leaves room in.
  const chunks = prefillChunks([10, 2], 4);
  assert.deepEqual(chunks.map((c) => c.reduce((n, p) => n + p.rows, 0)), [4, 4, 4]);
  assert.deepEqual(chunks[2], [{ seq: 0, offset: 8, rows: 2 }, { seq: 1, offset: 0, rows: 2 }]);
  assert.deepEqual(prefillChunks([0, 0], 4), []);
  assert.throws(() => prefillChunks([3], 0), /maxRows/);
});
