/**
 * The attention-variant DSL: one typed function, `defineAttention`, that validates a description
 * of a Double Sparsity decode-attention variant and returns a frozen spec with the facts a user
 * wants before compiling anything (variant name, bytes per token, ideal byte ratio).
 *
 * Pure: no I/O, no FFI. Runs under Deno and Node.
 */
import {
  KV_ELEMENT_BYTES,
  LABEL_WORD_BITS,
  labelMetaBytes as metaBytesOf,
  labelRowBytes as rowBytesOf,
  SCORE_KEY_BYTES,
} from "./layout.ts";
import { DsError } from "../util/errors.ts";

/** Element type of the K/V cache (and of Q and the attention output). */
export type KvDtype = "fp16" | "bf16";
/** Bits per stored label channel: 16 keeps the K value, 8/4/2 quantize it (min-max per row). */
export type LabelBits = 16 | 8 | 4 | 2;
/**
 * Who selects tokens: every query head on its own ("head"), or one set per kv head from scores
 * summed over its group of query heads ("group", reads each selected K/V row once).
 */
export type Selection = "head" | "group";
/** Whose channel ranking the label cache stores: one row per query head, or one per kv head. */
export type LabelHeads = "query" | "kv";

/** Token budget per sequence: a fixed count, or a ratio of the context clamped to [min, max]. */
export type BudgetInput = { tokens: number } | { ratio: number; min?: number; max?: number };

/** What {@linkcode defineAttention} takes: the description of an attention variant. */
export interface AttentionInput {
  /** Head dimension of Q, K and V. */
  headDim: number;
  /** Query heads. */
  numQHeads: number;
  /** Key/value heads; must divide numQHeads (grouped-query attention when fewer). */
  numKvHeads: number;
  /** Element type of the K/V cache. */
  kvDtype: KvDtype;
  /** Tokens per page of the paged KV and label caches (power of two). */
  pageSize: number;
  /** The label cache: r channels per token and label head, at `bits` bits each. */
  labels: {
    /** Label channels r per token and label head. */
    channels: number;
    /** Bits per stored label channel: 16 stores the raw K value, 8/4/2 quantize (min-max). */
    bits: LabelBits;
    /** Default: "query" for head selection, "kv" for group selection (the only choice there). */
    heads?: LabelHeads;
  };
  /** Per-head or per-group token selection. */
  selection: Selection;
  /** Tokens selected per sequence and selection head. */
  budget: BudgetInput;
  /** Sequences shorter than this use dense attention (default 0: only when context <= budget). */
  denseThreshold?: number;
  /** Layers computed densely (e.g. [0, 1]). Model-level policy; does not change the kernels. */
  denseLayers?: number[];
}

/** The validated token budget of a spec; {@linkcode budgetFor} turns it into a count. */
export type Budget =
  | { readonly kind: "fixed"; readonly tokens: number }
  | { readonly kind: "ratio"; readonly ratio: number; readonly min: number; readonly max: number };

/** A validated, frozen attention variant, as {@linkcode defineAttention} returns it. */
export interface AttentionSpec {
  /** Head dimension of Q, K and V. */
  readonly headDim: number;
  /** Query heads. */
  readonly numQHeads: number;
  /** Key/value heads. */
  readonly numKvHeads: number;
  /** Query heads per kv head. */
  readonly groupSize: number;
  /** Element type of the K/V cache. */
  readonly kvDtype: KvDtype;
  /** Tokens per page of the paged caches. */
  readonly pageSize: number;
  /** Label channels r per token and label head. */
  readonly labelChannels: number;
  /** Bits per stored label channel. */
  readonly labelBits: LabelBits;
  /** Whether label rows (and channel rankings) are per query head or per kv head. */
  readonly labelHeads: LabelHeads;
  /** Rows of the label cache per token: numQHeads or numKvHeads. */
  readonly numLabelHeads: number;
  /** Per-head or per-group token selection. */
  readonly selection: Selection;
  /** Independent top-k selections per sequence: numQHeads (head) or numKvHeads (group). */
  readonly numSelectionHeads: number;
  /** Tokens selected per sequence and selection head. */
  readonly budget: Budget;
  /** Sequences shorter than this take dense attention. */
  readonly denseThreshold: number;
  /** Layers computed densely, ascending. */
  readonly denseLayers: readonly number[];
  /** Readable, stable name built from every parameter that changes the kernels. */
  readonly variant: string;
  /** Bytes per cached token that each kind of step reads. */
  readonly bytes: ByteModel;
}

/** Bytes per cached token (all heads of one sequence), for the fact table and the benchmark. */
export interface ByteModel {
  /** Dense decode reads K and V of every token: 2 * Hkv * d * elementBytes. */
  readonly denseRead: number;
  /** Packed label codes per token and label head. */
  readonly labelRowBytes: number;
  /** Per-token quantization metadata (scale, min) per label head; 0 for 16-bit labels. */
  readonly labelMetaBytes: number;
  /** Labels read by scoring per token: numLabelHeads * (row + meta). */
  readonly labelRead: number;
  /** Score keys written and read back by top-k, per token (2-byte keys per selection head). */
  readonly scoreTraffic: number;
  /** K/V bytes per selected token (all selection sets of the sequence). */
  readonly selectedRowBytes: number;
}

/** Head dimensions the kernels support. */
export const HEAD_DIMS = [64, 128, 256] as const;
/** Label widths the kernels support. */
export const LABEL_BITS = [16, 8, 4, 2] as const;
/** K/V element types the kernels support. */
export const KV_DTYPES = ["fp16", "bf16"] as const;
/** Selection modes. */
export const SELECTIONS = ["head", "group"] as const;
/** Largest page size (tokens per page). */
export const MAX_PAGE_SIZE = 1024;
/** Bytes per score key written by the scoring kernel (defined with the layout). */
export { SCORE_KEY_BYTES };

/** An invalid spec: the message lists every problem, one per line; `problems` holds them. */
export class SpecError extends DsError {
  /**
   * A spec error listing `problems`.
   *
   * @param problems one line per problem: the field, the value and what is allowed. */
  constructor(readonly problems: readonly string[]) {
    super(
      `invalid attention spec (${problems.length} problem${problems.length === 1 ? "" : "s"}):\n` +
        problems.map((p) => `  - ${p}`).join("\n"),
    );
    this.name = "SpecError";
  }
}

const isInt = (v: unknown): v is number => typeof v === "number" && Number.isInteger(v);
const show = (v: unknown): string => {
  if (typeof v === "string") return JSON.stringify(v);
  if (v === undefined) return "undefined";
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
};

function oneOf<T>(
  problems: string[],
  field: string,
  value: unknown,
  allowed: readonly T[],
): value is T {
  if (allowed.includes(value as T)) return true;
  problems.push(`${field}: got ${show(value)}; allowed: ${allowed.map(show).join(", ")}`);
  return false;
}

function positiveInt(problems: string[], field: string, value: unknown, max?: number): boolean {
  if (isInt(value) && value >= 1 && (max === undefined || value <= max)) return true;
  problems.push(
    `${field}: got ${show(value)}; allowed: an integer >= 1${
      max === undefined ? "" : ` and <= ${max}`
    }`,
  );
  return false;
}

const KNOWN_FIELDS = new Set([
  "headDim",
  "numQHeads",
  "numKvHeads",
  "kvDtype",
  "pageSize",
  "labels",
  "selection",
  "budget",
  "denseThreshold",
  "denseLayers",
]);

/** Validates `input` (all problems at once) and returns the frozen spec. Throws SpecError. */
export function defineAttention(input: AttentionInput): AttentionSpec {
  const p: string[] = [];
  const raw = input as unknown as Record<string, unknown>;
  if (raw === null || typeof raw !== "object") throw new SpecError(["spec: expected an object"]);
  for (const key of Object.keys(raw)) {
    if (!KNOWN_FIELDS.has(key)) {
      p.push(`${key}: unknown field; allowed fields: ${[...KNOWN_FIELDS].join(", ")}`);
    }
  }

  oneOf(p, "headDim", input.headDim, HEAD_DIMS);
  const qOk = positiveInt(p, "numQHeads", input.numQHeads, 256);
  const kvOk = positiveInt(p, "numKvHeads", input.numKvHeads, 256);
  if (qOk && kvOk && input.numQHeads % input.numKvHeads !== 0) {
    p.push(
      `numKvHeads: got ${input.numKvHeads}, which does not divide numQHeads ${input.numQHeads}; ` +
        `allowed: a divisor of numQHeads (${divisors(input.numQHeads).join(", ")})`,
    );
  }
  oneOf(p, "kvDtype", input.kvDtype, KV_DTYPES);
  if (
    !isInt(input.pageSize) || input.pageSize < 1 || input.pageSize > MAX_PAGE_SIZE ||
    (input.pageSize & (input.pageSize - 1)) !== 0
  ) {
    p.push(
      `pageSize: got ${show(input.pageSize)}; allowed: a power of two from 1 to ${MAX_PAGE_SIZE}`,
    );
  }
  oneOf(p, "selection", input.selection, SELECTIONS);

  const labels = input.labels as AttentionInput["labels"] | undefined;
  let labelHeads: LabelHeads = input.selection === "group" ? "kv" : "query";
  if (labels === null || typeof labels !== "object") {
    p.push(`labels: got ${show(labels)}; allowed: { channels, bits, heads? }`);
  } else {
    const bitsOk = oneOf(p, "labels.bits", labels.bits, LABEL_BITS);
    const d = HEAD_DIMS.includes(input.headDim as 64) ? input.headDim : 256;
    const chOk = positiveInt(p, "labels.channels", labels.channels, d);
    if (bitsOk && chOk && (labels.channels * labels.bits) % LABEL_WORD_BITS !== 0) {
      const step = LABEL_WORD_BITS / gcd(LABEL_WORD_BITS, labels.bits);
      p.push(
        `labels.channels: got ${labels.channels} at ${labels.bits} bits = ${
          labels.channels * labels.bits
        } bits per row; allowed: a multiple of ${step} channels at ${labels.bits} bits ` +
          `(label rows are whole 32-bit words)`,
      );
    }
    if (labels.heads !== undefined) {
      if (oneOf(p, "labels.heads", labels.heads, ["query", "kv"] as const)) {
        if (input.selection === "group" && labels.heads === "query") {
          p.push(
            `labels.heads: got "query" with selection "group"; allowed: "kv" (group selection ` +
              `scores one token set per kv head from one channel set per kv head)`,
          );
        }
        labelHeads = labels.heads;
      }
    }
  }

  const budget = validateBudget(p, input.budget);
  const denseThreshold = input.denseThreshold ?? 0;
  if (!isInt(denseThreshold) || denseThreshold < 0) {
    p.push(`denseThreshold: got ${show(input.denseThreshold)}; allowed: an integer >= 0`);
  }
  const denseLayers = input.denseLayers ?? [];
  if (!Array.isArray(denseLayers)) {
    p.push(`denseLayers: got ${show(denseLayers)}; allowed: an array of layer indices >= 0`);
  } else {
    denseLayers.forEach((l, i) => {
      if (!isInt(l) || l < 0) {
        p.push(`denseLayers[${i}]: got ${show(l)}; allowed: an integer layer index >= 0`);
      }
    });
    if (new Set(denseLayers).size !== denseLayers.length) {
      p.push(`denseLayers: got ${show(denseLayers)}; allowed: each layer at most once`);
    }
  }
  if (p.length > 0 || !labels) throw new SpecError(p);

  const groupSize = input.numQHeads / input.numKvHeads;
  const numLabelHeads = labelHeads === "query" ? input.numQHeads : input.numKvHeads;
  const numSelectionHeads = input.selection === "head" ? input.numQHeads : input.numKvHeads;
  const labelRowBytes = rowBytesOf(labels.channels, labels.bits);
  const labelMetaBytes = metaBytesOf(labels.bits);
  const rowBytes = input.headDim * KV_ELEMENT_BYTES;
  const bytes: ByteModel = Object.freeze({
    denseRead: 2 * input.numKvHeads * rowBytes,
    labelRowBytes,
    labelMetaBytes,
    labelRead: numLabelHeads * (labelRowBytes + labelMetaBytes),
    scoreTraffic: 2 * numSelectionHeads * SCORE_KEY_BYTES,
    selectedRowBytes: 2 * numSelectionHeads * rowBytes,
  });
  const spec: AttentionSpec = {
    headDim: input.headDim,
    numQHeads: input.numQHeads,
    numKvHeads: input.numKvHeads,
    groupSize,
    kvDtype: input.kvDtype,
    pageSize: input.pageSize,
    labelChannels: labels.channels,
    labelBits: labels.bits,
    labelHeads,
    numLabelHeads,
    selection: input.selection,
    numSelectionHeads,
    budget,
    denseThreshold,
    denseLayers: Object.freeze([...denseLayers].sort((a, b) => a - b)),
    variant: "",
    bytes,
  };
  const defined = Object.freeze({ ...spec, variant: variantName(spec) });
  DEFINED.add(defined);
  return defined;
}

/**
 * `denseLayers` is model-level policy that defineAttention cannot check alone: every decoder
 * checks it against its model's layer count when it is created.
 */
export function checkDenseLayers(spec: AttentionSpec, numLayers: number, who: string): void {
  const outside = spec.denseLayers.filter((l) => l >= numLayers);
  if (outside.length > 0) {
    throw new SpecError([
      `${who}: denseLayers: got ${show(spec.denseLayers)}; allowed: layer indices below the ` +
      `model's ${numLayers} layers (${outside.join(", ")} ${
        outside.length === 1 ? "is" : "are"
      } outside)`,
    ]);
  }
}

/** Specs returned by defineAttention in this module instance. */
const DEFINED = new WeakSet<object>();

/** The AttentionInput that reproduces a spec-shaped object (the inverse of defineAttention). */
function inputOfSpecShape(s: Record<string, unknown>): Record<string, unknown> {
  const b = s.budget as Record<string, unknown> | null | undefined;
  const budget = b !== null && typeof b === "object"
    ? b.kind === "fixed" ? { tokens: b.tokens } : { ratio: b.ratio, min: b.min, max: b.max }
    : b;
  return {
    headDim: s.headDim,
    numQHeads: s.numQHeads,
    numKvHeads: s.numKvHeads,
    kvDtype: s.kvDtype,
    pageSize: s.pageSize,
    labels: { channels: s.labelChannels, bits: s.labelBits, heads: s.labelHeads },
    selection: s.selection,
    budget,
    denseThreshold: s.denseThreshold,
    denseLayers: Array.isArray(s.denseLayers) ? [...s.denseLayers] : s.denseLayers,
  };
}

/**
 * The validated spec behind `value`, for the public entries that take one (code generation,
 * rendering, layouts): a spec from defineAttention passes as it is; a spec-shaped plain object
 * (a copy, a spec from another copy of this module, JSON) is rebuilt through defineAttention and
 * must name the same variant; anything else is a SpecError naming `where`.
 */
export function ensureSpec(value: unknown, where: string): AttentionSpec {
  if (value !== null && typeof value === "object" && DEFINED.has(value)) {
    return value as AttentionSpec;
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new SpecError([
      `${where}: got ${show(value)}; allowed: an attention spec from defineAttention()`,
    ]);
  }
  const raw = value as Record<string, unknown>;
  if (!("variant" in raw)) {
    throw new SpecError([
      `${where}: got an object without "variant"; allowed: an attention spec from ` +
      `defineAttention() (pass plain input through defineAttention first)`,
    ]);
  }
  let rebuilt: AttentionSpec;
  try {
    rebuilt = defineAttention(inputOfSpecShape(raw) as unknown as AttentionInput);
  } catch (e) {
    if (!(e instanceof SpecError)) throw e;
    throw new SpecError(e.problems.map((problem) => `${where}: ${problem}`));
  }
  if (rebuilt.variant !== raw.variant) {
    throw new SpecError([
      `${where}.variant: got ${show(raw.variant)}; its fields define ${rebuilt.variant}`,
    ]);
  }
  return rebuilt;
}

function validateBudget(p: string[], b: BudgetInput | undefined): Budget {
  const fallback: Budget = { kind: "fixed", tokens: 1 };
  if (b === null || typeof b !== "object") {
    p.push(`budget: got ${show(b)}; allowed: { tokens } or { ratio, min?, max? }`);
    return fallback;
  }
  if ("tokens" in b && "ratio" in b) {
    p.push(`budget: got both "tokens" and "ratio"; allowed: exactly one of them`);
    return fallback;
  }
  if ("tokens" in b) {
    if (!positiveInt(p, "budget.tokens", b.tokens)) return fallback;
    return Object.freeze({ kind: "fixed", tokens: b.tokens });
  }
  if ("ratio" in b) {
    const { ratio } = b;
    const min = b.min ?? 1;
    const max = b.max ?? Number.MAX_SAFE_INTEGER;
    let ok = true;
    if (typeof ratio !== "number" || !(ratio > 0 && ratio <= 1)) {
      p.push(`budget.ratio: got ${show(ratio)}; allowed: a number in (0, 1]`);
      ok = false;
    }
    ok = positiveInt(p, "budget.min", min) && ok;
    ok = positiveInt(p, "budget.max", max) && ok;
    if (ok && min > max) {
      p.push(`budget.max: got ${max}, below budget.min ${min}; allowed: max >= min`);
      ok = false;
    }
    return ok ? Object.freeze({ kind: "ratio", ratio, min, max }) : fallback;
  }
  p.push(`budget: got ${show(b)}; allowed: { tokens } or { ratio, min?, max? }`);
  return fallback;
}

/**
 * `ds_d128_q32_kv8_p16_fp16_r16b8_head`: every parameter that changes the generated kernels,
 * in a fixed order. Head selection with kv-head labels is spelled `headkv`. Budget, dense
 * threshold and dense layers are run-time policy and do not appear.
 */
export function variantName(s: Omit<AttentionSpec, "variant" | "bytes">): string {
  const sel = s.selection === "group" ? "group" : s.labelHeads === "kv" ? "headkv" : "head";
  return `ds_d${s.headDim}_q${s.numQHeads}_kv${s.numKvHeads}_p${s.pageSize}_${s.kvDtype}` +
    `_r${s.labelChannels}b${s.labelBits}_${sel}`;
}

/** Tokens selected for a sequence of `contextLen` tokens (never more than the context). */
export function budgetFor(budget: Budget, contextLen: number): number {
  if (budget.kind === "fixed") return Math.min(contextLen, budget.tokens);
  const want = Math.ceil(contextLen * budget.ratio);
  return Math.min(contextLen, Math.max(budget.min, Math.min(budget.max, want)));
}

/** How a sequence is attended this step. */
export type Route = "dense" | "sparse";

/** Dense when the sequence is under the threshold or the budget already covers every token. */
export function routeFor(
  spec: Pick<AttentionSpec, "budget" | "denseThreshold">,
  len: number,
): Route {
  return len < spec.denseThreshold || budgetFor(spec.budget, len) >= len ? "dense" : "sparse";
}

/** Bytes a Double Sparsity step moves for one sequence of `contextLen` tokens. */
export function sparseStepBytes(spec: AttentionSpec, contextLen: number): number {
  const k = budgetFor(spec.budget, contextLen);
  const b = spec.bytes;
  return contextLen * (b.labelRead + b.scoreTraffic) + k * b.selectedRowBytes;
}

/** Bytes a dense step reads for one sequence of `contextLen` tokens (K and V of every token). */
export function denseStepBytes(spec: AttentionSpec, contextLen: number): number {
  return contextLen * spec.bytes.denseRead;
}

/**
 * Dense bytes over Double Sparsity bytes for a budget of `ratio` of the context, counting labels
 * and selected rows only (the paper's ideal); `withScores` adds the score-key round trip.
 */
export function idealByteRatio(spec: AttentionSpec, ratio: number, withScores = false): number {
  const b = spec.bytes;
  const perToken = b.labelRead + (withScores ? b.scoreTraffic : 0) + ratio * b.selectedRowBytes;
  return b.denseRead / perToken;
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

function divisors(n: number): number[] {
  const out: number[] = [];
  for (let i = 1; i <= n; i++) if (n % i === 0) out.push(i);
  return out;
}
