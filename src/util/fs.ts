/**
 * File writes that never leave a half-written file: write a temporary file in the same
 * directory, then rename it over the target (atomic on POSIX file systems). node:fs, so the code
 * generator can use it under Node too.
 */
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";

let counter = 0;

export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.${Date.now().toString(36)}.${counter++}.tmp`;
  try {
    writeFileSync(tmp, data);
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}

/** Writes only when the content differs; returns whether the file changed. */
export function writeIfChanged(path: string, text: string): boolean {
  let old: string | undefined;
  try {
    old = readFileSync(path, "utf8");
  } catch {
    old = undefined;
  }
  if (old === text) return false;
  writeFileAtomic(path, text);
  return true;
}
