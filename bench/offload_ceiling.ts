/**
 * The compute ceiling of an offloaded step against issue 11's bound. An offloaded step runs every
 * kernel of the on-GPU DS step (its attention reads a staging of the same rows instead of the
 * pool) and adds its transfers, so no schedule, with or without reuse, takes it below the on-GPU
 * step: its share of the bound (the exact selection's bytes over the measured copy rate) is at
 * most that bound over the on-GPU DS step. Where the ceiling is under 100%, the step's compute,
 * not the bus, sets the pace.
 */

/** What the ceiling needs of a row of bench/offload.ts's table. */
export interface CeilingRow {
  readonly batch: number;
  readonly context: number;
  readonly method: string;
  readonly stepMs: number;
  /** Bytes of the exact selection's rows per step (0 where the method has no selection). */
  readonly selectedBytesPerStep: number;
}

export interface ComputeCeiling {
  readonly batch: number;
  readonly context: number;
  /** The exact selection's bytes over the copy rate, in ms. */
  readonly boundMs: number;
  readonly onGpuMs: number;
  /** boundMs / onGpuMs: the most of the bound any offloaded step of this shape can reach. */
  readonly share: number;
}

/** The method name of the on-GPU rows. */
export const ON_GPU_METHOD = "on-GPU DS";

/**
 * One ceiling per (batch, context) that has an on-GPU DS row and an offloaded row with selected
 * bytes, in the order of the on-GPU rows; `h2dGBs` is the measured copy rate in GB/s.
 */
export function computeCeilings(rows: readonly CeilingRow[], h2dGBs: number): ComputeCeiling[] {
  const out: ComputeCeiling[] = [];
  for (const gpu of rows.filter((r) => r.method === ON_GPU_METHOD)) {
    const offloaded = rows.find((r) =>
      r.batch === gpu.batch && r.context === gpu.context && r.selectedBytesPerStep > 0
    );
    if (!offloaded) continue;
    const boundMs = offloaded.selectedBytesPerStep / (h2dGBs * 1e6);
    out.push({
      batch: gpu.batch,
      context: gpu.context,
      boundMs,
      onGpuMs: gpu.stepMs,
      share: boundMs / gpu.stepMs,
    });
  }
  return out;
}
