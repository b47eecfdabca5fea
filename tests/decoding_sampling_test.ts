import assert from "node:assert/strict";
import { sampleToken, seededUniform } from "../src/decoding/sampling.ts";

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
