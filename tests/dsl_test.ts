import assert from "node:assert/strict";
import {
  type AttentionInput,
  budgetFor,
  defineAttention,
  denseStepBytes,
  idealByteRatio,
  kvHeadOfSelectionHead,
  labelHeadOfQueryHead,
  labelHeadOfSelectionHead,
  queryHeadsOfSelectionHead,
  routeFor,
  sparseStepBytes,
  SpecError,
} from "../src/dsl/mod.ts";
import { loadSpecs } from "../src/cli/specs.ts";

/** Llama-3-8B shape, group selection, 16 label channels at 8 bits: a valid starting point. */
const LLAMA3_GROUP: AttentionInput = {
  headDim: 128,
  numQHeads: 32,
  numKvHeads: 8,
  kvDtype: "fp16",
  pageSize: 16,
  labels: { channels: 16, bits: 8 },
  selection: "group",
  budget: { ratio: 1 / 16, min: 16 },
};

/** tiny-code-llama shape, per-query-head selection, 16 channels at 16 bits. */
const TINY_HEAD: AttentionInput = {
  headDim: 128,
  numQHeads: 4,
  numKvHeads: 2,
  kvDtype: "fp16",
  pageSize: 16,
  labels: { channels: 16, bits: 16 },
  selection: "head",
  budget: { ratio: 1 / 16, min: 16 },
};

/** `base` with top-level fields replaced, bypassing the types so invalid values get through. */
function withFields(base: AttentionInput, fields: Record<string, unknown>): AttentionInput {
  return { ...base, ...fields } as unknown as AttentionInput;
}

function problemsOf(input: AttentionInput): readonly string[] {
  try {
    defineAttention(input);
  } catch (e) {
    assert.ok(e instanceof SpecError, `expected a SpecError, got ${e}`);
    return e.problems;
  }
  assert.fail("expected the spec to be rejected");
}

const VARIANT_FORMAT =
  /^ds_d(\d+)_q(\d+)_kv(\d+)_p(\d+)_(fp16|bf16)_r(\d+)b(16|8|4|2)_(head|headkv|group)$/;

Deno.test("dsl: every example spec builds, is frozen and has a variant name spelling its parameters", async () => {
  const specs = await loadSpecs();
  assert.ok(specs.length >= 5, `expected the example specs, got ${specs.length}`);
  for (const s of specs) {
    const m = VARIANT_FORMAT.exec(s.variant);
    assert.ok(m, `variant name ${s.variant} does not match ${VARIANT_FORMAT}`);
    const [, d, q, kv, p, dtype, r, b, sel] = m;
    assert.deepEqual(
      [Number(d), Number(q), Number(kv), Number(p), dtype, Number(r), Number(b)],
      [s.headDim, s.numQHeads, s.numKvHeads, s.pageSize, s.kvDtype, s.labelChannels, s.labelBits],
      s.variant,
    );
    const expectedSel = s.selection === "group"
      ? "group"
      : s.labelHeads === "kv"
      ? "headkv"
      : "head";
    assert.equal(sel, expectedSel, s.variant);
    assert.equal(s.groupSize * s.numKvHeads, s.numQHeads, s.variant);
    assert.ok(Object.isFrozen(s) && Object.isFrozen(s.bytes), `${s.variant} is not frozen`);
    assert.ok(Object.isFrozen(s.budget) && Object.isFrozen(s.denseLayers), s.variant);
  }
  assert.equal(new Set(specs.map((s) => s.variant)).size, specs.length, "duplicate variants");
});

Deno.test("dsl: byte facts of Llama-3-8B group r16b8, computed by hand", () => {
  const s = defineAttention(LLAMA3_GROUP);
  assert.equal(s.variant, "ds_d128_q32_kv8_p16_fp16_r16b8_group");
  assert.equal(s.groupSize, 4);
  assert.equal(s.labelHeads, "kv");
  assert.equal(s.numLabelHeads, 8);
  assert.equal(s.numSelectionHeads, 8);
  assert.deepEqual({ ...s.bytes }, {
    denseRead: 2 * 8 * 128 * 2, // K and V, 8 kv heads, 128 dims, 2 bytes: 4096
    labelRowBytes: 16, // 16 channels x 8 bits
    labelMetaBytes: 4, // fp16 scale + fp16 min
    labelRead: 8 * (16 + 4), // 160
    scoreTraffic: 2 * 8 * 2, // one 2-byte key per selection head, written and read: 32
    selectedRowBytes: 2 * 8 * 128 * 2, // one K/V row per kv head: 4096
  });
  // 32K context: k = 32768 / 16 = 2048.
  assert.equal(denseStepBytes(s, 32768), 32768 * 4096);
  assert.equal(sparseStepBytes(s, 32768), 32768 * (160 + 32) + 2048 * 4096);
  // Ideal: 4096 / (160 + 4096 / 16) = 4096 / 416; with score keys 4096 / 448.
  assert.ok(Math.abs(idealByteRatio(s, 1 / 16) - 4096 / 416) < 1e-12);
  assert.ok(Math.abs(idealByteRatio(s, 1 / 16, true) - 4096 / 448) < 1e-12);
});

Deno.test("dsl: byte facts of tiny-code-llama head r16b16 and Llama-2-7B r8b16, computed by hand", () => {
  const tiny = defineAttention(TINY_HEAD);
  assert.equal(tiny.labelHeads, "query");
  assert.equal(tiny.numLabelHeads, 4);
  assert.equal(tiny.numSelectionHeads, 4);
  assert.deepEqual({ ...tiny.bytes }, {
    denseRead: 2 * 2 * 128 * 2, // 1024
    labelRowBytes: 16 * 2, // raw fp16 channels: 32
    labelMetaBytes: 0,
    labelRead: 4 * 32, // one label row per query head: 128
    scoreTraffic: 2 * 4 * 2, // 16
    selectedRowBytes: 2 * 4 * 128 * 2, // every query head reads its own rows: 2048
  });
  // 100 tokens: k = max(16, ceil(100 / 16) = 7) = 16.
  assert.equal(sparseStepBytes(tiny, 100), 100 * (128 + 16) + 16 * 2048);

  // The paper's MHA setting: 8 fp16 channels of 128 = 1/16 of the key; about 10x fewer bytes.
  const llama2 = defineAttention({
    ...TINY_HEAD,
    numQHeads: 32,
    numKvHeads: 32,
    labels: { channels: 8, bits: 16 },
  });
  assert.equal(llama2.bytes.denseRead, 2 * 32 * 256);
  assert.equal(llama2.bytes.labelRead, 32 * 16);
  assert.ok(Math.abs(idealByteRatio(llama2, 1 / 16) - 16384 / (512 + 1024)) < 1e-12);
});

/** One invalid field each: [description, input, field, bad value text, allowed-value texts]. */
const INVALID: [string, AttentionInput, string, string, string[]][] = [
  ["headDim 96", withFields(TINY_HEAD, { headDim: 96 }), "headDim", "96", ["64", "128", "256"]],
  [
    "numKvHeads not dividing numQHeads",
    withFields(LLAMA3_GROUP, { numKvHeads: 3 }),
    "numKvHeads",
    "3",
    ["1, 2, 4, 8, 16, 32"],
  ],
  [
    "kvDtype fp32",
    withFields(TINY_HEAD, { kvDtype: "fp32" }),
    "kvDtype",
    '"fp32"',
    ['"fp16"', '"bf16"'],
  ],
  ["pageSize 24", withFields(TINY_HEAD, { pageSize: 24 }), "pageSize", "24", ["power of two"]],
  [
    "labels.bits 3",
    withFields(TINY_HEAD, { labels: { channels: 32, bits: 3 } }),
    "labels.bits",
    "3",
    ["16", "8", "4", "2"],
  ],
  [
    "labels.channels 6 at 4 bits (24 bits)",
    withFields(TINY_HEAD, { labels: { channels: 6, bits: 4 } }),
    "labels.channels",
    "6",
    ["multiple of 8"],
  ],
  [
    "labels.channels 3 at 16 bits (48 bits)",
    withFields(TINY_HEAD, { labels: { channels: 3, bits: 16 } }),
    "labels.channels",
    "3",
    ["multiple of 2"],
  ],
  [
    'labels.heads "query" with group selection',
    withFields(LLAMA3_GROUP, { labels: { channels: 16, bits: 8, heads: "query" } }),
    "labels.heads",
    '"query"',
    ['"kv"'],
  ],
  [
    "budget ratio 0",
    withFields(TINY_HEAD, { budget: { ratio: 0 } }),
    "budget.ratio",
    "0",
    ["(0, 1]"],
  ],
  [
    "budget ratio 1.5",
    withFields(TINY_HEAD, { budget: { ratio: 1.5 } }),
    "budget.ratio",
    "1.5",
    ["(0, 1]"],
  ],
  [
    "budget min > max",
    withFields(TINY_HEAD, { budget: { ratio: 0.1, min: 64, max: 32 } }),
    "budget.max",
    "32",
    ["max >= min", "64"],
  ],
  [
    "budget with both tokens and ratio",
    withFields(TINY_HEAD, { budget: { tokens: 64, ratio: 0.1 } }),
    "budget",
    'both "tokens" and "ratio"',
    ["exactly one"],
  ],
  [
    "denseThreshold -1",
    withFields(TINY_HEAD, { denseThreshold: -1 }),
    "denseThreshold",
    "-1",
    ["integer >= 0"],
  ],
  [
    "denseLayers duplicates",
    withFields(TINY_HEAD, { denseLayers: [0, 1, 1] }),
    "denseLayers",
    "[0,1,1]",
    ["at most once"],
  ],
  [
    "unknown field",
    withFields(TINY_HEAD, { headDims: 128 }),
    "headDims",
    "unknown field",
    ["headDim", "numQHeads", "denseLayers"],
  ],
];

for (const [what, input, field, bad, allowed] of INVALID) {
  Deno.test(`dsl: ${what} is rejected with a message naming the field, value and allowed values`, () => {
    const problems = problemsOf(input);
    assert.equal(problems.length, 1, `expected one problem, got:\n${problems.join("\n")}`);
    const p = problems[0];
    assert.ok(p.startsWith(`${field}:`), `problem does not start with "${field}:": ${p}`);
    assert.ok(p.includes(bad), `problem does not quote the bad value ${bad}: ${p}`);
    assert.match(p, /allowed/, p);
    for (const a of allowed) assert.ok(p.includes(a), `problem does not list ${a}: ${p}`);
  });
}

Deno.test("dsl: several problems are reported together, in the error message too", () => {
  const input = withFields(TINY_HEAD, {
    headDim: 96,
    kvDtype: "fp32",
    pageSize: 24,
    labels: { channels: 16, bits: 3 },
    denseThreshold: -1,
  });
  let error: unknown;
  try {
    defineAttention(input);
  } catch (e) {
    error = e;
  }
  assert.ok(error instanceof SpecError, "expected a SpecError");
  const fields = error.problems.map((p) => p.slice(0, p.indexOf(":")));
  assert.deepEqual(fields.sort(), [
    "denseThreshold",
    "headDim",
    "kvDtype",
    "labels.bits",
    "pageSize",
  ]);
  assert.match(error.message, /\(5 problems\)/);
  for (const p of error.problems) assert.ok(error.message.includes(p), p);
});

Deno.test("dsl: variant names are stable, distinct per kernel parameter, blind to run-time policy", () => {
  // The documented format, spelled out for a few inputs.
  assert.equal(defineAttention(LLAMA3_GROUP).variant, "ds_d128_q32_kv8_p16_fp16_r16b8_group");
  assert.equal(defineAttention(TINY_HEAD).variant, "ds_d128_q4_kv2_p16_fp16_r16b16_head");
  assert.equal(
    defineAttention({ ...TINY_HEAD, labels: { channels: 16, bits: 16, heads: "kv" } }).variant,
    "ds_d128_q4_kv2_p16_fp16_r16b16_headkv",
  );

  // Each change of a parameter that changes the kernels gives a new name.
  const changes: Partial<AttentionInput>[] = [
    {},
    { headDim: 64 },
    { numQHeads: 8 },
    { numKvHeads: 4 },
    { kvDtype: "bf16" },
    { pageSize: 32 },
    { labels: { channels: 32, bits: 16 } },
    { labels: { channels: 16, bits: 8 } },
    { labels: { channels: 16, bits: 16, heads: "kv" } },
    { selection: "group" },
  ];
  const names = changes.map((c) => defineAttention({ ...TINY_HEAD, ...c }).variant);
  assert.equal(new Set(names).size, names.length, `names collide: ${names.join(", ")}`);
  for (const n of names) assert.match(n, VARIANT_FORMAT);

  // Run-time policy (budget, dense threshold, dense layers) and spelled-out defaults do not.
  const base = defineAttention(LLAMA3_GROUP).variant;
  const same = [
    { budget: { tokens: 512 } },
    { budget: { ratio: 1 / 8, min: 1, max: 100 } },
    { denseThreshold: 4096 },
    { denseLayers: [0, 1, 31] },
    { labels: { channels: 16, bits: 8 as const, heads: "kv" as const } },
  ];
  for (const c of same) {
    assert.equal(defineAttention({ ...LLAMA3_GROUP, ...c }).variant, base, JSON.stringify(c));
  }
});

Deno.test("dsl: budgetFor and routeFor, checked by hand", () => {
  const ratio = defineAttention(TINY_HEAD); // ratio 1/16, min 16
  const cases: [number, number, "dense" | "sparse"][] = [
    [1, 1, "dense"], // min 16 capped at the context: every token -> dense
    [16, 16, "dense"],
    [17, 16, "sparse"], // ceil(17/16) = 2, raised to min 16
    [256, 16, "sparse"],
    [257, 17, "sparse"], // ceil(257/16) = 17
    [1000, 63, "sparse"], // ceil(62.5)
  ];
  for (const [len, k, route] of cases) {
    assert.equal(budgetFor(ratio.budget, len), k, `budget at ${len}`);
    assert.equal(routeFor(ratio, len), route, `route at ${len}`);
  }

  const capped = defineAttention({ ...TINY_HEAD, budget: { ratio: 1 / 16, min: 16, max: 4096 } });
  assert.equal(budgetFor(capped.budget, 131072), 4096); // 8192 capped

  const fixed = defineAttention({ ...TINY_HEAD, budget: { tokens: 256 }, denseThreshold: 1024 });
  assert.deepEqual(fixed.budget, { kind: "fixed", tokens: 256 });
  assert.equal(budgetFor(fixed.budget, 100), 100);
  assert.equal(budgetFor(fixed.budget, 5000), 256);
  assert.equal(routeFor(fixed, 1023), "dense"); // under the threshold
  assert.equal(routeFor(fixed, 1024), "sparse");
  const noThreshold = defineAttention({ ...TINY_HEAD, budget: { tokens: 256 } });
  assert.equal(routeFor(noThreshold, 256), "dense"); // the budget covers every token
  assert.equal(routeFor(noThreshold, 257), "sparse");
});

Deno.test("dsl: denseLayers are kept sorted and frozen; defaults are filled in", () => {
  const s = defineAttention({ ...TINY_HEAD, denseLayers: [3, 0, 1] });
  assert.deepEqual([...s.denseLayers], [0, 1, 3]);
  const d = defineAttention(TINY_HEAD);
  assert.deepEqual([...d.denseLayers], []);
  assert.equal(d.denseThreshold, 0);
  assert.deepEqual(d.budget, {
    kind: "ratio",
    ratio: 1 / 16,
    min: 16,
    max: Number.MAX_SAFE_INTEGER,
  });
});

Deno.test("labelHeadOfQueryHead: each query head reads the channels of its selection head's label head", async () => {
  const specs = [
    ...(await loadSpecs()),
    defineAttention(LLAMA3_GROUP),
    defineAttention({ ...LLAMA3_GROUP, selection: "head" }),
    defineAttention({
      ...LLAMA3_GROUP,
      selection: "head",
      labels: { ...LLAMA3_GROUP.labels, heads: "query" },
    }),
    defineAttention({
      ...LLAMA3_GROUP,
      selection: "head",
      labels: { ...LLAMA3_GROUP.labels, heads: "kv" },
    }),
    defineAttention(TINY_HEAD),
  ];
  for (const spec of specs) {
    const seen = new Array<number>(spec.numQHeads).fill(-1);
    const selHeads = spec.selection === "group" ? spec.numKvHeads : spec.numQHeads;
    for (let sh = 0; sh < selHeads; sh++) {
      for (const qh of queryHeadsOfSelectionHead(spec, sh)) {
        assert.equal(seen[qh], -1, `${spec.variant}: query head ${qh} in two selection heads`);
        seen[qh] = labelHeadOfSelectionHead(spec, sh);
        // A selection head attends the K/V rows of its query heads' kv head (GQA).
        assert.equal(
          kvHeadOfSelectionHead(spec, sh),
          Math.floor(qh / spec.groupSize),
          `${spec.variant}: selection head ${sh}`,
        );
      }
    }
    for (let qh = 0; qh < spec.numQHeads; qh++) {
      assert.equal(labelHeadOfQueryHead(spec, qh), seen[qh], `${spec.variant}: query head ${qh}`);
      assert.ok(
        seen[qh] >= 0 && seen[qh] < spec.numLabelHeads,
        `${spec.variant}: query head ${qh}`,
      );
    }
  }
});
