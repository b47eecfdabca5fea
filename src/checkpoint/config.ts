// Typed view of a Hugging Face `config.json` for Llama, Mistral and Qwen2 style decoders.
// Anything that would change the math the CPU decoder and the kernels implement (RoPE
// scaling, other activations, MLP biases, partial rotary) is rejected rather than ignored.

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

type Json = Record<string, unknown>;

function fail(source: string, field: string, value: unknown, expected: string): never {
  throw new Error(`${source}: field "${field}" is ${JSON.stringify(value)}; expected ${expected}`);
}

function positiveInt(raw: Json, field: string, source: string, fallback?: number): number {
  const value = raw[field];
  if (value === undefined || value === null) {
    if (fallback !== undefined) return fallback;
    throw new Error(`${source}: required field "${field}" is missing`);
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

/** Rope theta and a check that no RoPE scaling is configured. */
function parseRope(raw: Json, source: string): number {
  const params = raw["rope_parameters"];
  let theta: unknown = raw["rope_theta"];
  if (params !== undefined && params !== null) {
    if (typeof params !== "object" || Array.isArray(params)) {
      fail(source, "rope_parameters", params, "an object");
    }
    const p = params as Json;
    checkRopeType(p, "rope_parameters", source);
    if (p["rope_theta"] !== undefined) theta = p["rope_theta"];
    const partial = p["partial_rotary_factor"];
    if (partial !== undefined && partial !== null && partial !== 1) {
      fail(source, "rope_parameters.partial_rotary_factor", partial, "1 (full rotary)");
    }
  }
  const scaling = raw["rope_scaling"];
  if (scaling !== undefined && scaling !== null) {
    if (typeof scaling !== "object" || Array.isArray(scaling)) {
      fail(source, "rope_scaling", scaling, "null or an object");
    }
    checkRopeType(scaling as Json, "rope_scaling", source);
  }
  const partial = raw["partial_rotary_factor"];
  if (partial !== undefined && partial !== null && partial !== 1) {
    fail(source, "partial_rotary_factor", partial, "1 (full rotary)");
  }
  if (theta === undefined || theta === null) return DEFAULT_ROPE_THETA;
  if (typeof theta !== "number" || !Number.isFinite(theta) || theta <= 1) {
    fail(source, "rope_theta", theta, "a number greater than 1");
  }
  return theta;
}

function checkRopeType(p: Json, field: string, source: string): void {
  // transformers has used both "rope_type" and the older "type".
  for (const key of ["rope_type", "type"]) {
    const kind = p[key];
    if (kind !== undefined && kind !== null && kind !== "default") {
      fail(source, `${field}.${key}`, kind, `"default" (RoPE scaling is not supported)`);
    }
  }
}

/** Parses an already-decoded config object. `source` names it in errors. */
export function parseModelConfig(raw: unknown, source = "config.json"): ModelConfig {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new Error(`${source}: expected a JSON object`);
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
    throw new Error(
      `${source}: hidden_size ${hiddenSize} is not divisible by num_attention_heads ${numHeads} ` +
        `and no "head_dim" is given`,
    );
  }
  const headDim = positiveInt(c, "head_dim", source, hiddenSize / numHeads);
  if (headDim % 2 !== 0) fail(source, "head_dim", headDim, "an even number (RoPE pairs channels)");

  // Qwen2 always has q/k/v biases; its config has no attention_bias field.
  const attentionBias = bool(c, "attention_bias", source, type === "qwen2");

  let slidingWindow: number | null = null;
  const useSliding = type === "qwen2" ? bool(c, "use_sliding_window", source, false) : true;
  if (useSliding && c["sliding_window"] != null) {
    slidingWindow = positiveInt(c, "sliding_window", source);
  }

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
    ropeTheta: parseRope(c, source),
    tieWordEmbeddings: bool(c, "tie_word_embeddings", source, false),
    attentionBias,
    maxPositionEmbeddings: positiveInt(
      c,
      "max_position_embeddings",
      source,
      DEFAULT_MAX_POSITIONS[type],
    ),
    slidingWindow,
  };
}

/** Reads and parses `<dir>/config.json` (or a config file path). */
export async function readModelConfig(filePath: string): Promise<ModelConfig> {
  let text: string;
  try {
    text = await Deno.readTextFile(filePath);
  } catch (e) {
    throw new Error(`${filePath}: cannot read model config: ${(e as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new Error(`${filePath}: invalid JSON: ${(e as Error).message}`);
  }
  return parseModelConfig(raw, filePath);
}
