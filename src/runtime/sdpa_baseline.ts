/**
 * PyTorch's scaled_dot_product_attention in the decode layout (bench/sdpa.py), the dense baseline
 * of `deno task bench` and `deno task tune`. It runs as a separate python3 process before the
 * generated kernels so that its memory is freed; a missing python3 or a failing script leaves
 * the SDPA columns empty and says why in `note`.
 */
import { join } from "node:path";
import { packageRoot } from "../util/package_root.ts";

/** One SDPA case: q [batch, qHeads, 1, d] against K/V [batch, kvHeads, context, d], fp16. */
export interface SdpaJob {
  readonly batch: number;
  readonly q_heads: number;
  readonly kv_heads: number;
  readonly head_dim: number;
  readonly context: number;
}

export interface SdpaResult extends SdpaJob {
  /** Median ms; null when the case ran out of memory. */
  readonly ms: number | null;
}

export interface SdpaRun {
  readonly results: SdpaResult[];
  /** "PyTorch <version> on <device>", or why the results are empty. */
  readonly note: string;
}

/** Runs bench/sdpa.py on `jobs` (its output goes to this process's stdout and stderr). */
export function runSdpa(jobs: readonly SdpaJob[]): SdpaRun {
  const tmp = Deno.makeTempDirSync({ prefix: "ds-sdpa-" });
  try {
    Deno.writeTextFileSync(join(tmp, "jobs.json"), JSON.stringify(jobs));
    const p = new Deno.Command("python3", {
      args: [
        join(packageRoot(), "bench", "sdpa.py"),
        join(tmp, "jobs.json"),
        join(tmp, "out.json"),
      ],
      stdout: "inherit",
      stderr: "inherit",
    }).outputSync();
    if (!p.success) {
      return { results: [], note: "python3 bench/sdpa.py failed; SDPA columns empty" };
    }
    const out = JSON.parse(Deno.readTextFileSync(join(tmp, "out.json")));
    return { results: out.results, note: `PyTorch ${out.torch} on ${out.device}` };
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    return { results: [], note: `python3 not available (${why}); SDPA columns empty` };
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
}

/** The SDPA median of the case, when it ran. */
export function sdpaMsFor(
  results: readonly SdpaResult[],
  batch: number,
  kvHeads: number,
  context: number,
  qHeads?: number,
): number | undefined {
  return results.find((r) =>
    r.batch === batch && r.context === context && r.kv_heads === kvHeads &&
    (qHeads === undefined || r.q_heads === qHeads)
  )?.ms ?? undefined;
}
