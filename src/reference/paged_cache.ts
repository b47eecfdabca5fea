/**
 * CPU mirror of the GPU's paged KV and label caches, in the same layout (src/dsl/layout.ts), so a
 * GPU cache can be downloaded and compared word for word, and the reference attention reads the
 * same paging the kernels do.
 */
import { type AttentionSpec, ensureSpec } from "../dsl/spec.ts";
import {
  type CacheLayout,
  cacheLayout,
  codeLevels,
  kvHeadOfLabelHead,
  kvRowOffset,
  labelMetaOffset,
  labelRowOffset,
} from "../dsl/layout.ts";
import { fromBits, toBits } from "../util/dtype.ts";
import { packCodes, quantizeRow } from "./labels.ts";
import { PageTable } from "../util/page_table.ts";

/** A paged KV and label cache in host memory, laid out exactly as the GPU cache. */
export class CpuPagedCache {
  /** Sizes of the pools, from the spec. */
  readonly layout: CacheLayout;
  /** Block tables and sequence lengths (possibly shared with other layers). */
  readonly pages: PageTable;
  /** K and V pools as 16-bit patterns of the KV dtype. */
  readonly k: Uint16Array;
  /** The V pool, as K. */
  readonly v: Uint16Array;
  /** Packed label codes (or raw 16-bit K label channels), per the layout. */
  readonly labels: Uint32Array;
  /** Per-row label scale and min (quantized labels only). */
  readonly meta: Uint32Array;

  /**
   * Empty caches for `numSeqs` sequences over `numPages` pages.
   *
   * @param spec the attention variant
   * @param channels label channels per label head
   * @param numSeqs sequences
   * @param numPages physical pages
   * @param maxPagesPerSeq pages per block table
   * @param pageTable paging shared with another cache
   */
  constructor(
    readonly spec: AttentionSpec,
    /** Label channels per label head: channels[labelHead * r + i]. */
    readonly channels: Int32Array,
    numSeqs: number,
    numPages: number,
    maxPagesPerSeq: number,
    /** Share another cache's paging (several layers of one model page identically). */
    pageTable?: PageTable,
  ) {
    this.spec = spec = ensureSpec(spec, "CpuPagedCache(spec)");
    if (channels.length !== spec.numLabelHeads * spec.labelChannels) {
      throw new RangeError(
        `channels: expected ${spec.numLabelHeads} label heads x ${spec.labelChannels} = ` +
          `${spec.numLabelHeads * spec.labelChannels} entries, got ${channels.length}`,
      );
    }
    this.layout = cacheLayout(spec);
    this.pages = pageTable ?? new PageTable(numSeqs, numPages, spec.pageSize, maxPagesPerSeq);
    this.k = new Uint16Array(numPages * this.layout.kvPageElems);
    this.v = new Uint16Array(numPages * this.layout.kvPageElems);
    this.labels = new Uint32Array(numPages * this.layout.labelPageWords);
    this.meta = new Uint32Array(numPages * this.layout.metaPageWords);
  }

  /**
   * Writes token `pos` of `seq` (already reserved with pages.grow): K and V rows given as 16-bit
   * patterns [numKvHeads * headDim], and the label rows derived from K.
   */
  writeToken(seq: number, pos: number, kBits: Uint16Array, vBits: Uint16Array, at = 0): void {
    const s = this.spec;
    const d = s.headDim;
    const { page, row } = this.pages.locate(seq, pos);
    for (let h = 0; h < s.numKvHeads; h++) {
      const dst = kvRowOffset(s, page, h, row);
      this.k.set(kBits.subarray(at + h * d, at + (h + 1) * d), dst);
      this.v.set(vBits.subarray(at + h * d, at + (h + 1) * d), dst);
    }
    const r = s.labelChannels;
    for (let lh = 0; lh < s.numLabelHeads; lh++) {
      const kvh = kvHeadOfLabelHead(s, lh);
      const dst = labelRowOffset(s, page, lh, row);
      if (!this.layout.quantized) {
        for (let c = 0; c < r; c += 2) {
          const lo = kBits[at + kvh * d + this.channels[lh * r + c]];
          const hi = kBits[at + kvh * d + this.channels[lh * r + c + 1]];
          this.labels[dst + c / 2] = (lo | (hi << 16)) >>> 0;
        }
        continue;
      }
      const values = new Float32Array(r);
      for (let c = 0; c < r; c++) {
        values[c] = fromBits(s.kvDtype, kBits[at + kvh * d + this.channels[lh * r + c]]);
      }
      const q = quantizeRow(values, s.labelBits, s.kvDtype);
      packCodes(q.codes, s.labelBits, this.labels, dst);
      this.meta[labelMetaOffset(s, page, lh, row)] =
        (toBits(s.kvDtype, q.scale) | (toBits(s.kvDtype, q.min) << 16)) >>> 0;
    }
  }

  /** Appends one token to `seq` and returns its position. */
  append(seq: number, kBits: Uint16Array, vBits: Uint16Array, at = 0): number {
    const pos = this.pages.grow(seq, 1);
    this.writeToken(seq, pos, kBits, vBits, at);
    return pos;
  }

  /** K (or V) row of token `pos` of `seq` for kv head `h`, as floats. */
  row(which: "k" | "v", seq: number, pos: number, h: number): Float64Array {
    const { page, row } = this.pages.locate(seq, pos);
    const pool = which === "k" ? this.k : this.v;
    const off = kvRowOffset(this.spec, page, h, row);
    const out = new Float64Array(this.spec.headDim);
    for (let i = 0; i < out.length; i++) out[i] = fromBits(this.spec.kvDtype, pool[off + i]);
    return out;
  }

  /** The label values of token `pos` for label head `lh` as the kernels read them (dequantized). */
  labelRow(seq: number, pos: number, lh: number): Float64Array {
    const s = this.spec;
    const r = s.labelChannels;
    const { page, row } = this.pages.locate(seq, pos);
    const off = labelRowOffset(s, page, lh, row);
    const out = new Float64Array(r);
    if (!this.layout.quantized) {
      for (let c = 0; c < r; c++) {
        const word = this.labels[off + (c >> 1)];
        out[c] = fromBits(s.kvDtype, (c & 1) === 0 ? word & 0xffff : word >>> 16);
      }
      return out;
    }
    const m = this.meta[labelMetaOffset(s, page, lh, row)];
    const scale = fromBits(s.kvDtype, m & 0xffff);
    const min = fromBits(s.kvDtype, m >>> 16);
    const perWord = this.layout.codesPerWord;
    const mask = codeLevels(s.labelBits);
    for (let c = 0; c < r; c++) {
      const code = (this.labels[off + Math.floor(c / perWord)] >>> ((c % perWord) * s.labelBits)) &
        mask;
      out[c] = code * scale + min;
    }
    return out;
  }
}
