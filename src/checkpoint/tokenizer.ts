// Tokenizers: the byte tokenizer of byte-level models (vocab 256, token id = byte value)
// and, for everything else, `tokenizer.json` through the npm package
// @huggingface/tokenizers, imported only when such a model is loaded.

import * as path from "node:path";
import type { ModelConfig } from "./config.ts";
import { InputError } from "../util/errors.ts";

export interface Tokenizer {
  encode(text: string): number[];
  decode(ids: number[]): string;
  readonly vocabSize: number;
}

/** Token id = byte of the UTF-8 encoding. */
export class ByteTokenizer implements Tokenizer {
  readonly vocabSize = 256;
  private readonly encoder = new TextEncoder();
  // Not fatal: a cut-off multi-byte sequence (common mid-generation) becomes U+FFFD.
  private readonly decoder = new TextDecoder("utf-8", { fatal: false });

  encode(text: string): number[] {
    return Array.from(this.encoder.encode(text));
  }

  decode(ids: number[]): string {
    const bytes = new Uint8Array(ids.length);
    ids.forEach((id, i) => {
      if (!Number.isInteger(id) || id < 0 || id > 255) {
        throw new Error(`ByteTokenizer.decode: token ${i} is ${id}; expected an integer 0..255`);
      }
      bytes[i] = id;
    });
    return this.decoder.decode(bytes);
  }
}

export const BYTE_VOCAB_SIZE = 256;

// The subset of @huggingface/tokenizers' Tokenizer that is used here.
interface HfTokenizerLike {
  encode(text: string, options?: Record<string, unknown>): { ids: number[] } | number[];
  decode(ids: number[], options?: Record<string, unknown>): string;
}

/** Wraps a Hugging Face tokenizer.json. Encodes without adding special tokens. */
class HfTokenizer implements Tokenizer {
  constructor(private readonly inner: HfTokenizerLike, readonly vocabSize: number) {}

  encode(text: string): number[] {
    const out = this.inner.encode(text, { add_special_tokens: false });
    return Array.from(Array.isArray(out) ? out : out.ids);
  }

  decode(ids: number[]): string {
    return this.inner.decode(ids, { skip_special_tokens: false });
  }
}

async function readJsonIfPresent(file: string): Promise<unknown | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw new InputError(file, `cannot read: ${(e as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new InputError(file, `invalid JSON: ${(e as Error).message}`);
  }
}

/**
 * The tokenizer of a model directory: `tokenizer.json` when present, else the byte
 * tokenizer when vocab_size is 256.
 */
export async function loadTokenizer(dir: string, config: ModelConfig): Promise<Tokenizer> {
  const tokenizerPath = path.join(dir, "tokenizer.json");
  const tokenizerJson = await readJsonIfPresent(tokenizerPath);
  if (tokenizerJson === undefined) {
    if (config.vocabSize === BYTE_VOCAB_SIZE) return new ByteTokenizer();
    throw new InputError(
      dir,
      `no tokenizer.json, and vocab_size is ${config.vocabSize} (the byte tokenizer ` +
        `needs ${BYTE_VOCAB_SIZE})`,
    );
  }
  const tokenizerConfig = await readJsonIfPresent(path.join(dir, "tokenizer_config.json")) ?? {};
  // Imported here, not at the top: the byte-vocabulary path (and the GPU pack) need not load it.
  let mod: { Tokenizer: new (json: unknown, config: unknown) => HfTokenizerLike };
  try {
    mod = await import("@huggingface/tokenizers") as unknown as typeof mod;
  } catch (e) {
    throw new InputError(
      tokenizerPath,
      `loading it needs the npm package @huggingface/tokenizers, which ` +
        `could not be imported (${(e as Error).message}); install it with ` +
        `\`npm install @huggingface/tokenizers\``,
    );
  }
  return new HfTokenizer(new mod.Tokenizer(tokenizerJson, tokenizerConfig), config.vocabSize);
}
