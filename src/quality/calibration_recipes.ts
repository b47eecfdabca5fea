/**
 * Named calibration mixes. "python" is the protocol's (16 windows of 2048 bytes of the
 * calibration text). "retrieval-mix" is the recipe behind issue 10's reference numbers for the
 * long-context model: 8 retrieval rows of 8,192 bytes and 8 Python windows of 2,048.
 *
 * What a "retrieval row of 8,192 bytes" is here: one freshly built line-retrieval document
 * (buildRetrievalDocument, seeds 1..8, the asked line at depths 1/16, 3/16, ..., 15/16) cut to
 * its last 8,193 bytes, so the model reads 8,192 positions, the full context it was trained on,
 * ending with the question and the answer as its training rows did. Built rather than taken from
 * line-retrieval.jsonl, so the channels are never calibrated on the documents they are then
 * evaluated on, and no file is needed beyond the repository's code.
 */
import type { LoadedModel } from "../checkpoint/weights.ts";
import type { DeviceChoice, ResolvedDevice } from "../runtime/device.ts";
import { calibrate, type CalibrationProgress } from "./calibrate_run.ts";
import { ChannelStatistics } from "./calibration.ts";
import { retrievalCalibrationRows } from "./retrieval.ts";
import { readWindows } from "./windows.ts";

export const CALIBRATION_RECIPES = ["python", "retrieval-mix"] as const;
export type CalibrationRecipe = typeof CALIBRATION_RECIPES[number];

export function parseRecipe(value: string): CalibrationRecipe {
  const hit = CALIBRATION_RECIPES.find((r) => r === value);
  if (!hit) {
    throw new Error(
      `--recipe: got ${JSON.stringify(value)}; allowed: ${CALIBRATION_RECIPES.join(", ")}`,
    );
  }
  return hit;
}

/** Windows of one length (protocol windows of T+1 bytes), calibrated as one batch. */
export interface CalibrationSet {
  readonly label: string;
  readonly windows: Uint8Array[];
}

export const RETRIEVAL_MIX = {
  retrievalRows: 8,
  retrievalRowBytes: 8192,
  retrievalSeed: 1,
  pythonWindows: 8,
  pythonWindowBytes: 2048,
} as const;

/** The window sets of a recipe; `python` windows come from `pythonData`. */
export async function recipeSets(
  recipe: CalibrationRecipe,
  pythonData: string,
  python: { windows: number; windowSize: number },
): Promise<CalibrationSet[]> {
  if (recipe === "python") {
    return [{
      label: `${python.windows} window(s) of ${python.windowSize} bytes of ${pythonData}`,
      windows: await readWindows(pythonData, python.windowSize, python.windows),
    }];
  }
  const m = RETRIEVAL_MIX;
  return [
    {
      label: `${m.retrievalRows} built retrieval rows of ${m.retrievalRowBytes} bytes (seeds ` +
        `${m.retrievalSeed}..${m.retrievalSeed + m.retrievalRows - 1})`,
      windows: retrievalCalibrationRows(m.retrievalRows, m.retrievalRowBytes, m.retrievalSeed),
    },
    {
      label: `${m.pythonWindows} window(s) of ${m.pythonWindowBytes} bytes of ${pythonData}`,
      windows: await readWindows(pythonData, m.pythonWindowBytes, m.pythonWindows),
    },
  ];
}

/**
 * Calibrates each set (a batch of equal-length windows) and pools them: every window counts
 * once (its per-position mean), whatever its length.
 */
export async function calibrateSets(
  model: LoadedModel,
  sets: readonly CalibrationSet[],
  opts: {
    device?: DeviceChoice | ResolvedDevice;
    onProgress?: (set: number, p: CalibrationProgress) => void;
    log?: (line: string) => void;
  } = {},
): Promise<
  { stats: ChannelStatistics; device: "gpu" | "cpu"; deviceName: string; seconds: number }
> {
  const c = model.config;
  const pooled = new ChannelStatistics(c.numLayers, c.numHeads, c.numKvHeads, c.headDim);
  let device: "gpu" | "cpu" = "cpu", deviceName = "", seconds = 0;
  for (const [i, set] of sets.entries()) {
    const run = await calibrate(model, set.windows, {
      device: opts.device,
      log: opts.log,
      onProgress: (p) => opts.onProgress?.(i, p),
    });
    pooled.absorb(run.stats);
    device = run.device;
    deviceName = run.deviceName;
    seconds += run.seconds;
  }
  return { stats: pooled, device, deviceName, seconds };
}
