/**
 * The fuzzing worker of tests/fuzz_test.ts: for one target, generates `count` malformed inputs
 * from `seed` (mutations of valid ones: wrong types, out-of-range values, missing and extra
 * fields, truncated and flipped bytes) and feeds each to the parser. A throw that is not one of
 * the project's typed errors (DsError) is a finding; the first few are reported with the case
 * index, so `seed` + index reproduce them. Runs in a Worker so a hang can be cut off.
 */
import { DsError } from "../src/util/errors.ts";
import { mulberry32 } from "../src/util/random.ts";
import {
  encodeSafetensors,
  parseSafetensors,
  tensorToFloat32,
} from "../src/checkpoint/safetensors.ts";
import { parseModelConfig } from "../src/checkpoint/config.ts";
import { type ChannelShape, parseChannelConfig } from "../src/quality/channel_config.ts";
import { defineAttention, ensureSpec } from "../src/dsl/spec.ts";

export type FuzzTarget = "safetensors" | "config" | "channels" | "spec";

export interface FuzzReport {
  readonly target: FuzzTarget;
  readonly seed: number;
  readonly count: number;
  /** Inputs accepted (valid after mutation) and rejected with a typed error. */
  readonly accepted: number;
  readonly rejected: number;
  /** Throws that are not DsError: the count, and the first five as "case i: Name: message". */
  readonly untyped: number;
  readonly findings: string[];
  readonly slowestMs: number;
  readonly ms: number;
}

class Gen {
  readonly next: () => number;
  constructor(seed: number) {
    this.next = mulberry32(seed);
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }
  /** A value of a wrong or edge kind. */
  weird(): unknown {
    return this.pick<() => unknown>([
      () => null,
      () => undefined,
      () => true,
      () => 0,
      () => -1,
      () => 1.5,
      () => -0,
      () => NaN,
      () => Infinity,
      () => -Infinity,
      () => 2 ** 53 + 2,
      () => 1e308,
      () => this.int(1 << 20) - 1000,
      () => "",
      () => "16",
      () => "x".repeat(this.int(40)),
      () => [],
      () => [this.weird()],
      () => ({}),
      () => ({ [this.pick(["a", "__proto__", "constructor", "tokens"])]: this.weird() }),
      () => Array.from({ length: this.int(5) }, () => this.int(300) - 20),
    ])();
  }
}

/** Replaces, deletes or adds a key somewhere in a JSON-like tree (1 to 4 times). */
function mutateTree(g: Gen, root: unknown, extraKeys: readonly string[] = []): unknown {
  if (g.chance(0.02)) return g.weird();
  let value = structuredClone(root);
  const rounds = 1 + g.int(4);
  for (let r = 0; r < rounds; r++) {
    // Walk down to a random container.
    let node: unknown = value;
    let depth = g.int(4);
    while (depth-- > 0 && node !== null && typeof node === "object") {
      const keys = Object.keys(node as object);
      if (keys.length === 0) break;
      const child = (node as Record<string, unknown>)[g.pick(keys)];
      if (child === null || typeof child !== "object") break;
      node = child;
    }
    if (node === null || typeof node !== "object") {
      value = g.weird();
      continue;
    }
    const obj = node as Record<string, unknown>;
    const keys = Object.keys(obj);
    const op = g.int(5);
    if (op === 0 && keys.length) delete obj[g.pick(keys)];
    else if (op <= 2 && keys.length) obj[g.pick(keys)] = g.weird();
    else if (op === 3) {
      obj[g.chance(0.5) && extraKeys.length ? g.pick(extraKeys) : `k${g.int(9)}`] = g.weird();
    } else if (keys.length) {
      const k = g.pick(keys);
      const v = obj[k];
      if (typeof v === "number") obj[k] = g.pick([v + 1, v - 1, -v, v * 2, v / 2, 0]);
      else obj[k] = g.weird();
    }
  }
  return value;
}

// ---- safetensors ----

function validSafetensors(g: Gen): Uint8Array {
  const tensors = Array.from({ length: 1 + g.int(3) }, (_, i) => {
    const shape = Array.from({ length: g.int(3) }, () => 1 + g.int(4));
    const count = shape.reduce((a, b) => a * b, 1);
    return {
      name: `t${i}`,
      shape,
      data: Float32Array.from({ length: count }, () => g.next() - 0.5),
      dtype: g.pick(["F32", "BF16"] as const),
    };
  });
  return encodeSafetensors(tensors, g.chance(0.3) ? { format: "pt" } : undefined);
}

function withHeader(header: unknown, data: Uint8Array): Uint8Array {
  const text = new TextEncoder().encode(JSON.stringify(header) ?? "");
  const out = new Uint8Array(8 + text.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(text.length), true);
  out.set(text, 8);
  out.set(data, 8 + text.length);
  return out;
}

function malformedSafetensors(g: Gen): Uint8Array {
  const bytes = validSafetensors(g);
  const view = new DataView(bytes.buffer);
  const headerLength = Number(view.getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength)));
  const data = bytes.subarray(8 + headerLength);
  switch (g.int(6)) {
    case 0: // the header's fields
      return withHeader(
        mutateTree(g, header, ["dtype", "shape", "data_offsets", "__metadata__"]),
        data,
      );
    case 1: { // the data section: truncated, extended or emptied
      const cut = g.int(data.length + 1);
      const extra = g.chance(0.5) ? new Uint8Array(g.int(64)).map(() => g.int(256)) : [];
      return withHeader(header, Uint8Array.from([...data.subarray(0, cut), ...extra]));
    }
    case 2: { // the length field
      const copy = bytes.slice();
      const len = g.pick([
        0n,
        1n,
        BigInt(headerLength - 1),
        BigInt(headerLength + 1),
        BigInt(bytes.length),
        2n ** 63n,
        2n ** 64n - 1n,
        BigInt(g.int(1 << 16)),
      ]);
      new DataView(copy.buffer).setBigUint64(0, len, true);
      return copy;
    }
    case 3: { // random byte flips anywhere
      const copy = bytes.slice();
      for (let i = 1 + g.int(8); i > 0; i--) copy[g.int(copy.length)] = g.int(256);
      return copy;
    }
    case 4: // truncated anywhere
      return bytes.subarray(0, g.int(bytes.length));
    default: { // offsets shuffled between tensors, or the header replaced by another JSON value
      if (g.chance(0.3)) return withHeader(g.weird(), data);
      const entries = Object.values(header).filter((e) =>
        e && typeof e === "object" && "data_offsets" in (e as object)
      ) as { data_offsets: number[] }[];
      for (const e of entries) {
        e.data_offsets = g.pick(entries).data_offsets.map((x) => x + g.int(3) - 1);
      }
      return withHeader(header, data);
    }
  }
}

function fuzzSafetensors(g: Gen): boolean {
  const file = parseSafetensors(malformedSafetensors(g), "fuzz.safetensors");
  // Accepted: every tensor's data section must convert without an untyped throw.
  for (const name of file.tensors.keys()) tensorToFloat32(file, name);
  return true;
}

// ---- config.json ----

const BASE_CONFIGS: readonly Record<string, unknown>[] = [
  {
    architectures: ["LlamaForCausalLM"],
    attention_bias: false,
    head_dim: 128,
    hidden_act: "silu",
    hidden_size: 512,
    intermediate_size: 1408,
    max_position_embeddings: 4096,
    mlp_bias: false,
    model_type: "llama",
    num_attention_heads: 4,
    num_hidden_layers: 4,
    num_key_value_heads: 2,
    rms_norm_eps: 1e-5,
    rope_parameters: { rope_theta: 10000, rope_type: "default" },
    tie_word_embeddings: false,
    vocab_size: 256,
  },
  {
    model_type: "mistral",
    hidden_size: 4096,
    intermediate_size: 14336,
    num_attention_heads: 32,
    num_hidden_layers: 32,
    num_key_value_heads: 8,
    vocab_size: 32000,
    rope_theta: 1e6,
    sliding_window: 4096,
    rope_scaling: null,
  },
  {
    model_type: "qwen2",
    hidden_size: 896,
    intermediate_size: 4864,
    num_attention_heads: 14,
    num_hidden_layers: 24,
    num_key_value_heads: 2,
    vocab_size: 151936,
    use_sliding_window: false,
    sliding_window: 32768,
    rope_theta: 1e6,
    tie_word_embeddings: true,
  },
];
const CONFIG_KEYS = [
  "model_type",
  "hidden_size",
  "intermediate_size",
  "num_attention_heads",
  "num_hidden_layers",
  "num_key_value_heads",
  "vocab_size",
  "head_dim",
  "rope_theta",
  "rope_scaling",
  "rope_parameters",
  "partial_rotary_factor",
  "hidden_act",
  "mlp_bias",
  "attention_bias",
  "sliding_window",
  "use_sliding_window",
  "rms_norm_eps",
  "max_position_embeddings",
  "layer_types",
  "max_window_layers",
];

function fuzzConfig(g: Gen): boolean {
  parseModelConfig(mutateTree(g, g.pick(BASE_CONFIGS), CONFIG_KEYS), "fuzz/config.json");
  return true;
}

// ---- channel configs ----

function permutation(g: Gen, n: number): number[] {
  const p = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = g.int(i + 1);
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
}

function validChannels(g: Gen): { json: Record<string, unknown>; shape: ChannelShape } {
  const numKvHeads = 1 + g.int(2);
  const shape = {
    numLayers: 1 + g.int(3),
    numKvHeads,
    numHeads: numKvHeads * (1 + g.int(2)),
    headDim: g.pick([4, 8]),
  };
  const json: Record<string, unknown> = {};
  const kinds = (["q", "k", "qk"] as const).filter(() => g.chance(0.6));
  for (let l = 0; l < shape.numLayers; l++) {
    for (const kind of kinds.length ? kinds : ["qk" as const]) {
      const rows = kind === "k" ? shape.numKvHeads : shape.numHeads;
      json[`model.layers.${l}.self_attn.${kind}_proj`] = Array.from(
        { length: rows },
        () => permutation(g, shape.headDim),
      );
    }
    if (g.chance(0.3)) json[`model.layers.${l}.mlp.down_proj`] = [permutation(g, shape.headDim)];
  }
  return { json, shape };
}

function fuzzChannels(g: Gen): boolean {
  const { json, shape } = validChannels(g);
  const other = g.chance(0.1)
    ? { ...shape, [g.pick(["numLayers", "numHeads", "numKvHeads", "headDim"])]: 1 + g.int(8) }
    : shape;
  const keys = [
    "model.layers.0.self_attn.qk_proj",
    "model.layers.9.self_attn.k_proj",
    "model.layers.01.self_attn.q_proj",
    "model.layers.-1.self_attn.q_proj",
    "layers.0.qk",
    "model.layers.0.self_attn.v_proj",
    "__proto__",
  ];
  parseChannelConfig(mutateTree(g, json, keys), other, "fuzz/channels.json");
  return true;
}

// ---- spec objects ----

const BASE_SPECS: readonly Record<string, unknown>[] = [
  {
    headDim: 128,
    numQHeads: 32,
    numKvHeads: 8,
    kvDtype: "fp16",
    pageSize: 16,
    labels: { channels: 16, bits: 8 },
    selection: "group",
    budget: { ratio: 1 / 16, min: 16 },
    denseThreshold: 0,
    denseLayers: [0, 1],
  },
  {
    headDim: 64,
    numQHeads: 4,
    numKvHeads: 4,
    kvDtype: "bf16",
    pageSize: 32,
    labels: { channels: 32, bits: 4, heads: "kv" },
    selection: "head",
    budget: { tokens: 64 },
  },
];
const SPEC_KEYS = [
  "headDim",
  "numQHeads",
  "numKvHeads",
  "kvDtype",
  "pageSize",
  "labels",
  "channels",
  "bits",
  "heads",
  "selection",
  "budget",
  "ratio",
  "min",
  "max",
  "tokens",
  "denseThreshold",
  "denseLayers",
];

function fuzzSpec(g: Gen): boolean {
  const spec = defineAttention(mutateTree(g, g.pick(BASE_SPECS), SPEC_KEYS) as never);
  // Accepted: its JSON copy must validate back to the same variant through the npm entries.
  ensureSpec(JSON.parse(JSON.stringify(spec)), "fuzz copy");
  return true;
}

const TARGETS: Record<FuzzTarget, (g: Gen) => boolean> = {
  safetensors: fuzzSafetensors,
  config: fuzzConfig,
  channels: fuzzChannels,
  spec: fuzzSpec,
};

export function runFuzz(target: FuzzTarget, seed: number, count: number): FuzzReport {
  const started = performance.now();
  let accepted = 0, rejected = 0, untyped = 0, slowestMs = 0;
  const findings: string[] = [];
  for (let i = 0; i < count; i++) {
    // Each case has its own generator, so `seed` and the case index reproduce it alone.
    const g = new Gen((seed ^ Math.imul(i + 1, 0x9e3779b1)) >>> 0);
    const t0 = performance.now();
    try {
      TARGETS[target](g);
      accepted++;
    } catch (e) {
      if (e instanceof DsError) {
        rejected++;
      } else {
        untyped++;
        if (findings.length < 5) {
          findings.push(`case ${i}: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
        }
      }
    }
    slowestMs = Math.max(slowestMs, performance.now() - t0);
  }
  return {
    target,
    seed,
    count,
    accepted,
    rejected,
    untyped,
    findings,
    slowestMs,
    ms: performance.now() - started,
  };
}

// As a worker: one message { target, seed, count } -> one FuzzReport.
const worker = self as unknown as {
  onmessage: ((e: MessageEvent) => void) | null;
  postMessage(message: unknown): void;
};
worker.onmessage = (e: MessageEvent) => {
  const { target, seed, count } = e.data as { target: FuzzTarget; seed: number; count: number };
  worker.postMessage(runFuzz(target, seed, count));
};
