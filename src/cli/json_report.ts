/**
 * `--json FILE`, the one convention of every reporting command: the rows the command prints as
 * a table, and what it wrote, as one JSON document in FILE (written atomically, parent folders
 * made), and the path printed. Commands that also keep a default JSON file beside their
 * Markdown (eval, eval:retrieval, the benchmarks) write it to FILE instead when the flag is given.
 */
import { resolve } from "node:path";
import { writeFileAtomic } from "../util/fs.ts";

/** Writes `record` as indented JSON to `file` atomically and prints `wrote <path>`. */
export function writeJsonReport(file: string, record: unknown): string {
  const path = resolve(file);
  writeFileAtomic(path, JSON.stringify(record, null, 2) + "\n");
  console.log(`wrote ${path}`);
  return path;
}
