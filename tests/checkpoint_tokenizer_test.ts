import assert from "node:assert/strict";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { readModelConfig } from "../src/checkpoint/config.ts";
import { ByteTokenizer, loadTokenizer } from "../src/checkpoint/tokenizer.ts";
import { syntheticConfig } from "../src/checkpoint/synthetic.ts";

const MODEL_DIR = fileURLToPath(new URL("../examples/models/tiny-code-llama-8k", import.meta.url));

Deno.test("tokenizer: byte round trip including non-ASCII text", () => {
  const tok = new ByteTokenizer();
  const text = "def f(x):\n    return x  # naïve — 数据 🚀\r\n";
  const ids = tok.encode(text);
  assert.equal(ids.length, new TextEncoder().encode(text).length);
  assert.deepEqual(ids.slice(0, 4), [100, 101, 102, 32]);
  assert.ok(ids.every((id) => id >= 0 && id < 256));
  assert.equal(tok.decode(ids), text);
  assert.equal(tok.vocabSize, 256);
});

Deno.test("tokenizer: partial UTF-8 decodes with replacement characters", () => {
  const tok = new ByteTokenizer();
  const rocket = tok.encode("🚀"); // 4 bytes
  assert.equal(tok.decode([104, 105, ...rocket.slice(0, 2)]), "hi\uFFFD");
  assert.throws(() => tok.decode([300]), /token 0 is 300; expected an integer 0\.\.255/);
});

Deno.test("tokenizer: tiny-code-llama-8k gets the byte tokenizer; others need tokenizer.json", async () => {
  const config = await readModelConfig(path.join(MODEL_DIR, "config.json"));
  const tok = await loadTokenizer(MODEL_DIR, config);
  assert.ok(tok instanceof ByteTokenizer);
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(
      loadTokenizer(dir, syntheticConfig({ vocabSize: 1000 })),
      /no tokenizer\.json, and vocab_size is 1000/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tokenizer: tokenizer.json loads through @huggingface/tokenizers", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // A minimal word-level tokenizer: four words, whitespace pre-tokenization.
    const json = {
      version: "1.0",
      truncation: null,
      padding: null,
      added_tokens: [],
      normalizer: null,
      pre_tokenizer: { type: "Whitespace" },
      post_processor: null,
      decoder: null,
      model: {
        type: "WordLevel",
        vocab: { hello: 0, world: 1, "[UNK]": 2, def: 3 },
        unk_token: "[UNK]",
      },
    };
    await Deno.writeTextFile(path.join(dir, "tokenizer.json"), JSON.stringify(json));
    const tok = await loadTokenizer(dir, syntheticConfig({ vocabSize: 4 }));
    assert.equal(tok.vocabSize, 4);
    assert.deepEqual(tok.encode("hello world def"), [0, 1, 3]);
    assert.equal(tok.decode([3, 0, 1]), "def hello world");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
