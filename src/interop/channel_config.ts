/**
 * The channel-config file of the Double Sparsity authors and SGLang: one JSON object, keys
 * `"model.layers.{i}.self_attn.{q|k|qk}_proj"`, each value one row per head (query heads for q
 * and qk, kv heads for k), each row the full ranking of the head-dim channels, most important
 * first, in Hugging Face's rotate-half channel order. Their loaders use `config[key][head][:r]`.
 * The authors' files for some models (Llama-2-7B, Mistral-7B) also rank other projections
 * (`self_attn.v_proj`, `self_attn.o_proj`, `mlp.down_proj`): those keys are skipped, and the
 * parsed config's `note` says what was used and what was not.
 *
 * Pure (no file system): parsing, validation and serialization, shared by the file reader and
 * writer of the Deno tools (src/quality/channel_config.ts) and the npm package.
 *
 * @module
 */
import { InputError } from "../util/errors.ts";

/** Which statistic ranked the channels: mean |q_c|, mean |k_c| or mean |q_c * k_c|. */
export type ChannelKind = "q" | "k" | "qk";
/** Kinds in the order files are written. */
export const CHANNEL_KINDS: readonly ChannelKind[] = ["q", "k", "qk"];

/** The model dimensions a channel config must match. */
export interface ChannelShape {
  /** Decoder layers: one key per layer and kind. */
  numLayers: number;
  /** Query heads: rows of the q and qk rankings. */
  numHeads: number;
  /** Key/value heads: rows of the k rankings. */
  numKvHeads: number;
  /** Channels per head: the length of every ranking row. */
  headDim: number;
}

/** [layer][head][rank] -> channel index. */
export type ChannelRankings = number[][][];

/** A parsed channel config: the rankings of each kind present. */
export interface ChannelConfig {
  /** The kinds present in the file; each covers every layer. */
  kinds: Partial<Record<ChannelKind, ChannelRankings>>;
  /** What a parse used and skipped, when it skipped something (for the caller to show). */
  note?: string;
}

/** Problems beyond this many are summarised as a count. */
const MAX_LISTED_PROBLEMS = 20;
/** Missing channels of one row listed before "...". */
const MAX_LISTED_MISSING = 8;

const KEY_PATTERN = /^model\.layers\.(0|[1-9][0-9]*)\.self_attn\.(q|k|qk)_proj$/;
/** Another module of a layer ("model.layers.3.mlp.down_proj"): ranked by some files, not used. */
const OTHER_LAYER_KEY = /^model\.layers\.(?:0|[1-9][0-9]*)\.(.+)$/;

/** The key of a layer's rankings of one kind: `model.layers.{layer}.self_attn.{kind}_proj`. */
export function channelConfigKey(layer: number, kind: ChannelKind): string {
  return `model.layers.${layer}.self_attn.${kind}_proj`;
}

/** Rows per layer: one per query head for q and qk, one per kv head for k. */
export function rowsForKind(kind: ChannelKind, shape: ChannelShape): number {
  return kind === "k" ? shape.numKvHeads : shape.numHeads;
}

/** Checks one ranking row; appends problems. */
function checkRow(row: unknown, headDim: number, where: string, problems: string[]): void {
  if (!Array.isArray(row)) {
    problems.push(`${where}: expected a list of channel indices, got ${JSON.stringify(row)}`);
    return;
  }
  if (row.length !== headDim) {
    problems.push(`${where}: has ${row.length} entries, expected ${headDim} (head dim)`);
  }
  const firstSeenAt = new Map<number, number>();
  row.forEach((entry, j) => {
    if (typeof entry !== "number" || !Number.isInteger(entry)) {
      problems.push(`${where}: entry ${j} is ${JSON.stringify(entry)}, not an integer`);
    } else if (entry < 0 || entry >= headDim) {
      problems.push(`${where}: entry ${j} is channel ${entry}, outside 0..${headDim - 1}`);
    } else if (firstSeenAt.has(entry)) {
      problems.push(
        `${where}: duplicate channel ${entry} at entries ${firstSeenAt.get(entry)} and ${j}`,
      );
    } else {
      firstSeenAt.set(entry, j);
    }
  });
  const missing: number[] = [];
  for (let c = 0; c < headDim; c++) if (!firstSeenAt.has(c)) missing.push(c);
  if (missing.length > 0) {
    const shown = missing.slice(0, MAX_LISTED_MISSING).join(", ");
    const more = missing.length > MAX_LISTED_MISSING ? ", ..." : "";
    problems.push(`${where}: missing ${missing.length} channel(s): ${shown}${more}`);
  }
}

function problemError(source: string, problems: string[]): InputError {
  const listed = problems.slice(0, MAX_LISTED_PROBLEMS).map((p) => `  - ${p}`);
  if (problems.length > MAX_LISTED_PROBLEMS) {
    listed.push(`  ... and ${problems.length - MAX_LISTED_PROBLEMS} more problem(s)`);
  }
  return new InputError(
    source,
    `invalid channel config (${problems.length} problem(s)):\n${listed.join("\n")}`,
  );
}

/**
 * Validates a decoded channel-config object against the model's shape and returns its
 * rankings. Every problem found is reported in one error.
 */
export function parseChannelConfig(
  json: unknown,
  expect: ChannelShape,
  source = "channel config",
): ChannelConfig {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new InputError(
      source,
      `expected a JSON object of "model.layers.{i}.self_attn.*_proj" keys`,
    );
  }
  const problems: string[] = [];
  const found: Partial<Record<ChannelKind, Map<number, unknown>>> = {};
  const skipped = new Map<string, number>();
  for (const [key, value] of Object.entries(json as Record<string, unknown>)) {
    const match = KEY_PATTERN.exec(key);
    const other = match ? null : OTHER_LAYER_KEY.exec(key);
    if (other) {
      skipped.set(other[1], (skipped.get(other[1]) ?? 0) + 1);
      continue;
    }
    if (!match) {
      problems.push(
        `key ${JSON.stringify(key)} does not match "model.layers.{i}.self_attn.{q|k|qk}_proj"`,
      );
      continue;
    }
    const layer = Number(match[1]);
    const kind = match[2] as ChannelKind;
    if (layer >= expect.numLayers) {
      problems.push(`key "${key}": layer ${layer} is out of range (model has ${expect.numLayers})`);
      continue;
    }
    (found[kind] ??= new Map()).set(layer, value);
  }

  const kinds: Partial<Record<ChannelKind, ChannelRankings>> = {};
  for (const kind of CHANNEL_KINDS) {
    const byLayer = found[kind];
    if (!byLayer) continue;
    const rows = rowsForKind(kind, expect);
    const headWord = kind === "k" ? "kv head" : "query head";
    const rankings: ChannelRankings = [];
    for (let layer = 0; layer < expect.numLayers; layer++) {
      const key = channelConfigKey(layer, kind);
      if (!byLayer.has(layer)) {
        problems.push(`layer ${layer} is missing for kind "${kind}" (no key "${key}")`);
        continue;
      }
      const value = byLayer.get(layer);
      if (!Array.isArray(value)) {
        problems.push(`"${key}": expected a list of ${rows} rows, got ${typeof value}`);
        continue;
      }
      if (value.length !== rows) {
        problems.push(`"${key}": has ${value.length} rows, expected ${rows} (one per ${headWord})`);
      }
      value.forEach((row, head) =>
        checkRow(row, expect.headDim, `"${key}" ${headWord} ${head}`, problems)
      );
      rankings.push(value as number[][]);
    }
    kinds[kind] = rankings;
  }
  if (problems.length === 0 && Object.keys(kinds).length === 0) {
    problems.push(
      skipped.size > 0
        ? `no q, k or qk rankings (only ${[...skipped.keys()].join(", ")})`
        : "no channel rankings (the object has no keys)",
    );
  }
  if (problems.length > 0) throw problemError(source, problems);
  if (skipped.size === 0) return { kinds };
  const used = CHANNEL_KINDS.filter((k) => kinds[k]).map((k) => `${k}_proj`).join(", ");
  const other = [...skipped].map(([name, n]) => `${name} (${n} key${n === 1 ? "" : "s"})`);
  return {
    kinds,
    note: `${source}: used the ${used} rankings of ${expect.numLayers} layers; ignored ` +
      `${other.join(", ")}`,
  };
}

/** The model shape implied by a config's arrays (used to validate before writing). */
function inferShape(config: ChannelConfig): ChannelShape {
  const present = CHANNEL_KINDS.filter((k) => config.kinds[k] !== undefined);
  if (present.length === 0) throw new Error("formatChannelConfig: no channel rankings to write");
  const first = config.kinds[present[0]]!;
  const headRows = config.kinds.qk?.[0] ?? config.kinds.q?.[0];
  return {
    numLayers: Math.max(...present.map((k) => config.kinds[k]!.length)),
    numHeads: headRows?.length ?? 0,
    numKvHeads: config.kinds.k?.[0]?.length ?? 0,
    headDim: first[0]?.[0]?.length ?? 0,
  };
}

/**
 * JSON text of a channel config in a deterministic order (layers ascending, then kinds
 * q, k, qk), one ranking row per line. Throws when the rankings are not valid.
 */
export function formatChannelConfig(config: ChannelConfig): string {
  const shape = inferShape(config);
  const entries: [string, number[][]][] = [];
  for (let layer = 0; layer < shape.numLayers; layer++) {
    for (const kind of CHANNEL_KINDS) {
      const rankings = config.kinds[kind];
      // A kind short of layers is left out here and reported as missing by the check.
      if (rankings?.[layer] !== undefined) {
        entries.push([channelConfigKey(layer, kind), rankings[layer]]);
      }
    }
  }
  parseChannelConfig(Object.fromEntries(entries), shape, "formatChannelConfig");
  const blocks = entries.map(([key, rows]) => {
    const lines = rows.map((row) => `    [${row.join(", ")}]`).join(",\n");
    return `  ${JSON.stringify(key)}: [\n${lines}\n  ]`;
  });
  return `{\n${blocks.join(",\n")}\n}\n`;
}

/** The first `r` channels of every row: [layer][head][r]. */
export function leadingChannels(rankings: ChannelRankings, r: number): number[][][] {
  return rankings.map((layer) => layer.map((row) => row.slice(0, r)));
}
