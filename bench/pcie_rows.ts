/**
 * The selected rows of the PCIe probes (bench/pcie_gather_probe.ts, bench/pcie_load_probe.ts): a
 * mapped host pool of 256-byte rows laid out like a K pool (16-token pages, the kv heads'
 * rows of a page interleaved), and per head a sorted random 1/16 of its tokens (what
 * sort_selection leaves), as physical row numbers.
 */

/** Bytes of one K (or V) row: d 128, fp16. */
export const ROW_BYTES = 256;
export const PROBE_HEADS = 8;
const PAGE = 16;

export interface ProbeRows {
  /** Rows selected per head. */
  readonly perList: number;
  /** The heads' sorted lists, head after head: perList * PROBE_HEADS physical rows. */
  readonly rows: Int32Array;
  /** The same lists' rows in another order, from the same generator (after `rows`). */
  shuffled(values: Int32Array): Int32Array;
}

/** The probes' selection over a pool of `poolBytes` (fixed seed: every run picks the same rows). */
export function probeRows(poolBytes: number): ProbeRows {
  const tokensPerHead = poolBytes / ROW_BYTES / PROBE_HEADS;
  const rowOf = (h: number, t: number) =>
    (Math.floor(t / PAGE) * PROBE_HEADS + h) * PAGE + (t % PAGE);
  let seed = 12345;
  const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
  const perList = Math.floor(tokensPerHead / 16);
  const rows = new Int32Array(perList * PROBE_HEADS);
  for (let h = 0; h < PROBE_HEADS; h++) {
    const picked = new Set<number>();
    while (picked.size < perList) picked.add(Math.floor(rand() * tokensPerHead));
    rows.set([...picked].sort((a, b) => a - b).map((t) => rowOf(h, t)), h * perList);
  }
  return {
    perList,
    rows,
    shuffled(values) {
      const out = values.slice();
      for (let i = out.length - 1; i > 0; i--) {
        const j = Math.floor(rand() * (i + 1));
        [out[i], out[j]] = [out[j], out[i]];
      }
      return out;
    },
  };
}
