/**
 * The command-line front door of Double Sparsity-Offload: `--offload` (K/V in pinned host
 * memory, selected rows over PCIe, rows of the previous step reused) and `--offload-mode` to pick
 * another mode. One place, so every command spells the switch alike.
 */
import { UsageError } from "../util/errors.ts";
import type { OffloadOptions } from "../runtime/offload_plan.ts";

/** `--offload-mode` values and the options each stands for. */
export const OFFLOAD_MODES: Readonly<Record<string, OffloadOptions>> = {
  selected: { mode: "selected" },
  reuse: { mode: "selected", reuse: true },
  predict: { mode: "selected", prediction: true },
  "predict-reuse": { mode: "selected", prediction: true, reuse: true },
  "predict-half": { mode: "selected", prediction: true, prefetchFraction: 0.5 },
  "full-kv": { mode: "full-kv" },
};

/** Usage lines for the two flags. */
export const OFFLOAD_USAGE =
  `  --offload                    keep K/V in pinned host memory; only selected rows cross PCIe
                               (GPU only; same as --offload-mode reuse)
  --offload-mode MODE          selected | reuse (previous step's rows kept) | predict,
                               predict-reuse (next-layer prediction prefetches each layer's
                               rows; exact) | predict-half (prefetches half of each budget:
                               faster where PCIe is the limit) | full-kv (each layer's whole
                               K/V copied to the GPU: the FlexGen-style baseline)`;

/** The offload options the flags ask for, or undefined without either flag. */
export function offloadFromFlags(
  offload: boolean | undefined,
  mode: string | undefined,
): OffloadOptions | undefined {
  if (mode === undefined) return offload ? OFFLOAD_MODES.reuse : undefined;
  const options = OFFLOAD_MODES[mode];
  if (!options) {
    throw new UsageError(
      `--offload-mode: got ${JSON.stringify(mode)}; allowed: ${
        Object.keys(OFFLOAD_MODES).join(", ")
      }`,
    );
  }
  return options;
}
