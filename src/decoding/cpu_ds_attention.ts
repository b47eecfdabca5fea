/**
 * Double Sparsity attention for the CPU decoder (one sequence), built on the reference paged
 * cache and reference decode step (src/reference/), so a CPU run mirrors what the GPU kernels
 * compute:
 *
 *  - every layer that is not in `spec.denseLayers` keeps a CpuPagedCache (all of them share one
 *    PageTable, as the GPU caches share one block table); K and V rows are stored in the spec's KV
 *    dtype and the label rows are derived from K exactly as the append kernel does;
 *  - the query is rounded to the KV dtype before scoring and attention (the GPU holds q in it);
 *  - each step runs `doubleSparsityDecode`: label scores, top-k, exact softmax over the selected
 *    tokens, or the dense route while the budget still covers the whole context;
 *  - dense layers, and every layer while `prefill` is set, use `DenseAttention` on the float32
 *    rows the decoder passes: exactly the dense baseline (the GPU prefill is dense too).
 *
 * Rows reach the paged caches lazily: a layer writes every row it has not stored yet when it
 * next attends sparsely, so a dense prefill costs nothing extra. A call whose length is not past
 * the rows this layer stored (or is short of another layer's) means the decoder started a new
 * sequence: the caches are emptied, so `reset()` is optional.
 */
import { type AttentionSpec, checkDenseLayers } from "../dsl/spec.ts";
import { defaultScale, doubleSparsityDecode } from "../reference/attention.ts";
import { decodeArray, encodeArray } from "../util/dtype.ts";
import { PageTable } from "../util/page_table.ts";
import { CpuPagedCache } from "../reference/paged_cache.ts";
import { queryHeadsOfSelectionHead } from "../dsl/layout.ts";
import { assertWithinSlidingWindow, type ModelConfig } from "../checkpoint/config.ts";
import { type CpuAttention, DenseAttention } from "./cpu_decoder.ts";

export interface CpuDoubleSparsityOptions {
  /**
   * Also measure, at every sparse step, the share of the dense softmax mass that the selected
   * tokens hold (per query head; what GpuDecoder's measureRecall reports). Costs a dense pass.
   */
  readonly measureRecall?: boolean;
}

/** How the last call of each layer was computed. */
export type LayerRoute = "dense-layer" | "prefill" | "dense" | "sparse";

export class CpuDoubleSparsityAttention implements CpuAttention {
  readonly pages: PageTable;
  /** One paged cache per layer; undefined for the spec's dense layers. */
  readonly caches: readonly (CpuPagedCache | undefined)[];
  /** While true, every layer attends densely (a dense prefill); rows are stored later. */
  prefill = false;
  /** Route of the most recent call of each layer. */
  readonly lastRoutes: LayerRoute[];
  /**
   * Tokens the most recent call of each layer attended to, per selection head (ascending);
   * undefined where that call was dense (dense layer or prefill). For showing where the
   * selection went (which positions a decode step read).
   */
  readonly lastSelected: (Int32Array[] | undefined)[];
  readonly #dense = new DenseAttention();
  readonly #written: Int32Array;
  readonly #recallSum: Float64Array;
  readonly #recallCount: Float64Array;
  readonly #measureRecall: boolean;

  constructor(
    readonly spec: AttentionSpec,
    /** Label channels of each layer, [numLabelHeads * labelChannels] (labelChannelsFor). */
    channelsPerLayer: readonly Int32Array[],
    /** Longest context (tokens) the sequence may reach. */
    readonly maxContext: number,
    options: CpuDoubleSparsityOptions = {},
  ) {
    if (!Number.isInteger(maxContext) || maxContext < 1) {
      throw new RangeError(`CpuDoubleSparsityAttention: maxContext ${maxContext} must be >= 1`);
    }
    const numLayers = channelsPerLayer.length;
    checkDenseLayers(spec, numLayers, "CpuDoubleSparsityAttention");
    const maxPages = Math.ceil(maxContext / spec.pageSize);
    this.pages = new PageTable(1, maxPages, spec.pageSize, maxPages);
    this.caches = channelsPerLayer.map((channels, layer) =>
      spec.denseLayers.includes(layer)
        ? undefined
        : new CpuPagedCache(spec, channels, 1, maxPages, maxPages, this.pages)
    );
    this.lastRoutes = Array(numLayers).fill("dense");
    this.lastSelected = Array(numLayers).fill(undefined);
    this.#written = new Int32Array(numLayers);
    this.#recallSum = new Float64Array(numLayers);
    this.#recallCount = new Float64Array(numLayers);
    this.#measureRecall = options.measureRecall ?? false;
  }

  get numLayers(): number {
    return this.caches.length;
  }

  /** Empties the caches: the next call starts a new sequence at position 0. Keeps recall sums. */
  reset(): void {
    this.pages.release(0);
    this.#written.fill(0);
  }

  /** Per layer, the mean recall over every sparse step and query head so far (1 if none). */
  recallPerLayer(): number[] {
    return Array.from(
      this.#recallSum,
      (sum, l) => (this.#recallCount[l] > 0 ? sum / this.#recallCount[l] : 1),
    );
  }

  /** Per layer, how many (step, query head) pairs the recall mean covers. */
  recallCounts(): number[] {
    return Array.from(this.#recallCount);
  }

  resetRecall(): void {
    this.#recallSum.fill(0);
    this.#recallCount.fill(0);
  }

  attend(
    layer: number,
    q: Float32Array,
    keys: Float32Array,
    values: Float32Array,
    len: number,
    config: ModelConfig,
  ): Float32Array {
    this.#checkShape(config);
    const cache = this.caches[layer];
    if (cache === undefined) {
      this.lastRoutes[layer] = "dense-layer";
      this.lastSelected[layer] = undefined;
      return this.#dense.attend(layer, q, keys, values, len, config);
    }
    // A length not past what this layer stored, or short of what another layer stored: the
    // decoder began a new sequence.
    if (len <= this.#written[layer] || this.pages.seqLens[0] > len) this.reset();
    if (this.prefill) {
      this.lastRoutes[layer] = "prefill";
      this.lastSelected[layer] = undefined;
      return this.#dense.attend(layer, q, keys, values, len, config);
    }
    // The sparse route sees every stored token: it cannot apply a sliding window.
    assertWithinSlidingWindow(config, len, "CpuDoubleSparsityAttention");
    this.#store(layer, cache, keys, values, len);

    const s = this.spec;
    const qRounded = decodeArray(s.kvDtype, encodeArray(s.kvDtype, q));
    const result = doubleSparsityDecode(cache, 0, qRounded);
    this.lastRoutes[layer] = result.route;
    this.lastSelected[layer] = result.selected;
    if (this.#measureRecall && result.route === "sparse") {
      this.#addRecall(layer, cache, qRounded, result.selected);
    }
    return Float32Array.from(result.out);
  }

  /** Writes rows [written, len) of this layer into its paged cache (KV dtype + labels). */
  #store(
    layer: number,
    cache: CpuPagedCache,
    keys: Float32Array,
    values: Float32Array,
    len: number,
  ): void {
    if (len > this.maxContext) {
      throw new RangeError(
        `CpuDoubleSparsityAttention: context of ${len} tokens exceeds maxContext ${this.maxContext}`,
      );
    }
    const have = this.pages.seqLens[0];
    if (have < len) this.pages.grow(0, len - have);
    const row = this.spec.numKvHeads * this.spec.headDim;
    const dtype = this.spec.kvDtype;
    for (let t = this.#written[layer]; t < len; t++) {
      const kBits = encodeArray(dtype, keys.subarray(t * row, (t + 1) * row));
      const vBits = encodeArray(dtype, values.subarray(t * row, (t + 1) * row));
      cache.writeToken(0, t, kBits, vBits);
    }
    this.#written[layer] = len;
  }

  /** Adds, per query head, softmax mass of the selected tokens / mass of all tokens. */
  #addRecall(
    layer: number,
    cache: CpuPagedCache,
    q: Float32Array,
    selected: Int32Array[],
  ): void {
    const s = this.spec;
    const d = s.headDim;
    const len = this.pages.seqLens[0];
    const scale = defaultScale(d);
    for (let sh = 0; sh < s.numSelectionHeads; sh++) {
      const chosen = new Uint8Array(len);
      for (const t of selected[sh]) chosen[t] = 1;
      for (const h of queryHeadsOfSelectionHead(s, sh)) {
        const kvh = Math.floor(h / s.groupSize);
        const logits = new Float64Array(len);
        let max = -Infinity;
        for (let t = 0; t < len; t++) {
          const k = cache.row("k", 0, t, kvh);
          let dot = 0;
          for (let c = 0; c < d; c++) dot += q[h * d + c] * k[c];
          logits[t] = dot * scale;
          if (logits[t] > max) max = logits[t];
        }
        let all = 0, kept = 0;
        for (let t = 0; t < len; t++) {
          const p = Math.exp(logits[t] - max);
          all += p;
          if (chosen[t]) kept += p;
        }
        this.#recallSum[layer] += kept / all;
        this.#recallCount[layer]++;
      }
    }
  }

  #checkShape(config: ModelConfig): void {
    const s = this.spec;
    if (
      config.headDim !== s.headDim || config.numHeads !== s.numQHeads ||
      config.numKvHeads !== s.numKvHeads || config.numLayers !== this.numLayers
    ) {
      throw new Error(
        `CpuDoubleSparsityAttention: spec ${s.variant} with ${this.numLayers} layers of channels ` +
          `does not fit the model (d=${config.headDim}, ${config.numHeads}/${config.numKvHeads} ` +
          `heads, ${config.numLayers} layers)`,
      );
    }
  }
}
