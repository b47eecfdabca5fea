/**
 * A variant ready to launch: its kernels rendered, compiled for the device (through the compile
 * cache), loaded, and bound to the generated typed launchers.
 *
 * Launchers come from the committed `generated/<variant>/launchers.ts` when present (its kernel
 * hashes must match the freshly rendered sources, else it is stale), otherwise they are generated
 * into `<cache dir>/generated/` and imported from there.
 */
import { join } from "node:path";
import { existsSync } from "node:fs";
import { pathToFileURL } from "node:url";
import type { AttentionSpec } from "../dsl/spec.ts";
import {
  generateVariant,
  KERNEL_API_FILE,
  writeKernelApi,
  writeVariant,
} from "../codegen/generate.ts";
import { dynamicSharedBytesOf, type KernelId, KERNELS, tuningFor } from "../codegen/kernels.ts";
import { type RenderedKernel, renderKernels } from "../codegen/render.ts";
import { WGMMA_VARIANT_ENV, withWgmmaVariant } from "../codegen/prefill_wgmma_variants.ts";
import { defaultCacheDir } from "../cuda/compile_cache.ts";
import { KernelCompiler } from "../cuda/compiler.ts";
import {
  type Cuda,
  type FunctionInfo,
  type LaunchSlot,
  type Module,
  type Stream,
} from "../cuda/driver.ts";
import { packageRoot } from "../util/package_root.ts";
import type { VariantLaunchers } from "../codegen/kernel_api.ts";
import {
  choosePrefillBody,
  parsePrefillBody,
  PREFILL_BODY_ENV,
  type PrefillBodyChoice,
  type PrefillBodyPlan,
} from "./prefill_body.ts";

export interface LoadedKernel {
  readonly id: KernelId;
  readonly slot: LaunchSlot;
  readonly info: FunctionInfo;
  readonly compileOrigin: string;
}

export class Variant implements Disposable {
  private constructor(
    readonly spec: AttentionSpec,
    readonly launchers: VariantLaunchers,
    readonly kernels: Readonly<Record<KernelId, LoadedKernel>>,
    readonly launcherPath: string,
    /** The prefill kernel's body (wgmma or mma.sync) and its launch shape. */
    readonly prefill: PrefillBodyPlan,
    private readonly modules: Module[],
  ) {}

  /** Points every kernel's launches at `stream`. */
  bindStream(stream: Stream): void {
    for (const k of Object.values(this.kernels)) k.slot.stream = stream;
  }

  slot(id: KernelId): LaunchSlot {
    return this.kernels[id].slot;
  }

  static async load(
    cuda: Cuda,
    spec: AttentionSpec,
    opts: {
      compiler?: KernelCompiler;
      stream?: Stream;
      /** The prefill body: default $DS_PREFILL_BODY, else "auto" (wgmma where it can run). */
      prefillBody?: PrefillBodyChoice;
      /**
       * The wgmma body's variant (src/codegen/prefill_wgmma_variants.ts): default
       * $DS_PREFILL_WGMMA_VARIANT, else the tuning's own (tma3-r-s; mbar3 below page size 8).
       * Ignored by the mma.sync body.
       */
      prefillWgmmaVariant?: string;
    } = {},
  ): Promise<Variant> {
    const compiler = opts.compiler ?? sharedCompiler();
    const { launchers, path, rendered } = await launchersFor(spec);
    const base = tuningFor(spec);
    const variantName = opts.prefillWgmmaVariant ?? Deno.env.get(WGMMA_VARIANT_ENV);
    const tuning = variantName === undefined || !base.prefillWgmma ? base : withWgmmaVariant(
      base,
      spec,
      variantName,
      opts.prefillWgmmaVariant !== undefined ? "prefillWgmmaVariant" : `$${WGMMA_VARIANT_ENV}`,
    );
    const prefill = choosePrefillBody(
      opts.prefillBody ??
        parsePrefillBody(Deno.env.get(PREFILL_BODY_ENV), `$${PREFILL_BODY_ENV}`),
      tuning,
      { nvrtcMajor: compiler.nvrtcMajor, arch: cuda.info.arch },
    );
    // Another wgmma variant than the committed sources': its prefill source rendered here.
    const prefillSource = prefill.body === "wgmma" && tuning !== base
      ? renderKernels(spec, tuning).find((k) => k.id === "prefill")!.source
      : undefined;
    const modules: Module[] = [];
    const kernels = {} as Record<KernelId, LoadedKernel>;
    try {
      for (const r of rendered) {
        const isPrefill = r.id === "prefill";
        const compiled = compiler.compile({
          source: isPrefill && prefillSource !== undefined ? prefillSource : r.source,
          programName: `${spec.variant}/${r.file}`,
          arch: isPrefill ? prefill.arch : cuda.info.arch,
          extraOptions: isPrefill ? prefill.extraOptions : undefined,
        });
        if (!compiled.cubin) throw new Error(`${spec.variant}/${r.file}: NVRTC produced no CUBIN`);
        const mod = cuda.loadModule(compiled.cubin, `${spec.variant}/${r.file}`);
        modules.push(mod);
        const fn = mod.function(r.symbol);
        const info = launchers.kernels[r.id];
        const shared = isPrefill
          ? prefill.sharedBytes
          : dynamicSharedBytesOf(r.id, launchers.tuning);
        const threads = isPrefill ? prefill.threads : info.threads;
        // Past 48 KB a kernel must opt in to the larger dynamic shared memory it launches with.
        if (shared > 48 * 1024) fn.setMaxDynamicShared(shared);
        kernels[r.id] = {
          id: r.id,
          slot: fn.slot(info.argCount, [threads, 1, 1], shared, opts.stream),
          info: fn.info(),
          compileOrigin: compiled.origin,
        };
      }
    } catch (e) {
      for (const m of modules) m.dispose();
      throw e;
    }
    return new Variant(spec, launchers, kernels, path, prefill, modules);
  }

  dispose(): void {
    for (const m of this.modules) m.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

let compiler: KernelCompiler | undefined;
export const sharedCompiler = (): KernelCompiler => (compiler ??= new KernelCompiler());

const imported = new Map<
  string,
  { launchers: VariantLaunchers; path: string; rendered: RenderedKernel[] }
>();

/** Finds (or generates) and imports the variant's launcher module; checks it is current. */
async function launchersFor(spec: AttentionSpec) {
  const hit = imported.get(spec.variant);
  if (hit) return hit;
  const gen = generateVariant(spec);
  const committed = join(packageRoot(), "generated", spec.variant, "launchers.ts");
  let path = committed;
  if (!existsSync(committed)) {
    // Not "generated": folders there from before the generator's marker would be refused.
    const dir = join(defaultCacheDir(), "variants");
    writeVariant(dir, gen);
    writeKernelApi(dir);
    path = join(dir, spec.variant, "launchers.ts");
    if (!existsSync(join(dir, KERNEL_API_FILE))) {
      throw new Error(`${dir}/${KERNEL_API_FILE} missing`);
    }
  }
  const mod = await import(pathToFileURL(path).href);
  const launchers = mod.default as VariantLaunchers;
  for (const r of gen.kernels) {
    const want = launchers.kernels[r.id]?.sha256;
    if (want !== r.sha256) {
      throw new Error(
        `${path} is stale: kernel ${r.id} was generated from a different source ` +
          `(sha256 ${want?.slice(0, 12)} vs ${r.sha256.slice(0, 12)}); run \`deno task gen\``,
      );
    }
  }
  if (Object.keys(launchers.kernels).length !== KERNELS.length) {
    throw new Error(`${path}: expected ${KERNELS.length} kernels`);
  }
  const entry = { launchers, path, rendered: gen.kernels as RenderedKernel[] };
  imported.set(spec.variant, entry);
  return entry;
}
