/**
 * The one description of every kernel a decode step needs: its template, its arguments (from
 * which both the CUDA parameter list and the typed TypeScript launcher are generated) and the
 * launch shape the runtime must use. Pure data plus small functions of the spec.
 */
import type { AttentionSpec } from "../dsl/spec.ts";
import { cacheLayout } from "../dsl/layout.ts";
import {
  defaultWgmmaVariant,
  type WgmmaSchedule,
  wgmmaSharedBytes,
  withWgmmaVariant,
} from "./prefill_wgmma_variants.ts";

/** How a kernel argument is passed: a device pointer, a 32-bit int or a 32-bit float. */
export type ArgKind = "ptr" | "i32" | "f32";

/** One argument of a kernel, in signature order. */
export interface KernelArg {
  /** snake_case name in CUDA; the launcher field is its camelCase form. */
  readonly name: string;
  /** How it is passed. */
  readonly kind: ArgKind;
  /** C type in the kernel signature. */
  readonly cType: string;
  /** What it holds (shape and meaning), carried into the CUDA source and the launcher. */
  readonly doc: string;
}

/** The kernels of a decode step and the prefill attention kernel. */
export type KernelId =
  | "append"
  | "score"
  | "select"
  | "resolve"
  | "dense"
  | "sparse"
  | "merge"
  | "persistent"
  | "prefill"
  | "sort_selection"
  | "gather_kv"
  | "fill_row_cache"
  | "stage_newest";

/** One kernel of the decode step: its template, arguments and launch shape. */
export interface KernelDescription {
  /** Which kernel. */
  readonly id: KernelId;
  /** Its Handlebars template in templates/. */
  readonly template: string;
  /** What it does, one sentence. */
  readonly doc: string;
  /** Its arguments, in signature order. */
  readonly args: readonly KernelArg[];
  /** How the runtime shapes the grid (documentation carried into the launcher). */
  readonly grid: string;
  /**
   * The kernel begins with pdl_begin() (templates/prelude.cuh.hbs: griddepcontrol.wait before any
   * global access of its predecessor's data), so it may be launched with programmatic stream
   * serialization (src/runtime/pdl.ts). The decode step's kernels; tests check the sources.
   */
  readonly programmatic: boolean;
}

const ptr = (name: string, cType: string, doc: string): KernelArg => ({
  name,
  kind: "ptr",
  cType: `${cType}__restrict__ `,
  doc,
});
const i32 = (name: string, doc: string): KernelArg => ({ name, kind: "i32", cType: "int ", doc });
const f32 = (name: string, doc: string): KernelArg => ({ name, kind: "f32", cType: "float ", doc });

const q = ptr("q", "const u16* ", "[batch][NUM_Q_HEADS][HEAD_DIM] queries after RoPE");
const blockTables = ptr("block_tables", "const int* ", "[batch][max_pages] physical pages");
const maxPages = i32("max_pages", "row stride of block_tables");
const seqLens = ptr("seq_lens", "const int* ", "[batch] cached tokens, this step's included");
const routes = ptr("routes", "const int* ", "[batch] 1 = sparse, 0 = dense");
const budgets = ptr("budgets", "const int* ", "[batch] tokens to select per selection head");
const channels = ptr("channels", "const int* ", "[NUM_LABEL_HEADS][LABEL_CHANNELS] label channels");
const labelCodes = (w: boolean) =>
  ptr(
    "label_codes",
    w ? "u32* " : "const u32* ",
    "[pages][NUM_LABEL_HEADS][PAGE_SIZE][LABEL_ROW_WORDS]",
  );
const labelMeta = (w: boolean) =>
  ptr(
    "label_meta",
    w ? "u32* " : "const u32* ",
    "[pages][NUM_LABEL_HEADS][PAGE_SIZE] scale|min<<16",
  );
const kvCache = (which: "k" | "v", w: boolean) =>
  ptr(
    `${which}_cache`,
    w ? "u16* " : "const u16* ",
    "[pages][NUM_KV_HEADS][PAGE_SIZE][HEAD_DIM]",
  );
const keys = (w: boolean) =>
  ptr("keys", w ? "u16* " : "const u16* ", "[batch][NUM_SEL_HEADS][key_stride] score keys");
const hist = ptr(
  "hist",
  "u32* ",
  "[batch][NUM_SEL_HEADS][HIST_BINS] key histogram, zero between uses",
);
const keyStride = i32("key_stride", "row stride of keys, cand_idx, cand_key (>= longest context)");
const partialO = (w: boolean) =>
  ptr(
    "partial_o",
    w ? "float* " : "const float* ",
    "[batch][NUM_Q_HEADS][max_splits][HEAD_DIM] split outputs",
  );
const partialLse = (w: boolean) =>
  ptr(
    "partial_lse",
    w ? "float* " : "const float* ",
    "[batch][NUM_Q_HEADS][max_splits] log2-sum-exp2",
  );
const maxSplits = i32("max_splits", "split stride of partial_o / partial_lse");
const counters = ptr(
  "counters",
  "u32* ",
  "[batch][NUM_SEL_HEADS][CTR_STRIDE] selection state, zero between uses",
);
const selIdxOut = ptr(
  "sel_idx",
  "int* ",
  "[batch][NUM_SEL_HEADS][sel_stride] selected tokens (unordered)",
);
const selStride = i32("sel_stride", "row stride of sel_idx (>= largest budget)");
const softmaxScale = f32("softmax_scale", "usually 1/sqrt(HEAD_DIM)");
/** What label scoring reads (score, resolve, the persistent step), in signature order. */
const labelInputs = [
  q,
  channels,
  labelCodes(false),
  labelMeta(false),
  blockTables,
  maxPages,
];
/** What the score kernel and the persistent step's score stage take, in signature order. */
const scoreInputs = [
  ...labelInputs,
  seqLens,
  budgets,
  routes,
  keys(true),
  hist,
  keyStride,
  counters,
];
const candIdxOut = ptr(
  "cand_idx",
  "int* ",
  "[batch][NUM_SEL_HEADS][key_stride] candidates (index | sub-bin << CAND_SUB_SHIFT)",
);
const attentionOut = ptr(
  "out",
  "u16* ",
  "[batch][NUM_Q_HEADS][HEAD_DIM] attention output, KV dtype",
);
const lseOut = ptr(
  "lse_out",
  "float* ",
  "[batch][NUM_Q_HEADS] log2-sum-exp2 of the attended tokens, or null",
);

const stageRows = "[batch][NUM_SEL_HEADS][sel_stride][HEAD_DIM] staged rows, KV dtype";
const cacheRows = "[batch][NUM_KV_HEADS][cache_slots][HEAD_DIM] row cache, KV dtype";
const cacheSlots = i32("cache_slots", "row-cache slots per (sequence, kv head); 0: no row cache");
const cacheTags = (w: boolean) =>
  ptr(
    "cache_tags",
    w ? "int* " : "const int* ",
    "[batch][NUM_KV_HEADS][cache_slots] the token each slot holds, -1: none (null when " +
      "cache_slots is 0)",
  );
const cacheClaims = ptr(
  "cache_claims",
  "int* ",
  "[batch][NUM_KV_HEADS][cache_slots] largest token that missed each slot this step, -1 between",
);
/** One device-resident source of the gather kernel (all null when absent). */
const gatherSource = (n: number, what: string): KernelArg[] => [
  ptr(`src${n}_idx`, "const int* ", `[batch][NUM_SEL_HEADS][sel_stride] ${what}: sorted tokens`),
  ptr(`src${n}_count`, "const int* ", `[batch] ${what}: tokens per list`),
  ptr(`src${n}_k`, "const u16* ", `${what}: K ${stageRows}`),
  ptr(`src${n}_v`, "const u16* ", `${what}: V ${stageRows}`),
];

/** Kernels of Double Sparsity-Offload (K/V in host memory), after the decode step's. */
function offloadKernels(): KernelDescription[] {
  return [
    {
      id: "sort_selection",
      template: "sort_selection.cu.hbs",
      doc: "Sorts each selection head's selected tokens ascending in place (bitmap + prefix sum).",
      grid: "(NUM_SEL_HEADS, 1, batch)",
      programmatic: true,
      args: [
        seqLens,
        budgets,
        routes,
        ptr(
          "sel_idx",
          "int* ",
          "[batch][NUM_SEL_HEADS][sel_stride] selected tokens; sorted in place",
        ),
        selStride,
        ptr(
          "bitmap",
          "u32* ",
          "[batch][NUM_SEL_HEADS][bitmap_stride] token bitmap, zero between uses",
        ),
        i32("bitmap_stride", "words per bitmap row (>= ceil(longest context / 32))"),
      ],
    },
    {
      id: "gather_kv",
      template: "gather_kv.cu.hbs",
      doc: "Copies the selected K/V rows into device staging from device sources or host memory.",
      grid: "(NUM_SEL_HEADS, chunk lanes <= ceil(sel_stride / gatherRowsPerBlock), batch)",
      programmatic: false,
      args: [
        budgets,
        routes,
        blockTables,
        maxPages,
        ptr("sel_idx", "const int* ", "[batch][NUM_SEL_HEADS][sel_stride] sorted selected tokens"),
        selStride,
        kvCache("k", false),
        kvCache("v", false),
        ptr("k_stage", "u16* ", `K ${stageRows}`),
        ptr("v_stage", "u16* ", `V ${stageRows}`),
        ptr("dst_idx", "int* ", "[batch][NUM_SEL_HEADS][sel_stride] the staged rows' tokens"),
        ptr("dst_count", "int* ", "[batch] staged tokens per list (0: not routed sparse)"),
        ...gatherSource(0, "previous step"),
        ...gatherSource(1, "prefetch"),
        ptr("cache_k", "const u16* ", `K ${cacheRows} (null when cache_slots is 0)`),
        ptr("cache_v", "const u16* ", `V ${cacheRows} (null when cache_slots is 0)`),
        cacheTags(false),
        { ...cacheClaims, doc: cacheClaims.doc + "; null: misses bid for no slot" },
        cacheSlots,
        ptr(
          "counters",
          "u64* ",
          "[4] rows taken from src0, src1, host memory and the row cache (added to)",
        ),
      ],
    },
    {
      id: "fill_row_cache",
      template: "row_cache.cu.hbs",
      doc: "Writes the staged rows that won their row-cache slot in the gather into the cache.",
      grid: "(NUM_SEL_HEADS, chunk lanes <= ceil(sel_stride / gatherRowsPerBlock), batch)",
      programmatic: false,
      args: [
        ptr("stage_idx", "const int* ", "[batch][NUM_SEL_HEADS][sel_stride] the staged tokens"),
        ptr("stage_count", "const int* ", "[batch] staged tokens per list"),
        selStride,
        ptr("k_stage", "const u16* ", `K ${stageRows}`),
        ptr("v_stage", "const u16* ", `V ${stageRows}`),
        ptr("cache_k", "u16* ", `K ${cacheRows}`),
        ptr("cache_v", "u16* ", `V ${cacheRows}`),
        cacheTags(true),
        cacheClaims,
        cacheSlots,
      ],
    },
    {
      id: "stage_newest",
      template: "stage_newest.cu.hbs",
      doc:
        "Writes this step's new K/V row into the last budget row of a prefetch staging (skipMissed).",
      grid: "(NUM_SEL_HEADS, 1, batch)",
      programmatic: false,
      args: [
        seqLens,
        budgets,
        routes,
        ptr("k_new", "const u16* ", "[batch][NUM_KV_HEADS][HEAD_DIM] this step's keys after RoPE"),
        ptr("v_new", "const u16* ", "[batch][NUM_KV_HEADS][HEAD_DIM] this step's values"),
        selStride,
        ptr("k_stage", "u16* ", `K ${stageRows}`),
        ptr("v_stage", "u16* ", `V ${stageRows}`),
        ptr("stage_idx", "int* ", "[batch][NUM_SEL_HEADS][sel_stride] the staged rows' tokens"),
        ptr("stage_count", "int* ", "[batch] staged tokens per list"),
      ],
    },
  ];
}

/**
 * Every kernel generated per variant: the decode step's in launch order, prefill attention, then
 * the offload kernels.
 */
export const KERNELS: readonly KernelDescription[] = [
  {
    id: "append",
    template: "append.cu.hbs",
    doc: "Writes new K/V rows into the paged cache and, fused, their (quantized) label rows.",
    grid: "(num_rows, 1, 1)",
    programmatic: true,
    args: [
      ptr("k_new", "const u16* ", "[num_rows][NUM_KV_HEADS][HEAD_DIM] new keys after RoPE"),
      ptr("v_new", "const u16* ", "[num_rows][NUM_KV_HEADS][HEAD_DIM] new values"),
      ptr("row_seq", "const int* ", "[num_rows] sequence of each row"),
      ptr("row_pos", "const int* ", "[num_rows] position of each row in its sequence"),
      blockTables,
      maxPages,
      channels,
      kvCache("k", true),
      kvCache("v", true),
      labelCodes(true),
      labelMeta(true),
      i32("num_rows", "rows to append"),
    ],
  },
  {
    id: "score",
    template: "score.cu.hbs",
    doc: "Label scores: 16-bit keys, a 12-bit key histogram, and (last block) the threshold bin.",
    grid: "(NUM_SEL_HEADS, ceil(key_stride / tokens_per_block), batch)",
    programmatic: true,
    args: [
      ...scoreInputs,
      i32("tokens_per_block", "tokens scored per block (grid.y = ceil(key_stride / this))"),
    ],
  },
  {
    id: "select",
    template: "select.cu.hbs",
    doc: "Selects tokens above the threshold bin; collects the bin's tokens as candidates.",
    grid: "(NUM_SEL_HEADS, ceil(key_stride / tokens_per_block), batch)",
    programmatic: true,
    args: [
      seqLens,
      routes,
      keys(false),
      keyStride,
      counters,
      candIdxOut,
      selIdxOut,
      selStride,
      i32("tokens_per_block", "keys scanned per block (grid.y = ceil(key_stride / this))"),
    ],
  },
  {
    id: "resolve",
    template: "resolve.cu.hbs",
    doc: "Completes top-k inside the threshold bin (exact scores, radix); resets hist/counters.",
    grid: "(NUM_SEL_HEADS, 1, batch)",
    programmatic: true,
    args: [
      ...labelInputs,
      budgets,
      routes,
      hist,
      keyStride,
      counters,
      ptr("cand_idx", "int* ", "[batch][NUM_SEL_HEADS][key_stride] candidates; compacted in place"),
      ptr("cand_key", "u32* ", "[batch][NUM_SEL_HEADS][key_stride] candidate key scratch"),
      selIdxOut,
      selStride,
    ],
  },
  {
    id: "dense",
    template: "dense_attention.cu.hbs",
    doc: "Dense split-K decode attention for sequences routed dense.",
    grid: "(dense_splits, NUM_KV_HEADS * denseHeadTiles, batch)",
    programmatic: true,
    args: [
      q,
      kvCache("k", false),
      kvCache("v", false),
      blockTables,
      maxPages,
      seqLens,
      routes,
      partialO(true),
      partialLse(true),
      maxSplits,
      softmaxScale,
    ],
  },
  {
    id: "sparse",
    template: "sparse_attention.cu.hbs",
    doc: "Sparse split-K attention over each selection head's selected tokens.",
    grid: "(sparse_splits, sparseAttentionHeadBlocks, batch)",
    programmatic: true,
    args: [
      q,
      kvCache("k", false),
      kvCache("v", false),
      blockTables,
      maxPages,
      budgets,
      routes,
      ptr("sel_idx", "const int* ", "[batch][NUM_SEL_HEADS][sel_stride] selected tokens"),
      i32("sel_stride", "row stride of sel_idx"),
      partialO(true),
      partialLse(true),
      maxSplits,
      softmaxScale,
      i32(
        "staged",
        "1: k_cache/v_cache are gather_kv's staging, row i = selected token i; 0: the pools",
      ),
    ],
  },
  {
    id: "merge",
    template: "merge.cu.hbs",
    doc: "Log-sum-exp merge of the split partials into the attention output.",
    grid: "(NUM_Q_HEADS, batch, 1)",
    programmatic: true,
    args: [
      partialO(false),
      partialLse(false),
      maxSplits,
      routes,
      i32("dense_splits", "partials of a dense-routed sequence"),
      i32("sparse_splits", "partials of a sparse-routed sequence"),
      attentionOut,
      lseOut,
    ],
  },
  {
    id: "persistent",
    template: "persistent_step.cu.hbs",
    doc:
      "The whole sparse step for small batches in one cooperative launch, grid barriers between stages.",
    grid: "(resident blocks, 1, 1), launched cooperatively",
    programmatic: false,
    args: [
      ...scoreInputs,
      candIdxOut,
      ptr("cand_key", "u32* ", "[batch][NUM_SEL_HEADS][key_stride] final candidates' exact keys"),
      ptr("final_idx", "int* ", "[batch][NUM_SEL_HEADS][key_stride] final candidates' tokens"),
      selIdxOut,
      selStride,
      kvCache("k", false),
      kvCache("v", false),
      partialO(true),
      partialLse(true),
      maxSplits,
      softmaxScale,
      i32("score_tokens_per_block", "tokens per score work item"),
      i32("select_tokens_per_block", "keys per select work item"),
      i32("sparse_splits", "attention splits per selection head and head tile"),
      i32("batch", "sequences"),
      i32(
        "last_stage",
        "0: score only, 1: through top-k (counters zeroed), 2: the whole step (stage timing)",
      ),
      attentionOut,
      lseOut,
      ptr(
        "barrier",
        "u32* ",
        "[2] grid barrier: arrivals (0 between barriers), generation (only grows); zeroed once",
      ),
    ],
  },
  {
    id: "prefill",
    template: "prefill_attention.cu.hbs",
    doc: "Causal prefill attention of a chunk's query tiles over the paged cache (tensor cores).",
    grid: "(num_tiles, NUM_Q_HEADS, 1), or (NUM_Q_HEADS, num_tiles, 1) for a heads-fastest " +
      "wgmma variant (Variant.prefill.headsFastest); dynamic shared memory prefillSharedBytes",
    programmatic: false,
    args: [
      ptr("q", "const u16* ", "[chunk rows][NUM_Q_HEADS][HEAD_DIM] queries after RoPE"),
      ptr(
        "tiles",
        "const int* ",
        "[num_tiles][4] {first row, sequence, first position, rows} per query tile",
      ),
      blockTables,
      maxPages,
      kvCache("k", false),
      kvCache("v", false),
      ptr("out", "u16* ", "[chunk rows][NUM_Q_HEADS][HEAD_DIM] attention output, KV dtype"),
      softmaxScale,
    ],
  },
  ...offloadKernels(),
];

/**
 * Launch-shape and unrolling choices per variant: every knob of the kernels lives here (the
 * templates take them from the context), is baked into the sources and is exported by the
 * launchers. Changing one changes how fast a kernel runs, never what it computes.
 */
export interface Tuning {
  /** Threads per block of the append kernel. */
  readonly appendThreads: number;
  /** Threads per block of the score kernel. */
  readonly scoreThreads: number;
  /** Minimum resident blocks per multiprocessor the score kernel is compiled for (registers). */
  readonly scoreMinBlocks: number;
  /** Unroll of the score kernel's token loop (label loads in flight per thread). */
  readonly scoreUnroll: number;
  /**
   * Selection heads one score block scores (1, 2 or 4): per-head selection over kv-head labels
   * loads each label row once for this many of its query heads (docs/perf-notes.md, "Score once
   * per label row"); elsewhere every selection head has its own label row, so 1.
   */
  readonly scoreHeadsPerBlock: number;
  /** Threads per block of the select kernel. */
  readonly selectThreads: number;
  /** Keys each select thread loads per round before using any (a multiple of 8: 16-byte loads). */
  readonly selectKeysPerThread: number;
  /** Threads per block of the resolve kernel. */
  readonly resolveThreads: number;
  /** Minimum resident blocks per multiprocessor the resolve kernel is compiled for. */
  readonly resolveMinBlocks: number;
  /** Candidates of the threshold bin that the resolve kernel holds in shared memory. */
  readonly resolveSmemCandidates: number;
  /** Candidate entries each resolve thread loads before using any. */
  readonly resolveCandUnroll: number;
  /** Exact scores each resolve thread recomputes per round (fewer for wide label rows). */
  readonly resolveUnroll: number;
  /** Threads per block of the dense and sparse attention kernels (and of the persistent step). */
  readonly attentionThreads: number;
  /** Minimum resident blocks per multiprocessor the attention kernels are compiled for. */
  readonly attentionMinBlocks: number;
  /** K/V rows an attention block handles per tile. */
  readonly attentionRowTile: number;
  /** Tensor-core (mma.sync) attention body; head dim 256 uses the CUDA-core body. */
  readonly attentionMma: boolean;
  /** Query heads sharing one dense attention block (and its K/V reads). */
  readonly denseHeadsPerBlock: number;
  /** Rows in flight per thread in the dense kernel. */
  readonly denseUnroll: number;
  /** Query heads sharing one sparse attention block (group selection only). */
  readonly sparseHeadsPerBlock: number;
  /** Rows in flight per thread in the sparse kernel. */
  readonly sparseUnroll: number;
  /** Blocks along grid.y of the dense kernel: NUM_KV_HEADS * (GROUP_SIZE / denseHeadsPerBlock). */
  readonly denseHeadBlocks: number;
  /** Blocks along grid.y of the sparse kernel. */
  readonly sparseHeadBlocks: number;
  /** Threads per block of the merge kernel (one per output channel). */
  readonly mergeThreads: number;
  /**
   * Final candidates the persistent step's radix stage holds in shared memory (more are selected
   * in global memory): smaller than resolveSmemCandidates so that the static shared memory of
   * every stage (score's histogram, attention's partials, these) fits 48 KB in one kernel.
   */
  readonly persistentSmemCandidates: number;
  /** Prefill: threads per block (16 query rows per warp). */
  readonly prefillThreads: number;
  /** Prefill: keys per pipeline stage. */
  readonly prefillKeyTile: number;
  /** 16-row MMA tiles per warp: each K/V fragment read from shared memory feeds this many. */
  readonly prefillMTiles: number;
  /** Prefill keeps the Q fragments in registers (head dim <= 128) or re-reads shared memory. */
  readonly prefillQInRegisters: boolean;
  /** Dynamic shared memory of a prefill block: the Q tile and two K and V stages. */
  readonly prefillSharedBytes: number;
  /**
   * The prefill kernel also has an sm_90a body on warpgroup MMA (wgmma), chosen at load time on
   * an sm_90 device with NVRTC >= 12 (src/runtime/prefill_body.ts); head dim 256 has none (its
   * fp32 O accumulator alone would be 128 registers a thread, next to S and P).
   */
  readonly prefillWgmma: boolean;
  /** wgmma body: threads per block, 128 per warpgroup of 64 query rows (same Q tile as mma.sync). */
  readonly prefillWgmmaThreads: number;
  /** wgmma body: keys per pipeline stage (the N of the QK^T wgmma). */
  readonly prefillWgmmaKeyTile: number;
  /**
   * wgmma body: who loads K/V and how slots are handed over (src/codegen/prefill_wgmma_variants.ts;
   * "sync": the MMA warps, one CTA barrier per tile).
   */
  readonly prefillWgmmaSchedule: WgmmaSchedule;
  /** wgmma body: slots of each of the K and V rings. */
  readonly prefillWgmmaStages: number;
  /** wgmma body: grid (heads, tiles) instead of (tiles, heads). */
  readonly prefillWgmmaHeadsFastest: boolean;
  /** wgmma body: the two consumer warpgroups take turns issuing their MMAs (mbar, ws, tma). */
  readonly prefillWgmmaPingpong: boolean;
  /**
   * wgmma body: a warp rescales O only when the running max of one of its rows changed (the factor
   * is then not 1); the other tiles skip the multiply, which by 1 would change nothing.
   */
  readonly prefillWgmmaLazyRescale: boolean;
  /**
   * wgmma body: two P buffers, so the wait for tile n - 1's PV moves to tile n + 1 and the softmax
   * of tile n runs under it (mbar, ws, tma).
   */
  readonly prefillWgmmaDoubleP: boolean;
  /** wgmma body (tma): one producer thread issues the K copies and another the V copies. */
  readonly prefillWgmmaSplitProducer: boolean;
  /** wgmma body: dynamic shared memory (Q tile, the K and V rings, 1024 bytes of alignment). */
  readonly prefillWgmmaSharedBytes: number;
  /** Unroll of the merge kernel's loops over the splits (loads in flight per thread). */
  readonly mergeUnroll: number;
  /** Threads per block of the sort_selection kernel (one block per selection head). */
  readonly sortThreads: number;
  /** Threads per block of the gather_kv kernel. */
  readonly gatherThreads: number;
  /** 16-byte chunks each gather thread loads before it stores any (PCIe reads in flight). */
  readonly gatherUnroll: number;
  /** Selected rows one gather block copies: gatherThreads / (2 * headDim / 8) * gatherUnroll. */
  readonly gatherRowsPerBlock: number;
}

/** Largest divisor of n that is at most cap. */
function largestDivisorAtMost(n: number, cap: number): number {
  for (let d = Math.min(n, cap); d > 1; d--) if (n % d === 0) return d;
  return 1;
}

/** Largest power of two that divides n and is at most cap. */
function largestPowerOfTwoDividing(n: number, cap: number): number {
  let d = 1;
  while (d * 2 <= cap && n % (d * 2) === 0) d *= 2;
  return d;
}

/** Register budget: fewer rows in flight per thread as more query heads share a block. */
function unrollFor(headsPerBlock: number): number {
  if (headsPerBlock === 1) return 8;
  if (headsPerBlock === 2) return 4;
  return 2;
}

/** Offload kernels: one 1024-thread block per selection head; 256-thread gather blocks. */
const SORT_THREADS = 1024;
const GATHER_THREADS = 256;
/** 16-byte loads in flight per gather thread: enough outstanding PCIe reads to cover the latency. */
const GATHER_UNROLL = 8;

/** Four warps of 16 query rows: a 64-row query tile per block. */
const PREFILL_THREADS = 128;

/** Q tile (16 rows per MMA tile per warp) plus two stages of K and V tiles, 2-byte elements. */
export const prefillSharedBytes = (headDim: number, mTiles: number, keyTile: number): number =>
  (16 * mTiles * (PREFILL_THREADS / 32) + 4 * keyTile) * headDim * 2;

/** Query rows per prefill block, the tile table's tile size (both bodies share it). */
export const prefillQTile = (t: Pick<Tuning, "prefillMTiles" | "prefillThreads">): number =>
  16 * t.prefillMTiles * (t.prefillThreads / 32);

/** The launch shape of a variant. */
export function tuningFor(spec: AttentionSpec): Tuning {
  // Registers per thread: O is 4 * mTiles * headDim / 8 floats, S 4 * mTiles * keyTile / 8.
  // Head dim 256 keeps one MMA tile and 32 keys (O alone is 128 floats).
  // Measured on an H100 (docs/perf-notes.md): two MMA tiles per warp and 64 keys per stage run
  // fastest at head dim 128 and still fit 255 registers without spills.
  const prefillMTiles = spec.headDim <= 128 ? 2 : 1;
  const prefillKeyTile = spec.headDim <= 128 ? 64 : 32;
  const prefillQInRegisters = false;
  // wgmma: one warpgroup (128 threads) per 64 query rows of the mma.sync body's Q tile (two at
  // head dim <= 128), 128 keys per stage (S and O are 64 fp32 registers each at head dim 128).
  const prefillWgmma = spec.headDim <= 128;
  const prefillWgmmaThreads = 128 *
    (prefillQTile({ prefillMTiles, prefillThreads: PREFILL_THREADS }) / 64);
  const prefillWgmmaKeyTile = 128;
  const denseHeadsPerBlock = largestDivisorAtMost(spec.groupSize, 8);
  const sparseHeadsPerBlock = spec.selection === "group" ? denseHeadsPerBlock : 1;
  // A block of several heads keeps a row's unpacked channels live across the heads and the
  // unrolled rows: rows of up to 16 channels in up to 16 bytes fit the 64 registers of 4
  // resident blocks without spills; 32 channels spill even with two heads, 16 fp16 channels
  // with four (ptxas, sm_90), so wider rows keep one head a block.
  const scoreHeadsPerBlock = spec.selection === "head" && spec.labelHeads === "kv" &&
      spec.labelChannels <= 16 && cacheLayout(spec).labelRowWords <= 4
    ? largestPowerOfTwoDividing(spec.groupSize, 4)
    : 1;
  const tuning: Tuning = {
    appendThreads: 128,
    scoreThreads: 256,
    scoreMinBlocks: 4,
    scoreUnroll: 4,
    scoreHeadsPerBlock,
    selectThreads: 256,
    selectKeysPerThread: 32,
    resolveThreads: 256,
    resolveMinBlocks: 1,
    resolveSmemCandidates: 4096,
    resolveCandUnroll: 4,
    resolveUnroll: cacheLayout(spec).labelRowWords <= 8 ? 4 : 1,
    attentionThreads: 128,
    attentionMinBlocks: 1,
    attentionRowTile: 256,
    attentionMma: spec.headDim <= 128,
    denseHeadsPerBlock,
    denseUnroll: unrollFor(denseHeadsPerBlock),
    sparseHeadsPerBlock,
    sparseUnroll: unrollFor(sparseHeadsPerBlock),
    denseHeadBlocks: spec.numKvHeads * (spec.groupSize / denseHeadsPerBlock),
    sparseHeadBlocks: spec.selection === "group"
      ? spec.numKvHeads * (spec.groupSize / sparseHeadsPerBlock)
      : spec.numQHeads,
    mergeThreads: spec.headDim,
    persistentSmemCandidates: 1024,
    prefillThreads: PREFILL_THREADS,
    prefillKeyTile,
    prefillMTiles,
    prefillQInRegisters,
    prefillSharedBytes: prefillSharedBytes(spec.headDim, prefillMTiles, prefillKeyTile),
    prefillWgmma,
    prefillWgmmaThreads,
    prefillWgmmaKeyTile,
    prefillWgmmaSchedule: "sync",
    prefillWgmmaStages: 2,
    prefillWgmmaHeadsFastest: false,
    prefillWgmmaPingpong: false,
    prefillWgmmaLazyRescale: false,
    prefillWgmmaDoubleP: false,
    prefillWgmmaSplitProducer: false,
    prefillWgmmaSharedBytes: wgmmaSharedBytes(
      spec.headDim,
      prefillWgmmaThreads,
      prefillWgmmaKeyTile,
      2,
      "sync",
    ),
    mergeUnroll: 4,
    sortThreads: SORT_THREADS,
    gatherThreads: GATHER_THREADS,
    gatherUnroll: GATHER_UNROLL,
    gatherRowsPerBlock: (GATHER_THREADS / ((2 * spec.headDim) / 8)) * GATHER_UNROLL,
  };
  // The wgmma body's default variant (the fields above are its "sync" shape; measured variants:
  // docs/perf-notes.md, Prefill on wgmma).
  return Object.freeze(
    prefillWgmma
      ? withWgmmaVariant(
        tuning,
        spec,
        defaultWgmmaVariant(spec, tuning.prefillWgmmaKeyTile),
        "the default wgmma variant",
      )
      : tuning,
  );
}

/** Threads per block of each kernel. */
export function threadsOf(id: KernelId, t: Tuning): number {
  switch (id) {
    case "append":
      return t.appendThreads;
    case "score":
      return t.scoreThreads;
    case "select":
      return t.selectThreads;
    case "resolve":
      return t.resolveThreads;
    case "dense":
    case "sparse":
      return t.attentionThreads;
    case "merge":
      return t.mergeThreads;
    case "persistent":
      return t.attentionThreads;
    case "prefill":
      return t.prefillThreads;
    case "sort_selection":
      return t.sortThreads;
    case "gather_kv":
    case "fill_row_cache":
    case "stage_newest":
      return t.gatherThreads;
  }
}

/** Dynamic shared memory a kernel's launches need (0: static shared memory only). */
export function dynamicSharedBytesOf(id: KernelId, t: Pick<Tuning, "prefillSharedBytes">): number {
  return id === "prefill" ? t.prefillSharedBytes : 0;
}

/** `label_codes` -> `labelCodes`: the launcher field of a CUDA argument. */
export const camelCase = (snake: string): string =>
  snake.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());

/** `ds_..._score` */
export const symbolOf = (spec: AttentionSpec, id: KernelId): string => `${spec.variant}_${id}`;
