/**
 * GPU check of the model families of issue 12 (fixtures from scripts/hf_reference.py):
 *
 *   bash scripts/gpu-run.sh -- run -A tests/gpu/families.ts [--family NAME]
 *
 * For each family (Llama-3.1 RoPE tied/untied, Qwen2 YaRN with biases, linear, Mistral sliding
 * window), on the checkpoint as stored (bf16/fp16, sharded, tied):
 *  1. dense prefill of the ~200-token prompt: last-position logits vs transformers';
 *  2. dense decode steps feeding transformers' greedy continuation: logits at positions past
 *     original_max_position_embeddings (64) vs transformers';
 *  3. dense decode steps from position 0 (teacher-forced prompt) vs transformers' prefill logits
 *     at its stored positions, both sides of 64;
 *  4. one Double Sparsity configuration (group selection, 16 label channels, budget 64 tokens,
 *     channel file in the authors' format with random rankings): runs, and equals dense at every
 *     position whose context the budget covers.
 * A family whose sliding window is shorter than the prompt must instead be refused by the GPU
 * decoder with an error naming the window (the GPU attention does not apply one); checks 3 and 4
 * then cover the positions inside the window. Exits 1 on any failure.
 *
 * Checks 1-3 print, per check, three relative errors ||got - want|| / ||want|| against
 * transformers' float32 logits: the GPU decoder's; the CPU decoder emulating the GPU's 16-bit
 * storage (CpuDecoderOptions.emulate, fp16 like the GPU here); and transformers' own in the
 * checkpoint's dtype on CUDA (the fixture's native_* fields: what a transformers user gets). The
 * GPU keeps the residual stream in fp32 but stores fp16 at about nine points per layer (norm
 * outputs, q/k/v, P, attention and SwiGLU outputs, see src/decoding/gpu_precision.ts); on these
 * 16-wide models nothing averages the roundings out, so the GPU's error is several fp16
 * roundings, 5e-4 to 1.4e-3 in the emulation, above the bundled model's 2.5e-4.
 * A check passes when the GPU's error is at most max(2.5e-4, HF-native's) + MARGIN, where
 * MARGIN = 2.5e-4 is about one fp16 rounding of the final norm's output (the emulation with only
 * that rounding: 1.5e-4 to 2.8e-4): two 16-bit pipelines with different rounding points differ by
 * about that much check by check. It also fails when the GPU's error is more than twice the
 * emulation's (a kernel worse than its own storage explains). A fixture without native_* logits
 * fails, naming the command that regenerates it.
 */
import { openCommand } from "../../src/cli/front_door.ts";
import { UsageError } from "../../src/util/errors.ts";
import { cuda as openCuda } from "../../src/cuda/driver.ts";
import { GpuDecoder } from "../../src/decoding/gpu_decoder.ts";
import { loadModel } from "../../src/checkpoint/weights.ts";
import { slidingWindowLimit } from "../../src/checkpoint/config.ts";
import { specForModel } from "../../src/quality/model_spec.ts";
import {
  cpuFamilyLogits,
  FAMILY_NAMES,
  familyCheckErrors,
  familyDir,
  type FamilyLogits,
  type FamilyName,
  nativeLogits,
  readFamilyReference,
  REGENERATE_FIXTURES,
  relativeError,
} from "../family_fixtures.ts";
import { Random } from "./support.ts";

/** What the bundled model meets (issue 12); also the bound when transformers' own is lower. */
const BASE_TOLERANCE = 2.5e-4;
/** About one fp16 rounding of the logits' input on these models (see above). */
const MARGIN = 2.5e-4;
/** The GPU may be this many times the CPU emulation of its own storage, no more. */
const EMULATION_FACTOR = 2;
/** Double Sparsity vs dense while the budget covers the context: the same kernels' rounding. */
const TOLERANCE = 1e-3;
const DS_BUDGET = 64;

const { values: args } = openCommand({
  name: "tests/gpu/families.ts",
  usage: `deno run -A tests/gpu/families.ts [--family NAME]
  --family NAME  one of ${FAMILY_NAMES.join(", ")} (default: all)`,
  options: { family: { type: "string" } },
});
const names = args.family ? [args.family as FamilyName] : FAMILY_NAMES;
for (const n of names) {
  if (!FAMILY_NAMES.includes(n)) {
    throw new UsageError(
      `--family: got ${JSON.stringify(n)}; allowed: ${FAMILY_NAMES.join(", ")}`,
    );
  }
}

const cuda = openCuda();
const failures: string[] = [];
const check = (family: string, what: string, err: number) => {
  const ok = err < TOLERANCE;
  console.log(`  ${ok ? "ok  " : "FAIL"} ${what}: relative error ${err.toExponential(2)}`);
  if (!ok) failures.push(`${family}: ${what}: ${err} >= ${TOLERANCE}`);
};

/** Checks 1-3: the GPU's errors against the bound set by transformers' own (see above). */
function compareWithReferences(
  name: string,
  ref: Awaited<ReturnType<typeof readFamilyReference>>,
  model: Awaited<ReturnType<typeof loadModel>>,
  gpu: FamilyLogits,
  covered: number,
  windowed: boolean,
): void {
  const got = familyCheckErrors(ref, gpu);
  const emulated = familyCheckErrors(
    ref,
    cpuFamilyLogits(model, ref, "fp16"),
  );
  const native = ref.native
    ? familyCheckErrors(ref, nativeLogits(ref, ref.native, covered, windowed))
    : undefined;
  if (!ref.native) {
    console.log(`  FAIL the fixture has no HF-native logits; regenerate: ${REGENERATE_FIXTURES}`);
    failures.push(`${name}: no native_* logits in reference.json (run ${REGENERATE_FIXTURES})`);
  }
  got.forEach(({ what, error }, i) => {
    const hf = native?.[i].error;
    const emul = emulated[i].error;
    const bound = Math.max(BASE_TOLERANCE, hf ?? 0) + MARGIN;
    const ok = error <= bound && error <= EMULATION_FACTOR * emul;
    console.log(
      `  ${ok ? "ok  " : "FAIL"} ${what}: GPU vs HF-fp32 ${error.toExponential(2)}, ` +
        `CPU fp16 emulation ${emul.toExponential(2)}, ` +
        `HF-native ${ref.native?.dtype ?? "(absent)"} vs HF-fp32 ${hf?.toExponential(2) ?? "-"}` +
        `, bound ${bound.toExponential(2)}`,
    );
    if (error > bound) failures.push(`${name}: ${what}: ${error} > ${bound}`);
    if (error > EMULATION_FACTOR * emul) {
      failures.push(`${name}: ${what}: ${error} > ${EMULATION_FACTOR} x the emulation's ${emul}`);
    }
  });
}

/** Authors'-format channel file with random rankings for a model shape. */
function randomChannelFile(layers: number, heads: number, kvHeads: number, d: number) {
  const random = new Random(7);
  const json: Record<string, number[][]> = {};
  for (let l = 0; l < layers; l++) {
    for (const [kind, rows] of [["q", heads], ["k", kvHeads], ["qk", heads]] as const) {
      json[`model.layers.${l}.self_attn.${kind}_proj`] = Array.from(
        { length: rows },
        () => random.permutation(d),
      );
    }
  }
  return json;
}

for (const name of names) {
  const ref = await readFamilyReference(name);
  const model = await loadModel(familyDir(name));
  const c = model.config;
  const vocab = c.vocabSize;
  const ids = ref.inputIds;
  const n = ids.length;
  const total = n + ref.greedy.length;
  console.log(
    `${name}: ${c.modelType}, RoPE ${c.ropeScaling?.type ?? "default"}, ${ref.storageDtype}, ` +
      `${n}-token prompt + ${ref.greedy.length} steps`,
  );

  // Prompt positions the teacher-forced checks cover: all, or those inside a sliding window.
  const covered = Math.min(n, slidingWindowLimit(c));
  const windowed = slidingWindowLimit(c) < total;
  if (windowed) {
    // The GPU decoder attends to every cached token: it must refuse, not silently differ.
    try {
      using dec = await GpuDecoder.create(cuda, model, { batch: 1, maxContext: total });
      dec.prefill([ids]);
      failures.push(`${name}: a ${n}-token prompt past the sliding window was not refused`);
      console.log(`  FAIL not refused (window ${c.slidingWindow})`);
    } catch (e) {
      const message = (e as Error).message;
      const ok = /sliding window/.test(message);
      console.log(`  ${ok ? "ok  " : "FAIL"} refused: ${message}`);
      if (!ok) failures.push(`${name}: failed without naming the sliding window: ${message}`);
    }
  }

  // 1 + 2. Prefill, then decode steps feeding transformers' greedy tokens.
  const gpu: FamilyLogits & { rows: Map<number, Float32Array> } = {
    rows: new Map(),
    at: (p) => gpu.rows.get(p),
  };
  if (!windowed) {
    using dec = await GpuDecoder.create(cuda, model, { batch: 1, maxContext: total });
    gpu.prefillLast = dec.prefill([ids]);
    gpu.steps = new Float32Array(ref.greedy.length * vocab);
    ref.greedy.forEach((t, i) => gpu.steps!.set(dec.step([t]), i * vocab));
  }

  // 3 + 4. Teacher-forced decode steps from position 0, dense and Double Sparsity side by side.
  {
    const { spec, channels } = specForModel(
      c,
      randomChannelFile(c.numLayers, c.numHeads, c.numKvHeads, c.headDim),
      { labels: { channels: 16, bits: 16 }, budget: { tokens: DS_BUDGET } },
      "random channel file",
    );
    using dense = await GpuDecoder.create(cuda, model, { batch: 1, maxContext: covered });
    using sparse = await GpuDecoder.create(cuda, model, {
      batch: 1,
      maxContext: covered,
      spec,
      channels: { config: channels },
    });
    let worstCovered = 0, finite = true;
    for (let t = 0; t < covered; t++) {
      const a = dense.step([ids[t]]), b = sparse.step([ids[t]]);
      if (t + 1 <= DS_BUDGET) worstCovered = Math.max(worstCovered, relativeError(b, a));
      finite &&= b.every(Number.isFinite);
      if (ref.logitPositions.includes(t)) gpu.rows.set(t, a);
    }
    compareWithReferences(name, ref, model, gpu, covered, windowed);
    check(
      name,
      `Double Sparsity ${spec.variant} vs dense while the budget covers the context`,
      worstCovered,
    );
    console.log(`  ${finite ? "ok  " : "FAIL"} Double Sparsity logits past the budget are finite`);
    if (!finite) failures.push(`${name}: Double Sparsity produced non-finite logits`);
  }
}

for (const f of failures) console.log(`FAIL ${f}`);
console.log(
  failures.length === 0 ? "family checks passed" : `${failures.length} family checks failed`,
);
Deno.exit(failures.length === 0 ? 0 : 1);
