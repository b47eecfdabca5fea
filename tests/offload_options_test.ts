import assert from "node:assert/strict";
import {
  checkOffloadOptions,
  gatherCountsSince,
  type OffloadOptions,
  predictionRecall,
} from "../src/runtime/offload_plan.ts";
import { offloadPlacement } from "../src/decoding/gpu_decoder_layout.ts";
import { ArgumentError, UsageError } from "../src/util/errors.ts";
import { offloadFromFlags } from "../src/cli/offload_flags.ts";
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
      { mode: "full-kv" },
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
  // Every mode the flag offers is a valid decoder option.
  for (const mode of ["selected", "reuse", "predict", "predict-reuse", "predict-half", "full-kv"]) {
    checkOffloadOptions(offloadFromFlags(undefined, mode)!, "test");
  }
  assert.throws(
    () => offloadFromFlags(true, "ssd"),
    (e: Error) =>
      e instanceof UsageError &&
      e.message ===
        '--offload-mode: got "ssd"; allowed: selected, reuse, predict, predict-reuse, ' +
          "predict-half, full-kv",
  );
});

Deno.test("prediction recall: rows found in the prefetch over rows selected, per layer", () => {
  const zero = {
    fromPrevious: 0,
    fromPrefetch: 0,
    fromHost: 0,
    prefetchFromPrevious: 0,
    prefetchFromHost: 0,
  };
  assert.ok(Number.isNaN(predictionRecall(zero)), "nothing selected: no recall");
  assert.equal(predictionRecall({ ...zero, fromPrefetch: 30, fromHost: 10 }), 0.75);
  assert.equal(
    predictionRecall({ ...zero, fromPrevious: 50, fromPrefetch: 25, fromHost: 25 }),
    0.25,
  );
  const before = [{ ...zero, fromPrefetch: 5, fromHost: 5, prefetchFromHost: 7 }];
  const after = [{ ...zero, fromPrefetch: 14, fromHost: 6, prefetchFromHost: 17 }];
  assert.deepEqual(gatherCountsSince(after, before), [
    { ...zero, fromPrefetch: 9, fromHost: 1, prefetchFromHost: 10 },
  ]);
  assert.equal(predictionRecall(gatherCountsSince(after, before)[0]), 0.9);
});
