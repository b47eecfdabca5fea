/**
 * PyTorch's scaled_dot_product_attention in the decode layout (bench/sdpa.py), the dense baseline
 * of `deno task bench` and `deno task tune`. It runs as a separate python3 process before the
 * generated kernels so that its memory is freed; a missing python3 or a failing script leaves
 * the SDPA columns empty and says why in `note`.
 */
import { runPythonBench } from "./python_baseline.ts";

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
  const r = runPythonBench("sdpa.py", jobs);
  if (!r.ok) return { results: [], note: `${r.why}; SDPA columns empty` };
  return {
    results: r.out.results as SdpaResult[],
    note: `PyTorch ${r.out.torch} on ${r.out.device}`,
  };
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
