/** What the command-line front ends share: the bundled model's directory and integer flags. */
import * as path from "node:path";
import { packageRoot } from "../util/package_root.ts";
import { intFlag } from "./front_door.ts";

/** The bundled model every command uses by default. */
export const BUNDLED_MODEL_DIR = path.join(
  packageRoot(),
  "examples",
  "models",
  "tiny-code-llama-8k",
);

/** An integer flag >= 1, or a UsageError naming the flag, the value and what is allowed. */
export function positiveInt(flag: string, value: string): number {
  return intFlag(flag.replace(/^--/, ""), value, { min: 1 });
}
