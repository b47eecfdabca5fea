/** Helpers shared by the foundation tests (CPU only). */
import { delimiter, join } from "node:path";
import { fileURLToPath } from "node:url";
import { existsSync, statSync } from "node:fs";

/** The repository root (the directory above tests/). */
export const REPO_ROOT = fileURLToPath(new URL("../", import.meta.url));

export const repoPath = (...parts: string[]): string => join(REPO_ROOT, ...parts);

/** Deterministic uniform [0, 1) generator (mulberry32), so failures reproduce. */
export { mulberry32 as seededRandom } from "../src/util/random.ts";

/** Uniform values in [lo, hi). */
export function randomArray(random: () => number, n: number, lo = -1, hi = 1): Float64Array {
  return Float64Array.from({ length: n }, () => lo + (hi - lo) * random());
}

/** A random permutation of 0..n-1. */
export function randomPermutation(random: () => number, n: number): number[] {
  const p = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
}

/** Runs `fn` with a fresh temporary directory, removed afterwards. */
export async function withTempDir<T>(fn: (dir: string) => T | Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "ds-test-" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Largest |a[i] - b[i]| relative to max(1, |b[i]|). */
export function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new RangeError(`lengths differ: ${a.length} vs ${b.length}`);
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    worst = Math.max(worst, Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(b[i])));
  }
  return worst;
}

/** `ptxas`: $PTXAS, else the first on PATH, else /usr/local/cuda/bin/ptxas; undefined if none. */
export function findPtxas(): string | undefined {
  const fromEnv = Deno.env.get("PTXAS");
  if (fromEnv) return fromEnv;
  const dirs = (Deno.env.get("PATH") ?? "").split(delimiter).filter((d) => d !== "");
  // Last: the copy scripts/fetch-nvrtc.sh takes from Debian when no CUDA toolkit is installed.
  const projectTools = repoPath(".cache", "cuda-tools");
  for (const dir of [...dirs, "/usr/local/cuda/bin", projectTools]) {
    const candidate = join(dir, "ptxas");
    if (existsSync(candidate) && statSync(candidate).isFile()) return candidate;
  }
  return undefined;
}

/** First differing line of two texts, for readable failure messages. */
export function firstDifference(actual: string, expected: string): string {
  const a = actual.split("\n");
  const e = expected.split("\n");
  for (let i = 0; i < Math.max(a.length, e.length); i++) {
    if (a[i] !== e[i]) {
      return `line ${i + 1}:\n  expected: ${JSON.stringify(e[i])}\n  actual:   ${
        JSON.stringify(a[i])
      }`;
    }
  }
  return "no line differs";
}

/** What a script run by {@linkcode runScript} did. */
export interface ScriptResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly ms: number;
}

/** Runs `deno run -A <script> ...args` from the repository root (env: extra variables). */
export async function runScript(
  script: string,
  args: readonly string[],
  env: Record<string, string> = {},
): Promise<ScriptResult> {
  const started = performance.now();
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, ...args],
    cwd: REPO_ROOT,
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  return {
    code: out.code,
    stdout: text(out.stdout),
    stderr: text(out.stderr),
    ms: performance.now() - started,
  };
}
