/**
 * Double Sparsity-Offload checks (part of `deno task test:gpu`, or alone:
 * `deno run -A tests/gpu/offload.ts [--seed N]`). Small random models (RandomModel), two decoders
 * per case fed the same ragged prompts and the same teacher-forced tokens:
 *   selected  K/V in pinned host memory (mode "selected", reuse on or off) against the on-GPU
 *             Double Sparsity decoder made with sortedSelection (sparse attention reads the
 *             same rows in the same, ascending order): the same selected tokens (per step,
 *             sequence, layer and selection head) and bit-identical logits. The
 *             staging is poisoned with NaN bit patterns first, so a stale row cannot pass.
 *             Prompts cross page boundaries, one sequence stays short enough to be routed dense
 *             (read through the mapping: the zero-copy path), prefill writes host memory through
 *             the mapping, and with reuse the gather counters must show rows taken from the
 *             previous step's staging. The host/device row counts must add up to the selections.
 *   predicted the same with next-layer prediction (reuse on and off, head and group selection,
 *             GQA, a layer predicted by a dense layer): still identical selections and
 *             bit-identical logits (the prefetch stagings are poisoned too), rows must come from
 *             the prefetch, none in layer 0 (never predicted); prints the recall per layer.
 *   row cache the same with a row cache (rowCacheBytes) of fewer slots than a step selects (every
 *             step's bids collide; head selection, so selection heads of one kv head bid for
 *             the same slots), alone and with reuse (misses served by the previous step's
 *             staging, then cached from it), of 40 slots with a half prefetch, and of a slot per
 *             position with prediction and reuse: identical selections, bit-identical logits
 *             (the cache's rows are poisoned too, so a tag set before its rows were written
 *             cannot pass), rows from the cache in every offloaded sparse layer (and in the
 *             prediction's own gathers), and every filled slot equal to host memory.
 *   skipMissed predicted layers attend the prefetch only (approximate): it must run; prints its
 *             logits error against the reference and the recall; the last layer's prefetch
 *             (NaN-poisoned first) must hold budget - 1 predicted rows and then the step's own
 *             token (stage_newest), each bit-equal to host memory.
 *   full-kv   every layer's whole K/V copied to the device each step (copy stream, events)
 *             against the dense on-GPU decoder: equal logits.
 * Prints one line per case and a summary line; returns the failures.
 */
import { type Cuda, cuda as openCuda, type Stream } from "../../src/cuda/driver.ts";
import { intFlag, openCommand } from "../../src/cli/front_door.ts";
import { type AttentionInput, defineAttention } from "../../src/dsl/spec.ts";
import { GpuDecoder, type RandomModel } from "../../src/decoding/gpu_decoder.ts";
import {
  type GatherCounts,
  type OffloadOptions,
  predictionRecall,
  rowCacheSlotBytes,
} from "../../src/runtime/offload_plan.ts";
import type { ModelConfig } from "../../src/checkpoint/config.ts";
import { kvHeadOfSelectionHead, kvRowOffset } from "../../src/dsl/layout.ts";
import { Random, relativeError } from "./support.ts";

interface OffloadCase {
  readonly name: string;
  /** The Double Sparsity spec (undefined: dense model, full-KV offload). */
  readonly spec?: AttentionInput;
  readonly heads: readonly [number, number];
  readonly offload: OffloadOptions;
  readonly promptLens: readonly number[];
  /** Row-cache slots per (sequence, layer, kv head): sets offload.rowCacheBytes to buy them. */
  readonly rowCacheSlots?: number;
}

const base = { headDim: 128, kvDtype: "fp16" as const };

const GQA2_HEAD: AttentionInput = {
  ...base,
  numQHeads: 4,
  numKvHeads: 2,
  pageSize: 16,
  labels: { channels: 16, bits: 16 },
  selection: "head",
  budget: { tokens: 16 },
};

const GQA4_GROUP_DENSE0: AttentionInput = {
  ...base,
  numQHeads: 8,
  numKvHeads: 2,
  pageSize: 16,
  labels: { channels: 16, bits: 8 },
  selection: "group",
  budget: { ratio: 1 / 8, min: 16 },
  denseLayers: [0],
};

const OFFLOAD_CASES: readonly OffloadCase[] = [
  {
    name: "gqa2-head-p16-fixed16-noreuse",
    heads: [4, 2],
    spec: GQA2_HEAD,
    offload: { mode: "selected" },
    promptLens: [47, 8, 100],
  },
  {
    name: "gqa2-head-p16-fixed16-reuse",
    heads: [4, 2],
    spec: GQA2_HEAD,
    offload: { mode: "selected", reuse: true },
    promptLens: [47, 8, 100],
  },
  {
    name: "gqa4-group-p16-r16b8-ratio-dense0-reuse",
    heads: [8, 2],
    spec: GQA4_GROUP_DENSE0,
    offload: { mode: "selected", reuse: true },
    promptLens: [300, 31, 513, 12],
  },
  {
    name: "gqa2-head-p16-fixed16-predict",
    heads: [4, 2],
    spec: GQA2_HEAD,
    offload: { mode: "selected", prediction: true },
    promptLens: [47, 8, 100],
  },
  {
    name: "gqa2-head-p16-fixed16-predict-reuse",
    heads: [4, 2],
    spec: GQA2_HEAD,
    offload: { mode: "selected", prediction: true, reuse: true },
    promptLens: [47, 8, 100],
  },
  {
    name: "gqa4-group-p16-r16b8-ratio-dense0-predict",
    heads: [8, 2],
    spec: GQA4_GROUP_DENSE0,
    offload: { mode: "selected", prediction: true },
    promptLens: [300, 31, 513, 12],
  },
  {
    name: "gqa4-group-p16-r16b8-ratio-dense0-predict-reuse",
    heads: [8, 2],
    spec: GQA4_GROUP_DENSE0,
    offload: { mode: "selected", prediction: true, reuse: true },
    promptLens: [300, 31, 513, 12],
  },
  {
    name: "gqa4-group-p16-r16b8-ratio-dense0-predict-half",
    heads: [8, 2],
    spec: GQA4_GROUP_DENSE0,
    offload: { mode: "selected", prediction: true, prefetchFraction: 0.5 },
    promptLens: [300, 31, 513, 12],
  },
  {
    // A prefetch of 3/4 of the budget: its exact gather takes the wide grid (gather_grid.ts).
    name: "gqa4-group-p16-r16b8-ratio-dense0-predict-three-quarters-reuse",
    heads: [8, 2],
    spec: GQA4_GROUP_DENSE0,
    offload: { mode: "selected", prediction: true, reuse: true, prefetchFraction: 0.75 },
    promptLens: [300, 31, 513, 12],
  },
  {
    name: "gqa2-head-p16-fixed16-rowcache7",
    heads: [4, 2],
    spec: GQA2_HEAD,
    offload: { mode: "selected" },
    rowCacheSlots: 7,
    promptLens: [47, 8, 100],
  },
  {
    name: "gqa2-head-p16-fixed16-rowcache7-reuse",
    heads: [4, 2],
    spec: GQA2_HEAD,
    offload: { mode: "selected", reuse: true },
    rowCacheSlots: 7,
    promptLens: [47, 8, 100],
  },
  {
    name: "gqa2-head-p16-fixed16-rowcache-all-predict-reuse",
    heads: [4, 2],
    spec: GQA2_HEAD,
    offload: { mode: "selected", prediction: true, reuse: true },
    rowCacheSlots: 4096,
    promptLens: [47, 8, 100],
  },
  {
    name: "gqa4-group-p16-r16b8-ratio-dense0-rowcache40-predict-half",
    heads: [8, 2],
    spec: GQA4_GROUP_DENSE0,
    offload: { mode: "selected", prediction: true, prefetchFraction: 0.5 },
    rowCacheSlots: 40,
    promptLens: [300, 31, 513, 12],
  },
  {
    name: "gqa2-head-p16-fixed16-predict-skipmissed",
    heads: [4, 2],
    spec: GQA2_HEAD,
    offload: { mode: "selected", prediction: true, skipMissed: true },
    promptLens: [47, 8, 100],
  },
  {
    name: "mha-head-p64-r32b4-fixed24-noreuse",
    heads: [4, 4],
    spec: {
      ...base,
      numQHeads: 4,
      numKvHeads: 4,
      pageSize: 64,
      labels: { channels: 32, bits: 4 },
      selection: "head",
      budget: { tokens: 24 },
    },
    offload: { mode: "selected" },
    promptLens: [130, 64],
  },
  {
    name: "gqa2-dense-full-kv",
    heads: [4, 2],
    offload: { mode: "full-kv" },
    promptLens: [47, 8, 100],
  },
];

const STEPS = 12;
const LAYERS = 3;
/**
 * Both decoders read the same K/V values (staging rows are bit copies of the host rows) in the
 * same order with the same splits, so the logits must be identical; full-KV likewise reads a bit
 * copy of every row. Any difference is a defect.
 */
const LOGIT_TOLERANCE = 0;

function configFor(heads: readonly [number, number]): ModelConfig {
  return {
    modelType: "llama",
    hiddenSize: 256,
    intermediateSize: 512,
    numLayers: LAYERS,
    numHeads: heads[0],
    numKvHeads: heads[1],
    headDim: 128,
    vocabSize: 384,
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    tieWordEmbeddings: false,
    attentionBias: false,
    maxPositionEmbeddings: 4096,
    slidingWindow: null,
  };
}

async function runCase(cuda: Cuda, c: OffloadCase, seed: number): Promise<string[]> {
  const failures: string[] = [];
  const config = configFor(c.heads);
  const model: RandomModel = { config, seed: seed + 11, scale: 0.05 };
  const spec = c.spec ? defineAttention(c.spec) : undefined;
  const maxContext = Math.max(...c.promptLens) + STEPS + 1;
  // The bytes that buy the case's slots (a slot per position at most: maxContext rounded up to
  // whole pages), over the host-placed layers (the spec's dense layers stay on the device).
  const hostLayers = LAYERS - (spec?.denseLayers.length ?? 0);
  const slotBytes = spec
    ? rowCacheSlotBytes(c.promptLens.length, spec.numKvHeads, spec.headDim)
    : 0;
  const slotsWanted = Math.min(
    c.rowCacheSlots ?? 0,
    spec ? Math.ceil(maxContext / spec.pageSize) * spec.pageSize : 0,
  );
  const offload: OffloadOptions = c.rowCacheSlots && spec
    ? {
      ...c.offload,
      rowCacheBytes: slotsWanted * hostLayers * slotBytes,
    }
    : c.offload;
  // skipMissed is approximate: its logits and (unrun) exact selections are not compared.
  const exact = !c.offload.skipMissed;
  const opts = {
    batch: c.promptLens.length,
    maxContext,
    spec,
    channels: spec ? { randomSeed: seed } : undefined,
    keepSelection: !!spec,
    maxPrefillRows: 256,
  };
  using ref = await GpuDecoder.create(cuda, model, { ...opts, sortedSelection: true });
  using off = await GpuDecoder.create(cuda, model, { ...opts, offload });
  off.offload!.poison(off.stream);
  if (off.offload!.rowCacheSlots !== slotsWanted) {
    failures.push(`row cache: ${off.offload!.rowCacheSlots} slots, want ${slotsWanted}`);
  }
  const rng = new Random(seed);
  const prompts = c.promptLens.map((n) =>
    Array.from({ length: n }, () => rng.int(config.vocabSize))
  );
  const refLast = ref.prefill(prompts), offLast = off.prefill(prompts);
  // Prefill does not go through the decode plans: identical even with skipMissed.
  const prefillErr = relativeError(offLast, refLast);
  if (!(prefillErr <= LOGIT_TOLERANCE)) {
    failures.push(`prefill logits relative error ${prefillErr.toExponential(2)}`);
  }
  let worst = prefillErr, sets = 0, setMismatches = 0, selectedRows = 0, tokenDiffs = 0;
  for (let s = 0; s < STEPS; s++) {
    const tokens = c.promptLens.map(() => rng.int(config.vocabSize));
    const a = ref.step(tokens), b = off.step(tokens);
    const err = relativeError(b, a);
    worst = Math.max(worst, err);
    if (exact && !(err <= LOGIT_TOLERANCE)) {
      failures.push(`step ${s}: logits relative error ${err.toExponential(2)}`);
    }
    if (!Number.isFinite(err)) failures.push(`step ${s}: logits not finite`);
    if (!spec || !exact) continue;
    for (let layer = 0; layer < LAYERS; layer++) {
      for (let seq = 0; seq < c.promptLens.length; seq++) {
        const want = ref.lastSelected(seq, layer), got = off.lastSelected(seq, layer);
        if (!want || !got) {
          if (!want !== !got) failures.push(`step ${s} layer ${layer} seq ${seq}: routes differ`);
          continue;
        }
        want.forEach((w, h) => {
          sets++;
          selectedRows += w.length;
          const g = new Set(got[h]);
          const missing = w.filter((t) => !g.has(t)).length;
          if (got[h].length !== w.length || missing > 0) {
            setMismatches++;
            tokenDiffs += missing;
            failures.push(
              `step ${s} layer ${layer} seq ${seq} head ${h}: selection differs ` +
                `(${missing} of ${w.length} tokens missing, ${got[h].length} selected)`,
            );
          }
        });
      }
    }
  }
  if (spec && exact) failures.push(...checkStaging(off, c.promptLens.length));
  if (spec && !exact) failures.push(...checkSkipMissedPrefetch(off, c.promptLens.length));
  if (spec && slotsWanted > 0) failures.push(...checkRowCache(off, c.promptLens.length));
  let counts = "";
  if (spec) {
    const g = off.gatherCounts();
    const sum = (f: (x: GatherCounts) => number) => g.reduce((n, x) => n + f(x), 0);
    const host = sum((x) => x.fromHost), prev = sum((x) => x.fromPrevious);
    const pre = sum((x) => x.fromPrefetch), preHost = sum((x) => x.prefetchFromHost);
    const cached = sum((x) => x.fromCache), preCached = sum((x) => x.prefetchFromCache);
    const predicted = c.offload.prediction ?? false;
    // Every selected row was staged from exactly one place (the spec's dense layers select
    // nothing and stay on the device; every sparse layer is host-placed).
    if (exact && host + prev + pre + cached !== selectedRows) {
      failures.push(
        `gather counters: ${host} host + ${prev} reused + ${pre} prefetched + ${cached} ` +
          `cached != ${selectedRows} selected`,
      );
    }
    // Every offloaded sparse layer has its own cache: each must serve rows.
    const sparseLayers = g.flatMap((_, l) => (spec.denseLayers.includes(l) ? [] : [l]));
    for (const l of slotsWanted > 0 ? sparseLayers : []) {
      if (!(g[l].fromCache > 0)) failures.push(`row cache on, but layer ${l} took no row from it`);
    }
    if (slotsWanted > 0 && predicted && !(preCached > 0)) {
      failures.push("row cache and prediction on, but the prediction's gathers took no cached row");
    }
    if (slotsWanted === 0 && cached + preCached !== 0) {
      failures.push(`row cache off, but ${cached + preCached} rows came from it`);
    }
    // (A row cache of a slot per position holds every row the previous step staged first.)
    if (c.offload.reuse && slotsWanted < maxContext && !(prev > 0)) {
      failures.push("reuse on, but no row came from reuse");
    }
    if (!c.offload.reuse && prev !== 0) failures.push(`reuse off, but ${prev} rows reused`);
    if (predicted && exact && !(pre > 0)) failures.push("prediction on, but nothing prefetched");
    if (predicted && !(preHost > 0)) failures.push("prediction on, but its gathers read nothing");
    if (!predicted && pre + preHost !== 0) failures.push("prediction off, but rows prefetched");
    if (g[0].fromPrefetch !== 0) failures.push("layer 0 has no predecessor, yet prefetched rows");
    counts = exact
      ? `, ${sets} sets (${setMismatches} differ by ${tokenDiffs} tokens), rows: ${host} ` +
        `from host, ${prev} reused, ${pre} prefetched, ${cached} cached`
      : "";
    if (predicted) {
      counts += `; prediction read ${preHost} rows from host` +
        (exact
          ? `, recall per layer ${
            g.map((x, l) => `${l}:${fmtRecall(predictionRecall(x))}`).join(" ")
          }${c.offload.reuse ? " (after reuse)" : ""}`
          : "");
    }
  }
  const m = off.memory;
  console.log(
    `offload ${c.name}: ${failures.length ? "FAIL" : "ok"}, worst logits error ${
      worst.toExponential(2)
    }${counts}; device ${(m.cacheDevice / 2 ** 20).toFixed(1)} MiB cache + ${
      (m.offload / 2 ** 20).toFixed(1)
    } MiB offload, host K/V ${(m.hostKv / 2 ** 20).toFixed(1)} MiB`,
  );
  return failures.map((f) => `${c.name}: ${f}`);
}

function fmtRecall(r: number): string {
  return Number.isNaN(r) ? "-" : `${(100 * r).toFixed(0)}%`;
}

/** A buffer the checks read back (device memory or mapped host memory). */
interface Readable {
  readonly bytes: number;
  download(dst: ArrayBufferView, stream: Stream): void;
}
/** A buffer's contents as 16-bit words (K/V elements), waiting for `stream`. */
function u16s(buf: Readable, stream: Stream): Uint16Array {
  const out = new Uint16Array(buf.bytes / 2);
  buf.download(out, stream);
  return out;
}
/** A buffer's contents as 32-bit integers (tokens, counts, tags). */
function i32s(buf: Readable, stream: Stream): Int32Array {
  const out = new Int32Array(buf.bytes / 4);
  buf.download(out, stream);
  return out;
}

/**
 * `layer`'s host K and V pools, read once, and a test that the headDim elements of k and v at
 * `at` are token t's rows (sequence b, kv head h) there, through the block tables.
 */
function hostRowCheck(
  dec: GpuDecoder,
  layer: number,
): (k: Uint16Array, v: Uint16Array, at: number, b: number, h: number, t: number) => boolean {
  const spec = dec.spec, d = spec.headDim, pools = dec.cache.layers[layer];
  const tables = dec.cache.pages.blockTables, maxPages = dec.cache.maxPagesPerSeq;
  const hk = u16s(pools.k, dec.stream);
  const hv = u16s(pools.v, dec.stream);
  return (k, v, at, b, h, t) => {
    const page = tables[b * maxPages + Math.floor(t / spec.pageSize)];
    const src = kvRowOffset(spec, page, h, t % spec.pageSize);
    for (let e = 0; e < d; e++) {
      if (k[at + e] !== hk[src + e] || v[at + e] !== hv[src + e]) return false;
    }
    return true;
  };
}

/**
 * A staging of host layer `layer` read back once; the returned function counts, for sequence b's
 * selection head h, the rows i whose staged K/V row (row i of that head's list) is not bit-equal to
 * token list[i]'s rows in host memory.
 */
function stagedRowMismatches(
  dec: GpuDecoder,
  layer: number,
  st: { k: Readable; v: Readable },
): (b: number, h: number, list: ArrayLike<number>) => number {
  const spec = dec.spec, SH = spec.numSelectionHeads, d = spec.headDim;
  const k = u16s(st.k, dec.stream), v = u16s(st.v, dec.stream);
  const isHostRow = hostRowCheck(dec, layer);
  return (b, h, list) => {
    const row0 = (b * SH + h) * dec.plan.selStride, kvHead = kvHeadOfSelectionHead(spec, h);
    let bad = 0;
    for (let i = 0; i < list.length; i++) {
      if (!isHostRow(k, v, (row0 + i) * d, b, kvHead, list[i])) bad++;
    }
    return bad;
  };
}

/**
 * The last step's staging of the offloaded sparse layers (each one's with reuse; the shared one,
 * the last layer's, without), row by row, against the host pools:
 * each head's staged list ascending and equal to its selection, each staged K/V row bit-equal to
 * the token's row in host memory (through the block tables).
 */
function checkStaging(dec: GpuDecoder, batch: number): string[] {
  const failures: string[] = [];
  const spec = dec.spec, plan = dec.plan, SH = spec.numSelectionHeads;
  const offloaded = dec.cache.layers.flatMap((layer, l) =>
    layer.placement === "host" && !spec.denseLayers.includes(l) ? [l] : []
  );
  // Without reuse the layers share one staging: it holds the last offloaded layer's rows.
  const checked = dec.offload!.options.reuse ? offloaded : offloaded.slice(-1);
  for (const l of checked) {
    const st = dec.offload!.lastStaging(l);
    const idx = i32s(st.idx, dec.stream);
    const count = i32s(st.count, dec.stream);
    const rowsOffHost = stagedRowMismatches(dec, l, st);
    for (let b = 0; b < batch; b++) {
      const sparse = plan.routes[b] === "sparse";
      if (count[b] !== (sparse ? plan.budgets[b] : 0)) {
        failures.push(
          `layer ${l} seq ${b}: staged count ${count[b]}, want ${sparse ? plan.budgets[b] : 0}`,
        );
      }
      if (!sparse) continue;
      const selected = dec.lastSelected(b, l)!;
      for (let h = 0; h < SH; h++) {
        const row0 = (b * SH + h) * plan.selStride;
        const list = idx.subarray(row0, row0 + count[b]);
        if (list.some((t, i) => t !== selected[h][i])) {
          failures.push(`layer ${l} seq ${b} head ${h}: staged list is not the sorted selection`);
          continue;
        }
        const bad = rowsOffHost(b, h, list);
        if (bad) {
          failures.push(`layer ${l} seq ${b} head ${h}: ${bad} staged rows differ from host`);
        }
      }
    }
  }
  return failures;
}

/**
 * skipMissed: the last layer's prefetch staging, as its attention read it, against the host
 * pools: per sparse sequence a count of the budget, budget - 1 predicted tokens ascending and
 * older than the step's token, then the step's token itself (stage_newest), every row bit-equal to
 * the token's row in host memory (the step's token was appended there before the attention).
 */
function checkSkipMissedPrefetch(dec: GpuDecoder, batch: number): string[] {
  const failures: string[] = [];
  const plan = dec.plan, SH = dec.spec.numSelectionHeads;
  const l = dec.cache.layers.length - 1;
  const st = dec.offload!.prefetchStaging(l);
  const idx = i32s(st.idx, dec.stream), count = i32s(st.count, dec.stream);
  const rowsOffHost = stagedRowMismatches(dec, l, st);
  let sparseSeqs = 0;
  for (let b = 0; b < batch; b++) {
    if (plan.routes[b] !== "sparse") continue;
    sparseSeqs++;
    const budget = plan.budgets[b], newest = dec.cache.pages.seqLens[b] - 1;
    if (count[b] !== budget) {
      failures.push(`skipMissed prefetch seq ${b}: staged count ${count[b]}, want ${budget}`);
      continue;
    }
    for (let h = 0; h < SH; h++) {
      const row0 = (b * SH + h) * plan.selStride;
      const list = Array.from(idx.subarray(row0, row0 + budget));
      const older = list.slice(0, -1);
      if (
        list.at(-1) !== newest ||
        older.some((t, i) => t < 0 || t >= newest || (i > 0 && t <= older[i - 1]))
      ) {
        failures.push(
          `skipMissed prefetch seq ${b} head ${h}: list [${list.slice(-3)}] does not end with ` +
            `the step's token ${newest} after ascending older tokens`,
        );
        continue;
      }
      const bad = rowsOffHost(b, h, list);
      if (bad) {
        failures.push(`skipMissed prefetch seq ${b} head ${h}: ${bad} rows differ from host`);
      }
    }
  }
  if (sparseSeqs === 0) failures.push("skipMissed prefetch: no sequence routed sparse to check");
  return failures;
}

/**
 * Every filled slot of every row cache against the host pools: its tag a token of the sequence
 * that maps to that slot (token % slots), its K and V rows bit-equal to the token's rows in host
 * memory; and no claim left behind. Returns the failures; at least one slot must be filled.
 */
function checkRowCache(dec: GpuDecoder, batch: number): string[] {
  const failures: string[] = [];
  const d = dec.spec.headDim, Hkv = dec.spec.numKvHeads;
  let filled = 0;
  dec.cache.layers.forEach((_, l) => {
    const rc = dec.offload!.rowCache(l);
    if (!rc) return;
    const slots = rc.slots;
    const tags = i32s(rc.tags, dec.stream);
    const claims = i32s(rc.claims, dec.stream);
    const k = u16s(rc.k, dec.stream);
    const v = u16s(rc.v, dec.stream);
    const isHostRow = hostRowCheck(dec, l);
    const unclaimed = claims.filter((x) => x !== -1).length;
    if (unclaimed) failures.push(`layer ${l}: ${unclaimed} row-cache claims left after the step`);
    let bad = 0, misplaced = 0;
    for (let b = 0; b < batch; b++) {
      const len = dec.cache.pages.seqLens[b];
      for (let h = 0; h < Hkv; h++) {
        for (let slot = 0; slot < slots; slot++) {
          const at = (b * Hkv + h) * slots + slot, t = tags[at];
          if (t === -1) continue;
          filled++;
          if (t < 0 || t >= len || t % slots !== slot) misplaced++;
          else if (!isHostRow(k, v, at * d, b, h, t)) bad++;
        }
      }
    }
    if (misplaced) failures.push(`layer ${l}: ${misplaced} row-cache tags out of place`);
    if (bad) failures.push(`layer ${l}: ${bad} cached rows differ from host`);
  });
  if (filled === 0) failures.push("row cache: no slot filled");
  return failures;
}

/** Runs the cases whose names contain `only` (all by default); returns the failures. */
export async function runOffloadChecks(cuda: Cuda, seed: number, only = ""): Promise<string[]> {
  const failures: string[] = [];
  const cases = OFFLOAD_CASES.filter((c) => c.name.includes(only));
  if (cases.length === 0) {
    return [`--case ${JSON.stringify(only)}: no case name contains it`];
  }
  for (const c of cases) {
    try {
      failures.push(...await runCase(cuda, c, seed));
    } catch (e) {
      failures.push(`${c.name}: threw: ${e instanceof Error ? e.stack ?? e.message : e}`);
    }
  }
  console.log(
    `offload summary: ${
      cases.length - new Set(failures.map((f) => f.split(":")[0])).size
    }/${cases.length} cases passed on ${cuda.info.name}`,
  );
  return failures;
}

if (import.meta.main) {
  const { values } = openCommand({
    name: "tests/gpu/offload.ts",
    usage: `deno run -A tests/gpu/offload.ts [--seed N] [--case TEXT]
  --seed N     an integer >= 0 (default: from the clock, printed)
  --case TEXT  only the cases whose names contain TEXT (e.g. rowcache, for sanitizer runs)`,
    options: { seed: { type: "string" }, case: { type: "string", default: "" } },
  });
  const seed = values.seed === undefined
    ? Date.now() % 100000
    : intFlag("seed", values.seed, { min: 0 });
  console.log(`seed ${seed}`);
  const failures = await runOffloadChecks(openCuda(), seed, values.case);
  for (const f of failures) console.log(`  ${f}`);
  Deno.exit(failures.length ? 1 : 0);
}
