/**
 * The speed/accuracy frontier of Double Sparsity variants (`deno task tune`), the pure part:
 *  - the grid: label channels x label bits x budget x selection x dense layers ("full": the
 *    whole product; "quick": a hand-picked 18 that cover the extremes), each variant validated
 *    through defineAttention on the model's shape (where accuracy is measured) and on the timing
 *    shape (where speed is measured); invalid ones are listed with the reason, never dropped;
 *  - the Pareto front (minimise accuracy cost, maximise speedup);
 *  - the recommendation: the fastest variant within a loss bound.
 *
 * How accuracy is combined: a variant's accuracy cost is max(bits/byte loss vs dense in %,
 * retrieval-accuracy drop vs dense in points). So a variant qualifies for "<= 1%" exactly when
 * its bits/byte loss is <= 1% AND its retrieval drop is <= 1 point; the front is drawn on that
 * cost, and the fronts on each metric alone are reported beside it.
 *
 * How speed is counted: the front's speedup is the attention time of a whole model of the timing
 * shape's layer count, dense kernel in every layer over Double Sparsity in the sparse layers and
 * the dense kernel in its dense layers (`modelSpeedup`); the single sparse layer's step speedup
 * (what `deno task bench` reports) is a column beside it.
 */
import {
  type AttentionSpec,
  checkDenseLayers,
  defineAttention,
  type LabelBits,
  type Selection,
  SpecError,
} from "../dsl/spec.ts";
import type { PresetShape } from "./evaluate.ts";

/** Grid sizes of `--grid`. */
export const GRIDS = ["quick", "full"] as const;
export type GridName = typeof GRIDS[number];

/** The shape a variant is built for: heads, head dim and layers. */
export interface AttentionShape {
  readonly name: string;
  readonly headDim: number;
  readonly numQHeads: number;
  readonly numKvHeads: number;
  readonly numLayers: number;
}

/** Named real shapes for `--shape` (fp16 K/V, 32 layers each). */
export const TIMING_SHAPES: readonly AttentionShape[] = [
  { name: "llama2-7b", headDim: 128, numQHeads: 32, numKvHeads: 32, numLayers: 32 },
  { name: "llama3-8b", headDim: 128, numQHeads: 32, numKvHeads: 8, numLayers: 32 },
];

/** One point of the grid. */
export interface GridPoint {
  readonly selection: Selection;
  readonly channels: number;
  readonly bits: LabelBits;
  /** The budget is context / budgetDivisor tokens (at least BUDGET_MIN). */
  readonly budgetDivisor: number;
  readonly denseLayers: readonly number[];
}

/** The smallest budget of every variant (as the accuracy protocol's). */
export const BUDGET_MIN = 16;

const CHANNELS = [8, 16, 32, 64] as const;
const BITS: readonly LabelBits[] = [16, 8, 4, 2];
const DIVISORS = [8, 16, 32, 64] as const;
const SELECTIONS: readonly Selection[] = ["head", "group"];
const DENSE_LAYER_SETS: readonly (readonly number[])[] = [[], [0, 1]];

const p = (
  selection: Selection,
  channels: number,
  bits: LabelBits,
  budgetDivisor: number,
  denseLayers: readonly number[] = [0, 1],
): GridPoint => ({ selection, channels, bits, budgetDivisor, denseLayers });

/**
 * The quick grid: the most accurate corner (r64 b16 at 1/8), the paper's defaults (r16 b16,
 * r8 b16 at 1/16), the quantized presets of the accuracy table (r32 b4, r64 b2), the low-byte
 * corner that can pass 10x over SDPA (4-bit labels of 8-16 channels at 1/32 and 1/64, r8 b2 is
 * invalid and listed as such), group selection, and no dense layers at both ends.
 */
const QUICK: readonly GridPoint[] = [
  p("head", 64, 16, 8),
  p("head", 16, 16, 16),
  p("head", 8, 16, 16),
  p("head", 16, 8, 16),
  p("head", 32, 4, 16),
  p("head", 64, 2, 16),
  p("head", 32, 4, 32),
  p("head", 16, 4, 32),
  p("head", 8, 4, 32),
  p("head", 16, 4, 64),
  p("head", 8, 4, 64),
  p("head", 64, 2, 64),
  p("head", 8, 2, 64),
  p("group", 16, 16, 16),
  p("group", 32, 4, 32),
  p("head", 32, 4, 16, []),
  p("head", 16, 4, 64, []),
  p("head", 8, 16, 64, []),
];

/** The points of a grid, in a fixed order. */
export function gridPoints(grid: GridName): GridPoint[] {
  if (grid === "quick") return [...QUICK];
  const out: GridPoint[] = [];
  for (const denseLayers of DENSE_LAYER_SETS) {
    for (const selection of SELECTIONS) {
      for (const channels of CHANNELS) {
        for (const bits of BITS) {
          for (const budgetDivisor of DIVISORS) {
            out.push({ selection, channels, bits, budgetDivisor, denseLayers });
          }
        }
      }
    }
  }
  return out;
}

/** "head r16 b4 1/32 dense 0,1" (dense layers omitted when none). */
export function pointName(pt: GridPoint): string {
  const dense = pt.denseLayers.length ? ` dense ${pt.denseLayers.join(",")}` : "";
  return `${pt.selection} r${pt.channels} b${pt.bits} 1/${pt.budgetDivisor}${dense}`;
}

/** The eval/retrieval preset of a point (calibrated channels). */
export function pointPreset(pt: GridPoint): PresetShape {
  return {
    name: pointName(pt),
    label: pt.selection === "group" ? "group" : "per head",
    selection: pt.selection,
    channels: pt.channels,
    bits: pt.bits,
    denseLayers: [...pt.denseLayers],
    budget: { ratio: 1 / pt.budgetDivisor, min: BUDGET_MIN },
  };
}

/** The attention spec of a point on a shape (fp16 K/V, 16-token pages); throws SpecError. */
export function pointSpec(pt: GridPoint, shape: AttentionShape): AttentionSpec {
  const spec = defineAttention({
    headDim: shape.headDim,
    numQHeads: shape.numQHeads,
    numKvHeads: shape.numKvHeads,
    kvDtype: "fp16",
    pageSize: 16,
    labels: { channels: pt.channels, bits: pt.bits },
    selection: pt.selection,
    budget: { ratio: 1 / pt.budgetDivisor, min: BUDGET_MIN },
    denseThreshold: 0,
    denseLayers: [...pt.denseLayers],
  });
  checkDenseLayers(spec, shape.numLayers, shape.name);
  return spec;
}

export interface PlannedVariant {
  readonly name: string;
  readonly point: GridPoint;
  /** The spec on the model's shape (accuracy). */
  readonly modelSpec: AttentionSpec;
  /** The spec on the timing shape (speed). */
  readonly timingSpec: AttentionSpec;
}

export interface SkippedVariant {
  readonly name: string;
  /** Every problem, one line each, prefixed with the shape it was found on. */
  readonly reason: string;
}

/** The grid's variants valid on both shapes, and the others with the reason. */
export function planGrid(
  grid: GridName,
  model: AttentionShape,
  timing: AttentionShape,
): { variants: PlannedVariant[]; skipped: SkippedVariant[] } {
  const variants: PlannedVariant[] = [], skipped: SkippedVariant[] = [];
  for (const point of gridPoints(grid)) {
    const name = pointName(point);
    if (point.denseLayers.length >= model.numLayers) {
      skipped.push({
        name,
        reason:
          `${model.name}: every one of its ${model.numLayers} layers is dense (the dense row)`,
      });
      continue;
    }
    const problems: string[] = [];
    const build = (shape: AttentionShape) => {
      try {
        return pointSpec(point, shape);
      } catch (e) {
        if (!(e instanceof SpecError)) throw e;
        problems.push(...e.problems.map((line) => `${shape.name}: ${line}`));
        return undefined;
      }
    };
    const modelSpec = build(model);
    const timingSpec = model === timing ? modelSpec : build(timing);
    if (modelSpec && timingSpec) variants.push({ name, point, modelSpec, timingSpec });
    else skipped.push({ name, reason: [...new Set(problems)].join("; ") });
  }
  return { variants, skipped };
}

// ---- speed over a model's layers ----------------------------------------------------------

/**
 * Attention speedup of a whole model of `numLayers` layers: `baselineMs` in every layer over
 * `sparseMs` in the sparse layers and `denseMs` (this project's dense kernel) in the dense ones.
 */
export function modelSpeedup(
  baselineMs: number,
  sparseMs: number,
  denseMs: number,
  numLayers: number,
  numDenseLayers: number,
): number {
  const variantMs = (numLayers - numDenseLayers) * sparseMs + numDenseLayers * denseMs;
  return (numLayers * baselineMs) / variantMs;
}

// ---- the front ------------------------------------------------------------------------------

/** What the front compares: lower cost is better, higher speedup is better. */
export interface Tradeoff {
  readonly cost: number;
  readonly speedup: number;
}

/** Whether `a` dominates `b`: no worse on both, strictly better on one. */
export function dominates(a: Tradeoff, b: Tradeoff): boolean {
  return a.cost <= b.cost && a.speedup >= b.speedup && (a.cost < b.cost || a.speedup > b.speedup);
}

/**
 * The points no other point dominates, by ascending cost (then descending speedup). Equal points
 * do not dominate each other, so duplicates on the front are all kept; points with a non-finite
 * cost or speedup (not measured) are left out.
 */
export function paretoFront<T extends Tradeoff>(points: readonly T[]): T[] {
  const measured = points.filter((q) => Number.isFinite(q.cost) && Number.isFinite(q.speedup));
  return measured
    .filter((q) => !measured.some((o) => dominates(o, q)))
    .sort((a, b) => a.cost - b.cost || b.speedup - a.speedup);
}

// ---- accuracy cost and the recommendation ---------------------------------------------------

/** The two accuracy metrics of a variant against the dense row. */
export interface AccuracyLoss {
  /** (bits/byte / dense bits/byte - 1) in percent; negative when better than dense. */
  readonly bitsPerByteLossPct: number;
  /** (dense accuracy - variant accuracy) in percentage points. */
  readonly retrievalDropPts: number;
}

/** max(bits/byte loss %, retrieval drop in points): <= B exactly when both are <= B. */
export function accuracyCost(loss: AccuracyLoss): number {
  return Math.max(loss.bitsPerByteLossPct, loss.retrievalDropPts);
}

/** The loss bounds the command recommends a variant for (percent and points). */
export const LOSS_BOUNDS = [1, 3] as const;

/**
 * The fastest variant whose bits/byte loss is <= `boundPct` % and whose retrieval drop is <=
 * `boundPct` points; ties on speedup go to the lower cost, then the name. Undefined when none.
 */
export function recommend<T extends AccuracyLoss & { speedup: number; name: string }>(
  rows: readonly T[],
  boundPct: number,
): T | undefined {
  return rows
    .filter((r) =>
      r.bitsPerByteLossPct <= boundPct && r.retrievalDropPts <= boundPct &&
      Number.isFinite(r.speedup)
    )
    .sort((a, b) =>
      b.speedup - a.speedup || accuracyCost(a) - accuracyCost(b) || a.name.localeCompare(b.name)
    )[0];
}
