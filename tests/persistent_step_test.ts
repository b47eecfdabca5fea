import assert from "node:assert/strict";
import {
  parsePersistentChoice,
  PERSISTENT_BLOCKS_PER_SM,
  PERSISTENT_DEFAULT,
  PERSISTENT_MAX_BATCH,
  persistentGrid,
  persistentSplits,
  persistentWanted,
} from "../src/runtime/persistent_step.ts";
import { renderKernels } from "../src/codegen/render.ts";
import { type KernelId, KERNELS } from "../src/codegen/kernels.ts";
import { loadSpecs } from "../src/cli/specs.ts";
import { UsageError } from "../src/util/errors.ts";

Deno.test("persistent: DS_PERSISTENT spellings; anything else names the source and the choices", () => {
  assert.equal(PERSISTENT_DEFAULT, "off"); // measured slower than the chain (docs/perf-notes.md)
  assert.equal(parsePersistentChoice(undefined, "$DS_PERSISTENT"), "off");
  assert.equal(parsePersistentChoice(" ", "$DS_PERSISTENT"), "off");
  assert.equal(parsePersistentChoice("1", "$DS_PERSISTENT"), "on");
  assert.equal(parsePersistentChoice("ON", "$DS_PERSISTENT"), "on");
  assert.equal(parsePersistentChoice("0", "$DS_PERSISTENT"), "off");
  assert.equal(parsePersistentChoice("auto", "$DS_PERSISTENT"), "auto");
  assert.throws(
    () => parsePersistentChoice("yes", "$DS_PERSISTENT"),
    (e: unknown) =>
      e instanceof UsageError && /\$DS_PERSISTENT: got "yes"; allowed: auto, on, 1, off, 0/
        .test(e.message),
  );
});

Deno.test("persistent: auto up to batch 4, on at any batch, off never", () => {
  assert.equal(PERSISTENT_MAX_BATCH, 4);
  for (const b of [1, 2, 3, 4]) assert.equal(persistentWanted("auto", b), true);
  for (const b of [5, 8, 32]) assert.equal(persistentWanted("auto", b), false);
  for (const b of [1, 8, 64]) {
    assert.equal(persistentWanted("on", b), true);
    assert.equal(persistentWanted("off", b), false);
  }
});

Deno.test("persistent: grid of resident blocks, at most two per SM; none fitting is an error", () => {
  assert.equal(PERSISTENT_BLOCKS_PER_SM, 2);
  assert.equal(persistentGrid(132, 3, "x"), 264);
  assert.equal(persistentGrid(132, 1, "x"), 132);
  assert.equal(persistentGrid(108, 2, "x"), 216);
  assert.throws(
    () => persistentGrid(132, 0, "options.persistentStep"),
    (e: unknown) =>
      e instanceof UsageError && /^options\.persistentStep: .*not one block/.test(e.message),
  );
});

Deno.test("persistent: attention splits give about one item per block, >= 64 tokens each", () => {
  // Llama-3-8B group r16b8, b1/32K: 8 head blocks, budget 2048 -> min(33, 32) splits.
  assert.equal(persistentSplits(264, 8, 1, 2048, 256), 32);
  // Llama-2-7B r8b16, b1/32K: 32 head blocks -> 8 splits (256 items).
  assert.equal(persistentSplits(264, 32, 1, 2048, 256), 8);
  // batch 4 of 32 head blocks: 128 items per split, so 2 splits.
  assert.equal(persistentSplits(264, 32, 4, 8192, 256), 2);
  // more items than blocks already with one split: one split.
  assert.equal(persistentSplits(132, 32, 8, 8192, 256), 1);
  // short budgets: at least 64 tokens a split.
  assert.equal(persistentSplits(264, 8, 1, 100, 256), 2);
  assert.equal(persistentSplits(264, 8, 1, 16, 256), 1);
  // capped by the partial buffers' split stride.
  assert.equal(persistentSplits(1000, 1, 1, 1 << 20, 256), 256);
});

/** The text of `name`'s definition in `source` (from its first line to the closing brace). */
function definition(source: string, head: string): string {
  const at = source.indexOf(head);
  assert.ok(at >= 0, `no ${head}`);
  return source.slice(at, source.indexOf("\n}\n", at) + 2);
}

Deno.test("persistent: the kernel runs the chain kernels' own stage bodies, barriers between", async () => {
  assert.equal(KERNELS.find((k) => k.id === "persistent")!.programmatic, false);
  for (const spec of await loadSpecs()) {
    const kernels = new Map(renderKernels(spec).map((k) => [k.id, k.source]));
    const persistent = kernels.get("persistent")!;
    // Each stage body is the very text the standalone kernel calls.
    const shared: [KernelId, string][] = [
      ["score", "DS_INLINE void score_block("],
      ["select", "DS_INLINE void select_block("],
      ["resolve", "DS_INLINE void radix_take("],
      ["resolve", "DS_INLINE void find_thresh_sub("],
      ["sparse", "DS_INLINE void sparse_block("],
      ["merge", "DS_INLINE void merge_element("],
    ];
    for (const [id, head] of shared) {
      assert.equal(
        definition(persistent, head),
        definition(kernels.get(id)!, head),
        `${spec.variant}: ${head} differs between ${id}.cu and persistent.cu`,
      );
    }
    const entry = persistent.slice(persistent.indexOf('extern "C" __global__'));
    for (
      const call of [
        "score_block<STEP_THREADS, 1>(",
        "select_block<STEP_THREADS>(",
        "resolve_candidates(",
        "resolve_finals(",
        "sparse_block<true>(",
        "merge_element(",
      ]
    ) assert.ok(entry.includes(call), `${spec.variant}: the kernel never calls ${call}`);
    // Five stage boundaries (score | select | candidates | radix | attention | merge).
    assert.equal(entry.split("grid_barrier(barrier);").length - 1, 5, spec.variant);
    // The standalone sparse kernel keeps the read-only-cache index load.
    assert.ok(kernels.get("sparse")!.includes("sparse_block<false>("), spec.variant);
  }
});

Deno.test("persistent: the grid barrier counts arrivals back to 0 and only grows the generation", async () => {
  const source = renderKernels((await loadSpecs())[0]).find((k) => k.id === "persistent")!.source;
  const barrier = definition(source, "DS_INLINE void grid_barrier(");
  // The generation is read before arriving, so the last arrival cannot bump it first.
  const readGen = barrier.indexOf("ld_acquire_u32(barrier + 1)");
  const arrive = barrier.indexOf("atomicAdd(barrier, 1u)");
  assert.ok(readGen > 0 && arrive > readGen, "the generation must be read before arriving");
  // The last arrival resets the count, fences, then bumps the generation.
  const reset = barrier.indexOf("atomicExch(barrier, 0u)");
  const bump = barrier.indexOf("atomicAdd(barrier + 1, 1u)");
  assert.ok(reset > arrive && bump > reset, "reset the count before the generation moves");
  assert.ok(barrier.slice(reset, bump).includes("__threadfence()"), "no fence before the bump");
  // No store ever writes the generation back (replays need no host reset).
  assert.ok(!/barrier\[1\]\s*=/.test(source) && !/\*\(barrier \+ 1\)\s*=/.test(source));
});
