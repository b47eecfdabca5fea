/**
 * Compiles both bodies of the prefill kernel of every example spec (and the golden spec) to CUBIN
 * and prints NVRTC's own ptxas report: registers, stack frame and spills per body, and whether
 * ptxas had to serialize the wgmma instructions (a register of one in flight written). The
 * mma.sync body compiles for sm_90 with any NVRTC; the wgmma body needs NVRTC 12 or newer
 * (sm_90a). Exits 1 on a spill, a stack frame, serialized wgmmas or a compile error, and 2 when
 * the NVRTC in use cannot compile the wgmma body (it says which NVRTC it found and how to point
 * at another).
 *
 *   DS_NVRTC_PATH=/path/to/libnvrtc.so.12 ./ds run -A scripts/compile_check.ts
 *
 * NVRTC dlopens its builtins library from the same directory (src/cuda/nvrtc.ts preloads it).
 */
import type { AttentionSpec } from "../src/dsl/spec.ts";
import { renderKernels } from "../src/codegen/render.ts";
import { tuningFor } from "../src/codegen/kernels.ts";
import {
  DEFAULT_WGMMA_VARIANT,
  WGMMA_VARIANTS,
  withWgmmaVariant,
} from "../src/codegen/prefill_wgmma_variants.ts";
import { KernelCompiler } from "../src/cuda/compiler.ts";
import { clean, type KernelStats, parsePtxasInfo, spills } from "../src/cuda/ptxas_report.ts";
import { choosePrefillBody, type PrefillBody } from "../src/runtime/prefill_body.ts";
import { loadSpecs } from "../src/cli/specs.ts";
import { packageRoot } from "../src/util/package_root.ts";
import { formatTextTable } from "../src/util/text_table.ts";
import { openCommand } from "../src/cli/front_door.ts";
import { join } from "node:path";

/** One compiled body: what ptxas reported and whether the PTX holds the body's instruction. */
export interface BodyReport {
  readonly variant: string;
  /** The body, with the wgmma variant after a colon (e.g. `wgmma:mbar3-h`). */
  readonly body: string;
  readonly threads: number;
  /** ptxas' performance warnings (C75xx: serialized wgmma, setmaxnreg ignored, ...). */
  readonly warnings: readonly string[];
  readonly arch: string;
  readonly stats: KernelStats;
  /** The PTX uses the body's MMA instruction (wgmma.mma_async or mma.sync). */
  readonly usesBodyMma: boolean;
  /**
   * ptxas serialized the wgmmas (C7513: a register of an in-flight wgmma written by another
   * instruction), which throws away the overlap the body is built for.
   */
  readonly serialized: boolean;
}

/**
 * Compiles the prefill kernel of `spec` with the options the runtime uses for `body` on an sm_90
 * device (src/runtime/prefill_body.ts), with `-Xptxas -v`.
 */
export function compilePrefillBody(
  compiler: KernelCompiler,
  spec: AttentionSpec,
  body: PrefillBody,
  wgmmaVariant: string = DEFAULT_WGMMA_VARIANT,
): BodyReport {
  const tuning = body === "wgmma"
    ? withWgmmaVariant(tuningFor(spec), spec, wgmmaVariant, "--wgmma-variants")
    : tuningFor(spec);
  const plan = choosePrefillBody(body, tuning, {
    nvrtcMajor: compiler.nvrtcMajor,
    arch: "sm_90",
  });
  const kernel = renderKernels(spec, tuning).find((k) => k.id === "prefill")!;
  const out = compiler.compile({
    source: kernel.source,
    programName: `${spec.variant}/${kernel.file}`,
    arch: plan.arch,
    extraOptions: [...plan.extraOptions, "-Xptxas", "-v"],
  });
  const stats = parsePtxasInfo(out.log).get(kernel.symbol);
  if (!stats) throw new Error(`${spec.variant}: ptxas reported nothing:\n${out.log}`);
  const mma = body === "wgmma" ? "wgmma.mma_async" : "mma.sync.aligned.m16n8k16";
  return {
    variant: spec.variant,
    body: plan.wgmmaVariant === null ? body : `${body}:${plan.wgmmaVariant}`,
    threads: plan.threads,
    warnings: out.log.split("\n").filter((l) => /Performance Loss|setmaxnreg|C75\d\d/.test(l)),
    arch: plan.arch,
    stats,
    usesBodyMma: out.ptx.includes(mma),
    serialized: /wgmma\.mma_async instructions are serialized/.test(out.log),
  };
}

/** The example specs and the golden spec. */
export async function checkedSpecs(): Promise<AttentionSpec[]> {
  const golden = await loadSpecs(join(packageRoot(), "tests", "fixtures", "golden"));
  return [...await loadSpecs(), ...golden];
}

if (import.meta.main) {
  const { values } = openCommand({
    name: "scripts/compile_check.ts",
    usage: `DS_NVRTC_PATH=/path/to/libnvrtc.so.12 deno run -A scripts/compile_check.ts [options]
  --wgmma-variants LIST   wgmma body variants to compile (default ${WGMMA_VARIANTS.join(",")})`,
    options: { "wgmma-variants": { type: "string", default: WGMMA_VARIANTS.join(",") } },
  });
  const variants = values["wgmma-variants"]!.split(",").filter((x) => x);
  const compiler = new KernelCompiler({ cache: null });
  console.log(`NVRTC ${compiler.nvrtcVersion}`);
  const rows: string[][] = [];
  let failed = false;
  for (const spec of await checkedSpecs()) {
    const runs: [PrefillBody, string][] = [["mma", DEFAULT_WGMMA_VARIANT]];
    if (tuningFor(spec).prefillWgmma && compiler.nvrtcMajor >= 12) {
      for (const v of variants) runs.push(["wgmma", v]);
    }
    for (const [body, variant] of runs) {
      const r = compilePrefillBody(compiler, spec, body, variant);
      for (const w of r.warnings) console.log(`${r.variant} ${r.body}: ${w.trim()}`);
      const ok = clean(r.stats) && r.usesBodyMma && !r.serialized && r.warnings.length === 0;
      failed ||= !ok;
      rows.push([
        r.variant,
        r.body,
        r.arch,
        String(r.threads),
        String(r.stats.registers),
        spills(r.stats),
        ok
          ? "ok"
          : !r.usesBodyMma
          ? "NO MMA"
          : r.serialized
          ? "WGMMA SERIALIZED"
          : r.warnings.length > 0
          ? "PTXAS WARNING"
          : "SPILLS",
      ]);
    }
  }
  console.log("spills = stack frame / spill stores / spill loads, in bytes");
  console.log(formatTextTable(["variant", "body", "arch", "threads", "regs", "spills", ""], rows));
  if (compiler.nvrtcMajor < 12) {
    console.log(
      `wgmma bodies NOT compiled: NVRTC ${compiler.nvrtcVersion} cannot emit them; set ` +
        "DS_NVRTC_PATH to an NVRTC 12+ libnvrtc.so.12",
    );
    Deno.exit(2);
  }
  Deno.exit(failed ? 1 : 0);
}
