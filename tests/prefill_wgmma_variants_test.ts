import assert from "node:assert/strict";
import {
  MAX_SHARED_BYTES,
  parseWgmmaVariant,
  WGMMA_VARIANTS,
  wgmmaVariantOf,
  withWgmmaVariant,
} from "../src/codegen/prefill_wgmma_variants.ts";
import { prefillQTile, tuningFor } from "../src/codegen/kernels.ts";
import { renderKernels } from "../src/codegen/render.ts";
import { choosePrefillBody, prefillRuns } from "../src/runtime/prefill_body.ts";
import { loadSpecs } from "../src/cli/specs.ts";
import { UsageError } from "../src/util/errors.ts";
import { defineAttention } from "../src/dsl/spec.ts";

const spec = (headDim: 64 | 128) =>
  defineAttention({
    headDim,
    numQHeads: 8,
    numKvHeads: 2,
    kvDtype: "fp16",
    pageSize: 16,
    labels: { channels: 16, bits: 8 },
    selection: "group",
    budget: { ratio: 1 / 16, min: 16 },
  });
const HOPPER = { nvrtcMajor: 12, arch: "sm_90" };

Deno.test("parseWgmmaVariant: schedule, stages (default per schedule) and grid order", () => {
  assert.deepEqual(parseWgmmaVariant("sync", "x"), {
    schedule: "sync",
    stages: 2,
    headsFastest: false,
    pingpong: false,
  });
  assert.deepEqual(parseWgmmaVariant("mbar3-h", "x"), {
    schedule: "mbar",
    stages: 3,
    headsFastest: true,
    pingpong: false,
  });
  assert.deepEqual(parseWgmmaVariant("ws-p-h", "x"), {
    schedule: "ws",
    stages: 3,
    headsFastest: true,
    pingpong: true,
  });
  assert.deepEqual(parseWgmmaVariant(" MBAR2 ", "x").stages, 2);
  for (const bad of ["", "ws5", "pingpong", "sync3", "mbar-x", "sync-p", "ws3-h-p"]) {
    assert.throws(() => parseWgmmaVariant(bad, "--wgmma-variants"), (e: unknown) => {
      assert.ok(e instanceof UsageError);
      assert.match(e.message, /^--wgmma-variants: got /);
      return true;
    }, bad);
  }
});

Deno.test("the default tuning is the sync variant: the committed sources are unchanged by it", () => {
  const base = tuningFor(spec(128));
  assert.equal(wgmmaVariantOf(base), "sync");
  assert.deepEqual(withWgmmaVariant(base, 128, "sync", "x"), base);
});

Deno.test("every measured variant fits shared memory, keeps the Q tile, and plans its grid", async () => {
  for (const s of [spec(64), spec(128), ...await loadSpecs()]) {
    const base = tuningFor(s);
    if (!base.prefillWgmma) continue;
    for (const name of WGMMA_VARIANTS) {
      const t = withWgmmaVariant(base, s.headDim, name, "x");
      assert.equal(wgmmaVariantOf(t), name, `${s.variant} ${name}`);
      assert.ok(t.prefillWgmmaSharedBytes <= MAX_SHARED_BYTES, `${s.variant} ${name}`);
      // The consumer warpgroups hold the tile table's Q tile; ws adds one producer warpgroup.
      const consumers = t.prefillWgmmaThreads - (t.prefillWgmmaSchedule === "ws" ? 128 : 0);
      assert.equal(64 * (consumers / 128), prefillQTile(t), `${s.variant} ${name}`);
      // Q, `stages` K and V slots, alignment slack, the mbarriers (none for sync).
      const bars = t.prefillWgmmaSchedule === "sync" ? 0 : 8 * (4 * t.prefillWgmmaStages + 1);
      assert.equal(
        t.prefillWgmmaSharedBytes,
        (prefillQTile(t) + 2 * t.prefillWgmmaStages * t.prefillWgmmaKeyTile) * s.headDim * 2 +
          1024 + bars,
      );
      const plan = choosePrefillBody("wgmma", t, HOPPER);
      assert.equal(plan.wgmmaVariant, name);
      assert.equal(plan.headsFastest, name.endsWith("-h"));
      assert.equal(plan.threads, t.prefillWgmmaThreads);
      assert.equal(choosePrefillBody("mma", t, HOPPER).headsFastest, false);
    }
  }
});

Deno.test("withWgmmaVariant: a ring too deep for shared memory is one line naming the need", () => {
  assert.throws(
    () => withWgmmaVariant(tuningFor(spec(128)), 128, "mbar4", "$DS_PREFILL_WGMMA_VARIANT"),
    /^UsageError: \$DS_PREFILL_WGMMA_VARIANT: variant mbar4 needs 296072 bytes .* at most 232448$/,
  );
  // At head dim 64 the same ring fits.
  assert.equal(withWgmmaVariant(tuningFor(spec(64)), 64, "mbar4", "x").prefillWgmmaStages, 4);
});

Deno.test("the rendered wgmma body carries the variant's schedule, stages and grid order", () => {
  const base = tuningFor(spec(128));
  const src = (name: string) =>
    renderKernels(spec(128), withWgmmaVariant(base, 128, name, "x"))
      .find((k) => k.id === "prefill")!.source;
  const sync = src("sync"), ws = src("ws3-p-h");
  assert.match(sync, /constexpr int SCHEDULE = 0;/);
  assert.match(sync, /constexpr bool HEADS_FASTEST = false;/);
  assert.match(sync, /constexpr bool PINGPONG = false;/);
  assert.match(ws, /constexpr bool PINGPONG = true;/);
  assert.match(sync, /constexpr int PREFILL_THREADS = 256;/);
  assert.match(ws, /constexpr int SCHEDULE = 2;/);
  assert.match(ws, /constexpr int STAGES = 3;/);
  assert.match(ws, /constexpr bool HEADS_FASTEST = true;/);
  assert.match(ws, /constexpr int PREFILL_THREADS = 384;/);
  assert.match(src("mbar3"), /constexpr int SCHEDULE = 1;/);
});

Deno.test("prefillRuns: mma once, every other body once per wgmma variant", () => {
  assert.deepEqual(prefillRuns(["mma", "wgmma"], ["sync", "ws3"]), [
    ["mma", undefined],
    ["wgmma", "sync"],
    ["wgmma", "ws3"],
  ]);
  assert.deepEqual(prefillRuns(["auto"], []), [["auto", undefined]]);
});
