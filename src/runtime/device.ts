/**
 * Choosing where a command runs: the GPU when one can be opened and the user did not refuse it,
 * otherwise the CPU, with the reason said once.
 */
import { type Cuda, cuda as openCuda } from "../cuda/driver.ts";

export type DeviceChoice = "auto" | "cpu" | "gpu";
export const DEVICE_CHOICES: readonly DeviceChoice[] = ["auto", "cpu", "gpu"];

export type ResolvedDevice =
  | { readonly kind: "gpu"; readonly cuda: Cuda; readonly name: string }
  | { readonly kind: "cpu"; readonly name: string; readonly reason: string };

export function parseDeviceChoice(value: string | undefined): DeviceChoice {
  const v = (value ?? "auto").toLowerCase();
  if (!DEVICE_CHOICES.includes(v as DeviceChoice)) {
    throw new Error(
      `--device: got ${JSON.stringify(value)}; allowed: ${DEVICE_CHOICES.join(", ")}`,
    );
  }
  return v as DeviceChoice;
}

/**
 * The GPU when one is usable and not refused by `choice`; otherwise the CPU, with the reason.
 * A GPU that cannot be opened (no driver, no device, no FFI permission) falls back to the CPU
 * even under "gpu", saying so through `log`.
 */
export function resolveDevice(
  choice: DeviceChoice,
  log: (line: string) => void = console.error,
): ResolvedDevice {
  if (choice === "cpu") return { kind: "cpu", name: "CPU", reason: "--device cpu" };
  try {
    const cuda = openCuda();
    return { kind: "gpu", cuda, name: cuda.info.name };
  } catch (e) {
    const why = (e instanceof Error ? e.message : String(e)).split("\n")[0].replace(
      /;? tried:$/,
      "",
    );
    log(
      `${choice === "gpu" ? "--device gpu was requested, but " : ""}no usable GPU (${why}); ` +
        `running on the CPU instead`,
    );
    return { kind: "cpu", name: "CPU", reason: `no usable GPU: ${why}` };
  }
}
