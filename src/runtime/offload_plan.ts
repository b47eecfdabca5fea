/**
 * Double Sparsity-Offload: the decode-step launches of layers whose K/V live in pinned host
 * memory (`PagedKvCache` with `kvPlacement: "host"`), beside a DecodePlan.
 *
 * mode "selected" (the paper's system), per host-placed layer:
 *
 *   score -> select -> resolve -> sort_selection -> gather_kv -> sparse (staged) ┐
 *                                                  dense (through the mapping)   ├-> merge
 *
 * Only the selected rows cross PCIe, read by gather_kv in ascending token order into a device
 * staging area; the sparse kernel then reads the staging. With `reuse`, each layer keeps two
 * stagings (ping-pong by step parity) and gather_kv takes every row the previous step already
 * staged from there instead of the host. With `rowCacheBytes`, each layer also keeps a
 * direct-mapped device cache of rows fetched in earlier steps (slot = token % slots per
 * (sequence, kv head)): the gather takes a row from there when the slot's tag names its token,
 * rows it missed bid for their slot, and fill_row_cache writes the winners from the staging
 * after the layer's attention. Sequences routed dense on a host layer read K/V through
 * the mapping (correct, slow: short sequences only). New tokens' K/V are appended by the existing
 * append kernel straight into host memory (posted writes: the step does not wait for them).
 *
 * With `prediction` (the paper's next-layer prediction), while layer l is recorded the decoder
 * computes layer l+1's approximate query from layer l's input (predictQuery) and `predict` runs,
 * on a side stream forked with an event, layer l+1's top-k with that query on a second DecodePlan
 * and a gather of the predicted rows into a prefetch staging; that overlaps layer l's attention
 * and MLP. Layer l+1 waits on the side stream's event (never on the host), computes its exact
 * selection and gathers with the prefetch as a device source: only the rows the prediction
 * missed come from the host, so results stay exact. With `skipMissed` layer l+1 attends the
 * prefetch as it is (approximate: no exact top-k, no host read after the prediction).
 *
 * mode "full-kv" (the FlexGen-style baseline): every layer's whole K/V pools are copied to a
 * device double buffer on a copy stream (cuMemcpyHtoDAsync: layer l+1's copy runs while layer l
 * computes; events only, no host wait, so a step is still one graph), the step's new token is
 * appended into the host pools and into the device copy, and the dense kernel reads the copy.
 */
import type { Cuda, DeviceBuffer, Event, Stream } from "../cuda/driver.ts";
import type { MappedHostBuffer } from "../cuda/driver.ts";
import { ArgumentError } from "../util/errors.ts";
import { DecodePlan } from "./decode_plan.ts";
import type { StepTimeline } from "./step_timeline.ts";
import { gatherBlockCap, gatherChunks, gatherGrid } from "./gather_grid.ts";

/** How a decoder offloads K/V (GpuDecoderOptions.offload). */
export interface OffloadOptions {
  /** "selected": Double Sparsity-Offload; "full-kv": copy each layer's whole K/V (baseline). */
  readonly mode: "selected" | "full-kv";
  /** Keep each layer's staged rows for the next step and fetch only the difference. */
  readonly reuse?: boolean;
  /**
   * Next-layer prediction with overlap: layer l selects and prefetches layer l+1's rows on a
   * side stream from an approximate query; layer l+1 fetches only what the prediction missed.
   * Exact (the same selection and outputs as without it).
   */
  readonly prediction?: boolean;
  /**
   * With prediction: a predicted layer attends only the predicted rows (no exact top-k, no
   * fetch of missed rows). Approximate: the outputs differ from Double Sparsity's.
   */
  readonly skipMissed?: boolean;
  /**
   * With prediction: the share of each budget the prediction prefetches, in (0, 1] (default 1).
   * Below 1 it prefetches only its highest-scored rows: fewer wasted rows where the transfer
   * dominates the step, more rows fetched after the exact selection where it does not. Exact
   * either way. Not with skipMissed (that layer would attend fewer rows).
   */
  readonly prefetchFraction?: number;
  /**
   * Device bytes for a row cache (all offloaded layers together; 0 or absent: none): per
   * (sequence, layer, kv head) a direct-mapped cache of K/V rows fetched in earlier steps, slot =
   * token % slots, where the newest missed token of a slot replaces what it held. The gather
   * takes a row found there from device memory instead of the host; the spare device memory of an
   * offloaded decoder becomes PCIe bytes saved. Exact. Not with skipMissed.
   */
  readonly rowCacheBytes?: number;
}

const MODES = ["selected", "full-kv"] as const;

/** Validates offload options (one clear line naming the field and what is allowed). */
export function checkOffloadOptions(o: OffloadOptions, where: string): OffloadOptions {
  if (typeof o !== "object" || o === null) {
    throw new ArgumentError(where, "offload", o, '{ mode: "selected" | "full-kv", ... }');
  }
  if (!MODES.includes(o.mode)) {
    throw new ArgumentError(where, "offload.mode", o.mode, MODES.join(", "));
  }
  for (const key of ["reuse", "prediction", "skipMissed"] as const) {
    if (o[key] !== undefined && typeof o[key] !== "boolean") {
      throw new ArgumentError(where, `offload.${key}`, o[key], "true, false or absent");
    }
  }
  if (o.mode === "full-kv" && (o.reuse || o.prediction || o.skipMissed)) {
    throw new ArgumentError(
      where,
      "offload",
      o,
      'reuse, prediction and skipMissed only with mode "selected"',
    );
  }
  if (o.skipMissed && !o.prediction) {
    throw new ArgumentError(where, "offload.skipMissed", true, "only with prediction: true");
  }
  if (o.prefetchFraction !== undefined) {
    const f = o.prefetchFraction;
    if (typeof f !== "number" || !(f > 0 && f <= 1)) {
      throw new ArgumentError(where, "offload.prefetchFraction", f, "a number in (0, 1]");
    }
    if (!o.prediction) {
      throw new ArgumentError(where, "offload.prefetchFraction", f, "only with prediction: true");
    }
    if (o.skipMissed && f !== 1) {
      throw new ArgumentError(
        where,
        "offload.prefetchFraction",
        f,
        "1 (or absent) with skipMissed",
      );
    }
  }
  if (o.rowCacheBytes !== undefined) {
    const n = o.rowCacheBytes;
    if (typeof n !== "number" || !Number.isSafeInteger(n) || n < 0) {
      throw new ArgumentError(where, "offload.rowCacheBytes", n, "a whole number of bytes >= 0");
    }
    if (n > 0 && o.mode !== "selected") {
      throw new ArgumentError(where, "offload.rowCacheBytes", n, 'only with mode "selected"');
    }
    if (n > 0 && o.skipMissed) {
      // A skipMissed layer attends its prefetch: no exact gather bids for slots or fills them.
      throw new ArgumentError(where, "offload.rowCacheBytes", n, "0 or absent with skipMissed");
    }
  }
  if (o.skipMissed && o.reuse) {
    // A skipMissed layer attends its prefetch and stages nothing a next step could reuse.
    throw new ArgumentError(where, "offload.skipMissed", true, "only without reuse");
  }
  return o;
}

/** Rows of one layer's gathers by where they came from (cumulative, from the device counters). */
export interface GatherCounts {
  /** Rows found in the previous step's staging (reuse). */
  readonly fromPrevious: number;
  /** Rows found in the prediction's prefetch. */
  readonly fromPrefetch: number;
  /** Rows read from host memory over PCIe. */
  readonly fromHost: number;
  /** Rows found in the row cache (rowCacheBytes). */
  readonly fromCache: number;
  /** The prediction's own gathers (into the prefetch): rows from the previous step's staging. */
  readonly prefetchFromPrevious: number;
  /** The prediction's own gathers: rows read from host memory over PCIe. */
  readonly prefetchFromHost: number;
  /** The prediction's own gathers: rows found in the row cache. */
  readonly prefetchFromCache: number;
}

/**
 * The prediction's recall from gather counts (deltas over some steps, or cumulative): the share
 * of the exact selection's rows found in the prefetch. Without reuse or a row cache that is
 * |exact and predicted| / |exact|; with them the gather looks in the row cache and the previous
 * step's staging first, so it is the share served by the prefetch (a lower bound of the recall).
 * NaN when nothing was selected (layers without prediction, dense steps).
 */
export function predictionRecall(c: GatherCounts): number {
  const selected = c.fromPrevious + c.fromPrefetch + c.fromHost + c.fromCache;
  return selected > 0 ? c.fromPrefetch / selected : NaN;
}

/** Per-layer differences of two gatherCounts() readings (after minus before). */
export function gatherCountsSince(after: GatherCounts[], before: GatherCounts[]): GatherCounts[] {
  return after.map((a, l) => ({
    fromPrevious: a.fromPrevious - before[l].fromPrevious,
    fromPrefetch: a.fromPrefetch - before[l].fromPrefetch,
    fromHost: a.fromHost - before[l].fromHost,
    fromCache: a.fromCache - before[l].fromCache,
    prefetchFromPrevious: a.prefetchFromPrevious - before[l].prefetchFromPrevious,
    prefetchFromHost: a.prefetchFromHost - before[l].prefetchFromHost,
    prefetchFromCache: a.prefetchFromCache - before[l].prefetchFromCache,
  }));
}

/** Counter slots per layer (u64): previous step, prefetch, host, row cache. */
const GATHER_COUNTERS = 4;
/**
 * The counter triples: the exact gathers' per layer, then the prediction's (its gathers read no
 * prefetch, so their middle slot stays 0).
 */
const COUNTER_SETS = 2;

/** One staging area: selected rows [batch][selHeads][selStride][headDim] (K, V), list, count. */
class Staging implements Disposable {
  readonly k: DeviceBuffer;
  readonly v: DeviceBuffer;
  readonly idx: DeviceBuffer;
  readonly count: DeviceBuffer;

  constructor(cuda: Cuda, rows: number, headDim: number, batch: number) {
    using guard = new DisposableStack();
    // K and V rows of 2-byte elements (fp16 or bf16, the only K/V dtypes); 4-byte token indices
    // and one 4-byte count per sequence.
    this.k = guard.use(cuda.alloc(rows * headDim * 2));
    this.v = guard.use(cuda.alloc(rows * headDim * 2));
    this.idx = guard.use(cuda.alloc(rows * 4));
    this.count = guard.use(cuda.alloc(batch * 4));
    guard.move();
  }

  get bytes(): number {
    return this.k.bytes + this.v.bytes + this.idx.bytes + this.count.bytes;
  }

  [Symbol.dispose](): void {
    for (const b of [this.k, this.v, this.idx, this.count]) b.dispose();
  }
}

/**
 * One layer's row cache: K and V rows [batch][kvHeads][slots][headDim], the token each slot holds
 * (-1: none) and the step's bids for each slot (-1 between steps), both [batch][kvHeads][slots].
 */
class RowCache implements Disposable {
  readonly k: DeviceBuffer;
  readonly v: DeviceBuffer;
  readonly tags: DeviceBuffer;
  readonly claims: DeviceBuffer;

  constructor(cuda: Cuda, readonly slots: number, batch: number, kvHeads: number, headDim: number) {
    const rows = batch * kvHeads * slots;
    using guard = new DisposableStack();
    this.k = guard.use(cuda.alloc(rows * headDim * 2));
    this.v = guard.use(cuda.alloc(rows * headDim * 2));
    this.tags = guard.use(cuda.alloc(rows * 4));
    this.claims = guard.use(cuda.alloc(rows * 4));
    guard.move();
  }

  get bytes(): number {
    return this.k.bytes + this.v.bytes + this.tags.bytes + this.claims.bytes;
  }

  [Symbol.dispose](): void {
    for (const b of [this.k, this.v, this.tags, this.claims]) b.dispose();
  }
}

/**
 * Device bytes of one row-cache slot of every (sequence, kv head) of one layer: K and V rows of
 * 2-byte elements, a tag and a claim.
 */
export function rowCacheSlotBytes(batch: number, kvHeads: number, headDim: number): number {
  return batch * kvHeads * (2 * headDim * 2 + 8);
}

/**
 * Row-cache slots per (sequence, layer, kv head) that `bytes` buys over `layers` offloaded
 * layers, at most `maxContext` (a slot per position holds every row); 0 for no cache. Throws when
 * `bytes` > 0 buys less than one slot.
 */
export function rowCacheSlots(
  bytes: number,
  layers: number,
  batch: number,
  kvHeads: number,
  headDim: number,
  maxContext: number,
): number {
  if (bytes === 0 || layers === 0) return 0;
  const perSlot = layers * rowCacheSlotBytes(batch, kvHeads, headDim);
  const slots = Math.min(maxContext, Math.floor(bytes / perSlot));
  if (slots < 1) {
    throw new ArgumentError(
      "OffloadPlan",
      "offload.rowCacheBytes",
      bytes,
      `0, or at least ${perSlot} (one slot per sequence, offloaded layer and kv head)`,
    );
  }
  return slots;
}

/**
 * Next-layer prediction's resources: its own DecodePlan, indexed by layer parity (its own
 * selection workspaces and step inputs: the prediction's top-k runs beside the exact one of the
 * previous layer; with skipMissed two plans, since layer l+1's top-k then runs beside the prefetch
 * gather of layer l, which still reads layer l's selection; otherwise both parities are one plan,
 * the top-k and the gather being ordered on one stream), the select stream (the prediction's
 * top-k) and the side stream (its prefetch gathers), two prefetch stagings used by layer parity
 * (layer l+1's is written while layer l reads layer l's), and the fork / selected / done / join
 * events.
 *
 * The select stream is a stream of its own only with skipMissed (`separateSelect`): there a
 * gather that waited behind the next layer's top-k left the bus idle between two prefetches
 * (1.7 ms a step at 1 x 64K on an H100). In the exact modes the layer's own exact gather fills
 * that gap, and the top-k beside the prefetch made the step 0.05-0.3 ms slower (session 17,
 * docs/perf-notes.md), so there the select stream is the side stream.
 */
class Predictor implements Disposable {
  readonly plans: readonly [DecodePlan, DecodePlan];
  readonly select: Stream;
  readonly side: Stream;
  readonly prefetch: readonly [Staging, Staging];
  readonly fork: Event[];
  /** [layer]: recorded on the select stream after the layer's predicted top-k. */
  readonly selected: Event[];
  readonly done: Event[];
  /** [layer]: recorded on the main stream once `layer`'s own gather is issued. */
  readonly mainGathered: Event[];
  readonly join: Event;
  readonly selectJoin: Event;
  /** Whether the step being recorded has forked the side stream (it must then be joined). */
  forked = false;
  /** The predicted layer whose gather waits for the previous layer's own (see predict). */
  deferred: number | null = null;
  /**
   * [parity]: the last layer of that parity whose prefetch gather this step issued (it reads
   * plans[parity]'s selection), or null: the next top-k on that plan waits for its done event.
   */
  readonly gatheredFrom: [number | null, number | null] = [null, null];

  constructor(cuda: Cuda, main: DecodePlan, stream: Stream, separateSelect: boolean) {
    const spec = main.spec, B = main.batch, L = main.cache.layers.length;
    using guard = new DisposableStack();
    const newPlan = () =>
      guard.use(
        new DecodePlan(cuda, main.variant, main.cache, stream, { sortedSelection: true }),
      );
    const plan = newPlan();
    this.plans = [plan, separateSelect ? newPlan() : plan];
    this.side = guard.use(cuda.stream());
    this.select = separateSelect ? guard.use(cuda.stream()) : this.side;
    const rows = B * spec.numSelectionHeads * main.selStride;
    this.prefetch = [0, 1].map(() => guard.use(new Staging(cuda, rows, spec.headDim, B))) as [
      Staging,
      Staging,
    ];
    const events = () => Array.from({ length: L }, () => guard.use(cuda.event(false)));
    this.fork = events();
    this.selected = events();
    this.done = events();
    this.mainGathered = events();
    this.join = guard.use(cuda.event(false));
    this.selectJoin = guard.use(cuda.event(false));
    guard.move();
  }

  [Symbol.dispose](): void {
    for (
      const e of [
        ...this.fork,
        ...this.selected,
        ...this.done,
        ...this.mainGathered,
        this.join,
        this.selectJoin,
      ]
    ) e.dispose();
    for (const s of this.prefetch) s[Symbol.dispose]();
    if (this.select !== this.side) this.select.dispose();
    this.side.dispose();
    for (const plan of new Set(this.plans)) plan.dispose();
  }
}

/** The full-KV baseline's device double buffer, copy stream and events. */
class FullKvPipeline implements Disposable {
  readonly buffers: { k: DeviceBuffer; v: DeviceBuffer }[];
  readonly copyStream: Stream;
  readonly #fork: Event;
  readonly #join: Event;
  readonly #copied: Event[];
  readonly #used: Event[];

  constructor(cuda: Cuda, readonly plan: DecodePlan) {
    const pool = plan.cache.layers[0].k.bytes;
    const L = plan.cache.layers.length;
    using guard = new DisposableStack();
    this.buffers = [0, 1].map(() => ({
      k: guard.use(cuda.alloc(pool)),
      v: guard.use(cuda.alloc(pool)),
    }));
    this.copyStream = guard.use(cuda.stream());
    this.#fork = guard.use(cuda.event(false));
    this.#join = guard.use(cuda.event(false));
    this.#copied = Array.from({ length: L }, () => guard.use(cuda.event(false)));
    this.#used = Array.from({ length: L }, () => guard.use(cuda.event(false)));
    guard.move();
  }

  get deviceBytes(): number {
    return this.buffers.reduce((n, b) => n + b.k.bytes + b.v.bytes, 0);
  }

  #copy(layer: number): void {
    const l = this.plan.cache.layers[layer], dst = this.buffers[layer % 2];
    (l.k as MappedHostBuffer).copyTo(dst.k.ptr, this.copyStream, l.k.bytes);
    (l.v as MappedHostBuffer).copyTo(dst.v.ptr, this.copyStream, l.v.bytes);
    this.#copied[layer].record(this.copyStream);
  }

  /** Forks the copy stream off `main` and starts the copies of layers 0 and 1. */
  begin(main: Stream): void {
    this.#fork.record(main);
    this.copyStream.waitEvent(this.#fork);
    for (let l = 0; l < Math.min(2, this.#copied.length); l++) this.#copy(l);
  }

  /** The device copy of `layer`, once `main` has waited for its transfer. */
  acquire(layer: number, main: Stream): { k: bigint; v: bigint } {
    main.waitEvent(this.#copied[layer]);
    const b = this.buffers[layer % 2];
    return { k: b.k.ptr, v: b.v.ptr };
  }

  /** `layer` is done with its buffer: the copy of layer + 2 into it may start. */
  release(layer: number, main: Stream): void {
    this.#used[layer].record(main);
    if (layer + 2 < this.#copied.length) {
      this.copyStream.waitEvent(this.#used[layer]);
      this.#copy(layer + 2);
    }
  }

  /** Joins the copy stream back into `main` (a captured step must end joined). */
  end(main: Stream): void {
    this.#join.record(this.copyStream);
    main.waitEvent(this.#join);
  }

  [Symbol.dispose](): void {
    for (const b of this.buffers) {
      b.k.dispose();
      b.v.dispose();
    }
    for (const e of [this.#fork, this.#join, ...this.#copied, ...this.#used]) e.dispose();
    this.copyStream.dispose();
  }
}

export class OffloadPlan implements Disposable {
  readonly options: OffloadOptions;
  /** [parity][layer] with reuse, else [0][layer] all the same staging; null for device layers. */
  readonly #stages: (Staging | null)[][] = [];
  /** [layer]: the row cache of each offloaded layer (rowCacheBytes), else null. */
  readonly #rowCaches: (RowCache | null)[] = [];
  readonly #owned: Disposable[] = [];
  readonly #counters: DeviceBuffer | null = null;
  readonly #fullKv: FullKvPipeline | null = null;
  readonly #predictor: Predictor | null = null;
  /** The K and V rows [batch][Hkv][d] of the last append (the step's own token). */
  #newRows: { k: bigint; v: bigint } | null = null;
  /** Step parity: which of a layer's two stagings this step writes (reuse). */
  #parity = 0;
  /**
   * Diagnostics: marks of each layer's stages on the main and side streams while a step is
   * recorded eagerly (offloadLayerTimes reads them); null (the default) records nothing.
   */
  timeline: StepTimeline | null = null;
  /** Most gather_kv blocks per launch (gather_grid.ts): a quarter of the SMs, or DS_GATHER_BLOCKS. */
  readonly #gatherBlocks: number;
  /**
   * The same for the exact gather that reads the prediction's prefetch first: one block an SM
   * behind a prefetch of 3/4 of the budget or more, for lists of up to 8 chunks a block
   * (gatherBlockCap), or DS_GATHER_BLOCKS.
   */
  readonly #exactGatherBlocks: number;

  constructor(cuda: Cuda, readonly plan: DecodePlan, options: OffloadOptions, stream: Stream) {
    this.options = checkOffloadOptions(options, "OffloadPlan");
    const chunks = gatherChunks(
      plan.spec.numSelectionHeads,
      plan.selStride,
      plan.variant.launchers.tuning.gatherRowsPerBlock,
      plan.batch,
    );
    this.#gatherBlocks = gatherBlockCap(cuda.info.multiprocessors, chunks, null);
    this.#exactGatherBlocks = gatherBlockCap(
      cuda.info.multiprocessors,
      chunks,
      this.options.prefetchFraction ?? 1,
    );
    const cache = plan.cache, spec = plan.spec, B = plan.batch;
    const host = cache.layers.map((l) => l.placement === "host");
    try {
      if (options.mode === "full-kv") {
        if (!host.every((h) => h)) {
          throw new ArgumentError(
            "OffloadPlan",
            "cache.kvPlacement",
            cache.layers.map((l) => l.placement),
            'every layer "host" for mode "full-kv"',
          );
        }
        this.#fullKv = this.#own(new FullKvPipeline(cuda, plan));
        return;
      }
      // The PCIe gather reads rows in token order: top-k must leave the lists sorted.
      if (!plan.sortedSelection) {
        throw new ArgumentError(
          "OffloadPlan",
          "plan.sortedSelection",
          false,
          'true for mode "selected" (a DecodePlan made with { sortedSelection: true })',
        );
      }
      const SH = spec.numSelectionHeads;
      this.#counters = this.#own(
        cuda.alloc(COUNTER_SETS * cache.layers.length * GATHER_COUNTERS * 8),
      );
      this.#counters.fill8(0, stream);
      const rows = B * SH * plan.selStride;
      const make = () => this.#own(new Staging(cuda, rows, spec.headDim, B));
      const shared = host.some((h) => h) && !options.reuse ? make() : null;
      for (let p = 0; p < (options.reuse ? 2 : 1); p++) {
        this.#stages.push(host.map((h) => (h ? shared ?? make() : null)));
      }
      const slots = rowCacheSlots(
        options.rowCacheBytes ?? 0,
        host.filter((h) => h).length,
        B,
        spec.numKvHeads,
        spec.headDim,
        cache.pages.maxTokensPerSeq,
      );
      for (const h of host) {
        this.#rowCaches.push(
          h && slots > 0
            ? this.#own(new RowCache(cuda, slots, B, spec.numKvHeads, spec.headDim))
            : null,
        );
      }
      if (options.prediction) {
        this.#predictor = this.#own(
          new Predictor(cuda, plan, stream, options.skipMissed ?? false),
        );
      }
      this.invalidate(stream);
    } catch (e) {
      this.dispose();
      throw e;
    }
  }

  #own<T extends Disposable>(x: T): T {
    this.#owned.push(x);
    return x;
  }

  /** Whether `layer`'s attention goes through this plan (its K/V are in host memory). */
  handles(layer: number): boolean {
    return this.plan.cache.layers[layer].placement === "host";
  }

  /** A key part for captured graphs: steps of different parity write different stagings. */
  get graphKey(): string {
    // A step captured with timeline marks records them on every replay; one without, never.
    return `${this.options.reuse ? `p${this.#parity}` : ""}${this.timeline ? "|marks" : ""}`;
  }

  /**
   * Host side of a new step (after the decode plan's beginStep): flips the staging parity
   * (reuse) and sets the prediction plan's step inputs.
   */
  beginStep(): void {
    if (this.options.reuse) this.#parity ^= 1;
    // skipMissed attends the prefetch as it is: its last row is the step's own token
    // (stage_newest), so the prediction selects one row fewer.
    const reserve = this.options.skipMissed ? 1 : 0;
    for (const plan of new Set(this.#predictor?.plans)) {
      plan.describePredictionOf(this.plan, this.options.prefetchFraction ?? 1, reserve);
    }
  }

  /** Every staging, the prediction's prefetch ones included. */
  #allStagings(): Staging[] {
    const all = new Set<Staging>(this.#predictor?.prefetch);
    for (const row of this.#stages) for (const s of row) if (s) all.add(s);
    return [...all];
  }

  /** Row-cache slots per (sequence, layer, kv head); 0 without a row cache. */
  get rowCacheSlots(): number {
    return this.#rowCaches.find((c) => c !== null)?.slots ?? 0;
  }

  /**
   * Forgets every staged and cached row (sequences reset or re-prefilled: token positions change
   * meaning).
   */
  invalidate(stream: Stream): void {
    for (const s of this.#allStagings()) s.count.fill8(0, stream);
    for (const c of this.#rowCaches) {
      c?.tags.fill8(0xff, stream);
      c?.claims.fill8(0xff, stream);
    }
  }

  /** Fills every staging and row cache with NaN bit patterns (tests: stale rows cannot pass). */
  poison(stream: Stream): void {
    for (const s of [...this.#allStagings(), ...this.#rowCaches]) {
      s?.k.fill8(0xff, stream);
      s?.v.fill8(0xff, stream);
    }
  }

  /**
   * Whether `layer` is predicted by its previous layer: every host-placed layer but layer 0 (a
   * dense, device-placed predecessor predicts too: it needs only its input). The paper keeps
   * layers 0, 1 and the last synchronous; here the spec's dense layers are on the device and
   * need no transfer, and the last layer gains from the overlap like any other.
   */
  predicts(layer: number): boolean {
    return this.#predictor !== null && layer > 0 && layer < this.plan.cache.layers.length &&
      this.handles(layer);
  }

  // ---- the step, per layer (called while recording, inside or outside a graph capture) ----

  /**
   * Start of the step's layers: full-KV forks the copy stream and starts the first copies; the
   * prediction plan's step inputs go to the device (before any fork: the side stream reads them).
   */
  beginLayers(stream: Stream): void {
    this.#fullKv?.begin(stream);
    const p = this.#predictor;
    if (p) {
      for (const plan of new Set(p.plans)) plan.uploadStepInputs(stream);
      p.forked = false;
      p.deferred = null;
      p.gatheredFrom.fill(null);
    }
  }

  /** End of the step's layers: joins the copy or side stream (a captured step must end joined). */
  endLayers(stream: Stream): void {
    this.#fullKv?.end(stream);
    const p = this.#predictor;
    if (p?.deferred != null) this.#startPrefetch(p.deferred, stream); // its layer never attended
    if (p?.forked) {
      p.join.record(p.side);
      stream.waitEvent(p.join);
      if (p.select !== p.side) {
        p.selectJoin.record(p.select);
        stream.waitEvent(p.selectJoin);
      }
      p.forked = false;
    }
  }

  /**
   * Next-layer prediction of `layer` (predicts(layer)), recorded while the previous layer is:
   * `q` is the approximate query [batch][Hq][d] (written on `stream`, left untouched until this
   * layer's attention has waited). On the select stream, after `stream`'s work so far: top-k on
   * the prediction plan of the layer's parity (sorted); then on the side stream a gather of the
   * predicted rows into the layer's prefetch staging (with reuse, rows of the previous step's
   * staging come from there). Nothing when every sequence is routed dense.
   *
   * When the previous layer is offloaded too, the prefetch's gather is issued only once that
   * layer's own gather is (attention() calls #startPrefetch): both gathers read
   * over PCIe, and the previous layer's (the rows its prediction missed) is on the critical path
   * while the prefetch has the rest of the layer to finish. Run side by side they split the bus
   * and the layer waits for both (bench/offload_timeline.ts: B=1 64K, a missed-row gather of a
   * quarter of the rows took 460-700 us beside the prefetch against 343 us for all rows alone).
   */
  predict(layer: number, q: bigint, stream: Stream): void {
    const p = this.#predictor;
    if (!p || !this.predicts(layer)) {
      throw new RangeError(`OffloadPlan.predict: layer ${layer} is not predicted`);
    }
    if (this.plan.routeSignature === "dense") return;
    p.fork[layer].record(stream);
    this.timeline?.mark("fork", layer, stream);
    p.select.waitEvent(p.fork[layer]);
    // The plan's selection may still be read by the prefetch gather of layer - 2 (when no
    // attention waited for it, e.g. a layer routed dense): its top-k waits for that gather.
    const reader = p.gatheredFrom[layer % 2];
    if (reader !== null) p.select.waitEvent(p.done[reader]);
    p.forked = true;
    this.#onStream(p.select, stream, () => {
      p.plans[layer % 2].topK(layer, q);
      this.timeline?.mark("side-topk", layer, p.select);
    });
    p.selected[layer].record(p.select);
    p.deferred = layer;
    if (!this.handles(layer - 1)) this.#startPrefetch(layer, stream);
  }

  /** Records `body`'s launches on `target` (a prediction stream), then rebinds `stream`. */
  #onStream(target: Stream, stream: Stream, body: () => void): void {
    const variant = this.plan.variant;
    variant.bindStream(target);
    try {
      body();
    } finally {
      variant.bindStream(stream);
    }
  }

  /**
   * The prefetch gather of predicted `layer`, on the side stream after the main stream's work so
   * far (the previous layer's own gather); nothing unless `layer`'s is the one deferred.
   */
  #startPrefetch(layer: number, stream: Stream): void {
    const p = this.#predictor;
    if (!p || p.deferred !== layer) return;
    p.deferred = null;
    p.mainGathered[layer - 1].record(stream);
    p.side.waitEvent(p.mainGathered[layer - 1]);
    p.side.waitEvent(p.selected[layer]);
    this.#onStream(p.side, stream, () => {
      const from = p.plans[layer % 2];
      this.#gather(layer, from, p.prefetch[layer % 2], this.#previous(layer), null, 1, {
        cache: this.#rowCaches[layer],
        bid: false,
      });
    });
    p.done[layer].record(p.side);
    p.gatheredFrom[layer % 2] = layer;
    this.timeline?.mark("side-done", layer, p.side);
  }

  /** Appends this step's K/V rows of a host layer (full-KV: also into its device copy). */
  append(layer: number, kNew: bigint, vNew: bigint, stream: Stream): void {
    this.#newRows = { k: kNew, v: vNew };
    this.plan.append(layer, kNew, vNew);
    if (this.#fullKv) {
      const copy = this.#fullKv.acquire(layer, stream);
      this.plan.append(layer, kNew, vNew, copy);
    }
  }

  /** Attention of a host layer: q [batch][Hq][d] -> out; `dense` forces dense for every row. */
  attention(
    layer: number,
    q: bigint,
    out: bigint,
    dense: boolean,
    stream: Stream,
    lseOut = 0n,
  ): void {
    const plan = this.plan;
    if (this.#fullKv) {
      plan.dense(layer, q, true, this.#fullKv.acquire(layer, stream));
      plan.merge(out, true, lseOut);
      this.#fullKv.release(layer, stream);
      return;
    }
    const signature = dense ? "dense" : plan.routeSignature;
    const mark = (name: string) => this.timeline?.mark(name, layer, stream);
    mark("attn");
    // Normally issued at the end of the previous layer's attention; a caller that skipped that
    // layer must not leave this one waiting on a done event of an earlier step.
    this.#startPrefetch(layer, stream);
    if (signature !== "dense") {
      const p = this.predicts(layer) ? this.#predictor! : null;
      const prefetch = p?.prefetch[layer % 2] ?? null;
      if (p && this.options.skipMissed) {
        stream.waitEvent(p.done[layer]);
        mark("waited");
        // The bus is free once this layer's prefetch is in (no missed rows follow it): the next
        // layer's prefetch starts now, beside this layer's attention, not after it.
        this.#startPrefetch(layer + 1, stream);
        this.#stageNewest(prefetch!);
        plan.sparse(layer, q, { k: prefetch!.k.ptr, v: prefetch!.v.ptr });
      } else {
        plan.topK(layer, q); // sorted (sortedSelection); beside the prediction's gather
        mark("topk");
        if (p) {
          stream.waitEvent(p.done[layer]);
          mark("waited");
        }
        const staged = this.gather(layer, this.options.reuse ?? false, prefetch, true);
        mark("gathered");
        // The next layer's prefetch as soon as this layer's rows are in: the bus then has no gap
        // for this layer's attention and merge. The attention beside the (capped) prefetch runs
        // slower, 80-90 us a layer against 17-20 us at B=1 64K-128K, but where PCIe is the limit
        // the step gains: 0.7-1.0 ms at B=1 128K (docs/perf-notes.md, "The prefetch right after
        // the gather"; uncapped, the attention beside it ran ~20x slower).
        this.#startPrefetch(layer + 1, stream);
        plan.sparse(layer, q, staged);
      }
    }
    if (signature !== "sparse") plan.dense(layer, q, dense);
    plan.merge(out, dense, lseOut);
    mark("end");
    // Where neither branch above issued it (dense routes), after the attention, so the prefetch
    // runs beside the output projection and MLP. A no-op when already issued.
    this.#startPrefetch(layer + 1, stream);
    // The row cache's fill (device copies only) after the prefetch is issued, so the next
    // layer's transfer does not wait for it; the next step's gathers of this layer follow it.
    // (Every non-dense step ran the exact gather that bids: checkOffloadOptions refuses a row
    // cache with skipMissed.)
    if (signature !== "dense") this.#fillRowCache(layer);
  }

  /**
   * stage_newest: this step's K/V rows (from the last append) into row budget - 1 of `dst`, a
   * skipMissed prefetch whose prediction selected budget - 1 older tokens.
   */
  #stageNewest(dst: Staging): void {
    const plan = this.plan, rows = this.#newRows;
    if (!rows) throw new RangeError("OffloadPlan: stage_newest before any append of the step");
    plan.variant.launchers.launchStageNewest(
      plan.variant.slot("stage_newest"),
      [plan.spec.numSelectionHeads, 1, plan.batch],
      {
        seqLens: plan.buffers.seqLens,
        budgets: plan.buffers.budgets,
        routes: plan.buffers.routes,
        kNew: rows.k,
        vNew: rows.v,
        selStride: plan.selStride,
        kStage: dst.k.ptr,
        vStage: dst.v.ptr,
        stageIdx: dst.idx.ptr,
        stageCount: dst.count.ptr,
      },
    );
  }

  /** fill_row_cache of `layer`: the rows its exact gather staged that won their slot. */
  #fillRowCache(layer: number): void {
    const cache = this.#rowCaches[layer];
    if (!cache) return;
    const plan = this.plan, src = this.#stages[this.#parity][layer]!;
    plan.variant.launchers.launchFillRowCache(
      plan.variant.slot("fill_row_cache"),
      // Uncapped: device-to-device copies, which the gather's block cap (sized for PCIe reads in
      // flight) slowed to ~350 us a layer at B=4 128K on an H100 (bench/offload_timeline.ts).
      this.#grid(0),
      {
        stageIdx: src.idx.ptr,
        stageCount: src.count.ptr,
        selStride: plan.selStride,
        kStage: src.k.ptr,
        vStage: src.v.ptr,
        cacheK: cache.k.ptr,
        cacheV: cache.v.ptr,
        cacheTags: cache.tags.ptr,
        cacheClaims: cache.claims.ptr,
        cacheSlots: cache.slots,
      },
    );
  }

  /**
   * The gather's (and the fill's) grid, at most `maxBlocks` blocks (0: a lane per chunk). Heads
   * fastest: the blocks running together read the same stretch of the sequence's pages (51 GB/s
   * on an H100 against 17 GB/s chunk-fastest: bench/pcie_gather_probe.ts); the gather's few
   * blocks keep a side-stream gather from crowding the layer's kernels (gather_grid.ts).
   */
  #grid(maxBlocks = this.#gatherBlocks): ReturnType<typeof gatherGrid> {
    const plan = this.plan;
    return gatherGrid(
      plan.spec.numSelectionHeads,
      plan.selStride,
      plan.variant.launchers.tuning.gatherRowsPerBlock,
      plan.batch,
      maxBlocks,
    );
  }

  /** The previous step's staging of `layer` (reuse), or null. */
  #previous(layer: number): Staging | null {
    return this.options.reuse ? this.#stages[this.#parity ^ 1][layer] : null;
  }

  /**
   * gather_kv of `layer`'s sorted selection into this step's staging, rows found in the row
   * cache, the previous step's staging (`reuse`) or `prefetch` taken from there; returns the
   * staged rows. `bid`: the rows the row cache missed bid for their slots (the caller then runs
   * the fill); without it the cache is only read.
   */
  gather(
    layer: number,
    reuse = this.options.reuse ?? false,
    prefetch: Staging | null = null,
    bid = false,
  ): { k: bigint; v: bigint } {
    const dst = this.#stages[this.#parity][layer]!;
    const cache = this.#rowCaches[layer];
    this.#gather(layer, this.plan, dst, reuse ? this.#previous(layer) : null, prefetch, 0, {
      cache,
      bid,
    });
    return { k: dst.k.ptr, v: dst.v.ptr };
  }

  /**
   * One gather_kv launch: `from`'s sorted selection of `layer` into `dst`, each row from `cache`
   * (a row cache or null), else src0, else src1, else host memory (misses bid for cache slots
   * when `bid`); counts into counter set `set` (0 exact, 1 prediction).
   */
  #gather(
    layer: number,
    from: DecodePlan,
    dst: Staging,
    src0: Staging | null,
    src1: Staging | null,
    set: number,
    { cache, bid }: { cache: RowCache | null; bid: boolean },
  ): void {
    const plan = this.plan, l = plan.cache.layers[layer];
    const L = plan.cache.layers.length;
    plan.variant.launchers.launchGatherKv(
      plan.variant.slot("gather_kv"),
      this.#grid(set === 0 && src1 ? this.#exactGatherBlocks : this.#gatherBlocks),
      {
        budgets: from.buffers.budgets,
        routes: from.buffers.routes,
        blockTables: plan.cache.blockTables.ptr,
        maxPages: plan.cache.maxPagesPerSeq,
        selIdx: from.workspace.selIdx.ptr,
        selStride: plan.selStride,
        kCache: l.k.ptr,
        vCache: l.v.ptr,
        kStage: dst.k.ptr,
        vStage: dst.v.ptr,
        dstIdx: dst.idx.ptr,
        dstCount: dst.count.ptr,
        src0Idx: src0?.idx.ptr ?? 0n,
        src0Count: src0?.count.ptr ?? 0n,
        src0K: src0?.k.ptr ?? 0n,
        src0V: src0?.v.ptr ?? 0n,
        src1Idx: src1?.idx.ptr ?? 0n,
        src1Count: src1?.count.ptr ?? 0n,
        src1K: src1?.k.ptr ?? 0n,
        src1V: src1?.v.ptr ?? 0n,
        cacheK: cache?.k.ptr ?? 0n,
        cacheV: cache?.v.ptr ?? 0n,
        cacheTags: cache?.tags.ptr ?? 0n,
        cacheClaims: cache && bid ? cache.claims.ptr : 0n,
        cacheSlots: cache?.slots ?? 0,
        counters: this.#counters!.ptr + BigInt((set * L + layer) * GATHER_COUNTERS * 8),
      },
    );
  }

  /**
   * Gathers every offloaded layer's rows for the selection now in the plan's workspace (the
   * last layer's, sorted), without reuse: a bandwidth probe for benchmarks (call after a step,
   * inside a timed graph). Returns the bytes read from host memory per call.
   */
  gatherAllFromHost(): number {
    const plan = this.plan;
    let tokens = 0;
    for (let l = 0; l < plan.cache.layers.length; l++) {
      const dst = this.#stages[this.#parity]?.[l];
      if (!dst) continue;
      this.#gather(l, plan, dst, null, null, 0, { cache: null, bid: false });
      for (let b = 0; b < plan.batch; b++) {
        if (plan.routes[b] === "sparse") tokens += plan.budgets[b];
      }
    }
    // K and V rows of every selection head per selected token (the spec's byte facts).
    return tokens * plan.spec.bytes.selectedRowBytes;
  }

  /** The staging `layer`'s gather wrote in the last recorded step (tests inspect it). */
  lastStaging(
    layer: number,
  ): { k: DeviceBuffer; v: DeviceBuffer; idx: DeviceBuffer; count: DeviceBuffer } {
    const s = this.#stages[this.#parity]?.[layer];
    if (!s) throw new RangeError(`lastStaging: layer ${layer} has no staging (not offloaded)`);
    return s;
  }

  /** The prefetch staging predicted `layer` used in the last recorded step (tests inspect it). */
  prefetchStaging(
    layer: number,
  ): { k: DeviceBuffer; v: DeviceBuffer; idx: DeviceBuffer; count: DeviceBuffer } {
    if (!this.#predictor || !this.predicts(layer)) {
      throw new RangeError(`prefetchStaging: layer ${layer} is not predicted`);
    }
    return this.#predictor.prefetch[layer % 2];
  }

  /** `layer`'s row cache (tests inspect it), or null without one. */
  rowCache(layer: number): {
    slots: number;
    k: DeviceBuffer;
    v: DeviceBuffer;
    tags: DeviceBuffer;
    claims: DeviceBuffer;
  } | null {
    return this.#rowCaches[layer] ?? null;
  }

  /** Cumulative gather counts per layer since creation (waits for `stream`). */
  gatherCounts(stream: Stream): GatherCounts[] {
    const L = this.plan.cache.layers.length;
    const raw = new BigUint64Array(COUNTER_SETS * L * GATHER_COUNTERS);
    this.#counters?.download(raw, stream);
    const at = (set: number, layer: number, slot: number) =>
      Number(raw[(set * L + layer) * GATHER_COUNTERS + slot]);
    return Array.from({ length: L }, (_, i) => ({
      fromPrevious: at(0, i, 0),
      fromPrefetch: at(0, i, 1),
      fromHost: at(0, i, 2),
      fromCache: at(0, i, 3),
      prefetchFromPrevious: at(1, i, 0),
      prefetchFromHost: at(1, i, 2),
      prefetchFromCache: at(1, i, 3),
    }));
  }

  /**
   * Device bytes this plan adds: stagings (2 x layers x batch x selHeads x selStride x headDim x
   * 2 (K, V) x 2 bytes with reuse, one shared set without), lists, bitmap and counters, the row
   * caches, with prediction its plan's workspaces and two prefetch stagings; or the full-KV
   * double buffer (2 x the K and V pools of one layer).
   */
  get deviceBytes(): number {
    const stagings = this.#allStagings().reduce((a, s) => a + s.bytes, 0);
    const rowCaches = this.#rowCaches.reduce((a, c) => a + (c?.bytes ?? 0), 0);
    return stagings + rowCaches + (this.#counters?.bytes ?? 0) +
      [...new Set(this.#predictor?.plans)].reduce((a, plan) => a + plan.deviceBytes, 0) +
      (this.#fullKv?.deviceBytes ?? 0);
  }

  dispose(): void {
    for (const d of this.#owned.splice(0).reverse()) d[Symbol.dispose]();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
