import assert from "node:assert/strict";
import {
  applyRope,
  RopeCache,
  ropeInverseFrequencies,
  ropeTables,
} from "../src/checkpoint/rope.ts";

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
  const tables = ropeTables(5, d, theta);
  assert.equal(tables.cos.length, 5 * 8);
  assert.equal(tables.cos[3 * 8 + 2], Math.fround(Math.cos(3 * inv[2])));
  assert.equal(tables.sin[4 * 8 + 7], Math.fround(Math.sin(4 * inv[7])));
  const cache = new RopeCache(d, theta);
  const twoHeads = Float64Array.from({ length: 2 * d }, (_, i) => Math.sin(i));
  const expected = Float64Array.from(twoHeads);
  applyRope(expected.subarray(0, d), 4, theta);
  applyRope(expected.subarray(d), 4, theta);
  cache.apply(twoHeads, 2, 4);
  assert.deepEqual(twoHeads, expected);
  assert.throws(() => ropeInverseFrequencies(7, theta), /head dim 7/);
});
