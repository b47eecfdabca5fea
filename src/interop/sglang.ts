/**
 * SGLang's Double Sparsity settings mapped onto an attention spec, so a deployment's flags
 * (`--ds-heavy-channel-num`, `--ds-heavy-token-num`, `--ds-heavy-channel-type`,
 * `--ds-sparse-decode-threshold`, `--ds-channel-config-path`) describe the same attention here.
 *
 * What SGLang did with them, and so what the spec gets:
 * - heavy channels r: labels of r channels stored in the KV dtype (no quantization): 16 bits;
 * - heavy channel type: the ranking read from the channel config, `{type}_proj`; q and qk rank
 *   query heads (labels per query head), k ranks kv heads (labels per kv head). SGLang gathered
 *   key labels with the config's rows as they are, so it ran q/qk rankings only where query and
 *   kv heads are as many (MHA); here q/qk rankings work with grouped-query attention too;
 * - every query head selects its own tokens ("head" selection);
 * - heavy tokens: a fixed top-k per head, whatever the context;
 * - sparse decode threshold: shorter contexts take dense attention. SGLang decided per batch
 *   (dense when the longest context is under the threshold or the shortest under the token
 *   count); the spec routes each sequence on its own length, which agrees for a batch of one;
 * - no layer is kept dense.
 *
 * Pure: no I/O. Runs under Deno and Node.
 *
 * @module
 */
import type { ChannelKind } from "./channel_config.ts";
import { type AttentionSpec, defineAttention, type KvDtype, SpecError } from "../dsl/spec.ts";

/**
 * SGLang's server arguments for Double Sparsity, as its `ServerArgs` names them. Keys may also
 * be spelled as the command-line flags (`--ds-heavy-channel-num`); numbers may be strings, as
 * they come from a command line.
 */
export interface SglangDoubleSparsityFlags {
  /** `--enable-double-sparsity`; when given it must be true. */
  enable_double_sparsity?: boolean | string;
  /** `--ds-channel-config-path`: the channel-config file; returned as given. */
  ds_channel_config_path?: string;
  /** `--ds-heavy-channel-num`: label channels r per token and head (SGLang's default: 32). */
  ds_heavy_channel_num?: number | string;
  /** `--ds-heavy-token-num`: tokens each head selects (SGLang's default: 256). */
  ds_heavy_token_num?: number | string;
  /** `--ds-heavy-channel-type`: the ranking used, "q", "k" or "qk" (SGLang's default: "qk"). */
  ds_heavy_channel_type?: string;
  /** `--ds-sparse-decode-threshold`: shorter contexts decode densely (SGLang's default: 4096). */
  ds_sparse_decode_threshold?: number | string;
}

/** SGLang's defaults for the flags a user leaves out. */
export const SGLANG_DEFAULTS = {
  ds_heavy_channel_num: 32,
  ds_heavy_token_num: 256,
  ds_heavy_channel_type: "qk",
  ds_sparse_decode_threshold: 4096,
} as const;

/** The model's attention shape, which SGLang reads from the checkpoint and the flags do not say. */
export interface SglangModelShape {
  /** Head dimension of Q, K and V. */
  headDim: number;
  /** Query heads (`num_attention_heads`). */
  numQHeads: number;
  /** Key/value heads (`num_key_value_heads`). */
  numKvHeads: number;
  /** KV-cache element type (default "fp16"). */
  kvDtype?: KvDtype;
  /** Tokens per page of the paged caches here (default 16); it does not change the results. */
  pageSize?: number;
}

/** What {@linkcode specFromSglangFlags} returns. */
export interface SglangSettings {
  /** The attention spec equivalent to the flags. */
  spec: AttentionSpec;
  /** The ranking to read from the channel config (`model.layers.{i}.self_attn.{kind}_proj`). */
  channelKind: ChannelKind;
  /** `--ds-channel-config-path`, when it was given. */
  channelConfigPath?: string;
}

const FLAG_OF_FIELD: Readonly<Record<string, string>> = {
  "labels.channels": "--ds-heavy-channel-num",
  "budget.tokens": "--ds-heavy-token-num",
  denseThreshold: "--ds-sparse-decode-threshold",
};

const KEYS = [
  "enable_double_sparsity",
  "ds_channel_config_path",
  "ds_heavy_channel_num",
  "ds_heavy_token_num",
  "ds_heavy_channel_type",
  "ds_sparse_decode_threshold",
] as const;

const flagName = (key: string) => `--${key.replaceAll("_", "-")}`;

/** `--ds-heavy-channel-num` or `ds-heavy-channel-num` -> `ds_heavy_channel_num`. */
const keyName = (key: string) => key.replace(/^--/, "").replaceAll("-", "_");

function integer(problems: string[], key: string, value: unknown, min: number): number {
  const n = typeof value === "string" && /^\s*-?\d+\s*$/.test(value) ? Number(value) : value;
  if (typeof n === "number" && Number.isInteger(n) && n >= min) return n;
  problems.push(
    `${flagName(key)}: got ${JSON.stringify(value)}; allowed: an integer >= ${min}`,
  );
  return min;
}

/**
 * The spec (and channel-config kind) that SGLang's Double Sparsity flags describe for a model
 * of the given shape. Flags left out take SGLang's defaults ({@linkcode SGLANG_DEFAULTS}).
 * Throws a {@linkcode SpecError} naming every flag that is unknown, malformed, or not
 * expressible here (for example an odd `--ds-heavy-channel-num`: 16-bit label rows are whole
 * 32-bit words).
 *
 * @example
 * ```ts
 * const { spec, channelKind } = specFromSglangFlags(
 *   { "--ds-heavy-channel-num": 16, "--ds-heavy-token-num": 512, "--ds-heavy-channel-type": "qk" },
 *   { headDim: 128, numQHeads: 32, numKvHeads: 8 },
 * );
 * spec.variant; // "ds_d128_q32_kv8_p16_fp16_r16b16_head"
 * channelKind; // "qk"
 * ```
 */
export function specFromSglangFlags(
  flags: SglangDoubleSparsityFlags | Readonly<Record<string, unknown>>,
  model: SglangModelShape,
): SglangSettings {
  const problems: string[] = [];
  const given = new Map<string, unknown>();
  for (const [raw, value] of Object.entries(flags)) {
    const key = keyName(raw);
    if (!(KEYS as readonly string[]).includes(key)) {
      problems.push(
        `${raw}: not a Double Sparsity flag of SGLang; allowed: ${KEYS.map(flagName).join(", ")}`,
      );
    } else if (given.has(key)) {
      problems.push(`${flagName(key)}: given twice`);
    } else if (value !== undefined) {
      given.set(key, value);
    }
  }
  const value = <K extends keyof typeof SGLANG_DEFAULTS>(key: K) =>
    given.has(key) ? given.get(key) : SGLANG_DEFAULTS[key];

  const enable = given.get("enable_double_sparsity");
  if (enable !== undefined && enable !== true && enable !== "true") {
    problems.push(
      `--enable-double-sparsity: got ${JSON.stringify(enable)}; allowed: true (or left out)`,
    );
  }
  const path = given.get("ds_channel_config_path");
  if (path !== undefined && (typeof path !== "string" || path === "")) {
    problems.push(`--ds-channel-config-path: got ${JSON.stringify(path)}; allowed: a file path`);
  }
  const channels = integer(problems, "ds_heavy_channel_num", value("ds_heavy_channel_num"), 1);
  const tokens = integer(problems, "ds_heavy_token_num", value("ds_heavy_token_num"), 1);
  const threshold = integer(
    problems,
    "ds_sparse_decode_threshold",
    value("ds_sparse_decode_threshold"),
    0,
  );
  const kind = value("ds_heavy_channel_type");
  if (kind !== "q" && kind !== "k" && kind !== "qk") {
    problems.push(
      `--ds-heavy-channel-type: got ${JSON.stringify(kind)}; allowed: "q", "k", "qk"`,
    );
  }
  if (problems.length > 0) throw new SpecError(problems);

  const channelKind = kind as ChannelKind;
  let spec: AttentionSpec;
  try {
    spec = defineAttention({
      headDim: model.headDim,
      numQHeads: model.numQHeads,
      numKvHeads: model.numKvHeads,
      kvDtype: model.kvDtype ?? "fp16",
      pageSize: model.pageSize ?? 16,
      labels: { channels, bits: 16, heads: channelKind === "k" ? "kv" : "query" },
      selection: "head",
      budget: { tokens },
      denseThreshold: threshold,
    });
  } catch (e) {
    if (!(e instanceof SpecError)) throw e;
    // Name the flag a problem comes from, where one does.
    throw new SpecError(e.problems.map((p) => {
      const field = p.slice(0, p.indexOf(":"));
      return FLAG_OF_FIELD[field] ? `${FLAG_OF_FIELD[field]} (${p})` : `model shape: ${p}`;
    }));
  }
  return {
    spec,
    channelKind,
    ...(path === undefined ? {} : { channelConfigPath: path as string }),
  };
}

/**
 * SGLang flags equivalent to a spec, where SGLang can express it: 16-bit labels, per-head
 * selection, a fixed token budget and no dense layers. Throws naming what SGLang lacks.
 */
export function sglangFlagsFromSpec(
  spec: AttentionSpec,
  channelKind: ChannelKind,
): Required<
  Pick<
    SglangDoubleSparsityFlags,
    | "ds_heavy_channel_num"
    | "ds_heavy_token_num"
    | "ds_heavy_channel_type"
    | "ds_sparse_decode_threshold"
  >
> {
  const problems: string[] = [];
  if (spec.labelBits !== 16) {
    problems.push(`labelBits: got ${spec.labelBits}; SGLang stores labels unquantized (16)`);
  }
  if (spec.selection !== "head") {
    problems.push(`selection: got "${spec.selection}"; SGLang selects per query head ("head")`);
  }
  if (spec.budget.kind !== "fixed") {
    problems.push(`budget: got a ratio; SGLang takes a fixed token count ({ tokens })`);
  }
  if (spec.denseLayers.length > 0) {
    problems.push(`denseLayers: got [${spec.denseLayers}]; SGLang keeps no layer dense`);
  }
  const wantHeads = channelKind === "k" ? "kv" : "query";
  if (spec.labelHeads !== wantHeads) {
    problems.push(
      `labelHeads: got "${spec.labelHeads}" with channel kind "${channelKind}"; ` +
        `allowed: "${wantHeads}" (${channelKind} rankings have one row per ` +
        `${wantHeads === "kv" ? "kv" : "query"} head)`,
    );
  }
  if (problems.length > 0) throw new SpecError(problems);
  return {
    ds_heavy_channel_num: spec.labelChannels,
    ds_heavy_token_num: (spec.budget as { tokens: number }).tokens,
    ds_heavy_channel_type: channelKind,
    ds_sparse_decode_threshold: spec.denseThreshold,
  };
}
