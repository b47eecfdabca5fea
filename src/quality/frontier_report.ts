/**
 * The frontier's record (what `deno task tune` writes as JSON), its Markdown table and its SVG
 * plot. Pure: the record is built from measured rows by `buildFrontier`, so rendering is tested
 * on hand-made rows.
 */
import { scatterChart } from "../util/svg.ts";
import {
  accuracyCost,
  type AccuracyLoss,
  type AttentionShape,
  LOSS_BOUNDS,
  paretoFront,
  recommend,
  type SkippedVariant,
} from "./frontier.ts";

/** One measured variant. */
export interface FrontierRow extends AccuracyLoss {
  readonly name: string;
  /** spec.variant on the timing shape. */
  readonly variant: string;
  readonly bitsPerByte: number;
  /** Retrieval accuracy in [0, 1] under the ranking protocol (teacher-forced). */
  readonly retrievalAccuracy: number;
  /** Retrieval accuracy as deployed (dense prefill, sparse decode), for reference. */
  readonly deployedAccuracy: number;
  /** Mean recall of attention mass over the sparse layers (eval). */
  readonly meanRecall: number;
  /** One sparse layer's step on the timing shape. */
  readonly stepMs: number;
  readonly floorMs: number;
  readonly bytes: number;
  /** The front's speedup: a whole model's attention vs the dense kernel (modelSpeedup). */
  readonly speedup: number;
  /** The same against PyTorch SDPA in every layer; null without SDPA. */
  readonly speedupVsSdpa: number | null;
  /** One sparse layer's step: dense kernel / Double Sparsity. */
  readonly stepSpeedup: number;
  /** One sparse layer's step: SDPA / Double Sparsity; null without SDPA. */
  readonly stepSpeedupVsSdpa: number | null;
}

/** The dense reference row. */
export interface DenseReference {
  readonly bitsPerByte: number;
  readonly retrievalAccuracy: number;
  readonly deployedAccuracy: number;
  readonly stepMs: number;
  readonly floorMs: number;
  readonly sdpaStepMs: number | null;
}

export interface FrontierSettings {
  readonly date: string;
  readonly device: string;
  readonly model: string;
  readonly modelShape: AttentionShape;
  readonly timingShape: AttentionShape;
  readonly batch: number;
  readonly context: number;
  readonly grid: string;
  readonly evalData: string;
  readonly windows: number;
  readonly windowSize: number;
  readonly retrievalData: string;
  readonly retrievalDocuments: number;
  readonly channels: string;
  readonly bandwidth: number;
  readonly sdpaNote: string;
  readonly repeats: number;
}

export interface Recommendation {
  readonly boundPct: number;
  /** The variant's name, or null when none is within the bound. */
  readonly name: string | null;
}

export interface FrontierRecord extends FrontierSettings {
  readonly dense: DenseReference;
  readonly rows: readonly FrontierRow[];
  readonly skipped: readonly SkippedVariant[];
  /** Names on the front of (accuracy cost, speedup), by ascending cost. */
  readonly front: readonly string[];
  /** Names on the front of (bits/byte loss, speedup). */
  readonly frontBitsPerByte: readonly string[];
  /** Names on the front of (retrieval drop, speedup). */
  readonly frontRetrieval: readonly string[];
  readonly recommendations: readonly Recommendation[];
  readonly seconds: number;
}

const names = (rows: readonly { name: string }[]) => rows.map((r) => r.name);

/** The record: the three fronts and the recommendations computed from the rows. */
export function buildFrontier(
  settings: FrontierSettings,
  dense: DenseReference,
  rows: readonly FrontierRow[],
  skipped: readonly SkippedVariant[],
  seconds: number,
): FrontierRecord {
  const by = (cost: (r: FrontierRow) => number) =>
    names(paretoFront(rows.map((r) => ({ ...r, cost: cost(r) }))));
  return {
    ...settings,
    dense,
    rows,
    skipped,
    front: by(accuracyCost),
    frontBitsPerByte: by((r) => r.bitsPerByteLossPct),
    frontRetrieval: by((r) => r.retrievalDropPts),
    recommendations: LOSS_BOUNDS.map((boundPct) => ({
      boundPct,
      name: recommend(rows, boundPct)?.name ?? null,
    })),
    seconds,
  };
}

const signed = (x: number, digits: number) => `${x >= 0 ? "+" : ""}${x.toFixed(digits)}`;
const times = (x: number | null) => (x === null ? "-" : `${x.toFixed(2)}x`);
const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

function shapeText(s: AttentionShape): string {
  return `${s.name} (${s.numQHeads} query / ${s.numKvHeads} kv heads, d ${s.headDim}, ` +
    `${s.numLayers} layers)`;
}

/** The Markdown report: settings, recommendations, >= 10x variants, the table, skipped ones. */
export function frontierMarkdown(r: FrontierRecord, svgFile?: string): string {
  const onFront = new Set(r.front);
  const d = r.dense;
  const lines = [
    `# Speed/accuracy frontier: ${r.model} on ${r.device} (${r.date})`,
    "",
    `- accuracy on ${shapeText(r.modelShape)}: bits/byte on ${r.windows} window(s) of ` +
    `${r.windowSize} bytes of ${r.evalData}; line retrieval on ${r.retrievalDocuments} ` +
    `document(s) of ${r.retrievalData}, teacher-forced (every position attends to the top-k ` +
    `of its own prefix; "deployed" = dense prefill and sparse decode, for reference); channels ` +
    `${r.channels}`,
    `- speed on ${shapeText(r.timingShape)}, batch ${r.batch}, context ${r.context}, fp16 K/V: ` +
    `one decode-attention step of one layer, CUDA-graph medians of ${r.repeats} replays over ` +
    `cache copies beyond L2, as \`deno task bench\`; copy bandwidth ` +
    `${(r.bandwidth / 1e12).toFixed(2)} TB/s; ${r.sdpaNote}`,
    `- accuracy cost = max(bits/byte loss vs dense in %, retrieval drop vs dense in points): a ` +
    `variant is within "<= B%" only when both are <= B`,
    `- speedup = a whole ${r.timingShape.numLayers}-layer model's attention, the dense kernel ` +
    `in every layer over Double Sparsity in the sparse layers (its dense layers keep the dense ` +
    `kernel); "step" columns are one sparse layer alone`,
    `- dense: ${d.bitsPerByte.toFixed(4)} bits/byte, retrieval ${pct(d.retrievalAccuracy)} ` +
    `(deployed ${pct(d.deployedAccuracy)}), step ${d.stepMs.toFixed(4)} ms (${
      pct(d.floorMs / d.stepMs)
    } of its byte floor)` +
    (d.sdpaStepMs === null ? "" : `, SDPA ${d.sdpaStepMs.toFixed(4)} ms`),
    "",
    "## Recommended",
    "",
    "| loss bound | variant | speedup vs dense | vs SDPA | bits/byte loss | retrieval drop |",
    "|---|---|---|---|---|---|",
  ];
  for (const rec of r.recommendations) {
    const row = r.rows.find((x) => x.name === rec.name);
    lines.push(
      row
        ? `| <= ${rec.boundPct}% | ${row.name} | ${times(row.speedup)} | ${
          times(row.speedupVsSdpa)
        } | ${signed(row.bitsPerByteLossPct, 2)}% | ${signed(row.retrievalDropPts, 1)} pts |`
        : `| <= ${rec.boundPct}% | none within the bound | - | - | - | - |`,
    );
  }
  const fast = r.rows.filter((x) => (x.stepSpeedupVsSdpa ?? 0) >= 10);
  lines.push(
    "",
    "## At least 10x over PyTorch SDPA (one sparse layer's step)",
    "",
    fast.length === 0
      ? (r.rows.some((x) => x.stepSpeedupVsSdpa !== null)
        ? "none in this grid"
        : "SDPA not measured")
      : fast.map((x) =>
        `- ${x.name}: ${times(x.stepSpeedupVsSdpa)} over SDPA; accuracy cost on ${r.model}: ` +
        `bits/byte ${signed(x.bitsPerByteLossPct, 2)}%, retrieval ${
          signed(-x.retrievalDropPts, 1)
        } pts`
      ).join("\n"),
    "",
    `## Every variant (front: ${r.front.length} of ${r.rows.length})`,
    "",
  );
  if (svgFile) lines.push(`![frontier](${svgFile})`, "");
  lines.push(
    "| front | variant | bits/byte | loss | retrieval | drop | deployed | recall | step ms | " +
      "% floor | step vs dense | step vs SDPA | speedup | vs SDPA |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  );
  const sorted = [...r.rows].sort((a, b) => accuracyCost(a) - accuracyCost(b));
  for (const x of sorted) {
    lines.push(
      `| ${onFront.has(x.name) ? "**yes**" : ""} | ${x.name} | ${x.bitsPerByte.toFixed(4)} | ` +
        `${signed(x.bitsPerByteLossPct, 2)}% | ${pct(x.retrievalAccuracy)} | ` +
        `${signed(x.retrievalDropPts, 1)} | ${pct(x.deployedAccuracy)} | ` +
        `${x.meanRecall.toFixed(3)} | ${x.stepMs.toFixed(4)} | ${pct(x.floorMs / x.stepMs)} | ` +
        `${times(x.stepSpeedup)} | ${times(x.stepSpeedupVsSdpa)} | ${times(x.speedup)} | ` +
        `${times(x.speedupVsSdpa)} |`,
    );
  }
  lines.push(
    "",
    `Front on bits/byte alone: ${r.frontBitsPerByte.join("; ") || "-"}.`,
    `Front on retrieval alone: ${r.frontRetrieval.join("; ") || "-"}.`,
  );
  if (r.skipped.length) {
    lines.push("", "## Skipped (invalid)", "");
    for (const s of r.skipped) lines.push(`- ${s.name}: ${s.reason}`);
  }
  lines.push("", `Measured in ${r.seconds.toFixed(0)} s.`);
  return lines.join("\n") + "\n";
}

/** The plot: accuracy cost (x) against speedup (y), the front in red and labelled. */
export function frontierSvg(r: FrontierRecord): string {
  const onFront = new Set(r.front);
  return scatterChart(
    `${r.model}: accuracy cost vs attention speedup, ${r.timingShape.name} B=${r.batch} ` +
      `L=${r.context}, ${r.device}, ${r.date}`,
    r.rows.map((x) => ({
      x: accuracyCost(x),
      y: x.speedup,
      label: x.name,
      highlight: onFront.has(x.name),
    })),
    {
      xLabel: "accuracy cost: max(bits/byte loss %, retrieval drop pts)",
      yLabel: "speedup vs dense kernel (model)",
      xMarks: LOSS_BOUNDS.map((b) => ({ x: b, label: `${b}%` })),
    },
  );
}
