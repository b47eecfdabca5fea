/**
 * What `ptxas -v` reports per kernel (the standalone tool, or NVRTC's own with `-Xptxas -v`):
 * registers, shared memory, stack frame and spills. Pure text parsing.
 */

/** One entry function's resources, bytes except `registers`. */
export interface KernelStats {
  readonly registers: number;
  readonly smem: number;
  readonly stack: number;
  readonly spillStores: number;
  readonly spillLoads: number;
}

/** Per entry function, what the report says; throws when an entry's block cannot be read. */
export function parsePtxasInfo(text: string): Map<string, KernelStats> {
  const stats = new Map<string, KernelStats>();
  for (const block of text.split("Compiling entry function '").slice(1)) {
    const name = block.slice(0, block.indexOf("'"));
    const frame = /(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads/
      .exec(block);
    const used = /Used (\d+) registers/.exec(block);
    if (!frame || !used) throw new Error(`cannot parse the ptxas report of ${name}:\n${block}`);
    stats.set(name, {
      registers: Number(used[1]),
      smem: Number(/(\d+) bytes smem/.exec(block)?.[1] ?? 0),
      stack: Number(frame[1]),
      spillStores: Number(frame[2]),
      spillLoads: Number(frame[3]),
    });
  }
  return stats;
}

/** No stack frame and no spills. */
export const clean = (s: KernelStats): boolean =>
  s.stack === 0 && s.spillStores === 0 && s.spillLoads === 0;

/** `stack/stores/loads` in bytes. */
export const spills = (s: KernelStats): string => `${s.stack}/${s.spillStores}/${s.spillLoads}`;
