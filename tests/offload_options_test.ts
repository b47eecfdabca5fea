import assert from "node:assert/strict";
import {
  checkOffloadOptions,
  gatherCountsSince,
  type OffloadOptions,
  predictionRecall,
  rowCacheSlots,
} from "../src/runtime/offload_plan.ts";
import { offloadPlacement } from "../src/decoding/gpu_decoder_layout.ts";
import { ArgumentError, UsageError } from "../src/util/errors.ts";
import { OFFLOAD_MODES, offloadFromFlags } from "../src/cli/offload_flags.ts";
import {
  LLAMA3_8B,
  LLAMA3_8B_GROUP_SPEC,
  LLAMA3_8B_GROUP_SPEC_NO_DENSE,
} from "../bench/llama3_shape.ts";

Deno.test("offload options: valid ones pass unchanged", () => {
  for (
    const o of [
      { mode: "selected" },
      { mode: "selected", reuse: true },
      { mode: "selected", prediction: true },
      { mode: "selected", prediction: true, reuse: true },
      { mode: "selected", prediction: true, skipMissed: true },
      { mode: "selected", prediction: false, skipMissed: undefined },
      { mode: "selected", prediction: true, prefetchFraction: 0.5 },
      { mode: "selected", prediction: true, prefetchFraction: 1, skipMissed: true },
      { mode: "selected", rowCacheBytes: 1 << 30 },
      { mode: "selected", prediction: true, reuse: true, rowCacheBytes: 0 },
      { mode: "selected", prediction: true, skipMissed: true, rowCacheBytes: 0 },
      { mode: "full-kv" },
      { mode: "full-kv", rowCacheBytes: 0 },
    ] as OffloadOptions[]
  ) assert.equal(checkOffloadOptions(o, "t"), o);
});

Deno.test("offload options: bad ones name the field, the value and what is allowed", () => {
  const cases: [unknown, RegExp][] = [
    [{ mode: "all" }, /^t: offload\.mode: got "all"; allowed: selected, full-kv$/],
    [{ mode: "selected", reuse: "yes" }, /offload\.reuse: got "yes"; allowed: true, false/],
    [{ mode: "full-kv", reuse: true }, /only with mode "selected"/],
    [{ mode: "selected", skipMissed: true }, /offload\.skipMissed: got true; allowed: only with/],
    [{ mode: "selected", prediction: "on" }, /offload\.prediction: got "on"; allowed: true, false/],
    [{ mode: "full-kv", prediction: true }, /only with mode "selected"/],
    [
      { mode: "selected", prediction: true, prefetchFraction: 0 },
      /offload\.prefetchFraction: got 0; allowed: a number in \(0, 1\]/,
    ],
    [
      { mode: "selected", prediction: true, prefetchFraction: 1.5 },
      /offload\.prefetchFraction: got 1\.5; allowed: a number in \(0, 1\]/,
    ],
    [
      { mode: "selected", prediction: true, prefetchFraction: "half" },
      /offload\.prefetchFraction: got "half"; allowed: a number in \(0, 1\]/,
    ],
    [
      { mode: "selected", prefetchFraction: 0.5 },
      /offload\.prefetchFraction: got 0\.5; allowed: only with prediction: true/,
    ],
    [
      { mode: "selected", prediction: true, skipMissed: true, prefetchFraction: 0.5 },
      /offload\.prefetchFraction: got 0\.5; allowed: 1 \(or absent\) with skipMissed/,
    ],
    [
      { mode: "selected", prediction: false, skipMissed: true },
      /offload\.skipMissed: got true; allowed: only with prediction: true$/,
    ],
    [
      { mode: "selected", prediction: true, skipMissed: true, reuse: true },
      /offload\.skipMissed: got true; allowed: only without reuse$/,
    ],
    [
      { mode: "selected", rowCacheBytes: -1 },
      /offload\.rowCacheBytes: got -1; allowed: a whole number of bytes >= 0$/,
    ],
    [
      { mode: "selected", rowCacheBytes: 1.5 },
      /offload\.rowCacheBytes: got 1\.5; allowed: a whole number of bytes >= 0$/,
    ],
    [
      { mode: "selected", rowCacheBytes: "1G" },
      /offload\.rowCacheBytes: got "1G"; allowed: a whole number of bytes >= 0$/,
    ],
    [
      { mode: "full-kv", rowCacheBytes: 4096 },
      /offload\.rowCacheBytes: got 4096; allowed: only with mode "selected"$/,
    ],
    [
      { mode: "selected", prediction: true, skipMissed: true, rowCacheBytes: 4096 },
      /offload\.rowCacheBytes: got 4096; allowed: 0 or absent with skipMissed$/,
    ],
    [null, /^t: offload: got null/],
  ];
  for (const [o, re] of cases) {
    assert.throws(() => checkOffloadOptions(o as OffloadOptions, "t"), (e: Error) => {
      assert.ok(e instanceof ArgumentError, `${JSON.stringify(o)}: an ArgumentError`);
      assert.match(e.message, re);
      assert.ok(!e.message.includes("\n"), "one line");
      return true;
    });
  }
});

Deno.test("offload placement: selected keeps the spec's dense layers on the device", () => {
  const p = offloadPlacement({ mode: "selected" }, LLAMA3_8B_GROUP_SPEC, LLAMA3_8B);
  assert.equal(p.length, 32);
  assert.deepEqual(p.slice(0, 3), ["device", "device", "host"]);
  assert.equal(p.filter((x) => x === "host").length, 30);
  const full = offloadPlacement({ mode: "full-kv" }, LLAMA3_8B_GROUP_SPEC, LLAMA3_8B);
  assert.ok(full.every((x) => x === "host"));
  const noDense = LLAMA3_8B_GROUP_SPEC_NO_DENSE;
  assert.ok(offloadPlacement({ mode: "selected" }, noDense, LLAMA3_8B).every((x) => x === "host"));
});

Deno.test("offload flags: --offload is reuse; --offload-mode picks; a bad mode is one line", () => {
  assert.equal(offloadFromFlags(false, undefined), undefined);
  assert.deepEqual(offloadFromFlags(true, undefined), { mode: "selected", reuse: true });
  assert.deepEqual(offloadFromFlags(undefined, "full-kv"), { mode: "full-kv" });
  assert.deepEqual(offloadFromFlags(true, "selected"), { mode: "selected" });
  assert.deepEqual(offloadFromFlags(undefined, "predict"), { mode: "selected", prediction: true });
  assert.deepEqual(offloadFromFlags(undefined, "predict-reuse"), {
    mode: "selected",
    prediction: true,
    reuse: true,
  });
  assert.deepEqual(offloadFromFlags(undefined, "predict-half"), {
    mode: "selected",
    prediction: true,
    prefetchFraction: 0.5,
  });
  assert.deepEqual(offloadFromFlags(undefined, "predict-three-quarters"), {
    mode: "selected",
    prediction: true,
    prefetchFraction: 0.75,
  });
  assert.deepEqual(offloadFromFlags(undefined, "predict-skip-missed"), {
    mode: "selected",
    prediction: true,
    skipMissed: true,
  });
  // Every mode the flag offers is a valid decoder option.
  for (const mode of Object.keys(OFFLOAD_MODES)) {
    checkOffloadOptions(offloadFromFlags(undefined, mode)!, "test");
  }
  assert.deepEqual(offloadFromFlags(true, undefined, "1.5"), {
    mode: "selected",
    reuse: true,
    rowCacheBytes: 1.5 * 2 ** 30,
  });
  assert.deepEqual(offloadFromFlags(undefined, "predict-half", "2"), {
    mode: "selected",
    prediction: true,
    prefetchFraction: 0.5,
    rowCacheBytes: 2 * 2 ** 30,
  });
  for (
    const [offload, mode, gib, message] of [
      [true, undefined, "0", '--row-cache: got "0"; allowed: a number of GiB > 0, e.g. 16'],
      [true, undefined, "lots", '--row-cache: got "lots"; allowed: a number of GiB > 0, e.g. 16'],
      [
        true,
        undefined,
        "1e-10",
        "--row-cache: got 1e-10, which is less than a byte; allowed: a number of GiB > 0, e.g. 16",
      ],
      [
        false,
        undefined,
        "4",
        "--row-cache: got 4 with no --offload; allowed: only with --offload or a selected-rows " +
        "--offload-mode",
      ],
      [
        undefined,
        "full-kv",
        "4",
        "--row-cache: got 4 with --offload-mode full-kv; allowed: only with --offload or a " +
        "selected-rows --offload-mode",
      ],
    ] as [boolean | undefined, string | undefined, string, string][]
  ) {
    assert.throws(
      () => offloadFromFlags(offload, mode, gib),
      (e: Error) => e instanceof UsageError && e.message === message,
    );
  }
  assert.throws(
    () => offloadFromFlags(true, "ssd"),
    (e: Error) =>
      e instanceof UsageError &&
      e.message ===
        '--offload-mode: got "ssd"; allowed: selected, reuse, predict, predict-reuse, ' +
          "predict-three-quarters, predict-half, predict-skip-missed, full-kv",
  );
});

Deno.test("prediction recall: rows found in the prefetch over rows selected, per layer", () => {
  const zero = {
    fromPrevious: 0,
    fromPrefetch: 0,
    fromHost: 0,
    fromCache: 0,
    prefetchFromPrevious: 0,
    prefetchFromHost: 0,
    prefetchFromCache: 0,
  };
  assert.ok(Number.isNaN(predictionRecall(zero)), "nothing selected: no recall");
  // Rows the row cache served count as selected, not as found by the prediction.
  assert.equal(predictionRecall({ ...zero, fromCache: 60, fromPrefetch: 30, fromHost: 10 }), 0.3);
  assert.equal(predictionRecall({ ...zero, fromPrefetch: 30, fromHost: 10 }), 0.75);
  assert.equal(
    predictionRecall({ ...zero, fromPrevious: 50, fromPrefetch: 25, fromHost: 25 }),
    0.25,
  );
  const before = [{ ...zero, fromPrefetch: 5, fromHost: 5, prefetchFromHost: 7, fromCache: 2 }];
  const after = [{
    ...zero,
    fromPrefetch: 14,
    fromHost: 6,
    prefetchFromHost: 17,
    fromCache: 2,
    prefetchFromCache: 3,
  }];
  assert.deepEqual(gatherCountsSince(after, before), [
    { ...zero, fromPrefetch: 9, fromHost: 1, prefetchFromHost: 10, prefetchFromCache: 3 },
  ]);
  assert.equal(predictionRecall(gatherCountsSince(after, before)[0]), 0.9);
});

Deno.test("row cache: slots per (sequence, layer, kv head) from a byte budget", () => {
  // One slot of batch 4 x 8 kv heads x d 128: K and V rows (2 x 256 bytes) + tag + claim.
  const perSlot = 4 * 8 * (2 * 128 * 2 + 8);
  assert.equal(rowCacheSlots(0, 32, 4, 8, 128, 131072), 0, "no bytes: no cache");
  assert.equal(rowCacheSlots(1 << 30, 0, 4, 8, 128, 131072), 0, "no offloaded layer: no cache");
  assert.equal(rowCacheSlots(32 * perSlot * 1000 + 5, 32, 4, 8, 128, 131072), 1000);
  assert.equal(rowCacheSlots(32 * perSlot, 32, 4, 8, 128, 131072), 1);
  // More than the context needs: one slot per position.
  assert.equal(rowCacheSlots(2 ** 50, 32, 4, 8, 128, 131072), 131072);
  assert.throws(
    () => rowCacheSlots(32 * perSlot - 1, 32, 4, 8, 128, 131072),
    (e: Error) =>
      e instanceof ArgumentError &&
      e.message ===
        `OffloadPlan: offload.rowCacheBytes: got ${32 * perSlot - 1}; allowed: 0, or at least ` +
          `${32 * perSlot} (one slot per sequence, offloaded layer and kv head)`,
  );
});
