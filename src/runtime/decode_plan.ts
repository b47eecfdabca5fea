/**
 * A decode-step plan for one variant, one paged cache and a fixed batch: the per-step inputs
 * (lengths, budgets, routes, the rows to append) in pinned memory, the workspaces of the
 * selection kernels, the split counts, and the launches of one step:
 *
 *   append -> score -> select -> resolve -> sparse attention ┐
 *                                           dense attention  ├-> merge
 *
 * Asked for (PlanOptions.persistentStep, $DS_PERSISTENT; off by default: it measured slower), a
 * step whose every sequence is routed sparse runs score -> select -> resolve -> sparse -> merge as
 * one cooperative launch instead (src/runtime/persistent_step.ts).
 *
 * Every sequence takes its route in the same step: the sparse kernels skip sequences routed
 * dense and the dense kernel skips those routed sparse (`routes` on the device). Grid shapes
 * depend only on the batch and the maximum context, so a step can be captured in a CUDA graph
 * once and replayed while the lengths change.
 */
import { budgetFor, type Route, routeFor } from "../dsl/spec.ts";
import { HIST_BINS, SCORE_KEY_BYTES, scoreKeyStride, SELECTION_COUNTERS } from "../dsl/layout.ts";
import type { Cuda, DeviceBuffer, HostBuffer, LaunchSlot, Stream } from "../cuda/driver.ts";
import { type KernelId, KERNELS } from "../codegen/kernels.ts";
import { ArgumentError } from "../util/errors.ts";
import { choosePdl, parsePdlChoice, PDL_ENV } from "./pdl.ts";
import {
  parsePersistentChoice,
  PERSISTENT_ENV,
  persistentGrid,
  persistentSplits,
  persistentWanted,
} from "./persistent_step.ts";
import type { PagedKvCache } from "./caches.ts";
import type { Variant } from "./variant.ts";

/** 32-bit registers per multiprocessor on every architecture the kernels target (sm_70 to sm_90). */
const REGISTERS_PER_SM = 65536;
/** Resident blocks per multiprocessor that the wave sizing assumes at most (the hardware allows 16 to 32). */
const MAX_RESIDENT_BLOCKS = 16;
/** Registers are allocated per warp in units of 256, i.e. per thread in multiples of 8. */
const REGISTER_GRANULE = 8;
/** Default blocks per launch of the score/select kernels: 4 per multiprocessor. */
const BLOCKS_PER_SM = 4;
/** Attention launches aim at two full waves of resident blocks (docs/perf-notes.md, v4). */
const ATTENTION_WAVES = 2;
/** Default tokens per attention split below which the split count stops growing. */
const MIN_TOKENS_PER_SPLIT = 256;
/**
 * Sparse splits may be this much shorter (docs/perf-notes.md, v3: splits of >= 64 tokens instead
 * of >= 256): selected rows are a gather, so more splits keep more loads in flight. Not 4 (>= 64
 * tokens): at batch 1-4 such splits are mostly their block's prologue and partial write
 * (docs/perf-notes.md, "Fewer, longer sparse splits at batch 1-4").
 */
const SPARSE_SPLIT_SHRINK = 2;
/**
 * At most this many sparse splits per (sequence, head block): the merge walks a head's splits one
 * after another, and at batch 1 37-49 splits (a third wave of short blocks) measured slower than
 * 12-32 (docs/perf-notes.md, "Fewer, longer sparse splits at batch 1-4").
 */
const MAX_SPARSE_SPLITS = 32;
/** Split counts considered: up to twice the wave goal's, at least this many, never more than MAX_SPLITS. */
const MIN_SPLIT_CHOICES = 4;
/** Bounds partial_o / partial_lse and the merge kernel's loop. */
const MAX_SPLITS = 256;
/**
 * Split choice (docs/perf-notes.md, v6: "splits chosen to fill the last wave"): a larger split
 * count must fill its last wave at least FILL_MARGIN better to be taken, and beyond the wanted
 * count it must fill it at least FILL_BEYOND_WANTED.
 */
const FILL_MARGIN = 0.02;
const FILL_BEYOND_WANTED = 0.9;
/**
 * Fewest tokens a score (select) block takes: each block pays a fixed cost (its histogram, the
 * query label; select: the threshold read and a returning atomic per counter), so blocks take as
 * many tokens as still leaves about the target block count. Token counts are rounded up to a
 * multiple of TOKEN_GRANULE. Select's floor is 8192 (was 2048): a quarter of the blocks, each of two
 * or more rounds of 4096 keys, took 0.6-1.4 us off select + resolve in 11 of 36 cases at batch 1-8
 * where the floor decides the chunk, and lost up to 0.7 us (once 1.5, within its spread) in three
 * (docs/perf-notes.md, "Longer select blocks").
 */
const MIN_SCORE_TOKENS_PER_BLOCK = 1024;
const MIN_SELECT_TOKENS_PER_BLOCK = 8192;
const TOKEN_GRANULE = 256;
/** Most tokens a score block of several selection heads takes: its histogram counters are 16-bit. */
export const MAX_PACKED_SCORE_TOKENS_PER_BLOCK = 65536 - TOKEN_GRANULE;

/**
 * Split-K factor of an attention launch: `goal` blocks (ATTENTION_WAVES waves of resident blocks),
 * `blocksPerSplit` blocks for each split (sequences x head blocks), `tokens` per (sequence, head)
 * at most, splits of at least `minTokens` tokens, at most `most` of them. Among split counts up to
 * twice the goal's (or MIN_SPLIT_CHOICES), takes the one whose last wave is fullest (ties: fewer
 * splits, so less partial-output traffic and a cheaper merge); beyond the wanted count only a
 * nearly full last wave (FILL_BEYOND_WANTED). Pure.
 */
export function attentionSplits(
  goal: number,
  blocksPerSplit: number,
  tokens: number,
  minTokens: number,
  most = MAX_SPLITS,
): number {
  const byTokens = Math.max(1, Math.ceil(tokens / minTokens));
  const wave = goal / ATTENTION_WAVES;
  const wanted = Math.max(1, Math.round(goal / blocksPerSplit));
  let best = 1, bestFill = 0;
  const choices = Math.min(Math.max(2 * wanted, MIN_SPLIT_CHOICES), byTokens, most);
  for (let s = 1; s <= choices; s++) {
    const blocks = s * blocksPerSplit;
    const fill = blocks / (Math.ceil(blocks / wave) * wave);
    if (fill > bestFill + FILL_MARGIN && (s <= wanted || fill > FILL_BEYOND_WANTED)) {
      best = s;
      bestFill = fill;
    }
  }
  return best;
}

/**
 * Split-K factor of the sparse kernel: attentionSplits over `budget` selected tokens, with splits
 * SPARSE_SPLIT_SHRINK times shorter than the dense kernel's `minTokens` (selected rows are a
 * gather, not a stream: shorter splits keep more loads in flight) and at most MAX_SPARSE_SPLITS.
 * Pure.
 */
export function sparseAttentionSplits(
  goal: number,
  blocksPerSplit: number,
  budget: number,
  minTokens = MIN_TOKENS_PER_SPLIT,
): number {
  return attentionSplits(
    goal,
    blocksPerSplit,
    budget,
    minTokens / SPARSE_SPLIT_SHRINK,
    MAX_SPARSE_SPLITS,
  );
}

/**
 * Tokens per block of the score and select kernels, whose grids are (selection heads, chunks,
 * batch): floor(target / pairs) whole chunks per (sequence, selection head), so a launch of at
 * most `target` blocks (one wave) is never exceeded by a last, part-filled chunk; each chunk at
 * least `floor` tokens, rounded up to TOKEN_GRANULE, at most `keyStride`. (Sizing the chunk as
 * pairs x keyStride / target instead gave 3 chunks a pair at 256 pairs and 32K or 128K: 1.45
 * waves, a tail of big blocks after a wave of mixed ones; docs/perf-notes.md.)
 */
export function chunkTokens(
  pairs: number,
  keyStride: number,
  target: number,
  floor: number,
): number {
  const chunks = Math.max(1, Math.floor(target / pairs));
  const tokens = Math.ceil(Math.ceil(keyStride / chunks) / TOKEN_GRANULE) * TOKEN_GRANULE;
  return Math.min(keyStride, Math.max(floor, tokens));
}

/**
 * Tokens per block of the score kernel: chunkTokens over its blocks of heads (`pairs` = sequences
 * x score head blocks), the floor counted in (token, head) scores so that a block of several heads
 * takes proportionally fewer tokens; blocks of several heads count in 16-bit shared counters
 * (templates/score_body.cuh.hbs), so they take at most MAX_PACKED_SCORE_TOKENS_PER_BLOCK.
 */
export function scoreChunkTokens(
  pairs: number,
  keyStride: number,
  target: number,
  headsPerBlock: number,
): number {
  const floor = Math.max(TOKEN_GRANULE, MIN_SCORE_TOKENS_PER_BLOCK / headsPerBlock);
  const tokens = chunkTokens(pairs, keyStride, target, floor);
  return headsPerBlock > 1 ? Math.min(tokens, MAX_PACKED_SCORE_TOKENS_PER_BLOCK) : tokens;
}

export interface PlanOptions {
  /**
   * Blocks to aim for per launch (default: BLOCKS_PER_SM per multiprocessor for score and select,
   * ATTENTION_WAVES waves of resident blocks for attention).
   */
  readonly targetBlocks?: number;
  /** Tokens per split below which the split count stops growing. */
  readonly minTokensPerSplit?: number;
  /**
   * Sort every selected-token list into ascending order after top-k (sort_selection), so sparse
   * attention reads the rows in token order rather than the resolve kernel's atomic order: the
   * outputs no longer depend on that order (run-to-run identical, and identical to the offloaded
   * path, which needs sorted lists for its PCIe gather). Costs one small kernel per sparse layer.
   */
  readonly sortedSelection?: boolean;
  /**
   * Launch the step's kernels with Programmatic Dependent Launch (src/runtime/pdl.ts): each may
   * be scheduled while the previous one runs, hiding launch and ramp-up (docs/perf-notes.md).
   * Default: $DS_PDL (auto | 1 | 0; "auto" = on where the device and driver support it), else off
   * (measured 0.93x-1.05x on an H100); true where they do not support it is an error.
   */
  readonly programmaticLaunch?: boolean;
  /**
   * Run a step whose every sequence is routed sparse as the persistent step (one cooperative
   * launch; src/runtime/persistent_step.ts): true at any batch, false never. Default: $DS_PERSISTENT
   * (auto = at batch <= 4 | 1 | 0), else off (0.52x-0.81x of the chain on an H100). Never with
   * sortedSelection (offload sorts the selection between top-k and attention).
   */
  readonly persistentStep?: boolean;
}

/** The kernels that may be launched programmatically (they begin with pdl_begin()). */
const PROGRAMMATIC = new Set<KernelId>(KERNELS.filter((k) => k.programmatic).map((k) => k.id));

/** Device addresses of a K and a V pool (or of rows staged like a selection). */
export interface KvPools {
  readonly k: bigint;
  readonly v: bigint;
}

/** Device addresses of one step's inputs and workspaces (what the launchers take). */
export interface StepBuffers {
  readonly seqLens: bigint;
  readonly budgets: bigint;
  readonly routes: bigint;
  readonly routesAllDense: bigint;
  readonly rowSeq: bigint;
  readonly rowPos: bigint;
}

export class DecodePlan implements Disposable {
  readonly batch: number;
  /** Row stride of the score keys and candidates: the longest context, rounded up to a key vector. */
  readonly keyStride: number;
  readonly selStride: number;
  readonly denseSplits: number;
  readonly sparseSplits: number;
  readonly maxSplits: number;
  readonly softmaxScale: number;
  /**
   * Tokens per block of the score and select kernels (about targetBlocks blocks per launch; the
   * score kernel's blocks each score Tuning.scoreHeadsPerBlock selection heads).
   */
  readonly scoreTokensPerBlock: number;
  /** Blocks along grid.x of the score kernel: selection heads / Tuning.scoreHeadsPerBlock. */
  readonly scoreHeadBlocks: number;
  readonly selectTokensPerBlock: number;
  /** Whether this plan launches its kernels with Programmatic Dependent Launch (PlanOptions). */
  readonly programmaticLaunch: boolean;
  /**
   * Blocks of the persistent step's cooperative grid, 0 when this plan never runs it
   * (PlanOptions.persistentStep); its attention splits.
   */
  readonly persistentGrid: number;
  readonly persistentSplits: number;
  /** Host copy of this step's routes and budgets (after beginStep). */
  readonly routes: Route[];
  readonly budgets: Int32Array;

  readonly #host: HostBuffer;
  readonly #hostInts: Int32Array;
  readonly #step: DeviceBuffer;
  readonly #keys: DeviceBuffer;
  readonly #hist: DeviceBuffer;
  readonly #counters: DeviceBuffer;
  readonly #candIdx: DeviceBuffer;
  readonly #candKey: DeviceBuffer;
  readonly #selIdx: DeviceBuffer;
  readonly #partialO: DeviceBuffer;
  readonly #partialLse: DeviceBuffer;
  /** sort_selection's [batch][selHeads][ceil(keyStride / 32)] bitmaps (sortedSelection only). */
  readonly #bitmap: DeviceBuffer | null;
  readonly #bitmapStride: number;
  /** The persistent step's final-candidate tokens and grid barrier (persistentGrid > 0 only). */
  readonly #finalIdx: DeviceBuffer | null;
  readonly #barrier: DeviceBuffer | null;
  readonly buffers: StepBuffers;

  constructor(
    readonly cuda: Cuda,
    readonly variant: Variant,
    readonly cache: PagedKvCache,
    stream: Stream,
    opts: PlanOptions = {},
  ) {
    const spec = variant.spec;
    const t = variant.launchers.tuning;
    this.batch = cache.pages.numSeqs;
    this.keyStride = scoreKeyStride(cache.pages.maxTokensPerSeq);
    this.selStride = Math.max(1, budgetFor(spec.budget, cache.pages.maxTokensPerSeq));
    const target = opts.targetBlocks ?? BLOCKS_PER_SM * cuda.info.multiprocessors;
    const minTokens = opts.minTokensPerSplit ?? MIN_TOKENS_PER_SPLIT;
    // Attention blocks are sized to fill whole waves: two waves of as many blocks as fit on the
    // multiprocessors at once (registers decide it), so no wave runs a third full.
    const waves = (id: "dense" | "sparse") => {
      const { registers } = variant.kernels[id].info;
      const perThread = Math.max(
        REGISTER_GRANULE,
        Math.ceil(registers / REGISTER_GRANULE) * REGISTER_GRANULE,
      );
      const resident = Math.max(
        1,
        Math.min(
          MAX_RESIDENT_BLOCKS,
          Math.floor(REGISTERS_PER_SM / (perThread * t.attentionThreads)),
        ),
      );
      return opts.targetBlocks ?? ATTENTION_WAVES * resident * cuda.info.multiprocessors;
    };
    this.denseSplits = attentionSplits(
      waves("dense"),
      this.batch * t.denseHeadBlocks,
      this.keyStride,
      minTokens,
    );
    this.sparseSplits = sparseAttentionSplits(
      waves("sparse"),
      this.batch * t.sparseHeadBlocks,
      this.selStride,
      minTokens,
    );
    const persistentChoice = opts.persistentStep === undefined
      ? parsePersistentChoice(Deno.env.get(PERSISTENT_ENV), `$${PERSISTENT_ENV}`)
      : opts.persistentStep
      ? "on"
      : "off";
    // Where the choice came from, as errors name it.
    const persistentSource = opts.persistentStep === undefined
      ? `$${PERSISTENT_ENV}`
      : "options.persistentStep";
    if (persistentChoice === "on" && opts.sortedSelection) {
      throw new ArgumentError(
        "DecodePlan",
        persistentSource,
        opts.persistentStep ?? Deno.env.get(PERSISTENT_ENV),
        "off with sortedSelection (offload; the persistent step does not sort the selection)",
      );
    }
    if (persistentWanted(persistentChoice, this.batch) && !opts.sortedSelection) {
      const kernel = variant.slot("persistent").fn;
      this.persistentGrid = persistentGrid(
        cuda.info.multiprocessors,
        kernel.maxActiveBlocksPerMultiprocessor(t.attentionThreads),
        persistentSource,
      );
      this.persistentSplits = persistentSplits(
        this.persistentGrid,
        t.sparseHeadBlocks,
        this.batch,
        this.selStride,
        MAX_SPLITS,
      );
    } else {
      this.persistentGrid = 0;
      this.persistentSplits = 0;
    }
    this.maxSplits = Math.max(this.denseSplits, this.sparseSplits, this.persistentSplits);
    const pairs = this.batch * spec.numSelectionHeads;
    this.scoreHeadBlocks = spec.numSelectionHeads / t.scoreHeadsPerBlock;
    this.scoreTokensPerBlock = scoreChunkTokens(
      this.batch * this.scoreHeadBlocks,
      this.keyStride,
      target,
      t.scoreHeadsPerBlock,
    );
    this.selectTokensPerBlock = chunkTokens(
      pairs,
      this.keyStride,
      target,
      MIN_SELECT_TOKENS_PER_BLOCK,
    );
    this.softmaxScale = 1 / Math.sqrt(spec.headDim);
    const pdlTarget = {
      computeCapability: cuda.info.computeCapability,
      driverVersion: cuda.info.driverVersion,
      hasLaunchKernelEx: cuda.driver.hasLaunchKernelEx,
    };
    this.programmaticLaunch = opts.programmaticLaunch === undefined
      ? choosePdl(parsePdlChoice(Deno.env.get(PDL_ENV), `$${PDL_ENV}`), pdlTarget)
      : choosePdl(opts.programmaticLaunch ? "on" : "off", pdlTarget, "programmaticLaunch");
    this.routes = Array(this.batch).fill("dense");
    this.budgets = new Int32Array(this.batch);

    const B = this.batch, SH = spec.numSelectionHeads;
    // Step inputs: seqLens, budgets, routes, rowSeq, rowPos (B ints each), then B zeros for
    // the all-dense routes of dense layers.
    // Frees what was allocated so far if a later allocation fails; moved out once constructed
    // (dispose() owns the buffers from then on).
    using guard = new DisposableStack();
    this.#host = guard.use(cuda.allocHost(6 * B * 4));
    this.#hostInts = new Int32Array(this.#host.buffer, 0, 6 * B);
    this.#hostInts.fill(0);
    this.#step = guard.use(cuda.alloc(6 * B * 4));
    const at = (i: number) => this.#step.ptr + BigInt(i * B * 4);
    this.buffers = {
      seqLens: at(0),
      budgets: at(1),
      routes: at(2),
      rowSeq: at(3),
      rowPos: at(4),
      routesAllDense: at(5),
    };
    this.#keys = guard.use(cuda.alloc(B * SH * this.keyStride * SCORE_KEY_BYTES));
    this.#hist = guard.use(cuda.alloc(B * SH * HIST_BINS * 4));
    this.#counters = guard.use(cuda.alloc(B * SH * SELECTION_COUNTERS * 4));
    this.#candIdx = guard.use(cuda.alloc(B * SH * this.keyStride * 4));
    this.#candKey = guard.use(cuda.alloc(B * SH * this.keyStride * 4));
    this.#selIdx = guard.use(cuda.alloc(B * SH * this.selStride * 4));
    this.#partialO = guard.use(cuda.alloc(B * spec.numQHeads * this.maxSplits * spec.headDim * 4));
    this.#partialLse = guard.use(cuda.alloc(B * spec.numQHeads * this.maxSplits * 4));
    this.#bitmapStride = Math.ceil(this.keyStride / 32);
    this.#bitmap = opts.sortedSelection
      ? guard.use(cuda.alloc(B * SH * this.#bitmapStride * 4))
      : null;
    this.#bitmap?.fill8(0, stream); // sort_selection leaves it zero after each use
    const persistent = this.persistentGrid > 0;
    this.#finalIdx = persistent ? guard.use(cuda.alloc(B * SH * this.keyStride * 4)) : null;
    // Arrivals and generation: the kernel leaves the count at 0 and only ever grows the generation.
    this.#barrier = persistent ? guard.use(cuda.alloc(2 * 4)) : null;
    this.#barrier?.fill8(0, stream);
    // The resolve kernel leaves histogram and counters zeroed; they must start that way.
    this.#hist.fill8(0, stream);
    this.#counters.fill8(0, stream);
    this.#step.fill8(0, stream);
    guard.move();
  }

  get spec() {
    return this.variant.spec;
  }

  /**
   * The variant's launch slot for `id`, set to this plan's launch mode: every launch of the plan
   * goes through here, so plans sharing a variant each launch their own way.
   */
  #slot(id: KernelId): LaunchSlot {
    const slot = this.variant.slot(id);
    slot.programmatic = this.programmaticLaunch && PROGRAMMATIC.has(id);
    return slot;
  }

  /**
   * Reserves the next position of every sequence and records this step's lengths, budgets and
   * routes (host side). Returns the positions appended at.
   */
  beginStep(): Int32Array {
    const B = this.batch;
    const positions = new Int32Array(B);
    this.cache.pages.checkGrowth(new Int32Array(B).fill(1)); // all or none, before any launch
    for (let b = 0; b < B; b++) positions[b] = this.cache.pages.grow(b, 1);
    this.#recordStep(positions);
    return positions;
  }

  /**
   * Records lengths, budgets and routes of the cache as it is, and the rows this step appends at
   * (`positions`, or none: attention over the existing tokens).
   */
  #recordStep(positions?: Int32Array): void {
    for (let b = 0; b < this.batch; b++) {
      const len = this.cache.pages.seqLens[b];
      const route = len === 0 ? "dense" : routeFor(this.spec, len);
      const budget = route === "sparse" ? budgetFor(this.spec.budget, len) : len;
      this.#setSequence(b, len, budget, route, positions?.[b]);
    }
  }

  /**
   * Sequence b's step inputs, host side: length, budget and route, and (when given) the position
   * its new row is appended at. The pinned layout (seqLens, budgets, routes, rowSeq, rowPos; B
   * ints each) is written here only.
   */
  #setSequence(b: number, len: number, budget: number, route: Route, position?: number): void {
    const B = this.batch;
    this.routes[b] = route;
    this.budgets[b] = budget;
    this.#hostInts[b] = len;
    this.#hostInts[B + b] = budget;
    this.#hostInts[2 * B + b] = route === "sparse" ? 1 : 0;
    if (position !== undefined) {
      this.#hostInts[3 * B + b] = b;
      this.#hostInts[4 * B + b] = position;
    }
  }

  /** Step inputs for the cache as it is, without appending (attention over existing tokens). */
  describeCurrent(): void {
    this.#recordStep();
  }

  /**
   * Step inputs of a plan that predicts layers of `main`'s step (offload's next-layer
   * prediction) before their new token exists: the same routes, and budgets scaled by `fraction`
   * (offload's prefetchFraction; rounded up, at least 1), over the cache without the step's newest
   * token. Layer l+1's prediction runs while layer l is recorded,
   * before layer l+1's K/V and label of the new token are appended, so scoring that position
   * would read a stale label and could prefetch a stale row. A sparse route has budget < length,
   * so the budget still fits the shorter sequence. `reserve` rows of each budget are left for the
   * caller (skipMissed stages the new token itself into the last one). Host side; upload with
   * uploadStepInputs.
   */
  describePredictionOf(main: DecodePlan, fraction = 1, reserve = 0): void {
    const B = this.batch;
    if (main.batch !== B) {
      throw new RangeError(`describePredictionOf: batch ${main.batch}, this plan's is ${B}`);
    }
    if (!(fraction > 0 && fraction <= 1)) {
      throw new RangeError(`describePredictionOf: fraction ${fraction}; allowed: (0, 1]`);
    }
    for (let b = 0; b < B; b++) {
      const len = Math.max(0, main.cache.pages.seqLens[b] - 1);
      const budget = Math.max(1, Math.ceil(main.budgets[b] * fraction) - reserve);
      this.#setSequence(b, len, budget, main.routes[b], len);
    }
  }

  /**
   * Copies the step inputs to the device (from pinned memory, so a graph can capture it) and
   * the block tables if they changed (never inside a graph: call it before the replay).
   */
  upload(stream: Stream): void {
    this.cache.syncBlockTables(stream);
    this.uploadStepInputs(stream);
  }

  uploadStepInputs(stream: Stream): void {
    this.#host.copyTo(this.#step.ptr, stream, 5 * this.batch * 4);
  }

  /**
   * Appends this step's new K/V rows ([batch][Hkv][d], KV dtype) of `layer`, into its pools or
   * into `pools` laid out like them (the full-KV offload's device copy).
   */
  append(layer: number, kNew: bigint, vNew: bigint, pools?: KvPools): void {
    this.appendRows(
      layer,
      kNew,
      vNew,
      this.buffers.rowSeq,
      this.buffers.rowPos,
      this.batch,
      pools,
    );
  }

  /** Appends arbitrary rows (prefill): rowSeq/rowPos are device int arrays of numRows. */
  appendRows(
    layer: number,
    kNew: bigint,
    vNew: bigint,
    rowSeq: bigint,
    rowPos: bigint,
    numRows: number,
    pools?: KvPools,
  ): void {
    const l = this.cache.layers[layer];
    this.variant.launchers.launchAppend(this.#slot("append"), [numRows, 1, 1], {
      kNew,
      vNew,
      rowSeq,
      rowPos,
      blockTables: this.cache.blockTables.ptr,
      maxPages: this.cache.maxPagesPerSeq,
      channels: l.channels.ptr,
      kCache: pools?.k ?? l.k.ptr,
      vCache: pools?.v ?? l.v.ptr,
      labelCodes: l.labels.ptr,
      labelMeta: l.meta.ptr,
      numRows,
    });
  }

  /** The label-scoring inputs of score, resolve and the persistent step for `layer`. */
  #labelInputs(layer: number, q: bigint) {
    const l = this.cache.layers[layer];
    return {
      q,
      channels: l.channels.ptr,
      labelCodes: l.labels.ptr,
      labelMeta: l.meta.ptr,
      blockTables: this.cache.blockTables.ptr,
      maxPages: this.cache.maxPagesPerSeq,
    };
  }

  /** The score kernel's inputs for `layer`, which the persistent step takes too. */
  #scoreInputs(layer: number, q: bigint) {
    return {
      ...this.#labelInputs(layer, q),
      seqLens: this.buffers.seqLens,
      budgets: this.buffers.budgets,
      routes: this.buffers.routes,
      keys: this.#keys.ptr,
      hist: this.#hist.ptr,
      keyStride: this.keyStride,
      counters: this.#counters.ptr,
    };
  }

  score(layer: number, q: bigint): void {
    this.variant.launchers.launchScore(
      this.#slot("score"),
      [
        this.scoreHeadBlocks,
        Math.ceil(this.keyStride / this.scoreTokensPerBlock),
        this.batch,
      ],
      {
        ...this.#scoreInputs(layer, q),
        tokensPerBlock: this.scoreTokensPerBlock,
      },
    );
  }

  /**
   * Top-k, step 2 of 3: tokens above the score kernel's threshold bin are selected, the bin's
   * tokens become candidates. resolve() completes the selection.
   */
  select(): void {
    this.variant.launchers.launchSelect(
      this.#slot("select"),
      [
        this.spec.numSelectionHeads,
        Math.ceil(this.keyStride / this.selectTokensPerBlock),
        this.batch,
      ],
      {
        seqLens: this.buffers.seqLens,
        routes: this.buffers.routes,
        keys: this.#keys.ptr,
        keyStride: this.keyStride,
        counters: this.#counters.ptr,
        candIdx: this.#candIdx.ptr,
        selIdx: this.#selIdx.ptr,
        selStride: this.selStride,
        tokensPerBlock: this.selectTokensPerBlock,
      },
    );
  }

  /**
   * Top-k, step 3 of 3: completes the selection inside the threshold bin from exact label scores
   * (hence the query), and zeroes the histogram and counters for the next use.
   */
  resolve(layer: number, q: bigint): void {
    this.variant.launchers.launchResolve(
      this.#slot("resolve"),
      [this.spec.numSelectionHeads, 1, this.batch],
      {
        ...this.#labelInputs(layer, q),
        budgets: this.buffers.budgets,
        routes: this.buffers.routes,
        hist: this.#hist.ptr,
        keyStride: this.keyStride,
        counters: this.#counters.ptr,
        candIdx: this.#candIdx.ptr,
        candKey: this.#candKey.ptr,
        selIdx: this.#selIdx.ptr,
        selStride: this.selStride,
      },
    );
  }

  /** The whole top-k of a layer: score, select, resolve (and, with sortedSelection, sort). */
  topK(layer: number, q: bigint): void {
    this.score(layer, q);
    this.select();
    this.resolve(layer, q);
    if (this.#bitmap) this.sortSelection();
  }

  /** Whether top-k leaves every selected-token list in ascending order (PlanOptions). */
  get sortedSelection(): boolean {
    return this.#bitmap !== null;
  }

  /** sort_selection: every sparse-routed (sequence, selection head) list into ascending order. */
  sortSelection(): void {
    if (!this.#bitmap) {
      throw new ArgumentError(
        "DecodePlan.sortSelection",
        "options.sortedSelection",
        false,
        "true (a DecodePlan made with { sortedSelection: true })",
      );
    }
    this.variant.launchers.launchSortSelection(
      this.#slot("sort_selection"),
      [this.spec.numSelectionHeads, 1, this.batch],
      {
        seqLens: this.buffers.seqLens,
        budgets: this.buffers.budgets,
        routes: this.buffers.routes,
        selIdx: this.#selIdx.ptr,
        selStride: this.selStride,
        bitmap: this.#bitmap.ptr,
        bitmapStride: this.#bitmapStride,
      },
    );
  }

  /**
   * Sparse attention over the selected tokens, read from the layer's pools or (offload) from
   * `staged` rows, where row i of a selection head's staging holds its selected token i.
   */
  sparse(layer: number, q: bigint, staged?: KvPools): void {
    const l = this.cache.layers[layer];
    const t = this.variant.launchers.tuning;
    this.variant.launchers.launchSparse(
      this.#slot("sparse"),
      [this.sparseSplits, t.sparseHeadBlocks, this.batch],
      {
        q,
        kCache: staged?.k ?? l.k.ptr,
        vCache: staged?.v ?? l.v.ptr,
        blockTables: this.cache.blockTables.ptr,
        maxPages: this.cache.maxPagesPerSeq,
        budgets: this.buffers.budgets,
        routes: this.buffers.routes,
        selIdx: this.#selIdx.ptr,
        selStride: this.selStride,
        partialO: this.#partialO.ptr,
        partialLse: this.#partialLse.ptr,
        maxSplits: this.maxSplits,
        softmaxScale: this.softmaxScale,
        staged: staged ? 1 : 0,
      },
    );
  }

  /**
   * The persistent step (one cooperative launch): top-k, sparse attention and merge of a layer
   * whose every sequence is routed sparse, into out (and lseOut when non-zero), leaving the
   * histograms and counters zeroed as resolve does. Needs persistentGrid > 0. `stages` < "all"
   * stops early, for stage timing: "score" leaves histograms and counters filled (the caller
   * zeroes them), "top-k" leaves the selection in the workspace.
   */
  persistentStep(
    layer: number,
    q: bigint,
    out: bigint,
    lseOut = 0n,
    stages: "score" | "top-k" | "all" = "all",
  ): void {
    if (!this.#finalIdx || !this.#barrier) {
      throw new ArgumentError(
        "DecodePlan.persistentStep",
        "options.persistentStep",
        false,
        "a plan with the persistent step (persistentStep true, or auto at batch <= 4)",
      );
    }
    const l = this.cache.layers[layer];
    const slot = this.variant.slot("persistent");
    slot.programmatic = false;
    slot.cooperative = true;
    this.variant.launchers.launchPersistent(slot, [this.persistentGrid, 1, 1], {
      ...this.#scoreInputs(layer, q),
      candIdx: this.#candIdx.ptr,
      candKey: this.#candKey.ptr,
      finalIdx: this.#finalIdx.ptr,
      selIdx: this.#selIdx.ptr,
      selStride: this.selStride,
      kCache: l.k.ptr,
      vCache: l.v.ptr,
      partialO: this.#partialO.ptr,
      partialLse: this.#partialLse.ptr,
      maxSplits: this.maxSplits,
      softmaxScale: this.softmaxScale,
      scoreTokensPerBlock: this.scoreTokensPerBlock,
      selectTokensPerBlock: this.selectTokensPerBlock,
      sparseSplits: this.persistentSplits,
      batch: this.batch,
      lastStage: stages === "score" ? 0 : stages === "top-k" ? 1 : 2,
      out,
      lseOut,
      barrier: this.#barrier.ptr,
    });
  }

  /** Whether attention() of a step with these routes runs the persistent step. */
  get usesPersistentStep(): boolean {
    return this.persistentGrid > 0 && this.routeSignature === "sparse";
  }

  /** Dense attention over the layer's pools or over `pools` laid out like them. */
  dense(layer: number, q: bigint, allDense: boolean, pools?: KvPools): void {
    const l = this.cache.layers[layer];
    const t = this.variant.launchers.tuning;
    this.variant.launchers.launchDense(
      this.#slot("dense"),
      [this.denseSplits, t.denseHeadBlocks, this.batch],
      {
        q,
        kCache: pools?.k ?? l.k.ptr,
        vCache: pools?.v ?? l.v.ptr,
        blockTables: this.cache.blockTables.ptr,
        maxPages: this.cache.maxPagesPerSeq,
        seqLens: this.buffers.seqLens,
        routes: allDense ? this.buffers.routesAllDense : this.buffers.routes,
        partialO: this.#partialO.ptr,
        partialLse: this.#partialLse.ptr,
        maxSplits: this.maxSplits,
        softmaxScale: this.softmaxScale,
      },
    );
  }

  merge(out: bigint, allDense: boolean, lseOut = 0n): void {
    this.variant.launchers.launchMerge(
      this.#slot("merge"),
      [this.spec.numQHeads, this.batch, 1],
      {
        partialO: this.#partialO.ptr,
        partialLse: this.#partialLse.ptr,
        maxSplits: this.maxSplits,
        routes: allDense ? this.buffers.routesAllDense : this.buffers.routes,
        denseSplits: this.denseSplits,
        sparseSplits: this.sparseSplits,
        out,
        lseOut,
      },
    );
  }

  /**
   * Which kernels this step needs: the sparse chain when some sequence is routed sparse, the
   * dense kernel when some is routed dense. Launching a kernel whose every block exits is
   * correct but costs a few microseconds; a graph captured for one signature must be
   * re-captured when it changes (see GpuDecoder).
   */
  get routeSignature(): "sparse" | "dense" | "mixed" {
    const sparse = this.routes.some((r) => r === "sparse");
    const dense = this.routes.some((r) => r === "dense");
    return sparse && dense ? "mixed" : sparse ? "sparse" : "dense";
  }

  /**
   * Attention of one layer for this step: q [batch][Hq][d] -> out [batch][Hq][d] (KV dtype).
   * `dense` forces dense attention for every sequence (dense layers, baselines). Only the kernels
   * the host-side routes of this step need are launched.
   */
  attention(layer: number, q: bigint, out: bigint, dense = false, lseOut = 0n): void {
    const signature = dense ? "dense" : this.routeSignature;
    if (signature === "sparse" && this.persistentGrid > 0) {
      this.persistentStep(layer, q, out, lseOut);
      return;
    }
    if (signature !== "dense") {
      this.topK(layer, q);
      this.sparse(layer, q);
    }
    if (signature !== "sparse") this.dense(layer, q, dense);
    this.merge(out, dense, lseOut);
  }

  /** Device bytes of the step inputs and the selection and split workspaces. */
  get deviceBytes(): number {
    return [
      this.#step,
      this.#keys,
      this.#hist,
      this.#counters,
      this.#candIdx,
      this.#candKey,
      this.#selIdx,
      this.#partialO,
      this.#partialLse,
    ].reduce(
      (n, b) => n + b.bytes,
      (this.#bitmap?.bytes ?? 0) + (this.#finalIdx?.bytes ?? 0) + (this.#barrier?.bytes ?? 0),
    );
  }

  /** Workspace addresses, for tests that inspect intermediate results. */
  get workspace() {
    return {
      keys: this.#keys,
      hist: this.#hist,
      counters: this.#counters,
      selIdx: this.#selIdx,
      partialO: this.#partialO,
      partialLse: this.#partialLse,
    };
  }

  dispose(): void {
    for (
      const b of [
        this.#host,
        this.#step,
        this.#keys,
        this.#hist,
        this.#counters,
        this.#candIdx,
        this.#candKey,
        this.#selIdx,
        this.#partialO,
        this.#partialLse,
      ]
    ) b.dispose();
    this.#bitmap?.dispose();
    this.#finalIdx?.dispose();
    this.#barrier?.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
