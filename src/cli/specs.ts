/** Loads the attention specs exported by the files of a directory (default export: one or many). */
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import type { AttentionSpec } from "../dsl/spec.ts";

export const EXAMPLE_SPECS_DIR = fileURLToPath(new URL("../../examples/specs", import.meta.url));
export const GENERATED_DIR = fileURLToPath(new URL("../../generated", import.meta.url));

export async function loadSpecs(dir = EXAMPLE_SPECS_DIR): Promise<AttentionSpec[]> {
  const files = [...Deno.readDirSync(dir)]
    .filter((e) => e.isFile && e.name.endsWith(".ts"))
    .map((e) => e.name)
    .sort();
  const specs: AttentionSpec[] = [];
  for (const name of files) {
    const mod = await import(pathToFileURL(join(dir, name)).href);
    const exported = mod.default as AttentionSpec | AttentionSpec[] | undefined;
    if (exported === undefined) throw new Error(`${join(dir, name)}: no default export of specs`);
    specs.push(...(Array.isArray(exported) ? exported : [exported]));
  }
  // A variant listed by several files is generated once.
  return specs.filter((s, i) => specs.findIndex((t) => t.variant === s.variant) === i);
}
