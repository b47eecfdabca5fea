/**
 * HBM gather probe (GPU machine): how fast a kernel reads scattered 256-byte rows from device
 * memory, against the same kernel reading the same number of rows in address order. It is the
 * physical floor of the sparse attention stage, which reads each selected token's K and V rows
 * (256 bytes each at d 128, fp16) at random pages: the decode benchmark's "% floor" sets that
 * stage against the copy bandwidth, a streaming rate that random rows may not reach
 * (docs/perf-notes.md, "What the selected rows cost in HBM"). The pool is laid out like a K pool
 * (16-token pages, 8 kv heads interleaved per page); the kernel only reads (one 16-byte word a
 * thread is written at the end), so the rates are read rates, and its grid keeps every SM full.
 * Patterns, each reading 1/16 of every head's tokens:
 *   sequential    rows 0, 1, 2, ... (a stream of the same byte count)
 *   per-list      one sorted token list per head, head after head (what sort_selection leaves)
 *   random        the same rows in random order (what the unsorted selection reads)
 * and a device-to-device copy of 1 GiB (the benchmark's copy bandwidth, read + write bytes).
 *
 *   deno run -A bench/hbm_gather_probe.ts [--gib 8]
 */
import { copyBandwidth, medianEventMs } from "../src/runtime/timing.ts";
import {
  GATHER_THREADS as THREADS,
  GATHER_UNROLL as UNROLL,
  loadProbeModule,
  openProbe,
  PROBE_HEADS as HEADS,
  probeRows,
  roundSource,
  ROW_BYTES as ROW,
  ROWS_PER_ROUND as ROWS_PER_BLOCK,
} from "./pcie_rows.ts";

const { gib, cuda } = openProbe("hbm_gather_probe", "device pool");

const source = `${roundSource()}
// Grid-stride over rounds of ${ROWS_PER_BLOCK} entries of the row array; the rows are XORed together
// and one 16-byte word a thread is written at the end.
extern "C" __global__ void __launch_bounds__(${THREADS}) gather_read(
    const u4* __restrict__ pool, const int* __restrict__ rows, int n, u4* __restrict__ sink) {
  u4 acc = u4{0, 0, 0, 0};
  for (int first = blockIdx.x * ${ROWS_PER_BLOCK}; first < n; first += gridDim.x * ${ROWS_PER_BLOCK}) {
    u4 buf[${UNROLL}];
    load_round(pool, rows, first, n, buf);
#pragma unroll
    for (int u = 0; u < ${UNROLL}; u++) {
      acc.x ^= buf[u].x; acc.y ^= buf[u].y; acc.z ^= buf[u].z; acc.w ^= buf[u].w;
    }
  }
  sink[(size_t)blockIdx.x * ${THREADS} + threadIdx.x] = acc;  // keeps the loads
}`;
using module = loadProbeModule(cuda, "hbm_gather_probe", source);
const fn = module.function("gather_read");
using stream = cuda.stream();
const slot = fn.slot(4, [THREADS, 1, 1], 0, stream);

const poolBytes = gib * 2 ** 30;
using pool = cuda.alloc(poolBytes);
pool.fill8(0, stream);
const { rows: perListRows, shuffled } = probeRows(poolBytes);
const n = perListRows.length;
const random = shuffled(perListRows);
const sequential = Int32Array.from({ length: n }, (_, i) => i);
/** Resident blocks a multiprocessor (2,048 threads): every SM full for the whole pass. */
const BLOCKS_PER_SM = 2048 / THREADS;
const blocks = Math.min(Math.ceil(n / ROWS_PER_BLOCK), BLOCKS_PER_SM * cuda.info.multiprocessors);
using rowsBuf = cuda.alloc(n * 4);
using sink = cuda.alloc(blocks * THREADS * 16);
const bytes = n * ROW;

function time(rows: Int32Array): number {
  rowsBuf.upload(rows, stream);
  const v = slot.args;
  v.setBigUint64(0, pool.ptr, true);
  v.setBigUint64(8, rowsBuf.ptr, true);
  v.setInt32(16, n, true);
  v.setBigUint64(24, sink.ptr, true);
  return medianEventMs(cuda, stream, () => slot.launch([blocks, 1, 1]), 15, 3);
}

const rate = (ms: number, b = bytes) => b / (ms * 1e-3) / 1e9;
console.log(
  `hbm gather probe on ${cuda.info.name}: ${gib} GiB device pool, ${n} rows of ${ROW} B ` +
    `(${(bytes / 2 ** 20).toFixed(0)} MiB), ${HEADS} heads x 1/16 of their tokens`,
);
console.log(
  `device-to-device copy of 1 GiB: ${(copyBandwidth(cuda, stream) / 1e9).toFixed(0)} GB/s ` +
    "(read + write bytes: the decode benchmark's floor)",
);
const seq = rate(time(sequential));
console.log(`sequential rows: ${seq.toFixed(0)} GB/s read`);
for (
  const [name, rows] of [["per-list (sorted)", perListRows], ["random order", random]] as const
) {
  const r = rate(time(rows));
  console.log(`${name}: ${r.toFixed(0)} GB/s read, ${(100 * r / seq).toFixed(1)}% of sequential`);
}
