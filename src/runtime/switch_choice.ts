/**
 * The setting of an on/off/auto switch of the decode plan ($DS_PDL, $DS_PERSISTENT, their
 * options), spelled auto | on | 1 | off | 0 in any case. Pure (no FFI): tested on the CPU.
 */
import { UsageError } from "../util/errors.ts";

/** What a caller asks for: on, off, or "auto" (the switch's own rule decides). */
export type SwitchChoice = "auto" | "on" | "off";

const SPELLINGS: ReadonlyMap<string, SwitchChoice> = new Map([
  ["auto", "auto"],
  ["on", "on"],
  ["1", "on"],
  ["off", "off"],
  ["0", "off"],
]);

/**
 * `value` as a choice (`fallback` when unset or blank); `source` names where it came from (a
 * flag, the environment variable), and any other spelling is a UsageError naming it.
 */
export function parseSwitchChoice(
  value: string | undefined,
  source: string,
  fallback: SwitchChoice,
): SwitchChoice {
  const v = (value ?? "").trim().toLowerCase();
  const choice = v === "" ? fallback : SPELLINGS.get(v);
  if (!choice) {
    throw new UsageError(
      `${source}: got ${JSON.stringify(value)}; allowed: ${[...SPELLINGS.keys()].join(", ")}`,
    );
  }
  return choice;
}
