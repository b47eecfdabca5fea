/**
 * Generates a variant's files: the CUDA sources, a typed launcher module and a manifest, and
 * writes them into `<outDir>/<variant>/` only where their content changed.
 */
import { join } from "node:path";
import { existsSync, readdirSync, rmSync } from "node:fs";
import type { AttentionSpec } from "../dsl/spec.ts";
import { writeIfChanged } from "../util/fs.ts";
import { VERSION } from "../version.ts";
import { KERNELS, type Tuning, tuningFor } from "./kernels.ts";
import { renderKernelApi, renderLaunchers } from "./launchers.ts";
import { type RenderedKernel, renderKernels } from "./render.ts";

export interface GeneratedVariant {
  readonly spec: AttentionSpec;
  readonly tuning: Tuning;
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

export function manifestOf(
  spec: AttentionSpec,
  tuning: Tuning,
  kernels: readonly RenderedKernel[],
) {
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

export function generateVariant(spec: AttentionSpec): GeneratedVariant {
  const tuning = tuningFor(spec);
  const kernels = renderKernels(spec);
  const files = new Map<string, string>();
  for (const k of kernels) files.set(k.file, k.source);
  files.set("launchers.ts", renderLaunchers(spec, tuning, kernels));
  files.set("manifest.json", JSON.stringify(manifestOf(spec, tuning, kernels), null, 2) + "\n");
  return { spec, tuning, kernels, files };
}

export interface WriteReport {
  readonly written: string[];
  readonly unchanged: string[];
  readonly removed: string[];
}

/** Writes a variant's files (only changed ones) and removes files it no longer produces. */
export function writeVariant(outDir: string, gen: GeneratedVariant): WriteReport {
  const dir = join(outDir, gen.spec.variant);
  const report: WriteReport = { written: [], unchanged: [], removed: [] };
  for (const [name, text] of gen.files) {
    (writeIfChanged(join(dir, name), text) ? report.written : report.unchanged).push(
      join(dir, name),
    );
  }
  for (const name of readdirSync(dir)) {
    if (!gen.files.has(name)) {
      rmSync(join(dir, name), { recursive: true, force: true });
      report.removed.push(join(dir, name));
    }
  }
  return report;
}

export const KERNEL_API_FILE = "kernel_api.ts";

export function writeKernelApi(outDir: string): boolean {
  return writeIfChanged(join(outDir, KERNEL_API_FILE), renderKernelApi());
}

/** Removes variant directories of `outDir` that are not in `keep`. */
export function pruneVariants(outDir: string, keep: ReadonlySet<string>): string[] {
  if (!existsSync(outDir)) return [];
  const removed: string[] = [];
  for (const entry of readdirSync(outDir, { withFileTypes: true })) {
    if (entry.isDirectory() && entry.name.startsWith("ds_") && !keep.has(entry.name)) {
      rmSync(join(outDir, entry.name), { recursive: true, force: true });
      removed.push(entry.name);
    }
  }
  return removed;
}
