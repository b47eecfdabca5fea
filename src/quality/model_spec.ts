/**
 * One call from a model config and a channel-config file (the authors' / SGLang format, e.g. their
 * Llama-3.1-8B file: q and qk rows per query head, k rows per kv head) to the Double Sparsity
 * attention spec of that model and the label channels of every layer. GQA models get group
 * selection by default (one token set per kv head, labels from the file's "k" rows, else a Borda
 * count of the group's qk rows); MHA models get per-head selection.
 */
import {
  type AttentionSpec,
  type BudgetInput,
  defineAttention,
  type KvDtype,
  type LabelBits,
  type Selection,
} from "../dsl/spec.ts";
import type { ModelConfig } from "../checkpoint/config.ts";
import { type ChannelConfig, parseChannelConfig, readChannelConfig } from "./channel_config.ts";
import { labelChannelsFor } from "./channels.ts";

export interface ModelSpecOptions {
  labels: { channels: number; bits: LabelBits };
  budget: BudgetInput;
  /** Default: "group" when the model has fewer kv heads than query heads, else "head". */
  selection?: Selection;
  /** Default "fp16". */
  kvDtype?: KvDtype;
  /** Default 16. */
  pageSize?: number;
  /** Default 0 (dense only while the budget covers the context). */
  denseThreshold?: number;
  /** Default none. The authors' accuracy runs keep [0, 1] dense. */
  denseLayers?: number[];
}

export interface ModelAttention {
  spec: AttentionSpec;
  /** Per layer, [numLabelHeads * labelChannels] channel indices (labelChannelsFor). */
  labelChannels: Int32Array[];
  channels: ChannelConfig;
}

/** The spec and label channels for `config` from an already-validated channel config. */
export function specFromChannels(
  config: ModelConfig,
  channels: ChannelConfig,
  options: ModelSpecOptions,
): ModelAttention {
  const spec = defineAttention({
    headDim: config.headDim,
    numQHeads: config.numHeads,
    numKvHeads: config.numKvHeads,
    kvDtype: options.kvDtype ?? "fp16",
    pageSize: options.pageSize ?? 16,
    labels: options.labels,
    selection: options.selection ?? (config.numKvHeads < config.numHeads ? "group" : "head"),
    budget: options.budget,
    denseThreshold: options.denseThreshold ?? 0,
    denseLayers: options.denseLayers ?? [],
  });
  const labelChannels = Array.from(
    { length: config.numLayers },
    (_, layer) => labelChannelsFor(spec, { config: channels }, layer),
  );
  return { spec, labelChannels, channels };
}

/**
 * Validates a decoded channel-config object against `config`'s shape (layers, heads, kv heads,
 * head dim; every problem named, with `source`) and builds the spec and label channels.
 */
export function specForModel(
  config: ModelConfig,
  channelJson: unknown,
  options: ModelSpecOptions,
  source = "channel config",
): ModelAttention {
  const channels = parseChannelConfig(channelJson, shapeOf(config), source);
  return specFromChannels(config, channels, options);
}

/** specForModel with the channel config read from a file. */
export async function specForModelFile(
  config: ModelConfig,
  channelPath: string,
  options: ModelSpecOptions,
): Promise<ModelAttention> {
  return specFromChannels(config, await readChannelConfig(channelPath, shapeOf(config)), options);
}

function shapeOf(config: ModelConfig) {
  return {
    numLayers: config.numLayers,
    numHeads: config.numHeads,
    numKvHeads: config.numKvHeads,
    headDim: config.headDim,
  };
}
