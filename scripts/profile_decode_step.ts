/**
 * One eager decode step of the Llama-3-8B-shaped decoder (random weights and caches, as
 * bench/e2e.ts), for a kernel profiler (scripts/ncu_decode_step.sh): the random fills first, then
 * `--steps` steps launched eagerly (no graph), so every kernel of a step is one profiled launch.
 *
 *   deno run -A scripts/profile_decode_step.ts [--batch 8] [--context 32768] [--dense] [--steps 1]
 */
import { intFlag, openCommand } from "../src/cli/front_door.ts";
import { requireGpu } from "../src/runtime/device.ts";
import { GpuDecoder } from "../src/decoding/gpu_decoder.ts";
import { UtilKernels } from "../src/runtime/util_kernels.ts";
import { LLAMA3_8B, LLAMA3_8B_GROUP_SPEC } from "../bench/llama3_shape.ts";
import { fillRandomCache, firstTokens } from "../bench/random_cache.ts";

const { values: args } = openCommand({
  name: "profile_decode_step",
  usage:
    "deno run -A scripts/profile_decode_step.ts [--batch 8] [--context 32768] [--dense] [--steps 1]",
  options: {
    batch: { type: "string", default: "8" },
    context: { type: "string", default: "32768" },
    steps: { type: "string", default: "1" },
    dense: { type: "boolean", default: false },
  },
});
const batch = intFlag("batch", args.batch, { min: 1, max: 64 });
const L = intFlag("context", args.context, { min: 16 });
const steps = intFlag("steps", args.steps, { min: 1, max: 16 });
const cuda = requireGpu("scripts/profile_decode_step.ts");
using util = new UtilKernels(cuda, "fp16");
const spec = args.dense ? undefined : LLAMA3_8B_GROUP_SPEC;
using dec = await GpuDecoder.create(cuda, { config: LLAMA3_8B, seed: 7, scale: 0.02 }, {
  batch,
  maxContext: L + 32,
  spec,
  channels: spec ? { randomSeed: 3 } : undefined,
  maxPrefillRows: batch,
});
fillRandomCache(util, dec.cache, batch, L, dec.stream);
let next = firstTokens(batch);
for (let i = 0; i < steps; i++) next = Array.from(dec.stepChoose(next, {}, false));
console.log(
  `${cuda.info.name}: ${steps} eager step(s), batch ${batch}, context ${L}, ${
    spec ? spec.variant : "dense"
  }`,
);
