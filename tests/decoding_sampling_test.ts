import assert from "node:assert/strict";
import { chooseToken, sampleToken, seededUniform } from "../src/decoding/sampling.ts";
import { argmax } from "../src/decoding/cpu_decoder.ts";

Deno.test("sampling: temperature 0 is greedy, ties to the lower id", () => {
  const random = seededUniform(1);
  assert.equal(sampleToken([0.1, 2, -1, 2], {}, random), 1);
  assert.equal(sampleToken([0, 0, 5, 1, 1, 7], { temperature: 0 }, random, 2, 3), 0);
});

Deno.test("sampling: top-p keeps only the nucleus", () => {
  // Probabilities at temperature 1: ~[0.665, 0.245, 0.090]; top-p 0.6 keeps only token 0.
  const logits = [2, 1, 0];
  const random = seededUniform(7);
  for (let i = 0; i < 200; i++) {
    assert.equal(sampleToken(logits, { temperature: 1, topP: 0.6 }, random), 0);
  }
});

Deno.test("sampling: temperature sampling follows the softmax (frequencies within 3%)", () => {
  const logits = [Math.log(0.5), Math.log(0.3), Math.log(0.2)];
  const random = seededUniform(42);
  const counts = [0, 0, 0];
  const n = 20000;
  for (let i = 0; i < n; i++) counts[sampleToken(logits, { temperature: 1 }, random)]++;
  [0.5, 0.3, 0.2].forEach((p, i) =>
    assert.ok(Math.abs(counts[i] / n - p) < 0.03, `token ${i}: ${counts[i] / n}`)
  );
});

Deno.test("sampling: bad options name the option and the allowed values", () => {
  const random = seededUniform(1);
  assert.throws(
    () => sampleToken([1, 2], { temperature: -1 }, random),
    /temperature: got -1; allowed: >= 0/,
  );
  assert.throws(
    () => sampleToken([1, 2], { temperature: 1, topP: 0 }, random),
    /top-p: got 0; allowed: \(0, 1\]/,
  );
});

// ---- chooseToken: the device's token-choice rule ----

Deno.test("chooseToken: temperature 0 is argmax of cpu_decoder, lowest index on ties", () => {
  assert.equal(chooseToken([0.1, 2, -1, 2], {}, 0.5), 1);
  assert.equal(chooseToken([0, 0, 5, 1, 1, 7], { temperature: 0, topP: 0.1 }, 0.9, 2, 3), 0);
  // NaN never wins; all -Infinity (nothing above -Infinity) gives 0, as argmax does.
  assert.equal(chooseToken([NaN, -1, NaN, 3, 3], {}, 0), 3);
  assert.equal(chooseToken([-Infinity, -Infinity], {}, 0), 0);
  const random = seededUniform(5);
  for (let r = 0; r < 20; r++) {
    const logits = Float32Array.from({ length: 3000 }, () => Math.round(random() * 50));
    assert.equal(chooseToken(logits, {}, random()), argmax(logits));
  }
});

Deno.test("chooseToken: the token at the uniform's position of the cumulative mass, index order", () => {
  // Four equal probabilities: mass 4, target 4u; the first token whose cumulative mass exceeds
  // the target (u = 0.25 lands exactly on the end of token 0, so token 1).
  const flat = [0, 0, 0, 0];
  const t1 = { temperature: 1 };
  assert.deepEqual([0, 0.24, 0.25, 0.3, 0.5, 0.99].map((u) => chooseToken(flat, t1, u)), [
    0,
    0,
    1,
    1,
    2,
    3,
  ]);
});

Deno.test("chooseToken: temperature sharpens the distribution", () => {
  // T = 1: p = [e^-1, 1], token 0 while u < e^-1 / (1 + e^-1) = 0.269.
  // T = 0.25: p = [e^-4, 1], token 0 only while u < 0.018.
  assert.equal(chooseToken([0, 1], { temperature: 1 }, 0.26), 0);
  assert.equal(chooseToken([0, 1], { temperature: 1 }, 0.28), 1);
  assert.equal(chooseToken([0, 1], { temperature: 0.25 }, 0.017), 0);
  assert.equal(chooseToken([0, 1], { temperature: 0.25 }, 0.1), 1);
});

Deno.test("chooseToken: top-p keeps the smallest most probable set reaching it", () => {
  // Probabilities relative to the maximum [1, 0.6, 0.4], sum 2.
  const logits = [Math.log(0.5), Math.log(0.3), Math.log(0.2)];
  const at = (topP: number, u: number) => chooseToken(logits, { temperature: 1, topP }, u);
  // top-p 0.5 needs mass 1: token 0 alone, whatever the uniform.
  assert.deepEqual([0, 0.5, 0.999].map((u) => at(0.5, u)), [0, 0, 0]);
  // 0.79 needs 1.58: tokens 0 and 1 (mass 1.6); u = 0.99 is token 1, never 2.
  assert.deepEqual([0.6, 0.99].map((u) => at(0.79, u)), [0, 1]);
  // 0.81 needs 1.62: all three; p = 1 keeps all.
  assert.equal(at(0.81, 0.99), 2);
  assert.equal(at(1, 0.99), 2);
  assert.equal(at(1, 0.79), 1); // 0.79 * 2 = 1.58 < 1.6
  assert.equal(at(1, 0.81), 2);
});

Deno.test("chooseToken: ties at the top-p boundary are all kept", () => {
  // [1, e^-1, e^-1, e^-1], sum 2.10; top-p 0.6 needs 1.26, reached inside the tie: all kept.
  const logits = [1, 0, 0, 0];
  assert.equal(chooseToken(logits, { temperature: 1, topP: 0.6 }, 0.99), 3);
  // top-p 0.4 needs 0.84: token 0 alone.
  assert.equal(chooseToken(logits, { temperature: 1, topP: 0.4 }, 0.99), 0);
});

Deno.test("chooseToken: a single dominant token wins for every uniform and top-p", () => {
  // e^-100 is below 2^-126: every other probability is 0. Index 1500 of 2000 sits in a later
  // chunk (2 tokens per thread), so the owner and its walk are exercised.
  const logits = new Float32Array(2000);
  logits[1500] = 100;
  for (const topP of [1e-6, 0.5, 1]) {
    for (const u of [0, 0.3, 0.999999]) {
      assert.equal(chooseToken(logits, { temperature: 1, topP }, u), 1500);
    }
  }
});

Deno.test("chooseToken: follows the softmax (frequencies within 3%) and stays in the nucleus", () => {
  const logits = [Math.log(0.5), Math.log(0.3), Math.log(0.2)];
  const random = seededUniform(42);
  const counts = [0, 0, 0];
  const n = 5000;
  for (let i = 0; i < n; i++) counts[chooseToken(logits, { temperature: 1 }, random())]++;
  [0.5, 0.3, 0.2].forEach((p, i) =>
    assert.ok(Math.abs(counts[i] / n - p) < 0.03, `token ${i}: ${counts[i] / n}`)
  );
  // Random logits over 5000 tokens: the chosen token's probability is at least the float64
  // nucleus's smallest (a relative 1e-5 below it at most: float32 sums).
  for (let r = 0; r < 10; r++) {
    const x = Array.from({ length: 5000 }, () => 4 * random());
    const topP = 0.5 + 0.4 * random(), temperature = 0.5 + random();
    const token = chooseToken(x, { temperature, topP }, random());
    const m = Math.max(...x);
    const p = x.map((v) => Math.exp((v - m) / temperature));
    const z = p.reduce((a, b) => a + b, 0);
    const sorted = [...p].sort((a, b) => b - a);
    let mass = 0, k = 0;
    while (mass < topP * z) mass += sorted[k++];
    assert.ok(p[token] >= sorted[k - 1] * (1 - 1e-5), `round ${r}: token ${token} outside`);
  }
});

Deno.test("chooseToken: bad options and uniforms name the value and the allowed range", () => {
  assert.throws(
    () => chooseToken([1, 2], { temperature: -1 }, 0),
    /temperature: got -1; allowed: >= 0/,
  );
  assert.throws(() => chooseToken([1, 2], { topP: 1.5 }, 0), /top-p: got 1.5; allowed: \(0, 1\]/);
  assert.throws(() => chooseToken([1, 2], {}, 1), /uniform: got 1; allowed: \[0, 1\)/);
});
