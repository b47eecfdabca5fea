import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { parseModelConfig, readModelConfig } from "../src/checkpoint/config.ts";

const CONFIG_PATH = fileURLToPath(
  new URL("../examples/models/tiny-code-llama/config.json", import.meta.url),
);

const MINIMAL = {
  model_type: "llama",
  hidden_size: 256,
  intermediate_size: 512,
  num_hidden_layers: 2,
  num_attention_heads: 8,
  vocab_size: 1000,
};

Deno.test("config: tiny-code-llama", async () => {
  assert.deepEqual(await readModelConfig(CONFIG_PATH), {
    modelType: "llama",
    hiddenSize: 512,
    intermediateSize: 1408,
    numLayers: 4,
    numHeads: 4,
    numKvHeads: 2,
    headDim: 128,
    vocabSize: 256,
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    tieWordEmbeddings: false,
    attentionBias: false,
    maxPositionEmbeddings: 4096,
    slidingWindow: null,
  });
});

Deno.test("config: defaults and model-type specifics", () => {
  const c = parseModelConfig(MINIMAL);
  assert.equal(c.headDim, 32);
  assert.equal(c.numKvHeads, 8);
  assert.equal(c.ropeTheta, 10000);
  assert.equal(c.attentionBias, false);
  assert.equal(c.tieWordEmbeddings, false);
  assert.equal(parseModelConfig({ ...MINIMAL, rope_theta: 1e6 }).ropeTheta, 1e6);
  assert.equal(
    parseModelConfig({ ...MINIMAL, rope_parameters: { rope_type: "default", rope_theta: 5e5 } })
      .ropeTheta,
    5e5,
  );
  assert.equal(parseModelConfig({ ...MINIMAL, head_dim: 64 }).headDim, 64);
  const qwen = parseModelConfig({
    ...MINIMAL,
    model_type: "qwen2",
    num_key_value_heads: 2,
    sliding_window: 4096,
    use_sliding_window: false,
    tie_word_embeddings: true,
  });
  assert.equal(qwen.attentionBias, true);
  assert.equal(qwen.slidingWindow, null);
  assert.equal(qwen.tieWordEmbeddings, true);
  assert.equal(qwen.numKvHeads, 2);
  const mistral = parseModelConfig({ ...MINIMAL, model_type: "mistral", sliding_window: 4096 });
  assert.equal(mistral.slidingWindow, 4096);
  assert.equal(mistral.attentionBias, false);
});

Deno.test("config: unsupported or bad fields are named", () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [
      { ...MINIMAL, rope_scaling: { rope_type: "linear", factor: 2 } },
      /rope_scaling\.rope_type.*"linear".*"default"/,
    ],
    [{ ...MINIMAL, rope_parameters: { rope_type: "yarn" } }, /rope_parameters\.rope_type.*"yarn"/],
    [{ ...MINIMAL, hidden_act: "gelu" }, /"hidden_act" is "gelu"; expected "silu"/],
    [
      { ...MINIMAL, num_key_value_heads: 3 },
      /"num_key_value_heads" is 3; expected a divisor of num_attention_heads \(8\)/,
    ],
    [{ ...MINIMAL, hidden_size: undefined }, /required field "hidden_size" is missing/],
    [{ ...MINIMAL, vocab_size: -1 }, /"vocab_size" is -1; expected a positive integer/],
    [
      { ...MINIMAL, model_type: "gpt2" },
      /"model_type" is "gpt2"; expected one of llama, mistral, qwen2/,
    ],
    [{ ...MINIMAL, mlp_bias: true }, /"mlp_bias"/],
    [{ ...MINIMAL, head_dim: 33 }, /"head_dim" is 33; expected an even number/],
  ];
  for (const [raw, pattern] of cases) {
    assert.throws(() => parseModelConfig(raw, "bad/config.json"), (e: Error) => {
      assert.match(e.message, /^bad\/config\.json: /);
      assert.match(e.message, pattern);
      return true;
    });
  }
});
