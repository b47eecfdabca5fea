// Loads a model directory (config.json + safetensors) into float32 weights in Hugging
// Face's row-major [out][in] layout, checking every tensor's shape against the config.

import * as path from "node:path";
import { type ModelConfig, readModelConfig } from "./config.ts";
import { openCheckpoint, type TensorStore } from "./safetensors.ts";
import { InputError } from "../util/errors.ts";

export interface LayerWeights {
  inputNorm: Float32Array; // [hidden]
  q: Float32Array; // [numHeads*headDim][hidden]
  k: Float32Array; // [numKvHeads*headDim][hidden]
  v: Float32Array; // [numKvHeads*headDim][hidden]
  o: Float32Array; // [hidden][numHeads*headDim]
  qBias?: Float32Array; // [numHeads*headDim]
  kBias?: Float32Array; // [numKvHeads*headDim]
  vBias?: Float32Array; // [numKvHeads*headDim]
  /** Only Llama with attention_bias has an o_proj bias; loaded when the checkpoint has one. */
  oBias?: Float32Array; // [hidden]
  postAttentionNorm: Float32Array; // [hidden]
  gate: Float32Array; // [intermediate][hidden]
  up: Float32Array; // [intermediate][hidden]
  down: Float32Array; // [hidden][intermediate]
}

export interface ModelWeights {
  embed: Float32Array; // [vocab][hidden]
  layers: LayerWeights[];
  finalNorm: Float32Array; // [hidden]
  /** [vocab][hidden]; the same array as `embed` when the embeddings are tied. */
  lmHead: Float32Array;
}

export interface LoadedModel {
  config: ModelConfig;
  weights: ModelWeights;
}

/** Reads a tensor and checks its shape; the error names the tensor, expected and actual. */
function take(store: TensorStore, name: string, expected: number[]): Float32Array {
  if (!store.has(name)) {
    throw new InputError(
      store.source,
      `missing tensor "${name}" (expected shape [${expected.join(", ")}])`,
    );
  }
  const actual = store.info(name).shape;
  if (actual.length !== expected.length || actual.some((n, i) => n !== expected[i])) {
    throw new InputError(
      store.source,
      `tensor "${name}" has shape [${actual.join(", ")}], expected ` +
        `[${expected.join(", ")}] from the model config`,
    );
  }
  return store.get(name).data;
}

/** Builds the weights of `config` from an opened checkpoint. */
export function weightsFromStore(store: TensorStore, config: ModelConfig): ModelWeights {
  const { hiddenSize: h, intermediateSize: f, vocabSize: v, headDim: d } = config;
  const qOut = config.numHeads * d;
  const kvOut = config.numKvHeads * d;
  const layers: LayerWeights[] = [];
  for (let i = 0; i < config.numLayers; i++) {
    const p = `model.layers.${i}.`;
    const layer: LayerWeights = {
      inputNorm: take(store, `${p}input_layernorm.weight`, [h]),
      q: take(store, `${p}self_attn.q_proj.weight`, [qOut, h]),
      k: take(store, `${p}self_attn.k_proj.weight`, [kvOut, h]),
      v: take(store, `${p}self_attn.v_proj.weight`, [kvOut, h]),
      o: take(store, `${p}self_attn.o_proj.weight`, [h, qOut]),
      postAttentionNorm: take(store, `${p}post_attention_layernorm.weight`, [h]),
      gate: take(store, `${p}mlp.gate_proj.weight`, [f, h]),
      up: take(store, `${p}mlp.up_proj.weight`, [f, h]),
      down: take(store, `${p}mlp.down_proj.weight`, [h, f]),
    };
    if (config.attentionBias) {
      layer.qBias = take(store, `${p}self_attn.q_proj.bias`, [qOut]);
      layer.kBias = take(store, `${p}self_attn.k_proj.bias`, [kvOut]);
      layer.vBias = take(store, `${p}self_attn.v_proj.bias`, [kvOut]);
      if (store.has(`${p}self_attn.o_proj.bias`)) {
        layer.oBias = take(store, `${p}self_attn.o_proj.bias`, [h]);
      }
    }
    layers.push(layer);
  }
  const embed = take(store, "model.embed_tokens.weight", [v, h]);
  let lmHead: Float32Array;
  if (config.tieWordEmbeddings) {
    lmHead = embed;
  } else {
    lmHead = take(store, "lm_head.weight", [v, h]);
  }
  return { embed, layers, finalNorm: take(store, "model.norm.weight", [h]), lmHead };
}

/** Loads `<dir>/config.json` and the checkpoint (`model.safetensors` or sharded index). */
export async function loadModel(dir: string): Promise<LoadedModel> {
  const config = await readModelConfig(path.join(dir, "config.json"));
  const store = await openCheckpoint(dir);
  return { config, weights: weightsFromStore(store, config) };
}
