import assert from "node:assert/strict";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { encodeSafetensors } from "../src/checkpoint/safetensors.ts";
import {
  configToJson,
  modelTensors,
  randomModel,
  syntheticConfig,
  writeModelDir,
} from "../src/checkpoint/synthetic.ts";
import { loadModel } from "../src/checkpoint/weights.ts";

const MODEL_DIR = fileURLToPath(new URL("../examples/models/tiny-code-llama-8k", import.meta.url));

Deno.test("weights: tiny-code-llama-8k loads with Hugging Face shapes", async () => {
  const { config, weights } = await loadModel(MODEL_DIR);
  assert.equal(weights.layers.length, 4);
  assert.equal(weights.embed.length, 256 * 512);
  assert.equal(weights.layers[0].q.length, 512 * 512);
  assert.equal(weights.layers[0].k.length, 256 * 512);
  assert.equal(weights.layers[0].down.length, 512 * 1408);
  assert.equal(weights.layers[0].qBias, undefined);
  assert.notEqual(weights.lmHead, weights.embed);
  let count = weights.embed.length + weights.lmHead.length + weights.finalNorm.length;
  for (const l of weights.layers) {
    for (const t of Object.values(l)) count += (t as Float32Array).length;
  }
  assert.equal(count, 12063232);
  assert.equal(config.headDim, 128);
});

Deno.test("weights: single-file checkpoint with biases and tied embeddings", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const model = randomModel(
      syntheticConfig({
        modelType: "qwen2",
        attentionBias: true,
        tieWordEmbeddings: true,
        ropeScaling: { type: "linear", factor: 2 },
      }),
    );
    await writeModelDir(dir, model);
    const loaded = await loadModel(dir);
    assert.deepEqual(loaded.config, model.config);
    assert.equal(loaded.weights.lmHead, loaded.weights.embed);
    assert.deepEqual(loaded.weights.layers[1].kBias, model.weights.layers[1].kBias);
    assert.deepEqual(loaded.weights.layers[0].down, model.weights.layers[0].down);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("weights: wrong shapes and missing tensors are named", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const model = randomModel(syntheticConfig());
    const tensors = modelTensors(model).map((t) =>
      t.name === "model.layers.1.self_attn.k_proj.weight"
        ? { ...t, shape: [t.shape[1], t.shape[0]] }
        : t
    );
    await Deno.writeTextFile(
      path.join(dir, "config.json"),
      JSON.stringify(configToJson(model.config)),
    );
    await Deno.writeFile(path.join(dir, "model.safetensors"), encodeSafetensors(tensors));
    await assert.rejects(
      loadModel(dir),
      /tensor "model\.layers\.1\.self_attn\.k_proj\.weight" has shape \[64, 32\], expected \[32, 64\]/,
    );
    const withoutHead = modelTensors(model).filter((t) => t.name !== "lm_head.weight");
    await Deno.writeFile(path.join(dir, "model.safetensors"), encodeSafetensors(withoutHead));
    await assert.rejects(
      loadModel(dir),
      /missing tensor "lm_head\.weight" \(expected shape \[256, 64\]\)/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
