/** What the command-line front ends share: the bundled model's directory and integer flags. */
import * as path from "node:path";
import { packageRoot } from "../util/package_root.ts";

/** The bundled model every command uses by default. */
export const BUNDLED_MODEL_DIR = path.join(
  packageRoot(),
  "examples",
  "models",
  "tiny-code-llama-8k",
);

/** An integer flag >= 1, or an error naming the flag, the value and what is allowed. */
export function positiveInt(flag: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) {
    throw new Error(`${flag}: got ${value}; expected an integer >= 1`);
  }
  return n;
}
