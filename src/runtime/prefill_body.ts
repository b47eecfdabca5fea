/**
 * Which body of the prefill kernel a variant loads: the sm_90a one on warpgroup MMA (wgmma)
 * where it can run, else the mma.sync one. wgmma needs PTX ISA 8.0 (NVRTC 12 or newer), the
 * sm_90a target (so an sm_90 device: Hopper) and a variant that has the body (head dim <= 128,
 * `Tuning.prefillWgmma`). Both bodies take the same arguments, grid and tile table; they differ in
 * compile options and in the block's threads and dynamic shared memory, decided here.
 *
 * The wgmma body comes in variants (src/codegen/prefill_wgmma_variants.ts), applied to the tuning
 * before it gets here; the plan names the one it compiles and whether its grid is heads-first.
 *
 * `DS_PREFILL_BODY` (auto | mma | wgmma) overrides the default choice "auto"; asking for wgmma
 * where it cannot run is an error, never a silent fallback. Pure (no FFI): tested on the CPU.
 */
import type { Tuning } from "../codegen/kernels.ts";
import { UsageError } from "../util/errors.ts";
import { wgmmaVariantOf, type WgmmaVariantTuning } from "../codegen/prefill_wgmma_variants.ts";

/** The two bodies of the prefill kernel. */
export type PrefillBody = "mma" | "wgmma";
/** What a caller asks for: a body, or "auto" (wgmma where it can run). */
export type PrefillBodyChoice = "auto" | PrefillBody;
export const PREFILL_BODY_CHOICES: readonly PrefillBodyChoice[] = ["auto", "mma", "wgmma"];
/** The environment variable that overrides the default choice. */
export const PREFILL_BODY_ENV = "DS_PREFILL_BODY";

/** `value` as a choice; `source` names where it came from (a flag, the environment variable). */
export function parsePrefillBody(value: string | undefined, source: string): PrefillBodyChoice {
  const v = (value ?? "auto").trim().toLowerCase() || "auto";
  if (!PREFILL_BODY_CHOICES.includes(v as PrefillBodyChoice)) {
    throw new UsageError(
      `${source}: got ${JSON.stringify(value)}; allowed: ${PREFILL_BODY_CHOICES.join(", ")}`,
    );
  }
  return v as PrefillBodyChoice;
}

/** Where the prefill kernel is compiled: the NVRTC version and the device's architecture. */
export interface PrefillTarget {
  /** NVRTC's major version. */
  readonly nvrtcMajor: number;
  /** The device, `sm_XY`. */
  readonly arch: string;
}

/** How to compile and launch the chosen body. */
export interface PrefillBodyPlan {
  readonly body: PrefillBody;
  /** Why this body (for logs and reports). */
  readonly reason: string;
  /** `--gpu-architecture` target. */
  readonly arch: string;
  /** Extra NVRTC options. */
  readonly extraOptions: readonly string[];
  /** Threads per block. */
  readonly threads: number;
  /** Dynamic shared memory per block, bytes. */
  readonly sharedBytes: number;
  /** The wgmma body's variant (src/codegen/prefill_wgmma_variants.ts); null for mma.sync. */
  readonly wgmmaVariant: string | null;
  /** The grid is (heads, tiles) instead of (tiles, heads). */
  readonly headsFastest: boolean;
  /**
   * The body reads K/V through TMA (the tma schedule): the launch passes, in place of the K and V
   * pool pointers, the device addresses of their tensor maps (src/runtime/kv_tensor_maps.ts).
   */
  readonly kvTensorMaps: boolean;
}

/** Why the wgmma body cannot run on `target`, or null when it can. */
export function wgmmaUnavailable(
  tuning: Pick<Tuning, "prefillWgmma">,
  target: PrefillTarget,
): string | null {
  if (!tuning.prefillWgmma) return "this variant has no wgmma body (head dim 256)";
  if (target.nvrtcMajor < 12) {
    return `NVRTC ${target.nvrtcMajor} cannot emit wgmma (PTX ISA 8.0 needs NVRTC 12 or newer)`;
  }
  if (target.arch !== "sm_90") return `the device is ${target.arch}; wgmma needs sm_90 (sm_90a)`;
  return null;
}

/** The body for `choice` on `target`; a UsageError when wgmma is asked for and cannot run. */
export function choosePrefillBody(
  choice: PrefillBodyChoice,
  tuning:
    & Pick<
      Tuning,
      | "prefillWgmma"
      | "prefillThreads"
      | "prefillSharedBytes"
      | "prefillWgmmaThreads"
      | "prefillWgmmaSharedBytes"
    >
    & WgmmaVariantTuning,
  target: PrefillTarget,
): PrefillBodyPlan {
  const mma = (reason: string): PrefillBodyPlan => ({
    body: "mma",
    reason,
    arch: target.arch,
    extraOptions: [],
    threads: tuning.prefillThreads,
    sharedBytes: tuning.prefillSharedBytes,
    wgmmaVariant: null,
    headsFastest: false,
    kvTensorMaps: false,
  });
  if (choice === "mma") return mma("mma.sync body asked for");
  const unavailable = wgmmaUnavailable(tuning, target);
  if (unavailable !== null) {
    if (choice === "wgmma") {
      throw new UsageError(`prefill body wgmma asked for, but ${unavailable}`);
    }
    return mma(unavailable);
  }
  return {
    body: "wgmma",
    reason: choice === "wgmma" ? "wgmma body asked for" : "sm_90 device and NVRTC >= 12",
    arch: "sm_90a",
    extraOptions: ["-DDS_PREFILL_WGMMA"],
    threads: tuning.prefillWgmmaThreads,
    sharedBytes: tuning.prefillWgmmaSharedBytes,
    wgmmaVariant: wgmmaVariantOf(tuning),
    headsFastest: tuning.prefillWgmmaHeadsFastest,
    kvTensorMaps: tuning.prefillWgmmaSchedule === "tma",
  };
}

/**
 * The (body, wgmma variant) pairs to load when `bodies` and `wgmmaVariants` are both asked for:
 * mma.sync once, every other choice (wgmma, or auto, which may resolve to it) once per variant.
 */
export function prefillRuns(
  bodies: readonly PrefillBodyChoice[],
  wgmmaVariants: readonly string[],
): [PrefillBodyChoice, string | undefined][] {
  return bodies.flatMap((b): [PrefillBodyChoice, string | undefined][] =>
    b === "mma" || wgmmaVariants.length === 0
      ? [[b, undefined]]
      : wgmmaVariants.map((v): [PrefillBodyChoice, string] => [b, v])
  );
}
