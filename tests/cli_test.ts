/**
 * Every command through its front door: `--help` prints usage and exits 0; an unknown flag prints
 * one line naming it, then the usage, and exits 2; a missing input file (or, for the GPU
 * commands on a machine without a GPU, the missing GPU) is one line naming it and exit 1. Never
 * a stack trace unless DS_DEBUG=1. Each command rejects before loading anything heavy.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { candidatesOf } from "../src/cuda/library.ts";
import { DRIVER_SEARCH } from "../src/cuda/driver.ts";
import { runScript, type ScriptResult } from "./helpers.ts";

const driverPresent = candidatesOf(DRIVER_SEARCH).some((p) => p.startsWith("/") && existsSync(p));
const MISSING = "/nonexistent/ds-cli-test";

interface Command {
  readonly script: string;
  /** The name its messages start with. */
  readonly name: string;
  /** Arguments naming a missing input file; undefined for the GPU-only commands. */
  readonly missingFile?: readonly string[];
}

const COMMANDS: readonly Command[] = [
  { script: "src/cli/gen.ts", name: "gen", missingFile: ["--specs", MISSING] },
  { script: "src/cli/calibrate.ts", name: "calibrate", missingFile: ["--model", MISSING] },
  { script: "src/cli/eval.ts", name: "eval", missingFile: ["--model", MISSING] },
  {
    script: "src/cli/eval_retrieval.ts",
    name: "eval:retrieval",
    missingFile: ["--model", MISSING],
  },
  {
    script: "examples/decode.ts",
    name: "decode",
    missingFile: ["--device", "cpu", "--model", MISSING],
  },
  { script: "examples/attention.ts", name: "attention" },
  { script: "bench/main.ts", name: "bench" },
  { script: "bench/e2e.ts", name: "bench:e2e" },
  { script: "bench/prefill.ts", name: "bench:prefill" },
  { script: "bench/offload.ts", name: "bench:offload" },
  { script: "bench/pdl.ts", name: "bench:pdl" },
  { script: "bench/concurrent_halves.ts", name: "bench:halves" },
  { script: "bench/offload_timeline.ts", name: "offload_timeline" },
  { script: "bench/pcie_gather_probe.ts", name: "pcie_gather_probe" },
  { script: "bench/hbm_gather_probe.ts", name: "hbm_gather_probe" },
  { script: "bench/pcie_load_probe.ts", name: "pcie_load_probe" },
  { script: "bench/prefill_kernel.ts", name: "prefill_kernel" },
  { script: "scripts/profile_decode_step.ts", name: "profile_decode_step" },
  { script: "tests/gpu/main.ts", name: "test:gpu" },
  { script: "tests/gpu/predict_query.ts", name: "tests/gpu/predict_query.ts" },
  { script: "src/cli/tune.ts", name: "tune", missingFile: ["--model", MISSING] },
];

/** No stack trace, no "Uncaught", whatever the stream. */
function assertNoTrace(r: ScriptResult, what: string): void {
  const all = r.stdout + r.stderr;
  assert.ok(!/^\s+at .+:\d+:\d+\)?$/m.test(all), `${what}: a stack trace was printed:\n${all}`);
  assert.ok(!/Uncaught|error: Uncaught/.test(all), `${what}: an uncaught error:\n${all}`);
}

/** Runs at most `limit` promises at once (2 cores shared with other work). */
async function inBatches<T>(jobs: (() => Promise<T>)[], limit = 4): Promise<T[]> {
  const out: T[] = [];
  for (let i = 0; i < jobs.length; i += limit) {
    out.push(...await Promise.all(jobs.slice(i, i + limit).map((j) => j())));
  }
  return out;
}

Deno.test("cli: every command prints its usage on --help and exits 0", async () => {
  const results = await inBatches(COMMANDS.map((c) => () => runScript(c.script, ["--help"])));
  results.forEach((r, i) => {
    const what = `${COMMANDS[i].script} --help`;
    assert.equal(r.code, 0, `${what}: exit ${r.code}\n${r.stderr}`);
    assert.match(r.stdout, /--\w/, `${what}: the usage lists flags`);
    assert.equal(r.stderr, "", `${what}: nothing on stderr`);
    assertNoTrace(r, what);
  });
});

Deno.test("cli: an unknown flag is one line naming it, the usage, and exit 2", async () => {
  const results = await inBatches(
    COMMANDS.map((c) => () => runScript(c.script, ["--no-such-flag"])),
  );
  results.forEach((r, i) => {
    const c = COMMANDS[i];
    const what = `${c.script} --no-such-flag`;
    assert.equal(r.code, 2, `${what}: exit ${r.code}\n${r.stderr}`);
    const [first, ...rest] = r.stderr.split("\n");
    assert.equal(first, `${c.name}: Unknown option '--no-such-flag'`, what);
    assert.match(rest.join("\n"), /usage: /, `${what}: the usage follows`);
    assertNoTrace(r, what);
  });
});

Deno.test("cli: malformed values say what is allowed, exit 2 (--temperature -1, --windows 0)", async () => {
  const cases: [string, string[], string][] = [
    [
      "examples/decode.ts",
      ["--temperature", "-1"],
      `decode: --temperature: got "-1"; allowed: a number >= 0`,
    ],
    [
      "examples/decode.ts",
      ["--top-p", "1.5"],
      `decode: --top-p: got "1.5"; allowed: a number > 0 and <= 1`,
    ],
    [
      "examples/decode.ts",
      ["--gemm", "mkl"],
      `decode: --gemm: got "mkl"; allowed: cublas, builtin`,
    ],
    [
      "examples/decode.ts",
      ["--offload-mode", "all"],
      `decode: --offload-mode: got "all"; allowed: selected, reuse, predict, predict-reuse, predict-three-quarters, predict-half, predict-skip-missed, full-kv`,
    ],
    [
      "bench/pcie_gather_probe.ts",
      ["--gib", "0"],
      `pcie_gather_probe: --gib: got "0"; allowed: an integer >= 1`,
    ],
    [
      "bench/hbm_gather_probe.ts",
      ["--gib", "0"],
      `hbm_gather_probe: --gib: got "0"; allowed: an integer >= 1`,
    ],
    [
      "bench/pcie_load_probe.ts",
      ["--gib", "0"],
      `pcie_load_probe: --gib: got "0"; allowed: an integer >= 1`,
    ],
    [
      "bench/offload_timeline.ts",
      ["--prefetch-fraction", "0"],
      `offload_timeline: --prefetch-fraction: got "0"; allowed: a number >= 0.01 and <= 1`,
    ],
    [
      "src/cli/calibrate.ts",
      ["--windows", "0"],
      `calibrate: --windows: got "0"; allowed: an integer >= 1`,
    ],
    [
      "src/cli/eval.ts",
      ["--window-size", "2.5"],
      `eval: --window-size: got "2.5"; allowed: an integer >= 1`,
    ],
    ["src/cli/eval.ts", ["--device", "tpu"], `eval: --device: got "tpu"; allowed: auto, cpu, gpu`],
    ["bench/main.ts", ["--batches", "1,x"], `bench: --batches: got "x"; allowed: an integer >= 1`],
    [
      "bench/pdl.ts",
      ["--lever", "toString"],
      `bench:pdl: --lever: got "toString"; allowed: pdl, persistent`,
    ],
    [
      "bench/concurrent_halves.ts",
      ["--batches", "2,3"],
      "bench:halves: --batches: got 3; allowed: even batch sizes",
    ],
    [
      "bench/pdl.ts",
      ["--shapes", "gpt2"],
      "bench:pdl: --shapes: got gpt2; allowed: llama3-8b, llama2-7b",
    ],
    [
      "bench/offload.ts",
      ["--inputs", "random"],
      `bench:offload: --inputs: got "random"; allowed: greedy, repeat`,
    ],
    [
      "scripts/profile_decode_step.ts",
      ["--batch", "0"],
      `profile_decode_step: --batch: got "0"; allowed: an integer >= 1 and <= 64`,
    ],
    [
      "bench/offload_timeline.ts",
      ["--batch", "0"],
      `offload_timeline: --batch: got "0"; allowed: an integer >= 1 and <= 16`,
    ],
    ["src/cli/tune.ts", ["--grid", "huge"], `tune: --grid: got "huge"; allowed: quick, full`],
    [
      "src/cli/tune.ts",
      ["--shape", "gpt2"],
      `tune: --shape: got "gpt2"; allowed: model, llama2-7b, llama3-8b`,
    ],
    ["src/cli/tune.ts", ["--batch", "0"], `tune: --batch: got "0"; allowed: an integer >= 1`],
    [
      "src/cli/tune.ts",
      ["--context", "8"],
      `tune: --context: got "8"; allowed: an integer >= 16`,
    ],
    [
      "src/cli/tune.ts",
      ["--window-size", "9000"],
      "tune: --window-size: got 9000; allowed: at most 8192 (the model's max_position_embeddings)",
    ],
    [
      "src/cli/eval.ts",
      ["--window-size", "9000", "--device", "cpu"],
      "eval: --window-size: got 9000; allowed: at most 8192 (the model's max_position_embeddings)",
    ],
  ];
  const results = await inBatches(cases.map(([s, a]) => () => runScript(s, a)));
  results.forEach((r, i) => {
    const [script, args, line] = cases[i];
    const what = `${script} ${args.join(" ")}`;
    assert.equal(r.code, 2, `${what}: exit ${r.code}\n${r.stderr}`);
    assert.equal(r.stderr.split("\n")[0], line, what);
    assertNoTrace(r, what);
  });
});

Deno.test("cli: a missing input file is one line naming it, exit 1", async () => {
  const withFile = COMMANDS.filter((c) => c.missingFile);
  const results = await inBatches(
    withFile.map((c) => () => runScript(c.script, [...c.missingFile!])),
  );
  results.forEach((r, i) => {
    const c = withFile[i];
    const what = `${c.script} ${c.missingFile!.join(" ")}`;
    assert.equal(r.code, 1, `${what}: exit ${r.code}\n${r.stdout}\n${r.stderr}`);
    const lines = r.stderr.trimEnd().split("\n");
    assert.equal(lines.length, 1, `${what}: one line on stderr:\n${r.stderr}`);
    assert.ok(lines[0].startsWith(`${c.name}: ${MISSING}`), `${what}: ${lines[0]}`);
    assert.match(lines[0], /No such file or directory/, what);
    assertNoTrace(r, what);
  });
});

Deno.test({
  name: "cli: without a GPU, the GPU commands (and eval --device gpu) say so in one line, exit 1",
  ignore: driverPresent,
  async fn() {
    const cases: [string, string[], string][] = [
      ...COMMANDS.filter((c) => !c.missingFile).map((c) =>
        [c.script, [], c.name] as [string, string[], string]
      ),
      ["src/cli/eval.ts", ["--device", "gpu"], "eval"],
    ];
    const results = await inBatches(cases.map(([s, a]) => () => runScript(s, a)));
    results.forEach((r, i) => {
      const [script, args, name] = cases[i];
      const what = `${script} ${args.join(" ")}`;
      assert.equal(r.code, 1, `${what}: exit ${r.code}\n${r.stdout}\n${r.stderr}`);
      const lines = r.stderr.trimEnd().split("\n");
      assert.equal(lines.length, 1, `${what}: one line on stderr:\n${r.stderr}`);
      assert.match(lines[0], new RegExp(`^${name}: .* needs a CUDA GPU; none is usable here \\(`));
      assert.ok(!/Could not open library:.*Could not open library:/.test(lines[0]), what);
      assert.ok(!/running on the CPU/.test(r.stdout + r.stderr), `${what}: no CPU fallback`);
      assertNoTrace(r, what);
    });
  },
});

Deno.test("cli: DS_DEBUG=1 prints the stack trace of an expected failure", async () => {
  const r = await runScript("src/cli/gen.ts", ["--specs", MISSING], { DS_DEBUG: "1" });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^\s+at .+:\d+:\d+\)?$/m, `a trace under DS_DEBUG=1:\n${r.stderr}`);
});
