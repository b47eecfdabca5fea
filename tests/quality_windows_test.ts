import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { loadModel } from "../src/checkpoint/weights.ts";
import {
  cutWindows,
  evaluateBitsPerByteCpu,
  readWindows,
  windowInput,
  windowTargets,
} from "../src/quality/windows.ts";

const MODEL_DIR = fileURLToPath(new URL("../examples/models/tiny-code-llama-8k", import.meta.url));
const HELDOUT = fileURLToPath(new URL("../examples/data/python-heldout.txt", import.meta.url));

Deno.test("windows: window i is bytes [i*T, (i+1)*T + 1)", () => {
  const bytes = Uint8Array.from({ length: 10 }, (_, i) => i);
  const windows = cutWindows(bytes, 3, 3, "ten.bin");
  assert.deepEqual(windows.map((w) => Array.from(w)), [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]);
  assert.deepEqual(windowInput(windows[1]), [3, 4, 5]);
  assert.deepEqual(windowTargets(windows[1]), [4, 5, 6]);
  assert.throws(
    () => cutWindows(bytes, 3, 4, "ten.bin"),
    /ten\.bin: 10 bytes is too short for 4 window\(s\) of 3 \(needs 13 bytes\)/,
  );
  assert.throws(() => cutWindows(bytes, 0, 1), /window length 0/);
  assert.throws(() => cutWindows(bytes, 2, 0), /window count 0/);
});

Deno.test("windows: protocol files are long enough; errors name the file", async () => {
  const windows = await readWindows(HELDOUT);
  assert.equal(windows.length, 48);
  assert.equal(windows[47].length, 2049);
  await assert.rejects(readWindows(HELDOUT, 2048, 200), /python-heldout\.txt: 300000 bytes/);
  await assert.rejects(readWindows("no/such/file.txt"), /no\/such\/file\.txt: cannot read/);
});

Deno.test("windows: teacher-forced bits per byte on one 64-byte window", async () => {
  const model = await loadModel(MODEL_DIR);
  const [window] = await readWindows(HELDOUT, 64, 1);
  const bpb = evaluateBitsPerByteCpu(model, [window]);
  console.log(`bits/byte on heldout bytes [0, 65): ${bpb.toFixed(4)}`);
  assert.ok(Number.isFinite(bpb) && bpb > 0 && bpb < 8, `bpb ${bpb}`);
});
