/**
 * The gather_kv launch grid: (selection heads, chunk lanes, batch). Each block walks its lane's
 * chunks of `rowsPerBlock` selected rows (templates/gather_kv.cu.hbs), so the grid may hold fewer
 * lanes than a list has chunks. Few blocks matter when the gather runs on the prediction's side
 * stream beside the layer's own kernels. A gather of thousands of blocks, each waiting
 * microseconds on its PCIe reads, holds the block slots until its last block is dispatched, and
 * the kernels queued after it wait; fewer blocks also keep fewer bytes in flight, and the reads in
 * flight slow the layer's memory-bound kernels through the memory system (docs/perf-notes.md:
 * giving the gather whole SMs did not help, fewer blocks did). Measured with
 * bench/offload_timeline.ts (NVIDIA H100, Llama-3-8B shape, offload + prediction, B=1 64K):
 * uncapped (512 blocks) the top-k and attention beside the gather ran 10-20x slower and the step
 * took 23.7 ms; capped at 264 / 64 / 32 / 16 / 8 blocks 23.7 / 19.3 / 15.4 / 18.0 / 23.3 ms (at 8
 * the prefetch itself no longer keeps up), while plain offload (the gather alone) stayed at
 * 19.7-20.2 ms for every cap: 8 blocks still fill PCIe (one block has threads x unroll x 16 bytes
 * = 32 KiB of reads in flight; 50 GB/s over a few microseconds of latency needs a few hundred KiB).
 *
 * The cap is DS_GATHER_BLOCKS where set (read here and nowhere else; 0 = one lane per chunk, for
 * measurements), else `gatherBlockCap`'s: a quarter of the SMs (33 on an H100), or one block an SM
 * for the exact gather behind a prefetch of at least WIDE_GATHER_MIN_PREFETCH_FRACTION of the
 * budget (prediction with prefetchFraction 0.75 to 1) while that leaves each block at most
 * WIDE_GATHER_CHUNKS_PER_BLOCK chunks. That gather
 * runs on the critical path with nothing of the layer beside it and finds most of its rows in the
 * prefetch; each of its blocks walks chunks that mix device rows (copied at once) with host rows
 * (microseconds each) after binary searches in the stagings' lists, and with 33 blocks it read the
 * missed quarter of a layer's rows at ~37 GB/s (bench/offload_timeline.ts, B=1 64K). In a
 * same-call A/B on an H100 one block an SM made offload + prediction 0.04-1.1 ms a step faster and
 * + prediction + reuse 0.5-3.7 ms faster at B=1 32K-128K; gathers that read mostly host rows
 * (reuse alone, a half prefetch) lost up to 4% with it, so they keep the quarter
 * (docs/perf-notes.md, "A wider grid for the exact gather behind a full prefetch"). Larger lists
 * lost with it too: at 4 x 128K (4,096 chunks, 32 a block at one block an SM) + prediction took
 * 133 ms a step against 118 ms with the quarter (+ prediction + reuse 127 against 118), and at
 * 1 x 256K (2,048 chunks) + prediction lost 1-6% and + prediction + reuse gained 1-5%, in two
 * rounds each on an H100, while 1 x 128K and 4 x 32K (1,024 chunks, 8 a block) gained; the
 * missed rows there are many enough to fill the bus from a quarter of the SMs, and more blocks
 * only spread the host reads over more places at once (docs/perf-notes.md, "The wide exact gather,
 * only for small selections").
 */
import type { Dim3 } from "../codegen/kernel_api.ts";
import { InputError } from "../util/errors.ts";
import { envSetting } from "./env.ts";

/** The environment variable that overrides the block cap (0: one lane per chunk). */
export const GATHER_BLOCKS_ENV_VAR = "DS_GATHER_BLOCKS";

/**
 * The grid for `batch` lists of up to `selStride` rows per selection head: every chunk lane a
 * block, at most `maxBlocks` blocks in all (at least one lane; 0 = no cap).
 */
export function gatherGrid(
  selectionHeads: number,
  selStride: number,
  rowsPerBlock: number,
  batch: number,
  maxBlocks: number,
): Dim3 {
  const chunks = chunksPerList(selStride, rowsPerBlock);
  const lanes = maxBlocks > 0
    ? Math.max(1, Math.min(chunks, Math.floor(maxBlocks / (selectionHeads * batch))))
    : chunks;
  return [selectionHeads, lanes, batch];
}

/** Chunks of `rowsPerBlock` rows in a list of up to `selStride` rows (at least one). */
function chunksPerList(selStride: number, rowsPerBlock: number): number {
  return Math.max(1, Math.ceil(selStride / rowsPerBlock));
}

/** Chunk lanes of a whole gather launch: every list's chunks (see gatherGrid). */
export function gatherChunks(
  selectionHeads: number,
  selStride: number,
  rowsPerBlock: number,
  batch: number,
): number {
  return selectionHeads * chunksPerList(selStride, rowsPerBlock) * batch;
}

/**
 * The smallest prefetch fraction whose exact gather counts as mixed (most rows on the device): at
 * 0.75 the prefetch served 62% of the exact rows at 1 x 64K and the wide grid made the steps up to
 * 0.7 ms faster; at 0.5 (45% served) it lost 1-2% (docs/perf-notes.md, "The wide exact gather,
 * only for small selections").
 */
const WIDE_GATHER_MIN_PREFETCH_FRACTION = 0.75;

/**
 * Most chunks a block of the wide exact gather walks: gains measured at 8 a block, losses at 16
 * and 32 (the module's comment).
 */
export const WIDE_GATHER_CHUNKS_PER_BLOCK = 8;

/**
 * The block cap of a gather launch of `chunks` chunk lanes on a card of `multiprocessors` SMs.
 * `behindPrefetch`: for the exact gather that reads a prediction's prefetch first, that
 * prediction's prefetch fraction; null for every other gather. One block an SM where the fraction
 * is at least WIDE_GATHER_MIN_PREFETCH_FRACTION (most rows then on the device) and each block walks
 * at most WIDE_GATHER_CHUNKS_PER_BLOCK chunks, else a quarter of the SMs; DS_GATHER_BLOCKS
 * overrides both.
 */
export function gatherBlockCap(
  multiprocessors: number,
  chunks: number,
  behindPrefetch: number | null,
): number {
  const wide = behindPrefetch !== null && behindPrefetch >= WIDE_GATHER_MIN_PREFETCH_FRACTION &&
    chunks <= WIDE_GATHER_CHUNKS_PER_BLOCK * multiprocessors;
  return gatherBlocksFromEnv(wide ? multiprocessors : Math.ceil(multiprocessors / 4));
}

/** DS_GATHER_BLOCKS, validated (an integer >= 0), or `fallback` when unset or empty. */
export function gatherBlocksFromEnv(fallback: number): number {
  const value = envSetting(GATHER_BLOCKS_ENV_VAR);
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0 || !/^\d+$/.test(value)) {
    throw new InputError(
      `environment variable ${GATHER_BLOCKS_ENV_VAR}`,
      `got ${JSON.stringify(value)}; allowed: an integer >= 0 (0: no cap)`,
    );
  }
  return n;
}
