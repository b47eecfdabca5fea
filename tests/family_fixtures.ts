/**
 * The model-family fixtures written by scripts/hf_reference.py (transformers 5.17 on the GPU
 * machine) under tests/fixtures/families/<family>/: a scaled-down random-weight checkpoint in
 * the Hugging Face layout (config.json, safetensors, for one family an index and a
 * tokenizer.json) and reference.json with transformers' logits and RoPE tables. Shared by the
 * CPU test (checkpoint_families_test.ts) and the GPU check (gpu/families.ts).
 */
import * as path from "node:path";
import { fileURLToPath } from "node:url";

export { maxRowRelativeError, relativeError } from "./gpu/support.ts";

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
}

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
  const raw = JSON.parse(await Deno.readTextFile(file));
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
  };
}

/** Rows `rows` of a [*][width] array, concatenated. */
export function pickRows(data: Float32Array, width: number, rows: number[]): Float32Array {
  const out = new Float32Array(rows.length * width);
  rows.forEach((r, i) => out.set(data.subarray(r * width, (r + 1) * width), i * width));
  return out;
}
