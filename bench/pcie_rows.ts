/**
 * What the gather probes (bench/pcie_gather_probe.ts, bench/pcie_load_probe.ts, and
 * bench/hbm_gather_probe.ts for device memory) share: their command line (--gib, the pool's size),
 * the compile and load of their kernels, their gather kernels' shape and row loop, and the selected
 * rows: a pool
 * (mapped host memory for the PCIe probes) of 256-byte rows laid out like a K pool (16-token pages,
 * the kv heads' rows of a page interleaved), and per head a sorted random 1/16 of its tokens (what
 * sort_selection leaves), as physical row numbers.
 */
import type { Cuda, Module } from "../src/cuda/driver.ts";
import { sharedCompiler } from "../src/runtime/variant.ts";
import { intFlag, openCommand } from "../src/cli/front_door.ts";
import { requireGpu } from "../src/runtime/device.ts";

/** Bytes of one K (or V) row: d 128, fp16. */
export const ROW_BYTES = 256;
export const PROBE_HEADS = 8;
const PAGE = 16;

/** The SM gathers: blocks of 256 threads, each row read as 16-byte chunks, 8 rows a thread. */
export const GATHER_THREADS = 256;
export const GATHER_UNROLL = 8;
export const ROW_CHUNKS = ROW_BYTES / 16;
/** Rows one gather block reads per round: GATHER_UNROLL for each group of ROW_CHUNKS threads. */
export const ROWS_PER_ROUND = (GATHER_THREADS / ROW_CHUNKS) * GATHER_UNROLL;

/**
 * The CUDA the SM gathers share: the 16-byte word `u4`, `load_round` (this thread's 16-byte chunk
 * of each of the GATHER_UNROLL rows it reads in the round that starts at entry `first` of `rows`,
 * with `load`, a PTX v4.u32 load; entries from `n` on read nothing and leave zero) and
 * `store_round` (those chunks to `out`, entry e at out row e). One round is ROWS_PER_ROUND entries.
 */
export function roundSource(load = "ld.global.cs.v4.u32"): string {
  return `
struct __align__(16) u4 { unsigned x, y, z, w; };
__device__ __forceinline__ void load_round(const u4* __restrict__ pool,
    const int* __restrict__ rows, int first, int n, u4 (&buf)[${GATHER_UNROLL}]) {
  const int lane_row = threadIdx.x / ${ROW_CHUNKS}, chunk = threadIdx.x % ${ROW_CHUNKS};
#pragma unroll
  for (int u = 0; u < ${GATHER_UNROLL}; u++) {
    const int e = first + u * ${GATHER_THREADS / ROW_CHUNKS} + lane_row;
    buf[u] = u4{0, 0, 0, 0};
    if (e < n) {
      const u4* p = pool + (size_t)__ldg(rows + e) * ${ROW_CHUNKS} + chunk;
      asm volatile("${load} {%0,%1,%2,%3}, [%4];"
                   : "=r"(buf[u].x), "=r"(buf[u].y), "=r"(buf[u].z), "=r"(buf[u].w) : "l"(p));
    }
  }
}
__device__ __forceinline__ void store_round(u4* __restrict__ out, int first, int n,
    const u4 (&buf)[${GATHER_UNROLL}]) {
  const int lane_row = threadIdx.x / ${ROW_CHUNKS}, chunk = threadIdx.x % ${ROW_CHUNKS};
#pragma unroll
  for (int u = 0; u < ${GATHER_UNROLL}; u++) {
    const int e = first + u * ${GATHER_THREADS / ROW_CHUNKS} + lane_row;
    if (e < n) out[(size_t)e * ${ROW_CHUNKS} + chunk] = buf[u];
  }
}
`;
}

/**
 * A probe's front door (`name`: bench/<name>.ts): its --gib flag (the size of `pool`), then the
 * GPU.
 */
export function openProbe(
  name: string,
  pool = "mapped pinned host pool",
): { gib: number; cuda: Cuda } {
  const { values: args } = openCommand({
    name,
    usage: `deno run -A bench/${name}.ts [--gib N]
  --gib N   size of the ${pool} in GiB, an integer >= 1 (default 8)`,
    options: { gib: { type: "string", default: "8" } },
  });
  const gib = intFlag("gib", args.gib, { min: 1 });
  return { gib, cuda: requireGpu(`bench/${name}.ts`) };
}

/**
 * A probe's kernel `source` compiled for this GPU (program `<name>.cu`, the project's compile
 * cache) and loaded as module `name`; the caller disposes the module.
 */
export function loadProbeModule(cuda: Cuda, name: string, source: string): Module {
  const compiled = sharedCompiler().compile({
    source,
    programName: `${name}.cu`,
    arch: cuda.info.arch,
  });
  return cuda.loadModule(compiled.cubin!, name);
}

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
