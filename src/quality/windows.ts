// Evaluation and calibration windows of the protocol: window i is bytes
// [i*T, (i+1)*T + 1) of a text file; the model reads the first T bytes and is scored on
// the next T (each byte predicts its successor).

import { type CpuAttention, CpuDecoder } from "../decoding/cpu_decoder.ts";
import type { LoadedModel } from "../checkpoint/weights.ts";
import { InputError, UsageError } from "../util/errors.ts";

/** Window length T of the protocol, in bytes (= tokens for byte-level models). */
export const PROTOCOL_WINDOW = 2048;
/** Window counts of the protocol. */
export const PROTOCOL_EVAL_WINDOWS = 48;
export const PROTOCOL_CALIBRATION_WINDOWS = 16;

/**
 * Cuts `count` windows of T+1 bytes (overlapping by one byte) from `bytes`.
 * `source` names the data in errors.
 */
export function cutWindows(
  bytes: Uint8Array,
  windowLength: number,
  count: number,
  source = "input",
): Uint8Array[] {
  if (!Number.isInteger(windowLength) || windowLength <= 0) {
    throw new Error(`cutWindows: window length ${windowLength} must be a positive integer`);
  }
  if (!Number.isInteger(count) || count <= 0) {
    throw new Error(`cutWindows: window count ${count} must be a positive integer`);
  }
  const needed = count * windowLength + 1;
  if (bytes.length < needed) {
    throw new InputError(
      source,
      `${bytes.length} bytes is too short for ${count} window(s) of ${windowLength} ` +
        `(needs ${needed} bytes)`,
    );
  }
  return Array.from(
    { length: count },
    (_, i) => bytes.subarray(i * windowLength, (i + 1) * windowLength + 1),
  );
}

/**
 * A window of T bytes feeds T positions to the model: more than it has would be evaluated past
 * its trained range and report a number that means nothing.
 */
export function checkWindowFits(flag: string, windowSize: number, positions: number): void {
  if (windowSize > positions) {
    throw new UsageError(
      `${flag}: got ${windowSize}; allowed: at most ${positions} (the model's ` +
        `max_position_embeddings)`,
    );
  }
}

/** Reads a file and cuts its windows. */
export async function readWindows(
  filePath: string,
  windowLength = PROTOCOL_WINDOW,
  count = PROTOCOL_EVAL_WINDOWS,
): Promise<Uint8Array[]> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(filePath);
  } catch (e) {
    throw new InputError(filePath, `cannot read: ${(e as Error).message}`);
  }
  return cutWindows(bytes, windowLength, count, filePath);
}

/** The T tokens a window's model input holds (all but the last byte). */
export function windowInput(window: ArrayLike<number>): number[] {
  return Array.from(window).slice(0, window.length - 1);
}

/** The T targets of a window (all but the first byte). */
export function windowTargets(window: ArrayLike<number>): number[] {
  return Array.from(window).slice(1);
}

/** -log softmax(logits)[target] in float64 (natural log). */
export function crossEntropy(
  logits: Float32Array,
  start: number,
  vocab: number,
  target: number,
): number {
  let max = -Infinity;
  for (let i = 0; i < vocab; i++) if (logits[start + i] > max) max = logits[start + i];
  let sum = 0;
  for (let i = 0; i < vocab; i++) sum += Math.exp(logits[start + i] - max);
  return max + Math.log(sum) - logits[start + target];
}

/**
 * Teacher-forced bits per byte: cross-entropy summed over every target of every window,
 * divided by (targets * ln 2). Each window starts from an empty cache.
 */
export function evaluateBitsPerByteCpu(
  model: LoadedModel,
  windows: ArrayLike<number>[],
  attention?: CpuAttention,
): number {
  if (windows.length === 0) throw new Error("evaluateBitsPerByteCpu: no windows");
  const vocab = model.config.vocabSize;
  const decoder = new CpuDecoder(model, { attention });
  let nats = 0;
  let targets = 0;
  for (const window of windows) {
    if (window.length < 2) {
      throw new Error(
        `evaluateBitsPerByteCpu: a window of ${window.length} token(s) has no target`,
      );
    }
    decoder.reset();
    const input = windowInput(window);
    const logits = decoder.forward(input);
    for (let t = 0; t < input.length; t++) {
      nats += crossEntropy(logits, t * vocab, vocab, window[t + 1]);
    }
    targets += input.length;
  }
  return nats / (targets * Math.LN2);
}
