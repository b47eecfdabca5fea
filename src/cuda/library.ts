/**
 * Finding and opening a shared library through Deno FFI: an environment variable first, then
 * the usual sonames (the dynamic loader's search), then fixed directories. Failure lists every
 * path tried with the loader's reason.
 */
import { dirname, join } from "node:path";
import { NoGpuError } from "../util/errors.ts";

export interface LibrarySearch {
  /** What the library is, for messages ("NVRTC", "the CUDA driver"). */
  readonly what: string;
  /** Environment variable holding an explicit path. */
  readonly envVar: string;
  /** Names handed to the dynamic loader as they are (it searches LD_LIBRARY_PATH, ldconfig). */
  readonly sonames: readonly string[];
  /** Absolute paths tried last. */
  readonly paths: readonly string[];
}

/**
 * No candidate of a library loaded. A `NoGpuError`: without the driver (or NVRTC, or cuBLAS) no
 * GPU work can run. The message is one line; `tried` keeps every path with the loader's reason.
 */
export class LibraryNotFoundError extends NoGpuError {
  override name = "LibraryNotFoundError";
  /** `tried`: "path: reason" per candidate, in the order tried. */
  constructor(readonly what: string, readonly tried: readonly string[]) {
    super(`${what} could not be loaded (${summarizeTried(tried)})`);
  }
}

/** "reason: p1, p2" when every candidate failed the same way, else "p1: r1; p2: r2". */
function summarizeTried(tried: readonly string[]): string {
  const split = tried.map((t) => {
    const at = t.indexOf(": ");
    return at < 0 ? { path: t, reason: "" } : { path: t.slice(0, at), reason: t.slice(at + 2) };
  });
  const reasons = new Set(split.map((s) => s.reason));
  if (reasons.size === 1) {
    return `${[...reasons][0]}; tried ${split.map((s) => s.path).join(", ")}`;
  }
  return `tried ${tried.join("; ")}`;
}

/**
 * The loader's reason without the noise: Deno's dlopen message repeats its prefix ("Could not
 * open library: Could not open library: ...") and the loader repeats the path.
 */
export function loaderReason(e: unknown, path: string): string {
  const text = e instanceof Error ? e.message.split("\n")[0] : String(e);
  return text.replace(/^(?:Could not open library:\s*)+/, "").replace(`${path}: `, "");
}

export const CUDA_LIB_DIRS = [
  "/usr/local/cuda/lib64",
  "/usr/local/cuda/lib",
  "/usr/lib/x86_64-linux-gnu",
];

export function candidatesOf(search: LibrarySearch): string[] {
  const out: string[] = [];
  const fromEnv = Deno.env.get(search.envVar);
  if (fromEnv) out.push(fromEnv);
  out.push(...search.sonames, ...search.paths);
  return out;
}

/**
 * Opens the first candidate that loads. `before(path)` runs ahead of each attempt (NVRTC uses it
 * to preload its builtins library from the same directory).
 */
export function openLibrary<S extends Deno.ForeignLibraryInterface>(
  search: LibrarySearch,
  symbols: S,
  before?: (path: string) => void,
): { lib: Deno.DynamicLibrary<S>; path: string } {
  const tried: string[] = [];
  for (const path of candidatesOf(search)) {
    try {
      before?.(path);
      return { lib: Deno.dlopen(path, symbols), path };
    } catch (e) {
      const reason = loaderReason(e, path);
      tried.push(
        `${path}${
          path === Deno.env.get(search.envVar) ? ` (from ${search.envVar})` : ""
        }: ${reason}`,
      );
    }
  }
  throw new LibraryNotFoundError(search.what, tried);
}

export const dirOf = (path: string): string => (path.includes("/") ? dirname(path) : "");
export { join };

// ---- C strings and pointer arrays for FFI calls ----
const encoder = new TextEncoder();

/** A NUL-terminated UTF-8 copy of `s`. */
export const cString = (s: string): Uint8Array<ArrayBuffer> => encoder.encode(`${s}\0`);

/** An array of C string pointers; keep the returned `keepAlive` referenced until the call ends. */
export function cStringArray(items: readonly string[]): {
  array: BigUint64Array<ArrayBuffer>;
  keepAlive: Uint8Array[];
} {
  const keepAlive = items.map(cString);
  const array = new BigUint64Array(keepAlive.length);
  keepAlive.forEach((buf, i) => {
    array[i] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buf)));
  });
  return { array, keepAlive };
}

export function readCString(ptr: Deno.PointerValue): string {
  return ptr === null ? "" : Deno.UnsafePointerView.getCString(ptr);
}
