/**
 * The project's error family. Every failure a user can cause or meet (a bad flag, a malformed
 * file, an invalid spec, a missing GPU, a failing CUDA call) is a `DsError`; the CLI front door
 * prints those as one line and exits non-zero, and anything else is a bug that gets a trace.
 *
 * Pure: no Deno API, no FFI (ships in the npm package).
 */

/** Base of every expected failure. */
export class DsError extends Error {
  /** The class name, shown before the message. */
  override name = "DsError";
}

/** A command-line flag or argument that is unknown, missing its value or out of range. */
export class UsageError extends DsError {
  /** The class name, shown before the message. */
  override name = "UsageError";
}

/** How a value is shown in messages: strings quoted, everything else as JSON where possible. */
export function showValue(v: unknown): string {
  if (typeof v === "string") return JSON.stringify(v);
  if (v === undefined) return "undefined";
  if (typeof v === "number" || typeof v === "bigint") return String(v);
  try {
    const text = JSON.stringify(v) ?? String(v);
    return text.length > 80 ? `${text.slice(0, 77)}...` : text;
  } catch {
    return String(v);
  }
}

/**
 * A file (or a value standing in for one) that cannot be used: `file` names it, `detail` says
 * what is wrong. `InputError.field` builds the usual "field: got V; allowed: A" detail.
 */
export class InputError extends DsError {
  /** The class name, shown before the message. */
  override name = "InputError";
  /**
   * `file: detail`.
   *
   * @param file the file (or what stands for it) that cannot be used
   * @param detail what is wrong with it, and what is allowed
   */
  constructor(readonly file: string, readonly detail: string) {
    super(`${file}: ${detail}`);
  }

  /** `file: field "name": got <value>; allowed: <allowed>`. */
  static field(file: string, field: string, value: unknown, allowed: string): InputError {
    return new InputError(file, `field "${field}": got ${showValue(value)}; allowed: ${allowed}`);
  }
}

/** An argument of a public API function that is outside what the function accepts. */
export class ArgumentError extends DsError {
  /** The class name, shown before the message. */
  override name = "ArgumentError";
  /**
   * `fn: argument: got <value>; allowed: <allowed>`.
   *
   * @param fn the function called
   * @param argument the argument (or part of one, "scores[3]")
   * @param value the value it was given
   * @param allowed what it accepts
   */
  constructor(readonly fn: string, readonly argument: string, value: unknown, allowed: string) {
    super(`${fn}: ${argument}: got ${showValue(value)}; allowed: ${allowed}`);
  }
}

/** A failing call into the GPU stack (driver, NVRTC, cuBLAS) or a GPU-side limit. */
export class DeviceError extends DsError {
  /** The class name, shown before the message. */
  override name = "DeviceError";
}

/** No usable GPU: no driver library, no device, or the user asked for one that is not there. */
export class NoGpuError extends DeviceError {
  /** The class name, shown before the message. */
  override name = "NoGpuError";
}

/** A sequence would grow past the context its caches were sized for (refused before any work). */
export class ContextFullError extends DsError {
  /** The class name, shown before the message. */
  override name = "ContextFullError";
}

/** The first line of an error's message (for one-line reports). */
export function firstLine(e: unknown): string {
  const text = e instanceof Error ? e.message : String(e);
  return text.split("\n")[0];
}
