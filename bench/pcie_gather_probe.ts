/**
 * PCIe gather probe (GPU machine): how fast a kernel reads scattered 256-byte rows from mapped
 * pinned host memory, by access order. It decides how Double Sparsity-Offload's gather walks a
 * layer's selected rows (docs/offload.md). Rows are 256 bytes (one K or V row, d 128, fp16);
 * the host pool is laid out like a K pool: 16-token pages, 8 kv heads interleaved per page.
 * Patterns, each gathering the same number of rows (1/16 of each head's tokens):
 *   per-list      one sorted token list per head; blocks (chunk, head), chunk fastest (the
 *                 offload gather of the first version)
 *   head-fastest  the same lists, blocks (head, chunk): the heads' same-rank rows run together
 *   address       the union of the lists sorted by physical row, blocks in that order
 *   random        the same rows in random order
 * and a copy-engine host-to-device copy of 1 GiB for the bus's rate.
 *
 *   deno run -A bench/pcie_gather_probe.ts [--gib 8]
 */
import { medianEventMs } from "../src/runtime/timing.ts";
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

const { gib, cuda } = openProbe("pcie_gather_probe");

const source = `${roundSource()}
extern "C" __global__ void __launch_bounds__(${THREADS}) gather(
    const u4* __restrict__ host, const int* __restrict__ rows, int n, u4* __restrict__ out,
    int head_fastest, int lists, int per_list) {
  // Block -> a round of ${ROWS_PER_BLOCK} entries of the row array.
  int first;
  if (lists > 0) {
    const int chunks = (per_list + ${ROWS_PER_BLOCK} - 1) / ${ROWS_PER_BLOCK};
    const int list = head_fastest ? blockIdx.x % lists : blockIdx.x / chunks;
    const int chunk = head_fastest ? blockIdx.x / lists : blockIdx.x % chunks;
    first = list * per_list + chunk * ${ROWS_PER_BLOCK};
    n = min(n, (list + 1) * per_list);
  } else {
    first = blockIdx.x * ${ROWS_PER_BLOCK};
  }
  u4 buf[${UNROLL}];
  load_round(host, rows, first, n, buf);
  store_round(out, first, n, buf);
}`;
using module = loadProbeModule(cuda, "pcie_gather_probe", source);
const fn = module.function("gather");
using stream = cuda.stream();
const slot = fn.slot(7, [THREADS, 1, 1], 0, stream);

const hostBytes = gib * 2 ** 30;
using host = cuda.allocHostMapped(hostBytes);
const { perList, rows: perListRows, shuffled } = probeRows(hostBytes);
const n = perList * HEADS;
const byAddress = perListRows.slice().sort();
const random = shuffled(byAddress);
using rowsBuf = cuda.alloc(n * 4);
using out = cuda.alloc(n * ROW);
const bytes = n * ROW;

function time(rows: Int32Array, headFastest: boolean, listCount: number): number {
  rowsBuf.upload(rows, stream);
  const v = slot.args;
  v.setBigUint64(0, host.ptr, true);
  v.setBigUint64(8, rowsBuf.ptr, true);
  v.setInt32(16, n, true);
  v.setBigUint64(24, out.ptr, true);
  v.setInt32(32, headFastest ? 1 : 0, true);
  v.setInt32(40, listCount, true);
  v.setInt32(48, perList, true);
  const blocks = listCount > 0
    ? listCount * Math.ceil(perList / ROWS_PER_BLOCK)
    : Math.ceil(n / ROWS_PER_BLOCK);
  return medianEventMs(cuda, stream, () => slot.launch([blocks, 1, 1]), 7, 2);
}

const gbps = (ms: number, b = bytes) => (b / (ms * 1e-3) / 1e9).toFixed(1);
console.log(
  `pcie gather probe on ${cuda.info.name}: ${gib} GiB mapped pinned pool, ${n} rows of ` +
    `${ROW} B (${(bytes / 2 ** 20).toFixed(0)} MiB), ${HEADS} heads x 1/16 of their tokens`,
);
{
  using dev = cuda.alloc(2 ** 30);
  const ms = medianEventMs(cuda, stream, () => host.copyTo(dev.ptr, stream, 2 ** 30), 7, 2);
  console.log(`copy engine H2D 1 GiB: ${gbps(ms, 2 ** 30)} GB/s`);
}
console.log(`per-list (chunk fastest): ${gbps(time(perListRows, false, HEADS))} GB/s`);
console.log(`per-list (head fastest):  ${gbps(time(perListRows, true, HEADS))} GB/s`);
console.log(`address order:            ${gbps(time(byAddress, false, 0))} GB/s`);
console.log(`random order:             ${gbps(time(random, false, 0))} GB/s`);
