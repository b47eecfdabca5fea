// Offline channel calibration (Double Sparsity step 1): per layer, head and channel, the
// mean over a window's positions of |q|, |k| or |q*k| (post-RoPE, k shared by the query
// heads of its GQA group), summed over windows, then ranked by descending value.

import {
  CHANNEL_KINDS,
  type ChannelConfig,
  type ChannelKind,
  type ChannelRankings,
} from "./channel_config.ts";
import { type CpuAttention, CpuDecoder } from "../decoding/cpu_decoder.ts";
import type { LoadedModel } from "../checkpoint/weights.ts";

/** Channel indices by descending value; ties keep the lower channel first. */
export function rankChannels(values: ArrayLike<number>): number[] {
  const order = Array.from({ length: values.length }, (_, c) => c);
  return order.sort((a, b) => values[b] - values[a] || a - b);
}

/**
 * Group ranking for GQA: the statistic of query heads [g*G, (g+1)*G) summed per channel,
 * then ranked, for each kv head g. `statistic` is [numHeads][headDim].
 */
export function groupRanking(statistic: ArrayLike<number>[], numKvHeads: number): number[][] {
  const numHeads = statistic.length;
  if (numKvHeads <= 0 || numHeads % numKvHeads !== 0) {
    throw new Error(
      `groupRanking: ${numHeads} query heads cannot be split into ${numKvHeads} kv-head groups`,
    );
  }
  const group = numHeads / numKvHeads;
  const headDim = statistic[0]?.length ?? 0;
  const rows: number[][] = [];
  for (let g = 0; g < numKvHeads; g++) {
    const sum = new Float64Array(headDim);
    for (let h = g * group; h < (g + 1) * group; h++) {
      for (let c = 0; c < headDim; c++) sum[c] += statistic[h][c];
    }
    rows.push(rankChannels(sum));
  }
  return rows;
}

/** Accumulates the q, k and qk statistics of every layer over calibration windows. */
export class ChannelStatistics {
  /** Completed windows. */
  windows = 0;
  private readonly totals: Record<ChannelKind, Float64Array>;
  private readonly current: Record<ChannelKind, Float64Array>;
  private readonly positions: Float64Array;
  private inWindow = false;
  private readonly group: number;

  constructor(
    readonly numLayers: number,
    readonly numHeads: number,
    readonly numKvHeads: number,
    readonly headDim: number,
  ) {
    if (numHeads % numKvHeads !== 0) {
      throw new Error(
        `ChannelStatistics: numHeads ${numHeads} is not divisible by numKvHeads ${numKvHeads}`,
      );
    }
    this.group = numHeads / numKvHeads;
    const size = (kind: ChannelKind) => numLayers * this.rows(kind) * headDim;
    this.totals = {
      q: new Float64Array(size("q")),
      k: new Float64Array(size("k")),
      qk: new Float64Array(size("qk")),
    };
    this.current = {
      q: new Float64Array(size("q")),
      k: new Float64Array(size("k")),
      qk: new Float64Array(size("qk")),
    };
    this.positions = new Float64Array(numLayers);
  }

  private rows(kind: ChannelKind): number {
    return kind === "k" ? this.numKvHeads : this.numHeads;
  }

  beginWindow(): void {
    if (this.inWindow) throw new Error("ChannelStatistics.beginWindow: a window is already open");
    for (const kind of CHANNEL_KINDS) this.current[kind].fill(0);
    this.positions.fill(0);
    this.inWindow = true;
  }

  /** Adds one position of `layer`: q [numHeads*headDim], k [numKvHeads*headDim], post-RoPE. */
  add(layer: number, q: ArrayLike<number>, k: ArrayLike<number>): void {
    if (!this.inWindow) throw new Error("ChannelStatistics.add: call beginWindow() first");
    const d = this.headDim;
    if (!Number.isInteger(layer) || layer < 0 || layer >= this.numLayers) {
      throw new Error(`ChannelStatistics.add: layer ${layer} outside 0..${this.numLayers - 1}`);
    }
    if (q.length !== this.numHeads * d || k.length !== this.numKvHeads * d) {
      throw new Error(
        `ChannelStatistics.add: q has ${q.length} values and k ${k.length}; expected ` +
          `${this.numHeads * d} and ${this.numKvHeads * d}`,
      );
    }
    const sq = this.current.q, sk = this.current.k, sqk = this.current.qk;
    const qBase = layer * this.numHeads * d;
    const kBase = layer * this.numKvHeads * d;
    for (let i = 0; i < this.numKvHeads * d; i++) sk[kBase + i] += Math.abs(k[i]);
    for (let h = 0; h < this.numHeads; h++) {
      const kOff = Math.floor(h / this.group) * d;
      for (let c = 0; c < d; c++) {
        const qv = q[h * d + c];
        sq[qBase + h * d + c] += Math.abs(qv);
        sqk[qBase + h * d + c] += Math.abs(qv * k[kOff + c]);
      }
    }
    this.positions[layer]++;
  }

  /** Adds this window's per-position means to the totals. */
  endWindow(): void {
    if (!this.inWindow) throw new Error("ChannelStatistics.endWindow: no window is open");
    for (let l = 0; l < this.numLayers; l++) {
      if (this.positions[l] === 0) {
        throw new Error(`ChannelStatistics.endWindow: layer ${l} received no positions`);
      }
    }
    for (const kind of CHANNEL_KINDS) {
      const perLayer = this.rows(kind) * this.headDim;
      const total = this.totals[kind], cur = this.current[kind];
      for (let i = 0; i < total.length; i++) {
        total[i] += cur[i] / this.positions[Math.floor(i / perLayer)];
      }
    }
    this.inWindow = false;
    this.windows++;
  }

  /**
   * Adds `windows` complete windows of `positionsPerWindow` positions each, given their summed
   * statistics ([layer][row][channel] per kind, summed over every position of every window):
   * the sum of the window means is then sum / positionsPerWindow. The GPU path runs all windows
   * as one batch and accumulates on the device, so only these sums come back.
   */
  addSummedWindows(
    sums: Record<ChannelKind, Float64Array>,
    positionsPerWindow: number,
    windows: number,
  ): void {
    if (this.inWindow) throw new Error("ChannelStatistics.addSummedWindows: a window is open");
    for (const kind of CHANNEL_KINDS) {
      const total = this.totals[kind];
      if (sums[kind].length !== total.length) {
        throw new Error(
          `ChannelStatistics.addSummedWindows: ${kind} has ${sums[kind].length} values, ` +
            `expected ${total.length}`,
        );
      }
      for (let i = 0; i < total.length; i++) total[i] += sums[kind][i] / positionsPerWindow;
    }
    this.windows += windows;
  }

  /** Adds another calibration's windows (same shape): statistics of the union of windows. */
  absorb(other: ChannelStatistics): void {
    if (
      other.numLayers !== this.numLayers || other.numHeads !== this.numHeads ||
      other.numKvHeads !== this.numKvHeads || other.headDim !== this.headDim
    ) {
      throw new Error("ChannelStatistics.absorb: the statistics differ in shape");
    }
    this.addSummedWindows(other.totals, 1, other.windows);
  }

  /** Summed window means of one layer and head (query head for q/qk, kv head for k). */
  values(kind: ChannelKind, layer: number, head: number): Float64Array {
    const row = (layer * this.rows(kind) + head) * this.headDim;
    return this.totals[kind].subarray(row, row + this.headDim);
  }

  /** [layer][head][rank] rankings of one statistic. */
  rankings(kind: ChannelKind): ChannelRankings {
    this.requireData();
    return Array.from(
      { length: this.numLayers },
      (_, l) =>
        Array.from({ length: this.rows(kind) }, (_, h) => rankChannels(this.values(kind, l, h))),
    );
  }

  /** [layer][kv head][rank]: the qk statistic summed over each kv head's query heads. */
  groupRankings(): ChannelRankings {
    this.requireData();
    return Array.from({ length: this.numLayers }, (_, l) =>
      groupRanking(
        Array.from({ length: this.numHeads }, (_, h) => this.values("qk", l, h)),
        this.numKvHeads,
      ));
  }

  /** A channel config holding the rankings of `kinds`. */
  toChannelConfig(kinds: readonly ChannelKind[] = CHANNEL_KINDS): ChannelConfig {
    const config: ChannelConfig = { kinds: {} };
    for (const kind of kinds) config.kinds[kind] = this.rankings(kind);
    return config;
  }

  private requireData(): void {
    if (this.windows === 0) throw new Error("ChannelStatistics: no completed window to rank");
  }
}

export interface CalibrateOptions {
  /** Attention used while calibrating; dense by default (as in the protocol). */
  attention?: CpuAttention;
  /** Called after each window, e.g. for progress. */
  onWindow?: (index: number, count: number) => void;
}

/**
 * Runs the CPU decoder over each window from position 0 and accumulates the statistics.
 * Every token of a window is fed: pass the first T tokens of a protocol window.
 */
export function calibrateCpu(
  model: LoadedModel,
  windows: ArrayLike<number>[],
  options: CalibrateOptions = {},
): ChannelStatistics {
  const c = model.config;
  const stats = new ChannelStatistics(c.numLayers, c.numHeads, c.numKvHeads, c.headDim);
  const decoder = new CpuDecoder(model, {
    attention: options.attention,
    onQK: (layer, _position, q, k) => stats.add(layer, q, k),
  });
  windows.forEach((window, i) => {
    decoder.reset();
    stats.beginWindow();
    decoder.forward(Array.from(window));
    stats.endWindow();
    options.onWindow?.(i, windows.length);
  });
  return stats;
}
