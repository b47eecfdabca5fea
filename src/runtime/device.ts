/**
 * Choosing where a command runs: the GPU when one can be opened and the user did not refuse it,
 * otherwise the CPU, with the reason said once. Asking for the GPU where there is none is an error.
 */
import { type Cuda, cuda as openCuda } from "../cuda/driver.ts";
import { DsError, firstLine, NoGpuError, UsageError } from "../util/errors.ts";

export type DeviceChoice = "auto" | "cpu" | "gpu";
export const DEVICE_CHOICES: readonly DeviceChoice[] = ["auto", "cpu", "gpu"];

export type ResolvedDevice =
  | { readonly kind: "gpu"; readonly cuda: Cuda; readonly name: string }
  | { readonly kind: "cpu"; readonly name: string; readonly reason: string };

export function parseDeviceChoice(value: string | undefined): DeviceChoice {
  const v = (value ?? "auto").toLowerCase();
  if (!DEVICE_CHOICES.includes(v as DeviceChoice)) {
    throw new UsageError(
      `--device: got ${JSON.stringify(value)}; allowed: ${DEVICE_CHOICES.join(", ")}`,
    );
  }
  return v as DeviceChoice;
}

/** Why the GPU cannot be opened, in one line. */
function gpuUnusableReason(e: unknown): string {
  return firstLine(e);
}

/**
 * The process's CUDA context, or a NoGpuError saying that `what` needs a GPU and why none is
 * usable (no driver, no device, no FFI permission).
 */
export function requireGpu(what: string): Cuda {
  try {
    return openCuda();
  } catch (e) {
    if (e instanceof DsError && !(e instanceof NoGpuError)) throw e;
    throw new NoGpuError(`${what} needs a CUDA GPU; none is usable here (${gpuUnusableReason(e)})`);
  }
}

/**
 * The GPU when one is usable and not refused by `choice`; otherwise the CPU, with the reason.
 * Under "auto" a GPU that cannot be opened falls back to the CPU, saying so through `log`; under
 * "gpu" it is an error (a NoGpuError): the user asked for the GPU and a silent multi-minute CPU
 * run would be the wrong answer.
 */
export function resolveDevice(
  choice: DeviceChoice,
  log: (line: string) => void = console.error,
): ResolvedDevice {
  if (choice === "cpu") return { kind: "cpu", name: "CPU", reason: "--device cpu" };
  if (choice === "gpu") {
    const cuda = requireGpu("--device gpu");
    return { kind: "gpu", cuda, name: cuda.info.name };
  }
  try {
    const cuda = openCuda();
    return { kind: "gpu", cuda, name: cuda.info.name };
  } catch (e) {
    const why = gpuUnusableReason(e);
    log(`no usable GPU (${why}); running on the CPU instead (--device auto)`);
    return { kind: "cpu", name: "CPU", reason: `no usable GPU: ${why}` };
  }
}
