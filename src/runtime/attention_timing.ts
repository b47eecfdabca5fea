/**
 * How a decode-attention step is timed, shared by `deno task bench` and `deno task tune`:
 *  - the copy bandwidth (device-to-device copy of 1 GiB, read + write) sets every byte floor;
 *  - a step runs as a CUDA graph and is timed with CUDA events: the median of many replays after
 *    warm-up, rotating over enough cache copies ("layers") that L2 cannot serve them;
 *  - caches hold random K/V (and random label codes at the label width), every sequence grown to
 *    the full context over a scrambled page free list;
 *  - bytes: dense reads K and V of every token; Double Sparsity reads the labels at their bit
 *    width, writes and reads back 2-byte score keys, and reads the selected K/V rows.
 */
import type { Cuda, DeviceBuffer, DeviceInfo, GraphExec, Stream } from "../cuda/driver.ts";
import { type AttentionSpec, budgetFor, denseStepBytes, sparseStepBytes } from "../dsl/spec.ts";
import { PagedKvCache } from "./caches.ts";
import { DecodePlan } from "./decode_plan.ts";
import { copyBandwidth, medianEventMs } from "./timing.ts";
import { UtilKernels } from "./util_kernels.ts";
import type { Variant } from "./variant.ts";

/** Share of device memory one case's K/V may take (the rest: copies, workspaces, SDPA). */
const MAX_KV_SHARE = 0.4;
/** The rotated cache copies hold at least this many L2 sizes, so replays miss in L2. */
const L2_CYCLES = 3;
/** At most this many cache copies (small steps would otherwise make hundreds). */
const MAX_CACHE_COPIES = 32;
/** Share of device memory all cache copies together may take. */
const MAX_COPIES_SHARE = 0.45;

/** One timed step of one layer. */
export interface StepTiming {
  /** Median ms of the Double Sparsity step (score, select, resolve, sparse, merge). */
  readonly ms: number;
  /** The score kernel alone. */
  readonly scoreMs: number;
  /** (score + select + resolve) - score, clamped at 0. */
  readonly selectMs: number;
  /** The step's stages against their own bytes (see StageTiming). */
  readonly stages: readonly StageTiming[];
  /** Bytes the Double Sparsity step moves (sparseStepBytes x batch). */
  readonly bytes: number;
  /** bytes / copy bandwidth, in ms. */
  readonly floorMs: number;
  /** The dense step through the same plan, when asked for. */
  readonly dense?: { readonly ms: number; readonly bytes: number; readonly floorMs: number };
  /** Cache copies rotated over. */
  readonly copies: number;
  /** Whether the step's kernels were launched with Programmatic Dependent Launch. */
  readonly programmaticLaunch: boolean;
  /**
   * Whether the step ran as the persistent step (one cooperative launch); its stages are then
   * timed by stopping the kernel early (after score; after top-k) instead of by separate launches.
   */
  readonly persistentStep: boolean;
}

/**
 * One stage of the Double Sparsity step, timed by differences of graphs (score; score + select +
 * resolve; the whole step) and set against the bytes only it must move:
 *  - score: the label rows at their bit width and the 2-byte score keys it writes;
 *  - select + resolve: the score keys read back (resolve reads a few candidates' labels more);
 *  - attend: the selected K/V rows, plus the split partials written by the sparse kernel and read
 *    by the merge (fp32 output and log-sum-exp per split, query head and sequence).
 */
export interface StageTiming {
  readonly stage: StageName;
  readonly ms: number;
  readonly bytes: number;
  /** bytes / copy bandwidth, in ms. */
  readonly floorMs: number;
}

/** The stages of the Double Sparsity step, in launch order. */
export type StageName = "score" | "select + resolve" | "attend (sparse + merge)";

/**
 * Bytes of one split-K partial of one query head: the fp32 output row and its fp32 log-sum-exp,
 * counted twice (the sparse kernel writes it, the merge reads it).
 */
const partialBytes = (headDim: number): number => (headDim + 1) * 4 * 2;

/**
 * The bytes only each stage must move at `batch` sequences of `context` tokens (see
 * StageTiming), `sparseSplits` being the sparse kernel's split-K factor. Their sum is
 * sparseStepBytes x batch plus the split partials. Pure.
 */
export function stageBytes(
  spec: AttentionSpec,
  batch: number,
  context: number,
  sparseSplits: number,
): { readonly stage: StageName; readonly bytes: number }[] {
  const b = spec.bytes, k = budgetFor(spec.budget, context);
  const partials = batch * spec.numQHeads * sparseSplits * partialBytes(spec.headDim);
  return [
    // the label rows, and the 2-byte score keys written (half of scoreTraffic)
    { stage: "score", bytes: batch * context * (b.labelRead + b.scoreTraffic / 2) },
    // the score keys read back
    { stage: "select + resolve", bytes: batch * context * (b.scoreTraffic / 2) },
    { stage: "attend (sparse + merge)", bytes: batch * k * b.selectedRowBytes + partials },
  ];
}

export interface StepTimingOptions {
  /** Graph replays per measurement. */
  readonly repeats: number;
  /** Also time the dense step (once per shape is enough: it does not depend on the labels). */
  readonly dense?: boolean;
  /** Programmatic Dependent Launch on or off (default: the plan's, i.e. $DS_PDL, else off). */
  readonly programmaticLaunch?: boolean;
  /** The persistent step on or off (default: the plan's, i.e. $DS_PERSISTENT, else off). */
  readonly persistentStep?: boolean;
}

/**
 * Cache copies ("layers") a timed case rotates over: enough that one step's bytes cycle through
 * more than L2_CYCLES x L2, at most MAX_CACHE_COPIES, and all of them within `memoryShare` of
 * device memory.
 */
export function cacheCopies(
  info: DeviceInfo,
  spec: AttentionSpec,
  batch: number,
  context: number,
  memoryShare = MAX_COPIES_SHARE,
): number {
  const kvBytes = denseStepBytes(spec, context) * batch;
  const stepBytes = Math.min(sparseStepBytes(spec, context) * batch, kvBytes);
  return Math.max(
    1,
    Math.min(
      MAX_CACHE_COPIES,
      Math.ceil((L2_CYCLES * info.l2Bytes) / stepBytes),
      Math.floor((info.totalMemBytes * memoryShare) / kvBytes),
    ),
  );
}

/** A timed case's inputs: its cache and, per cache copy, a query and an output buffer. */
export interface RandomCase {
  readonly cache: PagedKvCache;
  readonly qs: DeviceBuffer[];
  readonly outs: DeviceBuffer[];
}

/**
 * A cache of `batch` sequences grown to `context` tokens over a scrambled page free list, `copies`
 * layers of random K/V and label rows at the label width (seeds from `seed`), fixed channels, and
 * a random query and an output buffer per layer. On failure everything allocated so far is freed;
 * on success the caller disposes the cache and the buffers.
 */
export function randomFullCache(
  cuda: Cuda,
  util: UtilKernels,
  spec: AttentionSpec,
  batch: number,
  context: number,
  copies: number,
  stream: Stream,
  seed = 0,
): RandomCase {
  using guard = new DisposableStack();
  const cache = guard.use(
    new PagedKvCache(cuda, spec, { numLayers: copies, numSeqs: batch, maxContext: context }),
  );
  cache.pages.scrambleFreeList(Math.random);
  for (let b = 0; b < batch; b++) cache.pages.grow(b, context);
  cache.syncBlockTables(stream);
  const channels = new Int32Array(spec.numLabelHeads * spec.labelChannels).map((_, i) =>
    (i * 7) % spec.headDim
  );
  const rowBytes = batch * spec.numQHeads * spec.headDim * 2;
  const qs: DeviceBuffer[] = [], outs: DeviceBuffer[] = [];
  cache.layers.forEach((layer, i) => {
    const s = seed + 11 * i;
    util.fillNormal(layer.k, s + 1, 1, stream);
    util.fillNormal(layer.v, s + 2, 1, stream);
    util.fillLabels(layer.labels, layer.meta, spec.labelBits, s + 3, stream);
    layer.setChannels(channels, stream);
    const q = guard.use(cuda.alloc(rowBytes));
    util.fillNormal(q, s + 4, 1, stream);
    qs.push(q);
    outs.push(guard.use(cuda.alloc(rowBytes)));
  });
  guard.move();
  return { cache, qs, outs };
}

/** Times decode-attention steps on one stream; holds the utility kernels and the bandwidth. */
export class AttentionTimer implements Disposable {
  readonly #cuda: Cuda;
  readonly #stream: Stream;
  readonly #util: UtilKernels;
  /** Measured copy bandwidth in bytes/s (read + write). */
  readonly bandwidth: number;

  constructor(cuda: Cuda, stream: Stream) {
    this.#cuda = cuda;
    this.#stream = stream;
    this.#util = new UtilKernels(cuda, "fp16");
    this.bandwidth = copyBandwidth(cuda, stream);
  }

  /** Why a case does not fit this device (its K/V over 40% of memory), or undefined. */
  tooLarge(spec: AttentionSpec, batch: number, context: number): string | undefined {
    const kvBytes = denseStepBytes(spec, context) * batch;
    const limit = this.#cuda.info.totalMemBytes * MAX_KV_SHARE;
    return kvBytes > limit
      ? `${(kvBytes / 2 ** 30).toFixed(0)} GiB of K/V, over ${(limit / 2 ** 30).toFixed(0)} GiB ` +
        `(${100 * MAX_KV_SHARE}% of device memory)`
      : undefined;
  }

  /** Median step times of `variant` (loaded for `spec`) at `batch` sequences of `context`. */
  time(
    variant: Variant,
    spec: AttentionSpec,
    batch: number,
    context: number,
    opts: StepTimingOptions,
  ): StepTiming {
    const cuda = this.#cuda, stream = this.#stream, util = this.#util;
    const info = cuda.info;
    const kvBytes = denseStepBytes(spec, context) * batch;
    const copies = cacheCopies(info, spec, batch, context);
    const graphs: GraphExec[] = [];
    const { cache, qs, outs } = randomFullCache(cuda, util, spec, batch, context, copies, stream);
    try {
      using plan = new DecodePlan(cuda, variant, cache, stream, {
        programmaticLaunch: opts.programmaticLaunch,
        persistentStep: opts.persistentStep,
      });
      plan.describeCurrent();
      plan.upload(stream);
      stream.synchronize();
      const capture = (body: (i: number) => void) => {
        const made = Array.from({ length: copies }, (_, i) => stream.capture(() => body(i)));
        graphs.push(...made);
        return made;
      };
      const timeGraphs = (g: GraphExec[], reps: number) =>
        medianEventMs(
          cuda,
          stream,
          (i) => g[i % g.length].launch(stream),
          reps,
          Math.max(5, copies),
        );
      const floor = (bytes: number) => (bytes / this.bandwidth) * 1e3;

      let dense: StepTiming["dense"];
      if (opts.dense) {
        const ms = timeGraphs(
          capture((i) => plan.attention(i, qs[i].ptr, outs[i].ptr, true)),
          opts.repeats,
        );
        dense = { ms, bytes: kvBytes, floorMs: floor(kvBytes) };
      }
      const ms = timeGraphs(
        capture((i) => plan.attention(i, qs[i].ptr, outs[i].ptr)),
        opts.repeats,
      );
      const persistent = plan.usesPersistentStep;
      const scoreSelectMs = timeGraphs(
        capture((i) =>
          persistent
            ? plan.persistentStep(i, qs[i].ptr, outs[i].ptr, 0n, "top-k")
            : plan.topK(i, qs[i].ptr)
        ),
        opts.repeats,
      );
      const scoreMs = timeGraphs(
        capture((i) =>
          persistent
            ? plan.persistentStep(i, qs[i].ptr, outs[i].ptr, 0n, "score")
            : plan.score(i, qs[i].ptr)
        ),
        Math.ceil(opts.repeats / 2),
      );
      // score alone leaves histograms filled; clear them for whatever runs next
      plan.workspace.hist.fill8(0, stream);
      plan.workspace.counters.fill8(0, stream);
      const bytes = sparseStepBytes(spec, context) * batch;
      const stageMs: Record<StageName, number> = {
        "score": scoreMs,
        "select + resolve": scoreSelectMs - scoreMs,
        "attend (sparse + merge)": ms - scoreSelectMs,
      };
      const splits = persistent ? plan.persistentSplits : plan.sparseSplits;
      const stages = stageBytes(spec, batch, context, splits).map(
        ({ stage, bytes }): StageTiming => ({
          stage,
          ms: Math.max(0, stageMs[stage]),
          bytes,
          floorMs: floor(bytes),
        }),
      );
      return {
        ms,
        scoreMs,
        selectMs: Math.max(0, scoreSelectMs - scoreMs),
        stages,
        bytes,
        floorMs: floor(bytes),
        dense,
        copies,
        programmaticLaunch: plan.programmaticLaunch,
        persistentStep: persistent,
      };
    } finally {
      for (const g of graphs) g.dispose();
      for (const b of [...qs, ...outs]) b.dispose();
      cache.dispose();
    }
  }

  [Symbol.dispose](): void {
    this.#util[Symbol.dispose]();
  }
}
