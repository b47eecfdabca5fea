/**
 * The prefill attention kernel alone (GPU machine): causal attention of a P-token prompt of one
 * sequence over the paged cache, Llama-3-8B heads (32 query, 8 kv, d 128, fp16, 16-token pages),
 * as one chunk and in chunks of `--chunk` rows; CUDA-event medians; TFLOP/s counting QK^T and PV
 * over the causal triangle (the same count as bench/prefill_torch.py's SDPA column).
 *
 * `--tunings 1x64r,2x32` also times other shapes of the kernel (M tiles per warp x keys per
 * stage, `r` = Q fragments in registers), rendered and compiled here, for tuning experiments.
 *
 *   deno run -A bench/prefill_kernel.ts [--prompts 16384,32768] [--chunk 4096] [--repeats 5]
 *                                       [--tunings 1x64r,2x32]
 */
import { intFlag, intListFlag, openCommand } from "../src/cli/front_door.ts";
import { requireGpu } from "../src/runtime/device.ts";
import { defineAttention } from "../src/dsl/spec.ts";
import { Variant } from "../src/runtime/variant.ts";
import { PagedKvCache } from "../src/runtime/caches.ts";
import { PrefillPlan } from "../src/runtime/prefill_plan.ts";
import { prefillFlops } from "../src/runtime/prefill_tiles.ts";
import { UtilKernels } from "../src/runtime/util_kernels.ts";
import { medianEventMs } from "../src/runtime/timing.ts";
import { prefillSharedBytes, type Tuning, tuningFor } from "../src/codegen/kernels.ts";
import { renderKernels } from "../src/codegen/render.ts";
import { sharedCompiler } from "../src/runtime/variant.ts";
import { prefillTiles } from "../src/runtime/prefill_tiles.ts";

const { values: args } = openCommand({
  name: "prefill_kernel",
  usage: `deno run -A bench/prefill_kernel.ts [options]
  --prompts LIST   prompt lengths (default 16384,32768)
  --chunk N        chunk rows (default 4096)
  --repeats N      timed repeats (default 5)
  --tunings LIST   other kernel shapes to time, e.g. 1x64r,2x32`,
  options: {
    prompts: { type: "string", default: "16384,32768" },
    chunk: { type: "string", default: "4096" },
    repeats: { type: "string", default: "5" },
    tunings: { type: "string", default: "" },
  },
});
const prompts = intListFlag("prompts", args.prompts!, { min: 1 });
const chunk = intFlag("chunk", args.chunk!, { min: 1 });
const repeats = intFlag("repeats", args.repeats!, { min: 1 });

const cuda = requireGpu("bench/prefill_kernel.ts");
using stream = cuda.stream();
const spec = defineAttention({
  headDim: 128,
  numQHeads: 32,
  numKvHeads: 8,
  kvDtype: "fp16",
  pageSize: 16,
  labels: { channels: 16, bits: 8 },
  selection: "group",
  budget: { ratio: 1 / 16, min: 16 },
});
using variant = await Variant.load(cuda, spec, { stream });
variant.bindStream(stream);
using util = new UtilKernels(cuda, "fp16");
console.log(`prefill kernel on ${cuda.info.name}; ${spec.variant}`);
for (const P of prompts) {
  using cache = new PagedKvCache(cuda, spec, { numLayers: 1, numSeqs: 1, maxContext: P });
  cache.pages.scrambleFreeList(Math.random);
  cache.pages.grow(0, P);
  cache.syncBlockTables(stream);
  util.fillNormal(cache.layers[0].k, 1, 1, stream);
  util.fillNormal(cache.layers[0].v, 2, 1, stream);
  using q = cuda.alloc(P * spec.numQHeads * spec.headDim * 2);
  using out = cuda.alloc(P * spec.numQHeads * spec.headDim * 2);
  util.fillNormal(q, 3, 1, stream);
  for (const C of [P, chunk].filter((c, i, a) => a.indexOf(c) === i && c <= P)) {
    using plan = new PrefillPlan(cuda, variant, cache, C);
    const ms = medianEventMs(cuda, stream, () => {
      for (let start = 0; start < P; start += C) {
        const rows = Math.min(C, P - start);
        plan.setChunk([{ row0: 0, seq: 0, pos0: start, rows }], stream);
        plan.attention(0, q.ptr + BigInt(start * spec.numQHeads * spec.headDim * 2), out.ptr);
      }
    }, repeats);
    // The causal triangle's work does not depend on how the prompt is chunked.
    const flops = prefillFlops(Int32Array.from([0, 0, 0, P]), spec.numQHeads, spec.headDim);
    console.log(
      `P=${P} chunk=${C}: ${ms.toFixed(3)} ms, ${(flops / (ms / 1e3) / 1e12).toFixed(0)} TFLOP/s`,
    );
  }
}

// ---- tuning experiments: other kernel shapes, same arguments ----
for (const name of args.tunings!.split(",").filter((x) => x)) {
  const m = /^(\d+)x(\d+)(r?)$/.exec(name);
  if (!m) throw new Error(`--tunings: "${name}" is not MxK or MxKr`);
  const base = tuningFor(spec);
  const tuning: Tuning = {
    ...base,
    prefillMTiles: Number(m[1]),
    prefillKeyTile: Number(m[2]),
    prefillQInRegisters: m[3] === "r",
    prefillSharedBytes: prefillSharedBytes(spec.headDim, Number(m[1]), Number(m[2])),
  };
  const src = renderKernels(spec, tuning).find((k) => k.id === "prefill")!;
  const compiled = sharedCompiler().compile({
    source: src.source,
    programName: `prefill-${name}.cu`,
    arch: cuda.info.arch,
  });
  using mod = cuda.loadModule(compiled.cubin!, `prefill-${name}.cu`);
  const fn = mod.function(src.symbol);
  fn.setMaxDynamicShared(tuning.prefillSharedBytes);
  const slot = fn.slot(8, [tuning.prefillThreads, 1, 1], tuning.prefillSharedBytes, stream);
  const info = fn.info();
  const qTile = 16 * tuning.prefillMTiles * (tuning.prefillThreads / 32);
  for (const P of prompts) {
    using cache = new PagedKvCache(cuda, spec, { numLayers: 1, numSeqs: 1, maxContext: P });
    cache.pages.grow(0, P);
    cache.syncBlockTables(stream);
    util.fillNormal(cache.layers[0].k, 1, 1, stream);
    util.fillNormal(cache.layers[0].v, 2, 1, stream);
    using q = cuda.alloc(P * spec.numQHeads * spec.headDim * 2);
    using out = cuda.alloc(P * spec.numQHeads * spec.headDim * 2);
    util.fillNormal(q, 3, 1, stream);
    const tiles = prefillTiles([{ row0: 0, seq: 0, pos0: 0, rows: P }], qTile);
    using tileBuf = cuda.alloc(tiles.byteLength);
    tileBuf.upload(tiles, stream);
    const ms = medianEventMs(
      cuda,
      stream,
      () =>
        variant.launchers.launchPrefill(slot, [tiles.length / 4, spec.numQHeads, 1], {
          q: q.ptr,
          tiles: tileBuf.ptr,
          blockTables: cache.blockTables.ptr,
          maxPages: cache.maxPagesPerSeq,
          kCache: cache.layers[0].k.ptr,
          vCache: cache.layers[0].v.ptr,
          out: out.ptr,
          softmaxScale: 1 / Math.sqrt(spec.headDim),
        }),
      repeats,
    );
    const flops = prefillFlops(tiles, spec.numQHeads, spec.headDim);
    console.log(
      `tuning ${name} (${info.registers} regs, ${info.localBytes} B local): P=${P}: ` +
        `${ms.toFixed(3)} ms, ${(flops / (ms / 1e3) / 1e12).toFixed(0)} TFLOP/s`,
    );
  }
}
