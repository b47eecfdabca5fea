/**
 * The frontier's pure part (src/quality/frontier.ts, frontier_report.ts): the grids and their
 * validation, the Pareto front on hand-made points, the recommendation rule, the model-level
 * speedup, and the rendered table and plot.
 */
import assert from "node:assert/strict";
import { idealByteRatio } from "../src/dsl/spec.ts";
import {
  accuracyCost,
  type AttentionShape,
  dominates,
  gridPoints,
  modelSpeedup,
  paretoFront,
  planGrid,
  pointName,
  pointPreset,
  recommend,
  TIMING_SHAPES,
} from "../src/quality/frontier.ts";
import {
  buildFrontier,
  frontierMarkdown,
  type FrontierRow,
  type FrontierSettings,
  frontierSvg,
} from "../src/quality/frontier_report.ts";

const TINY: AttentionShape = {
  name: "tiny",
  headDim: 128,
  numQHeads: 4,
  numKvHeads: 2,
  numLayers: 4,
};
const LLAMA2 = TIMING_SHAPES.find((s) => s.name === "llama2-7b")!;

Deno.test("frontier grid: quick covers every axis's extremes; full is the whole product", () => {
  const quick = gridPoints("quick");
  assert.ok(quick.length >= 12 && quick.length <= 20, `quick has ${quick.length}`);
  const values = <K extends keyof (typeof quick)[0]>(k: K) => new Set(quick.map((p) => p[k]));
  for (const c of [8, 64]) assert.ok(values("channels").has(c), `channels ${c}`);
  for (const b of [16, 2]) assert.ok(values("bits").has(b as 16 | 2), `bits ${b}`);
  for (const d of [8, 64]) assert.ok(values("budgetDivisor").has(d), `budget 1/${d}`);
  assert.deepEqual([...values("selection")].sort(), ["group", "head"]);
  assert.deepEqual(
    [...new Set(quick.map((p) => p.denseLayers.join(",")))].sort(),
    ["", "0,1"],
  );
  const full = gridPoints("full");
  assert.equal(full.length, 4 * 4 * 4 * 2 * 2);
  assert.equal(new Set(full.map(pointName)).size, full.length, "full: names are distinct");
  assert.equal(new Set(quick.map(pointName)).size, quick.length, "quick: names are distinct");
});

Deno.test("frontier grid: invalid variants are listed with the reason, on each shape", () => {
  const { variants, skipped } = planGrid("quick", TINY, LLAMA2);
  assert.equal(variants.length + skipped.length, gridPoints("quick").length);
  const r8b2 = skipped.find((s) => s.name === "head r8 b2 1/64 dense 0,1");
  assert.ok(r8b2, "r8 b2 (16 bits per row) is skipped");
  assert.match(r8b2.reason, /^tiny: labels\.channels: got 8 at 2 bits/);
  assert.match(r8b2.reason, /llama2-7b: labels\.channels/);
  for (const v of variants) {
    assert.equal(v.modelSpec.numQHeads, 4);
    assert.equal(v.timingSpec.numQHeads, 32);
    assert.equal(v.timingSpec.budget.kind, "ratio");
  }
  // A two-layer model: "dense 0,1" is the dense row itself.
  const two = planGrid("quick", { ...TINY, name: "two", numLayers: 2 }, LLAMA2);
  const allDense = two.skipped.filter((s) => /every one of its 2 layers is dense/.test(s.reason));
  assert.equal(allDense.length, gridPoints("quick").filter((p) => p.denseLayers.length).length);
  // A shape no variant fits: every one skipped, none silently.
  const bad = planGrid("quick", { ...TINY, name: "bad", numKvHeads: 3 }, TINY);
  assert.equal(bad.variants.length, 0);
  assert.ok(bad.skipped.every((s) => /numKvHeads: got 3/.test(s.reason)), bad.skipped[0].reason);
});

Deno.test("frontier grid: the quick grid holds variants whose byte floor passes 10x on Llama-2-7B", () => {
  // At MHA, SDPA reads what the dense kernel reads; 10x over SDPA needs a byte ratio above 10.
  const { variants } = planGrid("quick", TINY, LLAMA2);
  const over10 = variants.filter((v) =>
    idealByteRatio(v.timingSpec, 1 / v.point.budgetDivisor, true) > 10
  );
  assert.ok(
    over10.some((v) => v.point.denseLayers.length > 0 && v.point.bits === 4),
    over10.map((v) => v.name).join("; "),
  );
  assert.ok(over10.length >= 4, `${over10.length} variants over a 10x byte ratio`);
});

Deno.test("frontier grid: presets carry the budget of the point", () => {
  const pt = gridPoints("quick").find((p) => p.budgetDivisor === 64)!;
  const preset = pointPreset(pt);
  assert.deepEqual(preset.budget, { ratio: 1 / 64, min: 16 });
  assert.equal(preset.name, pointName(pt));
});

Deno.test("pareto: dominated points go, duplicates and trade-offs stay, unmeasured are left out", () => {
  const pts = [
    { id: "a", cost: 0, speedup: 1 },
    { id: "b", cost: 1, speedup: 5 },
    { id: "b2", cost: 1, speedup: 5 }, // duplicate of b: neither dominates the other
    { id: "c", cost: 1, speedup: 4 }, // same cost, slower: dominated by b
    { id: "d", cost: 2, speedup: 5 }, // same speed, costlier: dominated by b
    { id: "e", cost: 3, speedup: 9 },
    { id: "f", cost: 4, speedup: 8 }, // dominated by e
    { id: "g", cost: -0.5, speedup: 0.9 }, // better than dense on accuracy: on the front
    { id: "n", cost: NaN, speedup: 100 },
    { id: "m", cost: 0, speedup: Infinity },
  ];
  assert.deepEqual(paretoFront(pts).map((p) => p.id), ["g", "a", "b", "b2", "e"]);
  assert.ok(dominates({ cost: 1, speedup: 5 }, { cost: 1, speedup: 4 }));
  assert.ok(!dominates({ cost: 1, speedup: 5 }, { cost: 1, speedup: 5 }));
  assert.deepEqual(paretoFront([]), []);
});

Deno.test("recommend: the fastest within the bound on both metrics; ties to the lower cost", () => {
  const row = (name: string, bpb: number, drop: number, speedup: number) => ({
    name,
    bitsPerByteLossPct: bpb,
    retrievalDropPts: drop,
    speedup,
  });
  const rows = [
    row("safe", 0.2, 0, 3),
    row("fast but forgets", 0.5, 5, 12), // bits/byte fine, retrieval not
    row("fast but vague", 4, 0, 11), // retrieval fine, bits/byte not
    row("ok3", 2.5, 1.7, 8),
    row("ok3 tie worse", 2.9, 1, 8),
    row("ok1", 0.9, 1, 6),
  ];
  assert.equal(recommend(rows, 1)?.name, "ok1");
  assert.equal(recommend(rows, 3)?.name, "ok3");
  assert.equal(recommend(rows, 0.1), undefined);
  assert.equal(accuracyCost(rows[1]), 5);
  assert.equal(accuracyCost({ bitsPerByteLossPct: -1, retrievalDropPts: -2 }), -1);
});

Deno.test("modelSpeedup: dense layers keep the dense kernel", () => {
  assert.equal(modelSpeedup(1, 0.1, 1, 32, 0), 10);
  // 30 sparse layers at 0.1 + 2 dense at 1 = 5 ms vs 32 ms.
  assert.equal(modelSpeedup(1, 0.1, 1, 32, 2), 32 / 5);
  // Against a baseline slower than the dense kernel (SDPA).
  assert.equal(modelSpeedup(2, 0.1, 1, 4, 2), 8 / 2.2);
});

const SETTINGS: FrontierSettings = {
  date: "2026-11-26",
  device: "Test GPU",
  model: "tiny",
  modelShape: TINY,
  timingShape: LLAMA2,
  batch: 8,
  context: 32768,
  grid: "quick",
  evalData: "examples/data/python-heldout.txt",
  windows: 8,
  windowSize: 8192,
  retrievalData: "examples/data/line-retrieval.jsonl",
  retrievalDocuments: 180,
  channels: "examples/data/tiny-code-llama-8k-qk-channels.json",
  bandwidth: 3e12,
  sdpaNote: "PyTorch 2.11 on Test GPU",
  repeats: 30,
};

function fakeRow(name: string, bpb: number, drop: number, stepMs: number): FrontierRow {
  return {
    name,
    variant: `ds_${name.replace(/\W+/g, "_")}`,
    bitsPerByte: 0.85 * (1 + bpb / 100),
    bitsPerByteLossPct: bpb,
    retrievalAccuracy: 0.8 - drop / 100,
    retrievalDropPts: drop,
    deployedAccuracy: 0.8,
    meanRecall: 0.9,
    stepMs,
    floorMs: stepMs / 2,
    bytes: 1e6,
    speedup: modelSpeedup(1, stepMs, 1, 32, 2),
    speedupVsSdpa: modelSpeedup(1.1, stepMs, 1, 32, 2),
    stepSpeedup: 1 / stepMs,
    stepSpeedupVsSdpa: 1.1 / stepMs,
  };
}

Deno.test("frontier report: fronts, recommendations, the 10x list and the skipped in the table", () => {
  const rows = [
    fakeRow("head r64 b16 1/8 dense 0,1", 0.3, 0, 0.25),
    fakeRow("head r32 b4 1/16 dense 0,1", 0.9, 0.6, 0.12),
    fakeRow("head r16 b4 1/64 dense 0,1", 2.8, 1.1, 0.08),
    fakeRow("head r16 b4 1/64", 30, 40, 0.05),
    fakeRow("head r16 b16 1/16 dense 0,1", 12, 0, 0.2), // dominated
  ];
  const record = buildFrontier(
    SETTINGS,
    {
      bitsPerByte: 0.85,
      retrievalAccuracy: 0.8,
      deployedAccuracy: 0.81,
      stepMs: 1,
      floorMs: 0.9,
      sdpaStepMs: 1.1,
    },
    rows,
    [{ name: "head r8 b2 1/64 dense 0,1", reason: "tiny: labels.channels: got 8 at 2 bits" }],
    12,
  );
  assert.deepEqual(record.front, [
    "head r64 b16 1/8 dense 0,1",
    "head r32 b4 1/16 dense 0,1",
    "head r16 b4 1/64 dense 0,1",
    "head r16 b4 1/64",
  ]);
  assert.deepEqual(record.recommendations, [
    { boundPct: 1, name: "head r32 b4 1/16 dense 0,1" },
    { boundPct: 3, name: "head r16 b4 1/64 dense 0,1" },
  ]);
  assert.ok(!record.frontBitsPerByte.includes("head r16 b16 1/16 dense 0,1"));
  const md = frontierMarkdown(record, "frontier-tiny.svg");
  assert.match(md, /\| <= 1% \| head r32 b4 1\/16 dense 0,1 \| /);
  assert.match(md, /\| <= 3% \| head r16 b4 1\/64 dense 0,1 \| /);
  // 1.1 / 0.08 = 13.75x and 1.1 / 0.05 = 22x over SDPA, each with its accuracy cost.
  assert.match(
    md,
    /- head r16 b4 1\/64 dense 0,1: 13\.75x over SDPA; .*bits\/byte \+2\.80%, retrieval -1\.1 pts/,
  );
  assert.match(md, /- head r16 b4 1\/64: 22\.00x over SDPA/);
  assert.match(md, /!\[frontier\]\(frontier-tiny\.svg\)/);
  assert.match(md, /## Skipped \(invalid\)\n\n- head r8 b2 1\/64 dense 0,1: tiny: labels/);
  const tableRows = md.split("\n").filter((l) => /^\| (\*\*yes\*\*)? \| head/.test(l));
  assert.equal(tableRows.length, rows.length);
  assert.equal(tableRows.filter((l) => l.startsWith("| **yes**")).length, 4);

  const none = buildFrontier(SETTINGS, record.dense, [rows[3]], [], 1);
  assert.deepEqual(none.recommendations.map((r) => r.name), [null, null]);
  assert.match(frontierMarkdown(none), /\| <= 1% \| none within the bound \|/);

  const svg = frontierSvg(record);
  assert.ok(svg.startsWith("<svg") && svg.trimEnd().endsWith("</svg>"));
  assert.equal((svg.match(/<circle /g) ?? []).length, rows.length);
  assert.equal((svg.match(/fill="#d62728"\/>/g) ?? []).length, 4, "front points in red");
  assert.equal((svg.match(/stroke-dasharray/g) ?? []).length, 2, "the 1% and 3% marks");
});
