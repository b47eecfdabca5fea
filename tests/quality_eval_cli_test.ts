import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { readChannelConfig } from "../src/quality/channel_config.ts";
import {
  readChannelStatistics,
  statisticsToFile,
  statsPathFor,
  writeChannelStatistics,
} from "../src/quality/calibrate_run.ts";
import { calibrateCpu } from "../src/quality/calibration.ts";
import { EVAL_PRESETS, findPreset, parsePresetList, presetSpec } from "../src/cli/eval.ts";
import { evaluateCpu, presetVariant } from "../src/quality/evaluate.ts";
import { loadModel } from "../src/checkpoint/weights.ts";
import { readWindows, windowInput } from "../src/quality/windows.ts";
import { runScript, withTempDir } from "./helpers.ts";

const MODEL_DIR = fileURLToPath(new URL("../examples/models/tiny-code-llama-8k", import.meta.url));
const QK_FILE = fileURLToPath(
  new URL("./fixtures/tiny-code-llama-8k-python-2x512-qk-channels.json", import.meta.url),
);
const HELDOUT = fileURLToPath(new URL("../examples/data/python-heldout.txt", import.meta.url));
const CALIBRATION = fileURLToPath(
  new URL("../examples/data/python-calibration.txt", import.meta.url),
);

Deno.test("eval: the presets are the rows of the accuracy table", async () => {
  const model = await loadModel(MODEL_DIR);
  const c = model.config;
  const expected: [string, string | undefined, number, number, number[], number][] = [
    // name, selection, r, bits, dense layers, bits/byte of docs/method.md
    ["dense", undefined, 0, 0, [], 0.8978],
    ["head r16 b16", "head", 16, 16, [], 1.1887],
    ["head r16 b16 dense 0,1", "head", 16, 16, [0, 1], 0.9910],
    ["head r32 b4", "head", 32, 4, [], 0.9802],
    ["head r32 b4 dense 0,1", "head", 32, 4, [0, 1], 0.9171],
    ["head r64 b2 dense 0,1", "head", 64, 2, [0, 1], 0.9250],
    ["group r16 b16 dense 0,1", "group", 16, 16, [0, 1], 1.0853],
    ["head r16 b16 random dense 0,1", "head", 16, 16, [0, 1], 1.4769],
    ["oracle", "head", 128, 16, [], 0.9356],
  ];
  assert.deepEqual(EVAL_PRESETS.map((p) => p.name), expected.map((e) => e[0]));
  for (const [name, selection, r, bits, denseLayers, value] of expected) {
    const preset = findPreset(name);
    assert.equal(preset.expected, value);
    const spec = presetSpec(preset, c);
    if (!selection) {
      assert.equal(spec, undefined);
      continue;
    }
    assert.ok(spec);
    assert.equal(spec.selection, selection, name);
    assert.equal(spec.labelChannels, r, name);
    assert.equal(spec.labelBits, bits, name);
    assert.deepEqual([...spec.denseLayers], denseLayers, name);
    assert.equal(spec.labelHeads, selection === "group" ? "kv" : "query");
    assert.deepEqual(spec.budget, {
      kind: "ratio",
      ratio: 1 / 16,
      min: 16,
      max: Number.MAX_SAFE_INTEGER,
    });
    assert.equal(spec.denseThreshold, 0);
    assert.equal(spec.pageSize, 16);
    assert.equal(spec.kvDtype, "fp16");
  }
});

Deno.test("eval: preset lists keep the commas of 'dense 0,1'", () => {
  assert.deepEqual(
    parsePresetList("dense,head r16 b16 dense 0,1,oracle").map((p) => p.name),
    ["dense", "head r16 b16 dense 0,1", "oracle"],
  );
  assert.deepEqual(
    parsePresetList(" Head R32 B4  dense 0, 1 ; group r16 b16 dense 0,1").map((p) => p.name),
    ["head r32 b4 dense 0,1", "group r16 b16 dense 0,1"],
  );
  assert.equal(parsePresetList(undefined).length, EVAL_PRESETS.length);
  assert.equal(parsePresetList("all").length, EVAL_PRESETS.length);
  assert.throws(() => findPreset("head r8 b8"), /unknown variant "head r8 b8"; known: "dense"/);
});

Deno.test("eval: CPU teacher forcing gives finite bits per byte", async () => {
  const model = await loadModel(MODEL_DIR);
  const config = await readChannelConfig(QK_FILE, model.config);
  const windows = await readWindows(HELDOUT, 48, 1);
  const variants = ["dense", "head r16 b16 dense 0,1", "group r16 b16 dense 0,1"].map((name) =>
    presetVariant(findPreset(name), model.config, { config })
  );
  // Without statistics, group channels come from a Borda count (and the variant says so).
  assert.match(variants[2].note ?? "", /Borda/);
  const rows = evaluateCpu(model, windows, variants);
  for (const row of rows) {
    console.log(
      `${row.name}: ${row.bitsPerByte.toFixed(4)} bits/byte, recall ` +
        `[${row.recallPerLayer.map((x) => x.toFixed(3))}], ${row.seconds.toFixed(2)} s`,
    );
    assert.ok(row.bitsPerByte > 0 && row.bitsPerByte < 8, `${row.name}: ${row.bitsPerByte}`);
    assert.equal(row.device, "cpu");
  }
  assert.equal(rows[0].variant, "dense");
  assert.deepEqual(rows[0].denseLayers, [0, 1, 2, 3]);
  assert.equal(rows[0].relativeToDense, 0);
  assert.equal(rows[1].variant, "ds_d128_q4_kv2_p16_fp16_r16b16_head");
  assert.deepEqual(rows[1].denseLayers, [0, 1]);
  assert.deepEqual(rows[1].recallPerLayer.slice(0, 2), [1, 1]);
  assert.ok(rows[1].recallPerLayer[2] > 0 && rows[1].recallPerLayer[2] < 1);
  assert.ok(Number.isFinite(rows[1].relativeToDense));
});

Deno.test("calibrate: statistics files round-trip exactly", async () => {
  const model = await loadModel(MODEL_DIR);
  const c = model.config;
  const windows = await readWindows(CALIBRATION, 24, 2);
  const stats = calibrateCpu(model, windows.map(windowInput));
  await withTempDir(async (dir) => {
    const file = join(dir, "x.stats.json");
    writeChannelStatistics(file, stats, { windowSize: 24 });
    const back = await readChannelStatistics(file);
    assert.deepEqual(statisticsToFile(back), statisticsToFile(stats));
    assert.deepEqual(back.groupRankings(), stats.groupRankings());
    assert.equal(back.windows, 2);
    assert.equal(back.numKvHeads, c.numKvHeads);
    await Deno.writeTextFile(file, JSON.stringify({ ...statisticsToFile(stats), headDim: 64 }));
    await assert.rejects(
      () => readChannelStatistics(file),
      /sums\.q has 2048 values, expected 1024/,
    );
  });
  assert.equal(statsPathFor("/a/b.json"), "/a/b.stats.json");
});

Deno.test("calibrate CLI: writes a channel config and statistics (CPU)", async () => {
  await withTempDir(async (dir) => {
    const out = join(dir, "channels.json");
    const r = await runScript("src/cli/calibrate.ts", [
      "--device",
      "cpu",
      "--windows",
      "1",
      "--window-size",
      "64",
      "--out",
      out,
      "--compare",
      QK_FILE,
      "--json",
      join(dir, "report", "calibrate.json"),
    ]);
    console.log(`calibrate CLI: ${r.ms.toFixed(0)} ms`);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.match(r.stdout, /calibrated on CPU \(cpu\)/);
    assert.match(r.stdout, /layer 3 head 3: \[\d+(, \d+){7}\] {2}top-16 agreement \d+\/16/);
    assert.match(r.stdout, /mean top-16 agreement/);
    const model = await loadModel(MODEL_DIR);
    const config = await readChannelConfig(out, model.config);
    assert.deepEqual(Object.keys(config.kinds).sort(), ["k", "q", "qk"]);
    const stats = await readChannelStatistics(join(dir, "channels.stats.json"));
    assert.equal(stats.windows, 1);
    assert.deepEqual(stats.rankings("qk"), config.kinds.qk);
    // --json: what was written and the rows printed (leading channels, agreement per head).
    assert.match(r.stderr, /\[set 1\/1\] \[#{30}\] 1\/1 windows, .* took [\d.]+ s/);
    const report = JSON.parse(Deno.readTextFileSync(join(dir, "report", "calibrate.json")));
    assert.equal(report.channels, out);
    assert.equal(report.stats, join(dir, "channels.stats.json"));
    assert.equal(report.compare, QK_FILE);
    assert.equal(report.heads.length, 16);
    const printed = r.stdout.match(/layer 3 head 3: \[([\d, ]+)\] {2}top-16 agreement (\d+)\/16/)!;
    const head = report.heads.find((h: { layer: number; head: number }) =>
      h.layer === 3 && h.head === 3
    );
    assert.equal(head.leading.join(", "), printed[1]);
    assert.equal(head.agreement, Number(printed[2]));
    assert.deepEqual(head.leading, config.kinds.qk![3][3].slice(0, 8));
    const mean = r.stdout.match(/mean top-16 agreement: ([\d.]+)\/16/)![1];
    assert.equal(report.meanTop16Agreement.toFixed(2), mean);
  });
});

Deno.test("decode example: CPU path prints both continuations", async () => {
  await withTempDir(async (dir) => {
    const promptFile = join(dir, "prompt.py");
    const text = new TextDecoder().decode((await Deno.readFile(HELDOUT)).subarray(0, 64));
    await Deno.writeTextFile(promptFile, text);
    const r = await runScript("examples/decode.ts", [
      "--device",
      "cpu",
      "--tokens",
      "4",
      "--prompt-file",
      promptFile,
      "--calibration-windows",
      "1",
      "--calibration-window-size",
      "64",
    ]);
    console.log(`decode example: ${r.ms.toFixed(0)} ms\n${r.stdout}`);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.match(r.stdout, /device: CPU \(--device cpu\)/);
    assert.match(r.stdout, /--- dense continuation ---/);
    assert.match(r.stdout, /--- double sparsity continuation ---/);
    assert.match(r.stdout, /agreement: \d\/4 tokens equal/);
    assert.match(r.stdout, /tiny-code-llama-8k-1x64\.json/);
  });
});
