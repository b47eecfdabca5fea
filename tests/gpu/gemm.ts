/**
 * The builtin GEMM (`linear` of the model kernel family, the decoder's `gemm: "builtin"`) and the
 * decode GEMM (`decode_linear`, m <= 16), part of `deno task test:gpu` or alone:
 * `deno run -A tests/gpu/gemm.ts [--no-model]`.
 *  1. each kernel against a float64 CPU product of the same dtype-rounded inputs, fp16 and bf16,
 *     over ragged shapes (m 1..300 or 1..16, n and k not multiples of the tile, k below one tile), with
 *     accumulate off (y poisoned with NaN: every element must be overwritten) and on (y holding
 *     known values that must be added to); the floats past y's end must stay untouched. The
 *     tolerance is the fp32 summation bound (k + 2) * 2^-24 * (sum |x w| + |y|) per element;
 *  2. (with the model) the bundled model decoded with `gemm: "builtin"` equals the cuBLAS
 *     decoder: prefill logits of two prompts in chunks of 200 rows, then 32 greedy steps with
 *     equal tokens and close logits;
 *  3. (with the model) a process whose only decoder uses the builtin GEMM never loads libcublas
 *     (its /proc/self/maps after a prefill and a step).
 */
import { fileURLToPath } from "node:url";
import { intFlag, openCommand } from "../../src/cli/front_door.ts";
import { type Cuda, cuda as openCuda, type Stream } from "../../src/cuda/driver.ts";
import type { MODEL_KERNELS } from "../../src/codegen/families.ts";
import type { FamilyModule } from "../../src/runtime/family_module.ts";
import { bundledModelFamily } from "./model_family.ts";
import { GpuDecoder } from "../../src/decoding/gpu_decoder.ts";
import { gemmGrid } from "../../src/decoding/gpu_decoder_layout.ts";
import { argmax } from "../../src/decoding/cpu_decoder.ts";
import { loadModel } from "../../src/checkpoint/weights.ts";
import { decodeArray, encodeArray } from "../../src/util/dtype.ts";
import { type BoundedCase, CaseTally, Random, relativeError } from "./support.ts";

const root = (p: string) => fileURLToPath(new URL(`../../${p}`, import.meta.url));

/** [m, n, k]: decode rows (1..8), prefill rows (up to 300), ragged n and k around the tiles. */
const SHAPES: readonly (readonly [number, number, number])[] = [
  [1, 1, 1],
  [1, 256, 16],
  [2, 1000, 64],
  [3, 65, 31],
  [8, 130, 33],
  [17, 63, 95],
  [64, 64, 32],
  [65, 129, 200],
  [129, 70, 47],
  [300, 257, 130],
  [3, 100, 4099],
];
/**
 * The decode GEMM's [m, n, k]: m 1..16 (one and two batch tiles), n ragged around its 16-output
 * tiles, k multiples of 8 around its 256-wide slices of a block (and one long k).
 */
const DECODE_SHAPES: readonly (readonly [number, number, number])[] = [
  [1, 1, 8],
  [1, 256, 16],
  [2, 1000, 64],
  [3, 65, 32],
  [8, 130, 40],
  [9, 63, 96],
  [5, 33, 8],
  [16, 17, 4104],
  [16, 300, 520],
  [12, 4096, 1032],
];
/** Floats after y's end that the kernel must not touch. */
const GUARD = 64;

/** y (+)= x . w^T for one kernel, shape, dtype and accumulate flag, checked element by element. */
function runGemmCase(
  cuda: Cuda,
  stream: Stream,
  kernels: FamilyModule<typeof MODEL_KERNELS>,
  kernel: "linear" | "decode_linear",
  dtype: "fp16" | "bf16",
  [m, n, k]: readonly [number, number, number],
  accumulate: boolean,
  rng: Random,
): BoundedCase {
  const name = `${kernel} ${dtype} m${m} n${n} k${k} ${accumulate ? "accumulate" : "overwrite"}`;
  const xBits = encodeArray(dtype, rng.floats(m * k));
  const wBits = encodeArray(dtype, rng.floats(n * k, 0.1));
  const xs = decodeArray(dtype, xBits), ws = decodeArray(dtype, wBits);
  const before = new Float32Array(m * n + GUARD);
  if (accumulate) before.set(rng.floats(m * n));
  else before.fill(NaN, 0, m * n);
  before.fill(-12345.5, m * n);
  using x = cuda.alloc(xBits.byteLength);
  using w = cuda.alloc(wBits.byteLength);
  using y = cuda.alloc(before.byteLength);
  x.upload(xBits, stream);
  w.upload(wBits, stream);
  y.upload(before, stream);
  kernels.launch(kernel, gemmGrid(kernel, m, n), {
    x: x.ptr,
    w: w.ptr,
    y: y.ptr,
    m,
    n,
    k,
    accumulate: accumulate ? 1 : 0,
  });
  const got = new Float32Array(before.length);
  y.download(got, stream);

  const failures: string[] = [];
  let bad = 0, worstRatio = 0, firstBad = "";
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let sum = 0, abs = 0;
      for (let t = 0; t < k; t++) {
        const p = xs[i * k + t] * ws[j * k + t];
        sum += p;
        abs += Math.abs(p);
      }
      const prior = accumulate ? before[i * n + j] : 0;
      const want = sum + prior;
      const bound = (k + 2) * 2 ** -24 * (abs + Math.abs(prior)) + 1e-30;
      const err = Math.abs(got[i * n + j] - want);
      const ratio = Number.isFinite(err) ? err / bound : Infinity;
      worstRatio = Math.max(worstRatio, ratio);
      if (!(ratio <= 1)) {
        if (bad++ === 0) firstBad = `y[${i}][${j}] = ${got[i * n + j]}, want ${want}`;
      }
    }
  }
  if (bad > 0) failures.push(`${bad} outputs outside the fp32 bound (first: ${firstBad})`);
  const guardHit = got.subarray(m * n).findIndex((v) => v !== -12345.5);
  if (guardHit >= 0) failures.push(`wrote past y's end (float ${m * n + guardHit})`);
  return { name, worstRatio, failures };
}

/** 1. The kernel over every shape, dtype and accumulate flag. */
function checkKernel(cuda: Cuda, seed: number): boolean {
  using stream = cuda.stream();
  const rng = new Random(seed);
  const tally = new CaseTally("gemm");
  for (const dtype of ["fp16", "bf16"] as const) {
    using kernels = bundledModelFamily(cuda, dtype, stream);
    for (
      const [kernel, shapes] of [["linear", SHAPES], ["decode_linear", DECODE_SHAPES]] as const
    ) {
      for (const shape of shapes) {
        for (const accumulate of [false, true]) {
          tally.add(runGemmCase(cuda, stream, kernels, kernel, dtype, shape, accumulate, rng));
        }
      }
    }
  }
  console.log(
    `${tally.ok ? "PASS" : "FAIL"} gemm kernels: ${tally.cases} cases (linear: m 1..300, ragged ` +
      `n and k; decode_linear: m 1..16, ragged n, k multiples of 8; fp16/bf16, accumulate ` +
      `on/off); worst error ${tally.worst.toFixed(3)} of the fp32 bound; seed ${seed}`,
  );
  return tally.ok;
}

/** 2. The bundled model with the builtin GEMM against the cuBLAS decoder. */
async function checkDecoder(cuda: Cuda): Promise<boolean> {
  const model = await loadModel(root("examples/models/tiny-code-llama-8k"));
  const vocab = model.config.vocabSize;
  const text = new TextEncoder().encode(
    Deno.readTextFileSync(root("examples/data/python-heldout.txt")),
  );
  const prompts = [Array.from(text.subarray(0, 500)), Array.from(text.subarray(5000, 5333))];
  const STEPS = 32;
  const opts = { batch: 2, maxContext: 500 + STEPS + 1, maxPrefillRows: 200 };
  using blas = await GpuDecoder.create(cuda, model, { ...opts, gemm: "cublas" });
  using own = await GpuDecoder.create(cuda, model, { ...opts, gemm: "builtin" });
  const failures: string[] = [];
  if (own.gemm !== "builtin" || blas.gemm !== "cublas") {
    failures.push(`decoders report gemm ${own.gemm} / ${blas.gemm}`);
  }
  let a = blas.prefill(prompts), b = own.prefill(prompts);
  const prefillErr = relativeError(b, a);
  if (!(prefillErr < 2e-3)) failures.push(`prefill logits differ by ${prefillErr}`);
  let worstStep = 0, same = 0, diverged = -1;
  for (let i = 0; i < STEPS; i++) {
    const ta = [0, 1].map((s) => argmax(a.subarray(s * vocab, (s + 1) * vocab)));
    const tb = [0, 1].map((s) => argmax(b.subarray(s * vocab, (s + 1) * vocab)));
    if (ta[0] !== tb[0] || ta[1] !== tb[1]) {
      diverged = i;
      break;
    }
    same++;
    a = blas.step(ta);
    b = own.step(tb);
    worstStep = Math.max(worstStep, relativeError(b, a));
  }
  if (diverged >= 0) failures.push(`greedy tokens differ at step ${diverged}`);
  if (!(worstStep < 2e-3)) failures.push(`step logits differ by up to ${worstStep}`);
  for (const f of failures) console.log(`FAIL gemm decoder: ${f}`);
  console.log(
    `${failures.length === 0 ? "PASS" : "FAIL"} gemm decoder (builtin vs cuBLAS, batch 2, ` +
      `prompts 500 + 333 in chunks of 200): prefill logits ${prefillErr.toExponential(2)}; ` +
      `greedy tokens equal in ${same}/${STEPS} steps, worst step logits ` +
      `${worstStep.toExponential(2)}`,
  );
  return failures.length === 0;
}

const PROBE_FLAG = "--probe-no-cublas";

/** The probe (a child process): a builtin-GEMM decoder runs; prints whether cuBLAS got loaded. */
async function probe(): Promise<void> {
  const model = await loadModel(root("examples/models/tiny-code-llama-8k"));
  using dec = await GpuDecoder.create(openCuda(), model, {
    batch: 1,
    maxContext: 64,
    maxPrefillRows: 64,
    gemm: "builtin",
  });
  dec.prefill([[1, 2, 3, 4, 5]]);
  dec.step([6]);
  const mapped = Deno.readTextFileSync("/proc/self/maps").includes("libcublas");
  console.log(`libcublas mapped: ${mapped}`);
}

/** 3. The probe in its own process (this one has loaded cuBLAS for the comparison). */
async function checkNoCublas(): Promise<boolean> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", fileURLToPath(import.meta.url), PROBE_FLAG],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  const ok = out.success && text.endsWith("libcublas mapped: false");
  console.log(
    `${
      ok ? "PASS" : "FAIL"
    } gemm probe: a process decoding with gemm "builtin" maps no libcublas ` +
      `(child said: ${JSON.stringify(text.split("\n").pop())}${
        out.success ? "" : `; exit ${out.code}: ${new TextDecoder().decode(out.stderr).trim()}`
      })`,
  );
  return ok;
}

/** Every check above; `model: false` skips the two that need the bundled model. */
export async function runGemmChecks(
  cuda: Cuda,
  opts: { seed: number; model: boolean },
): Promise<boolean> {
  let ok = checkKernel(cuda, opts.seed);
  if (opts.model) {
    ok = (await checkDecoder(cuda)) && ok;
    ok = (await checkNoCublas()) && ok;
  }
  return ok;
}

if (import.meta.main) {
  const { values } = openCommand({
    name: "tests/gpu/gemm.ts",
    usage: `deno run -A tests/gpu/gemm.ts [--no-model] [--seed N]
  --no-model  the kernel checks only (no bundled-model decoder, no cuBLAS probe)
  --seed N    an integer >= 0 (default: $DS_SEED, else from the clock)`,
    options: {
      "no-model": { type: "boolean", default: false },
      seed: { type: "string" },
      // The child process of the no-cuBLAS check (checkNoCublas) runs with this flag.
      [PROBE_FLAG.slice(2)]: { type: "boolean", default: false },
    },
  });
  if (values[PROBE_FLAG.slice(2)]) {
    await probe();
  } else {
    const seedText = values.seed ?? Deno.env.get("DS_SEED");
    const seed = seedText === undefined ? Date.now() % 1e9 : intFlag("seed", seedText, { min: 0 });
    const cuda = openCuda();
    console.log(`builtin GEMM checks on ${cuda.info.name}`);
    const ok = await runGemmChecks(cuda, { seed, model: !values["no-model"] });
    Deno.exit(ok ? 0 : 1);
  }
}
