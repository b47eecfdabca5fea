/**
 * One progress line for every long step (calibration, evaluation, prefill, benchmarks):
 *
 *   [label] [########......................] 1,234/8,192 tokens, 5,100 tokens/s, ETA 1.4 s
 *
 * `renderProgress` is pure (done, total, elapsed seconds in; text out) so it is tested on the
 * CPU; `Progress` throttles it to stderr: at most every `intervalMs` (0.5 s) and always once
 * when the step completes, so a fast step prints one line and a slow one a line per half second.
 */

const BAR_WIDTH = 30;
const count = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

/** A rate with thousands separators; one decimal below 10 so slow steps do not read "0". */
function formatRate(perSecond: number): string {
  return perSecond < 10 ? perSecond.toFixed(1) : count.format(perSecond);
}

/** Seconds as "1.4 s", "2 min 05 s" or "1 h 03 min". */
export function formatDuration(seconds: number): string {
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const s = Math.round(seconds);
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
  const m = Math.round(s / 60);
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
}

/**
 * `[####....] done/total unit, rate unit/s, ETA t` (or `, took t` once done). Before any work
 * is done, or with no time elapsed, the rate and ETA are unknown and shown as "?".
 */
export function renderProgress(
  done: number,
  total: number,
  seconds: number,
  unit: string,
  width = BAR_WIDTH,
): string {
  const fraction = total > 0 ? Math.min(1, Math.max(0, done / total)) : 1;
  const filled = Math.round(width * fraction);
  const bar = `[${"#".repeat(filled)}${".".repeat(width - filled)}]`;
  const known = done > 0 && seconds > 0;
  const rate = known ? done / seconds : 0;
  const tail = done >= total
    ? `took ${formatDuration(seconds)}`
    : `ETA ${known ? formatDuration((total - done) / rate) : "?"}`;
  return `${bar} ${count.format(done)}/${count.format(total)} ${unit}, ` +
    `${known ? formatRate(rate) : "?"} ${unit}/s, ${tail}`;
}

export interface ProgressOptions {
  /** Where lines go (default stderr through console.error). */
  readonly write?: (line: string) => void;
  /** Milliseconds now (default performance.now). */
  readonly now?: () => number;
  /** The shortest gap between two lines in milliseconds (default 500). */
  readonly intervalMs?: number;
  /** When the step started, on the `now` clock (default: when the Progress is made). */
  readonly startMs?: number;
}

/** A throttled progress line for one step. */
export class Progress {
  readonly #label: string;
  readonly #unit: string;
  readonly #write: (line: string) => void;
  readonly #now: () => number;
  readonly #intervalMs: number;
  readonly #started: number;
  #lastPrinted: number;
  #finished = false;

  constructor(label: string, unit: string, opts: ProgressOptions = {}) {
    this.#label = label;
    this.#unit = unit;
    this.#write = opts.write ?? ((line) => console.error(line));
    this.#now = opts.now ?? (() => performance.now());
    this.#intervalMs = opts.intervalMs ?? 500;
    this.#started = opts.startMs ?? this.#now();
    this.#lastPrinted = this.#started;
  }

  /**
   * Reports `done` of `total` (in `unit`, default the constructor's); prints when the interval
   * has passed or the step is complete.
   */
  update(done: number, total: number, unit = this.#unit): void {
    if (this.#finished) return;
    const now = this.#now();
    const complete = done >= total;
    if (!complete && now - this.#lastPrinted < this.#intervalMs) return;
    this.#lastPrinted = now;
    this.#finished = complete;
    const seconds = (now - this.#started) / 1000;
    this.#write(`  [${this.#label}] ${renderProgress(done, total, seconds, unit)}`);
  }
}
