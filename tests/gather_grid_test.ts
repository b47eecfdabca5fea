import assert from "node:assert/strict";
import {
  gatherBlockCap,
  gatherBlocksFromEnv,
  gatherChunks,
  gatherGrid,
} from "../src/runtime/gather_grid.ts";
import { InputError } from "../src/util/errors.ts";

Deno.test("gatherGrid: chunk lanes capped by the block budget, at least one, none past the chunks", () => {
  // 8 heads, 4096-row lists in 64-row chunks = 64 chunks per list.
  assert.deepEqual(gatherGrid(8, 4096, 64, 1, 264), [8, 33, 1]);
  assert.deepEqual(gatherGrid(8, 4096, 64, 4, 264), [8, 8, 4]);
  assert.deepEqual(gatherGrid(8, 4096, 64, 4, 0), [8, 64, 4]); // uncapped
  assert.deepEqual(gatherGrid(8, 100, 64, 1, 264), [8, 2, 1]); // fewer chunks than the cap
  assert.deepEqual(gatherGrid(32, 4096, 64, 16, 264), [32, 1, 16]); // cap below heads x batch
  assert.deepEqual(gatherGrid(8, 0, 64, 1, 264), [8, 1, 1]);
});

Deno.test("gatherBlocksFromEnv: unset gives the fallback, bad values name the variable", () => {
  const saved = Deno.env.get("DS_GATHER_BLOCKS");
  try {
    Deno.env.delete("DS_GATHER_BLOCKS");
    assert.equal(gatherBlocksFromEnv(264), 264);
    Deno.env.set("DS_GATHER_BLOCKS", "0");
    assert.equal(gatherBlocksFromEnv(264), 0);
    Deno.env.set("DS_GATHER_BLOCKS", "96");
    assert.equal(gatherBlocksFromEnv(264), 96);
    for (const bad of ["-1", "1.5", "x", "1e3"]) {
      Deno.env.set("DS_GATHER_BLOCKS", bad);
      assert.throws(
        () => gatherBlocksFromEnv(264),
        (e: unknown) =>
          e instanceof InputError && e.message.includes("DS_GATHER_BLOCKS") &&
          e.message.includes(JSON.stringify(bad)),
      );
    }
  } finally {
    if (saved === undefined) Deno.env.delete("DS_GATHER_BLOCKS");
    else Deno.env.set("DS_GATHER_BLOCKS", saved);
  }
});

Deno.test("gatherBlockCap: a quarter of the SMs, one an SM for the exact gather behind a prefetch of 3/4 or more, up to 8 chunks a block, DS_GATHER_BLOCKS over both", () => {
  const saved = Deno.env.get("DS_GATHER_BLOCKS");
  try {
    Deno.env.delete("DS_GATHER_BLOCKS");
    // The Llama-3-8B bench shapes: 8 selection heads, budget 1/16, 64 rows a chunk.
    const b1x128K = gatherChunks(8, 8192, 64, 1);
    const b4x32K = gatherChunks(8, 2048, 64, 4);
    const b1x256K = gatherChunks(8, 16384, 64, 1);
    const b4x128K = gatherChunks(8, 8192, 64, 4);
    assert.deepEqual([b1x128K, b4x32K, b1x256K, b4x128K], [1024, 1024, 2048, 4096]);
    assert.equal(gatherBlockCap(132, b1x128K, null), 33);
    assert.equal(gatherBlockCap(132, b1x128K, 1), 132);
    assert.equal(gatherBlockCap(132, b4x32K, 1), 132);
    assert.equal(gatherBlockCap(132, b1x128K, 0.75), 132);
    assert.equal(gatherBlockCap(132, b1x128K, 0.5), 33);
    assert.equal(gatherBlockCap(132, 8 * 132, 1), 132);
    assert.equal(gatherBlockCap(132, 8 * 132 + 1, 1), 33);
    assert.equal(gatherBlockCap(132, b1x256K, 1), 33);
    assert.equal(gatherBlockCap(132, b4x128K, 1), 33);
    assert.equal(gatherBlockCap(78, 1, null), 20);
    // A partial last chunk is a chunk.
    assert.equal(gatherChunks(8, 65, 64, 1), 16);
    Deno.env.set("DS_GATHER_BLOCKS", "16");
    assert.equal(gatherBlockCap(132, b1x128K, null), 16);
    assert.equal(gatherBlockCap(132, b1x128K, 1), 16);
  } finally {
    if (saved === undefined) Deno.env.delete("DS_GATHER_BLOCKS");
    else Deno.env.set("DS_GATHER_BLOCKS", saved);
  }
});
