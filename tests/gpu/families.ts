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
 * then cover the positions inside the window. Relative errors
 * are ||got - want|| / ||want||; a check fails above 1e-3. Exits 1 on any failure.
 */
import { parseArgs } from "node:util";
import { cuda as openCuda } from "../../src/cuda/driver.ts";
import { GpuDecoder } from "../../src/decoding/gpu_decoder.ts";
import { loadModel } from "../../src/checkpoint/weights.ts";
import { slidingWindowLimit } from "../../src/checkpoint/config.ts";
import { specForModel } from "../../src/quality/model_spec.ts";
import {
  FAMILY_NAMES,
  familyDir,
  type FamilyName,
  maxRowRelativeError,
  ORIGINAL_MAX_POSITIONS,
  readFamilyReference,
  relativeError,
} from "../family_fixtures.ts";
import { Random } from "./support.ts";

const TOLERANCE = 1e-3;
const DS_BUDGET = 64;

const { values: args } = parseArgs({ args: Deno.args, options: { family: { type: "string" } } });
const names = args.family ? [args.family as FamilyName] : FAMILY_NAMES;
for (const n of names) {
  if (!FAMILY_NAMES.includes(n)) {
    throw new Error(`--family: got ${JSON.stringify(n)}; allowed: ${FAMILY_NAMES.join(", ")}`);
  }
}

const cuda = openCuda();
const failures: string[] = [];
const check = (family: string, what: string, err: number) => {
  const ok = err < TOLERANCE;
  console.log(`  ${ok ? "ok  " : "FAIL"} ${what}: relative error ${err.toExponential(2)}`);
  if (!ok) failures.push(`${family}: ${what}: ${err} >= ${TOLERANCE}`);
};

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
  if (!windowed) {
    using dec = await GpuDecoder.create(cuda, model, { batch: 1, maxContext: total });
    const last = dec.prefill([ids]);
    const lastRow = ref.logitPositions.length - 1;
    check(
      name,
      `prefill logits at position ${n - 1}`,
      relativeError(last, ref.prefillLogits.subarray(lastRow * vocab, (lastRow + 1) * vocab)),
    );
    const steps = new Float32Array(ref.greedy.length * vocab);
    ref.greedy.forEach((t, i) => steps.set(dec.step([t]), i * vocab));
    check(
      name,
      `decode steps at positions ${n}..${total - 1} (worst row)`,
      maxRowRelativeError(steps, ref.stepLogits, vocab),
    );
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
    const inside: number[] = [], insideRef: number[] = [];
    const past: number[] = [], pastRef: number[] = [];
    let worstCovered = 0, finite = true;
    for (let t = 0; t < covered; t++) {
      const a = dense.step([ids[t]]), b = sparse.step([ids[t]]);
      if (t + 1 <= DS_BUDGET) worstCovered = Math.max(worstCovered, relativeError(b, a));
      finite &&= b.every(Number.isFinite);
      const row = ref.logitPositions.indexOf(t);
      if (row >= 0) {
        const want = ref.prefillLogits.subarray(row * vocab, (row + 1) * vocab);
        (t < ORIGINAL_MAX_POSITIONS ? inside : past).push(...a);
        (t < ORIGINAL_MAX_POSITIONS ? insideRef : pastRef).push(...want);
      }
    }
    check(
      name,
      `dense steps at positions < ${ORIGINAL_MAX_POSITIONS}`,
      relativeError(inside, insideRef),
    );
    check(
      name,
      `dense steps at positions >= ${ORIGINAL_MAX_POSITIONS}`,
      relativeError(past, pastRef),
    );
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
