import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import {
  calibrateCpu,
  ChannelStatistics,
  groupRanking,
  rankChannels,
} from "../src/quality/calibration.ts";
import { formatChannelConfig, readChannelConfig } from "../src/quality/channel_config.ts";
import { loadModel } from "../src/checkpoint/weights.ts";
import { cutWindows, windowInput } from "../src/quality/windows.ts";

const MODEL_DIR = fileURLToPath(new URL("../examples/models/tiny-code-llama-8k", import.meta.url));
const CALIBRATION_TEXT = fileURLToPath(
  new URL("../examples/data/python-calibration.txt", import.meta.url),
);
const QK_FILE = fileURLToPath(
  new URL("./fixtures/tiny-code-llama-8k-python-2x512-qk-channels.json", import.meta.url),
);

Deno.test("calibration: ranking by descending value, ties to the lower channel", () => {
  assert.deepEqual(rankChannels([0.5, 2, 0.5, 3, 2]), [3, 1, 4, 0, 2]);
  // kv head 0 groups query heads 0,1; kv head 1 groups 2,3.
  const stat = [[1, 0, 0], [0, 2, 0], [5, 0, 0], [0, 0, 1]];
  assert.deepEqual(groupRanking(stat, 2), [[1, 0, 2], [0, 2, 1]]);
  assert.throws(() => groupRanking(stat, 3), /4 query heads cannot be split into 3/);
});

Deno.test("calibration: window means summed over windows (hand-checked)", () => {
  const s = new ChannelStatistics(1, 2, 1, 3);
  s.beginWindow();
  s.add(0, [1, -2, 0, 0, 1, 3], [2, 1, -1]);
  s.add(0, [3, 0, 1, 1, 1, 1], [0, 1, 1]);
  s.endWindow();
  s.beginWindow();
  s.add(0, [0, 0, 4, 2, 0, 0], [1, 1, 1]);
  s.endWindow();
  // Window 1 means: q [2,1,.5] [.5,1,2]; k [1,1,1]; qk [1,1,.5] [0,1,2]. Window 2 (one position) adds
  // q [0,0,4] [2,0,0]; k [1,1,1]; qk [0,0,4] [2,0,0].
  assert.deepEqual(Array.from(s.values("q", 0, 0)), [2, 1, 4.5]);
  assert.deepEqual(Array.from(s.values("q", 0, 1)), [2.5, 1, 2]);
  assert.deepEqual(Array.from(s.values("k", 0, 0)), [2, 2, 2]);
  assert.deepEqual(Array.from(s.values("qk", 0, 0)), [1, 1, 4.5]);
  assert.deepEqual(Array.from(s.values("qk", 0, 1)), [2, 1, 2]);
  assert.deepEqual(s.rankings("q"), [[[2, 0, 1], [0, 2, 1]]]);
  assert.deepEqual(s.rankings("k"), [[[0, 1, 2]]]);
  assert.deepEqual(s.rankings("qk"), [[[2, 0, 1], [0, 2, 1]]]);
  // Group: [1, 1, 4.5] + [2, 1, 2] = [3, 2, 6.5].
  assert.deepEqual(s.groupRankings(), [[[2, 0, 1]]]);
  assert.equal(s.windows, 2);
  // The rankings form a valid channel config.
  assert.match(formatChannelConfig(s.toChannelConfig()), /"model\.layers\.0\.self_attn\.k_proj"/);
  assert.throws(() => s.add(0, [0, 0, 0, 0, 0, 0], [0, 0, 0]), /call beginWindow\(\) first/);
  s.beginWindow();
  assert.throws(() => s.add(0, [1], [1]), /q has 1 values and k 1; expected 6 and 3/);
  assert.throws(() => s.endWindow(), /layer 0 received no positions/);
});

Deno.test("calibration: CPU qk calibration on another window finds the same leading channels", async () => {
  const model = await loadModel(MODEL_DIR);
  const bytes = await Deno.readFile(CALIBRATION_TEXT);
  const windowLength = 512;
  // The fixture was calibrated on windows 0 and 1 of this text; window 2 is new to it.
  const window = cutWindows(bytes, windowLength, 3, CALIBRATION_TEXT)[2];
  const start = performance.now();
  const stats = calibrateCpu(model, [windowInput(window)]);
  const ms = performance.now() - start;
  const ours = stats.rankings("qk");
  const bundled = (await readChannelConfig(QK_FILE, model.config)).kinds.qk!;
  const overlaps = ours.map((layer, l) =>
    layer.map((row, h) => {
      const reference = new Set(bundled[l][h].slice(0, 16));
      return row.slice(0, 8).filter((c) => reference.has(c)).length;
    })
  );
  const flat = overlaps.flat();
  const mean = flat.reduce((a, b) => a + b, 0) / flat.length;
  console.log(
    `calibrated ${windowLength} tokens in ${ms.toFixed(0)} ms; top-8 qk channels found in the ` +
      `fixture's top-16, per layer [head...]: ${JSON.stringify(overlaps)}; mean ${mean.toFixed(2)}`,
  );
  assert.ok(mean >= 6, `mean overlap ${mean}`);
  assert.ok(Math.min(...flat) >= 3, `worst head overlap ${Math.min(...flat)}`);
});
