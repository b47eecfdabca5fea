/**
 * When a decode plan runs a layer's sparse attention as the persistent step (one cooperative
 * launch of resident blocks: score, select, resolve, sparse attention and merge separated by grid
 * barriers; templates/persistent_step.cu.hbs) instead of the five-launch chain, and how that
 * launch is shaped. At batch 1-4 every kernel of the chain is latency-bound (docs/perf-notes.md,
 * "Persistent small-batch step"), so one launch whose blocks stay resident saves each stage's
 * launch, ramp-up and tail.
 *
 * `DS_PERSISTENT` (auto = batch <= PERSISTENT_MAX_BATCH | 1 | 0, also on | off) overrides the
 * default, off: on an H100 the persistent step measured 0.52x-0.81x of the chain at batch 1-4
 * (docs/perf-notes.md), so it stays an experiment. PlanOptions.persistentStep overrides both.
 * Pure (no FFI): tested on the CPU.
 */
import { UsageError } from "../util/errors.ts";
import { parseSwitchChoice, type SwitchChoice } from "./switch_choice.ts";

/** What a caller asks for: on (any batch), off, or auto (batch <= PERSISTENT_MAX_BATCH). */
export type PersistentChoice = SwitchChoice;
export const PERSISTENT_ENV = "DS_PERSISTENT";
export const PERSISTENT_DEFAULT: PersistentChoice = "off";
/** Largest batch "auto" runs persistent: issue 15 item 1's small-batch range. */
export const PERSISTENT_MAX_BATCH = 4;
/**
 * Resident blocks per multiprocessor the persistent grid uses at most: two keep loads of two
 * work items in flight per SM while each grid barrier stays one atomic per block.
 */
export const PERSISTENT_BLOCKS_PER_SM = 2;
/** Fewest selected tokens an attention split of the persistent step takes. */
export const PERSISTENT_MIN_TOKENS_PER_SPLIT = 64;

/** `value` as a choice; `source` names where it came from (an option, the environment). */
export function parsePersistentChoice(
  value: string | undefined,
  source: string,
): PersistentChoice {
  return parseSwitchChoice(value, source, PERSISTENT_DEFAULT);
}

/** Whether a plan of `batch` sequences has the persistent step available for `choice`. */
export function persistentWanted(choice: PersistentChoice, batch: number): boolean {
  if (choice === "off") return false;
  return choice === "on" || batch <= PERSISTENT_MAX_BATCH;
}

/**
 * Blocks of the persistent grid: every one must be resident at once (cooperative launch), so
 * at most `residentPerSm` (the occupancy of the compiled kernel) per multiprocessor. Throws a
 * UsageError naming `source` when not one block fits.
 */
export function persistentGrid(
  multiprocessors: number,
  residentPerSm: number,
  source: string,
): number {
  if (residentPerSm < 1) {
    throw new UsageError(
      `${source}: the persistent step asked for, but not one block of its kernel fits a ` +
        "multiprocessor (registers or shared memory); use DS_PERSISTENT=0",
    );
  }
  return multiprocessors * Math.min(residentPerSm, PERSISTENT_BLOCKS_PER_SM);
}

/**
 * Attention splits of the persistent step: as many as give about one work item per block of the
 * grid (items = splits x head blocks x batch), each split at least
 * PERSISTENT_MIN_TOKENS_PER_SPLIT of the `budget` selected tokens, at most `maxSplits`.
 */
export function persistentSplits(
  grid: number,
  headBlocks: number,
  batch: number,
  budget: number,
  maxSplits: number,
): number {
  const byGrid = Math.floor(grid / (headBlocks * batch));
  const byTokens = Math.ceil(budget / PERSISTENT_MIN_TOKENS_PER_SPLIT);
  return Math.max(1, Math.min(byGrid, byTokens, maxSplits));
}
