import assert from "node:assert/strict";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import {
  encodeSafetensors,
  openCheckpoint,
  parseSafetensors,
  readSafetensorsFile,
  readShardedCheckpoint,
  storeFromFile,
  tensorToFloat32,
} from "../src/checkpoint/safetensors.ts";

const MODEL_DIR = fileURLToPath(new URL("../examples/models/tiny-code-llama-8k", import.meta.url));

/** Safetensors bytes from a header object and a data section. */
function rawFile(header: Record<string, unknown>, data: Uint8Array): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

Deno.test("safetensors: loads the bundled sharded model", async () => {
  const store = await openCheckpoint(MODEL_DIR);
  assert.equal(store.names().length, 4 * 9 + 3);
  const embed = store.get("model.embed_tokens.weight");
  assert.deepEqual(embed.shape, [256, 512]);
  assert.equal(store.info("model.embed_tokens.weight").dtype, "BF16");
  assert.ok(embed.data.every(Number.isFinite));
  const norm = store.get("model.norm.weight").data;
  assert.ok(norm.some((x) => x !== 0));
});

/** Little-endian bytes of 16-bit patterns followed by float32 values. */
function bitsAndFloats(halfBits: number[], floats: number[]): Uint8Array {
  const out = new Uint8Array(halfBits.length * 2 + floats.length * 4);
  const view = new DataView(out.buffer);
  halfBits.forEach((b, i) => view.setUint16(2 * i, b, true));
  floats.forEach((f, i) => view.setFloat32(halfBits.length * 2 + 4 * i, f, true));
  return out;
}

Deno.test("safetensors: BF16, F16 and F32 decode exactly", () => {
  // BF16 1.0, -2.5; F16 1.0, -2, 65504 (largest), 2^-24 (smallest subnormal); F32 0.1.
  const data = bitsAndFloats([0x3f80, 0xc020, 0x3c00, 0xc000, 0x7bff, 0x0001], [0.1]);
  const file = parseSafetensors(
    rawFile({
      b: { dtype: "BF16", shape: [2], data_offsets: [0, 4] },
      h: { dtype: "F16", shape: [2, 2], data_offsets: [4, 12] },
      f: { dtype: "F32", shape: [1], data_offsets: [12, 16] },
    }, data),
    "mem.safetensors",
  );
  assert.deepEqual(Array.from(tensorToFloat32(file, "b").data), [1, -2.5]);
  assert.deepEqual(Array.from(tensorToFloat32(file, "h").data), [1, -2, 65504, 2 ** -24]);
  assert.equal(tensorToFloat32(file, "f").data[0], Math.fround(0.1));
});

Deno.test("safetensors: encode round trip (F32 exact, BF16 rounded)", () => {
  const values = new Float32Array([0.1, -3.75, 1e-3, 12345.678]);
  const bytes = encodeSafetensors([
    { name: "a", shape: [2, 2], data: values, dtype: "F32" },
    { name: "b", shape: [4], data: values, dtype: "BF16" },
  ]);
  const store = storeFromFile(parseSafetensors(bytes, "enc"));
  assert.deepEqual(store.get("a").data, values);
  const b = store.get("b").data;
  for (let i = 0; i < 4; i++) assert.ok(Math.abs(b[i] - values[i]) <= Math.abs(values[i]) / 128);
});

Deno.test("safetensors: a truncated file names the file and the tensor", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const shard = "model-00002-of-00002.safetensors";
    const bytes = await Deno.readFile(path.join(MODEL_DIR, shard));
    const halfPath = path.join(dir, "half.safetensors");
    await Deno.writeFile(halfPath, bytes.subarray(0, bytes.length >> 1));
    await assert.rejects(readSafetensorsFile(halfPath), (e: Error) => {
      assert.match(e.message, /half\.safetensors/);
      assert.match(e.message, /tensor "[^"]+"/);
      assert.match(e.message, /exceed/);
      return true;
    });
    // Cut inside the header: the header length itself is past the end.
    const tinyPath = path.join(dir, "tiny.safetensors");
    await Deno.writeFile(tinyPath, bytes.subarray(0, 100));
    await assert.rejects(readSafetensorsFile(tinyPath), /tiny\.safetensors.*header length/);
    // A truncated shard behind the index: the error names the shard file.
    await Deno.copyFile(
      path.join(MODEL_DIR, "model.safetensors.index.json"),
      path.join(dir, "model.safetensors.index.json"),
    );
    await Deno.copyFile(
      path.join(MODEL_DIR, "model-00001-of-00002.safetensors"),
      path.join(dir, "model-00001-of-00002.safetensors"),
    );
    await Deno.writeFile(path.join(dir, shard), bytes.subarray(0, bytes.length - 1000));
    await assert.rejects(openCheckpoint(dir), new RegExp(shard.replaceAll(".", "\\.")));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("safetensors: header validation errors name the tensor", () => {
  const data = new Uint8Array(16);
  assert.throws(
    () =>
      parseSafetensors(
        rawFile({ "w.big": { dtype: "F32", shape: [8], data_offsets: [0, 32] } }, data),
        "x.safetensors",
      ),
    /x\.safetensors: tensor "w\.big": data_offsets \[0, 32\] exceed the data section of 16 bytes/,
  );
  assert.throws(
    () =>
      parseSafetensors(
        rawFile({ "w.odd": { dtype: "Q4", shape: [2], data_offsets: [0, 2] } }, data),
        "x.safetensors",
      ),
    /tensor "w\.odd": unknown dtype "Q4"/,
  );
  assert.throws(
    () =>
      parseSafetensors(
        rawFile({ "w.size": { dtype: "F32", shape: [3], data_offsets: [0, 16] } }, data),
        "x.safetensors",
      ),
    /tensor "w\.size".*span 16 bytes but shape \[3\] of F32 needs 12/,
  );
  const ints = parseSafetensors(
    rawFile({ ids: { dtype: "I64", shape: [2], data_offsets: [0, 16] } }, data),
    "x.safetensors",
  );
  assert.throws(() => tensorToFloat32(ints, "ids"), /tensor "ids" has dtype I64/);
  assert.throws(() => tensorToFloat32(ints, "nope"), /x\.safetensors: no tensor named "nope"/);
});

Deno.test("safetensors: index entries must exist in their shard", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const shardBytes = encodeSafetensors([
      { name: "a", shape: [1], data: new Float32Array([1]), dtype: "F32" },
    ]);
    await Deno.writeFile(path.join(dir, "s1.safetensors"), shardBytes);
    const indexPath = path.join(dir, "model.safetensors.index.json");
    await Deno.writeTextFile(
      indexPath,
      JSON.stringify({ weight_map: { a: "s1.safetensors", ghost: "s1.safetensors" } }),
    );
    await assert.rejects(
      readShardedCheckpoint(indexPath),
      /tensor "ghost" is listed in weight_map for .*s1\.safetensors but is absent/,
    );
    await Deno.writeTextFile(indexPath, JSON.stringify({ weight_map: { a: "s1.safetensors" } }));
    const store = await openCheckpoint(dir);
    assert.throws(() => store.get("missing"), /no tensor named "missing"/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
