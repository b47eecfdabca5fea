/**
 * The command-line front door of Double Sparsity-Offload: `--offload` (K/V in pinned host
 * memory, selected rows over PCIe, rows of the previous step reused), `--offload-mode` to pick
 * another mode and `--row-cache GIB` to keep fetched rows on the GPU. One place, so every command
 * spells the switches alike.
 */
import { UsageError } from "../util/errors.ts";
import type { OffloadOptions } from "../runtime/offload_plan.ts";

/** `--offload-mode` values and the options each stands for. */
export const OFFLOAD_MODES: Readonly<Record<string, OffloadOptions>> = {
  selected: { mode: "selected" },
  reuse: { mode: "selected", reuse: true },
  predict: { mode: "selected", prediction: true },
  "predict-reuse": { mode: "selected", prediction: true, reuse: true },
  "predict-three-quarters": { mode: "selected", prediction: true, prefetchFraction: 0.75 },
  "predict-half": { mode: "selected", prediction: true, prefetchFraction: 0.5 },
  "predict-skip-missed": { mode: "selected", prediction: true, skipMissed: true },
  "full-kv": { mode: "full-kv" },
};

/** Usage lines for the two flags. */
export const OFFLOAD_USAGE =
  `  --offload                    keep K/V in pinned host memory; only selected rows cross PCIe
                               (GPU only; same as --offload-mode reuse)
  --offload-mode MODE          selected | reuse (previous step's rows kept) | predict,
                               predict-reuse (next-layer prediction prefetches each layer's
                               rows; exact) | predict-three-quarters (3/4 of each budget:
                               the fastest at 1 x 64K on an H100) | predict-half (half of
                               each budget: faster where PCIe is the limit) |
                               predict-skip-missed (the paper's scheme: a predicted layer
                               attends the predicted rows only; approximate) | full-kv (each
                               layer's whole K/V copied to the GPU: the FlexGen-style
                               baseline)
  --row-cache GIB              with a selected-rows mode: up to GIB GiB of GPU memory for rows
                               fetched in earlier steps (a row cache; exact): the rows it holds
                               do not cross PCIe again`;

/** The offload options the flags ask for, or undefined without --offload / --offload-mode. */
export function offloadFromFlags(
  offload: boolean | undefined,
  mode: string | undefined,
  rowCacheGiB?: string,
): OffloadOptions | undefined {
  const options = mode === undefined
    ? (offload ? OFFLOAD_MODES.reuse : undefined)
    : OFFLOAD_MODES[mode];
  if (mode !== undefined && !options) {
    throw new UsageError(
      `--offload-mode: got ${JSON.stringify(mode)}; allowed: ${
        Object.keys(OFFLOAD_MODES).join(", ")
      }`,
    );
  }
  if (rowCacheGiB === undefined) return options;
  const gib = Number(rowCacheGiB);
  if (rowCacheGiB.trim() === "" || !(gib > 0) || !Number.isFinite(gib)) {
    throw new UsageError(
      `--row-cache: got ${JSON.stringify(rowCacheGiB)}; allowed: a number of GiB > 0, e.g. 16`,
    );
  }
  if (options?.mode !== "selected") {
    throw new UsageError(
      `--row-cache: got ${rowCacheGiB} with ${
        options ? `--offload-mode ${mode}` : "no --offload"
      }; allowed: only with --offload or a selected-rows --offload-mode`,
    );
  }
  const bytes = Math.floor(gib * 2 ** 30);
  if (bytes < 1) {
    throw new UsageError(
      `--row-cache: got ${rowCacheGiB}, which is less than a byte; allowed: a number of GiB > 0, ` +
        "e.g. 16",
    );
  }
  return { ...options, rowCacheBytes: bytes };
}
