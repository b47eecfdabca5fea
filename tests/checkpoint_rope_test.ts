import assert from "node:assert/strict";
import {
  applyRope,
  RopeCache,
  ropeCosSin,
  ropeInverseFrequencies,
  ropeTables,
} from "../src/checkpoint/rope.ts";
import { parseModelConfig, type RopeScaling } from "../src/checkpoint/config.ts";

Deno.test("rope: rotate-half pairs (i, i+d/2) by position * theta^(-2i/d)", () => {
  const d = 8, theta = 10000, position = 7;
  const x = Float64Array.from({ length: d }, (_, i) => i + 1);
  const y = Float64Array.from(x);
  applyRope(y, position, theta);
  for (let i = 0; i < d / 2; i++) {
    const angle = position * Math.pow(theta, (-2 * i) / d);
    const [a, b] = [x[i], x[i + d / 2]];
    assert.ok(Math.abs(y[i] - (a * Math.cos(angle) - b * Math.sin(angle))) < 1e-12);
    assert.ok(Math.abs(y[i + d / 2] - (b * Math.cos(angle) + a * Math.sin(angle))) < 1e-12);
  }
  const z = Float64Array.from(x);
  applyRope(z, 0, theta);
  assert.deepEqual(z, x);
});

Deno.test("rope: tables and cache agree with the direct rotation", () => {
  const d = 16, theta = 500000;
  const inv = ropeInverseFrequencies(d, theta);
  assert.equal(inv[0], 1);
  const tables = ropeTables({ headDim: d, ropeTheta: theta });
  assert.deepEqual(tables, { invFreq: inv, attentionFactor: 1 });
  const cosSin = ropeCosSin(tables, 5);
  assert.equal(cosSin.cos.length, 5 * 8);
  assert.equal(cosSin.cos[3 * 8 + 2], Math.fround(Math.cos(3 * inv[2])));
  assert.equal(cosSin.sin[4 * 8 + 7], Math.fround(Math.sin(4 * inv[7])));
  const cache = new RopeCache(tables);
  const twoHeads = Float64Array.from({ length: 2 * d }, (_, i) => Math.sin(i));
  const expected = Float64Array.from(twoHeads);
  applyRope(expected.subarray(0, d), 4, theta);
  applyRope(expected.subarray(d), 4, theta);
  cache.apply(twoHeads, 2, 4);
  assert.deepEqual(twoHeads, expected);
  assert.throws(() => ropeInverseFrequencies(7, theta), /head dim 7/);
});

Deno.test("rope: the attention factor scales cos and sin in the tables and the cache", () => {
  const d = 8;
  const tables = { invFreq: ropeInverseFrequencies(d, 10000), attentionFactor: 1.5 };
  const plain = { ...tables, attentionFactor: 1 };
  const scaled = ropeCosSin(tables, 3);
  for (let p = 0; p < 3; p++) {
    for (let i = 0; i < d / 2; i++) {
      const angle = p * tables.invFreq[i];
      assert.equal(scaled.cos[p * 4 + i], Math.fround(Math.cos(angle) * 1.5));
      assert.equal(scaled.sin[p * 4 + i], Math.fround(Math.sin(angle) * 1.5));
    }
  }
  const x = Float64Array.from({ length: d }, (_, i) => i - 3);
  const a = Float64Array.from(x), b = Float64Array.from(x);
  new RopeCache(tables).apply(a, 1, 9);
  new RopeCache(plain).apply(b, 1, 9);
  a.forEach((v, i) => assert.ok(Math.abs(v - 1.5 * b[i]) < 1e-12));
});

// Properties of each scaling that do not depend on transformers' exact arithmetic (that is
// checked against its own tables in checkpoint_families_test.ts).
Deno.test("rope: scaling types keep high frequencies and stretch low ones", () => {
  const d = 128, theta = 500000;
  const base = ropeInverseFrequencies(d, theta);
  const at = (ropeScaling: RopeScaling) =>
    ropeTables({ headDim: d, ropeTheta: theta, ropeScaling });

  const linear = at({ type: "linear", factor: 4 });
  linear.invFreq.forEach((f, i) => assert.ok(Math.abs(f - base[i] / 4) < 1e-18));
  assert.equal(linear.attentionFactor, 1);

  const original = 8192;
  const llama3 = at({
    type: "llama3",
    factor: 8,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositionEmbeddings: original,
  });
  let kept = 0, stretched = 0, blended = 0;
  base.forEach((f, i) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < original / 4) {
      assert.equal(llama3.invFreq[i], f);
      kept++;
    } else if (wavelen > original) {
      assert.equal(llama3.invFreq[i], f / 8);
      stretched++;
    } else {
      assert.ok(llama3.invFreq[i] < f && llama3.invFreq[i] > f / 8);
      blended++;
    }
  });
  assert.ok(kept > 0 && stretched > 0 && blended > 0, `${kept}/${blended}/${stretched}`);
  assert.equal(llama3.attentionFactor, 1);

  // Qwen2.5's README block for long contexts, through the config parser.
  const yarnScaling = parseModelConfig({
    model_type: "qwen2",
    hidden_size: 3584,
    intermediate_size: 18944,
    num_hidden_layers: 28,
    num_attention_heads: 28,
    num_key_value_heads: 4,
    vocab_size: 152064,
    max_position_embeddings: 32768,
    rope_scaling: { factor: 4.0, original_max_position_embeddings: 32768, type: "yarn" },
  }).ropeScaling!;
  assert.equal(yarnScaling.type, "yarn");
  if (yarnScaling.type !== "yarn") return;
  const yarn = at(yarnScaling);
  assert.equal(yarn.invFreq[0], base[0]);
  assert.equal(yarn.invFreq[d / 2 - 1], base[d / 2 - 1] / 4);
  for (let i = 1; i < d / 2; i++) assert.ok(yarn.invFreq[i] < yarn.invFreq[i - 1]);
  assert.ok(Math.abs(yarn.attentionFactor - (0.1 * Math.log(4) + 1)) < 1e-15);
  assert.equal(at({ ...yarnScaling, attentionFactor: 1.25 }).attentionFactor, 1.25);
  const ds = at({ ...yarnScaling, factor: 40, mscale: 1, mscaleAllDim: 0.707 });
  assert.ok(
    Math.abs(ds.attentionFactor - (0.1 * Math.log(40) + 1) / (0.0707 * Math.log(40) + 1)) <
      1e-15,
  );
});
