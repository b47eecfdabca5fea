/**
 * The prefill attention kernel alone (GPU machine): causal attention of a P-token prompt of one
 * sequence over the paged cache, Llama-3-8B heads (32 query, 8 kv, d 128, fp16, 16-token pages),
 * as one chunk and in chunks of `--chunk` rows; CUDA-event medians; TFLOP/s counting QK^T and PV
 * over the causal triangle (the same count as bench/prefill_torch.py's SDPA column).
 *
 * `--bodies mma,wgmma` times each body of the kernel (src/runtime/prefill_body.ts) in the same
 * call; a body asked for by name that cannot be loaded here is an error. `--sdpa` also runs
 * PyTorch's causal SDPA on the same shapes (bench/prefill_torch.py, python3 with torch) and
 * prints each body's throughput as a fraction of it.
 *
 * `--wgmma-variants sync,mbar3,ws3-h` times each named variant of the wgmma body
 * (src/codegen/prefill_wgmma_variants.ts) for every body that resolves to wgmma, in the same call.
 *
 * `--tunings 1x64r,2x32` also times other shapes of the mma.sync body (M tiles per warp x keys
 * per stage, `r` = Q fragments in registers), rendered and compiled here, for tuning experiments.
 *
 *   deno run -A bench/prefill_kernel.ts [--prompts 16384,32768] [--chunk 4096] [--repeats 5]
 *                                       [--bodies mma,wgmma] [--wgmma-variants sync,mbar3]
 *                                       [--sdpa] [--tunings 1x64r,2x32]
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
import {
  prefillQTile,
  prefillSharedBytes,
  type Tuning,
  tuningFor,
} from "../src/codegen/kernels.ts";
import { renderKernels } from "../src/codegen/render.ts";
import { sharedCompiler } from "../src/runtime/variant.ts";
import { prefillTiles } from "../src/runtime/prefill_tiles.ts";
import { parsePrefillBody, prefillRuns } from "../src/runtime/prefill_body.ts";
import {
  DEFAULT_WGMMA_VARIANT,
  parseWgmmaVariant,
  WGMMA_VARIANTS,
} from "../src/codegen/prefill_wgmma_variants.ts";
import { runPythonBench } from "../src/runtime/python_baseline.ts";

const { values: args } = openCommand({
  name: "prefill_kernel",
  usage: `deno run -A bench/prefill_kernel.ts [options]
  --prompts LIST   prompt lengths (default 16384,32768)
  --chunk N        chunk rows (default 4096)
  --repeats N      timed repeats (default 5)
  --bodies LIST    kernel bodies to time, of auto, mma, wgmma (default auto)
  --wgmma-variants LIST  variants of the wgmma body to time (default sync; all: ${
    WGMMA_VARIANTS.join(",")
  })
  --sdpa           also time PyTorch's causal SDPA (python3 bench/prefill_torch.py)
  --tunings LIST   other mma.sync kernel shapes to time, e.g. 1x64r,2x32`,
  options: {
    prompts: { type: "string", default: "16384,32768" },
    chunk: { type: "string", default: "4096" },
    repeats: { type: "string", default: "5" },
    bodies: { type: "string", default: "auto" },
    "wgmma-variants": { type: "string", default: DEFAULT_WGMMA_VARIANT },
    sdpa: { type: "boolean", default: false },
    tunings: { type: "string", default: "" },
  },
});
const prompts = intListFlag("prompts", args.prompts!, { min: 1 });
const chunk = intFlag("chunk", args.chunk!, { min: 1 });
const repeats = intFlag("repeats", args.repeats!, { min: 1 });
const bodies = args.bodies!.split(",").map((b) => parsePrefillBody(b, "--bodies"));
const wgmmaVariants = args["wgmma-variants"]!.split(",").filter((v) => v);
for (const v of wgmmaVariants) parseWgmmaVariant(v, "--wgmma-variants");

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
using util = new UtilKernels(cuda, "fp16");
console.log(`prefill kernel on ${cuda.info.name}; ${spec.variant}`);
const sdpa = args.sdpa ? sdpaTflops(prompts) : new Map<number, number>();
const timed = new Set<string>();
for (const [body, wgmmaVariant] of prefillRuns(bodies, wgmmaVariants)) {
  using variant = await Variant.load(cuda, spec, {
    stream,
    prefillBody: body,
    prefillWgmmaVariant: wgmmaVariant,
  });
  variant.bindStream(stream);
  const name = variant.prefill.wgmmaVariant === null
    ? variant.prefill.body
    : `${variant.prefill.body}:${variant.prefill.wgmmaVariant}`;
  if (timed.has(name)) continue; // e.g. auto -> mma on a card without wgmma, once is enough
  timed.add(name);
  const info = variant.kernels.prefill.info;
  console.log(
    `body ${name} (${body} asked; ${variant.prefill.reason}): ` +
      `${variant.prefill.threads} threads, ${info.registers} regs, ${info.localBytes} B local, ` +
      `${variant.prefill.sharedBytes} B shared`,
  );
  for (const P of prompts) {
    using prompt = randomPrompt(P);
    const { cache, q, out } = prompt;
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
      const tflops = flops / (ms / 1e3) / 1e12;
      const vsSdpa = sdpa.has(P) ? `, ${(tflops / sdpa.get(P)!).toFixed(2)}x SDPA` : "";
      console.log(
        `  ${name} P=${P} chunk=${C}: ${ms.toFixed(3)} ms, ` +
          `${tflops.toFixed(0)} TFLOP/s${vsSdpa}`,
      );
    }
  }
}

/** One sequence of P cached tokens (pages scrambled) with random K, V and queries, and an output. */
function randomPrompt(P: number) {
  const cache = new PagedKvCache(cuda, spec, { numLayers: 1, numSeqs: 1, maxContext: P });
  cache.pages.scrambleFreeList(Math.random);
  cache.pages.grow(0, P);
  cache.syncBlockTables(stream);
  util.fillNormal(cache.layers[0].k, 1, 1, stream);
  util.fillNormal(cache.layers[0].v, 2, 1, stream);
  const q = cuda.alloc(P * spec.numQHeads * spec.headDim * 2);
  const out = cuda.alloc(P * spec.numQHeads * spec.headDim * 2);
  util.fillNormal(q, 3, 1, stream);
  return {
    cache,
    q,
    out,
    [Symbol.dispose]() {
      out.dispose();
      q.dispose();
      cache.dispose();
    },
  };
}

/** PyTorch's causal SDPA (its default backend) per prompt, TFLOP/s; an error when it cannot run. */
function sdpaTflops(ps: readonly number[]): Map<number, number> {
  const r = runPythonBench("prefill_torch.py", {
    model: { heads: spec.numQHeads, kv_heads: spec.numKvHeads, head_dim: spec.headDim },
    jobs: [],
    repeats,
    sdpa_only: ps,
  });
  if (!r.ok) throw new Error(`--sdpa: ${r.why}`);
  return new Map(
    (r.out.sdpa as { prompt: number; default: { tflops?: number } }[])
      .filter((x) => x.default.tflops !== undefined)
      .map((x) => [x.prompt, x.default.tflops!]),
  );
}

// ---- tuning experiments: other mma.sync kernel shapes, same arguments ----
const tuningNames = args.tunings!.split(",").filter((x) => x);
// Only for its launchers (the same for every shape and body).
using mmaVariant = tuningNames.length > 0
  ? await Variant.load(cuda, spec, { stream, prefillBody: "mma" })
  : undefined;
for (const name of tuningNames) {
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
  const qTile = prefillQTile(tuning);
  for (const P of prompts) {
    using prompt = randomPrompt(P);
    const { cache, q, out } = prompt;
    const tiles = prefillTiles([{ row0: 0, seq: 0, pos0: 0, rows: P }], qTile);
    using tileBuf = cuda.alloc(tiles.byteLength);
    tileBuf.upload(tiles, stream);
    const ms = medianEventMs(
      cuda,
      stream,
      () =>
        mmaVariant!.launchers.launchPrefill(slot, [tiles.length / 4, spec.numQHeads, 1], {
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
