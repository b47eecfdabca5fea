/**
 * The gather_kv launch grid: (selection heads, chunk lanes, batch). Each block walks its lane's
 * chunks of `rowsPerBlock` selected rows (templates/gather_kv.cu.hbs), so the grid may hold fewer
 * lanes than a list has chunks. Capping the blocks near one wave matters when the gather runs on
 * the prediction's side stream: a gather of thousands of blocks, each waiting microseconds on its
 * PCIe reads, holds every block slot of the GPU until its last block is dispatched, and the
 * layer's own kernels on the main stream queue behind it (bench/offload_timeline.ts measured the
 * layer's top-k and attention at 10-40x their usual time beside an uncapped gather). Little's law
 * needs far fewer blocks: 50 GB/s over ~2 us of PCIe latency is ~100 KB in flight, and one block
 * has threads x unroll x 16 bytes (32 KiB with the default tuning) in flight.
 *
 * The cap comes from the caller (OffloadPlan: 2 blocks per SM), else DS_GATHER_BLOCKS (read here
 * and nowhere else; 0 = uncapped, the first design, kept for measurements).
 */
import type { Dim3 } from "../codegen/kernel_api.ts";
import { InputError } from "../util/errors.ts";

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
  const chunks = Math.max(1, Math.ceil(selStride / rowsPerBlock));
  const lanes = maxBlocks > 0
    ? Math.max(1, Math.min(chunks, Math.floor(maxBlocks / (selectionHeads * batch))))
    : chunks;
  return [selectionHeads, lanes, batch];
}

/** DS_GATHER_BLOCKS, validated (an integer >= 0), or `fallback` when unset or empty. */
export function gatherBlocksFromEnv(fallback: number): number {
  let value: string | undefined;
  try {
    value = Deno.env.get(GATHER_BLOCKS_ENV_VAR);
  } catch {
    return fallback; // no --allow-env: nothing was asked for
  }
  if (value === undefined || value === "") return fallback;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0 || !/^\d+$/.test(value)) {
    throw new InputError(
      `environment variable ${GATHER_BLOCKS_ENV_VAR}`,
      `got ${JSON.stringify(value)}; allowed: an integer >= 0 (0: no cap)`,
    );
  }
  return n;
}
