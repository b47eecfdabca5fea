/**
 * Whether a decode plan launches its kernels with Programmatic Dependent Launch (PDL): each kernel
 * of the step may be scheduled while the previous one still runs (its blocks resident and waiting
 * in `griddepcontrol.wait`), so the launch and ramp-up of the next kernel hide behind the tail of
 * the previous one, inside a CUDA graph too (stream capture records programmatic edges).
 *
 * It needs an sm_90+ device (griddepcontrol is PTX ISA 7.8, sm_90; on older targets the kernels
 * compile without it), a driver that exports cuLaunchKernelEx (12.0) and captures programmatic
 * launches into graphs (12.3, where graph edges gained their programmatic port).
 *
 * `DS_PDL` (auto = on where supported | 1 | 0, also on | off) overrides the default, off (it
 * measured 0.93x-1.05x); asking for it where it cannot run is an error, never a silent fallback.
 * Pure (no FFI): tested on the CPU.
 */
import { UsageError } from "../util/errors.ts";
import { parseSwitchChoice, type SwitchChoice } from "./switch_choice.ts";

/** What a caller asks for: on, off, or "auto" (on where supported). */
export type PdlChoice = SwitchChoice;
export const PDL_ENV = "DS_PDL";
/**
 * The choice when DS_PDL is unset: off, since bench:pdl measured 0.93x-1.05x on an H100
 * (docs/perf-notes.md, "Programmatic Dependent Launch").
 */
export const PDL_DEFAULT: PdlChoice = "off";
/** The oldest driver whose stream capture keeps programmatic launches (CUDA 12.3). */
export const PDL_MIN_DRIVER = 12030;
/** The oldest compute capability with griddepcontrol (Hopper). */
export const PDL_MIN_MAJOR = 9;

/** `value` as a choice; `source` names where it came from (a flag, the environment variable). */
export function parsePdlChoice(value: string | undefined, source: string): PdlChoice {
  return parseSwitchChoice(value, source, PDL_DEFAULT);
}

/** What decides support: the device and the driver. */
export interface PdlTarget {
  readonly computeCapability: readonly [number, number];
  /** cuDriverGetVersion, e.g. 12040. */
  readonly driverVersion: number;
  /** Whether the driver exports cuLaunchKernelEx. */
  readonly hasLaunchKernelEx: boolean;
}

/** Why PDL cannot run on `target`, or null when it can. */
export function pdlUnavailable(target: PdlTarget): string | null {
  const [major, minor] = target.computeCapability;
  if (major < PDL_MIN_MAJOR) {
    return `the device is sm_${major}${minor}; griddepcontrol needs sm_${PDL_MIN_MAJOR}0 or newer`;
  }
  if (!target.hasLaunchKernelEx) return "the CUDA driver does not export cuLaunchKernelEx";
  if (target.driverVersion < PDL_MIN_DRIVER) {
    return `CUDA driver ${target.driverVersion} is older than ${PDL_MIN_DRIVER} (12.3), the ` +
      "first to keep programmatic launches in captured graphs";
  }
  return null;
}

/** Whether to launch with PDL for `choice` on `target`; a UsageError when "on" cannot run. */
export function choosePdl(choice: PdlChoice, target: PdlTarget, source = PDL_ENV): boolean {
  if (choice === "off") return false;
  const why = pdlUnavailable(target);
  if (choice === "on" && why) {
    throw new UsageError(`${source}: programmatic dependent launch asked for, but ${why}`);
  }
  return why === null;
}
