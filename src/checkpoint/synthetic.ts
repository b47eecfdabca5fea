// Small random models in the Hugging Face layout, for tests of the loaders, the CPU
// decoder and the GPU path on shapes other than the bundled model's (other head dims,
// GQA ratios, biases, tied embeddings). Deterministic for a given seed.

import * as path from "node:path";
import type { ModelConfig, RopeScaling } from "./config.ts";
import { encodeSafetensors, type TensorToWrite } from "./safetensors.ts";
import type { LayerWeights, LoadedModel } from "./weights.ts";
import { mulberry32 } from "../util/random.ts";

/** A small Llama-style config; `overrides` replace any field. */
export function syntheticConfig(overrides: Partial<ModelConfig> = {}): ModelConfig {
  return {
    modelType: "llama",
    hiddenSize: 64,
    intermediateSize: 96,
    numLayers: 2,
    numHeads: 4,
    numKvHeads: 2,
    headDim: 16,
    vocabSize: 256,
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    ropeScaling: { type: "default" },
    tieWordEmbeddings: false,
    attentionBias: false,
    maxPositionEmbeddings: 4096,
    slidingWindow: null,
    ...overrides,
  };
}

/** Random weights: matrices uniform with std about 1/sqrt(fan_in), norms near 1. */
export function randomModel(config: ModelConfig, seed = 1): LoadedModel {
  const rand = mulberry32(seed);
  const matrix = (rows: number, cols: number) => {
    const scale = Math.sqrt(3 / cols);
    return Float32Array.from({ length: rows * cols }, () => (2 * rand() - 1) * scale);
  };
  const vector = (n: number, center: number, spread: number) =>
    Float32Array.from({ length: n }, () => center + (2 * rand() - 1) * spread);
  const { hiddenSize: h, intermediateSize: f, headDim: d } = config;
  const qOut = config.numHeads * d, kvOut = config.numKvHeads * d;
  const layers: LayerWeights[] = [];
  for (let l = 0; l < config.numLayers; l++) {
    const layer: LayerWeights = {
      inputNorm: vector(h, 1, 0.2),
      q: matrix(qOut, h),
      k: matrix(kvOut, h),
      v: matrix(kvOut, h),
      o: matrix(h, qOut),
      postAttentionNorm: vector(h, 1, 0.2),
      gate: matrix(f, h),
      up: matrix(f, h),
      down: matrix(h, f),
    };
    if (config.attentionBias) {
      layer.qBias = vector(qOut, 0, 0.1);
      layer.kBias = vector(kvOut, 0, 0.1);
      layer.vBias = vector(kvOut, 0, 0.1);
    }
    layers.push(layer);
  }
  const embed = Float32Array.from({ length: config.vocabSize * h }, () => 2 * rand() - 1);
  const lmHead = config.tieWordEmbeddings ? embed : matrix(config.vocabSize, h);
  return { config, weights: { embed, layers, finalNorm: vector(h, 1, 0.2), lmHead } };
}

/** The model's tensors under their Hugging Face names. */
export function modelTensors(model: LoadedModel, dtype: "F32" | "BF16" = "F32"): TensorToWrite[] {
  const c = model.config, w = model.weights;
  const h = c.hiddenSize, f = c.intermediateSize;
  const qOut = c.numHeads * c.headDim, kvOut = c.numKvHeads * c.headDim;
  const out: TensorToWrite[] = [];
  const add = (name: string, shape: number[], data: Float32Array) =>
    out.push({ name, shape, data, dtype });
  add("model.embed_tokens.weight", [c.vocabSize, h], w.embed);
  w.layers.forEach((lw, i) => {
    const p = `model.layers.${i}.`;
    add(`${p}input_layernorm.weight`, [h], lw.inputNorm);
    add(`${p}self_attn.q_proj.weight`, [qOut, h], lw.q);
    add(`${p}self_attn.k_proj.weight`, [kvOut, h], lw.k);
    add(`${p}self_attn.v_proj.weight`, [kvOut, h], lw.v);
    add(`${p}self_attn.o_proj.weight`, [h, qOut], lw.o);
    if (lw.qBias) add(`${p}self_attn.q_proj.bias`, [qOut], lw.qBias);
    if (lw.kBias) add(`${p}self_attn.k_proj.bias`, [kvOut], lw.kBias);
    if (lw.vBias) add(`${p}self_attn.v_proj.bias`, [kvOut], lw.vBias);
    if (lw.oBias) add(`${p}self_attn.o_proj.bias`, [h], lw.oBias);
    add(`${p}post_attention_layernorm.weight`, [h], lw.postAttentionNorm);
    add(`${p}mlp.gate_proj.weight`, [f, h], lw.gate);
    add(`${p}mlp.up_proj.weight`, [f, h], lw.up);
    add(`${p}mlp.down_proj.weight`, [h, f], lw.down);
  });
  add("model.norm.weight", [h], w.finalNorm);
  if (!c.tieWordEmbeddings) add("lm_head.weight", [c.vocabSize, h], w.lmHead);
  return out;
}

/** The `rope_scaling` object of a scaling in transformers' field names; null for plain RoPE. */
export function ropeScalingToJson(scaling: RopeScaling): Record<string, unknown> | null {
  switch (scaling.type) {
    case "default":
      return null;
    case "linear":
      return { rope_type: "linear", factor: scaling.factor };
    case "llama3":
      return {
        rope_type: "llama3",
        factor: scaling.factor,
        low_freq_factor: scaling.lowFreqFactor,
        high_freq_factor: scaling.highFreqFactor,
        original_max_position_embeddings: scaling.originalMaxPositionEmbeddings,
      };
    case "yarn":
      return {
        rope_type: "yarn",
        factor: scaling.factor,
        original_max_position_embeddings: scaling.originalMaxPositionEmbeddings,
        beta_fast: scaling.betaFast,
        beta_slow: scaling.betaSlow,
        attention_factor: scaling.attentionFactor,
        mscale: scaling.mscale,
        mscale_all_dim: scaling.mscaleAllDim,
        truncate: scaling.truncate,
      };
  }
}

/** The Hugging Face config.json object of a config. */
export function configToJson(config: ModelConfig): Record<string, unknown> {
  const json: Record<string, unknown> = {
    architectures: [
      { llama: "LlamaForCausalLM", mistral: "MistralForCausalLM", qwen2: "Qwen2ForCausalLM" }[
        config.modelType
      ],
    ],
    model_type: config.modelType,
    hidden_size: config.hiddenSize,
    intermediate_size: config.intermediateSize,
    num_hidden_layers: config.numLayers,
    num_attention_heads: config.numHeads,
    num_key_value_heads: config.numKvHeads,
    head_dim: config.headDim,
    vocab_size: config.vocabSize,
    rms_norm_eps: config.rmsNormEps,
    rope_theta: config.ropeTheta,
    tie_word_embeddings: config.tieWordEmbeddings,
    attention_bias: config.attentionBias,
    max_position_embeddings: config.maxPositionEmbeddings,
    hidden_act: "silu",
  };
  const rope = ropeScalingToJson(config.ropeScaling ?? { type: "default" });
  if (rope !== null) json["rope_scaling"] = rope;
  if (config.slidingWindow !== null) json["sliding_window"] = config.slidingWindow;
  if (config.modelType === "qwen2") {
    // Qwen2 slides only layers from max_window_layers on: 0 puts the window in every layer.
    json["use_sliding_window"] = config.slidingWindow !== null;
    json["max_window_layers"] = 0;
  }
  return json;
}

/** Writes config.json and model.safetensors of `model` into `dir`. */
export async function writeModelDir(
  dir: string,
  model: LoadedModel,
  dtype: "F32" | "BF16" = "F32",
): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(
    path.join(dir, "config.json"),
    JSON.stringify(configToJson(model.config), null, 2) + "\n",
  );
  await Deno.writeFile(
    path.join(dir, "model.safetensors"),
    encodeSafetensors(modelTensors(model, dtype)),
  );
}
