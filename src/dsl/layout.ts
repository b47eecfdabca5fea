/**
 * The one place every memory-layout fact is computed: the paged caches (K/V and label pools),
 * the label row format, the score keys and their histogram, and the selection workspace. The
 * generated kernels get these as constants rendered into their constants header
 * (`deviceConstants` -> templates/constants.cuh.hbs); the CPU reference, the runtime and the
 * spec's byte model import them from here, so all of them index the same bytes.
 *
 * Per layer:
 *   K pool, V pool:  [page][kvHead][row in page][headDim]           kvDtype elements
 *   label codes:     [page][labelHead][row in page][labelRowWords]  u32 words
 *   label meta:      [page][labelHead][row in page]                 u32 = (scale | min << 16),
 *                                                                   both kvDtype; bits < 16 only
 * A label row at 16 bits holds the raw K channels, two per word (low half first); at b < 16 bits
 * channel c sits at bits [(c*b) % 32, +b) of word floor(c*b / 32) (codes never straddle words).
 *
 * Pure: no I/O, no FFI.
 */
import type { AttentionSpec, LabelBits } from "./spec.ts";

// ---- label rows ------------------------------------------------------------------------------

/** Bytes of one cached K/V element (fp16 and bf16 alike). */
export const KV_ELEMENT_BYTES = 2;
/** Label rows are whole 32-bit words. */
export const LABEL_WORD_BITS = 32;

/** Label codes packed into one 32-bit word (two raw 16-bit channels at 16 bits). */
export const codesPerWord = (bits: number): number => LABEL_WORD_BITS / bits;
/** Largest b-bit code, also its mask: 2^b - 1 (min-max quantization has this many steps). */
export const codeLevels = (bits: number): number => 2 ** bits - 1;
/** Words of one label row (one token, one label head); channels * bits is a multiple of 32. */
export const labelRowWords = (channels: number, bits: number): number =>
  (channels * bits) / LABEL_WORD_BITS;
/** Bytes of one label row. */
export const labelRowBytes = (channels: number, bits: number): number =>
  labelRowWords(channels, bits) * 4;
/** Quantized labels (bits < 16) carry scale and min, each one KV element, per row. */
export const isQuantized = (bits: number): boolean => bits < 16;
/** Metadata bytes per label row: scale and min (one KV element each) when quantized, else 0. */
export const labelMetaBytes = (bits: number): number =>
  isQuantized(bits) ? 2 * KV_ELEMENT_BYTES : 0;
/** Smallest max - min range a quantized row divides into levels (a constant row quantizes to 0). */
export const LABEL_MIN_RANGE = 1e-5;

// ---- score keys, their histogram, candidates ----------------------------------------------------

/**
 * The score kernel stores the top SCORE_KEY_BITS of order_key(score) per token and counts the
 * top HIST_BITS of it in a histogram; the key's remaining low bits are the sub-bin that select
 * counts and resolve splits the threshold bin by.
 */
export const SCORE_KEY_BITS = 16;
/** Bytes of one stored score key. */
export const SCORE_KEY_BYTES = SCORE_KEY_BITS / 8;
/**
 * Score keys the select kernel reads per 16-byte load. Every row of keys (one per sequence and
 * selection head) starts on a 16-byte boundary: its stride is rounded up to a multiple of this.
 */
export const SCORE_KEYS_PER_VECTOR = 16 / SCORE_KEY_BYTES;

/** Row stride, in keys, of the score-key buffers for sequences of at most `maxTokens` tokens. */
export function scoreKeyStride(maxTokens: number): number {
  return Math.ceil(maxTokens / SCORE_KEYS_PER_VECTOR) * SCORE_KEYS_PER_VECTOR;
}
/** Bits of a score key the histogram counts (its top bits). */
export const HIST_BITS = 12;
/** Bins of the score-key histogram of one (sequence, selection head). */
export const HIST_BINS = 2 ** HIST_BITS;
/** order_key(score) >> KEY_SHIFT = the stored key. */
export const KEY_SHIFT = 32 - SCORE_KEY_BITS;
/** order_key(score) >> HIST_SHIFT = its histogram bin. */
export const HIST_SHIFT = 32 - HIST_BITS;
/** Low bits of a stored key below its histogram bin: the sub-bin. */
export const SUB_BIN_BITS = SCORE_KEY_BITS - HIST_BITS;
/** Sub-bins of one histogram bin. */
export const SUB_BINS = 2 ** SUB_BIN_BITS;
/** A candidate entry is (token index | sub-bin << CAND_SUB_SHIFT): indices below 2^28. */
export const CAND_SUB_SHIFT = 32 - SUB_BIN_BITS;
/** The token index of a candidate entry: entry & CAND_INDEX_MASK. */
export const CAND_INDEX_MASK = 2 ** CAND_SUB_SHIFT - 1;

/**
 * The selection counters of one (sequence, selection head): SELECTION_COUNTERS u32 slots, zero
 * between uses. Score writes its ticket, the threshold bin and the count above it; select adds
 * the selected and candidate counts and the threshold bin's sub-histogram; resolve reads them
 * all and zeroes them (and the histogram) for the next use.
 */
export const SELECTION_COUNTERS = 32;
/** Counter slot: tokens selected so far (above the threshold bin). */
export const CTR_SELECTED = 0;
/** Counter slot: candidates collected from the threshold bin. */
export const CTR_CANDIDATES = 1;
/** Counter slot: the score kernel's finished-block ticket. */
export const CTR_SCORE_TICKET = 2;
/** Counter slot: the threshold bin. */
export const CTR_THRESH_BIN = 3;
/** Counter slot: tokens in bins above the threshold bin. */
export const CTR_ABOVE = 4;
/** Counter slot (persistent step only): candidates of sub-bins above the threshold sub-bin taken. */
export const CTR_TAKEN = 5;
/** Counter slot (persistent step only): final candidates (the threshold sub-bin's) collected. */
export const CTR_FINAL = 6;
/** First of SUB_BINS sub-histogram slots. */
export const CTR_SUBHIST = 16;
if (CTR_SUBHIST + SUB_BINS > SELECTION_COUNTERS) {
  throw new Error("layout: the sub-histogram does not fit the selection counters");
}

// ---- the paged caches -------------------------------------------------------------------------

/** Sizes of the paged caches of one layer, derived from a spec. */
export interface CacheLayout {
  /** Label codes per 32-bit word. */
  readonly codesPerWord: number;
  /** Words of one token's label row for one label head. */
  readonly labelRowWords: number;
  /** Whether labels are quantized (bits < 16), so per-row metadata exists. */
  readonly quantized: boolean;
  /** Rows of one K (or V) page: numKvHeads * pageSize (a row is headDim elements). */
  readonly kvPageRows: number;
  /** Elements of one K (or V) page: kvPageRows * headDim. */
  readonly kvPageElems: number;
  /** Label rows of one page: numLabelHeads * pageSize (a row is labelRowWords words + 1 meta). */
  readonly labelPageRows: number;
  /** Words of one label-code page: labelPageRows * labelRowWords. */
  readonly labelPageWords: number;
  /** Words of one label-meta page (labelPageRows), 0 for 16-bit labels. */
  readonly metaPageWords: number;
}

/** The cache layout of a spec. */
export function cacheLayout(spec: AttentionSpec): CacheLayout {
  const rowWords = labelRowWords(spec.labelChannels, spec.labelBits);
  const quantized = isQuantized(spec.labelBits);
  const kvPageRows = spec.numKvHeads * spec.pageSize;
  const labelPageRows = spec.numLabelHeads * spec.pageSize;
  return Object.freeze({
    codesPerWord: codesPerWord(spec.labelBits),
    labelRowWords: rowWords,
    quantized,
    kvPageRows,
    kvPageElems: kvPageRows * spec.headDim,
    labelPageRows,
    labelPageWords: labelPageRows * rowWords,
    metaPageWords: quantized ? labelPageRows : 0,
  });
}

/** Row of (page, kvHead, slot) in a K or V pool; the CUDA twin is kv_row() in the constants. */
export function kvRow(spec: AttentionSpec, page: number, kvHead: number, slot: number): number {
  return (page * spec.numKvHeads + kvHead) * spec.pageSize + slot;
}

/** Row of (page, labelHead, slot) in the label pools; the CUDA twin is label_row(). */
export function labelRow(
  spec: AttentionSpec,
  page: number,
  labelHead: number,
  slot: number,
): number {
  return (page * spec.numLabelHeads + labelHead) * spec.pageSize + slot;
}

/** Element offset of (page, kvHead, row) in a K or V pool. */
export function kvRowOffset(
  spec: AttentionSpec,
  page: number,
  kvHead: number,
  row: number,
): number {
  return kvRow(spec, page, kvHead, row) * spec.headDim;
}

/** Word offset of (page, labelHead, row) in the label-code pool. */
export function labelRowOffset(
  spec: AttentionSpec,
  page: number,
  labelHead: number,
  row: number,
): number {
  return labelRow(spec, page, labelHead, row) * labelRowWords(spec.labelChannels, spec.labelBits);
}

/** Word offset of (page, labelHead, row) in the label-meta pool. */
export function labelMetaOffset(
  spec: AttentionSpec,
  page: number,
  labelHead: number,
  row: number,
): number {
  return labelRow(spec, page, labelHead, row);
}

// ---- heads ------------------------------------------------------------------------------------

/** The kv head whose K a label head's channels are taken from. */
export function kvHeadOfLabelHead(spec: AttentionSpec, labelHead: number): number {
  return spec.labelHeads === "query" ? Math.floor(labelHead / spec.groupSize) : labelHead;
}

/** The label head a selection head scores against. */
export function labelHeadOfSelectionHead(spec: AttentionSpec, selHead: number): number {
  if (spec.selection === "group") return selHead;
  return spec.labelHeads === "query" ? selHead : Math.floor(selHead / spec.groupSize);
}

/** The kv head whose K/V rows a selection head attends (the kernels' kv_head_of_sel). */
export function kvHeadOfSelectionHead(spec: AttentionSpec, selHead: number): number {
  return spec.selection === "group" ? selHead : Math.floor(selHead / spec.groupSize);
}

/** The selection head a query head's label dot products add to. */
export function selectionHeadOfQueryHead(spec: AttentionSpec, queryHead: number): number {
  return spec.selection === "head" ? queryHead : Math.floor(queryHead / spec.groupSize);
}

/** The label head whose channels a query head is read at (its selection head's). */
export function labelHeadOfQueryHead(spec: AttentionSpec, queryHead: number): number {
  return labelHeadOfSelectionHead(spec, selectionHeadOfQueryHead(spec, queryHead));
}

/** The query heads whose label dot products add up to a selection head's score. */
export function queryHeadsOfSelectionHead(spec: AttentionSpec, selHead: number): number[] {
  if (spec.selection === "head") return [selHead];
  return Array.from({ length: spec.groupSize }, (_, i) => selHead * spec.groupSize + i);
}

// ---- what the kernels get ---------------------------------------------------------------------

/**
 * Every constant of the kernels' constants header (templates/constants.cuh.hbs), by its CUDA
 * name. The template spells each name once and takes its value from here; a CPU test renders
 * the header for every example spec and compares each `NAME = value` with this record.
 */
export function deviceConstants(spec: AttentionSpec): DeviceConstants {
  const layout = cacheLayout(spec);
  return Object.freeze({
    HEAD_DIM: spec.headDim,
    NUM_Q_HEADS: spec.numQHeads,
    NUM_KV_HEADS: spec.numKvHeads,
    GROUP_SIZE: spec.groupSize,
    PAGE_SIZE: spec.pageSize,
    NUM_LABEL_HEADS: spec.numLabelHeads,
    LABELS_PER_QUERY_HEAD: spec.labelHeads === "query",
    GROUP_SELECTION: spec.selection === "group",
    NUM_SEL_HEADS: spec.numSelectionHeads,
    QUERY_HEADS_PER_SEL: spec.selection === "group" ? spec.groupSize : 1,
    LABEL_CHANNELS: spec.labelChannels,
    LABEL_BITS: spec.labelBits as LabelBits,
    LABELS_QUANTIZED: layout.quantized,
    LABEL_CODES_PER_WORD: layout.codesPerWord,
    LABEL_LEVELS: codeLevels(spec.labelBits),
    LABEL_ROW_WORDS: layout.labelRowWords,
    LABEL_MIN_RANGE,
    HIST_BINS,
    HIST_SHIFT,
    KEY_SHIFT,
    SCORE_KEYS_PER_VECTOR,
    SUB_BIN_BITS,
    SUB_BINS,
    CAND_SUB_SHIFT,
    CAND_INDEX_MASK,
    CTR_STRIDE: SELECTION_COUNTERS,
    CTR_SELECTED,
    CTR_CANDIDATES,
    CTR_SCORE_TICKET,
    CTR_THRESH_BIN,
    CTR_ABOVE,
    CTR_TAKEN,
    CTR_FINAL,
    CTR_SUBHIST,
  });
}

/** The constants header's values (the CUDA names; booleans render as `true` / `false`). */
export interface DeviceConstants {
  /** Head dimension. */
  readonly HEAD_DIM: number;
  /** Query heads. */
  readonly NUM_Q_HEADS: number;
  /** KV heads. */
  readonly NUM_KV_HEADS: number;
  /** Query heads per kv head. */
  readonly GROUP_SIZE: number;
  /** Tokens per page. */
  readonly PAGE_SIZE: number;
  /** Label rows per token: query heads or kv heads. */
  readonly NUM_LABEL_HEADS: number;
  /** One label row per query head (else per kv head). */
  readonly LABELS_PER_QUERY_HEAD: boolean;
  /** One selection per kv head (else per query head). */
  readonly GROUP_SELECTION: boolean;
  /** Independent top-k selections per sequence. */
  readonly NUM_SEL_HEADS: number;
  /** Query heads whose label scores add up to one selection head's. */
  readonly QUERY_HEADS_PER_SEL: number;
  /** Label channels r. */
  readonly LABEL_CHANNELS: number;
  /** Bits per stored label channel. */
  readonly LABEL_BITS: LabelBits;
  /** Labels are quantized (bits < 16). */
  readonly LABELS_QUANTIZED: boolean;
  /** {@linkcode codesPerWord}. */
  readonly LABEL_CODES_PER_WORD: number;
  /** {@linkcode codeLevels}. */
  readonly LABEL_LEVELS: number;
  /** {@linkcode labelRowWords}. */
  readonly LABEL_ROW_WORDS: number;
  /** {@linkcode LABEL_MIN_RANGE}. */
  readonly LABEL_MIN_RANGE: number;
  /** {@linkcode HIST_BINS}. */
  readonly HIST_BINS: number;
  /** {@linkcode HIST_SHIFT}. */
  readonly HIST_SHIFT: number;
  /** {@linkcode KEY_SHIFT}. */
  readonly KEY_SHIFT: number;
  /** {@linkcode SCORE_KEYS_PER_VECTOR}. */
  readonly SCORE_KEYS_PER_VECTOR: number;
  /** {@linkcode SUB_BIN_BITS}. */
  readonly SUB_BIN_BITS: number;
  /** {@linkcode SUB_BINS}. */
  readonly SUB_BINS: number;
  /** {@linkcode CAND_SUB_SHIFT}. */
  readonly CAND_SUB_SHIFT: number;
  /** {@linkcode CAND_INDEX_MASK}. */
  readonly CAND_INDEX_MASK: number;
  /** {@linkcode SELECTION_COUNTERS}. */
  readonly CTR_STRIDE: number;
  /** {@linkcode CTR_SELECTED}. */
  readonly CTR_SELECTED: number;
  /** {@linkcode CTR_CANDIDATES}. */
  readonly CTR_CANDIDATES: number;
  /** {@linkcode CTR_SCORE_TICKET}. */
  readonly CTR_SCORE_TICKET: number;
  /** {@linkcode CTR_THRESH_BIN}. */
  readonly CTR_THRESH_BIN: number;
  /** {@linkcode CTR_ABOVE}. */
  readonly CTR_ABOVE: number;
  /** {@linkcode CTR_TAKEN}. */
  readonly CTR_TAKEN: number;
  /** {@linkcode CTR_FINAL}. */
  readonly CTR_FINAL: number;
  /** {@linkcode CTR_SUBHIST}. */
  readonly CTR_SUBHIST: number;
}
