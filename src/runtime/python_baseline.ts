/**
 * Runs a PyTorch baseline of the benchmarks: a python3 script under bench/ that reads a JSON job
 * file and writes a JSON result file (`python3 bench/<script> jobs.json out.json`), in its own
 * process so that its GPU memory is freed before the generated kernels run. Its stdout is shown
 * as it runs; the temporary files are removed afterwards.
 */
import { join } from "node:path";
import { packageRoot } from "../util/package_root.ts";

/** The script's parsed output, or why there is none (python3 missing, the script failed). */
export type PythonBenchResult =
  | { readonly ok: true; readonly out: Record<string, unknown> }
  | { readonly ok: false; readonly why: string };

/** Runs `python3 bench/<script>` on `jobs`; never throws for a missing python3 or a failure. */
export function runPythonBench(
  script: string,
  jobs: unknown,
  opts: { stderr?: "inherit" | "null" } = {},
): PythonBenchResult {
  const tmp = Deno.makeTempDirSync({ prefix: "ds-torch-" });
  try {
    Deno.writeTextFileSync(join(tmp, "jobs.json"), JSON.stringify(jobs));
    const run = new Deno.Command("python3", {
      args: [join(packageRoot(), "bench", script), join(tmp, "jobs.json"), join(tmp, "out.json")],
      stdout: "inherit",
      stderr: opts.stderr ?? "inherit",
      env: { PYTHONUNBUFFERED: "1" },
    }).outputSync();
    if (!run.success) return { ok: false, why: `python3 bench/${script} failed` };
    return { ok: true, out: JSON.parse(Deno.readTextFileSync(join(tmp, "out.json"))) };
  } catch (e) {
    return { ok: false, why: `python3 not available (${e instanceof Error ? e.message : e})` };
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
}
