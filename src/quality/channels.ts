/**
 * Which K channels each label head stores, from a channel config (the authors' / SGLang format)
 * or calibration statistics:
 *  - labels per query head: the head's own "qk" ranking (falls back to "q");
 *  - labels per kv head: the group ranking (the qk statistic summed over the group's query heads)
 *    when statistics are at hand; else the config's "k" ranking; else, from per-head rankings
 *    only, a Borda count over the group's heads (the statistic itself is not in the file).
 */
import type { AttentionSpec } from "../dsl/spec.ts";
import type { ChannelConfig, ChannelRankings } from "./channel_config.ts";
import type { ChannelStatistics } from "./calibration.ts";

export interface ChannelSource {
  readonly config?: ChannelConfig;
  readonly stats?: ChannelStatistics;
  /** Ignore rankings and draw channels at random with this seed (the paper's ablation). */
  readonly randomSeed?: number;
}

/** [numLabelHeads * labelChannels] label channels of `layer` for `spec`. */
export function labelChannelsFor(
  spec: AttentionSpec,
  source: ChannelSource,
  layer: number,
): Int32Array {
  const r = spec.labelChannels;
  const out = new Int32Array(spec.numLabelHeads * r);
  if (source.randomSeed !== undefined) {
    let s = (source.randomSeed * 7919 + layer * 104729 + 1) >>> 0;
    const next = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
    for (let h = 0; h < spec.numLabelHeads; h++) {
      const perm = Array.from({ length: spec.headDim }, (_, i) => i);
      for (let i = 0; i < r; i++) {
        const j = i + Math.floor(next() * (spec.headDim - i));
        [perm[i], perm[j]] = [perm[j], perm[i]];
      }
      out.set(perm.slice(0, r), h * r);
    }
    return out;
  }
  const rows = rankingsFor(spec, source, layer);
  rows.forEach((ranking, h) => out.set(ranking.slice(0, r), h * r));
  return out;
}

function rankingsFor(spec: AttentionSpec, source: ChannelSource, layer: number): number[][] {
  if (spec.labelHeads === "query") {
    const kinds = source.config?.kinds;
    const rankings: ChannelRankings | undefined = source.stats?.rankings("qk") ?? kinds?.qk ??
      kinds?.q;
    if (!rankings) {
      throw new Error(
        "label channels: need a channel config with qk (or q) rankings, or statistics",
      );
    }
    return rankings[layer];
  }
  if (source.stats) return source.stats.groupRankings()[layer];
  const kinds = source.config?.kinds;
  if (kinds?.k) return kinds.k[layer];
  const perHead = kinds?.qk ?? kinds?.q;
  if (!perHead) {
    throw new Error(
      "label channels: need a channel config with qk, q or k rankings, or statistics",
    );
  }
  return Array.from(
    { length: spec.numKvHeads },
    (_, g) => bordaRanking(perHead[layer].slice(g * spec.groupSize, (g + 1) * spec.groupSize)),
  );
}

/** Channels ranked by their summed rank positions over several rankings (ties: lower channel). */
export function bordaRanking(rankings: number[][]): number[] {
  const d = rankings[0].length;
  const score = new Float64Array(d);
  for (const ranking of rankings) ranking.forEach((c, pos) => (score[c] += pos));
  return Array.from({ length: d }, (_, c) => c).sort((a, b) => score[a] - score[b] || a - b);
}
