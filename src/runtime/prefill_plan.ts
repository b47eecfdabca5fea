/**
 * The prefill side of a variant: causal attention of a chunk of prompt rows over the paged cache
 * through the generated `prefill` kernel. The chunk's K/V rows must be appended first (the
 * decode plan's `appendRows`, so labels are written exactly as in decode); then every query row
 * attends to its sequence's cached keys up to its own position, whatever earlier chunks left.
 *
 * Memory is fixed by `maxRows` and the batch: a tile table of at most maxRows / Q_TILE + batch
 * tiles. Nothing grows with the prompt.
 */
import type { Cuda, DeviceBuffer, Stream } from "../cuda/driver.ts";
import type { PagedKvCache } from "./caches.ts";
import { type PrefillSegment, prefillTiles } from "./prefill_tiles.ts";
import type { Variant } from "./variant.ts";
import { prefillQTile } from "../codegen/kernels.ts";
import { KvTensorMaps } from "./kv_tensor_maps.ts";

export class PrefillPlan implements Disposable {
  /** Query rows per tile: the same for both bodies of the kernel (prefillQTile). */
  readonly qTile: number;
  readonly maxTiles: number;
  readonly softmaxScale: number;
  #numTiles = 0;
  readonly #tiles: DeviceBuffer;
  /** The pools' TMA tensor maps, when the prefill body reads K/V through TMA (tma schedule). */
  readonly #maps: KvTensorMaps | null;

  constructor(
    cuda: Cuda,
    readonly variant: Variant,
    readonly cache: PagedKvCache,
    readonly maxRows: number,
  ) {
    const t = variant.launchers.tuning;
    this.qTile = prefillQTile(t);
    this.maxTiles = Math.ceil(maxRows / this.qTile) + cache.pages.numSeqs;
    this.softmaxScale = 1 / Math.sqrt(variant.spec.headDim);
    this.#tiles = cuda.alloc(this.maxTiles * 4 * 4);
    try {
      this.#maps = variant.prefill.kvTensorMaps
        ? new KvTensorMaps(cuda, cache, t.prefillWgmmaKeyTile)
        : null;
    } catch (e) {
      this.#tiles.dispose();
      throw e;
    }
  }

  /** The tiles of the chunk now being prefilled (uploaded on `stream`). Returns the tile count. */
  setChunk(segments: readonly PrefillSegment[], stream: Stream): number {
    const rows = segments.reduce((n, s) => n + s.rows, 0);
    if (rows > this.maxRows) {
      throw new RangeError(
        `prefill chunk of ${rows} rows; this plan holds at most ${this.maxRows}`,
      );
    }
    const tiles = prefillTiles(segments, this.qTile);
    this.#numTiles = tiles.length / 4;
    if (this.#numTiles > this.maxTiles) {
      throw new RangeError(`prefill chunk of ${this.#numTiles} tiles; at most ${this.maxTiles}`);
    }
    if (tiles.length > 0) this.#tiles.upload(tiles, stream);
    return this.#numTiles;
  }

  /** Device bytes this plan holds (the tile table, and the tma schedule's tensor maps). */
  get deviceBytes(): number {
    return this.#tiles.bytes + (this.#maps?.deviceBytes ?? 0);
  }

  get numTiles(): number {
    return this.#numTiles;
  }

  /** Causal attention of the chunk's rows: q [rows][Hq][d] -> out [rows][Hq][d] (KV dtype). */
  attention(layer: number, q: bigint, out: bigint): void {
    const l = this.cache.layers[layer];
    const heads = this.variant.spec.numQHeads;
    this.variant.launchers.launchPrefill(
      this.variant.slot("prefill"),
      this.variant.prefill.headsFastest ? [heads, this.#numTiles, 1] : [this.#numTiles, heads, 1],
      {
        q,
        tiles: this.#tiles.ptr,
        blockTables: this.cache.blockTables.ptr,
        maxPages: this.cache.maxPagesPerSeq,
        // The tma schedule reads the pools through their tensor maps (same argument slots).
        kCache: this.#maps ? this.#maps.k(layer) : l.k.ptr,
        vCache: this.#maps ? this.#maps.v(layer) : l.v.ptr,
        out,
        softmaxScale: this.softmaxScale,
      },
    );
  }

  dispose(): void {
    this.#tiles.dispose();
    this.#maps?.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
