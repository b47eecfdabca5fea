/**
 * Teacher-forced accuracy of attention variants (the protocol of docs/method.md): every
 * position of every window attends to the top-k of its own prefix, and the cross-entropy of
 * each next byte is summed into bits per byte.
 *
 *  - `evaluateGpu`: one GpuDecoder per variant with every window as a sequence of the batch;
 *    the T positions are decode steps (CUDA-graph replays), so the Double Sparsity kernels run
 *    at every position, and the recall (softmax mass of the selected tokens) is measured.
 *  - `evaluateCpu`: the CPU decoder with CpuDoubleSparsityAttention, one window at a time;
 *    slow, for tests and for machines without a GPU (use small windows).
 *
 * Also the presets that reproduce the accuracy table of docs/method.md.
 */
import {
  type AttentionSpec,
  type BudgetInput,
  defineAttention,
  type KvDtype,
  type LabelBits,
  type Selection,
} from "../dsl/spec.ts";
import type { Cuda } from "../cuda/driver.ts";
import { UsageError } from "../util/errors.ts";
import type { ChannelStatistics } from "./calibration.ts";
import type { ChannelConfig } from "./channel_config.ts";
import { type ChannelSource, labelChannelsFor } from "./channels.ts";
import type { ModelConfig } from "../checkpoint/config.ts";
import { CpuDoubleSparsityAttention } from "../decoding/cpu_ds_attention.ts";
import { CpuDecoder, DenseAttention } from "../decoding/cpu_decoder.ts";
import { GpuDecoder } from "../decoding/gpu_decoder.ts";
import type { LoadedModel } from "../checkpoint/weights.ts";
import { crossEntropy, windowInput } from "./windows.ts";

export interface EvalVariant {
  readonly name: string;
  /** undefined: dense attention. */
  readonly spec?: AttentionSpec;
  /** Label channels; required with a spec. */
  readonly channels?: ChannelSource;
}

export interface EvalRow {
  readonly name: string;
  /** spec.variant, or "dense". */
  readonly variant: string;
  /** Layers computed densely (every layer for the dense row). */
  readonly denseLayers: number[];
  readonly bitsPerByte: number;
  /** bitsPerByte / dense - 1, when the run has a dense row; else null. */
  relativeToDense: number | null;
  /** Per layer, the mean over steps and heads of the selected tokens' softmax mass (1: dense). */
  readonly recallPerLayer: number[];
  /** Seconds of the teacher-forced loop (after the decoder is set up). */
  readonly seconds: number;
  /** Seconds to build the decoder (kernel compilation, weight upload). */
  readonly setupSeconds: number;
  readonly device: "gpu" | "cpu";
}

export interface EvalProgress {
  readonly variant: string;
  readonly done: number;
  readonly total: number;
  readonly unit: "positions" | "windows";
}

export interface EvalOptions {
  readonly onProgress?: (p: EvalProgress) => void;
}

function windowLength(windows: ArrayLike<number>[]): number {
  if (windows.length === 0) throw new Error("evaluate: no windows");
  const T = windows[0].length - 1;
  if (T < 1) throw new Error(`evaluate: windows of ${windows[0].length} bytes have no target`);
  for (const w of windows) {
    if (w.length !== T + 1) {
      throw new Error(`evaluate: windows differ in length (${w.length} vs ${T + 1})`);
    }
  }
  return T;
}

function checkVariant(v: EvalVariant): void {
  if (v.spec && !v.channels) {
    throw new Error(`evaluate: variant "${v.name}" has a spec but no channel source`);
  }
}

const allLayers = (n: number) => Array.from({ length: n }, (_, i) => i);

/** Fills relativeToDense from the first dense row, if any. */
export function fillRelativeToDense(rows: EvalRow[]): EvalRow[] {
  const dense = rows.find((r) => r.variant === "dense");
  for (const r of rows) r.relativeToDense = dense ? r.bitsPerByte / dense.bitsPerByte - 1 : null;
  return rows;
}

/**
 * Teacher-forced bits per byte of each variant on the GPU. Windows are protocol windows of T+1
 * bytes; all of them form one batch; position t feeds byte t of every window and scores byte t+1.
 */
export async function evaluateGpu(
  cuda: Cuda,
  model: LoadedModel,
  windows: ArrayLike<number>[],
  variants: readonly EvalVariant[],
  opts: EvalOptions = {},
): Promise<EvalRow[]> {
  const T = windowLength(windows);
  const N = windows.length;
  const c = model.config;
  const vocab = c.vocabSize;
  const rows: EvalRow[] = [];
  for (const v of variants) {
    checkVariant(v);
    const setupStart = performance.now();
    const sparse = v.spec !== undefined && v.spec.denseLayers.length < c.numLayers;
    using decoder = await GpuDecoder.create(cuda, model, {
      batch: N,
      maxContext: T + 1,
      spec: v.spec,
      channels: v.channels,
      measureRecall: sparse,
      maxPrefillRows: N,
    });
    const setupSeconds = (performance.now() - setupStart) / 1000;
    const started = performance.now();
    const recallSum = new Float64Array(c.numLayers);
    const recallCount = new Float64Array(c.numLayers);
    const tokens = new Int32Array(N);
    let nats = 0;
    for (let t = 0; t < T; t++) {
      for (let b = 0; b < N; b++) tokens[b] = windows[b][t];
      const logits = decoder.step(tokens);
      for (let b = 0; b < N; b++) nats += crossEntropy(logits, b * vocab, vocab, windows[b][t + 1]);
      if (sparse) {
        decoder.lastRecall().forEach((r, l) => {
          recallSum[l] += r.mean * r.count;
          recallCount[l] += r.count;
        });
      }
      if ((t + 1) % 256 === 0 || t + 1 === T) {
        opts.onProgress?.({ variant: v.name, done: t + 1, total: T, unit: "positions" });
      }
    }
    rows.push({
      name: v.name,
      variant: v.spec?.variant ?? "dense",
      denseLayers: v.spec ? [...v.spec.denseLayers] : allLayers(c.numLayers),
      bitsPerByte: nats / (N * T * Math.LN2),
      relativeToDense: null,
      recallPerLayer: Array.from(
        recallSum,
        (s, l) => (recallCount[l] > 0 ? s / recallCount[l] : 1),
      ),
      seconds: (performance.now() - started) / 1000,
      setupSeconds,
      device: "gpu",
    });
  }
  return fillRelativeToDense(rows);
}

/**
 * The same on the CPU: CpuDecoder with DenseAttention or CpuDoubleSparsityAttention (recall
 * measured), one window at a time from an empty cache.
 */
export function evaluateCpu(
  model: LoadedModel,
  windows: ArrayLike<number>[],
  variants: readonly EvalVariant[],
  opts: EvalOptions = {},
): EvalRow[] {
  const T = windowLength(windows);
  const c = model.config;
  const vocab = c.vocabSize;
  const rows: EvalRow[] = [];
  for (const v of variants) {
    checkVariant(v);
    const setupStart = performance.now();
    const ds = v.spec
      ? new CpuDoubleSparsityAttention(
        v.spec,
        allLayers(c.numLayers).map((l) => labelChannelsFor(v.spec!, v.channels!, l)),
        T + 1,
        { measureRecall: true },
      )
      : undefined;
    const decoder = new CpuDecoder(model, { attention: ds ?? new DenseAttention() });
    const setupSeconds = (performance.now() - setupStart) / 1000;
    const started = performance.now();
    let nats = 0;
    windows.forEach((w, i) => {
      decoder.reset();
      ds?.reset();
      const logits = decoder.forward(windowInput(w));
      for (let t = 0; t < T; t++) nats += crossEntropy(logits, t * vocab, vocab, w[t + 1]);
      opts.onProgress?.({ variant: v.name, done: i + 1, total: windows.length, unit: "windows" });
    });
    rows.push({
      name: v.name,
      variant: v.spec?.variant ?? "dense",
      denseLayers: v.spec ? [...v.spec.denseLayers] : allLayers(c.numLayers),
      bitsPerByte: nats / (windows.length * T * Math.LN2),
      relativeToDense: null,
      recallPerLayer: ds ? ds.recallPerLayer() : Array(c.numLayers).fill(1),
      seconds: (performance.now() - started) / 1000,
      setupSeconds,
      device: "cpu",
    });
  }
  return fillRelativeToDense(rows);
}

// ---- the presets of the accuracy table -------------------------------------------------------

/** Budget of the protocol: k = min(t+1, max(16, ceil((t+1)/16))). */
export const PROTOCOL_BUDGET = { ratio: 1 / 16, min: 16 } as const;

export interface EvalPreset {
  /** Name used by --variants / --variant. */
  readonly name: string;
  /** The "selection" column of the table in docs/method.md. */
  readonly label: string;
  /** undefined: dense attention. */
  readonly selection?: Selection;
  /** Label channels r; "headDim" = every channel (exact scores: the oracle). */
  readonly channels?: number | "headDim";
  readonly bits?: LabelBits;
  readonly denseLayers: readonly number[];
  /** Random channels (the paper's ablation) instead of calibrated ones. */
  readonly randomChannels?: boolean;
  /** Tokens selected per head (default PROTOCOL_BUDGET: 1/16 of the prefix, at least 16). */
  readonly budget?: BudgetInput;
  /** bits/byte in the table of docs/method.md (tiny-code-llama, 48 windows of 2048 bytes). */
  readonly expected: number;
}

export const EVAL_PRESETS: readonly EvalPreset[] = [
  { name: "dense", label: "dense", denseLayers: [], expected: 0.8978 },
  {
    name: "head r16 b16",
    label: "per head",
    selection: "head",
    channels: 16,
    bits: 16,
    denseLayers: [],
    expected: 1.1887,
  },
  {
    name: "head r16 b16 dense 0,1",
    label: "per head",
    selection: "head",
    channels: 16,
    bits: 16,
    denseLayers: [0, 1],
    expected: 0.9910,
  },
  {
    name: "head r32 b4",
    label: "per head",
    selection: "head",
    channels: 32,
    bits: 4,
    denseLayers: [],
    expected: 0.9802,
  },
  {
    name: "head r32 b4 dense 0,1",
    label: "per head",
    selection: "head",
    channels: 32,
    bits: 4,
    denseLayers: [0, 1],
    expected: 0.9171,
  },
  {
    name: "head r64 b2 dense 0,1",
    label: "per head",
    selection: "head",
    channels: 64,
    bits: 2,
    denseLayers: [0, 1],
    expected: 0.9250,
  },
  {
    name: "group r16 b16 dense 0,1",
    label: "group",
    selection: "group",
    channels: 16,
    bits: 16,
    denseLayers: [0, 1],
    expected: 1.0853,
  },
  {
    name: "head r16 b16 random dense 0,1",
    label: "per head, random channels",
    selection: "head",
    channels: 16,
    bits: 16,
    denseLayers: [0, 1],
    randomChannels: true,
    expected: 1.4769,
  },
  {
    name: "oracle",
    label: "exact top-k (oracle)",
    selection: "head",
    channels: "headDim",
    bits: 16,
    denseLayers: [],
    expected: 0.9356,
  },
];

const normalizeName = (s: string) =>
  s.trim().toLowerCase().replace(/\s+/g, " ").replace(/ ?, ?/g, ",");

/** The preset of that name among `presets` (case and spacing are ignored). */
export function findPreset<P extends { readonly name: string } = EvalPreset>(
  name: string,
  presets: readonly P[] = EVAL_PRESETS as unknown as readonly P[],
): P {
  const want = normalizeName(name);
  const hit = presets.find((p) => normalizeName(p.name) === want);
  if (!hit) {
    throw new UsageError(
      `unknown variant ${JSON.stringify(name)}; known: ${
        presets.map((p) => JSON.stringify(p.name)).join(", ")
      }`,
    );
  }
  return hit;
}

/**
 * A comma (or semicolon) separated list of preset names among `presets`. Preset names contain
 * commas themselves ("... dense 0,1"): a piece that is only digits continues the previous name.
 */
export function parsePresetList<P extends { readonly name: string } = EvalPreset>(
  list: string | undefined,
  presets: readonly P[] = EVAL_PRESETS as unknown as readonly P[],
): P[] {
  if (list === undefined || list.trim() === "" || list.trim().toLowerCase() === "all") {
    return [...presets];
  }
  const names: string[] = [];
  for (const piece of list.split(/[;,]/)) {
    if (/^\s*\d+\s*$/.test(piece) && names.length > 0) names[names.length - 1] += `,${piece}`;
    else if (piece.trim() !== "") names.push(piece);
  }
  return names.map((n) => findPreset(n, presets));
}

/** What a preset's attention is, without its expected bits/byte (shared with retrieval). */
export type PresetShape = Omit<EvalPreset, "expected">;

/** The attention spec of a preset for a model shape (undefined for dense). */
export function presetSpec(
  preset: PresetShape,
  config: ModelConfig,
  kvDtype: KvDtype = "fp16",
): AttentionSpec | undefined {
  if (!preset.selection) return undefined;
  return defineAttention({
    headDim: config.headDim,
    numQHeads: config.numHeads,
    numKvHeads: config.numKvHeads,
    kvDtype,
    pageSize: 16,
    labels: {
      channels: preset.channels === "headDim" ? config.headDim : preset.channels!,
      bits: preset.bits!,
    },
    selection: preset.selection,
    budget: preset.budget ?? PROTOCOL_BUDGET,
    denseThreshold: 0,
    denseLayers: [...preset.denseLayers],
  });
}

export interface PresetChannels {
  readonly config?: ChannelConfig;
  /** Calibration statistics: exact group rankings (qk summed over each group). */
  readonly stats?: ChannelStatistics;
  /** Seed of the random-channel ablation (default 1). */
  readonly randomSeed?: number;
}

/**
 * The EvalVariant of a preset, and a note when its channels are an approximation (a group
 * ranking without statistics comes from a Borda count of the per-head rankings).
 */
export function presetVariant(
  preset: PresetShape,
  model: ModelConfig,
  channels: PresetChannels,
): EvalVariant & { note?: string } {
  const spec = presetSpec(preset, model);
  if (!spec) return { name: preset.name };
  if (preset.randomChannels) {
    return { name: preset.name, spec, channels: { randomSeed: channels.randomSeed ?? 1 } };
  }
  if (spec.labelHeads === "kv") {
    if (channels.stats) return { name: preset.name, spec, channels: { stats: channels.stats } };
    const perHead = channels.config?.kinds.qk ?? channels.config?.kinds.q;
    if (!perHead) throw new Error(`variant "${preset.name}" needs qk rankings or statistics`);
    return {
      name: preset.name,
      spec,
      channels: { config: { kinds: { qk: perHead } } },
      note: "no statistics file: group channels from a Borda count of the per-head qk rankings " +
        "(the protocol sums the qk statistic over the group; pass --stats)",
    };
  }
  if (channels.config) return { name: preset.name, spec, channels: { config: channels.config } };
  if (channels.stats) return { name: preset.name, spec, channels: { stats: channels.stats } };
  throw new Error(`variant "${preset.name}" needs a channel config or statistics`);
}
