/**
 * Token choice on the device (part of `deno task test:gpu`, or alone:
 * `deno run -A tests/gpu/token_choice.ts`):
 *  1. the `choose_tokens` kernel against `chooseToken` (src/decoding/sampling.ts), token for
 *     token, on random logits: batch 1, 3 and 8, vocabulary 256 and 128256, greedy and sampled
 *     sequences mixed in one launch (several temperatures and top-p values incl. 1 and 0.05),
 *     rows with integer ties, a dominant token, -Infinity and NaN entries; the output ids are
 *     poisoned (-1) before every launch;
 *  2. the bundled model: 64 greedy steps of `stepChoose` give exactly the tokens of `step` +
 *     host argmax, and 64 sampled steps (temperature 0.8, top-p 0.9, seeded uniforms) exactly
 *     those of `step` + `chooseToken`; greedy and sampled choices replay one captured graph;
 *  3. `GpuDecoder.stepChooseTogether`: two decoders (one sequence each) stepped together, 32
 *     sampled steps, give exactly the ids each gives stepped alone, and a decoder named twice is
 *     refused.
 * Exits 1 on failure.
 */
import { fileURLToPath } from "node:url";
import { type Cuda, cuda as openCuda } from "../../src/cuda/driver.ts";
import { bundledModelFamily } from "./model_family.ts";
import { GpuDecoder } from "../../src/decoding/gpu_decoder.ts";
import { chooseToken, type SamplingOptions } from "../../src/decoding/sampling.ts";
import { argmax } from "../../src/decoding/cpu_decoder.ts";
import { loadModel } from "../../src/checkpoint/weights.ts";
import { Random } from "./support.ts";

const root = (p: string) => fileURLToPath(new URL(`../../${p}`, import.meta.url));

/** Per-sequence settings; a launch mixes them (sequence b takes SETTINGS[(b + round) % n]). */
const SETTINGS: readonly SamplingOptions[] = [
  { temperature: 0 },
  { temperature: 1, topP: 1 },
  { temperature: 0.7, topP: 0.9 },
  { temperature: 1.5, topP: 0.5 },
  { temperature: 1, topP: 0.05 },
  { temperature: 0.3, topP: 0.99 },
];

/** Random logits of one row; some rounds carry ties, a dominant token or non-finite entries. */
function rowLogits(rng: Random, vocab: number, kind: number): Float32Array {
  const x = rng.floats(vocab, 3);
  switch (kind % 5) {
    case 1: // integer logits: many exact ties, at the maximum and at top-p boundaries
      for (let i = 0; i < vocab; i++) x[i] = Math.round(x[i]);
      break;
    case 2: // one dominant token: every other probability underflows to 0
      x[rng.int(vocab)] = 500;
      break;
    case 3: // -Infinity and NaN entries (never chosen, zero mass)
      for (let i = 0; i < vocab; i += 7) x[i] = i % 2 ? -Infinity : NaN;
      break;
  }
  return x;
}

async function checkKernel(cuda: Cuda, failures: string[]): Promise<void> {
  using stream = cuda.stream();
  using kernels = bundledModelFamily(cuda, "fp16", stream);
  const rng = new Random(20261126);
  let launches = 0, sequences = 0, sampled = 0;
  for (const vocab of [256, 128256]) {
    for (const batch of [1, 3, 8]) {
      for (let round = 0; round < 3; round++) {
        const logits = new Float32Array(batch * vocab);
        const inputs = new Float32Array(3 * batch);
        const settings = Array.from(
          { length: batch },
          (_, b) => SETTINGS[(b + round * batch) % SETTINGS.length],
        );
        const uniforms = Array.from({ length: batch }, () => rng.next());
        settings.forEach((s, b) => {
          logits.set(rowLogits(rng, vocab, b + round), b * vocab);
          inputs[b] = s.temperature ?? 0;
          inputs[batch + b] = s.topP ?? 1;
          inputs[2 * batch + b] = uniforms[b];
        });
        using dLogits = cuda.alloc(logits.byteLength);
        using dInputs = cuda.alloc(inputs.byteLength);
        using dProbs = cuda.alloc(logits.byteLength);
        using dTokens = cuda.alloc(4 * batch);
        dLogits.upload(logits, stream);
        dInputs.upload(inputs, stream);
        dTokens.fill8(0xff, stream); // poison: -1
        dProbs.fill8(0x7f, stream);
        kernels.launch("choose_tokens", [batch, 1, 1], {
          logits: dLogits.ptr,
          vocab,
          temperature: dInputs.ptr,
          topP: dInputs.ptr + BigInt(4 * batch),
          uniform: dInputs.ptr + BigInt(8 * batch),
          probs: dProbs.ptr,
          tokens: dTokens.ptr,
        });
        const got = new Int32Array(batch);
        dTokens.download(got, stream);
        launches++;
        settings.forEach((s, b) => {
          const want = chooseToken(logits, s, uniforms[b], b * vocab, vocab);
          sequences++;
          if ((s.temperature ?? 0) > 0) sampled++;
          if (got[b] !== want) {
            failures.push(
              `kernel: vocab ${vocab} batch ${batch} round ${round} sequence ${b} ` +
                `(T ${s.temperature}, top-p ${s.topP ?? 1}, u ${uniforms[b]}): GPU ${got[b]}, ` +
                `CPU rule ${want}`,
            );
          }
        });
      }
    }
  }
  console.log(
    `token choice kernel vs chooseToken: ${launches} launches, ${sequences} sequences ` +
      `(${sampled} sampled), ${failures.length} differ`,
  );
  await Promise.resolve();
}

async function checkDecoder(cuda: Cuda, failures: string[]): Promise<void> {
  const model = await loadModel(root("examples/models/tiny-code-llama-8k"));
  const V = model.config.vocabSize;
  const text = new TextEncoder().encode(
    Deno.readTextFileSync(root("examples/data/python-heldout.txt")),
  );
  const prompts = [Array.from(text.subarray(0, 300)), Array.from(text.subarray(2000, 2077))];
  const opts = { batch: 2, maxContext: 512, maxPrefillRows: 512 };
  const steps = 64;
  const runs: { name: string; choice: SamplingOptions }[] = [
    { name: "greedy", choice: {} },
    { name: "sampled (T 0.8, top-p 0.9)", choice: { temperature: 0.8, topP: 0.9 } },
  ];
  for (const { name, choice } of runs) {
    using host = await GpuDecoder.create(cuda, model, opts);
    using device = await GpuDecoder.create(cuda, model, opts);
    const first = host.prefill(prompts);
    device.prefill(prompts);
    const rng = new Random(7);
    const pickHost = (logits: Float32Array, u: number[]) =>
      [0, 1].map((b) =>
        (choice.temperature ?? 0) > 0
          ? chooseToken(logits, choice, u[b], b * V, V)
          : argmax(logits, b * V, V)
      );
    let u = [rng.next(), rng.next()];
    let hostNext = pickHost(first, u);
    let deviceNext = hostNext;
    let same = 0, firstDiff = -1;
    for (let i = 0; i < steps; i++) {
      u = [rng.next(), rng.next()];
      const logits = host.step(hostNext);
      const chosen = device.stepChoose(deviceNext, { ...choice, uniforms: u });
      hostNext = pickHost(logits, u);
      deviceNext = Array.from(chosen);
      if (hostNext.every((t, b) => t === deviceNext[b])) same++;
      else if (firstDiff < 0) firstDiff = i;
    }
    console.log(
      `decoder ${name}: stepChoose equals step + host choice in ${same}/${steps} steps ` +
        `(batch 2); graphs captured: ${device.capturedGraphs}`,
    );
    if (same !== steps) failures.push(`decoder ${name}: tokens differ from step ${firstDiff}`);
    // Another choice mode replays the same graph: no new capture.
    const before = device.capturedGraphs;
    device.stepChoose(deviceNext, { temperature: 1.3, topP: 0.3, uniforms: [0.5, 0.25] });
    device.stepChoose(deviceNext, {});
    if (device.capturedGraphs !== before) {
      failures.push(`decoder ${name}: a new choice setting captured a new graph`);
    }
  }
}

/** Two decoders stepped together (each on its stream) choose what each chooses alone. */
async function checkTogether(cuda: Cuda, failures: string[]): Promise<void> {
  const model = await loadModel(root("examples/models/tiny-code-llama-8k"));
  const text = new TextEncoder().encode(
    Deno.readTextFileSync(root("examples/data/python-heldout.txt")),
  );
  const prompts = [Array.from(text.subarray(0, 300)), Array.from(text.subarray(2000, 2077))];
  const opts = { batch: 1, maxContext: 512, maxPrefillRows: 512 };
  const steps = 32, choice = { temperature: 0.8, topP: 0.9 };
  const uniforms = (seed: number) => {
    const rng = new Random(seed);
    return Array.from({ length: steps }, () => [rng.next()]);
  };
  const first = (d: GpuDecoder, p: number[]) => [argmax(d.prefill([p]), 0, model.config.vocabSize)];
  // Alone: each decoder by itself.
  const alone: number[][] = [];
  for (const [i, p] of prompts.entries()) {
    using d = await GpuDecoder.create(cuda, model, opts);
    let next = first(d, p);
    const u = uniforms(11 + i), ids: number[] = [];
    for (let s = 0; s < steps; s++) {
      next = Array.from(d.stepChoose(next, { ...choice, uniforms: u[s] }));
      ids.push(next[0]);
    }
    alone.push(ids);
  }
  // Together: two fresh decoders, one stepChooseTogether per step.
  using a = await GpuDecoder.create(cuda, model, opts);
  using b = await GpuDecoder.create(cuda, model, opts);
  let nextA = first(a, prompts[0]), nextB = first(b, prompts[1]);
  const uA = uniforms(11), uB = uniforms(12);
  let same = 0;
  for (let s = 0; s < steps; s++) {
    const [ia, ib] = GpuDecoder.stepChooseTogether([
      { decoder: a, tokens: nextA, choice: { ...choice, uniforms: uA[s] } },
      { decoder: b, tokens: nextB, choice: { ...choice, uniforms: uB[s] } },
    ]);
    nextA = Array.from(ia);
    nextB = Array.from(ib);
    if (nextA[0] === alone[0][s] && nextB[0] === alone[1][s]) same++;
  }
  console.log(
    `decoder stepChooseTogether: two decoders stepped together choose what each chooses alone ` +
      `in ${same}/${steps} steps (sampled)`,
  );
  if (same !== steps) failures.push("stepChooseTogether: ids differ from the decoders alone");
  try {
    GpuDecoder.stepChooseTogether([{ decoder: a, tokens: nextA }, { decoder: a, tokens: nextA }]);
    failures.push("stepChooseTogether: the same decoder twice was accepted");
  } catch (e) {
    if (!/one step per decoder/.test(String(e))) {
      failures.push(`stepChooseTogether: the same decoder twice: unexpected ${e}`);
    }
  }
}

export async function runTokenChoiceChecks(): Promise<string[]> {
  const cuda = openCuda();
  const failures: string[] = [];
  await checkKernel(cuda, failures);
  await checkDecoder(cuda, failures);
  await checkTogether(cuda, failures);
  return failures;
}

if (import.meta.main) {
  const failures = await runTokenChoiceChecks();
  for (const f of failures) console.log(`FAIL ${f}`);
  console.log(
    failures.length === 0
      ? "token choice checks passed"
      : `${failures.length} token choice checks failed`,
  );
  Deno.exit(failures.length === 0 ? 0 : 1);
}
