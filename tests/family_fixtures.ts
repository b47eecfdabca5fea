/**
 * The model-family fixtures written by scripts/hf_reference.py (transformers 5.17 on the GPU
 * machine) under tests/fixtures/families/<family>/: a scaled-down random-weight checkpoint in
 * the Hugging Face layout (config.json, safetensors, for one family an index and a
 * tokenizer.json) and reference.json with transformers' logits and RoPE tables. Shared by the
 * CPU test (checkpoint_families_test.ts) and the GPU check (gpu/families.ts).
 */
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { slidingWindowLimit } from "../src/checkpoint/config.ts";
import type { LoadedModel } from "../src/checkpoint/weights.ts";
import { CpuDecoder } from "../src/decoding/cpu_decoder.ts";
import type { KvDtype } from "../src/dsl/spec.ts";
import { maxRowRelativeError, relativeError } from "./gpu/support.ts";

export { maxRowRelativeError, relativeError };

export const FAMILIES_DIR = fileURLToPath(new URL("./fixtures/families/", import.meta.url));

/** Every family the reference script writes, and the RoPE type transformers reports for it. */
export const FAMILIES = {
  "llama3-tied": "llama3",
  "llama3-untied": "llama3",
  "qwen2-yarn": "yarn",
  "llama-linear": "linear",
  "mistral-window": "default",
} as const;
export type FamilyName = keyof typeof FAMILIES;
export const FAMILY_NAMES = Object.keys(FAMILIES) as FamilyName[];

/** Positions below this are inside the original context; the scaling matters past it. */
export const ORIGINAL_MAX_POSITIONS = 64;

export interface FamilyReference {
  family: string;
  transformers: string;
  storageDtype: string;
  hfRopeType: string;
  invFreq: number[];
  attentionScaling: number;
  promptText: string | null;
  inputIds: number[];
  /** Prompt positions whose logits are stored, ascending; the last is the prompt's last. */
  logitPositions: number[];
  /** [logitPositions.length][vocab] */
  prefillLogits: Float32Array;
  greedy: number[];
  /** [greedy.length][vocab]: logits after feeding greedy[i] at position inputIds.length + i. */
  stepLogits: Float32Array;
  /**
   * transformers run as its users run it: the checkpoint in its own dtype on CUDA (default
   * attention), at the same prompt positions and feeding the same greedy ids. The reference's
   * own 16-bit noise floor. Undefined in fixtures written before the script recorded it.
   */
  native?: NativeReference;
}

export interface NativeReference {
  /** torch dtype name, "float16" or "bfloat16" (the checkpoint's). */
  dtype: string;
  device: string;
  /** [logitPositions.length][vocab] */
  prefillLogits: Float32Array;
  /** [greedy.length][vocab] */
  stepLogits: Float32Array;
}

/** How the fixtures are regenerated (on the GPU machine: transformers, torch and CUDA). */
export const REGENERATE_FIXTURES =
  "python3 scripts/hf_reference.py /tmp/fam --expect tests/fixtures/families && " +
  "tar -xf /tmp/fam/families.tar -C tests/fixtures";

function float32s(base64: string, what: string): Float32Array {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  if (bytes.length % 4 !== 0) throw new Error(`${what}: ${bytes.length} bytes is not float32`);
  return new Float32Array(bytes.buffer);
}

export function familyDir(name: FamilyName): string {
  return path.join(FAMILIES_DIR, name);
}

export async function readFamilyReference(name: FamilyName): Promise<FamilyReference> {
  const file = path.join(familyDir(name), "reference.json");
  return parseFamilyReference(JSON.parse(await Deno.readTextFile(file)), file);
}

/** reference.json's fields (snake_case, base64 float32 logits); `file` names it in errors. */
// deno-lint-ignore no-explicit-any
export function parseFamilyReference(raw: any, file: string): FamilyReference {
  const native = raw.native_prefill_logits_f32_b64 === undefined ? undefined : {
    dtype: raw.native_dtype,
    device: raw.native_device,
    prefillLogits: float32s(
      raw.native_prefill_logits_f32_b64,
      `${file}: native_prefill_logits_f32_b64`,
    ),
    stepLogits: float32s(raw.native_step_logits_f32_b64, `${file}: native_step_logits_f32_b64`),
  };
  return {
    family: raw.family,
    transformers: raw.transformers,
    storageDtype: raw.storage_dtype,
    hfRopeType: raw.hf_rope_type,
    invFreq: raw.inv_freq,
    attentionScaling: raw.attention_scaling,
    promptText: raw.prompt_text,
    inputIds: raw.input_ids,
    logitPositions: raw.logit_positions,
    prefillLogits: float32s(raw.prefill_logits_f32_b64, `${file}: prefill_logits_f32_b64`),
    greedy: raw.greedy_continuation_ids,
    stepLogits: float32s(raw.step_logits_f32_b64, `${file}: step_logits_f32_b64`),
    native,
  };
}

/** Rows `rows` of a [*][width] array, concatenated. */
export function pickRows(data: Float32Array, width: number, rows: number[]): Float32Array {
  const out = new Float32Array(rows.length * width);
  rows.forEach((r, i) => out.set(data.subarray(r * width, (r + 1) * width), i * width));
  return out;
}

/**
 * What a decoder produced for the checks of gpu/families.ts, each compared with transformers'
 * float32 logits: the prefill's last row and the decode steps feeding the greedy ids (both
 * absent where a sliding window refuses the prompt), and the logits of the prompt fed token by
 * token (teacher-forced) at the stored positions it covers.
 */
export interface FamilyLogits {
  prefillLast?: Float32Array;
  /** [greedy.length][vocab] */
  steps?: Float32Array;
  /** Row of the teacher-forced logits at a stored position, or undefined where not covered. */
  at(position: number): Float32Array | undefined;
}

export interface FamilyCheck {
  /** The same words in every table (the GPU check's, the emulation's). */
  what: string;
  error: number;
}

/** The checks of gpu/families.ts for `got`, in a fixed order; a check with no rows is left out. */
export function familyCheckErrors(ref: FamilyReference, got: FamilyLogits): FamilyCheck[] {
  const vocab = ref.prefillLogits.length / ref.logitPositions.length;
  const n = ref.inputIds.length, total = n + ref.greedy.length;
  const row = (data: Float32Array, i: number) => data.subarray(i * vocab, (i + 1) * vocab);
  const checks: FamilyCheck[] = [];
  if (got.prefillLast) {
    const last = ref.logitPositions.length - 1;
    checks.push({
      what: `prefill logits at position ${n - 1}`,
      error: relativeError(got.prefillLast, row(ref.prefillLogits, last)),
    });
  }
  if (got.steps) {
    checks.push({
      what: `decode steps at positions ${n}..${total - 1} (worst row)`,
      error: maxRowRelativeError(got.steps, ref.stepLogits, vocab),
    });
  }
  for (const inside of [true, false]) {
    const gotRows: number[] = [], wantRows: number[] = [];
    ref.logitPositions.forEach((p, i) => {
      const r = got.at(p);
      if (r === undefined || (p < ORIGINAL_MAX_POSITIONS) !== inside) return;
      gotRows.push(...r);
      wantRows.push(...row(ref.prefillLogits, i));
    });
    if (wantRows.length === 0) continue;
    checks.push({
      what: `dense steps at positions ${inside ? "<" : ">="} ${ORIGINAL_MAX_POSITIONS}`,
      error: relativeError(gotRows, wantRows),
    });
  }
  return checks;
}

/**
 * transformers' own logits in the checkpoint's dtype as a FamilyLogits (its prefill rows stand
 * for the teacher-forced ones), covering what `covered` prompt positions cover; `refused`: the
 * GPU refuses the prompt (sliding window), so the prefill and decode checks are left out too.
 */
export function nativeLogits(
  ref: FamilyReference,
  native: NativeReference,
  covered: number,
  refused: boolean,
): FamilyLogits {
  const vocab = ref.prefillLogits.length / ref.logitPositions.length;
  const row = (data: Float32Array, i: number) => data.subarray(i * vocab, (i + 1) * vocab);
  return {
    prefillLast: refused ? undefined : row(native.prefillLogits, ref.logitPositions.length - 1),
    steps: refused ? undefined : native.stepLogits,
    at: (p) => {
      const i = ref.logitPositions.indexOf(p);
      return i < 0 || p >= covered ? undefined : row(native.prefillLogits, i);
    },
  };
}

/**
 * The checks' logits from the CPU decoder (exact, or `emulate`-ing the GPU's 16-bit storage),
 * covering what gpu/families.ts covers: the prompt up to the sliding window teacher-forced, and
 * where the window does not refuse the whole sequence, the prefill's last row and the steps.
 */
export function cpuFamilyLogits(
  model: LoadedModel,
  ref: FamilyReference,
  emulate: KvDtype | undefined,
): FamilyLogits {
  const c = model.config, vocab = c.vocabSize, n = ref.inputIds.length;
  const refused = slidingWindowLimit(c) < n + ref.greedy.length;
  const covered = Math.min(n, slidingWindowLimit(c));
  const decoder = new CpuDecoder(model, { emulate });
  const forced = decoder.forward(ref.inputIds.slice(0, covered));
  const row = (
    p: number,
  ) => (p < covered ? forced.subarray(p * vocab, (p + 1) * vocab) : undefined);
  if (refused) return { at: row };
  const steps = new Float32Array(ref.greedy.length * vocab);
  ref.greedy.forEach((t, i) => steps.set(decoder.forward([t]), i * vocab));
  return { prefillLast: row(n - 1), steps, at: row };
}
