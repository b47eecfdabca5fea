/**
 * The TMA tensor maps of the paged K and V pools, for the prefill kernel's tma schedule
 * (templates/prefill_wgmma.cuh.hbs, SCHEDULE 3). A pool [page][kv head][slot][head dim] is a 2D
 * tensor of (pages * kv heads * page size) rows of `headDim` 16-bit elements: the row of
 * (page, kv head, slot) is the one kv_row gives (templates/constants.cuh.hbs), so a page of one
 * kv head is `pageSize` consecutive rows. One copy moves a box of 64 elements (128 bytes, the
 * 128-byte swizzle's span) by `tmaBoxRows` rows (a page, or a key tile of a longer page) into
 * shared memory in exactly the layout the wgmma descriptors read (sw128_offset).
 *
 * The maps (128 bytes each: K then V of every layer) live in one device buffer written once when
 * the plan is made; the launch passes the addresses of a layer's two maps in place of its pool
 * pointers, so the launcher's arguments are unchanged. The pools never move while the cache
 * lives, so the maps are never rebuilt: a new cache gets a new plan and new maps.
 */
import type { Cuda, DeviceBuffer } from "../cuda/driver.ts";
import {
  TENSOR_MAP_BYTES,
  TensorMapDataType,
  TensorMapL2Promotion,
  TensorMapSwizzle,
  type TiledTensorMap,
} from "../cuda/tensor_map.ts";
import { tmaBoxRows } from "../codegen/prefill_wgmma_variants.ts";
import type { PagedKvCache } from "./caches.ts";

/** Elements of one box row: 128 bytes of 16-bit elements, the 128-byte swizzle's span. */
export const TMA_BOX_COLUMNS = 64;

/** What the pools' map depends on. */
export interface KvPoolShape {
  readonly headDim: number;
  readonly numKvHeads: number;
  readonly pageSize: number;
  readonly numPages: number;
  /** Keys per pipeline stage of the wgmma body (Tuning.prefillWgmmaKeyTile). */
  readonly keyTile: number;
}

/**
 * The tensor map of a K or V pool of `shape` (the same for both): a RangeError naming the field
 * when the pool cannot be described (head dim not a multiple of 64, page size with no TMA box,
 * more rows than an int32 coordinate reaches).
 */
export function kvTensorMap(shape: KvPoolShape): TiledTensorMap {
  const { headDim, numKvHeads, pageSize, numPages, keyTile } = shape;
  if (headDim % TMA_BOX_COLUMNS !== 0) {
    throw new RangeError(`kvTensorMap: headDim ${headDim}; allowed: a multiple of 64`);
  }
  const box = tmaBoxRows(pageSize, keyTile);
  if (box.why !== null) throw new RangeError(`kvTensorMap: ${box.why}`);
  const rows = numPages * numKvHeads * pageSize;
  // The kernel's row coordinate is an int32 (cp.async.bulk.tensor takes .s32 coordinates).
  if (!Number.isSafeInteger(rows) || rows < 1 || rows > 2 ** 31 - 1) {
    throw new RangeError(
      `kvTensorMap: ${numPages} pages x ${numKvHeads} kv heads x ${pageSize} = ${rows} rows; ` +
        "allowed: 1 to 2^31 - 1",
    );
  }
  return {
    dataType: TensorMapDataType.UINT16,
    globalDim: [headDim, rows],
    globalStrides: [headDim * 2],
    boxDim: [TMA_BOX_COLUMNS, box.rows],
    elementStrides: [1, 1],
    swizzle: TensorMapSwizzle.B128,
    l2Promotion: TensorMapL2Promotion.B128,
  };
}

/** The K and V tensor maps of every layer of a cache, in one device buffer. */
export class KvTensorMaps implements Disposable {
  readonly #buffer: DeviceBuffer;

  constructor(cuda: Cuda, cache: PagedKvCache, keyTile: number) {
    const map = kvTensorMap({
      headDim: cache.spec.headDim,
      numKvHeads: cache.spec.numKvHeads,
      pageSize: cache.spec.pageSize,
      numPages: cache.pages.numPages,
      keyTile,
    });
    const bytes = new Uint8Array(cache.layers.length * 2 * TENSOR_MAP_BYTES);
    cache.layers.forEach((l, i) => {
      bytes.set(cuda.encodeTensorMapTiled(map, l.k.ptr), (2 * i) * TENSOR_MAP_BYTES);
      bytes.set(cuda.encodeTensorMapTiled(map, l.v.ptr), (2 * i + 1) * TENSOR_MAP_BYTES);
    });
    // cuMemAlloc's 256-byte alignment covers the maps' 64.
    this.#buffer = cuda.alloc(bytes.byteLength);
    try {
      // Written once, before any launch reads it: a stream of its own, waited for here (the
      // host bytes must also outlive the asynchronous copy).
      using stream = cuda.stream();
      this.#buffer.upload(bytes, stream);
      stream.synchronize();
    } catch (e) {
      this.#buffer.dispose();
      throw e;
    }
  }

  /** Device address of layer `layer`'s K map. */
  k(layer: number): bigint {
    return this.#buffer.ptr + BigInt(2 * layer * TENSOR_MAP_BYTES);
  }

  /** Device address of layer `layer`'s V map. */
  v(layer: number): bigint {
    return this.#buffer.ptr + BigInt((2 * layer + 1) * TENSOR_MAP_BYTES);
  }

  get deviceBytes(): number {
    return this.#buffer.bytes;
  }

  dispose(): void {
    this.#buffer.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
