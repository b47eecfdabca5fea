import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import {
  assertWithinSlidingWindow,
  parseModelConfig,
  readModelConfig,
  slidingWindowLimit,
} from "../src/checkpoint/config.ts";
import { configToJson, syntheticConfig } from "../src/checkpoint/synthetic.ts";

const CONFIG_PATH = fileURLToPath(
  new URL("../examples/models/tiny-code-llama-8k/config.json", import.meta.url),
);

// Meta-Llama-3.1-8B's config.json values.
const LLAMA31_SCALING = {
  factor: 8.0,
  low_freq_factor: 1.0,
  high_freq_factor: 4.0,
  original_max_position_embeddings: 8192,
  rope_type: "llama3",
};

const MINIMAL = {
  model_type: "llama",
  hidden_size: 256,
  intermediate_size: 512,
  num_hidden_layers: 2,
  num_attention_heads: 8,
  vocab_size: 1000,
};

Deno.test("config: tiny-code-llama-8k", async () => {
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
    ropeScaling: { type: "default" },
    tieWordEmbeddings: false,
    attentionBias: false,
    maxPositionEmbeddings: 8192,
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

Deno.test("config: RoPE scaling in both spellings", () => {
  const llama3 = {
    type: "llama3",
    factor: 8,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositionEmbeddings: 8192,
  };
  // Llama-3.1 as published: top-level rope_theta and rope_scaling.
  const legacy = parseModelConfig({
    ...MINIMAL,
    rope_theta: 500000,
    max_position_embeddings: 131072,
    rope_scaling: LLAMA31_SCALING,
  });
  assert.equal(legacy.ropeTheta, 500000);
  assert.deepEqual(legacy.ropeScaling, llama3);
  // transformers 5: everything inside rope_parameters.
  const params = parseModelConfig({
    ...MINIMAL,
    rope_parameters: { ...LLAMA31_SCALING, rope_theta: 500000 },
  });
  assert.equal(params.ropeTheta, 500000);
  assert.deepEqual(params.ropeScaling, llama3);
  // Qwen2.5 README's YaRN block uses the older "type" key; defaults fill beta and truncate.
  const qwen = parseModelConfig({
    ...MINIMAL,
    model_type: "qwen2",
    max_position_embeddings: 32768,
    rope_theta: 1e6,
    rope_scaling: { factor: 4.0, original_max_position_embeddings: 32768, type: "yarn" },
  });
  assert.deepEqual(qwen.ropeScaling, {
    type: "yarn",
    factor: 4,
    originalMaxPositionEmbeddings: 32768,
    betaFast: 32,
    betaSlow: 1,
    attentionFactor: null,
    mscale: null,
    mscaleAllDim: null,
    truncate: true,
  });
  // YaRN without a factor (DeepSeek style): max_position_embeddings / original; all knobs read.
  const deepseek = parseModelConfig({
    ...MINIMAL,
    max_position_embeddings: 163840,
    rope_parameters: {
      rope_type: "yarn",
      rope_theta: 10000,
      original_max_position_embeddings: 4096,
      beta_fast: 16,
      beta_slow: 2,
      mscale: 1,
      mscale_all_dim: 0.707,
      attention_factor: 1.2,
      truncate: false,
    },
  });
  assert.deepEqual(deepseek.ropeScaling, {
    type: "yarn",
    factor: 40,
    originalMaxPositionEmbeddings: 4096,
    betaFast: 16,
    betaSlow: 2,
    attentionFactor: 1.2,
    mscale: 1,
    mscaleAllDim: 0.707,
    truncate: false,
  });
  // YaRN without an original length: max_position_embeddings.
  const noOriginal = parseModelConfig({
    ...MINIMAL,
    max_position_embeddings: 4096,
    rope_scaling: { rope_type: "yarn", factor: 2 },
  });
  assert.equal(
    noOriginal.ropeScaling?.type === "yarn" && noOriginal.ropeScaling.originalMaxPositionEmbeddings,
    4096,
  );
  assert.deepEqual(
    parseModelConfig({ ...MINIMAL, rope_scaling: { type: "linear", factor: 2 } }).ropeScaling,
    { type: "linear", factor: 2 },
  );
  // Both spellings present and agreeing (what transformers 5 writes back for a legacy config).
  assert.deepEqual(
    parseModelConfig({
      ...MINIMAL,
      rope_scaling: { rope_type: "linear", factor: 2 },
      rope_parameters: { rope_type: "linear", factor: 2, rope_theta: 1e4 },
    }).ropeScaling,
    { type: "linear", factor: 2 },
  );
  // configToJson (synthetic checkpoints) writes each type back in transformers' field names.
  const windowed = syntheticConfig({ modelType: "qwen2", slidingWindow: 64 });
  assert.deepEqual(parseModelConfig(configToJson(windowed)), windowed);
  for (const scaling of [legacy.ropeScaling!, qwen.ropeScaling!, deepseek.ropeScaling!]) {
    const json = configToJson(syntheticConfig({ ropeScaling: scaling }));
    assert.deepEqual(parseModelConfig(json).ropeScaling, scaling);
  }
  for (const none of [null, { rope_type: "default" }, { type: "default" }]) {
    assert.deepEqual(parseModelConfig({ ...MINIMAL, rope_scaling: none }).ropeScaling, {
      type: "default",
    });
  }
});

Deno.test("config: which layers slide follows transformers", () => {
  const qwen = { ...MINIMAL, model_type: "qwen2", sliding_window: 4096 };
  // Qwen2: only with use_sliding_window, and only layers from max_window_layers (default 28) on.
  assert.equal(parseModelConfig({ ...qwen, use_sliding_window: true }).slidingWindow, null);
  assert.equal(
    parseModelConfig({ ...qwen, use_sliding_window: true, max_window_layers: 0 }).slidingWindow,
    4096,
  );
  assert.equal(parseModelConfig({ ...qwen, max_window_layers: 0 }).slidingWindow, null);
  // transformers 5 writes layer_types; it decides when present.
  assert.equal(
    parseModelConfig({ ...qwen, layer_types: ["sliding_attention", "sliding_attention"] })
      .slidingWindow,
    4096,
  );
  assert.equal(
    parseModelConfig({
      ...MINIMAL,
      model_type: "mistral",
      sliding_window: 4096,
      layer_types: ["full_attention", "full_attention"],
    }).slidingWindow,
    null,
  );
  assert.throws(
    () => parseModelConfig({ ...qwen, use_sliding_window: true, max_window_layers: 1 }, "q.json"),
    /^InputError: q\.json: field "max_window_layers" is 1; expected a sliding window in every layer or in none/,
  );
  assert.throws(
    () => parseModelConfig({ ...qwen, layer_types: ["full_attention", "sliding_attention"] }),
    /field "layer_types" is \["full_attention","sliding_attention"\]; expected a sliding window in every layer or in none/,
  );
  assert.throws(
    () => parseModelConfig({ ...qwen, layer_types: ["sliding_attention"] }),
    /field "layer_types" is \["sliding_attention"\]; expected 2 entries, each "full_attention" or "sliding_attention"/,
  );
});

Deno.test("config: sliding window limit and check", () => {
  const mistral = parseModelConfig({ ...MINIMAL, model_type: "mistral", sliding_window: 48 });
  assert.equal(slidingWindowLimit(mistral), 48);
  assert.equal(slidingWindowLimit(parseModelConfig(MINIMAL)), Infinity);
  assertWithinSlidingWindow(mistral, 48, "GpuDecoder");
  assert.throws(
    () => assertWithinSlidingWindow(mistral, 49, "GpuDecoder"),
    /^ContextFullError: GpuDecoder: context of 49 tokens passes the model's sliding window of 48 tokens \(config\.json "sliding_window"\).*at most 48 tokens$/,
  );
});

Deno.test("config: unsupported or bad fields are named", () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [
      { ...MINIMAL, rope_scaling: { rope_type: "dynamic", factor: 2 } },
      /field "rope_scaling\.rope_type" is "dynamic"; expected one of "default", "linear", "llama3", "yarn" \(dynamic NTK/,
    ],
    [
      { ...MINIMAL, rope_parameters: { rope_type: "longrope", rope_theta: 1e4 } },
      /field "rope_parameters\.rope_type" is "longrope"; expected one of .*LongRoPE/,
    ],
    [
      { ...MINIMAL, rope_scaling: { type: "su", factor: 2 } },
      /field "rope_scaling\.type" is "su"; expected one of "default", "linear", "llama3", "yarn"$/,
    ],
    [
      { ...MINIMAL, rope_scaling: { rope_type: "linear" } },
      /required field "rope_scaling\.factor" is missing/,
    ],
    [
      { ...MINIMAL, rope_scaling: { rope_type: "linear", factor: 0 } },
      /field "rope_scaling\.factor" is 0; expected a positive number/,
    ],
    [
      { ...MINIMAL, rope_scaling: { ...LLAMA31_SCALING, low_freq_factor: undefined } },
      /required field "rope_scaling\.low_freq_factor" is missing/,
    ],
    [
      { ...MINIMAL, rope_scaling: { ...LLAMA31_SCALING, high_freq_factor: 1 } },
      /"rope_scaling\.high_freq_factor" is 1; expected a number greater than low_freq_factor/,
    ],
    [
      { ...MINIMAL, rope_parameters: { rope_type: "yarn", factor: 4, truncate: "yes" } },
      /"rope_parameters\.truncate" is "yes"; expected true or false/,
    ],
    [
      {
        ...MINIMAL,
        rope_parameters: { rope_type: "linear", factor: 2 },
        rope_scaling: LLAMA31_SCALING,
      },
      /"rope_scaling" is .*; expected the same RoPE type as rope_parameters \("linear"\)/,
    ],
    [{ ...MINIMAL, rope_scaling: [1] }, /"rope_scaling" is \[1\]; expected null or an object/],
    [
      { ...MINIMAL, rope_parameters: { rope_type: "default", partial_rotary_factor: 0.5 } },
      /"rope_parameters\.partial_rotary_factor" is 0\.5; expected 1/,
    ],
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
