/**
 * Generates a variant's files: the CUDA sources, a typed launcher module and a manifest, and
 * writes them into `<outDir>/<variant>/` only where their content changed.
 */
import { basename, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { existsSync, readdirSync, rmSync } from "node:fs";
import { DsError, InputError } from "../util/errors.ts";
import { type AttentionSpec, type ByteModel, ensureSpec } from "../dsl/spec.ts";
import { writeIfChanged } from "../util/fs.ts";
import { VERSION } from "../version.ts";
import { type KernelId, KERNELS, type Tuning, tuningFor } from "./kernels.ts";
import { renderKernelApi, renderLaunchers } from "./launchers.ts";
import { type RenderedKernel, renderKernels } from "./render.ts";

/** Everything generated for one variant, in memory; {@linkcode writeVariant} writes it. */
export interface GeneratedVariant {
  /** The variant. */
  readonly spec: AttentionSpec;
  /** The launch-shape constants baked into its sources. */
  readonly tuning: Tuning;
  /** The rendered CUDA kernels. */
  readonly kernels: readonly RenderedKernel[];
  /** File name inside the variant directory -> content. */
  readonly files: ReadonlyMap<string, string>;
}

/** The parameters that define the kernels (run-time policy such as the budget is left out). */
export function kernelParameters(spec: AttentionSpec): Record<string, unknown> {
  return {
    headDim: spec.headDim,
    numQHeads: spec.numQHeads,
    numKvHeads: spec.numKvHeads,
    kvDtype: spec.kvDtype,
    pageSize: spec.pageSize,
    labelChannels: spec.labelChannels,
    labelBits: spec.labelBits,
    labelHeads: spec.labelHeads,
    selection: spec.selection,
  };
}

/** A variant's `manifest.json`: the generator, the kernel parameters, tuning and source hashes. */
export interface VariantManifest {
  /** `double-sparsity <version>`. */
  generator: string;
  /** The variant name. */
  variant: string;
  /** {@linkcode kernelParameters} of the spec. */
  parameters: Record<string, unknown>;
  /** The spec's byte model. */
  bytesPerToken: ByteModel;
  /** Launch-shape constants. */
  tuning: Tuning;
  /** One entry per kernel: symbol, file, block size, grid, C arguments and source hash. */
  kernels: {
    id: KernelId;
    symbol: string;
    file: string;
    threads: number;
    grid: string;
    args: string[];
    sha256: string;
  }[];
}

/** The manifest of a variant's generated files. */
export function manifestOf(
  spec: AttentionSpec,
  tuning: Tuning,
  kernels: readonly RenderedKernel[],
): VariantManifest {
  return {
    generator: `double-sparsity ${VERSION}`,
    variant: spec.variant,
    parameters: kernelParameters(spec),
    bytesPerToken: spec.bytes,
    tuning,
    kernels: kernels.map((k) => {
      const desc = KERNELS.find((d) => d.id === k.id)!;
      return {
        id: k.id,
        symbol: k.symbol,
        file: k.file,
        threads: k.threads,
        grid: desc.grid,
        args: desc.args.map((a) => `${a.cType.replace("__restrict__ ", "").trim()} ${a.name}`),
        sha256: k.sha256,
      };
    }),
  };
}

/**
 * Renders a variant's files in memory: one `.cu` per kernel, `launchers.ts` (typed launchers,
 * importing `../kernel_api.ts`) and `manifest.json`. Nothing is written. `input` must be a spec
 * from defineAttention (or a spec-shaped copy that rebuilds to the same variant): anything else
 * is a SpecError, never a kernel with holes.
 */
export function generateVariant(input: AttentionSpec): GeneratedVariant {
  const spec = ensureSpec(input, "generateVariant(spec)");
  const tuning = tuningFor(spec);
  const kernels = renderKernels(spec);
  const files = new Map<string, string>();
  for (const k of kernels) files.set(k.file, k.source);
  files.set("launchers.ts", renderLaunchers(spec, tuning, kernels));
  files.set("manifest.json", JSON.stringify(manifestOf(spec, tuning, kernels), null, 2) + "\n");
  return { spec, tuning, kernels, files };
}

/** What {@linkcode writeVariant} did, as file paths. */
export interface WriteReport {
  /** Files created or changed. */
  readonly written: string[];
  /** Files that already held the same content. */
  readonly unchanged: string[];
  /** Files of the variant directory the variant no longer produces, removed. */
  readonly removed: string[];
}

/**
 * The file that marks a variant folder as written by the generator: only folders holding it are
 * ever rewritten in place, cleaned of stale files or pruned. A folder of the same name without
 * it belongs to someone else and is left alone.
 */
export const GENERATED_MARKER = ".ds-generated";
const MARKER_TEXT = "Written by the double-sparsity code generator (deno task gen). It may " +
  "rewrite or remove this folder; delete this file to keep it from doing so.\n";

/** Whether `dir` is a variant folder the generator wrote (it holds the marker). */
export function isGeneratedDir(dir: string): boolean {
  return existsSync(join(dir, GENERATED_MARKER));
}

/**
 * Writes a variant's files into `<outDir>/<variant>/` (created if needed; only changed files are
 * written) and removes files of that folder the variant no longer produces. The folder gets the
 * generator's marker; a folder that exists without it is refused (InputError), not overwritten.
 *
 * `outDir` is the folder that holds variant folders (the repository's `generated/`), not the
 * variant's own folder: `writeVariant("generated", gen)` writes
 * `generated/ds_d128_.../score.cu`. A path whose last component is already the variant's name
 * is refused, since it would nest the folder twice. Call {@linkcode writeKernelApi} with the same
 * `outDir` for the `kernel_api.ts` the launchers import.
 */
export function writeVariant(outDir: string, gen: GeneratedVariant): WriteReport {
  if (basename(resolve(outDir)) === gen.spec.variant) {
    throw new DsError(
      `writeVariant: ${outDir} already ends with the variant folder ${gen.spec.variant}; pass ` +
        `its parent (files go to <outDir>/${gen.spec.variant}/)`,
    );
  }
  const dir = join(outDir, gen.spec.variant);
  if (existsSync(dir) && !isGeneratedDir(dir)) {
    throw new InputError(
      dir,
      `exists and has no ${GENERATED_MARKER} marker, so the generator did not write it; ` +
        `leaving it untouched (move it away or choose another --out)`,
    );
  }
  const report: WriteReport = { written: [], unchanged: [], removed: [] };
  writeIfChanged(join(dir, GENERATED_MARKER), MARKER_TEXT);
  for (const [name, text] of gen.files) {
    (writeIfChanged(join(dir, name), text) ? report.written : report.unchanged).push(
      join(dir, name),
    );
  }
  for (const name of readdirSync(dir)) {
    if (!gen.files.has(name) && name !== GENERATED_MARKER) {
      rmSync(join(dir, name), { recursive: true, force: true });
      report.removed.push(join(dir, name));
    }
  }
  return report;
}

/** The variant-independent types every `launchers.ts` imports, beside the variant directories. */
export const KERNEL_API_FILE = "kernel_api.ts";

/**
 * Writes `<outDir>/kernel_api.ts` (the types `<outDir>/<variant>/launchers.ts` imports) if its
 * content changed; returns whether it did.
 */
export function writeKernelApi(outDir: string): boolean {
  return writeIfChanged(join(outDir, KERNEL_API_FILE), renderKernelApi());
}

/**
 * The launcher API the runtime imports: the same text as `generated/kernel_api.ts`, committed
 * under src/ so that src/ never imports from generated/.
 */
export const KERNEL_API_SOURCE: string = fileURLToPath(
  new URL("./kernel_api.ts", import.meta.url),
);

/** Writes {@linkcode KERNEL_API_SOURCE} if its content changed; returns whether it did. */
export function writeKernelApiSource(): boolean {
  return writeIfChanged(KERNEL_API_SOURCE, renderKernelApi());
}

/** What {@linkcode pruneVariants} did. */
export interface PruneReport {
  /** Variant folders removed (they carried the marker and are no longer specified). */
  readonly removed: string[];
  /** Folders named like variants but without the marker: not ours, left in place. */
  readonly leftAlone: string[];
}

/**
 * Removes the variant folders of `outDir` that the generator wrote (marker present) and that are
 * not in `keep`. Folders without the marker are never removed, only reported.
 */
export function pruneVariants(outDir: string, keep: ReadonlySet<string>): PruneReport {
  const report: PruneReport = { removed: [], leftAlone: [] };
  if (!existsSync(outDir)) return report;
  for (const entry of readdirSync(outDir, { withFileTypes: true })) {
    if (!entry.isDirectory() || !entry.name.startsWith("ds_") || keep.has(entry.name)) continue;
    if (isGeneratedDir(join(outDir, entry.name))) {
      rmSync(join(outDir, entry.name), { recursive: true, force: true });
      report.removed.push(entry.name);
    } else {
      report.leftAlone.push(entry.name);
    }
  }
  return report;
}
