// Reader for Hugging Face `.safetensors` files and sharded checkpoints.
//
// File layout: an 8-byte little-endian unsigned header length N, then N bytes of JSON
// (tensor name -> { dtype, shape, data_offsets: [begin, end] }, plus an optional
// "__metadata__" object of strings), then the raw tensor bytes. Offsets are relative to
// the first byte after the header. Floating-point tensors are converted to Float32Array.

import * as path from "node:path";
import { InputError } from "../util/errors.ts";

/** Byte size of every dtype the safetensors format defines (so any valid file parses). */
const DTYPE_BYTES: Readonly<Record<string, number>> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  I64: 8,
  U64: 8,
  F64: 8,
};

/** Dtypes that can be converted to Float32Array. */
export const FLOAT_DTYPES = ["BF16", "F16", "F32"] as const;
export type FloatDtype = typeof FLOAT_DTYPES[number];

export interface TensorInfo {
  name: string;
  dtype: string;
  shape: number[];
  /** Byte range [begin, end) relative to the start of the data section. */
  dataOffsets: [number, number];
}

export interface SafetensorsFile {
  /** Path (or label) used in error messages. */
  path: string;
  bytes: Uint8Array;
  /** Absolute offset of the data section in `bytes`. */
  dataStart: number;
  metadata: Record<string, string>;
  tensors: Map<string, TensorInfo>;
}

/** A tensor converted to float32, row-major in its stored shape. */
export interface Tensor {
  name: string;
  shape: number[];
  data: Float32Array;
}

/** Named tensors of a checkpoint, whether one file or several shards. */
export interface TensorStore {
  /** Where the tensors come from (directory or file), for error messages. */
  source: string;
  names(): string[];
  has(name: string): boolean;
  info(name: string): TensorInfo;
  get(name: string): Tensor;
}

const HEADER_LENGTH_BYTES = 8;

function isNonNegativeInteger(x: unknown): x is number {
  return typeof x === "number" && Number.isInteger(x) && x >= 0;
}

/** Parses and validates a whole safetensors file held in memory. */
export function parseSafetensors(bytes: Uint8Array, filePath: string): SafetensorsFile {
  if (bytes.length < HEADER_LENGTH_BYTES) {
    throw new InputError(
      filePath,
      `file is ${bytes.length} bytes, too short for the 8-byte safetensors header length`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = view.getBigUint64(0, true);
  const available = BigInt(bytes.length - HEADER_LENGTH_BYTES);
  if (headerLength > available) {
    throw new InputError(
      filePath,
      `header length ${headerLength} exceeds the ${available} bytes after the ` +
        `length field (file size ${bytes.length}); the file is truncated or not safetensors`,
    );
  }
  const dataStart = HEADER_LENGTH_BYTES + Number(headerLength);
  const dataLength = bytes.length - dataStart;
  let header: unknown;
  try {
    const text = new TextDecoder("utf-8", { fatal: true }).decode(
      bytes.subarray(HEADER_LENGTH_BYTES, dataStart),
    );
    header = JSON.parse(text);
  } catch (e) {
    throw new InputError(filePath, `header is not valid UTF-8 JSON: ${(e as Error).message}`);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) {
    throw new InputError(filePath, `header must be a JSON object`);
  }

  const tensors = new Map<string, TensorInfo>();
  let metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (entry === null) continue;
      if (
        typeof entry !== "object" || Array.isArray(entry) ||
        !Object.values(entry as object).every((v) => typeof v === "string")
      ) {
        throw InputError.field(filePath, "__metadata__", entry, "an object of strings");
      }
      metadata = entry as Record<string, string>;
      continue;
    }
    const where = `${filePath}: tensor "${name}"`;
    if (typeof entry !== "object" || entry === null) {
      throw new InputError(where, `header entry must be an object, got ${JSON.stringify(entry)}`);
    }
    const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
    if (typeof dtype !== "string" || !(dtype in DTYPE_BYTES)) {
      throw new InputError(
        where,
        `unknown dtype ${JSON.stringify(dtype)}; expected one of ${
          Object.keys(DTYPE_BYTES).join(", ")
        }`,
      );
    }
    if (!Array.isArray(shape) || !shape.every(isNonNegativeInteger)) {
      throw new InputError(
        where,
        `shape must be a list of non-negative integers, got ${JSON.stringify(shape)}`,
      );
    }
    if (
      !Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegativeInteger) ||
      offsets[0] > offsets[1]
    ) {
      throw new InputError(
        where,
        `data_offsets must be [begin, end] with 0 <= begin <= end, got ${JSON.stringify(offsets)}`,
      );
    }
    const [begin, end] = offsets as [number, number];
    if (end > dataLength) {
      throw new InputError(
        where,
        `data_offsets [${begin}, ${end}] exceed the data section of ${dataLength} bytes ` +
          `(file size ${bytes.length}); the file is truncated or corrupt`,
      );
    }
    const elements = (shape as number[]).reduce((a, b) => a * b, 1);
    const expectedBytes = elements * DTYPE_BYTES[dtype];
    if (end - begin !== expectedBytes) {
      throw new InputError(
        where,
        `data_offsets [${begin}, ${end}] span ${end - begin} bytes but shape ` +
          `[${shape.join(", ")}] of ${dtype} needs ${expectedBytes}`,
      );
    }
    tensors.set(name, { name, dtype, shape: [...shape as number[]], dataOffsets: [begin, end] });
  }
  return { path: filePath, bytes, dataStart, metadata, tensors };
}

/** Reads and parses one `.safetensors` file. */
export async function readSafetensorsFile(filePath: string): Promise<SafetensorsFile> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(filePath);
  } catch (e) {
    throw new InputError(filePath, `cannot read safetensors file: ${(e as Error).message}`);
  }
  return parseSafetensors(bytes, filePath);
}

// IEEE half -> float, exact (every half value is representable in float32).
function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const mantissa = h & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 0x1f) return mantissa === 0 ? sign * Infinity : NaN;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

/** Converts one tensor of a parsed file to float32. */
export function tensorToFloat32(file: SafetensorsFile, name: string): Tensor {
  const info = file.tensors.get(name);
  if (!info) throw new InputError(file.path, `no tensor named "${name}"`);
  const start = file.dataStart + info.dataOffsets[0];
  const count = info.shape.reduce((a, b) => a * b, 1);
  const src = file.bytes;
  const out = new Float32Array(count);
  switch (info.dtype) {
    case "BF16": {
      // bf16 is the top half of an f32: shift the 16 bits up into an f32 bit pattern.
      const bits = new Uint32Array(out.buffer);
      for (let i = 0, p = start; i < count; i++, p += 2) {
        bits[i] = (src[p] | (src[p + 1] << 8)) << 16;
      }
      break;
    }
    case "F16":
      for (let i = 0, p = start; i < count; i++, p += 2) {
        out[i] = halfToFloat(src[p] | (src[p + 1] << 8));
      }
      break;
    case "F32": {
      const view = new DataView(src.buffer, src.byteOffset + start, count * 4);
      for (let i = 0; i < count; i++) out[i] = view.getFloat32(i * 4, true);
      break;
    }
    default:
      throw new InputError(
        file.path,
        `tensor "${name}" has dtype ${info.dtype}; only ${
          FLOAT_DTYPES.join(", ")
        } can be loaded as float32`,
      );
  }
  return { name, shape: [...info.shape], data: out };
}

/** Tensors of a set of parsed files; `owner` maps each tensor name to its file. */
class FileTensorStore implements TensorStore {
  constructor(readonly source: string, private readonly owner: Map<string, SafetensorsFile>) {}

  names(): string[] {
    return [...this.owner.keys()].sort();
  }

  has(name: string): boolean {
    return this.owner.has(name);
  }

  private fileOf(name: string): SafetensorsFile {
    const file = this.owner.get(name);
    if (!file) throw new InputError(this.source, `checkpoint has no tensor named "${name}"`);
    return file;
  }

  info(name: string): TensorInfo {
    return this.fileOf(name).tensors.get(name)!;
  }

  get(name: string): Tensor {
    return tensorToFloat32(this.fileOf(name), name);
  }
}

/** A store over a single safetensors file. */
export function storeFromFile(file: SafetensorsFile): TensorStore {
  const owner = new Map<string, SafetensorsFile>();
  for (const name of file.tensors.keys()) owner.set(name, file);
  return new FileTensorStore(file.path, owner);
}

async function exists(p: string): Promise<boolean> {
  try {
    await Deno.stat(p);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

export const SINGLE_FILE_NAME = "model.safetensors";
export const INDEX_FILE_NAME = "model.safetensors.index.json";

/** Reads a sharded checkpoint from its `model.safetensors.index.json`. */
export async function readShardedCheckpoint(indexPath: string): Promise<TensorStore> {
  let index: unknown;
  try {
    index = JSON.parse(await Deno.readTextFile(indexPath));
  } catch (e) {
    throw new InputError(indexPath, `cannot read checkpoint index: ${(e as Error).message}`);
  }
  const weightMap = (index as { weight_map?: unknown })?.weight_map;
  if (typeof weightMap !== "object" || weightMap === null || Array.isArray(weightMap)) {
    throw new InputError(indexPath, `missing "weight_map" object (tensor name -> shard file)`);
  }
  const dir = path.dirname(indexPath);
  const shards = new Map<string, SafetensorsFile>();
  const owner = new Map<string, SafetensorsFile>();
  for (const [name, shardName] of Object.entries(weightMap as Record<string, unknown>)) {
    if (typeof shardName !== "string" || shardName.includes("/") || shardName.includes("\\")) {
      throw new InputError(
        indexPath,
        `weight_map["${name}"] must be a shard file name in the same directory, ` +
          `got ${JSON.stringify(shardName)}`,
      );
    }
    let shard = shards.get(shardName);
    if (!shard) {
      shard = await readSafetensorsFile(path.join(dir, shardName));
      shards.set(shardName, shard);
    }
    if (!shard.tensors.has(name)) {
      throw new InputError(
        indexPath,
        `tensor "${name}" is listed in weight_map for ${shard.path} but is absent ` +
          `from that shard`,
      );
    }
    owner.set(name, shard);
  }
  return new FileTensorStore(indexPath, owner);
}

/** Opens the checkpoint of a model directory: `model.safetensors` or the sharded index. */
export async function openCheckpoint(dir: string): Promise<TensorStore> {
  const single = path.join(dir, SINGLE_FILE_NAME);
  if (await exists(single)) return storeFromFile(await readSafetensorsFile(single));
  const indexPath = path.join(dir, INDEX_FILE_NAME);
  if (await exists(indexPath)) return await readShardedCheckpoint(indexPath);
  throw new InputError(dir, `no ${SINGLE_FILE_NAME} or ${INDEX_FILE_NAME} found`);
}

/** A float32 tensor to write, stored as `dtype`. */
export interface TensorToWrite {
  name: string;
  shape: number[];
  data: Float32Array;
  dtype: "F32" | "BF16";
}

// float32 -> bf16 bits with round-to-nearest-even (NaN kept quiet).
function floatToBf16Bits(bits: number): number {
  if ((bits & 0x7f800000) === 0x7f800000 && (bits & 0x7fffff) !== 0) {
    return ((bits >>> 16) | 0x40) & 0xffff;
  }
  const rounding = 0x7fff + ((bits >>> 16) & 1);
  return ((bits + rounding) >>> 16) & 0xffff;
}

/**
 * Serialises tensors to safetensors bytes (F32 or BF16), e.g. for small test checkpoints.
 * The header is padded with spaces to a multiple of 8 bytes, as the reference writer does.
 */
export function encodeSafetensors(
  tensors: TensorToWrite[],
  metadata?: Record<string, string>,
): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata) header["__metadata__"] = metadata;
  let offset = 0;
  for (const t of tensors) {
    const count = t.shape.reduce((a, b) => a * b, 1);
    if (count !== t.data.length) {
      throw new Error(
        `encodeSafetensors: tensor "${t.name}" has ${t.data.length} values but shape ` +
          `[${t.shape.join(", ")}] needs ${count}`,
      );
    }
    const size = count * (t.dtype === "F32" ? 4 : 2);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + size] };
    offset += size;
  }
  let headerText = JSON.stringify(header);
  while ((new TextEncoder().encode(headerText).length) % 8 !== 0) headerText += " ";
  const headerBytes = new TextEncoder().encode(headerText);
  const out = new Uint8Array(HEADER_LENGTH_BYTES + headerBytes.length + offset);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, HEADER_LENGTH_BYTES);
  let p = HEADER_LENGTH_BYTES + headerBytes.length;
  for (const t of tensors) {
    if (t.dtype === "F32") {
      for (let i = 0; i < t.data.length; i++, p += 4) view.setFloat32(p, t.data[i], true);
    } else {
      const bits = new Uint32Array(t.data.buffer, t.data.byteOffset, t.data.length);
      for (let i = 0; i < t.data.length; i++, p += 2) {
        view.setUint16(p, floatToBf16Bits(bits[i]), true);
      }
    }
  }
  return out;
}
