/**
 * PCIe gather probe, part 2 (GPU machine): what a gather of scattered 256-byte rows from mapped
 * pinned host memory costs the kernels running beside it, the question behind the offloaded
 * step's prefetch overlap (docs/perf-notes.md, "What a host-memory gather costs the kernels beside
 * it"). Rows as in bench/pcie_gather_probe.ts: head-fastest sorted lists, 1/16 of each head's
 * tokens, 512 MiB per gather from an 8 GiB pool.
 *  - device streams (a read-only sum over 4 GiB, standing in for a decode GEMM's weight reads):
 *    static grids of 8 (full occupancy), 6 and 2 blocks of 256 threads an SM, and a dynamically
 *    scheduled one (blocks take 64 KiB chunks from a counter);
 *  - transfers beside them: the SM gather (the offload gather's load form) at the offload cap (a
 *    quarter of the SMs) and at 8 blocks, a TMA gather (cp.async.bulk of each row into shared
 *    memory on an mbarrier, one bulk store per round; checked equal to the SM gather), and a
 *    copy-engine copy of the same bytes;
 *  - forms of the SM gather's load (`ld.global.nc.L1::no_allocate`, with `.L2::128B` or
 *    `.L2::256B` prefetch sizes, `ld.global.cs`), each beside the dynamic stream.
 * Each cell: the stream's time beside the transfer over its time alone, and the transfer's rate.
 * Then a latency-bound co-runner (short launches of dependent-load chains, 2 or 1 blocks an SM,
 * like the decode's sparse attention at batch 1): its time beside each transfer over alone.
 *
 *   deno run -A bench/pcie_load_probe.ts [--gib 8]
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
  ROW_CHUNKS as CHUNKS,
  ROWS_PER_ROUND,
} from "./pcie_rows.ts";

const { gib, cuda } = openProbe("pcie_load_probe");

const FORMS: Record<string, string> = {
  "nc.L1::no_allocate": "ld.global.nc.L1::no_allocate.v4.u32",
  "nc.L1::no_allocate.L2::256B": "ld.global.nc.L1::no_allocate.L2::256B.v4.u32",
  "nc.L1::no_allocate.L2::128B": "ld.global.nc.L1::no_allocate.L2::128B.v4.u32",
  "cs": "ld.global.cs.v4.u32",
};

/** Words of the latency-bound kernel's chain: 1 GiB, far beyond the L2. */
const CHASE_WORDS = 2 ** 28;
/** Dependent loads per thread of one latency-bound launch. */
const CHASE_STEPS = 48;
/** Latency-bound launches timed back to back beside one transfer. */
const CHASE_LAUNCHES = 20;

const source = (load: string) =>
  `${roundSource(load)}
// Rounds of ${ROWS_PER_ROUND} entries; round r of list l is item r * lists + l (heads fastest),
// items walked by the blocks in turn.
extern "C" __global__ void __launch_bounds__(${THREADS}) gather(
    const u4* __restrict__ host, const int* __restrict__ rows, int lists, int per_list,
    u4* __restrict__ out) {
  const int rounds = (per_list + ${ROWS_PER_ROUND} - 1) / ${ROWS_PER_ROUND};
  for (int item = blockIdx.x; item < rounds * lists; item += gridDim.x) {
    const int list = item % lists, first = (item / lists) * ${ROWS_PER_ROUND};
    u4 buf[${UNROLL}];
    load_round(host, rows + (size_t)list * per_list, first, per_list, buf);
    store_round(out + (size_t)list * per_list * ${CHUNKS}, first, per_list, buf);
  }
}
// The same gather through the Tensor Memory Accelerator: per round, lanes of warp 0 issue one
// 256-byte bulk copy (cp.async.bulk) per row into shared memory, completing on an mbarrier; thread
// 0 then writes the round's rows (contiguous in out) with one bulk store. TMA_STAGES rounds in
// flight per block. The SM's load pipeline holds none of the host reads.
constexpr int TMA_ROWS = 64, TMA_STAGES = 2;
__device__ __forceinline__ unsigned smem_addr(const void* p) {
  unsigned r;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(r) : "l"(p));
  return r;
}
extern "C" __global__ void __launch_bounds__(64) gather_tma(
    const u4* __restrict__ host, const int* __restrict__ rows, int lists, int per_list,
    u4* __restrict__ out) {
  __shared__ __align__(128) unsigned char s_rows[TMA_STAGES][TMA_ROWS * 256];
  __shared__ __align__(8) unsigned long long s_bar[TMA_STAGES];
  const int rounds = (per_list + TMA_ROWS - 1) / TMA_ROWS;
  if (threadIdx.x < TMA_STAGES) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" :: "r"(smem_addr(&s_bar[threadIdx.x])));
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  unsigned phase = 0;
  for (int item0 = blockIdx.x; item0 < rounds * lists; item0 += gridDim.x * TMA_STAGES) {
    int count[TMA_STAGES], first[TMA_STAGES];
#pragma unroll
    for (int st = 0; st < TMA_STAGES; st++) {
      const int item = item0 + st * gridDim.x;
      count[st] = 0;
      first[st] = 0;
      if (item >= rounds * lists) continue;
      const int list = item % lists, f = (item / lists) * TMA_ROWS;
      first[st] = list * per_list + f;
      count[st] = min(TMA_ROWS, per_list - f);
      if (threadIdx.x == 0) {
        asm volatile("{ .reg .b64 st; mbarrier.arrive.expect_tx.shared::cta.b64 st, [%0], %1; }"
                     :: "r"(smem_addr(&s_bar[st])), "r"(count[st] * 256) : "memory");
      }
      __syncwarp();
      if (threadIdx.x < 32) {
        for (int r = threadIdx.x; r < count[st]; r += 32) {
          const u4* src = host + (size_t)__ldg(rows + first[st] + r) * 16;
          asm volatile(
              "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], 256, [%2];"
              :: "r"(smem_addr(&s_rows[st][r * 256])), "l"(src), "r"(smem_addr(&s_bar[st]))
              : "memory");
        }
      }
    }
    if (threadIdx.x == 0) {
#pragma unroll
      for (int st = 0; st < TMA_STAGES; st++) {
        if (count[st] == 0) continue;
        unsigned done = 0;
        do {
          asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; "
                       "selp.u32 %0, 1, 0, p; }"
                       : "=r"(done) : "r"(smem_addr(&s_bar[st])), "r"(phase) : "memory");
        } while (!done);
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
        asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;"
                     :: "l"(out + (size_t)first[st] * 16), "r"(smem_addr(s_rows[st])),
                        "r"(count[st] * 256) : "memory");
      }
      asm volatile("cp.async.bulk.commit_group;" ::: "memory");
      asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory");
    }
    phase ^= 1;
    __syncthreads();  // the stages' shared rows are free again
  }
  if (threadIdx.x == 0) asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");
}
// A latency-bound kernel standing in for the decode's sparse attention at batch 1 (a short grid
// of a few blocks an SM whose time is its dependent DRAM round trips): each thread follows a
// chain of \`steps\` dependent loads through \`next\` (a full-period permutation of [0, n)).
extern "C" __global__ void __launch_bounds__(128) chase(const unsigned* __restrict__ next,
                                                       int steps, unsigned* out) {
  unsigned i = (blockIdx.x * 128u + threadIdx.x) * 2654435761u;
  for (int s = 0; s < steps; s++) i = __ldg(next + (i & ${CHASE_WORDS - 1}u));
  if (i == 0x12345678u) out[blockIdx.x] = i;
}
// next[i] = (a i + c) mod 2^k with a = 1 (mod 4), c odd: one cycle through every entry, each step
// far from the last (beyond the L2 at the pool's size).
extern "C" __global__ void fill_chase(unsigned* next) {
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < ${CHASE_WORDS}u;
       i += gridDim.x * blockDim.x) {
    next[i] = (i * 1664525u + 1013904223u) & ${CHASE_WORDS - 1}u;
  }
}
// Fills the host pool through the mapping with a pattern of the word index (so a gathered row
// is checkable).
extern "C" __global__ void fill_pattern(unsigned* host, size_t words) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < words;
       i += (size_t)gridDim.x * blockDim.x) {
    host[i] = (unsigned)(i * 2654435761u) ^ (unsigned)(i >> 32);
  }
}
// A read-only stream over device memory: each block sums its share, one word out per block.
extern "C" __global__ void __launch_bounds__(256) stream_read(const u4* __restrict__ src,
                                                               size_t n, unsigned* out) {
  unsigned acc = 0;
  for (size_t i = (size_t)blockIdx.x * 256 + threadIdx.x; i < n; i += (size_t)gridDim.x * 256) {
    const uint4 v = __ldg(reinterpret_cast<const uint4*>(src) + i);
    acc += v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) out[blockIdx.x] = acc;  // keeps the loads
}
// The same read with dynamic scheduling: blocks take 64 KiB chunks from a counter (zeroed before
// each launch), so a block that shares its SM with the gather takes fewer chunks, not the tail.
extern "C" __global__ void __launch_bounds__(256) stream_read_dynamic(const uint4* __restrict__ src,
                                                                       unsigned chunks,
                                                                       unsigned* counter,
                                                                       unsigned* out) {
  __shared__ unsigned s_chunk;
  unsigned acc = 0;
  for (;;) {
    if (threadIdx.x == 0) s_chunk = atomicAdd(counter, 1u);
    __syncthreads();
    const unsigned c = s_chunk;
    __syncthreads();
    if (c >= chunks) break;
    const uint4* p = src + (size_t)c * 4096 + threadIdx.x;
#pragma unroll
    for (int i = 0; i < 16; i++) {
      const uint4 v = __ldg(p + i * 256);
      acc += v.x ^ v.y ^ v.z ^ v.w;
    }
  }
  if (acc == 0x12345678u) out[blockIdx.x] = acc;
}`;

using gatherStream = cuda.stream();
using readStream = cuda.stream();
const hostBytes = gib * 2 ** 30;
using host = cuda.allocHostMapped(hostBytes);
const { perList, rows } = probeRows(hostBytes);
using rowsBuf = cuda.alloc(rows.byteLength);
rowsBuf.upload(rows, gatherStream);
gatherStream.synchronize();
using out = cuda.alloc(rows.length * ROW);
const gatherBytes = rows.length * ROW;
const READ_BYTES = 4 * 2 ** 30;
using readBuf = cuda.alloc(READ_BYTES);
using readOut = cuda.alloc(4 * 4096);
using counter = cuda.alloc(4);
const sms = cuda.info.multiprocessors;
const cap = Math.max(1, Math.floor(sms / 4));
const gbps = (bytes: number, ms: number) => (bytes / (ms * 1e-3) / 1e9).toFixed(1);

console.log(
  `pcie load probe on ${cuda.info.name}: ${gib} GiB mapped pool, ${rows.length} rows of ${ROW} B ` +
    `(${(gatherBytes / 2 ** 20).toFixed(0)} MiB) per gather; device stream ${
      READ_BYTES / 2 ** 30
    } GiB`,
);
{
  using dev = cuda.alloc(2 ** 30);
  const ms = medianEventMs(
    cuda,
    gatherStream,
    () => host.copyTo(dev.ptr, gatherStream, 2 ** 30),
    7,
    2,
  );
  console.log(`copy engine H2D 1 GiB: ${gbps(2 ** 30, ms)} GB/s`);
}
/** One read of a device stream, on the read stream. */
type Read = () => void;
const READS = 6;
/** Per-read time of `read` beside `other` (issued first, on the gather stream), and `other`'s. */
function beside(read: Read, other: () => void): { otherMs: number; readMs: number } {
  using g0 = cuda.event(), g1 = cuda.event(), r0 = cuda.event(), r1 = cuda.event();
  const samples: { otherMs: number; readMs: number }[] = [];
  for (let i = 0; i < 3; i++) {
    g0.record(gatherStream);
    other();
    g1.record(gatherStream);
    r0.record(readStream);
    for (let j = 0; j < READS; j++) read();
    r1.record(readStream);
    gatherStream.synchronize();
    readStream.synchronize();
    samples.push({ otherMs: g1.since(g0), readMs: r1.since(r0) / READS });
  }
  samples.sort((a, b) => a.readMs - b.readMs);
  return samples[1];
}

// Forms of the SM gather's host load, each alone and beside the dynamically scheduled stream.
// The stack unloads every module, also those loaded before a later compile fails.
using loaded = new DisposableStack();
const modules = Object.entries(FORMS).map(([name, load]) => {
  return { name, module: loaded.use(loadProbeModule(cuda, "pcie_load_probe", source(load))) };
});
const main = modules[0].module;
const gatherOf = (module: typeof main, fn: string, threads: number) => {
  const slot = module.function(fn).slot(5, [threads, 1, 1], 0, gatherStream);
  slot.args.setBigUint64(0, host.ptr, true);
  slot.args.setBigUint64(8, rowsBuf.ptr, true);
  slot.args.setInt32(16, HEADS, true);
  slot.args.setInt32(24, perList, true);
  slot.args.setBigUint64(32, out.ptr, true);
  return slot;
};
const readSlot = main.function("stream_read").slot(3, [256, 1, 1], 0, readStream);
readSlot.args.setBigUint64(0, readBuf.ptr, true);
readSlot.args.setBigUint64(8, BigInt(READ_BYTES / 16), true);
readSlot.args.setBigUint64(16, readOut.ptr, true);
const dynSlot = main.function("stream_read_dynamic").slot(4, [256, 1, 1], 0, readStream);
dynSlot.args.setBigUint64(0, readBuf.ptr, true);
dynSlot.args.setUint32(8, READ_BYTES / 65536, true);
dynSlot.args.setBigUint64(16, counter.ptr, true);
dynSlot.args.setBigUint64(24, readOut.ptr, true);
// Device streams: static grids at full occupancy (8 blocks of 256 threads an SM: a gather block
// then displaces one of them into a second wave) and at three quarters (6 an SM: a gather block
// fits beside them, so only sharing the SM slows them), and the dynamically scheduled one.
const streams: [string, Read][] = [
  ["static, 8 blocks/SM", () => readSlot.launch([sms * 8, 1, 1])],
  ["static, 6 blocks/SM", () => readSlot.launch([sms * 6, 1, 1])],
  ["static, 2 blocks/SM", () => readSlot.launch([sms * 2, 1, 1])],
  ["dynamic, 8 blocks/SM", () => {
    counter.fill8(0, readStream);
    dynSlot.launch([sms * 8, 1, 1]);
  }],
];
const alone = streams.map(([, read]) => medianEventMs(cuda, readStream, read, 7, 2));
console.log(
  `device stream alone: ${
    streams.map(([n], i) => `${n} ${gbps(READ_BYTES, alone[i])} GB/s`).join(", ")
  }`,
);

// Transfers: the SM gather (the offload gather's load form) at the offload cap and at 8 blocks,
// the TMA gather at the cap, and a copy-engine copy of the same bytes.
const lsu = gatherOf(main, "gather", THREADS);
const tma = gatherOf(main, "gather_tma", 64);
const fill = main.function("fill_pattern").slot(2, [256, 1, 1], 0, gatherStream);
fill.args.setBigUint64(0, host.ptr, true);
fill.args.setBigUint64(8, BigInt(hostBytes / 4), true);
fill.launch([sms * 8, 1, 1]);
const CHECK = 64 * 2 ** 20;
const expected = new Uint8Array(CHECK), got = new Uint8Array(CHECK);
lsu.launch([cap, 1, 1]);
out.download(expected, gatherStream);
out.fill8(0, gatherStream);
tma.launch([cap, 1, 1]);
out.download(got, gatherStream);
let bad = 0;
for (let i = 0; i < CHECK; i++) if (got[i] !== expected[i]) bad++;
console.log(
  `TMA gather: first 64 MiB of its output ${bad === 0 ? "equal" : `DIFFER in ${bad} bytes`} ` +
    `to the SM gather's`,
);
const transfers: [string, () => void][] = [
  [`SM gather, ${cap} blocks`, () => lsu.launch([cap, 1, 1])],
  ["SM gather, 8 blocks", () => lsu.launch([8, 1, 1])],
  [`TMA gather, ${cap} blocks`, () => tma.launch([cap, 1, 1])],
  ["copy engine", () => host.copyTo(out.ptr, gatherStream, gatherBytes)],
];
for (const [name, run] of transfers) {
  const ms = medianEventMs(cuda, gatherStream, run, 5, 1);
  const cells = streams.map(([sname, read], i) => {
    const b = beside(read, run);
    return `${sname}: ${(b.readMs / alone[i]).toFixed(2)}x, transfer ${
      gbps(gatherBytes, b.otherMs)
    } GB/s`;
  });
  console.log(
    `${name.padEnd(24)} alone ${gbps(gatherBytes, ms)} GB/s; beside ${cells.join("; ")}`,
  );
}

const dynamicAt = streams.findIndex(([n]) => n.startsWith("dynamic"));
const [, dynamic] = streams[dynamicAt];
for (const { name, module } of modules) {
  const g = gatherOf(module, "gather", THREADS);
  const run = () => g.launch([cap, 1, 1]);
  const ms = medianEventMs(cuda, gatherStream, run, 5, 1);
  const b = beside(dynamic, run);
  console.log(
    `load ${name.padEnd(30)} alone ${gbps(gatherBytes, ms)} GB/s at ${cap} blocks; beside the ` +
      `dynamic stream ${(b.readMs / alone[dynamicAt]).toFixed(2)}x, transfer ${
        gbps(gatherBytes, b.otherMs)
      } GB/s`,
  );
}

// A latency-bound co-runner: short launches (2 or 1 blocks of 128 threads an SM, chains of
// dependent DRAM loads) timed back to back while each transfer runs, against the same launches
// alone. The decode's sparse attention beside the prefetch gather took 80-90 us a layer against
// 17-20 us alone (docs/perf-notes.md): a gather holding an SM's load slots for PCIe round trips
// would slow exactly such a kernel, and a TMA gather or the copy engine would not.
{
  using next = cuda.alloc(CHASE_WORDS * 4);
  const fillChase = main.function("fill_chase").slot(1, [256, 1, 1], 0, readStream);
  fillChase.args.setBigUint64(0, next.ptr, true);
  fillChase.launch([sms * 8, 1, 1]);
  const chase = main.function("chase").slot(3, [128, 1, 1], 0, readStream);
  chase.args.setBigUint64(0, next.ptr, true);
  chase.args.setInt32(8, CHASE_STEPS, true);
  chase.args.setBigUint64(16, readOut.ptr, true);
  using c0 = cuda.event(), c1 = cuda.event();
  const chaseMs = (blocksPerSm: number, other?: () => void): number => {
    const samples: number[] = [];
    for (let i = 0; i < 5; i++) {
      other?.();
      c0.record(readStream);
      for (let j = 0; j < CHASE_LAUNCHES; j++) chase.launch([sms * blocksPerSm, 1, 1]);
      c1.record(readStream);
      readStream.synchronize();
      gatherStream.synchronize();
      samples.push(c1.since(c0) / CHASE_LAUNCHES);
    }
    return samples.sort((a, b) => a - b)[2];
  };
  for (const perSm of [2, 1]) {
    const alone = chaseMs(perSm);
    const cells = transfers.map(([name, run]) =>
      `${name} ${(chaseMs(perSm, run) / alone).toFixed(2)}x`
    );
    console.log(
      `latency-bound kernel, ${perSm} block(s) of 128 an SM, ${CHASE_STEPS} dependent loads a ` +
        `thread: alone ${(alone * 1000).toFixed(1)} us a launch; beside ${cells.join(", ")}`,
    );
  }
}
