/**
 * GPU paged caches: per layer a K pool, a V pool and the label pools (layout in
 * src/dsl/layout.ts), plus the label channels of each label head; one block table shared by all
 * layers (every layer pages identically), kept on the host in a PageTable and mirrored on the
 * device.
 */
import type { AttentionSpec } from "../dsl/spec.ts";
import { cacheLayout } from "../dsl/layout.ts";
import type { Cuda, DeviceBuffer, HostBuffer, Stream } from "../cuda/driver.ts";
import { PageTable } from "../util/page_table.ts";

export class LayerCache implements Disposable {
  readonly k: DeviceBuffer;
  readonly v: DeviceBuffer;
  readonly labels: DeviceBuffer;
  readonly meta: DeviceBuffer;
  readonly channels: DeviceBuffer;

  constructor(cuda: Cuda, readonly spec: AttentionSpec, numPages: number) {
    const layout = cacheLayout(spec);
    // Frees the pools allocated so far if a later one fails (out of memory); moved out at the end.
    using guard = new DisposableStack();
    this.k = guard.use(cuda.alloc(numPages * layout.kvPageElems * 2));
    this.v = guard.use(cuda.alloc(numPages * layout.kvPageElems * 2));
    this.labels = guard.use(cuda.alloc(numPages * layout.labelPageWords * 4));
    this.meta = guard.use(cuda.alloc(Math.max(4, numPages * layout.metaPageWords * 4)));
    this.channels = guard.use(cuda.alloc(spec.numLabelHeads * spec.labelChannels * 4));
    guard.move();
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
    // Frees the layers and tables allocated so far if a later one fails; moved out at the end.
    using guard = new DisposableStack();
    this.layers = Array.from(
      { length: opts.numLayers },
      () => guard.use(new LayerCache(cuda, spec, this.pages.numPages)),
    );
    this.blockTables = guard.use(cuda.alloc(this.pages.blockTables.byteLength));
    this.#hostTables = guard.use(cuda.allocHost(this.pages.blockTables.byteLength));
    guard.move();
  }

  /** Device bytes of every layer's pools and the block tables. */
  get deviceBytes(): number {
    return this.layers.reduce(
      (n, l) => n + l.k.bytes + l.v.bytes + l.labels.bytes + l.meta.bytes + l.channels.bytes,
      this.blockTables.bytes,
    );
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
