/**
 * GPU reliability checks (GPU machine):
 *   bash scripts/gpu-run.sh -- run -A tests/gpu/reliability.ts [--steps 10000] [--tolerance-mib 8]
 *
 *  (a) out of memory: an allocation of twice the card's memory is answered by OutOfMemoryError
 *      naming the bytes asked for and the free/total memory, and the process stays usable: a
 *      64 MiB buffer is allocated, written and read back afterwards;
 *  (b) a long run: `--steps` decode steps (default 10,000) of the bundled model's GpuDecoder
 *      (Double Sparsity "head r16 b16, dense 0,1", batch 4, contexts cycled by reset + prefill),
 *      through its public API only; the device memory in use is read before, after the first
 *      round, at the end and after dispose, printed, and must not grow by more than the tolerance;
 *  (c) a faulting launch: a child process launches a util kernel on an unmapped address under
 *      DS_SYNC=1; its one-line error must name the kernel (ds_util_fill_normal_fp16).
 * Prints one line per check and "N passed, N failed"; exits 1 on any failure.
 */
import { fileURLToPath } from "node:url";
import { intFlag, numberFlag, openCommand } from "../../src/cli/front_door.ts";
import { requireGpu } from "../../src/runtime/device.ts";
import { type DeviceBuffer, OutOfMemoryError } from "../../src/cuda/driver.ts";
import { UtilKernels } from "../../src/runtime/util_kernels.ts";
import { defineAttention } from "../../src/dsl/spec.ts";
import { GpuDecoder } from "../../src/decoding/gpu_decoder.ts";
import { argmax } from "../../src/decoding/cpu_decoder.ts";
import { loadModel } from "../../src/checkpoint/weights.ts";
import { readChannelConfig } from "../../src/quality/channel_config.ts";

const root = (p: string) => fileURLToPath(new URL(`../../${p}`, import.meta.url));
const MiB = 2 ** 20;
const mib = (bytes: number) => `${(bytes / MiB).toFixed(1)} MiB`;

const { values: args } = openCommand({
  name: "reliability",
  usage: `deno run -A tests/gpu/reliability.ts [--steps N] [--tolerance-mib T]
  --steps N          decode steps of the long run (default 10000)
  --tolerance-mib T  allowed growth of device memory in use (default 8)
  --fault            (child mode) launch a kernel on an unmapped address and report`,
  options: {
    steps: { type: "string", default: "10000" },
    "tolerance-mib": { type: "string", default: "8" },
    fault: { type: "boolean", default: false },
  },
});
const steps = intFlag("steps", args.steps, { min: 1 });
const tolerance = numberFlag("tolerance-mib", args["tolerance-mib"], { min: 0 }) * MiB;

const cuda = requireGpu("tests/gpu/reliability.ts");

if (args.fault) {
  // Child mode for (c): the launch itself throws under DS_SYNC=1 (KernelFaultError naming the
  // kernel); without it the fault would surface at the synchronize below, unnamed.
  const util = new UtilKernels(cuda, "fp16");
  const stream = cuda.stream();
  const unmapped = { ptr: 0x100n, bytes: 64 * MiB } as DeviceBuffer;
  util.fillNormal(unmapped, 1, 1, stream, 32 * MiB);
  stream.synchronize();
  console.log("fault: the launch on an unmapped address did not fail");
  Deno.exit(3);
}

const used = () => {
  const m = cuda.memInfo();
  return m.total - m.free;
};
const results: { name: string; ok: boolean; detail: string }[] = [];
const record = (name: string, ok: boolean, detail: string) => {
  results.push({ name, ok, detail });
  console.log(`[${name}] ${ok ? "ok" : "FAILED"}: ${detail}`);
};
console.log(
  `device: ${cuda.info.name} (${cuda.info.arch}), ${mib(cuda.info.totalMemBytes)}, driver ` +
    `${cuda.info.driverVersion}`,
);

// ---- (a) out of memory, then still usable ----
{
  const request = 2 * cuda.info.totalMemBytes;
  let error: unknown;
  try {
    cuda.alloc(request).dispose();
  } catch (e) {
    error = e;
  }
  const named = error instanceof OutOfMemoryError && error.requestedBytes === request &&
    error.message.includes(`asked for ${request} bytes`) && error.freeBytes !== undefined &&
    error.message.includes(`free of ${error.totalBytes}`);
  record(
    "a: out of memory",
    named,
    error instanceof Error ? `${error.name}: ${error.message}` : `no error (${String(error)})`,
  );
  // Still usable: allocate, write a pattern, read it back.
  let usable = false, detail = "";
  try {
    using stream = cuda.stream();
    using buf = cuda.alloc(64 * MiB);
    const pattern = Uint32Array.from({ length: (64 * MiB) / 4 }, (_, i) => (i * 2654435761) >>> 0);
    buf.upload(pattern, stream);
    const back = new Uint32Array(pattern.length);
    buf.download(back, stream);
    usable = back.every((v, i) => v === pattern[i]);
    detail = `64 MiB allocated, written and read back ${usable ? "identical" : "DIFFERENT"}`;
  } catch (e) {
    detail = `after the OOM: ${e instanceof Error ? e.message : String(e)}`;
  }
  record("a: usable after OOM", usable, detail);
}

// ---- (b) long decode run, device memory flat ----
{
  const model = await loadModel(root("examples/models/tiny-code-llama-8k"));
  const c = model.config;
  const config = await readChannelConfig(
    root("tests/fixtures/tiny-code-llama-8k-python-2x512-qk-channels.json"),
    {
      numLayers: c.numLayers,
      numHeads: c.numHeads,
      numKvHeads: c.numKvHeads,
      headDim: c.headDim,
    },
  );
  const spec = defineAttention({
    headDim: c.headDim,
    numQHeads: c.numHeads,
    numKvHeads: c.numKvHeads,
    kvDtype: "fp16",
    pageSize: 16,
    labels: { channels: 16, bits: 16 },
    selection: "head",
    budget: { ratio: 1 / 16, min: 16 },
    denseLayers: [0, 1],
  });
  const text = Deno.readFileSync(root("examples/data/python-heldout.txt"));
  const batch = 4, maxContext = 1024, promptLength = 256;
  const prompts = Array.from(
    { length: batch },
    (_, b) => Array.from(text.subarray(b * 997, b * 997 + promptLength)),
  );
  const opts = { batch, maxContext, spec, channels: { config } };
  // Warm-up: kernels compiled, modules and cuBLAS loaded once per process, outside the readings.
  {
    using warm = await GpuDecoder.create(cuda, model, opts);
    const logits = warm.prefill(prompts);
    warm.step(
      Array.from({ length: batch }, (_, b) => argmax(logits, b * c.vocabSize, c.vocabSize)),
    );
  }
  cuda.synchronize();
  const before = used();
  const started = performance.now();
  const decoder = await GpuDecoder.create(cuda, model, opts);
  let done = 0, rounds = 0, afterFirstRound = NaN;
  while (done < steps) {
    decoder.reset();
    let logits = decoder.prefill(prompts);
    rounds++;
    for (let t = promptLength; t < maxContext && done < steps; t++, done++) {
      logits = decoder.step(
        Array.from({ length: batch }, (_, b) => argmax(logits, b * c.vocabSize, c.vocabSize)),
      );
    }
    if (rounds === 1) afterFirstRound = used();
  }
  cuda.synchronize();
  const atEnd = used();
  decoder.dispose();
  cuda.synchronize();
  const afterDispose = used();
  const seconds = (performance.now() - started) / 1000;
  const growth = atEnd - afterFirstRound;
  const leftOver = afterDispose - before;
  record(
    "b: memory over a long run",
    growth <= tolerance && leftOver <= tolerance,
    `${done} steps (${rounds} rounds of ${maxContext - promptLength}, batch ${batch}, ` +
      `${spec.variant}) in ${seconds.toFixed(1)} s; device memory in use: before ${mib(before)}, ` +
      `after the first round ${mib(afterFirstRound)}, at the end ${mib(atEnd)} (growth ` +
      `${mib(growth)}), after dispose ${mib(afterDispose)} (left over ${mib(leftOver)}); ` +
      `tolerance ${mib(tolerance)}`,
  );
}

// ---- (c) a faulting launch is named under DS_SYNC=1 ----
{
  const child = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", fileURLToPath(import.meta.url), "--fault"],
    env: { DS_SYNC: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(child.stderr).trim();
  const named = child.code === 1 && /kernel ds_util_fill_normal_fp16 faulted: /.test(stderr) &&
    stderr.split("\n").length === 1;
  record("c: faulting launch named", named, `child exit ${child.code}; stderr: ${stderr}`);
}

const failed = results.filter((r) => !r.ok).length;
console.log(`reliability: ${results.length - failed} passed, ${failed} failed`);
Deno.exit(failed === 0 ? 0 : 1);
