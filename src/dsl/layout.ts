/**
 * Memory layout of the paged caches, shared by the generated kernels (as baked constants), the
 * CPU reference and the runtime, so all three index the same bytes.
 *
 * Per layer:
 *   K pool, V pool:  [page][kvHead][row in page][headDim]           kvDtype elements
 *   label codes:     [page][labelHead][row in page][labelRowWords]  u32 words
 *   label meta:      [page][labelHead][row in page]                 u32 = (scale | min << 16),
 *                                                                   both kvDtype; bits < 16 only
 * A label row at 16 bits holds the raw K channels, two per word (low half first); at b < 16 bits
 * channel c sits at bits [(c*b) % 32, +b) of word floor(c*b / 32) (codes never straddle words).
 */
import type { AttentionSpec } from "./spec.ts";

/** Sizes of the paged caches of one layer, derived from a spec. */
export interface CacheLayout {
  /** Elements of one K (or V) page: numKvHeads * pageSize * headDim. */
  readonly kvPageElems: number;
  /** Words of one token's label row for one label head. */
  readonly labelRowWords: number;
  /** Words of one label-code page: numLabelHeads * pageSize * labelRowWords. */
  readonly labelPageWords: number;
  /** Words of one label-meta page (numLabelHeads * pageSize), 0 for 16-bit labels. */
  readonly metaPageWords: number;
  /** Whether labels are quantized (bits < 16), so per-row metadata exists. */
  readonly quantized: boolean;
}

/** The cache layout of a spec. */
export function cacheLayout(spec: AttentionSpec): CacheLayout {
  const labelRowWords = (spec.labelChannels * spec.labelBits) / 32;
  const quantized = spec.labelBits < 16;
  return Object.freeze({
    kvPageElems: spec.numKvHeads * spec.pageSize * spec.headDim,
    labelRowWords,
    labelPageWords: spec.numLabelHeads * spec.pageSize * labelRowWords,
    metaPageWords: quantized ? spec.numLabelHeads * spec.pageSize : 0,
    quantized,
  });
}

/** Element offset of (page, kvHead, row) in a K or V pool. */
export function kvRowOffset(
  spec: AttentionSpec,
  page: number,
  kvHead: number,
  row: number,
): number {
  return ((page * spec.numKvHeads + kvHead) * spec.pageSize + row) * spec.headDim;
}

/** Word offset of (page, labelHead, row) in the label-code pool. */
export function labelRowOffset(
  spec: AttentionSpec,
  page: number,
  labelHead: number,
  row: number,
): number {
  const rowWords = (spec.labelChannels * spec.labelBits) / 32;
  return ((page * spec.numLabelHeads + labelHead) * spec.pageSize + row) * rowWords;
}

/** Word offset of (page, labelHead, row) in the label-meta pool. */
export function labelMetaOffset(
  spec: AttentionSpec,
  page: number,
  labelHead: number,
  row: number,
): number {
  return (page * spec.numLabelHeads + labelHead) * spec.pageSize + row;
}

/** The kv head whose K a label head's channels are taken from. */
export function kvHeadOfLabelHead(spec: AttentionSpec, labelHead: number): number {
  return spec.labelHeads === "query" ? Math.floor(labelHead / spec.groupSize) : labelHead;
}

/** The label head a selection head scores against. */
export function labelHeadOfSelectionHead(spec: AttentionSpec, selHead: number): number {
  if (spec.selection === "group") return selHead;
  return spec.labelHeads === "query" ? selHead : Math.floor(selHead / spec.groupSize);
}

/** The query heads whose label dot products add up to a selection head's score. */
export function queryHeadsOfSelectionHead(spec: AttentionSpec, selHead: number): number[] {
  if (spec.selection === "head") return [selHead];
  return Array.from({ length: spec.groupSize }, (_, i) => selHead * spec.groupSize + i);
}
