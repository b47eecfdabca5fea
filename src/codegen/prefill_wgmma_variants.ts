/**
 * Named variants of the prefill kernel's sm_90a (wgmma) body, for side-by-side measurement: how
 * the K/V tiles are loaded and handed to the MMA warps (`schedule`, see
 * templates/prefill_wgmma.cuh.hbs), the depth of the K and V rings (`stages`) and the grid order
 * (`headsFastest`), whether O is rescaled only when a row max moved (`lazyRescale`), whether P is
 * double-buffered (`doubleP`) and whether the tma producer's K and V copies come from two threads
 * (`splitProducer`). A name is `<schedule>[<stages>][-p][-r][-d][-s][-h]`:
 *   sync    the consumer warps load one tile ahead, one CTA barrier per tile (2 slots)
 *   mbar3   the consumer warps load 2 tiles ahead; per-slot full/empty mbarriers, no CTA barrier
 *   ws3     a producer warpgroup loads (setmaxnreg), two consumer warpgroups compute; mbarriers
 *   tma3    as ws3, but one producer thread issues TMA bulk tensor copies of whole pages (the K/V
 *           pools' tensor maps: src/runtime/kv_tensor_maps.ts); page sizes 8 and up
 *   ...-p   pingpong (mbar, ws, tma): one warpgroup's softmax runs under the other's MMAs (FA3)
 *   ...-r   a warp skips the O rescale of a tile when the max of none of its rows changed
 *   ...-d   two P buffers (mbar, ws, tma): tile n - 1's PV is waited for in tile n + 1, so the
 *           softmax of tile n runs under it (ptxas moved the single buffer's wait above it)
 *   ...-s   (tma) K copies from one producer thread, V copies from another
 *   ...-h   grid (heads, tiles): the query heads of one kv group run side by side
 * The default is tma3-r-s, mbar3 where the page size is below 8 (DEFAULT_WGMMA_VARIANT,
 * defaultWgmmaVariant). Pure (no FFI): tested on the CPU.
 */
import type { Tuning } from "./kernels.ts";
import { UsageError } from "../util/errors.ts";

/** Who loads the K/V tiles of the wgmma body and how a slot is handed to the MMA warps. */
export type WgmmaSchedule = "sync" | "mbar" | "ws" | "tma";
/** Every schedule, in the order of their template codes. */
export const WGMMA_SCHEDULES: readonly WgmmaSchedule[] = ["sync", "mbar", "ws", "tma"];
/** The template's SCHEDULE constant of each schedule. */
export const WGMMA_SCHEDULE_CODE: Readonly<Record<WgmmaSchedule, number>> = {
  sync: 0,
  mbar: 1,
  ws: 2,
  tma: 3,
};
/**
 * The wgmma body's variant in every tuning (tuningFor) and so in the committed sources, where the
 * spec's pages fit TMA boxes (defaultWgmmaVariant): switching the default after a measurement is
 * this one line (then `deno task gen`, UPDATE_GOLDEN=1). tma3-r-s measured 645 / 665 TFLOP/s (16K /
 * 32K) against tma3-r's 452 / 478 in one H100 call (docs/perf-notes.md, entry 12); tma3-r 466-481
 * against tma3's 448-464 (entry 11), tma3 455-464 against mbar3's 392-400 (entry 10).
 */
export const DEFAULT_WGMMA_VARIANT = "tma3-r-s";
/** The default where TMA cannot copy the pages (page size below 8): the fastest cp.async variant. */
export const FALLBACK_WGMMA_VARIANT = "mbar3";
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
  "tma3",
  "tma3-p",
  "tma3-h",
  "tma3-r",
  "tma3-r-d",
  "tma3-r-s",
  "tma3-r-d-s",
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
  /** A warp multiplies O by the rescale factors only when one of them is not 1. */
  readonly lazyRescale: boolean;
  /** Two P buffers: the wait for a tile's PV moves one tile later, past the next softmax. */
  readonly doubleP: boolean;
  /** tma: the K and the V copies are issued by two producer threads. */
  readonly splitProducer: boolean;
}

const DEFAULT_STAGES: Readonly<Record<WgmmaSchedule, number>> = {
  sync: 2,
  mbar: 3,
  ws: 3,
  tma: 3,
};

/** The schedules with a producer warpgroup (setmaxnreg) in front of the consumer warpgroups. */
export const hasProducerWarpgroup = (s: WgmmaSchedule): boolean => s === "ws" || s === "tma";

/** `name` as a variant; `source` names where it came from (a flag, the environment variable). */
export function parseWgmmaVariant(name: string, source: string): WgmmaVariant {
  const m = /^(sync|mbar|ws|tma)([2-4])?(-p)?(-r)?(-d)?(-s)?(-h)?$/.exec(name.trim().toLowerCase());
  const allowed =
    "<sync|mbar|ws|tma>[2-4][-p][-r][-d][-s][-h], e.g. sync, sync-h, mbar3, ws3-p-h, tma3-r, tma3-r-d-s";
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
      `${source}: got ${JSON.stringify(name)}; pingpong needs the mbar, ws or tma schedule (sync ` +
        "keeps both warpgroups in lockstep)",
    );
  }
  const doubleP = m[5] !== undefined, splitProducer = m[6] !== undefined;
  if (doubleP && schedule === "sync") {
    throw new UsageError(
      `${source}: got ${JSON.stringify(name)}; -d needs the mbar, ws or tma schedule (per-slot ` +
        "barriers)",
    );
  }
  if (splitProducer && schedule !== "tma") {
    throw new UsageError(
      `${source}: got ${JSON.stringify(name)}; -s splits the tma schedule's producer thread`,
    );
  }
  return {
    schedule,
    stages,
    headsFastest: m[7] !== undefined,
    pingpong,
    lazyRescale: m[4] !== undefined,
    doubleP,
    splitProducer,
  };
}

/** The canonical name of a variant (stages written, except for sync's fixed 2). */
export function wgmmaVariantName(v: WgmmaVariant): string {
  const stages = v.stages === DEFAULT_STAGES[v.schedule] && v.schedule === "sync"
    ? ""
    : String(v.stages);
  const suffixes = `${v.pingpong ? "-p" : ""}${v.lazyRescale ? "-r" : ""}${v.doubleP ? "-d" : ""}${
    v.splitProducer ? "-s" : ""
  }${v.headsFastest ? "-h" : ""}`;
  return `${v.schedule}${stages}${suffixes}`;
}

/**
 * The wgmma body's dynamic shared memory: the Q tile (64 rows per consumer warpgroup), `stages`
 * K and V slots (2-byte elements), 1024 bytes of slack to align them to the 128-byte swizzle's
 * 1024-byte period, and the mbarriers (4 per stage and Q's) of the mbar, ws and tma schedules
 * (tma: one more, on which the last V tile lands before its rows past the sequence are zeroed).
 */
export function wgmmaSharedBytes(
  headDim: number,
  consumerThreads: number,
  keyTile: number,
  stages: number,
  schedule: WgmmaSchedule,
): number {
  const barriers = schedule === "sync" ? 0 : 8 * (4 * stages + (schedule === "tma" ? 2 : 1));
  return (64 * (consumerThreads / 128) + 2 * stages * keyTile) * headDim * 2 + 1024 + barriers;
}

/** Threads of the wgmma body: the consumer warpgroups, plus the ws/tma schedules' producer one. */
export const wgmmaThreads = (consumerThreads: number, schedule: WgmmaSchedule): number =>
  consumerThreads + (hasProducerWarpgroup(schedule) ? 128 : 0);

/**
 * Rows of one TMA box of the tma schedule: a page, or a key tile of a page longer than the tile.
 * The 128-byte swizzle repeats every 8 rows (1024 bytes), so a box must hold a multiple of 8 rows
 * for the copies to land in the layout the wgmma descriptors read; null (with `why`) for page
 * sizes below 8 (page sizes are powers of two, so 8 and up always divide or are divided by the
 * key tile when it is a power of two).
 */
export function tmaBoxRows(
  pageSize: number,
  keyTile: number,
): { rows: number; why: null } | { rows: null; why: string } {
  const rows = Math.min(pageSize, keyTile);
  if (rows % 8 !== 0 || keyTile % rows !== 0 || (pageSize > keyTile && pageSize % keyTile !== 0)) {
    return {
      rows: null,
      why: `page size ${pageSize} with key tile ${keyTile}: a TMA box (min of the two) must be a ` +
        "multiple of 8 rows (the 128-byte swizzle's period) dividing the key tile",
    };
  }
  return { rows, why: null };
}

/** What a variant's fit depends on: the spec's head dim and page size. */
export interface WgmmaShape {
  /** Elements per K/V row (sizes the Q tile and the K/V slots). */
  readonly headDim: number;
  /** Tokens per cache page (the tma schedule copies whole pages). */
  readonly pageSize: number;
}

/**
 * `base` (a variant's default tuning) with the wgmma body's knobs set to variant `name`; a
 * UsageError naming `source` when the name is malformed, the variant does not fit shared memory,
 * or (tma) the page size cannot be copied in TMA boxes (no fallback: ask for mbar3 instead).
 */
export function withWgmmaVariant(
  base: Tuning,
  shape: WgmmaShape,
  name: string,
  source: string,
): Tuning {
  const { headDim, pageSize } = shape;
  const v = parseWgmmaVariant(name, source);
  if (v.schedule === "tma") {
    const box = tmaBoxRows(pageSize, base.prefillWgmmaKeyTile);
    if (box.why !== null) {
      throw new UsageError(`${source}: variant ${name} cannot run here: ${box.why}; use mbar3`);
    }
  }
  const consumers = base.prefillWgmmaThreads -
    (hasProducerWarpgroup(base.prefillWgmmaSchedule) ? 128 : 0);
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
    prefillWgmmaLazyRescale: v.lazyRescale,
    prefillWgmmaDoubleP: v.doubleP,
    prefillWgmmaSplitProducer: v.splitProducer,
    prefillWgmmaThreads: wgmmaThreads(consumers, v.schedule),
    prefillWgmmaSharedBytes: shared,
  };
}

/** The default variant of a spec: DEFAULT_WGMMA_VARIANT, or the fallback where TMA cannot run. */
export function defaultWgmmaVariant(shape: WgmmaShape, keyTile: number): string {
  const tma = parseWgmmaVariant(DEFAULT_WGMMA_VARIANT, "DEFAULT_WGMMA_VARIANT").schedule === "tma";
  return tma && tmaBoxRows(shape.pageSize, keyTile).why !== null
    ? FALLBACK_WGMMA_VARIANT
    : DEFAULT_WGMMA_VARIANT;
}

/** The tuning fields that make up a wgmma variant. */
export type WgmmaVariantTuning = Pick<
  Tuning,
  | "prefillWgmmaSchedule"
  | "prefillWgmmaStages"
  | "prefillWgmmaHeadsFastest"
  | "prefillWgmmaPingpong"
  | "prefillWgmmaLazyRescale"
  | "prefillWgmmaDoubleP"
  | "prefillWgmmaSplitProducer"
>;

/** The variant a tuning holds, by name. */
export const wgmmaVariantOf = (t: WgmmaVariantTuning): string =>
  wgmmaVariantName({
    schedule: t.prefillWgmmaSchedule,
    stages: t.prefillWgmmaStages,
    headsFastest: t.prefillWgmmaHeadsFastest,
    pingpong: t.prefillWgmmaPingpong,
    lazyRescale: t.prefillWgmmaLazyRescale,
    doubleP: t.prefillWgmmaDoubleP,
    splitProducer: t.prefillWgmmaSplitProducer,
  });
