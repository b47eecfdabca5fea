/**
 * `deno task eval`: the accuracy table of docs/method.md, reproduced. Teacher-forced bits
 * per byte of dense attention and of each Double Sparsity preset on held-out windows, beside
 * the table's values; recall per layer (softmax mass of the selected tokens); a JSON record.
 *
 *   deno task eval [--model DIR] [--data FILE] [--windows 48] [--window-size 2048]
 *                  [--channels FILE] [--stats FILE] [--variants "dense,head r16 b16 dense 0,1"]
 *                  [--json FILE] [--device auto|cpu|gpu] [--seed 1]
 *
 * Exit code 0 whatever the numbers (a report); rows within 1% of the table are marked.
 */
import * as path from "node:path";
import { packageRoot } from "../util/package_root.ts";
import { BUNDLED_MODEL_DIR, positiveInt } from "./args.ts";
import { type FlagValues, intFlag, runCommand } from "./front_door.ts";
import { writeJsonReport } from "./json_report.ts";
import { Progress } from "./progress.ts";
import { defaultResultsPath } from "./results.ts";
import { loadOrCalibrate } from "../quality/calibrate_run.ts";
import { parseDeviceChoice, resolveDevice } from "../runtime/device.ts";
import {
  EVAL_PRESETS,
  type EvalPreset,
  type EvalRow,
  evaluateCpu,
  evaluateGpu,
  parsePresetList,
  presetVariant,
} from "../quality/evaluate.ts";
import { loadModel } from "../checkpoint/weights.ts";
import {
  checkWindowFits,
  PROTOCOL_CALIBRATION_WINDOWS,
  PROTOCOL_EVAL_WINDOWS,
  PROTOCOL_WINDOW,
  readWindows,
} from "../quality/windows.ts";

export { EVAL_PRESETS, findPreset, parsePresetList, presetSpec } from "../quality/evaluate.ts";

const HELP = `deno task eval [options]
  --model DIR                 model directory (default examples/models/tiny-code-llama-8k)
  --data FILE                 evaluation text (default examples/data/python-heldout.txt)
  --windows N                 windows (default ${PROTOCOL_EVAL_WINDOWS})
  --window-size T             bytes per window (default ${PROTOCOL_WINDOW})
  --channels FILE             channel config (default: the cached calibration, made if missing)
  --stats FILE                calibration statistics (default: <channels>.stats.json if present)
  --calibration-data FILE     text for a missing calibration (default python-calibration.txt)
  --calibration-windows N     (default ${PROTOCOL_CALIBRATION_WINDOWS})
  --calibration-window-size T (default ${PROTOCOL_WINDOW})
  --variants LIST             comma list of preset names, or "all" (default); presets:
${EVAL_PRESETS.map((p) => `                                ${p.name}`).join("\n")}
  --seed N                    seed of the random-channel ablation (default 1)
  --calibrate-on-cpu          allow a missing protocol-size calibration to run on the CPU
                              (minutes); without it such a run is refused up front
  --json FILE                 results file (default ./results/eval-<date>.json, or
                              $DS_RESULTS_DIR/eval-<date>.json)
  --device auto|cpu|gpu       (default auto; gpu without a usable GPU is an error)`;

/** Relative tolerance against the table's value. */
export const EXPECTED_TOLERANCE = 0.01;

const pct = (x: number | null) => x === null ? "-" : `${x >= 0 ? "+" : ""}${(100 * x).toFixed(1)}%`;

export interface ReportRow extends EvalRow {
  readonly preset: EvalPreset;
  readonly expected: number;
  /** bitsPerByte / expected - 1. */
  readonly diffVsExpected: number;
  readonly withinTolerance: boolean;
  readonly note?: string;
}

/** The Markdown table printed by the CLI. */
export function markdownTable(rows: readonly ReportRow[]): string {
  const lines = [
    "| variant | selection | r | bits | dense layers | bits/byte | vs dense | expected | " +
    "diff vs expected | within 1% | mean recall per layer |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
  ];
  for (const row of rows) {
    const p = row.preset;
    const dense = !p.selection;
    const r = dense ? "-" : p.channels === "headDim" ? "all" : String(p.channels);
    const bits = dense ? "-" : String(p.bits);
    const denseLayers = dense ? "all" : p.denseLayers.length ? p.denseLayers.join(",") : "none";
    const recall = dense ? "-" : row.recallPerLayer.map((x) => x.toFixed(3)).join(" ");
    lines.push(
      `| ${p.name} | ${p.label} | ${r} | ${bits} | ${denseLayers} | ${
        row.bitsPerByte.toFixed(4)
      } | ` +
        `${dense ? "-" : pct(row.relativeToDense)} | ${p.expected.toFixed(4)} | ` +
        `${pct(row.diffVsExpected)} | ${row.withinTolerance ? "yes" : "NO"} | ${recall} |`,
    );
  }
  return lines.join("\n");
}

const COMMAND = {
  name: "eval",
  usage: HELP,
  options: {
    model: { type: "string" },
    data: { type: "string" },
    windows: { type: "string", default: String(PROTOCOL_EVAL_WINDOWS) },
    "window-size": { type: "string", default: String(PROTOCOL_WINDOW) },
    channels: { type: "string" },
    stats: { type: "string" },
    "calibration-data": { type: "string" },
    "calibration-windows": { type: "string", default: String(PROTOCOL_CALIBRATION_WINDOWS) },
    "calibration-window-size": { type: "string", default: String(PROTOCOL_WINDOW) },
    variants: { type: "string" },
    seed: { type: "string", default: "1" },
    json: { type: "string" },
    device: { type: "string", default: "auto" },
    "calibrate-on-cpu": { type: "boolean", default: false },
  },
} as const;

async function main(args: FlagValues<typeof COMMAND.options>): Promise<number> {
  const root = packageRoot();
  const modelDir = args.model ?? BUNDLED_MODEL_DIR;
  const data = args.data ?? path.join(root, "examples", "data", "python-heldout.txt");
  const numWindows = positiveInt("--windows", args.windows);
  const windowSize = positiveInt("--window-size", args["window-size"]);
  const calibrationWindows = positiveInt("--calibration-windows", args["calibration-windows"]);
  const calibrationWindowSize = positiveInt(
    "--calibration-window-size",
    args["calibration-window-size"],
  );
  const presets = parsePresetList(args.variants);
  const seed = intFlag("seed", args.seed, { min: 0 });
  const date = new Date().toISOString().slice(0, 10);
  const jsonPath = args.json ?? defaultResultsPath(`eval-${date}.json`);

  const model = await loadModel(modelDir);
  const c = model.config;
  checkWindowFits("--window-size", windowSize, c.maxPositionEmbeddings);
  checkWindowFits("--calibration-window-size", calibrationWindowSize, c.maxPositionEmbeddings);
  const device = resolveDevice(parseDeviceChoice(args.device));
  console.log(`device: ${device.name}${device.kind === "cpu" ? ` (${device.reason})` : ""}`);
  const windows = await readWindows(data, windowSize, numWindows);
  console.log(
    `evaluating ${presets.length} variant(s) on ${numWindows} window(s) of ${windowSize} bytes ` +
      `of ${data}`,
  );
  const protocol = numWindows === PROTOCOL_EVAL_WINDOWS && windowSize === PROTOCOL_WINDOW &&
    calibrationWindows === PROTOCOL_CALIBRATION_WINDOWS &&
    calibrationWindowSize === PROTOCOL_WINDOW;
  if (!protocol) {
    console.log(
      "note: not the protocol's sizes (48 x 2048 evaluation, 16 x 2048 calibration): the " +
        "'expected' column is indicative only",
    );
  }
  if (device.kind === "cpu") {
    console.log(
      `note: the CPU path decodes one window at a time in float64 loops; ${numWindows} x ` +
        `${windowSize} bytes per variant can take a long time (shrink with --windows, --window-size)`,
    );
  }

  const needsChannels = presets.some((p) => p.selection && !p.randomChannels);
  const channels = needsChannels
    ? await loadOrCalibrate(model, {
      modelDir,
      channelsPath: args.channels,
      statsPath: args.stats,
      calibrationData: args["calibration-data"],
      calibrationWindows,
      calibrationWindowSize,
      device,
      allowCpuCalibration: args["calibrate-on-cpu"],
      log: (line) => console.log(line),
    })
    : undefined;
  const variants = presets.map((p) =>
    presetVariant(p, c, { config: channels?.config, stats: channels?.stats, randomSeed: seed })
  );
  for (const v of variants) if (v.note) console.log(`note (${v.name}): ${v.note}`);
  for (const v of variants) {
    console.log(`  ${v.name.padEnd(30)} ${v.spec?.variant ?? "dense"}`);
  }

  const started = performance.now();
  // Variants run one after another: each bar's clock starts where the previous variant's last
  // report left off, so its rate and ETA include the set-up of its decoder.
  let bar: { variant: string; progress: Progress } | undefined;
  let lastReport = started;
  const onProgress = (p: { variant: string; done: number; total: number; unit: string }) => {
    if (bar?.variant !== p.variant) {
      bar = {
        variant: p.variant,
        progress: new Progress(p.variant, p.unit, { startMs: lastReport }),
      };
    }
    bar.progress.update(p.done, p.total, p.unit);
    lastReport = performance.now();
  };
  const rows = device.kind === "gpu"
    ? await evaluateGpu(device.cuda, model, windows, variants, { onProgress })
    : evaluateCpu(model, windows, variants, { onProgress });
  const seconds = (performance.now() - started) / 1000;

  const report: ReportRow[] = rows.map((row, i) => {
    const preset = presets[i];
    const diffVsExpected = row.bitsPerByte / preset.expected - 1;
    return {
      ...row,
      preset,
      expected: preset.expected,
      diffVsExpected,
      withinTolerance: Math.abs(diffVsExpected) <= EXPECTED_TOLERANCE,
      note: variants[i].note,
    };
  });
  console.log("");
  console.log(markdownTable(report));
  console.log("");
  const within = report.filter((r) => r.withinTolerance).map((r) => r.name);
  const off = report.filter((r) => !r.withinTolerance).map((r) => r.name);
  console.log(`within 1% of the table: ${within.length ? within.join("; ") : "none"}`);
  console.log(`off by more than 1%:    ${off.length ? off.join("; ") : "none"}`);
  console.log(`total ${seconds.toFixed(1)} s on ${device.name}`);

  const record = {
    date: new Date().toISOString(),
    device: device.kind,
    deviceName: device.name,
    model: modelDir,
    data,
    windows: numWindows,
    windowSize,
    protocol,
    channels: channels?.path ?? null,
    stats: channels?.statsPath ?? null,
    randomSeed: seed,
    seconds,
    rows: report.map(({ preset, ...row }) => ({
      ...row,
      label: preset.label,
      channels: preset.channels === "headDim" ? c.headDim : preset.channels ?? null,
      bits: preset.bits ?? null,
    })),
  };
  writeJsonReport(jsonPath, record);
  return 0;
}

if (import.meta.main) await runCommand(COMMAND, ({ values }) => main(values));
