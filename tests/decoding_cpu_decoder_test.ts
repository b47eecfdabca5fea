import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import type { ModelConfig } from "../src/checkpoint/config.ts";
import { type CpuAttention, CpuDecoder, DenseAttention } from "../src/decoding/cpu_decoder.ts";
import { randomModel, syntheticConfig } from "../src/checkpoint/synthetic.ts";
import { loadModel } from "../src/checkpoint/weights.ts";

const MODEL_DIR = fileURLToPath(new URL("../examples/models/tiny-code-llama-8k", import.meta.url));
const REFERENCE = fileURLToPath(
  new URL("./fixtures/tiny-code-llama-8k-reference.json", import.meta.url),
);

interface Reference {
  input_ids: number[];
  logits: number[][];
  greedy_continuation_ids: number[];
}

Deno.test("cpu decoder: matches transformers on tiny-code-llama-8k", async () => {
  const ref = JSON.parse(await Deno.readTextFile(REFERENCE)) as Reference;
  const model = await loadModel(MODEL_DIR);
  const decoder = new CpuDecoder(model);
  const vocab = model.config.vocabSize;

  let start = performance.now();
  const logits = decoder.forward(ref.input_ids);
  const forwardMs = performance.now() - start;
  assert.equal(logits.length, ref.input_ids.length * vocab);
  assert.equal(decoder.length, ref.input_ids.length);
  let diff = 0, norm = 0;
  ref.logits.forEach((row, t) =>
    row.forEach((r, j) => {
      diff += (logits[t * vocab + j] - r) ** 2;
      norm += r * r;
    })
  );
  const relativeError = Math.sqrt(diff / norm);

  decoder.reset();
  start = performance.now();
  const continuation = decoder.generateGreedy(ref.input_ids, ref.greedy_continuation_ids.length);
  const greedyMs = performance.now() - start;
  console.log(
    `relative logit error ${relativeError.toExponential(3)}; forward of ` +
      `${ref.input_ids.length} tokens ${forwardMs.toFixed(0)} ms; greedy ` +
      `${ref.input_ids.length}+${continuation.length} tokens ${greedyMs.toFixed(0)} ms`,
  );
  assert.ok(relativeError < 1e-3, `relative error ${relativeError}`);
  assert.deepEqual(continuation, ref.greedy_continuation_ids);
});

Deno.test("cpu decoder: incremental forward equals one-shot forward", () => {
  const model = randomModel(syntheticConfig({ attentionBias: true, numKvHeads: 1 }), 7);
  const tokens = [3, 250, 17, 17, 99, 0, 42, 128];
  const oneShot = new CpuDecoder(model).forward(tokens);
  const decoder = new CpuDecoder(model);
  const parts = [decoder.forward(tokens.slice(0, 3)), decoder.forward(tokens.slice(3))];
  const incremental = new Float32Array(oneShot.length);
  incremental.set(parts[0]);
  incremental.set(parts[1], parts[0].length);
  assert.deepEqual(incremental, oneShot);
  assert.throws(() => decoder.forward([256]), /token id 256 is outside the vocabulary \[0, 256\)/);
});

Deno.test("cpu decoder: pluggable attention and the QK hook see the documented shapes", () => {
  const config = syntheticConfig({ numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 16 });
  const model = randomModel(config, 3);
  const calls: string[] = [];
  const hooks: string[] = [];
  const dense = new DenseAttention();
  const recording: CpuAttention = {
    attend(layer, q, keys, values, len, c: ModelConfig) {
      calls.push(`${layer}:${len}:${q.length}:${keys.length}:${values.length}`);
      return dense.attend(layer, q, keys, values, len, c);
    },
  };
  const decoder = new CpuDecoder(model, {
    attention: recording,
    onQK: (layer, position, q, k) => hooks.push(`${layer}@${position}:${q.length}/${k.length}`),
  });
  const out = decoder.forward([1, 2, 3]);
  assert.deepEqual(calls, [
    "0:1:64:32:32",
    "1:1:64:32:32",
    "0:2:64:64:64",
    "1:2:64:64:64",
    "0:3:64:96:96",
    "1:3:64:96:96",
  ]);
  assert.deepEqual(hooks, [
    "0@0:64/32",
    "1@0:64/32",
    "0@1:64/32",
    "1@1:64/32",
    "0@2:64/32",
    "1@2:64/32",
  ]);
  assert.deepEqual(out, new CpuDecoder(model).forward([1, 2, 3]));
});

Deno.test("cpu decoder: dense attention is a softmax-weighted average over its GQA kv head", () => {
  const config = syntheticConfig({ numHeads: 2, numKvHeads: 1, headDim: 2 });
  // Two cached tokens; query head 0 prefers token 1, head 1 is indifferent.
  const q = new Float32Array([0, 1, 0, 0]);
  const keys = new Float32Array([1, 0, 0, Math.SQRT2 * Math.log(3)]);
  const values = new Float32Array([10, 0, 0, 10]);
  const out = new DenseAttention().attend(0, q, keys, values, 2, config);
  // head 0: scores 0 and log 3 -> weights 1/4, 3/4
  assert.ok(Math.abs(out[0] - 2.5) < 1e-5 && Math.abs(out[1] - 7.5) < 1e-5);
  assert.ok(Math.abs(out[2] - 5) < 1e-5 && Math.abs(out[3] - 5) < 1e-5);
});

Deno.test("cpu decoder: a sliding window of W attends to the last W rows only", () => {
  const window = 3;
  const plain = syntheticConfig({ numHeads: 2, numKvHeads: 1, headDim: 4 });
  const windowed: ModelConfig = { ...plain, slidingWindow: window };
  const rowSize = plain.numKvHeads * plain.headDim;
  const len = 7;
  const keys = Float32Array.from({ length: len * rowSize }, (_, i) => Math.sin(i * 1.3));
  const values = Float32Array.from({ length: len * rowSize }, (_, i) => Math.cos(i * 0.7));
  const q = Float32Array.from({ length: plain.numHeads * plain.headDim }, (_, i) => i - 3);
  const attention = new DenseAttention();
  const last = attention.attend(
    0,
    q,
    keys.subarray((len - window) * rowSize),
    values.subarray((len - window) * rowSize),
    window,
    plain,
  );
  assert.deepEqual(attention.attend(0, q, keys, values, len, windowed), last);
  const all = attention.attend(0, q, keys, values, len, plain);
  assert.notDeepEqual(all, last);
  // Within the window nothing changes.
  assert.deepEqual(
    attention.attend(0, q, keys, values, window, windowed),
    attention.attend(0, q, keys, values, window, plain),
  );
});

Deno.test("cpu decoder: RoPE scaling from the config reaches the decoder", () => {
  const config = syntheticConfig({ numLayers: 1 });
  const model = randomModel(config, 3);
  const tokens = [5, 9, 200, 31, 64, 2, 7, 7];
  const run = (ropeScaling: ModelConfig["ropeScaling"]) =>
    new CpuDecoder({ ...model, config: { ...config, ropeScaling } }).forward(tokens);
  const plain = run(undefined);
  assert.deepEqual(run({ type: "default" }), plain);
  // Position 0 is not rotated: its logits cannot depend on the frequencies.
  const linear = run({ type: "linear", factor: 4 });
  const vocab = config.vocabSize;
  assert.deepEqual(linear.subarray(0, vocab), plain.subarray(0, vocab));
  assert.notDeepEqual(linear.subarray(vocab), plain.subarray(vocab));
});
