/**
 * The one front door of every command (gen, calibrate, eval, the examples, the benchmarks, the
 * GPU tests): strict flag parsing, usage on `--help`, usage and exit code 2 on an unknown or
 * malformed flag, one line and a non-zero exit on any expected failure (a `DsError` or a file
 * system error), and a stack trace only under `DS_DEBUG=1`.
 *
 * Exit codes: 0 done, 1 an expected failure, 2 a usage error, 70 an internal error (a bug).
 */
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import { DsError, UsageError } from "../util/errors.ts";

export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;
export const EXIT_INTERNAL = 70;

export interface CommandSpec<O extends ParseArgsOptionsConfig> {
  /** How the command is named in messages ("gen", "decode"). */
  readonly name: string;
  /** The usage text printed by --help and after a usage error. */
  readonly usage: string;
  /** parseArgs options; `help` (-h) is added. */
  readonly options: O;
  /** Whether positional arguments are accepted (default: none). */
  readonly positionals?: boolean;
}

type Parsed<O extends ParseArgsOptionsConfig> = ReturnType<
  typeof parseArgs<{ options: O; strict: true; allowPositionals: boolean }>
>;

/** The typed flag values of a command's options. */
export type FlagValues<O extends ParseArgsOptionsConfig> = Parsed<O>["values"];

const debug = (): boolean => {
  try {
    return Deno.env.get("DS_DEBUG") === "1";
  } catch {
    return false;
  }
};

/** File-system and permission errors that a user causes (a missing or unreadable file). */
function isExpected(e: unknown): boolean {
  if (e instanceof DsError) return true;
  const errors = Deno.errors as Record<string, unknown>;
  return ["NotFound", "PermissionDenied", "NotCapable", "AlreadyExists", "IsADirectory"]
    .some((name) => typeof errors[name] === "function" && e instanceof (errors[name] as never));
}

/** Prints the failure the front door's way and exits; never returns. */
export function exitWithFailure(name: string, usage: string | undefined, e: unknown): never {
  if (debug()) {
    console.error(e instanceof Error ? (e.stack ?? e.message) : String(e));
  } else if (e instanceof UsageError) {
    console.error(`${name}: ${e.message}`);
    if (usage) console.error(`\nusage: ${usage}`);
  } else if (isExpected(e)) {
    console.error(`${name}: ${e instanceof Error ? e.message : String(e)}`);
  } else {
    const text = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    console.error(`${name}: internal error: ${text} (DS_DEBUG=1 prints the stack trace)`);
  }
  Deno.exit(e instanceof UsageError ? EXIT_USAGE : isExpected(e) ? EXIT_FAILURE : EXIT_INTERNAL);
}

let installedFor: string | undefined;

/**
 * Routes errors that escape a top-level script (an uncaught throw or a rejected top-level await)
 * through `exitWithFailure`, so scripts written as plain top-level code get the same treatment.
 */
function installHandlers(name: string, usage: string): void {
  if (installedFor !== undefined) return;
  installedFor = name;
  globalThis.addEventListener("unhandledrejection", (ev) => {
    ev.preventDefault();
    exitWithFailure(name, usage, ev.reason);
  });
  globalThis.addEventListener("error", (ev) => {
    ev.preventDefault();
    exitWithFailure(name, usage, (ev as ErrorEvent).error ?? ev);
  });
}

/**
 * `--flag -1` is read by parseArgs as a missing value followed by an option ("ambiguous"); a
 * negative number after a string flag is joined to it (`--flag=-1`) so that the flag's own check
 * says what is allowed.
 */
export function joinNegativeValues(
  args: readonly string[],
  options: ParseArgsOptionsConfig,
): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const name = a.startsWith("--") && !a.includes("=") ? a.slice(2) : undefined;
    const next = args[i + 1];
    if (
      name && options[name]?.type === "string" && next !== undefined && /^-[\d.]/.test(next)
    ) {
      out.push(`${a}=${next}`);
      i++;
    } else {
      out.push(a);
    }
  }
  return out;
}

/** Strict parse of `args` (default Deno.args), or a UsageError naming the problem. */
export function parseFlags<O extends ParseArgsOptionsConfig>(
  spec: CommandSpec<O>,
  args: readonly string[],
): Parsed<O> & { values: { help?: boolean } } {
  const options = { ...spec.options, help: { type: "boolean", short: "h" } } as O;
  try {
    return parseArgs({
      args: joinNegativeValues(args, options),
      options,
      strict: true,
      allowPositionals: spec.positionals ?? false,
    }) as Parsed<O> & { values: { help?: boolean } };
  } catch (e) {
    // node:util's messages are clear ("Unknown option '--x'"); drop its hints about '--'.
    const text = e instanceof Error ? e.message.split(". To specify")[0] : String(e);
    throw new UsageError(text);
  }
}

/**
 * The front door of a top-level script: parses the flags (usage on --help, exit 2 on a usage
 * error) and routes every later uncaught error through the one-line report.
 */
export function openCommand<O extends ParseArgsOptionsConfig>(
  spec: CommandSpec<O>,
  args: readonly string[] = Deno.args,
): Parsed<O> {
  installHandlers(spec.name, spec.usage);
  let parsed;
  try {
    parsed = parseFlags(spec, args);
  } catch (e) {
    exitWithFailure(spec.name, spec.usage, e);
  }
  if (parsed.values.help) {
    console.log(spec.usage);
    Deno.exit(0);
  }
  return parsed;
}

/** The front door of a command written as `main(values)`: its return value is the exit code. */
export async function runCommand<O extends ParseArgsOptionsConfig>(
  spec: CommandSpec<O>,
  main: (parsed: Parsed<O>) => Promise<number | void> | number | void,
  args: readonly string[] = Deno.args,
): Promise<never> {
  const parsed = openCommand(spec, args);
  try {
    Deno.exit((await main(parsed)) ?? 0);
  } catch (e) {
    exitWithFailure(spec.name, spec.usage, e);
  }
}

// ---- typed flag values: each names the flag, the value and what is allowed ----

export interface NumberRange {
  readonly min?: number;
  readonly max?: number;
  /** Whether `min` itself is excluded (e.g. top-p > 0). */
  readonly minExclusive?: boolean;
}

function rangeText(kind: string, r: NumberRange): string {
  const parts = [kind];
  if (r.min !== undefined) parts.push(`${r.minExclusive ? ">" : ">="} ${r.min}`);
  if (r.max !== undefined) parts.push(`${r.min !== undefined ? "and " : ""}<= ${r.max}`);
  return parts.join(" ");
}

function checkNumber(flag: string, text: string, integer: boolean, r: NumberRange): number {
  const n = text.trim() === "" ? NaN : Number(text);
  const below = r.min !== undefined && (r.minExclusive ? n <= r.min : n < r.min);
  const above = r.max !== undefined && n > r.max;
  if (!Number.isFinite(n) || (integer && !Number.isInteger(n)) || below || above) {
    throw new UsageError(
      `--${flag}: got ${JSON.stringify(text)}; allowed: ${
        rangeText(integer ? "an integer" : "a number", r)
      }`,
    );
  }
  return n;
}

/** An integer flag value in range; `undefined` stays undefined. */
export function intFlag(flag: string, text: string, range?: NumberRange): number;
export function intFlag(
  flag: string,
  text: string | undefined,
  range?: NumberRange,
): number | undefined;
export function intFlag(flag: string, text: string | undefined, range: NumberRange = {}) {
  return text === undefined ? undefined : checkNumber(flag, text, true, range);
}

/** A finite number flag value in range; `undefined` stays undefined. */
export function numberFlag(flag: string, text: string, range?: NumberRange): number;
export function numberFlag(
  flag: string,
  text: string | undefined,
  range?: NumberRange,
): number | undefined;
export function numberFlag(flag: string, text: string | undefined, range: NumberRange = {}) {
  return text === undefined ? undefined : checkNumber(flag, text, false, range);
}

/** A comma list of integers in range ("1,8,32"). */
export function intListFlag(flag: string, text: string, range: NumberRange = {}): number[] {
  const items = text.split(",").map((s) => s.trim());
  if (items.some((s) => s === "")) {
    throw new UsageError(
      `--${flag}: got ${JSON.stringify(text)}; allowed: a comma list of integers`,
    );
  }
  return items.map((s) => checkNumber(flag, s, true, range));
}

/**
 * A comma list of batch x context pairs ("4x32768,1x131072"): positive integers, contexts of at
 * least `minContext`.
 */
export function batchContextListFlag(
  flag: string,
  text: string,
  minContext = 1,
): [number, number][] {
  return text.split(",").map((item) => {
    const m = /^(\d+)x(\d+)$/.exec(item.trim());
    if (!m || Number(m[1]) < 1 || Number(m[2]) < minContext) {
      throw new UsageError(
        `--${flag}: got ${JSON.stringify(item)}; allowed: BxL with positive integers` +
          `${minContext > 1 ? ` (context >= ${minContext})` : ""}, e.g. 4x32768`,
      );
    }
    return [Number(m[1]), Number(m[2])];
  });
}

/** One of a fixed set of words. */
export function choiceFlag<T extends string>(flag: string, text: string, allowed: readonly T[]): T {
  if (!allowed.includes(text as T)) {
    throw new UsageError(
      `--${flag}: got ${JSON.stringify(text)}; allowed: ${allowed.join(", ")}`,
    );
  }
  return text as T;
}
