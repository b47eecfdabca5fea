import assert from "node:assert/strict";
import {
  choosePrefillBody,
  parsePrefillBody,
  prefillRuns,
  wgmmaUnavailable,
} from "../src/runtime/prefill_body.ts";
import {
  DEFAULT_WGMMA_VARIANT,
  FALLBACK_WGMMA_VARIANT,
  hasProducerWarpgroup,
  MAX_SHARED_BYTES,
  parseWgmmaVariant,
  tmaBoxRows,
  WGMMA_VARIANTS,
  wgmmaSharedBytes,
  wgmmaVariantName,
  wgmmaVariantOf,
  withWgmmaVariant,
} from "../src/codegen/prefill_wgmma_variants.ts";
import { prefillQTile, tuningFor } from "../src/codegen/kernels.ts";
import { renderKernels } from "../src/codegen/render.ts";
import { wgmmaWrappers } from "../src/codegen/wgmma.ts";
import { loadSpecs } from "../src/cli/specs.ts";
import { UsageError } from "../src/util/errors.ts";
import { type AttentionInput, defineAttention } from "../src/dsl/spec.ts";

const specInput = (headDim: 64 | 128 | 256): AttentionInput => ({
  headDim,
  numQHeads: 8,
  numKvHeads: 2,
  kvDtype: "fp16" as const,
  pageSize: 16,
  labels: { channels: 16, bits: 8 },
  selection: "group" as const,
  budget: { ratio: 1 / 16, min: 16 },
});
const spec = (headDim: 64 | 128 | 256) => defineAttention(specInput(headDim));
/** The rendered prefill kernel's source at `headDim`, with `tuning` or the spec's own. */
const prefillSource = (headDim: 64 | 128 | 256, tuning?: ReturnType<typeof tuningFor>) =>
  renderKernels(spec(headDim), tuning).find((k) => k.id === "prefill")!.source;
const HOPPER = { nvrtcMajor: 12, arch: "sm_90" };

Deno.test("choosePrefillBody: auto takes wgmma only on sm_90 with NVRTC >= 12 and a body", () => {
  const t = tuningFor(spec(128));
  const w = choosePrefillBody("auto", t, HOPPER);
  assert.equal(w.body, "wgmma");
  assert.equal(w.arch, "sm_90a");
  assert.deepEqual(w.extraOptions, ["-DDS_PREFILL_WGMMA"]);
  assert.equal(w.threads, t.prefillWgmmaThreads);
  assert.equal(w.sharedBytes, t.prefillWgmmaSharedBytes);

  const old = choosePrefillBody("auto", t, { nvrtcMajor: 11, arch: "sm_90" });
  assert.equal(old.body, "mma");
  assert.equal(old.arch, "sm_90");
  assert.deepEqual(old.extraOptions, []);
  assert.equal(old.threads, t.prefillThreads);
  assert.equal(old.sharedBytes, t.prefillSharedBytes);
  assert.match(old.reason, /NVRTC 11 cannot emit wgmma/);

  const ampere = choosePrefillBody("auto", t, { nvrtcMajor: 13, arch: "sm_80" });
  assert.equal(ampere.body, "mma");
  assert.equal(ampere.arch, "sm_80");
  assert.match(ampere.reason, /sm_80/);

  const d256 = choosePrefillBody("auto", tuningFor(spec(256)), HOPPER);
  assert.equal(d256.body, "mma");
  assert.match(d256.reason, /head dim 256/);

  assert.equal(choosePrefillBody("mma", t, HOPPER).body, "mma");
  assert.equal(choosePrefillBody("mma", t, HOPPER).arch, "sm_90");
});

Deno.test("choosePrefillBody: wgmma asked for where it cannot run is an error with the reason", () => {
  const t = tuningFor(spec(128));
  assert.throws(
    () => choosePrefillBody("wgmma", t, { nvrtcMajor: 11, arch: "sm_90" }),
    (e: unknown) =>
      e instanceof UsageError && /wgmma asked for, but NVRTC 11 cannot emit wgmma/.test(e.message),
  );
  assert.throws(() => choosePrefillBody("wgmma", t, { nvrtcMajor: 12, arch: "sm_89" }), UsageError);
  assert.throws(() => choosePrefillBody("wgmma", tuningFor(spec(256)), HOPPER), UsageError);
  assert.equal(wgmmaUnavailable(t, HOPPER), null);
});

Deno.test("parsePrefillBody: the choices, a default, and one line naming the source otherwise", () => {
  assert.equal(parsePrefillBody(undefined, "$DS_PREFILL_BODY"), "auto");
  assert.equal(parsePrefillBody("", "$DS_PREFILL_BODY"), "auto");
  assert.equal(parsePrefillBody("WGMMA", "--bodies"), "wgmma");
  assert.equal(parsePrefillBody("mma", "--bodies"), "mma");
  assert.throws(
    () => parsePrefillBody("fa3", "$DS_PREFILL_BODY"),
    (e: unknown) =>
      e instanceof UsageError &&
      e.message === '$DS_PREFILL_BODY: got "fa3"; allowed: auto, mma, wgmma',
  );
});

Deno.test("both prefill bodies share the Q tile (the tile table's contract) in every example", async () => {
  for (const s of [spec(64), spec(128), spec(256), ...await loadSpecs()]) {
    const t = tuningFor(s);
    assert.equal(t.prefillWgmma, s.headDim <= 128, s.variant);
    if (!t.prefillWgmma) continue;
    // One consumer warpgroup (128 threads) per 64 rows, plus tma's and ws's producer warpgroup.
    const producer = hasProducerWarpgroup(t.prefillWgmmaSchedule) ? 128 : 0;
    assert.equal(64 * ((t.prefillWgmmaThreads - producer) / 128), prefillQTile(t), s.variant);
    // Q and `stages` K and V slots of 2-byte elements, 1024 bytes of alignment slack, barriers.
    assert.equal(
      t.prefillWgmmaSharedBytes,
      wgmmaSharedBytes(
        s.headDim,
        t.prefillWgmmaThreads - producer,
        t.prefillWgmmaKeyTile,
        t.prefillWgmmaStages,
        t.prefillWgmmaSchedule,
      ),
    );
    assert.ok(t.prefillWgmmaSharedBytes <= 227 * 1024, `${s.variant}: shared memory`);
  }
});

Deno.test("the prefill source holds the wgmma body behind DS_PREFILL_WGMMA, or an #error", () => {
  const src128 = prefillSource(128);
  const wg = src128.indexOf("#if defined(DS_PREFILL_WGMMA)");
  const mma = src128.indexOf("// ---- the mma.sync body ----");
  assert.ok(wg > 0 && mma > wg, "both bodies, wgmma first");
  assert.ok(src128.indexOf("wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16") > wg);
  assert.ok(src128.indexOf("wgmma.mma_async") < mma, "wgmma only in its own body");
  const src256 = prefillSource(256);
  assert.ok(!src256.includes("wgmma.mma_async"));
  assert.match(src256, /#error "this variant has no wgmma prefill body \(head dim 256\)/);
});

Deno.test("wgmmaWrappers: one asm operand per accumulator register, A and descriptors after", () => {
  const text = wgmmaWrappers("bf16", 128, 64);
  // QK^T: 64 accumulators then 2 descriptors; PV: 32 accumulators, 4 A registers, 1 descriptor.
  assert.match(text, /m64n128k16\.f32\.bf16\.bf16 \{%0, [^}]*%63\}, %64, %65, 0, 1, 1, 0, 0;/);
  assert.match(text, /m64n128k16\.f32\.bf16\.bf16 \{%0, [^}]*%63\}, %64, %65, 1, 1, 1, 0, 0;/);
  assert.match(
    text,
    /m64n64k16\.f32\.bf16\.bf16 \{%0, [^}]*%31\}, \{%32, %33, %34, %35\}, %36, 1, 1, 1, 1;/,
  );
  assert.equal(text.split('"+f"(d[63])').length - 1, 1);
  assert.equal(text.split('"=f"(d[63])').length - 1, 1);
  assert.equal(text.split('"+f"(d[31])').length - 1, 2); // QK^T with ACC = 1, and PV
  assert.throws(() => wgmmaWrappers("f16", 100, 128), /keyTile 100; allowed: a multiple of 8/);
  assert.throws(() => wgmmaWrappers("f16", 128, 512), /headDim 512/);
});

// ---- variants of the wgmma body (src/codegen/prefill_wgmma_variants.ts) ----

Deno.test("parseWgmmaVariant: schedule, stages (default per schedule) and grid order", () => {
  assert.deepEqual(parseWgmmaVariant("sync", "x"), {
    schedule: "sync",
    stages: 2,
    headsFastest: false,
    pingpong: false,
    lazyRescale: false,
    doubleP: false,
    splitProducer: false,
  });
  assert.deepEqual(parseWgmmaVariant("mbar3-h", "x"), {
    schedule: "mbar",
    stages: 3,
    headsFastest: true,
    pingpong: false,
    lazyRescale: false,
    doubleP: false,
    splitProducer: false,
  });
  assert.deepEqual(parseWgmmaVariant("ws-p-h", "x"), {
    schedule: "ws",
    stages: 3,
    headsFastest: true,
    pingpong: true,
    lazyRescale: false,
    doubleP: false,
    splitProducer: false,
  });
  assert.deepEqual(parseWgmmaVariant("tma-p", "x"), {
    schedule: "tma",
    stages: 3,
    headsFastest: false,
    pingpong: true,
    lazyRescale: false,
    doubleP: false,
    splitProducer: false,
  });
  assert.deepEqual(parseWgmmaVariant("tma3-r", "x"), {
    schedule: "tma",
    stages: 3,
    headsFastest: false,
    pingpong: false,
    lazyRescale: true,
    doubleP: false,
    splitProducer: false,
  });
  assert.deepEqual(parseWgmmaVariant("mbar2-p-r-h", "x"), {
    schedule: "mbar",
    stages: 2,
    headsFastest: true,
    pingpong: true,
    lazyRescale: true,
    doubleP: false,
    splitProducer: false,
  });
  assert.deepEqual(parseWgmmaVariant("tma3-r-d-s", "x"), {
    schedule: "tma",
    stages: 3,
    headsFastest: false,
    pingpong: false,
    lazyRescale: true,
    doubleP: true,
    splitProducer: true,
  });
  assert.equal(wgmmaVariantName(parseWgmmaVariant("tma3-p-r-d-s-h", "x")), "tma3-p-r-d-s-h");
  assert.deepEqual(parseWgmmaVariant(" MBAR2 ", "x").stages, 2);
  for (
    const bad of [
      "",
      "ws5",
      "pingpong",
      "sync3",
      "mbar-x",
      "sync-p",
      "ws3-h-p",
      "tma5",
      "tma3-x",
      "tma3-r-p",
      "tma3-h-r",
      "tma3-r-r",
      "tma3-s-d",
      "sync-d",
      "mbar3-s",
      "ws3-d-s",
    ]
  ) {
    assert.throws(() => parseWgmmaVariant(bad, "--wgmma-variants"), (e: unknown) => {
      assert.ok(e instanceof UsageError);
      assert.match(e.message, /^--wgmma-variants: got /);
      return true;
    }, bad);
  }
});

Deno.test("the default tuning is tma3 where TMA copies the pages, else mbar3 (docs/perf-notes.md)", () => {
  assert.equal(DEFAULT_WGMMA_VARIANT, "tma3-r-s");
  assert.equal(FALLBACK_WGMMA_VARIANT, "mbar3");
  for (
    const [pageSize, want] of [[16, "tma3-r-s"], [64, "tma3-r-s"], [8, "tma3-r-s"], [
      4,
      "mbar3",
    ]] as const
  ) {
    const s = defineAttention({ ...specInput(128), pageSize });
    const base = tuningFor(s);
    assert.equal(wgmmaVariantOf(base), want, `page size ${pageSize}`);
    assert.deepEqual(withWgmmaVariant(base, s, want, "x"), base);
  }
});

Deno.test("every measured variant fits shared memory, keeps the Q tile, and plans its grid", async () => {
  for (const s of [spec(64), spec(128), ...await loadSpecs()]) {
    const base = tuningFor(s);
    if (!base.prefillWgmma) continue;
    for (const name of WGMMA_VARIANTS) {
      const t = withWgmmaVariant(base, s, name, "x");
      assert.equal(wgmmaVariantOf(t), name, `${s.variant} ${name}`);
      assert.ok(t.prefillWgmmaSharedBytes <= MAX_SHARED_BYTES, `${s.variant} ${name}`);
      // The consumer warpgroups hold the tile table's Q tile; ws adds one producer warpgroup.
      const producer = ["ws", "tma"].includes(t.prefillWgmmaSchedule);
      const consumers = t.prefillWgmmaThreads - (producer ? 128 : 0);
      assert.equal(64 * (consumers / 128), prefillQTile(t), `${s.variant} ${name}`);
      // Q, `stages` K and V slots, alignment slack, the mbarriers (none for sync; tma has one
      // more, for the last V tile's tail).
      const perStage = 4 * t.prefillWgmmaStages;
      const bars = t.prefillWgmmaSchedule === "sync"
        ? 0
        : 8 * (perStage + (t.prefillWgmmaSchedule === "tma" ? 2 : 1));
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
      // Only the tma schedule's launch passes tensor maps in the pool slots, and only on wgmma.
      assert.equal(plan.kvTensorMaps, name.startsWith("tma"), `${s.variant} ${name}`);
      assert.equal(choosePrefillBody("mma", t, HOPPER).kvTensorMaps, false);
    }
  }
});

Deno.test("withWgmmaVariant: a ring too deep for shared memory is one line naming the need", () => {
  assert.throws(
    () => withWgmmaVariant(tuningFor(spec(128)), spec(128), "mbar4", "$DS_PREFILL_WGMMA_VARIANT"),
    /^UsageError: \$DS_PREFILL_WGMMA_VARIANT: variant mbar4 needs 296072 bytes .* at most 232448$/,
  );
  // At head dim 64 the same ring fits.
  assert.equal(withWgmmaVariant(tuningFor(spec(64)), spec(64), "mbar4", "x").prefillWgmmaStages, 4);
});

Deno.test("withWgmmaVariant: tma refuses page sizes its boxes cannot cover, naming the fallback", () => {
  const small = defineAttention({ ...specInput(128), pageSize: 4 });
  assert.throws(
    () => withWgmmaVariant(tuningFor(small), small, "tma3", "--wgmma-variants"),
    /^UsageError: --wgmma-variants: variant tma3 cannot run here: page size 4 with key tile 128: .*; use mbar3$/,
  );
  // mbar3 loads rows one by one: any page size.
  assert.equal(
    withWgmmaVariant(tuningFor(small), small, "mbar3", "x").prefillWgmmaSchedule,
    "mbar",
  );
  for (const pageSize of [8, 16, 64, 128, 256, 1024]) {
    const s = defineAttention({ ...specInput(128), pageSize });
    assert.equal(withWgmmaVariant(tuningFor(s), s, "tma3", "x").prefillWgmmaSchedule, "tma");
  }
});

Deno.test("tmaBoxRows: a page per box up to the key tile, multiples of the swizzle's 8 rows", () => {
  assert.equal(tmaBoxRows(8, 128).rows, 8);
  assert.equal(tmaBoxRows(16, 128).rows, 16);
  assert.equal(tmaBoxRows(128, 128).rows, 128);
  assert.equal(tmaBoxRows(512, 128).rows, 128);
  for (const bad of [1, 2, 4]) assert.equal(tmaBoxRows(bad, 128).rows, null);
  assert.equal(tmaBoxRows(64, 96).rows, null); // 64 does not divide a 96-key tile
});

Deno.test("the rendered wgmma body carries the variant's schedule, stages and grid order", () => {
  const base = tuningFor(spec(128));
  const src = (name: string) => prefillSource(128, withWgmmaVariant(base, spec(128), name, "x"));
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
  const tma = src("tma3-p");
  assert.match(tma, /constexpr int SCHEDULE = 3;/);
  assert.match(tma, /constexpr int PREFILL_THREADS = 384;/);
  assert.match(
    tma,
    /cp\.async\.bulk\.tensor\.2d\.shared::cluster\.global\.mbarrier::complete_tx::bytes/,
  );
});

Deno.test("-r renders LAZY_RESCALE: O's rescale behind a warp vote (the default), tma3 without it", () => {
  const base = tuningFor(spec(128));
  assert.equal(base.prefillWgmmaLazyRescale, true); // the default is tma3-r-s
  const eager = withWgmmaVariant(base, spec(128), "tma3", "x");
  const lazy = withWgmmaVariant(base, spec(128), "tma3-r", "x");
  assert.equal(eager.prefillWgmmaLazyRescale, false);
  assert.equal(lazy.prefillWgmmaLazyRescale, true);
  assert.equal(wgmmaVariantOf(lazy), "tma3-r");
  assert.equal(choosePrefillBody("wgmma", lazy, HOPPER).wgmmaVariant, "tma3-r");
  // Only the flag differs from tma3: same threads, stages and shared memory.
  assert.deepEqual({ ...lazy, prefillWgmmaLazyRescale: false }, eager);
  assert.match(prefillSource(128, eager), /constexpr bool LAZY_RESCALE = false;/);
  assert.match(prefillSource(128, lazy), /constexpr bool LAZY_RESCALE = true;/);
  // The skip is one branch on a warp vote over both of the thread's row factors.
  assert.match(
    prefillSource(128, lazy),
    /if constexpr \(LAZY_RESCALE\) \{\s*if \(!__any_sync\(0xffffffffu, alpha\[0\] != 1\.f \|\| alpha\[1\] != 1\.f\)\) return;/,
  );
});

Deno.test("prefillRuns: mma once, every other body once per wgmma variant", () => {
  assert.deepEqual(prefillRuns(["mma", "wgmma"], ["sync", "ws3"]), [
    ["mma", undefined],
    ["wgmma", "sync"],
    ["wgmma", "ws3"],
  ]);
  assert.deepEqual(prefillRuns(["auto"], []), [["auto", undefined]]);
});

Deno.test("-s renders SPLIT_PRODUCER (the default: K and V copies from two producer threads), -d DOUBLE_P", () => {
  const base = tuningFor(spec(128));
  assert.equal(wgmmaVariantOf(base), "tma3-r-s");
  const one = withWgmmaVariant(base, spec(128), "tma3-r", "x");
  const dbl = withWgmmaVariant(base, spec(128), "tma3-r-d", "x");
  assert.equal(base.prefillWgmmaSplitProducer, true);
  assert.equal(one.prefillWgmmaSplitProducer, false);
  // Only the flags differ: same threads, stages and shared memory.
  assert.deepEqual({ ...base, prefillWgmmaSplitProducer: false }, one);
  assert.deepEqual({ ...one, prefillWgmmaDoubleP: true }, dbl);
  assert.match(prefillSource(128, base), /constexpr bool SPLIT_PRODUCER = true;/);
  assert.match(prefillSource(128, one), /constexpr bool SPLIT_PRODUCER = false;/);
  assert.match(prefillSource(128, one), /constexpr bool DOUBLE_P = false;/);
  assert.match(prefillSource(128, dbl), /constexpr bool DOUBLE_P = true;/);
  // The K thread (warp 0) and the V thread (warp 1) each walk every tile.
  assert.match(
    prefillSource(128, base),
    /if \(SPLIT_PRODUCER && pwarp == 0\) \{\s*for \(int t = 0; t < n; t\+\+\) tma_tile\(k_map/,
  );
  assert.match(
    prefillSource(128, base),
    /\} else if \(SPLIT_PRODUCER && pwarp == 1\) \{\s*for \(int t = 0; t < n; t\+\+\) copy_v\(t\);/,
  );
  assert.equal(choosePrefillBody("wgmma", base, HOPPER).wgmmaVariant, "tma3-r-s");
});
