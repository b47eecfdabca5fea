/**
 * Running the channel calibration (Double Sparsity step 1) on the GPU or the CPU, the raw
 * statistics file written beside a channel config (so group rankings can be recomputed
 * exactly), and the "load the cached channel file, or calibrate and cache it" step that the
 * eval CLI and the decode example share.
 *
 * Windows here are protocol windows of T+1 bytes (what `readWindows` returns): the first T
 * bytes of each are fed, from position 0, with dense attention.
 */
import { existsSync } from "node:fs";
import * as path from "node:path";
import type { Cuda } from "../cuda/driver.ts";
import { type DeviceChoice, type ResolvedDevice, resolveDevice } from "../runtime/device.ts";
import { packageRoot } from "../util/package_root.ts";
import { writeFileAtomic } from "../util/fs.ts";
import { calibrateCpu, ChannelStatistics } from "./calibration.ts";
import {
  CHANNEL_KINDS,
  type ChannelConfig,
  type ChannelKind,
  readChannelConfig,
  writeChannelConfig,
} from "./channel_config.ts";
import { GpuDecoder } from "../decoding/gpu_decoder.ts";
import type { GemmBackend } from "../runtime/gemm_choice.ts";
import type { LoadedModel } from "../checkpoint/weights.ts";
import {
  PROTOCOL_CALIBRATION_WINDOWS,
  PROTOCOL_WINDOW,
  readWindows,
  windowInput,
} from "./windows.ts";
import { DsError, InputError } from "../util/errors.ts";

// ---- calibration -----------------------------------------------------------------------------

export interface CalibrationProgress {
  readonly done: number;
  readonly total: number;
  /** "positions" on the GPU (all windows advance together), "windows" on the CPU. */
  readonly unit: "positions" | "windows";
}

function checkWindows(windows: ArrayLike<number>[]): number {
  if (windows.length === 0) throw new Error("calibration: no windows");
  const T = windows[0].length - 1;
  if (T < 1) throw new Error(`calibration: windows of ${windows[0].length} bytes have no input`);
  for (const w of windows) {
    if (w.length !== T + 1) {
      throw new Error(`calibration: windows differ in length (${w.length} vs ${T + 1})`);
    }
  }
  return T;
}

/**
 * Calibration on the GPU: one dense GpuDecoder with every window as a sequence of the batch,
 * stepping over the T input positions while the device accumulates |q|, |k| and |q*k|; the sums
 * come back once and become per-window means (sum / T).
 */
export async function calibrateGpu(
  cuda: Cuda,
  model: LoadedModel,
  windows: ArrayLike<number>[],
  opts: { onProgress?: (p: CalibrationProgress) => void; gemm?: GemmBackend } = {},
): Promise<ChannelStatistics> {
  const T = checkWindows(windows);
  const c = model.config;
  using decoder = await GpuDecoder.create(cuda, model, {
    batch: windows.length,
    maxContext: T + 1,
    collectStats: true,
    maxPrefillRows: windows.length,
    gemm: opts.gemm,
  });
  const tokens = new Int32Array(windows.length);
  for (let t = 0; t < T; t++) {
    for (let b = 0; b < windows.length; b++) tokens[b] = windows[b][t];
    decoder.step(tokens);
    if ((t + 1) % 256 === 0 || t + 1 === T) {
      opts.onProgress?.({ done: t + 1, total: T, unit: "positions" });
    }
  }
  const stats = new ChannelStatistics(c.numLayers, c.numHeads, c.numKvHeads, c.headDim);
  stats.addSummedWindows(decoder.readStats(), T, windows.length);
  return stats;
}

export interface CalibrationResult {
  readonly stats: ChannelStatistics;
  readonly device: "gpu" | "cpu";
  readonly deviceName: string;
  readonly seconds: number;
}

/** Calibrates on the GPU when `device` allows and one is usable, else on the CPU. */
export async function calibrate(
  model: LoadedModel,
  windows: ArrayLike<number>[],
  opts: {
    device?: DeviceChoice | ResolvedDevice;
    onProgress?: (p: CalibrationProgress) => void;
    log?: (line: string) => void;
    /** The GPU decoder's GEMM (GpuDecoderOptions.gemm). */
    gemm?: GemmBackend;
  } = {},
): Promise<CalibrationResult> {
  const log = opts.log ?? console.error;
  const device = typeof opts.device === "object"
    ? opts.device
    : resolveDevice(opts.device ?? "auto", log);
  const started = performance.now();
  let stats: ChannelStatistics;
  if (device.kind === "gpu") {
    stats = await calibrateGpu(device.cuda, model, windows, {
      onProgress: opts.onProgress,
      gemm: opts.gemm,
    });
  } else {
    checkWindows(windows);
    stats = calibrateCpu(model, windows.map(windowInput), {
      onWindow: (i, n) => opts.onProgress?.({ done: i + 1, total: n, unit: "windows" }),
    });
  }
  return {
    stats,
    device: device.kind,
    deviceName: device.name,
    seconds: (performance.now() - started) / 1000,
  };
}

// ---- the statistics file ---------------------------------------------------------------------

export const STATISTICS_FORMAT = "double-sparsity-channel-statistics";

/**
 * `<name>.stats.json`: the summed statistics behind a channel config. `sums[kind]` is laid out
 * [layer][row][channel] (rows: query heads for q/qk, kv heads for k). ChannelStatistics keeps
 * the sum over windows of each window's per-position mean, so files written here hold those
 * with `positionsPerWindow` 1; loading calls `addSummedWindows(sums, positionsPerWindow,
 * windows)`, which reproduces the statistics exactly.
 */
export interface StatisticsFile {
  format: typeof STATISTICS_FORMAT;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  windows: number;
  positionsPerWindow: number;
  sums: Record<ChannelKind, number[]>;
  /** Where the statistics came from (informational). */
  source?: { data?: string; windowSize?: number; device?: string };
}

export function statisticsToFile(
  stats: ChannelStatistics,
  source?: StatisticsFile["source"],
): StatisticsFile {
  const sums = {} as Record<ChannelKind, number[]>;
  for (const kind of CHANNEL_KINDS) {
    const rows = kind === "k" ? stats.numKvHeads : stats.numHeads;
    const out: number[] = [];
    for (let l = 0; l < stats.numLayers; l++) {
      for (let h = 0; h < rows; h++) out.push(...stats.values(kind, l, h));
    }
    sums[kind] = out;
  }
  return {
    format: STATISTICS_FORMAT,
    numLayers: stats.numLayers,
    numHeads: stats.numHeads,
    numKvHeads: stats.numKvHeads,
    headDim: stats.headDim,
    windows: stats.windows,
    positionsPerWindow: 1,
    sums,
    ...(source ? { source } : {}),
  };
}

/** Writes the statistics file atomically (creating its directory). */
export function writeChannelStatistics(
  filePath: string,
  stats: ChannelStatistics,
  source?: StatisticsFile["source"],
): void {
  writeFileAtomic(filePath, JSON.stringify(statisticsToFile(stats, source)) + "\n");
}

/** Reads and validates a statistics file. */
export async function readStatisticsFile(filePath: string): Promise<StatisticsFile> {
  let raw: unknown;
  try {
    raw = JSON.parse(await Deno.readTextFile(filePath));
  } catch (e) {
    throw new InputError(filePath, `cannot read channel statistics: ${(e as Error).message}`);
  }
  const f = raw as Partial<StatisticsFile>;
  const problems: string[] = [];
  if (typeof raw !== "object" || raw === null) throw new InputError(filePath, `not a JSON object`);
  if (f.format !== STATISTICS_FORMAT) {
    problems.push(`format is ${JSON.stringify(f.format)}, expected "${STATISTICS_FORMAT}"`);
  }
  for (const key of ["numLayers", "numHeads", "numKvHeads", "headDim", "windows"] as const) {
    const v = f[key];
    if (typeof v !== "number" || !Number.isInteger(v) || v < 1) {
      problems.push(`${key} is ${JSON.stringify(v)}, expected a positive integer`);
    }
  }
  if (!(typeof f.positionsPerWindow === "number" && f.positionsPerWindow > 0)) {
    problems.push(`positionsPerWindow is ${JSON.stringify(f.positionsPerWindow)}, expected > 0`);
  }
  if (problems.length === 0) {
    for (const kind of CHANNEL_KINDS) {
      const rows = kind === "k" ? f.numKvHeads! : f.numHeads!;
      const want = f.numLayers! * rows * f.headDim!;
      const got = f.sums?.[kind];
      if (!Array.isArray(got)) problems.push(`sums.${kind} is missing`);
      else if (got.length !== want) {
        problems.push(`sums.${kind} has ${got.length} values, expected ${want}`);
      } else if (!got.every((x) => typeof x === "number" && Number.isFinite(x))) {
        problems.push(`sums.${kind} holds a value that is not a finite number`);
      }
    }
  }
  if (problems.length > 0) {
    throw new InputError(filePath, `invalid channel statistics:\n  - ${problems.join("\n  - ")}`);
  }
  return f as StatisticsFile;
}

/** Reads a statistics file back into ChannelStatistics (rankings and group rankings exact). */
export async function readChannelStatistics(filePath: string): Promise<ChannelStatistics> {
  const f = await readStatisticsFile(filePath);
  const stats = new ChannelStatistics(f.numLayers, f.numHeads, f.numKvHeads, f.headDim);
  stats.addSummedWindows(
    {
      q: Float64Array.from(f.sums.q),
      k: Float64Array.from(f.sums.k),
      qk: Float64Array.from(f.sums.qk),
    },
    f.positionsPerWindow,
    f.windows,
  );
  return stats;
}

// ---- cached channel files --------------------------------------------------------------------

/** The repository's default calibration text. */
export const DEFAULT_CALIBRATION_DATA = path.join(
  packageRoot(),
  "examples",
  "data",
  "python-calibration.txt",
);

/** `x.json` -> `x.stats.json`. */
export function statsPathFor(configPath: string): string {
  return configPath.replace(/(\.json)?$/, ".stats.json");
}

/**
 * `.cache/channels/<model dir name>.json` for the protocol calibration (16 windows of 2048
 * bytes), `<name>-<N>x<T>.json` for any other size, so a small calibration never stands in for
 * the protocol's.
 */
export function defaultChannelPath(
  modelDir: string,
  windows = PROTOCOL_CALIBRATION_WINDOWS,
  windowSize = PROTOCOL_WINDOW,
): string {
  const name = path.basename(path.resolve(modelDir));
  const protocol = windows === PROTOCOL_CALIBRATION_WINDOWS && windowSize === PROTOCOL_WINDOW;
  const file = protocol ? `${name}.json` : `${name}-${windows}x${windowSize}.json`;
  return path.join(packageRoot(), ".cache", "channels", file);
}

export interface ChannelFiles {
  readonly config: ChannelConfig;
  /** Present when a statistics file was found (needed for exact group rankings). */
  readonly stats?: ChannelStatistics;
  readonly path: string;
  readonly statsPath?: string;
  /** True when the calibration ran now. */
  readonly calibrated: boolean;
}

export interface LoadOrCalibrateOptions {
  readonly modelDir: string;
  /** An explicit channel config; default: the cached one for the calibration below. */
  readonly channelsPath?: string;
  /** An explicit statistics file; default: `<channels>.stats.json` when it exists. */
  readonly statsPath?: string;
  readonly calibrationData?: string;
  readonly calibrationWindows?: number;
  readonly calibrationWindowSize?: number;
  readonly device?: DeviceChoice | ResolvedDevice;
  readonly log?: (line: string) => void;
  /**
   * Whether a missing calibration larger than CPU_QUICK_CALIBRATION_BYTES may run on the CPU
   * (minutes). Without it such a run is refused before it starts, saying how to proceed.
   */
  readonly allowCpuCalibration?: boolean;
  /** The GPU calibration decoder's GEMM (GpuDecoderOptions.gemm). */
  readonly gemm?: GemmBackend;
}

/** Calibration input (windows x bytes) the CPU gets through in seconds, run without asking. */
export const CPU_QUICK_CALIBRATION_BYTES = 4096;

/**
 * The channel config (and statistics) to use: an explicit file, else the cached calibration
 * for these settings, else a fresh calibration written to the cache (config + statistics).
 */
export async function loadOrCalibrate(
  model: LoadedModel,
  opts: LoadOrCalibrateOptions,
): Promise<ChannelFiles> {
  const log = opts.log ?? console.error;
  const shape = model.config;
  const windows = opts.calibrationWindows ?? PROTOCOL_CALIBRATION_WINDOWS;
  const windowSize = opts.calibrationWindowSize ?? PROTOCOL_WINDOW;
  const configPath = opts.channelsPath ??
    defaultChannelPath(opts.modelDir, windows, windowSize);
  const siblingStats = statsPathFor(configPath);
  const statsPath = opts.statsPath ?? (existsSync(siblingStats) ? siblingStats : undefined);

  if (opts.channelsPath !== undefined || existsSync(configPath)) {
    const config = await readChannelConfig(configPath, shape);
    if (config.note) log(`note: ${config.note}`);
    const stats = statsPath ? await readChannelStatistics(statsPath) : undefined;
    log(`channels: ${configPath}${statsPath ? ` (statistics: ${statsPath})` : ""}`);
    return { config, stats, path: configPath, statsPath, calibrated: false };
  }

  const data = opts.calibrationData ?? DEFAULT_CALIBRATION_DATA;
  const onCpu = opts.device === "cpu" ||
    (typeof opts.device === "object" && opts.device.kind === "cpu");
  if (onCpu && windows * windowSize > CPU_QUICK_CALIBRATION_BYTES && !opts.allowCpuCalibration) {
    throw new DsError(
      `channels: ${configPath} not found, and calibrating ${windows} window(s) of ${windowSize} ` +
        `bytes on the CPU takes minutes; pass --channels FILE, run \`deno task calibrate\` ` +
        `(on a GPU), shrink --calibration-windows/--calibration-window-size, or allow it with ` +
        `--calibrate-on-cpu`,
    );
  }
  const input = await readWindows(data, windowSize, windows);
  log(
    `channels: ${configPath} not found; calibrating "qk" on ${windows} window(s) of ` +
      `${windowSize} bytes of ${data} ...`,
  );
  const run = await calibrate(model, input, {
    device: opts.device,
    log,
    gemm: opts.gemm,
    onProgress: (p) => log(`  calibration: ${p.done}/${p.total} ${p.unit}`),
  });
  log(`  calibrated on ${run.deviceName} in ${run.seconds.toFixed(1)} s`);
  await Deno.mkdir(path.dirname(configPath), { recursive: true });
  await writeChannelConfig(configPath, run.stats.toChannelConfig());
  const writtenStats = statsPathFor(configPath);
  writeChannelStatistics(writtenStats, run.stats, { data, windowSize, device: run.deviceName });
  log(`  wrote ${configPath} and ${writtenStats}`);
  return {
    config: run.stats.toChannelConfig(),
    stats: run.stats,
    path: configPath,
    statsPath: writtenStats,
    calibrated: true,
  };
}
