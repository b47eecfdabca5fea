/**
 * Named variants of the prefill kernel's sm_90a (wgmma) body, for side-by-side measurement: how
 * the K/V tiles are loaded and handed to the MMA warps (`schedule`, see
 * templates/prefill_wgmma.cuh.hbs), the depth of the K and V rings (`stages`) and the grid order
 * (`headsFastest`). A name is `<schedule>[<stages>][-h]`:
 *   sync    the consumer warps load one tile ahead, one CTA barrier per tile (2 slots; the default)
 *   mbar3   the consumer warps load 2 tiles ahead; per-slot full/empty mbarriers, no CTA barrier
 *   ws3     a producer warpgroup loads (setmaxnreg), two consumer warpgroups compute; mbarriers
 *   ...-p   pingpong (mbar, ws): one warpgroup's softmax runs under the other's MMAs (FA3)
 *   ...-h   grid (heads, tiles): the query heads of one kv group run side by side
 * Pure (no FFI): tested on the CPU.
 */
import type { Tuning } from "./kernels.ts";
import { UsageError } from "../util/errors.ts";

/** Who loads the K/V tiles of the wgmma body and how a slot is handed to the MMA warps. */
export type WgmmaSchedule = "sync" | "mbar" | "ws";
/** Every schedule, in the order of their template codes. */
export const WGMMA_SCHEDULES: readonly WgmmaSchedule[] = ["sync", "mbar", "ws"];
/** The template's SCHEDULE constant of each schedule. */
export const WGMMA_SCHEDULE_CODE: Readonly<Record<WgmmaSchedule, number>> = {
  sync: 0,
  mbar: 1,
  ws: 2,
};
/**
 * The wgmma body's variant in every tuning (tuningFor) and so in the committed sources: switching
 * the default after a measurement is this one line (then `deno task gen`, UPDATE_GOLDEN=1).
 */
export const DEFAULT_WGMMA_VARIANT = "mbar3";
/** The environment variable that picks the wgmma variant where the caller does not. */
export const WGMMA_VARIANT_ENV = "DS_PREFILL_WGMMA_VARIANT";
/** An H100's (and H200's) largest dynamic shared memory per block. */
export const MAX_SHARED_BYTES = 227 * 1024;

/** The variants measured side by side (bench/prefill_kernel.ts, tests/gpu/prefill.ts defaults). */
export const WGMMA_VARIANTS: readonly string[] = [
  "sync",
  "sync-h",
  "mbar3",
  "mbar3-h",
  "mbar3-p",
  "ws3",
  "ws3-h",
  "ws3-p",
  "ws3-p-h",
];

/** A parsed variant name. */
export interface WgmmaVariant {
  /** Who loads K/V and how slots are handed over. */
  readonly schedule: WgmmaSchedule;
  /** Slots of each of the K and V rings. */
  readonly stages: number;
  /** Grid (heads, tiles) instead of (tiles, heads). */
  readonly headsFastest: boolean;
  /** The two consumer warpgroups take turns issuing their MMAs. */
  readonly pingpong: boolean;
}

const DEFAULT_STAGES: Readonly<Record<WgmmaSchedule, number>> = { sync: 2, mbar: 3, ws: 3 };

/** `name` as a variant; `source` names where it came from (a flag, the environment variable). */
export function parseWgmmaVariant(name: string, source: string): WgmmaVariant {
  const m = /^(sync|mbar|ws)([2-4])?(-p)?(-h)?$/.exec(name.trim().toLowerCase());
  const allowed = "<sync|mbar|ws>[2-4][-p][-h], e.g. sync, sync-h, mbar3, ws3-p-h";
  if (!m) {
    throw new UsageError(`${source}: got ${JSON.stringify(name)}; allowed: ${allowed}`);
  }
  const schedule = m[1] as WgmmaSchedule;
  const stages = m[2] ? Number(m[2]) : DEFAULT_STAGES[schedule];
  if (schedule === "sync" && stages !== 2) {
    throw new UsageError(
      `${source}: got ${JSON.stringify(name)}; the sync schedule has 2 stages (one tile ahead)`,
    );
  }
  const pingpong = m[3] !== undefined;
  if (schedule === "sync" && pingpong) {
    throw new UsageError(
      `${source}: got ${JSON.stringify(name)}; pingpong needs the mbar or ws schedule (sync ` +
        "keeps both warpgroups in lockstep)",
    );
  }
  return { schedule, stages, headsFastest: m[4] !== undefined, pingpong };
}

/** The canonical name of a variant (stages written unless it is the schedule's default). */
export function wgmmaVariantName(v: WgmmaVariant): string {
  const stages = v.stages === DEFAULT_STAGES[v.schedule] && v.schedule === "sync"
    ? ""
    : String(v.stages);
  return `${v.schedule}${stages}${v.pingpong ? "-p" : ""}${v.headsFastest ? "-h" : ""}`;
}

/**
 * The wgmma body's dynamic shared memory: the Q tile (64 rows per consumer warpgroup), `stages`
 * K and V slots (2-byte elements), 1024 bytes of slack to align them to the 128-byte swizzle's
 * 1024-byte period, and the mbarriers (4 per stage and Q's) of the mbar and ws schedules.
 */
export function wgmmaSharedBytes(
  headDim: number,
  consumerThreads: number,
  keyTile: number,
  stages: number,
  schedule: WgmmaSchedule,
): number {
  const barriers = schedule === "sync" ? 0 : 8 * (4 * stages + 1);
  return (64 * (consumerThreads / 128) + 2 * stages * keyTile) * headDim * 2 + 1024 + barriers;
}

/** Threads of the wgmma body: the consumer warpgroups, plus the ws schedule's producer one. */
export const wgmmaThreads = (consumerThreads: number, schedule: WgmmaSchedule): number =>
  consumerThreads + (schedule === "ws" ? 128 : 0);

/**
 * `base` (a variant's default tuning) with the wgmma body's knobs set to variant `name`; a
 * UsageError naming `source` when the name is malformed or the variant does not fit shared memory.
 */
export function withWgmmaVariant(
  base: Tuning,
  headDim: number,
  name: string,
  source: string,
): Tuning {
  const v = parseWgmmaVariant(name, source);
  const consumers = base.prefillWgmmaThreads -
    (base.prefillWgmmaSchedule === "ws" ? 128 : 0);
  const shared = wgmmaSharedBytes(
    headDim,
    consumers,
    base.prefillWgmmaKeyTile,
    v.stages,
    v.schedule,
  );
  if (shared > MAX_SHARED_BYTES) {
    throw new UsageError(
      `${source}: variant ${name} needs ${shared} bytes of shared memory at head dim ${headDim}; ` +
        `at most ${MAX_SHARED_BYTES}`,
    );
  }
  return {
    ...base,
    prefillWgmmaSchedule: v.schedule,
    prefillWgmmaStages: v.stages,
    prefillWgmmaHeadsFastest: v.headsFastest,
    prefillWgmmaPingpong: v.pingpong,
    prefillWgmmaThreads: wgmmaThreads(consumers, v.schedule),
    prefillWgmmaSharedBytes: shared,
  };
}

/** The variant a tuning holds, by name. */
export const wgmmaVariantOf = (t: Tuning): string =>
  wgmmaVariantName({
    schedule: t.prefillWgmmaSchedule,
    stages: t.prefillWgmmaStages,
    headsFastest: t.prefillWgmmaHeadsFastest,
    pingpong: t.prefillWgmmaPingpong,
  });
