/**
 * Double Sparsity decoding, end to end
 * ====================================
 *
 * This example decodes the same Python prompt twice, greedily: once with ordinary dense
 * attention and once with Double Sparsity, and prints both continuations side by side with
 * their speed and how often they agree.
 *
 *     deno run -A examples/decode.ts
 *     deno run -A examples/decode.ts --variant "head r32 b4 dense 0,1" --tokens 128 --batch 8
 *
 * Double Sparsity (Yang et al., 2024) makes each decode step read only a few "label" channels
 * of every cached key to guess which tokens matter, then runs exact attention over the top
 * 1/16 of them. It needs, per layer and head, a ranking of the head-dimension channels: which
 * ones carry the large |q * k| products. That ranking comes from an offline calibration pass.
 *
 * With a GPU, both decoders run the project's generated CUDA kernels (src/decoding/gpu_decoder.ts).
 * Without one, the same algorithm runs on the CPU reference (src/decoding/cpu_ds_attention.ts),
 * more slowly and with a smaller calibration; the example says which path it takes.
 *
 * Flags: --model DIR, --channels FILE, --variant NAME, --prompt-file FILE, --tokens N,
 * --batch B (the prompt replicated B times; GPU only), --device auto|cpu|gpu,
 * --calibration-windows N, --calibration-window-size T, --temperature T (0 = greedy, the
 * default), --top-p P, --seed S (sampling draws the same numbers for both decoders), --gemm
 * cublas|builtin (the GPU decoders' projections, calibration included: cuBLAS, or the project's
 * own GEMM kernel and no cuBLAS at all, for compute-sanitizer runs; default: $DS_GEMM, else
 * cublas), --no-timing (no graph replays: for sanitizer runs), --offload and --offload-mode
 * selected|reuse|predict|predict-reuse|predict-three-quarters|predict-half|predict-skip-missed|
 * full-kv (K/V in pinned host memory; GPU only; see src/cli/offload_flags.ts), --row-cache GIB
 * (fetched rows kept on the GPU).
 *
 * --retrieval: a line-retrieval document instead (examples/retrieval_demo.ts): --document N (a
 * line of examples/data/line-retrieval.jsonl) or a built one (--context 2048 --depth 0.5); the
 * answers of both decoders and the lines the Double Sparsity steps selected tokens from. Its
 * channels default to the bundled examples/data/<model>-qk-channels.json.
 */
import { existsSync } from "node:fs";
import * as path from "node:path";
import type { AttentionSpec } from "../src/dsl/spec.ts";
import type { Cuda } from "../src/cuda/driver.ts";
import { packageRoot } from "../src/util/package_root.ts";
import { UsageError } from "../src/util/errors.ts";
import { intFlag as checkedInt, numberFlag, openCommand } from "../src/cli/front_door.ts";
import { defaultChannelPath, loadOrCalibrate } from "../src/quality/calibrate_run.ts";
import { parseDeviceChoice, resolveDevice } from "../src/runtime/device.ts";
import { labelChannelsFor } from "../src/quality/channels.ts";
import { CpuDoubleSparsityAttention } from "../src/decoding/cpu_ds_attention.ts";
import { type CpuAttention, CpuDecoder, DenseAttention } from "../src/decoding/cpu_decoder.ts";
import { chooseToken, seededUniform } from "../src/decoding/sampling.ts";
import { type ModelConfig, slidingWindowLimit } from "../src/checkpoint/config.ts";
import { findPreset, presetVariant } from "../src/quality/evaluate.ts";
import { GpuDecoder } from "../src/decoding/gpu_decoder.ts";
import {
  GEMM_ALLOWED,
  type GemmBackend,
  gemmFromEnv,
  isGemmBackend,
} from "../src/runtime/gemm_choice.ts";
import { loadTokenizer } from "../src/checkpoint/tokenizer.ts";
import { type LoadedModel, loadModel } from "../src/checkpoint/weights.ts";
import { runRetrievalDemo } from "./retrieval_demo.ts";
import { Progress } from "../src/cli/progress.ts";
import { OFFLOAD_USAGE, offloadFromFlags } from "../src/cli/offload_flags.ts";

// ---------------------------------------------------------------------------------------------
// 1. Arguments
// ---------------------------------------------------------------------------------------------
// Every flag has a default, so the example runs with none. The variant names are the presets of
// `deno task eval` (the rows of the accuracy table in docs/method.md); the default keeps
// layers 0 and 1 dense and gives every query head 16 label channels at 16 bits.

const USAGE = `deno task decode [options]
  --model DIR                  model directory (default examples/models/tiny-code-llama-8k)
  --channels FILE              channel config (default: the cached calibration)
  --variant NAME               a Double Sparsity preset of deno task eval (default
                               "head r16 b16 dense 0,1")
  --prompt-file FILE           prompt text (default: held-out Python)
  --tokens N                   tokens to decode (default 64 on the GPU, 16 on the CPU)
  --batch B                    the prompt replicated B times (GPU only; default 1)
  --device auto|cpu|gpu        (default auto)
  --calibration-windows N      for a missing calibration
  --calibration-window-size T  for a missing calibration
  --temperature T              0 = greedy (default), else nucleus sampling; T >= 0
  --top-p P                    in (0, 1] (default 1)
  --seed S                     sampling seed, an integer >= 0 (default 1)
  --gemm cublas|builtin        the GPU decoders' GEMM: cuBLAS or the project's own kernel, no
                               cuBLAS at all (default: $DS_GEMM, else cublas)
  --no-timing                  skip the graph replays that time the step and its attention
                               (sanitizer runs: each replay is slow under compute-sanitizer)
${OFFLOAD_USAGE}
                               (full-kv: the dense run; the others: the Double Sparsity run)`;

const { values: args } = openCommand({
  name: "decode",
  usage: USAGE,
  options: {
    model: { type: "string" },
    channels: { type: "string" },
    variant: { type: "string", default: "head r16 b16 dense 0,1" },
    "prompt-file": { type: "string" },
    tokens: { type: "string" },
    batch: { type: "string", default: "1" },
    device: { type: "string", default: "auto" },
    "calibration-windows": { type: "string" },
    "calibration-window-size": { type: "string" },
    temperature: { type: "string", default: "0" },
    "top-p": { type: "string", default: "1" },
    seed: { type: "string", default: "1" },
    gemm: { type: "string" },
    retrieval: { type: "boolean", default: false },
    "no-timing": { type: "boolean", default: false },
    offload: { type: "boolean", default: false },
    "offload-mode": { type: "string" },
    "row-cache": { type: "string" },
    document: { type: "string" },
    context: { type: "string", default: "2048" },
    depth: { type: "string", default: "0.5" },
  },
});

// Next-token choice: greedy by default; with --temperature, nucleus sampling from a seeded
// generator (each decoder gets its own generator with the same seed). `chooseToken` is the rule
// the GPU decoder's `stepChoose` applies on the device, so both paths choose alike.
const sampling = {
  temperature: numberFlag("temperature", args.temperature, { min: 0 }),
  topP: numberFlag("top-p", args["top-p"], { min: 0, minExclusive: true, max: 1 }),
};
const seed = checkedInt("seed", args.seed, { min: 0 });
// The flag, else DS_GEMM (checked here, before anything loads), else the decoder's default.
const gemm = args.gemm === undefined ? gemmFromEnv() : gemmFlag(args.gemm);
const pick = (random: () => number, logits: ArrayLike<number>, start = 0, length?: number) =>
  chooseToken(logits, sampling, random(), start, length);

function gemmFlag(value: string): GemmBackend {
  if (!isGemmBackend(value)) {
    throw new UsageError(`--gemm: got "${value}"; allowed: ${GEMM_ALLOWED}`);
  }
  return value;
}

const intFlag = (flag: string, value: string | undefined): number | undefined =>
  checkedInt(flag, value, { min: 1 });
const root = packageRoot();
const modelDir = args.model ?? path.join(root, "examples", "models", "tiny-code-llama-8k");
const batch = intFlag("batch", args.batch)!;
const offload = offloadFromFlags(args.offload, args["offload-mode"], args["row-cache"]);
const preset = findPreset(args.variant);
if (!preset.selection) {
  throw new UsageError(`--variant: got "dense"; allowed: a Double Sparsity preset`);
}

// ---------------------------------------------------------------------------------------------
// 2. The device
// ---------------------------------------------------------------------------------------------
// `resolveDevice` opens the CUDA driver through Deno FFI. When there is no driver (or no GPU,
// or --device cpu), it returns the CPU and we take the reference path below.

const device = resolveDevice(parseDeviceChoice(args.device));
const onGpu = device.kind === "gpu";
console.log(
  onGpu
    ? `device: ${device.name} (GPU path: generated CUDA kernels)`
    : `device: CPU (${device.reason}); running the CPU reference decoder`,
);
const numTokens = intFlag("tokens", args.tokens) ?? (onGpu ? 64 : 16);

// ---------------------------------------------------------------------------------------------
// 3. The model and its tokenizer
// ---------------------------------------------------------------------------------------------
// The bundled tiny-code-llama-8k is a 4-layer Llama (4 query heads, 2 kv heads, head dim 128)
// trained on Python bytes and line-retrieval documents, 8,192 positions: token id = byte value.

const model = await loadModel(modelDir);
const config = model.config;
const tokenizer = await loadTokenizer(modelDir, config);
console.log(
  `model: ${modelDir} (${config.numLayers} layers, ${config.numHeads} query / ` +
    `${config.numKvHeads} kv heads, head dim ${config.headDim})`,
);

// ---------------------------------------------------------------------------------------------
// 4. Label channels: load the calibration, or run it
// ---------------------------------------------------------------------------------------------
// Calibration feeds a few windows of text through the model densely and ranks, per layer and
// query head, the channels by mean |q_c * k_c|. The result is a channel-config file in the
// authors' / SGLang format, cached under .cache/channels/. On a GPU we run the protocol's
// calibration (16 windows of 2048 bytes); on the CPU that would take minutes, so a first run
// calibrates on 2 windows of 512 bytes instead (unless the protocol's file is already there).

const protocolFile = defaultChannelPath(modelDir);
const bundledChannels = path.join(
  root,
  "examples",
  "data",
  `${path.basename(path.resolve(modelDir))}-qk-channels.json`,
);
let calibrationWindows = intFlag("calibration-windows", args["calibration-windows"]);
let calibrationWindowSize = intFlag("calibration-window-size", args["calibration-window-size"]);
const explicitCalibration = calibrationWindows !== undefined ||
  calibrationWindowSize !== undefined;
// A model with a committed calibration (the bundled one) uses it, unless --channels names a file or
// calibration flags ask for a fresh calibration.
const channelsPath = args.channels ??
  (!explicitCalibration && existsSync(bundledChannels) ? bundledChannels : undefined);
if (!onGpu && !explicitCalibration && !channelsPath && !existsSync(protocolFile)) {
  calibrationWindows = 2;
  calibrationWindowSize = 512;
  console.log(
    "calibration: on the CPU with 2 windows of 512 bytes (the protocol uses 16 x 2048; " +
      "`deno task calibrate` on a GPU makes that file)",
  );
}
const channelFiles = await loadOrCalibrate(model, {
  modelDir,
  channelsPath,
  calibrationWindows,
  calibrationWindowSize,
  device,
  log: (line) => console.log(line),
  gemm,
});

// ---------------------------------------------------------------------------------------------
// 5. The Double Sparsity variant
// ---------------------------------------------------------------------------------------------
// A preset becomes an AttentionSpec through the DSL (`defineAttention`): label channels r,
// label bits, per-head or group selection, a token budget of 1/16 of the context (at least 16),
// and the layers kept dense. `spec.variant` names the generated kernels.

const variant = presetVariant(preset, config, {
  config: channelFiles.config,
  stats: channelFiles.stats,
});
const spec = variant.spec!;
const channels = variant.channels!;
console.log(`variant: "${preset.name}" -> ${spec.variant}, dense layers [${spec.denseLayers}]`);
if (variant.note) console.log(`note: ${variant.note}`);

if (args.retrieval) {
  await runRetrievalDemo({
    model,
    spec,
    channels,
    cuda: onGpu ? device.cuda : undefined,
    file: path.join(root, "examples", "data", "line-retrieval.jsonl"),
    documentLine: intFlag("document", args.document),
    contextBytes: intFlag("context", args.context)!,
    depth: Number(args.depth),
    seed: Number(args.seed),
    gemm,
  });
  Deno.exit(0);
}

// ---------------------------------------------------------------------------------------------
// 6. The prompt
// ---------------------------------------------------------------------------------------------
// By default, about 1500 bytes of held-out Python, cut at a line end so the model continues
// from a clean line. Long enough that the budget (context / 16 = ~94 tokens) is a real choice.

async function readPrompt(): Promise<number[]> {
  if (args["prompt-file"]) return tokenizer.encode(await Deno.readTextFile(args["prompt-file"]));
  const text = await Deno.readTextFile(path.join(root, "examples", "data", "python-heldout.txt"));
  const head = text.slice(0, 1500);
  return tokenizer.encode(head.slice(0, head.lastIndexOf("\n") + 1) || head);
}
let prompt = await readPrompt();
if (prompt.length === 0) throw new UsageError("the prompt is empty");
// The model was trained on positions below max_position_embeddings: keep the prompt's tail. A
// model with a sliding window (Mistral) also needs the whole context inside the window: Double
// Sparsity and the GPU decoder attend to every cached token and refuse a longer one.
const window = slidingWindowLimit(config);
const positions = Math.min(config.maxPositionEmbeddings, window);
const limitWhy = window < config.maxPositionEmbeddings
  ? `a sliding window of ${window} tokens`
  : `${config.maxPositionEmbeddings} positions`;
const room = positions - numTokens;
if (room < 1) {
  throw new UsageError(`--tokens ${numTokens} leaves no room for a prompt in ${limitWhy}`);
}
if (prompt.length > room) {
  console.log(
    `prompt: ${prompt.length} tokens, keeping the last ${room} (the model has ${limitWhy})`,
  );
  prompt = prompt.slice(-room);
}
console.log(
  `prompt: ${prompt.length} tokens; decoding ${numTokens} tokens ` +
    (sampling.temperature > 0
      ? `by sampling (temperature ${sampling.temperature}, top-p ${sampling.topP}, seed ${args.seed})`
      : "greedily"),
);

// ---------------------------------------------------------------------------------------------
// 7. Decoding
// ---------------------------------------------------------------------------------------------
// Both paths return the same record: the generated tokens, the time per decode step, and the
// share of that step spent in attention.

interface DecodeRun {
  tokens: number[];
  prefillMs: number;
  /** Median milliseconds of a decode step (GPU: after the first, which captures the graph). */
  stepMs: number;
  /** Generated tokens per second over all sequences of the batch. */
  tokensPerSecond: number;
  /** Milliseconds of the step on the device alone (GPU: the step's graph replayed), or NaN. */
  stepDeviceMs: number;
  /** Attention milliseconds per step, and how it was measured. */
  attentionMs: number;
  attentionHow: string;
  /** Whether every sequence of the batch produced the same tokens (they share the prompt). */
  batchConsistent: boolean;
}

const median = (xs: number[]) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};
const progress = (label: string, i: number, n: number) => {
  if ((i + 1) % 8 === 0 || i + 1 === n) console.error(`  [${label}] ${i + 1}/${n} tokens`);
};

// 7a. GPU: GpuDecoder runs every layer on the device. `prefill` is dense (causal attention over
// the prompt) and fills the paged K/V and label caches; each `step` appends one token per
// sequence and, in the Double Sparsity decoder, runs label scoring, top-k selection and sparse
// attention in the layers that are not dense. The first step is captured as a CUDA graph.

async function decodeGpu(cuda: Cuda, label: string, dsSpec?: AttentionSpec): Promise<DecodeRun> {
  // --offload: the Double Sparsity run keeps its sparse layers' K/V in host memory; full-KV
  // offload (a baseline that reads every token) applies to the dense run.
  const offloaded = offload && (offload.mode === "full-kv") === !dsSpec ? offload : undefined;
  using decoder = await GpuDecoder.create(cuda, model, {
    batch,
    maxContext: prompt.length + numTokens,
    spec: dsSpec,
    channels: dsSpec ? channels : undefined,
    gemm,
    offload: offloaded,
  });
  if (offloaded) {
    const m = decoder.memory;
    console.log(
      `${label}: offload ${offloaded.mode}${offloaded.reuse ? " + reuse" : ""}${
        offloaded.rowCacheBytes
          ? ` + ${(offloaded.rowCacheBytes / 2 ** 30).toFixed(2)} GiB row cache`
          : ""
      }: K/V ${(m.hostKv / 2 ** 20).toFixed(1)} MiB in pinned host memory; GPU: ${
        (m.cacheDevice / 2 ** 20).toFixed(1)
      } MiB cache, ${(m.offload / 2 ** 20).toFixed(1)} MiB offload buffers`,
    );
  }
  const vocab = config.vocabSize;
  let started = performance.now();
  // The prefill goes in chunks of up to 4096 rows (all sequences together); after each chunk the
  // progress line (at most one per half second, and the last) with the rate and the ETA.
  const prefillBar = new Progress(`${label} prefill`, "tokens");
  const logits = decoder.prefill(
    Array.from({ length: batch }, () => prompt),
    ({ done, total }) => prefillBar.update(done, total),
  );
  const prefillMs = performance.now() - started;
  const generated: number[][] = Array.from({ length: batch }, () => []);
  const stepMs: number[] = [];
  const random = seededUniform(seed);
  // The first token from the prefill's logits on the host; every later one chosen on the device
  // by `stepChoose` (the same rule; only the token ids come back, not the logits).
  let next = Int32Array.from({ length: batch }, (_, b) => pick(random, logits, b * vocab, vocab));
  for (let i = 0; i < numTokens; i++) {
    for (let b = 0; b < batch; b++) generated[b].push(next[b]);
    progress(label, i, numTokens);
    if (i + 1 === numTokens) break;
    const uniforms = Array.from({ length: batch }, () => random());
    started = performance.now();
    next = decoder.stepChoose(next, { ...sampling, uniforms });
    stepMs.push(performance.now() - started);
  }
  const timed = stepMs.length > 1 ? stepMs.slice(1) : stepMs;
  const step = median(timed);
  // The attention share: a decode step is one CUDA graph, so its kernels cannot be timed apart
  // inside it. After the last step the decoder still holds that step's q, lengths and routes:
  // `timeStep` replays the step's graph and `timeAttention` a graph of just every layer's
  // attention kernels (score, select, sparse/dense attention, merge), each timed with CUDA
  // events (median of 20 replays). Neither changes the caches.
  const ran = stepMs.length > 0 && !args["no-timing"];
  return {
    tokens: generated[0],
    prefillMs,
    stepMs: step,
    tokensPerSecond: (batch * 1000) / step,
    stepDeviceMs: ran ? decoder.timeStep(20, true) : NaN,
    attentionMs: ran ? decoder.timeAttention() : NaN,
    attentionHow: "decoder.timeAttention() / decoder.timeStep(): the last step's attention " +
      "kernels and whole step replayed as CUDA graphs, event-timed medians",
    batchConsistent: generated.every((g) => g.every((t, i) => t === generated[0][i])),
  };
}

// 7b. CPU: CpuDecoder with DenseAttention, or with CpuDoubleSparsityAttention, which keeps the
// reference paged K/V and label caches in fp16 and runs the reference Double Sparsity step.
// Its `prefill` flag makes the prompt dense, as on the GPU. A thin wrapper times the attention
// calls, which gives the attention share directly. The CPU path decodes one sequence.

class TimedAttention implements CpuAttention {
  ms = 0;
  constructor(readonly inner: CpuAttention) {}
  attend(
    layer: number,
    q: Float32Array,
    keys: Float32Array,
    values: Float32Array,
    len: number,
    c: ModelConfig,
  ): Float32Array {
    const started = performance.now();
    const out = this.inner.attend(layer, q, keys, values, len, c);
    this.ms += performance.now() - started;
    return out;
  }
}

function decodeCpu(loaded: LoadedModel, label: string, dsSpec?: AttentionSpec): DecodeRun {
  const ds = dsSpec
    ? new CpuDoubleSparsityAttention(
      dsSpec,
      Array.from(
        { length: config.numLayers },
        (_, l) => labelChannelsFor(dsSpec, channels, l),
      ),
      prompt.length + numTokens,
    )
    : undefined;
  const timed = new TimedAttention(ds ?? new DenseAttention());
  const decoder = new CpuDecoder(loaded, { attention: timed });
  const vocab = config.vocabSize;

  // Prefill in chunks of 256 tokens, to show progress on long prompts.
  if (ds) ds.prefill = true;
  let started = performance.now();
  let logits: Float32Array = new Float32Array(0);
  const prefillBar = new Progress(`${label} prefill`, "tokens");
  for (let i = 0; i < prompt.length; i += 256) {
    logits = decoder.forward(prompt.slice(i, i + 256));
    prefillBar.update(Math.min(i + 256, prompt.length), prompt.length);
  }
  const prefillMs = performance.now() - started;
  if (ds) ds.prefill = false;

  let last: Float32Array = logits.subarray(logits.length - vocab);
  const generated: number[] = [];
  const stepMs: number[] = [];
  const attentionMs: number[] = [];
  const random = seededUniform(seed);
  for (let i = 0; i < numTokens; i++) {
    const next = pick(random, last);
    generated.push(next);
    progress(label, i, numTokens);
    if (i + 1 === numTokens) break;
    started = performance.now();
    const attentionBefore = timed.ms;
    last = decoder.forward([next]);
    stepMs.push(performance.now() - started);
    attentionMs.push(timed.ms - attentionBefore);
  }
  const step = median(stepMs);
  return {
    tokens: generated,
    prefillMs,
    stepMs: step,
    tokensPerSecond: 1000 / step,
    stepDeviceMs: NaN,
    attentionMs: median(attentionMs),
    attentionHow: "median wall clock of the attention calls of a decode step",
    batchConsistent: true,
  };
}

if (!onGpu && batch > 1) console.log(`note: the CPU path decodes one sequence (--batch ignored)`);
const runs: { name: string; run: DecodeRun }[] = [];
for (const [name, dsSpec] of [["dense", undefined], ["double sparsity", spec]] as const) {
  console.error(`decoding with ${name} attention ...`);
  const run = device.kind === "gpu"
    ? await decodeGpu(device.cuda, name, dsSpec)
    : decodeCpu(model, name, dsSpec);
  runs.push({ name, run });
}

// ---------------------------------------------------------------------------------------------
// 8. Results
// ---------------------------------------------------------------------------------------------
// Greedy decoding is deterministic, so any difference between the continuations comes from the
// attention: Double Sparsity attends to ~1/16 of the context in the sparse layers. Small models
// on short contexts often diverge after a few dozen tokens and still produce plausible code.

const tail = tokenizer.decode(prompt.slice(-160));
console.log(`\n--- prompt (last 160 tokens) ---\n${tail}`);
for (const { name, run } of runs) {
  console.log(`--- ${name} continuation ---\n${tokenizer.decode(run.tokens)}`);
}
console.log("--- end ---\n");

const [dense, ds] = [runs[0].run, runs[1].run];
const same = dense.tokens.filter((t, i) => t === ds.tokens[i]).length;
const firstDiff = dense.tokens.findIndex((t, i) => t !== ds.tokens[i]);
console.log(
  `agreement: ${same}/${dense.tokens.length} tokens equal (${
    (100 * same / dense.tokens.length).toFixed(0)
  }%); first divergence: ${firstDiff < 0 ? "none" : `token ${firstDiff}`}`,
);
const context = prompt.length + numTokens - 1;
const ms = (x: number) => (Number.isFinite(x) ? x.toFixed(3) : "-");
console.log(
  `\n| attention | step (ms) | step on device (ms) | tokens/s | attention (ms/step) | ` +
    `attention share | prefill (ms) |`,
);
console.log(`|---|---|---|---|---|---|---|`);
for (const { name, run } of runs) {
  // GPU: attention over the step's device time; CPU: over the wall-clock step.
  const share = run.attentionMs / (onGpu ? run.stepDeviceMs : run.stepMs);
  console.log(
    `| ${name} | ${ms(run.stepMs)} | ${ms(run.stepDeviceMs)} | ` +
      `${run.tokensPerSecond.toFixed(1)} | ${ms(run.attentionMs)} | ` +
      `${Number.isFinite(share) ? `${(100 * share).toFixed(0)}%` : "-"} | ` +
      `${run.prefillMs.toFixed(0)} |`,
  );
}
console.log(
  `\n${onGpu ? `${device.name}, batch ${batch}` : "CPU reference, batch 1"}; context up to ` +
    `${context} tokens; step = median wall clock of one decode step` +
    `${onGpu ? " (decoder.step: host sync and logits copy included)" : ""}; ` +
    `attention: ${dense.attentionHow}.`,
);
if (onGpu && Number.isFinite(dense.stepDeviceMs) && Number.isFinite(ds.stepDeviceMs)) {
  console.log(
    `Double Sparsity vs dense: step ${(dense.stepDeviceMs / ds.stepDeviceMs).toFixed(2)}x, ` +
      `attention ${(dense.attentionMs / ds.attentionMs).toFixed(2)}x (device time). At short ` +
      `contexts attention is a small part of a step and Double Sparsity has little to save.`,
  );
}
// Greedy decoding of one prompt replicated over the batch must give every sequence the same
// tokens; sampling draws different numbers for each sequence, so it may not.
if (onGpu && sampling.temperature === 0 && runs.some((r) => !r.run.batchConsistent)) {
  console.log("warning: sequences of the batch (the same prompt) produced different tokens");
}
if (!onGpu) {
  console.log(
    "The CPU path shows the algorithm, not the speed-up: its reference loops favour clarity. " +
      "Run on a GPU (or `deno task bench`) for kernel timings.",
  );
}
