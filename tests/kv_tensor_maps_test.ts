import assert from "node:assert/strict";
import { kvTensorMap } from "../src/runtime/kv_tensor_maps.ts";
import { TensorMapDataType, tensorMapProblems, TensorMapSwizzle } from "../src/cuda/tensor_map.ts";

const shape = { headDim: 128, numKvHeads: 8, pageSize: 16, numPages: 1000, keyTile: 128 };

Deno.test("kvTensorMap: a pool as rows of head_dim halves, one page of 64 columns per box", () => {
  const m = kvTensorMap(shape);
  // kv_row(page, kv head, slot) = (page * NUM_KV_HEADS + kv head) * PAGE_SIZE + slot.
  assert.deepEqual(m.globalDim, [128, 1000 * 8 * 16]);
  assert.deepEqual(m.globalStrides, [256]);
  assert.deepEqual(m.boxDim, [64, 16]);
  assert.deepEqual(m.elementStrides, [1, 1]);
  assert.equal(m.dataType, TensorMapDataType.UINT16);
  assert.equal(m.swizzle, TensorMapSwizzle.B128);
  assert.deepEqual(tensorMapProblems(m), []);
  // Head dim 64: one box column; page 64; pages longer than the key tile: a key tile per box.
  const d64 = kvTensorMap({ ...shape, headDim: 64, pageSize: 64 });
  assert.deepEqual([d64.globalDim, d64.globalStrides, d64.boxDim], [[64, 512000], [128], [64, 64]]);
  assert.deepEqual(kvTensorMap({ ...shape, pageSize: 256 }).boxDim, [64, 128]);
});

Deno.test("kvTensorMap: pools TMA cannot describe are one line naming the field", () => {
  assert.throws(
    () => kvTensorMap({ ...shape, headDim: 96 }),
    /headDim 96; allowed: a multiple of 64/,
  );
  assert.throws(() => kvTensorMap({ ...shape, pageSize: 4 }), /page size 4 with key tile 128/);
  assert.throws(
    () => kvTensorMap({ ...shape, numPages: 2 ** 24 }),
    /16777216 pages x 8 kv heads x 16 = 2147483648 rows; allowed: 1 to 2\^31 - 1/,
  );
});

Deno.test("tensorMapProblems: the driver's documented limits, each named", () => {
  const ok = kvTensorMap(shape);
  assert.deepEqual(tensorMapProblems({ ...ok, boxDim: [128, 16] }), [
    "inner box 256 bytes; allowed: at most the swizzle span, 128 bytes",
  ]);
  assert.deepEqual(tensorMapProblems({ ...ok, globalStrides: [200] }), [
    "globalStrides[0] 200; allowed: a multiple of 16 below 2^40",
  ]);
  assert.deepEqual(tensorMapProblems({ ...ok, boxDim: [64, 512] }), [
    "boxDim[1] 512; allowed: 1 to 256",
  ]);
  assert.match(tensorMapProblems({ ...ok, boxDim: [64] }).join(), /lengths 2,1,2; allowed: rank 2/);
});
