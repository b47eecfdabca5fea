/**
 * GPU paged caches: per layer a K pool, a V pool and the label pools (layout in
 * src/dsl/layout.ts), plus the label channels of each label head; one block table shared by all
 * layers (every layer pages identically), kept on the host in a PageTable and mirrored on the
 * device.
 *
 * Where a layer's K and V pools live is the cache's choice (`kvPlacement`): device memory, or
 * pinned host memory mapped into the device address space (Double Sparsity-Offload). Labels,
 * label meta, channels and block tables are always on the device. Kernels reach K/V only through
 * a LayerCache's `k.ptr` / `v.ptr`, which is a device address either way: with host pools every
 * existing kernel (append, dense, sparse, prefill) reads and writes over PCIe (zero-copy).
 */
import type { AttentionSpec } from "../dsl/spec.ts";
import { cacheLayout } from "../dsl/layout.ts";
import type { Cuda, DeviceBuffer, HostBuffer, MappedHostBuffer, Stream } from "../cuda/driver.ts";
import { PageTable } from "../util/page_table.ts";

/** Where one layer's K and V pools live. */
export type KvPlacement = "device" | "host";

/** A K or V pool: device memory, or mapped pinned host memory (`ptr` is a device address). */
export type KvPool = DeviceBuffer | MappedHostBuffer;

export class LayerCache implements Disposable {
  readonly k: KvPool;
  readonly v: KvPool;
  readonly labels: DeviceBuffer;
  readonly meta: DeviceBuffer;
  readonly channels: DeviceBuffer;

  constructor(
    cuda: Cuda,
    readonly spec: AttentionSpec,
    numPages: number,
    readonly placement: KvPlacement = "device",
  ) {
    const layout = cacheLayout(spec);
    const pool = (bytes: number): KvPool =>
      placement === "host" ? cuda.allocHostMapped(bytes) : cuda.alloc(bytes);
    // Frees the pools allocated so far if a later one fails (out of memory); moved out at the end.
    using guard = new DisposableStack();
    this.k = guard.use(pool(numPages * layout.kvPageElems * 2));
    this.v = guard.use(pool(numPages * layout.kvPageElems * 2));
    this.labels = guard.use(cuda.alloc(numPages * layout.labelPageWords * 4));
    this.meta = guard.use(cuda.alloc(Math.max(4, numPages * layout.metaPageWords * 4)));
    this.channels = guard.use(cuda.alloc(spec.numLabelHeads * spec.labelChannels * 4));
    guard.move();
  }

  /** Bytes of the K and V pools (where `placement` says). */
  get kvBytes(): number {
    return this.k.bytes + this.v.bytes;
  }

  /** Device bytes of the label pools and channels (always on the device). */
  get labelBytes(): number {
    return this.labels.bytes + this.meta.bytes + this.channels.bytes;
  }

  /** Label channels [numLabelHeads][labelChannels], each a channel index < headDim. */
  setChannels(channels: Int32Array, stream: Stream): void {
    const s = this.spec;
    if (channels.length !== s.numLabelHeads * s.labelChannels) {
      throw new RangeError(
        `channels: expected ${s.numLabelHeads} x ${s.labelChannels} entries, got ${channels.length}`,
      );
    }
    for (const c of channels) {
      if (!(c >= 0 && c < s.headDim)) {
        throw new RangeError(`channels: index ${c} outside [0, ${s.headDim})`);
      }
    }
    this.channels.upload(channels, stream);
  }

  dispose(): void {
    for (const b of [this.k, this.v, this.labels, this.meta, this.channels]) b.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

export interface PagedCacheOptions {
  readonly numLayers: number;
  /** Sequence slots (the batch). */
  readonly numSeqs: number;
  /** Longest context a sequence may reach. */
  readonly maxContext: number;
  /** Physical pages shared by all sequences (default: enough for every slot at maxContext). */
  readonly numPages?: number;
  /** Host bookkeeping to adopt (tests share one with the CPU reference cache). */
  readonly pageTable?: PageTable;
  /** Where each layer's K/V live ([numLayers]; default: every layer on the device). */
  readonly kvPlacement?: readonly KvPlacement[];
}

export class PagedKvCache implements Disposable {
  readonly pages: PageTable;
  readonly layers: LayerCache[];
  readonly blockTables: DeviceBuffer;
  readonly #hostTables: HostBuffer;
  #uploadedVersion = -1;

  constructor(cuda: Cuda, readonly spec: AttentionSpec, opts: PagedCacheOptions) {
    const maxPages = Math.ceil(opts.maxContext / spec.pageSize);
    this.pages = opts.pageTable ??
      new PageTable(
        opts.numSeqs,
        opts.numPages ?? maxPages * opts.numSeqs,
        spec.pageSize,
        maxPages,
      );
    if (this.pages.pageSize !== spec.pageSize || this.pages.numSeqs !== opts.numSeqs) {
      throw new RangeError("pageTable: page size or sequence count differs from the spec/options");
    }
    const placement = opts.kvPlacement ?? [];
    if (opts.kvPlacement && placement.length !== opts.numLayers) {
      throw new RangeError(
        `kvPlacement: got ${placement.length} entries; allowed: one per layer (${opts.numLayers})`,
      );
    }
    placement.forEach((p, i) => {
      if (p !== "device" && p !== "host") {
        throw new RangeError(`kvPlacement[${i}]: got ${JSON.stringify(p)}; allowed: device, host`);
      }
    });
    // Frees the layers and tables allocated so far if a later one fails; moved out at the end.
    using guard = new DisposableStack();
    this.layers = Array.from(
      { length: opts.numLayers },
      (_, i) => guard.use(new LayerCache(cuda, spec, this.pages.numPages, placement[i])),
    );
    this.blockTables = guard.use(cuda.alloc(this.pages.blockTables.byteLength));
    this.#hostTables = guard.use(cuda.allocHost(this.pages.blockTables.byteLength));
    guard.move();
  }

  /** Device bytes: label pools and channels of every layer, device-placed K/V, block tables. */
  get deviceBytes(): number {
    return this.layers.reduce(
      (n, l) => n + l.labelBytes + (l.placement === "device" ? l.kvBytes : 0),
      this.blockTables.bytes,
    );
  }

  /** Pinned host bytes of the host-placed K/V pools. */
  get hostBytes(): number {
    return this.layers.reduce((n, l) => n + (l.placement === "host" ? l.kvBytes : 0), 0);
  }

  /** Whether any layer keeps its K/V in host memory. */
  get offloaded(): boolean {
    return this.layers.some((l) => l.placement === "host");
  }

  get maxPagesPerSeq(): number {
    return this.pages.maxPagesPerSeq;
  }

  /** Uploads the block tables if they changed since the last upload (outside any graph). */
  syncBlockTables(stream: Stream): boolean {
    if (this.#uploadedVersion === this.pages.version) return false;
    const now = this.pages.blockTables;
    new Int32Array(this.#hostTables.buffer, 0, now.length).set(now);
    this.#hostTables.copyTo(this.blockTables.ptr, stream, now.byteLength);
    this.#uploadedVersion = this.pages.version;
    return true;
  }

  dispose(): void {
    for (const l of this.layers) l.dispose();
    this.blockTables.dispose();
    this.#hostTables.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
