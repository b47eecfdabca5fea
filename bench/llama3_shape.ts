/**
 * The Llama-3-8B shape the end-to-end and prefill benchmarks run with random weights, and the
 * Double Sparsity variant they use on it (group selection, 16 label channels at 8 bits, budget
 * 1/16, layers 0 and 1 dense; and without dense layers for the offload benchmark): one
 * definition for every benchmark.
 */
import { type AttentionSpec, defineAttention } from "../src/dsl/spec.ts";
import type { ModelConfig } from "../src/checkpoint/config.ts";

export const LLAMA3_8B: ModelConfig = {
  modelType: "llama",
  hiddenSize: 4096,
  intermediateSize: 14336,
  numLayers: 32,
  numHeads: 32,
  numKvHeads: 8,
  headDim: 128,
  vocabSize: 128256,
  rmsNormEps: 1e-5,
  ropeTheta: 500000,
  tieWordEmbeddings: false,
  attentionBias: false,
  maxPositionEmbeddings: 131072,
  slidingWindow: null,
};

const GROUP_INPUT = {
  headDim: 128,
  numQHeads: 32,
  numKvHeads: 8,
  kvDtype: "fp16",
  pageSize: 16,
  labels: { channels: 16, bits: 8 },
  selection: "group",
  budget: { ratio: 1 / 16, min: 16 },
} as const;

export const LLAMA3_8B_GROUP_SPEC: AttentionSpec = defineAttention({
  ...GROUP_INPUT,
  denseLayers: [0, 1],
});

/** The same variant with no dense layers (the offload benchmark: every layer in host memory). */
export const LLAMA3_8B_GROUP_SPEC_NO_DENSE: AttentionSpec = defineAttention(GROUP_INPUT);
