/** Loads the attention specs exported by the files of a directory (default export: one or many). */
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { type AttentionSpec, ensureSpec, SpecError } from "../dsl/spec.ts";
import { firstLine, InputError } from "../util/errors.ts";

export const EXAMPLE_SPECS_DIR = fileURLToPath(new URL("../../examples/specs", import.meta.url));
export const GENERATED_DIR = fileURLToPath(new URL("../../generated", import.meta.url));

const ALLOWED_EXPORT = "a spec from defineAttention() or an array of them";

/** The specs a module's default export holds; anything else is an error naming the file. */
export function specsOfExport(exported: unknown, file: string): AttentionSpec[] {
  if (exported === undefined) {
    throw new InputError(file, `no default export; allowed: ${ALLOWED_EXPORT}`);
  }
  const items = Array.isArray(exported) ? exported : [exported];
  return items.map((item, i) => {
    const where = Array.isArray(exported) ? `default export [${i}]` : "default export";
    try {
      return ensureSpec(item, where);
    } catch (e) {
      if (!(e instanceof SpecError)) throw e;
      throw new InputError(file, `${e.problems.join("; ")}; allowed: ${ALLOWED_EXPORT}`);
    }
  });
}

export async function loadSpecs(dir = EXAMPLE_SPECS_DIR): Promise<AttentionSpec[]> {
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(dir)];
  } catch (e) {
    throw new InputError(dir, `cannot read the specs directory: ${firstLine(e)}`);
  }
  const files = entries
    .filter((e) => e.isFile && e.name.endsWith(".ts"))
    .map((e) => e.name)
    .sort();
  const specs: AttentionSpec[] = [];
  for (const name of files) {
    const file = join(dir, name);
    let mod: { default?: unknown };
    try {
      mod = await import(pathToFileURL(file).href);
    } catch (e) {
      // A spec module that throws SpecError at import (defineAttention on bad input) says why.
      if (e instanceof SpecError) throw new InputError(file, e.message);
      throw new InputError(file, `cannot load the spec module: ${firstLine(e)}`);
    }
    specs.push(...specsOfExport(mod.default, file));
  }
  // A variant listed by several files is generated once.
  return specs.filter((s, i) => specs.findIndex((t) => t.variant === s.variant) === i);
}
