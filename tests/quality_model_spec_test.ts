import assert from "node:assert/strict";
import * as path from "node:path";
import { parseModelConfig } from "../src/checkpoint/config.ts";
import { specForModel, specForModelFile } from "../src/quality/model_spec.ts";
import { bordaRanking } from "../src/quality/channels.ts";
import { randomPermutation, seededRandom, withTempDir } from "./helpers.ts";

// Meta-Llama-3.1-8B's config.json (the fields that matter here, as published).
const LLAMA31_8B = parseModelConfig({
  architectures: ["LlamaForCausalLM"],
  model_type: "llama",
  hidden_size: 4096,
  intermediate_size: 14336,
  num_hidden_layers: 32,
  num_attention_heads: 32,
  num_key_value_heads: 8,
  vocab_size: 128256,
  max_position_embeddings: 131072,
  rms_norm_eps: 1e-5,
  rope_theta: 500000.0,
  rope_scaling: {
    factor: 8.0,
    low_freq_factor: 1.0,
    high_freq_factor: 4.0,
    original_max_position_embeddings: 8192,
    rope_type: "llama3",
  },
  tie_word_embeddings: false,
});

/**
 * A channel file shaped like the authors' config/meta-llama/Llama-3.1-8B.json: per layer
 * q_proj (32 rows), k_proj (8 rows, one per kv head), qk_proj (32 rows), each row a ranking
 * of all 128 channels. Random rankings; `kinds` picks which keys are written.
 */
function authorsStyleFile(layers: number, qRows: number, kRows: number, kinds = ["q", "k", "qk"]) {
  const random = seededRandom(31);
  const json: Record<string, number[][]> = {};
  for (let l = 0; l < layers; l++) {
    for (const kind of kinds) {
      const rows = kind === "k" ? kRows : qRows;
      json[`model.layers.${l}.self_attn.${kind}_proj`] = Array.from(
        { length: rows },
        () => randomPermutation(random, 128),
      );
    }
  }
  return json;
}

const OPTIONS = { labels: { channels: 16, bits: 8 as const }, budget: { ratio: 1 / 16, min: 16 } };

Deno.test("model spec: Llama-3.1-8B + the authors' GQA channel file -> group selection", () => {
  const file = authorsStyleFile(32, 32, 8);
  const { spec, labelChannels } = specForModel(LLAMA31_8B, file, OPTIONS);
  assert.equal(spec.variant, "ds_d128_q32_kv8_p16_fp16_r16b8_group");
  assert.equal(spec.numLabelHeads, 8);
  assert.equal(labelChannels.length, 32);
  for (const layer of [0, 17, 31]) {
    const k = file[`model.layers.${layer}.self_attn.k_proj`];
    for (let g = 0; g < 8; g++) {
      assert.deepEqual(
        Array.from(labelChannels[layer].subarray(g * 16, (g + 1) * 16)),
        k[g].slice(0, 16),
      );
    }
  }
});

Deno.test("model spec: per-head selection uses qk rows; without k rows, a Borda count", () => {
  const file = authorsStyleFile(32, 32, 8);
  const head = specForModel(LLAMA31_8B, file, { ...OPTIONS, selection: "head" });
  assert.equal(head.spec.variant, "ds_d128_q32_kv8_p16_fp16_r16b8_head");
  const qk = file["model.layers.5.self_attn.qk_proj"];
  assert.deepEqual(Array.from(head.labelChannels[5].subarray(31 * 16)), qk[31].slice(0, 16));

  const noK = authorsStyleFile(32, 32, 8, ["q", "qk"]);
  const group = specForModel(LLAMA31_8B, noK, { ...OPTIONS, denseLayers: [0, 1] });
  assert.deepEqual(group.spec.denseLayers, [0, 1]);
  const rows = noK["model.layers.3.self_attn.qk_proj"];
  assert.deepEqual(
    Array.from(group.labelChannels[3].subarray(2 * 16, 3 * 16)),
    bordaRanking(rows.slice(8, 12)).slice(0, 16),
  );
});

Deno.test("model spec: a channel file of another model is refused, naming the file", async () => {
  // Llama-2-7B's file: k_proj has one row per (32) kv heads.
  const llama2 = authorsStyleFile(32, 32, 32);
  assert.throws(
    () => specForModel(LLAMA31_8B, llama2, OPTIONS, "Llama-2-7b-hf.json"),
    /^InputError: Llama-2-7b-hf\.json: invalid channel config .*\n.*"model\.layers\.0\.self_attn\.k_proj": has 32 rows, expected 8 \(one per kv head\)/,
  );
  await withTempDir(async (dir) => {
    const file = path.join(dir, "Qwen2.5-7B.json");
    await Deno.writeTextFile(file, JSON.stringify(authorsStyleFile(28, 28, 4)));
    await assert.rejects(
      () => specForModelFile(LLAMA31_8B, file, OPTIONS),
      (e: Error) =>
        e.message.startsWith(`${file}: invalid channel config`) &&
        /has 28 rows, expected 32/.test(e.message),
    );
  });
  // Spec problems come from the DSL, all at once.
  assert.throws(
    () =>
      specForModel(LLAMA31_8B, authorsStyleFile(32, 32, 8), {
        ...OPTIONS,
        labels: { channels: 200, bits: 8 },
      }),
    /labels\.channels: got 200/,
  );
});
