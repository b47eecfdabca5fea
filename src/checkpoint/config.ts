// Typed view of a Hugging Face `config.json` for Llama, Mistral and Qwen2 style decoders.
// RoPE scaling of the types transformers computes once per model (linear, llama3, yarn) is
// read; anything else that would change the math the CPU decoder and the kernels implement
// (other RoPE types, other activations, MLP biases, partial rotary) is rejected, not ignored.

import { ContextFullError, InputError } from "../util/errors.ts";

export const SUPPORTED_MODEL_TYPES = ["llama", "mistral", "qwen2"] as const;
export type ModelType = typeof SUPPORTED_MODEL_TYPES[number];

export interface ModelConfig {
  modelType: ModelType;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  rmsNormEps: number;
  ropeTheta: number;
  /** RoPE frequency scaling; absent means plain RoPE ({ type: "default" }). */
  ropeScaling?: RopeScaling;
  tieWordEmbeddings: boolean;
  /** q/k/v projections carry biases (Qwen2 always; Llama when `attention_bias`). */
  attentionBias: boolean;
  maxPositionEmbeddings: number;
  /**
   * Sliding-window size when the model uses one (Mistral v0.1, Qwen2 with
   * use_sliding_window), else null. The dense CPU attention refuses contexts longer than it.
   */
  slidingWindow: number | null;
}

// Defaults of transformers' LlamaConfig / MistralConfig / Qwen2Config where a field is absent.
const DEFAULT_ROPE_THETA = 10000;
const DEFAULT_RMS_NORM_EPS = 1e-6;
const DEFAULT_MAX_POSITIONS: Record<ModelType, number> = {
  llama: 2048,
  mistral: 4096 * 32,
  qwen2: 32768,
};

/** More decoder layers than any model has: a config claiming more is broken. */
const MAX_LAYERS = 4096;

type Json = Record<string, unknown>;

function fail(source: string, field: string, value: unknown, expected: string): never {
  throw new InputError(
    source,
    `field "${field}" is ${JSON.stringify(value)}; expected ${expected}`,
  );
}

function positiveInt(raw: Json, field: string, source: string, fallback?: number): number {
  const value = raw[field];
  if (value === undefined || value === null) {
    if (fallback !== undefined) return fallback;
    throw new InputError(source, `required field "${field}" is missing`);
  }
  if (typeof value !== "number" || !Number.isInteger(value) || value <= 0) {
    fail(source, field, value, "a positive integer");
  }
  return value;
}

function positiveNumber(raw: Json, field: string, source: string, fallback: number): number {
  const value = raw[field];
  if (value === undefined || value === null) return fallback;
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
    fail(source, field, value, "a positive number");
  }
  return value;
}

function bool(raw: Json, field: string, source: string, fallback: boolean): boolean {
  const value = raw[field];
  if (value === undefined || value === null) return fallback;
  if (typeof value !== "boolean") fail(source, field, value, "true or false");
  return value;
}

/**
 * RoPE frequency scaling as transformers defines it (`rope_type` of `rope_scaling` /
 * `rope_parameters`); src/checkpoint/rope.ts turns it into inverse frequencies and the
 * attention factor. Lengths are in tokens.
 */
export type RopeScaling =
  | { readonly type: "default" }
  /** Position interpolation: every inverse frequency divided by `factor`. */
  | { readonly type: "linear"; readonly factor: number }
  /** Llama 3.1+: low frequencies divided by `factor`, high ones kept, a smooth band between. */
  | {
    readonly type: "llama3";
    readonly factor: number;
    readonly lowFreqFactor: number;
    readonly highFreqFactor: number;
    readonly originalMaxPositionEmbeddings: number;
  }
  /** YaRN (Qwen2.5 long context): NTK-by-parts frequencies and a cos/sin scale. */
  | {
    readonly type: "yarn";
    readonly factor: number;
    readonly originalMaxPositionEmbeddings: number;
    readonly betaFast: number;
    readonly betaSlow: number;
    /** Explicit `attention_factor`, else null (then derived from factor and mscale). */
    readonly attentionFactor: number | null;
    readonly mscale: number | null;
    readonly mscaleAllDim: number | null;
    /** Round the correction range to whole dimensions (transformers' default true). */
    readonly truncate: boolean;
  };

export const SUPPORTED_ROPE_TYPES = ["default", "linear", "llama3", "yarn"] as const;

/** Why a RoPE type that transformers knows is still refused here, for the error line. */
const REFUSED_ROPE_TYPES: Record<string, string> = {
  dynamic: "dynamic NTK recomputes the frequencies from the length of each forward call, so " +
    "cached keys depend on how the prompt was split into calls; not supported",
  longrope: "LongRoPE (Phi-3) is not supported",
};

interface RopeSettings {
  theta: number;
  scaling: RopeScaling;
}

function ropeNumber(
  p: Json,
  field: string,
  key: string,
  source: string,
  fallback?: number,
): number {
  const value = p[key];
  if (value === undefined || value === null) {
    if (fallback !== undefined) return fallback;
    throw new InputError(source, `required field "${field}.${key}" is missing`);
  }
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
    fail(source, `${field}.${key}`, value, "a positive number");
  }
  return value;
}

function ropeOptionalNumber(p: Json, field: string, key: string, source: string): number | null {
  return p[key] === undefined || p[key] === null ? null : ropeNumber(p, field, key, source);
}

/** The scaling of one `rope_scaling` / `rope_parameters` object. */
function parseRopeScaling(
  p: Json,
  field: string,
  source: string,
  maxPositions: number,
): RopeScaling {
  // transformers has used both "rope_type" and the older "type".
  const key = p["rope_type"] !== undefined && p["rope_type"] !== null ? "rope_type" : "type";
  const kind = p[key] ?? "default";
  const allowed = `one of ${SUPPORTED_ROPE_TYPES.map((t) => `"${t}"`).join(", ")}`;
  if (typeof kind === "string" && kind in REFUSED_ROPE_TYPES) {
    fail(source, `${field}.${key}`, kind, `${allowed} (${REFUSED_ROPE_TYPES[kind]})`);
  }
  switch (kind) {
    case "default":
      return { type: "default" };
    case "linear":
      return { type: "linear", factor: ropeNumber(p, field, "factor", source) };
    case "llama3": {
      const scaling = {
        type: "llama3" as const,
        factor: ropeNumber(p, field, "factor", source),
        lowFreqFactor: ropeNumber(p, field, "low_freq_factor", source),
        highFreqFactor: ropeNumber(p, field, "high_freq_factor", source),
        originalMaxPositionEmbeddings: ropeNumber(
          p,
          field,
          "original_max_position_embeddings",
          source,
        ),
      };
      if (scaling.highFreqFactor <= scaling.lowFreqFactor) {
        fail(
          source,
          `${field}.high_freq_factor`,
          scaling.highFreqFactor,
          `a number greater than low_freq_factor (${scaling.lowFreqFactor})`,
        );
      }
      return scaling;
    }
    case "yarn": {
      const original = ropeNumber(
        p,
        field,
        "original_max_position_embeddings",
        source,
        maxPositions,
      );
      const truncate = p["truncate"] ?? true;
      if (typeof truncate !== "boolean") {
        fail(source, `${field}.truncate`, truncate, "true or false");
      }
      return {
        type: "yarn",
        // Without a factor transformers uses max_position_embeddings / original (DeepSeek).
        factor: ropeNumber(p, field, "factor", source, maxPositions / original),
        originalMaxPositionEmbeddings: original,
        betaFast: ropeNumber(p, field, "beta_fast", source, 32),
        betaSlow: ropeNumber(p, field, "beta_slow", source, 1),
        attentionFactor: ropeOptionalNumber(p, field, "attention_factor", source),
        mscale: ropeOptionalNumber(p, field, "mscale", source),
        mscaleAllDim: ropeOptionalNumber(p, field, "mscale_all_dim", source),
        truncate,
      };
    }
    default:
      fail(source, `${field}.${key}`, kind, allowed);
  }
}

function ropeObject(raw: Json, field: string, source: string): Json | undefined {
  const value = raw[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "object" || Array.isArray(value)) {
    fail(source, field, value, "null or an object");
  }
  return value as Json;
}

/**
 * Rope theta and scaling from either spelling: the older top-level `rope_theta` plus
 * `rope_scaling` (Llama-3.1, Qwen2.5 checkpoints), or transformers 5's `rope_parameters`
 * holding both. When both are present they must agree on the type.
 */
function parseRope(raw: Json, source: string, maxPositions: number): RopeSettings {
  const params = ropeObject(raw, "rope_parameters", source);
  const legacy = ropeObject(raw, "rope_scaling", source);
  let theta: unknown = raw["rope_theta"];
  if (params?.["rope_theta"] !== undefined) theta = params["rope_theta"];
  for (const [where, p] of [["", raw], ["rope_parameters.", params ?? {}]] as const) {
    const partial = p["partial_rotary_factor"];
    if (partial !== undefined && partial !== null && partial !== 1) {
      fail(source, `${where}partial_rotary_factor`, partial, "1 (full rotary)");
    }
  }
  const fromParams = params && parseRopeScaling(params, "rope_parameters", source, maxPositions);
  const fromLegacy = legacy && parseRopeScaling(legacy, "rope_scaling", source, maxPositions);
  if (fromParams && fromLegacy && fromParams.type !== fromLegacy.type) {
    fail(
      source,
      "rope_scaling",
      legacy,
      `the same RoPE type as rope_parameters ("${fromParams.type}") or null`,
    );
  }
  if (theta === undefined || theta === null) theta = DEFAULT_ROPE_THETA;
  if (typeof theta !== "number" || !Number.isFinite(theta) || theta <= 1) {
    fail(source, "rope_theta", theta, "a number greater than 1");
  }
  return { theta, scaling: fromParams ?? fromLegacy ?? { type: "default" } };
}

const LAYER_TYPES = ["full_attention", "sliding_attention"];
/** Qwen2Config's default: layers from this index on use the window (when it is enabled). */
const DEFAULT_QWEN2_MAX_WINDOW_LAYERS = 28;

/**
 * The sliding window every layer uses, or null when no layer uses one. Which layers slide is
 * transformers' rule: `layer_types` when given; for Qwen2, layers from `max_window_layers` on and
 * only with `use_sliding_window`; for Mistral (and Llama), every layer. A window in some layers
 * only is refused.
 */
function parseSlidingWindow(
  c: Json,
  type: ModelType,
  numLayers: number,
  source: string,
): number | null {
  if (c["sliding_window"] === undefined || c["sliding_window"] === null) return null;
  let sliding: boolean[];
  let field: string;
  const layerTypes = c["layer_types"];
  if (layerTypes !== undefined && layerTypes !== null) {
    field = "layer_types";
    if (
      !Array.isArray(layerTypes) || layerTypes.length !== numLayers ||
      layerTypes.some((t) => !LAYER_TYPES.includes(t))
    ) {
      fail(source, field, layerTypes, `${numLayers} entries, each "${LAYER_TYPES.join('" or "')}"`);
    }
    sliding = layerTypes.map((t) => t === "sliding_attention");
  } else if (type === "qwen2") {
    field = "max_window_layers";
    const enabled = bool(c, "use_sliding_window", source, false);
    const from = c[field] ?? DEFAULT_QWEN2_MAX_WINDOW_LAYERS;
    if (typeof from !== "number" || !Number.isInteger(from) || from < 0) {
      fail(source, field, from, "a non-negative integer");
    }
    sliding = Array.from({ length: numLayers }, (_, i) => enabled && i >= from);
  } else {
    field = "sliding_window";
    sliding = Array(numLayers).fill(true);
  }
  if (!sliding.includes(true)) return null;
  if (sliding.includes(false)) {
    fail(
      source,
      field,
      c[field],
      "a sliding window in every layer or in none (a window in some layers only is not supported)",
    );
  }
  return positiveInt(c, "sliding_window", source);
}

/**
 * The longest context (tokens, the current one included) over which attention to every cached
 * token equals the model's: its sliding window, or Infinity without one. Transformers' window
 * of W keeps the last W tokens, so a context of at most W is unaffected by it.
 */
export function slidingWindowLimit(config: Pick<ModelConfig, "slidingWindow">): number {
  return config.slidingWindow ?? Infinity;
}

/**
 * Throws one line when `contextLength` tokens pass the model's sliding window: for attention
 * paths that see every cached token (the GPU decoder, Double Sparsity) and so cannot apply it.
 */
export function assertWithinSlidingWindow(
  config: Pick<ModelConfig, "slidingWindow">,
  contextLength: number,
  who: string,
): void {
  const limit = slidingWindowLimit(config);
  if (contextLength > limit) {
    throw new ContextFullError(
      `${who}: context of ${contextLength} tokens passes the model's sliding window of ` +
        `${limit} tokens (config.json "sliding_window"), which this path does not apply; ` +
        `allowed: at most ${limit} tokens`,
    );
  }
}

/** Parses an already-decoded config object. `source` names it in errors. */
export function parseModelConfig(raw: unknown, source = "config.json"): ModelConfig {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new InputError(source, `expected a JSON object`);
  }
  const c = raw as Json;
  const modelType = c["model_type"];
  if (!SUPPORTED_MODEL_TYPES.includes(modelType as ModelType)) {
    fail(source, "model_type", modelType, `one of ${SUPPORTED_MODEL_TYPES.join(", ")}`);
  }
  const type = modelType as ModelType;

  const activation = c["hidden_act"] ?? "silu";
  if (activation !== "silu") fail(source, "hidden_act", activation, `"silu"`);
  if (c["mlp_bias"] === true) fail(source, "mlp_bias", true, "false (MLP biases are unsupported)");

  const hiddenSize = positiveInt(c, "hidden_size", source);
  const intermediateSize = positiveInt(c, "intermediate_size", source);
  const numLayers = positiveInt(c, "num_hidden_layers", source);
  if (numLayers > MAX_LAYERS) {
    // Per-layer tables are built from it; an absurd count is a broken file, not a model.
    fail(source, "num_hidden_layers", numLayers, `a positive integer <= ${MAX_LAYERS}`);
  }
  const numHeads = positiveInt(c, "num_attention_heads", source);
  const numKvHeads = positiveInt(c, "num_key_value_heads", source, numHeads);
  const vocabSize = positiveInt(c, "vocab_size", source);
  if (numHeads % numKvHeads !== 0) {
    fail(
      source,
      "num_key_value_heads",
      numKvHeads,
      `a divisor of num_attention_heads (${numHeads})`,
    );
  }
  if (c["head_dim"] == null && hiddenSize % numHeads !== 0) {
    throw new InputError(
      source,
      `hidden_size ${hiddenSize} is not divisible by num_attention_heads ${numHeads} ` +
        `and no "head_dim" is given`,
    );
  }
  const headDim = positiveInt(c, "head_dim", source, hiddenSize / numHeads);
  if (headDim % 2 !== 0) fail(source, "head_dim", headDim, "an even number (RoPE pairs channels)");

  // Qwen2 always has q/k/v biases; its config has no attention_bias field.
  const attentionBias = bool(c, "attention_bias", source, type === "qwen2");

  const slidingWindow = parseSlidingWindow(c, type, numLayers, source);

  const maxPositionEmbeddings = positiveInt(
    c,
    "max_position_embeddings",
    source,
    DEFAULT_MAX_POSITIONS[type],
  );
  const rope = parseRope(c, source, maxPositionEmbeddings);

  return {
    modelType: type,
    hiddenSize,
    intermediateSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    vocabSize,
    rmsNormEps: positiveNumber(c, "rms_norm_eps", source, DEFAULT_RMS_NORM_EPS),
    ropeTheta: rope.theta,
    ropeScaling: rope.scaling,
    tieWordEmbeddings: bool(c, "tie_word_embeddings", source, false),
    attentionBias,
    maxPositionEmbeddings,
    slidingWindow,
  };
}

/** Reads and parses `<dir>/config.json` (or a config file path). */
export async function readModelConfig(filePath: string): Promise<ModelConfig> {
  let text: string;
  try {
    text = await Deno.readTextFile(filePath);
  } catch (e) {
    throw new InputError(filePath, `cannot read model config: ${(e as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new InputError(filePath, `invalid JSON: ${(e as Error).message}`);
  }
  return parseModelConfig(raw, filePath);
}
