import assert from "node:assert/strict";
import { join } from "node:path";
import type { AttentionSpec } from "../src/dsl/mod.ts";
import { type RenderedKernel, renderFamilySource, renderKernels } from "../src/codegen/render.ts";
import {
  type FamilyKernel,
  familySymbol,
  MODEL_KERNELS,
  MODEL_ROW_THREADS,
  UTIL_KERNELS,
} from "../src/codegen/families.ts";
import { loadSpecs } from "../src/cli/specs.ts";
import { DiskCache } from "../src/cuda/compile_cache.ts";
import { type CompiledKernel, KernelCompiler } from "../src/cuda/compiler.ts";
import { CompileError } from "../src/cuda/nvrtc.ts";
import { findPtxas, repoPath } from "./helpers.ts";
import { clean, type KernelStats, parsePtxasInfo, spills } from "../src/cuda/ptxas_report.ts";
import { formatTextTable } from "../src/util/text_table.ts";
import { tuningFor } from "../src/codegen/kernels.ts";
import { checkedSpecs, compilePrefillBody } from "../scripts/compile_check.ts";
import { WGMMA_VARIANTS } from "../src/codegen/prefill_wgmma_variants.ts";

const PTXAS = findPtxas();
const IN_CI = Deno.env.get("CI") === "true";
const ARCH = "sm_90";
/** Kernels allowed spilled bytes under the standalone ptxas (none: every kernel must be clean). */
const SPILL_EXEMPT = new Set<string>();

interface Compiled {
  spec: AttentionSpec;
  kernel: RenderedKernel;
  out: CompiledKernel;
}

Deno.test("nvrtc: the example variants compile cleanly and pass ptxas without spills", async (t) => {
  const cacheDir = await Deno.makeTempDir({ prefix: "ds-nvrtc-test-" });
  const compiler = new KernelCompiler({ cache: new DiskCache(cacheDir) });
  const compiled: Compiled[] = [];
  try {
    await t.step(
      `every kernel of every example spec and the golden spec compiles for ${ARCH} with an empty log`,
      async () => {
        const golden = await loadSpecs(repoPath("tests", "fixtures", "golden"));
        for (const spec of [...await loadSpecs(), ...golden]) {
          for (const kernel of renderKernels(spec)) {
            const out = compiler.compile({
              source: kernel.source,
              programName: kernel.file,
              arch: ARCH,
            });
            const where = `${spec.variant}/${kernel.file}`;
            assert.equal(out.log, "", `${where}: NVRTC log is not empty:\n${out.log}`);
            assert.ok(out.ptx.includes(`.entry ${kernel.symbol}(`), `${where}: no .entry`);
            assert.ok(out.cubin && out.cubin.length > 0, `${where}: no CUBIN`);
            compiled.push({ spec, kernel, out });
          }
        }
        assert.ok(compiled.length >= 30, `only ${compiled.length} kernels`);
      },
    );

    // Per kernel, what NVRTC's own ptxas reports (the CUBIN this NVRTC hands the driver).
    const own = new Map<Compiled, KernelStats>();
    await t.step(`NVRTC ${compiler.nvrtcVersion} -Xptxas -v: no spills, no stack frame`, () => {
      assert.ok(compiled.length > 0, "nothing compiled in the previous step");
      const problems: string[] = [];
      for (const c of compiled) {
        const out = compiler.compile({
          source: c.kernel.source,
          programName: c.kernel.file,
          arch: ARCH,
          extraOptions: ["-Xptxas", "-v"],
        });
        const n = parsePtxasInfo(out.log).get(c.kernel.symbol);
        assert.ok(n, `NVRTC -Xptxas -v reported nothing for ${c.kernel.symbol}:\n${out.log}`);
        own.set(c, n);
        if (!clean(n)) problems.push(`${c.spec.variant}/${c.kernel.id}: ${spills(n)}`);
      }
      assert.deepEqual(problems, [], `spills or a stack frame:\n${problems.join("\n")}`);
    });

    await t.step({
      name: `ptxas -v -arch=${ARCH}: register table; no spills, no stack frame`,
      ignore: PTXAS === undefined && !IN_CI,
      fn: async () => {
        assert.ok(
          PTXAS !== undefined,
          "ptxas not found (looked at $PTXAS, PATH and /usr/local/cuda/bin/ptxas); CI=true " +
            "requires it: install the CUDA ptxas or set PTXAS=/path/to/ptxas",
        );
        assert.ok(compiled.length > 0, "nothing compiled in the first step");
        const version = new TextDecoder().decode(
          (await new Deno.Command(PTXAS, { args: ["--version"] }).output()).stdout,
        ).trim().split("\n").at(-2) ?? "unknown";
        const dir = await Deno.makeTempDir({ prefix: "ds-ptxas-" });
        const rows: string[][] = [];
        const problems: string[] = [];
        try {
          for (const c of compiled) {
            const { spec, kernel, out } = c;
            const ptx = join(dir, `${spec.variant}_${kernel.id}.ptx`);
            await Deno.writeTextFile(ptx, out.ptx);
            const run = await new Deno.Command(PTXAS, {
              args: ["-v", `-arch=${ARCH}`, ptx, "-o", `${ptx}.cubin`],
            }).output();
            const text = new TextDecoder().decode(run.stderr) +
              new TextDecoder().decode(run.stdout);
            assert.equal(run.code, 0, `ptxas failed on ${spec.variant}/${kernel.file}:\n${text}`);
            const s = parsePtxasInfo(text).get(kernel.symbol);
            assert.ok(s, `ptxas reported nothing for ${kernel.symbol}:\n${text}`);
            const n = own.get(c);
            rows.push([
              spec.variant,
              kernel.id,
              String(s.registers),
              String(s.smem),
              spills(s),
              n ? String(n.registers) : "-",
              n ? spills(n) : "-",
            ]);
            if (!clean(s) && !SPILL_EXEMPT.has(kernel.id)) {
              problems.push(`${spec.variant}/${kernel.id}: ${spills(s)}`);
            }
          }
        } finally {
          await Deno.remove(dir, { recursive: true });
        }
        console.log(`ptxas: ${PTXAS} (${version}); "nvrtc": NVRTC ${compiler.nvrtcVersion}'s own`);
        console.log("spills = stack frame / spill stores / spill loads, in bytes");
        console.log(formatTextTable(
          ["variant", "kernel", "regs", "smem", "spills", "nvrtc regs", "nvrtc spills"],
          rows,
        ));
        assert.deepEqual(
          problems,
          [],
          `${PTXAS}: kernels with spills or a stack frame (stack/stores/loads):\n` +
            problems.join("\n"),
        );
      },
    });

    await t.step(
      "a broken generated source fails with the file named and the line quoted",
      async () => {
        const spec = (await loadSpecs()).find((s) =>
          s.variant === "ds_d128_q4_kv2_p16_fp16_r16b16_head"
        );
        assert.ok(spec);
        const dense = renderKernels(spec).find((k) => k.id === "dense")!;
        const lines = dense.source.split("\n");
        const open = lines.findIndex((l, i) =>
          l.endsWith(") {") && lines.slice(0, i).some((p) => p.includes('extern "C" __global__'))
        );
        assert.ok(open > 0, "kernel body not found");
        const injected = "  this_is_not_cuda = 1;";
        lines.splice(open + 1, 0, injected);
        const n = open + 2; // 1-based number of the injected line
        let error: unknown;
        try {
          compiler.compile({ source: lines.join("\n"), programName: dense.file, arch: ARCH });
        } catch (e) {
          error = e;
        }
        assert.ok(error instanceof CompileError, `expected a CompileError, got ${error}`);
        assert.match(error.message, new RegExp(`dense\\.cu\\(${n}\\): error`));
        assert.ok(
          error.message.includes(`  > ${String(n).padStart(5)} | ${injected}`),
          `the injected line is not quoted:\n${error.message}`,
        );
        assert.ok(
          error.message.includes(`    ${String(n - 1).padStart(5)} | ${lines[n - 2]}`),
          `the line before is not quoted as context:\n${error.message}`,
        );
      },
    );
  } finally {
    await Deno.remove(cacheDir, { recursive: true });
  }
});

Deno.test("nvrtc: the model and utility kernel families compile with signatures from their table", () => {
  const compiler = new KernelCompiler();
  // The bundled model's shape and a Llama-3-8B shape, both dtypes: every kernel of the table is
  // an entry of the module with exactly its described parameter count.
  const shapes = [
    { hidden: 512, headDim: 128, numQHeads: 4, numKvHeads: 2, intermediate: 1408 },
    { hidden: 4096, headDim: 128, numQHeads: 32, numKvHeads: 8, intermediate: 14336 },
  ];
  for (const dtype of ["fp16", "bf16"] as const) {
    for (const shape of shapes) {
      const { source } = renderFamilySource("model", dtype, {
        ...shape,
        rowThreads: MODEL_ROW_THREADS,
      });
      checkFamily(compiler, source, `model_${dtype}_${shape.hidden}.cu`, MODEL_KERNELS, dtype);
    }
    const { source } = renderFamilySource("util", dtype);
    checkFamily(compiler, source, `util_${dtype}.cu`, UTIL_KERNELS, dtype);
  }
});

function checkFamily(
  compiler: KernelCompiler,
  source: string,
  name: string,
  table: Record<string, FamilyKernel>,
  dtype: "fp16" | "bf16",
): void {
  const out = compiler.compile({ source, programName: name, arch: ARCH });
  assert.equal(out.log, "", `${name}: NVRTC log is not empty:\n${out.log}`);
  for (const k of Object.values(table)) {
    const symbol = familySymbol(k, dtype);
    const entry = new RegExp(`\\.entry ${symbol}\\(([^)]*)\\)`).exec(out.ptx);
    assert.ok(entry, `${name}: no .entry ${symbol}`);
    const params = entry[1].split(",").filter((p) => p.includes(".param")).length;
    assert.equal(params, k.args.length, `${name}: ${symbol} has ${params} parameters`);
  }
}

/** NVRTC's major version here, or 0 where it cannot be opened (the tests above then fail). */
function nvrtcMajorHere(): number {
  try {
    return new KernelCompiler({ cache: null }).nvrtcMajor;
  } catch {
    return 0;
  }
}
const NVRTC_MAJOR = nvrtcMajorHere();

/**
 * The NVRTC 12 that scripts/fetch-nvrtc.sh unpacks beside NVRTC 11.8: where the NVRTC in use is
 * older, the wgmma bodies are compiled through it in a child process (one process loads one NVRTC).
 */
const NVRTC12 = repoPath(".cache/nvrtc12/usr/lib/x86_64-linux-gnu/libnvrtc.so.12");
const haveNvrtc12 = (() => {
  try {
    return Deno.statSync(NVRTC12).isFile;
  } catch {
    return false;
  }
})();

Deno.test({
  name: NVRTC_MAJOR >= 12
    ? `nvrtc: the wgmma prefill bodies compile for sm_90a (NVRTC ${NVRTC_MAJOR}), no spills, ` +
      "no serialized wgmma"
    : haveNvrtc12 || IN_CI
    ? "nvrtc: the wgmma prefill bodies compile for sm_90a through .cache/nvrtc12 " +
      "(scripts/compile_check.ts), no spills, no serialized wgmma"
    : `nvrtc: the wgmma prefill bodies for sm_90a: NOT CHECKED, NVRTC ${NVRTC_MAJOR} cannot emit ` +
      "wgmma and .cache/nvrtc12 is missing (run scripts/fetch-nvrtc.sh)",
  // Under CI=true a missing NVRTC 12 fails (as a missing NVRTC 11.8 does), never skips.
  ignore: NVRTC_MAJOR < 12 && !haveNvrtc12 && !IN_CI,
  fn: async () => {
    if (NVRTC_MAJOR < 12) {
      assert.ok(haveNvrtc12, `${NVRTC12} is missing: scripts/fetch-nvrtc.sh unpacks it`);
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", repoPath("scripts/compile_check.ts")],
        env: { DS_NVRTC_PATH: NVRTC12 },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
      console.log(text);
      assert.equal(out.code, 0, `scripts/compile_check.ts with NVRTC 12 exited ${out.code}`);
      // Every wgmma variant (src/codegen/prefill_wgmma_variants.ts) of every spec with the body.
      const wgmmaRows = text.split("\n").filter((l) => / wgmma:\S+ +sm_90a .* ok$/.test(l));
      assert.ok(
        wgmmaRows.length >= 8 * WGMMA_VARIANTS.length,
        `only ${wgmmaRows.length} wgmma bodies reported ok`,
      );
      return;
    }
    const compiler = new KernelCompiler({ cache: null });
    const rows: string[][] = [];
    for (const spec of await checkedSpecs()) {
      if (!tuningFor(spec).prefillWgmma) continue;
      const r = compilePrefillBody(compiler, spec, "wgmma");
      assert.ok(r.usesBodyMma, `${spec.variant}: no wgmma.mma_async in the PTX`);
      assert.ok(clean(r.stats), `${spec.variant}: spills or a stack frame ${spills(r.stats)}`);
      assert.ok(!r.serialized, `${spec.variant}: ptxas serialized the wgmmas (C7513)`);
      rows.push([spec.variant, String(r.stats.registers), spills(r.stats)]);
    }
    assert.ok(rows.length >= 8, `only ${rows.length} wgmma bodies`);
    console.log(formatTextTable(["variant", "wgmma regs", "spills"], rows));
  },
});

Deno.test("nvrtc: DS_PREFILL_WGMMA without sm_90a, or for head dim 256, stops with an #error", async () => {
  const compiler = new KernelCompiler({ cache: null });
  const specs = await loadSpecs();
  const expectError = (variant: string, pattern: RegExp) => {
    const spec = specs.find((s) => s.variant === variant);
    assert.ok(spec, variant);
    const kernel = renderKernels(spec).find((k) => k.id === "prefill")!;
    assert.throws(
      () =>
        compiler.compile({
          source: kernel.source,
          programName: kernel.file,
          arch: "sm_90",
          extraOptions: ["-DDS_PREFILL_WGMMA"],
        }),
      (e: unknown) => e instanceof CompileError && pattern.test(e.message),
    );
  };
  expectError(
    "ds_d128_q32_kv8_p16_fp16_r16b8_group",
    /DS_PREFILL_WGMMA needs --gpu-architecture=sm_90a/,
  );
  expectError("ds_d256_q8_kv4_p32_bf16_r16b8_head", /no wgmma prefill body \(head dim 256\)/);
});
