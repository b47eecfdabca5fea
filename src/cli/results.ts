/**
 * Where commands write their result files by default: `$DS_RESULTS_DIR`, else `./results/` in
 * the working directory. Never inside the package itself (an installed package may be read-only,
 * and a run must not change the repository's committed records); commands print the path.
 */
import { join, resolve } from "node:path";

export function defaultResultsDir(): string {
  const explicit = Deno.env.get("DS_RESULTS_DIR");
  return resolve(explicit && explicit !== "" ? explicit : join(Deno.cwd(), "results"));
}

/** `<results dir>/<file>`. */
export function defaultResultsPath(file: string): string {
  return join(defaultResultsDir(), file);
}

/** A device name as a file-name part: "NVIDIA H100 80GB HBM3" -> "NVIDIA-H100-80GB-HBM3". */
export function cardSlug(deviceName: string): string {
  return deviceName.replace(/[^A-Za-z0-9]+/g, "-").replace(/^-|-$/g, "");
}
