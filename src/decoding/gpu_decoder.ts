/**
 * The decoder on the GPU: every layer runs there. Projections through cuBLAS (fp16/bf16 operands,
 * fp32 accumulation and outputs, o_proj and down_proj accumulating straight into the fp32
 * residual stream), or, with `gemm: "builtin"` (or DS_GEMM=builtin), through the model family's
 * own `linear` kernel and no cuBLAS handle at all (for compute-sanitizer runs); embedding, RMSNorm, RoPE and SwiGLU from the model kernel family
 * (templates/model.cu.hbs, src/codegen/families.ts); attention from the generated variant:
 * prefill through its tensor-core `prefill` kernel over the paged cache, chunk by chunk, and
 * decode through the Double Sparsity kernels (dense layers and dense mode use its dense kernel).
 * Once shapes are fixed, a whole decode step (all layers, logits copied to pinned memory) is
 * captured as one CUDA graph and replayed. `stepChoose` also chooses the next tokens on the device
 * (kernel `choose_tokens`, the rule of `chooseToken` in sampling.ts) and copies back only their
 * ids; its per-step temperatures, top-p values and uniforms go through pinned step inputs, so
 * greedy and sampled steps replay the same graph.
 *
 * Device memory: weights + the paged caches + a workspace fixed by the chunk size and the batch
 * (`workspaceBytes` in gpu_decoder_layout.ts); nothing grows with the prompt.
 */
import { type AttentionSpec, checkDenseLayers } from "../dsl/spec.ts";
import { labelHeadOfQueryHead } from "../dsl/layout.ts";
import { renderFamilySource } from "../codegen/render.ts";
import {
  MODEL_KERNELS,
  MODEL_ROW_THREADS,
  PREDICT_QUERY_ITEMS,
  rowChunks,
} from "../codegen/families.ts";
import { Cublas, type GemmDtype } from "../cuda/cublas.ts";
import type { Cuda, DeviceBuffer, GraphExec, HostBuffer, Stream } from "../cuda/driver.ts";
import { PagedKvCache } from "../runtime/caches.ts";
import { DecodePlan } from "../runtime/decode_plan.ts";
import {
  checkOffloadOptions,
  type GatherCounts,
  type OffloadOptions,
  OffloadPlan,
} from "../runtime/offload_plan.ts";
import { FamilyModule } from "../runtime/family_module.ts";
import { chooseGemm, type GemmBackend } from "../runtime/gemm_choice.ts";
import { PrefillPlan } from "../runtime/prefill_plan.ts";
import { prefillChunks, type PrefillSegment } from "../runtime/prefill_tiles.ts";
import { Variant } from "../runtime/variant.ts";
import { medianEventMs } from "../runtime/timing.ts";
import { CHANNEL_KINDS, type ChannelKind } from "../quality/channel_config.ts";
import { type ChannelSource, labelChannelsFor } from "../quality/channels.ts";
import { assertWithinSlidingWindow, type ModelConfig } from "../checkpoint/config.ts";
import { ropeTables } from "../checkpoint/rope.ts";
import type { LoadedModel } from "../checkpoint/weights.ts";
import { DeviceWeights, type RandomModel } from "./gpu_weights.ts";
import {
  CUBLAS_WORKSPACE_BYTES,
  DEFAULT_PREFILL_ROWS,
  denseSpecFor,
  fitsDecodeGemm,
  gemmGrid,
  offloadPlacement,
} from "./gpu_decoder_layout.ts";
import { ArgumentError } from "../util/errors.ts";
import { checkTemperature, checkTopP, type SamplingOptions } from "./sampling.ts";

export type { RandomModel } from "./gpu_weights.ts";

export interface GpuDecoderOptions {
  /** Sequences decoded together. */
  readonly batch: number;
  /** Longest context (prompt + generated) any sequence reaches. */
  readonly maxContext: number;
  /** Double Sparsity variant (its denseLayers stay dense), or undefined for dense attention. */
  readonly spec?: AttentionSpec;
  /** Where label channels come from (required with a spec). */
  readonly channels?: ChannelSource;
  /** Accumulate the q/k/qk calibration statistics of every decode step. */
  readonly collectStats?: boolean;
  /**
   * Also run dense attention beside the sparse one at every Double Sparsity layer and keep both
   * log-sum-exps, so `lastRecall()` gives the share of the dense softmax mass that the selected
   * tokens hold (costs a dense pass; for evaluation).
   */
  readonly measureRecall?: boolean;
  /**
   * Keep every sparse layer's selected tokens of the last step (a device-to-device copy per layer
   * inside the step), for `lastSelected` (demos and analysis; costs one copy per layer).
   */
  readonly keepSelection?: boolean;
  /**
   * Sparse attention reads each selection in ascending token order (one small sort kernel per
   * sparse layer; see PlanOptions.sortedSelection): outputs independent of the top-k kernels'
   * atomic order. Always on with offload mode "selected", whose outputs it then equals exactly.
   */
  readonly sortedSelection?: boolean;
  /**
   * Keep K/V in pinned host memory (Double Sparsity-Offload, docs/offload.md): mode "selected"
   * moves only the rows top-k selects over PCIe (needs a spec; its dense layers keep K/V on the
   * device), mode "full-kv" copies every layer's whole K/V before use (the baseline).
   */
  readonly offload?: OffloadOptions;
  /**
   * An existing paged cache to decode in (not owned: the caller disposes it, and may hand it to
   * several decoders in turn, e.g. a benchmark reusing 70 GB of pinned K/V across methods). Its
   * spec, sequence count and layer count must match; its placement decides what is offloaded.
   */
  readonly cache?: PagedKvCache;
  /** Prompt rows one prefill chunk carries (all sequences together; default 4096). */
  readonly maxPrefillRows?: number;
  readonly dtype?: "fp16" | "bf16";
  /**
   * The projections' GEMM: "cublas" (the default) or "builtin", the model family's own kernels
   * (the decode GEMM for steps of at most 16 rows, the plain one for prefill), with which the
   * decoder creates no cuBLAS handle (a sanitizer run then sees only this project's kernels).
   * Unset: the environment variable DS_GEMM, else "cublas".
   */
  readonly gemm?: GemmBackend;
}

/**
 * How `stepChoose` picks each sequence's next token: temperature 0 (the default) is greedy;
 * otherwise temperature + top-p with one uniform number in [0, 1) per sequence from the caller's
 * seeded generator (so runs repeat), as `chooseToken` in sampling.ts defines it.
 */
export interface TokenChoice extends SamplingOptions {
  /** [batch] uniforms in [0, 1); required when the temperature is above 0. */
  readonly uniforms?: ArrayLike<number>;
}

/** Progress of a prefill: prompt tokens done of the total, after each chunk. */
export interface PrefillProgress {
  readonly done: number;
  readonly total: number;
}

export class GpuDecoder implements Disposable {
  readonly config: ModelConfig;
  readonly spec: AttentionSpec;
  readonly dense: boolean;
  readonly variant: Variant;
  readonly cache: PagedKvCache;
  readonly plan: DecodePlan;
  /** The offloaded layers' launches (null without options.offload). */
  readonly offload: OffloadPlan | null;
  readonly prefillPlan: PrefillPlan;
  readonly stream: Stream;
  readonly weights: DeviceWeights;
  /** The projections' GEMM (see GpuDecoderOptions.gemm). */
  readonly gemm: GemmBackend;
  readonly #cuda: Cuda;
  /** The cuBLAS handle; null with the builtin GEMM. */
  readonly #blas: Cublas | null;
  readonly #gemmType: GemmDtype;
  readonly #owned: Disposable[] = [];
  readonly #kernels: FamilyModule<typeof MODEL_KERNELS>;
  readonly #invFreq: DeviceBuffer;
  readonly #attentionFactor: number;
  // Activations for up to `rows` rows (decode: batch; prefill: maxPrefillRows).
  readonly #rows: number;
  readonly #h: DeviceBuffer;
  readonly #x: DeviceBuffer;
  readonly #qkv: DeviceBuffer;
  readonly #q: DeviceBuffer;
  readonly #k: DeviceBuffer;
  readonly #v: DeviceBuffer;
  readonly #attn: DeviceBuffer;
  /**
   * Offload prediction: approximate queries of the predicted layers, two used by layer parity
   * (the side stream reads layer l+1's while layer l+1 writes layer l+2's); null without it.
   */
  readonly #qPredicted: [DeviceBuffer, DeviceBuffer] | null;
  /** [numHeads] the label head each query head is read at (the prediction's query channels). */
  readonly #labelHeadOfQ: DeviceBuffer | null;
  readonly #gu: DeviceBuffer;
  readonly #act: DeviceBuffer;
  readonly #tokens: DeviceBuffer;
  readonly #rowSeq: DeviceBuffer;
  readonly #rowPos: DeviceBuffer;
  /** Last rows of the prompts finished by a prefill chunk: their indices and hidden states. */
  readonly #lastRows: DeviceBuffer;
  readonly #lastHidden: DeviceBuffer;
  readonly #logits: DeviceBuffer;
  readonly #hostTokens: HostBuffer;
  readonly #hostLogits: HostBuffer;
  /** Token choice: [temperature | top-p | uniform][batch] floats, scratch, and the chosen ids. */
  readonly #choiceInputs: DeviceBuffer;
  readonly #hostChoiceInputs: HostBuffer;
  readonly #probs: DeviceBuffer;
  readonly #chosen: DeviceBuffer;
  readonly #hostChosen: HostBuffer;
  readonly #stats: Record<ChannelKind, DeviceBuffer> | null;
  /** [layer][sparse, dense][batch][Hq] log2-sum-exp2, when measuring recall. */
  readonly #lse: DeviceBuffer | null;
  /** [layer] copies of the decode plan's selected-token lists, when keeping the selection. */
  readonly #selections: DeviceBuffer[] | null;
  readonly #hostLse: HostBuffer | null;
  /** One captured step per route signature (which kernels the step launches). */
  readonly #graphs = new Map<string, GraphExec>();
  /** Decode steps run so far. */
  steps = 0;

  private constructor(
    cuda: Cuda,
    model: LoadedModel | RandomModel,
    opts: GpuDecoderOptions,
    variant: Variant,
    kernels: FamilyModule<typeof MODEL_KERNELS>,
    gemm: GemmBackend,
  ) {
    this.#cuda = cuda;
    this.gemm = gemm;
    const c = (this.config = model.config);
    const dtype = opts.dtype ?? opts.spec?.kvDtype ?? "fp16";
    this.dense = !opts.spec;
    this.spec = opts.spec ?? denseSpecFor(c, dtype);
    this.variant = variant;
    this.#kernels = kernels;
    this.#gemmType = dtype === "fp16" ? "F16" : "BF16";
    const own = <T extends Disposable>(x: T): T => (this.#owned.push(x), x);
    try {
      this.stream = own(cuda.stream());
      variant.bindStream(this.stream);
      kernels.bindStream(this.stream);
      if (gemm === "cublas") {
        const ws = own(cuda.alloc(CUBLAS_WORKSPACE_BYTES));
        this.#blas = own(new Cublas(this.stream, { ptr: ws.ptr, bytes: ws.bytes }));
      } else {
        this.#blas = null;
      }
      this.weights = own(new DeviceWeights(cuda, model, dtype, this.stream));
      // RoPE with the checkpoint's scaling (llama3, yarn, linear), computed once in TypeScript.
      const rope = ropeTables(c);
      const inv = Float32Array.from(rope.invFreq);
      this.#invFreq = own(cuda.alloc(inv.byteLength));
      this.#invFreq.upload(inv, this.stream);
      this.#attentionFactor = rope.attentionFactor;

      this.cache = opts.cache ?? own(
        new PagedKvCache(cuda, this.spec, {
          numLayers: c.numLayers,
          numSeqs: opts.batch,
          maxContext: opts.maxContext,
          kvPlacement: opts.offload ? offloadPlacement(opts.offload, this.spec, c) : undefined,
        }),
      );
      if (!this.dense) {
        if (!opts.channels) {
          throw new ArgumentError(
            "GpuDecoder.create",
            "options.channels",
            opts.channels,
            "label channels (a channel config or { randomSeed }) for a Double Sparsity spec",
          );
        }
        this.cache.layers.forEach((l, i) =>
          l.setChannels(labelChannelsFor(this.spec, opts.channels!, i), this.stream)
        );
      } else {
        // The stand-in spec's labels are written but never read; any valid channels do.
        const ch = new Int32Array(this.spec.numLabelHeads * this.spec.labelChannels).map((
          _,
          i,
        ) => i % this.spec.labelChannels);
        for (const l of this.cache.layers) l.setChannels(ch, this.stream);
      }
      this.plan = own(
        new DecodePlan(cuda, variant, this.cache, this.stream, {
          sortedSelection: (opts.sortedSelection ?? false) || opts.offload?.mode === "selected",
        }),
      );
      this.offload = opts.offload
        ? own(new OffloadPlan(cuda, this.plan, opts.offload, this.stream))
        : null;

      const rows = (this.#rows = Math.max(opts.batch, opts.maxPrefillRows ?? DEFAULT_PREFILL_ROWS));
      this.prefillPlan = own(new PrefillPlan(cuda, variant, this.cache, rows));
      const qkvWidth = (c.numHeads + 2 * c.numKvHeads) * c.headDim;
      const bytes = (n: number) => own(cuda.alloc(n));
      this.#h = bytes(rows * c.hiddenSize * 4);
      this.#x = bytes(rows * Math.max(c.hiddenSize, c.intermediateSize) * 2);
      this.#qkv = bytes(rows * qkvWidth * 4);
      this.#q = bytes(rows * c.numHeads * c.headDim * 2);
      this.#k = bytes(rows * c.numKvHeads * c.headDim * 2);
      this.#v = bytes(rows * c.numKvHeads * c.headDim * 2);
      this.#attn = bytes(rows * c.numHeads * c.headDim * 2);
      this.#qPredicted = opts.offload?.prediction
        ? [0, 1].map(() => bytes(opts.batch * c.numHeads * c.headDim * 2)) as [
          DeviceBuffer,
          DeviceBuffer,
        ]
        : null;
      this.#labelHeadOfQ = opts.offload?.prediction ? bytes(c.numHeads * 4) : null;
      this.#labelHeadOfQ?.upload(
        Int32Array.from({ length: c.numHeads }, (_, h) => labelHeadOfQueryHead(this.spec, h)),
        this.stream,
      );
      this.#gu = bytes(rows * 2 * c.intermediateSize * 4);
      this.#act = bytes(rows * c.intermediateSize * 2);
      this.#tokens = bytes(rows * 4);
      this.#rowSeq = bytes(rows * 4);
      this.#rowPos = bytes(rows * 4);
      this.#lastRows = bytes(opts.batch * 4);
      this.#lastHidden = bytes(opts.batch * c.hiddenSize * 4);
      this.#logits = bytes(opts.batch * c.vocabSize * 4);
      this.#hostTokens = own(cuda.allocHost(opts.batch * 4));
      this.#hostLogits = own(cuda.allocHost(opts.batch * c.vocabSize * 4));
      this.#choiceInputs = bytes(3 * opts.batch * 4);
      this.#hostChoiceInputs = own(cuda.allocHost(3 * opts.batch * 4));
      this.#probs = bytes(opts.batch * c.vocabSize * 4);
      this.#chosen = bytes(opts.batch * 4);
      this.#hostChosen = own(cuda.allocHost(opts.batch * 4));
      this.#stats = opts.collectStats
        ? {
          q: bytes(2 * c.numLayers * c.numHeads * c.headDim * 4),
          k: bytes(2 * c.numLayers * c.numKvHeads * c.headDim * 4),
          qk: bytes(2 * c.numLayers * c.numHeads * c.headDim * 4),
        }
        : null;
      if (this.#stats) { for (const b of Object.values(this.#stats)) b.fill8(0, this.stream); }
      const lseFloats = c.numLayers * 2 * opts.batch * c.numHeads;
      this.#lse = opts.measureRecall ? bytes(lseFloats * 4) : null;
      const selBytes = this.plan.workspace.selIdx.bytes;
      this.#selections = opts.keepSelection && !this.dense
        ? Array.from({ length: c.numLayers }, () => bytes(selBytes))
        : null;
      this.#hostLse = opts.measureRecall ? own(cuda.allocHost(lseFloats * 4)) : null;
      this.stream.synchronize();
    } catch (e) {
      this.dispose();
      throw e;
    }
  }

  static async create(
    cuda: Cuda,
    model: LoadedModel | RandomModel,
    opts: GpuDecoderOptions,
  ): Promise<GpuDecoder> {
    const c = model.config;
    const gemm = chooseGemm(opts.gemm, "GpuDecoder.create");
    const spec = opts.spec ?? denseSpecFor(c, opts.dtype);
    if (opts.dtype !== undefined && opts.dtype !== spec.kvDtype) {
      // The weights are stored in options.dtype and the model kernels read the spec's dtype.
      throw new ArgumentError(
        "GpuDecoder.create",
        "options.dtype",
        opts.dtype,
        `the spec's kvDtype "${spec.kvDtype}" (or unset)`,
      );
    }
    if (
      spec.headDim !== c.headDim || spec.numQHeads !== c.numHeads ||
      spec.numKvHeads !== c.numKvHeads
    ) {
      throw new ArgumentError(
        "GpuDecoder.create",
        "options.spec",
        `${spec.variant} (d=${spec.headDim}, ${spec.numQHeads}/${spec.numKvHeads} heads)`,
        `a spec of the model's shape: d=${c.headDim}, ${c.numHeads}/${c.numKvHeads} heads`,
      );
    }
    // The GPU kernels attend to every cached token: a context that could pass a sliding window
    // is refused here rather than computed differently from the checkpoint.
    assertWithinSlidingWindow(c, opts.maxContext, "GpuDecoder");
    checkDenseLayers(spec, c.numLayers, "GpuDecoder.create");
    const given = opts.cache;
    if (
      given && (given.spec.variant !== spec.variant || given.pages.numSeqs !== opts.batch ||
        given.layers.length !== c.numLayers || given.pages.maxTokensPerSeq < opts.maxContext)
    ) {
      throw new ArgumentError(
        "GpuDecoder.create",
        "cache",
        `${given.spec.variant}, ${given.pages.numSeqs} sequences, ${given.layers.length} layers, ` +
          `${given.pages.maxTokensPerSeq} tokens`,
        `${spec.variant}, ${opts.batch} sequences, ${c.numLayers} layers, >= ${opts.maxContext}`,
      );
    }
    if (opts.offload) {
      checkOffloadOptions(opts.offload, "GpuDecoder.create");
      if (opts.offload.mode === "selected" && !opts.spec) {
        throw new ArgumentError(
          "GpuDecoder.create",
          "offload.mode",
          "selected",
          'a Double Sparsity spec (options.spec), or mode "full-kv" for dense attention',
        );
      }
    }
    const variant = await Variant.load(cuda, spec);
    const { source } = renderFamilySource("model", spec.kvDtype, {
      hidden: c.hiddenSize,
      headDim: c.headDim,
      numQHeads: c.numHeads,
      numKvHeads: c.numKvHeads,
      intermediate: c.intermediateSize,
      rowThreads: MODEL_ROW_THREADS,
    });
    let kernels: FamilyModule<typeof MODEL_KERNELS> | undefined;
    try {
      kernels = new FamilyModule(cuda, MODEL_KERNELS, source, "model.cu", spec.kvDtype);
      const dec = new GpuDecoder(cuda, model, opts, variant, kernels, gemm);
      dec.#owned.push(kernels, variant);
      return dec;
    } catch (e) {
      kernels?.[Symbol.dispose]();
      variant.dispose();
      throw e;
    }
  }

  get batch(): number {
    return this.plan.batch;
  }

  /** Decode-step graphs captured so far (one per route signature and step ending). */
  get capturedGraphs(): number {
    return this.#graphs.size;
  }

  /** Device addresses of the query and attention-output rows (benchmarks time kernels on them). */
  get activations(): { readonly q: bigint; readonly attn: bigint } {
    return { q: this.#q.ptr, attn: this.#attn.ptr };
  }

  // ---- one layer's pieces ----

  #rmsnorm(src: DeviceBuffer, rows: number, w: DeviceBuffer): void {
    this.#kernels.launch("rmsnorm", [rows, 1, 1], {
      h: src.ptr,
      w: w.ptr,
      eps: this.config.rmsNormEps,
      x: this.#x.ptr,
    });
  }

  #linear(
    y: DeviceBuffer,
    x: DeviceBuffer,
    w: DeviceBuffer,
    m: number,
    n: number,
    k: number,
    accumulate = false,
  ): void {
    if (this.#blas) {
      this.#blas.linear(y.ptr, "F32", x.ptr, w.ptr, this.#gemmType, m, n, k, accumulate);
      return;
    }
    if (m === 0 || n === 0) return; // nothing to compute (cuBLAS launches nothing either)
    // The family's kernels read x and w in its dtype, the one the weights are stored in (create
    // refuses a dtype other than the spec's). Steps take the decode GEMM (measured 0.97x of
    // cuBLAS over Llama-3-8B's projections at batch 1-8, so it is not the default: perf-notes).
    const kernel = fitsDecodeGemm(m, k, x.ptr, w.ptr) ? "decode_linear" : "linear";
    this.#kernels.launch(kernel, gemmGrid(kernel, m, n), {
      x: x.ptr,
      w: w.ptr,
      y: y.ptr,
      m,
      n,
      k,
      accumulate: accumulate ? 1 : 0,
    });
  }

  /** Everything of one layer before attention: norm, QKV, RoPE (positions from `rowPos`). */
  #preAttention(layer: number, rows: number, rowPos: bigint): void {
    const c = this.config, L = this.weights.layers[layer];
    this.#rmsnorm(this.#h, rows, L.inputNorm);
    this.#linear(
      this.#qkv,
      this.#x,
      L.qkv,
      rows,
      (c.numHeads + 2 * c.numKvHeads) * c.headDim,
      c.hiddenSize,
    );
    this.#kernels.launch("rope", [
      rows,
      rowChunks((c.numHeads + c.numKvHeads) * (c.headDim / 2) + c.numKvHeads * c.headDim),
      1,
    ], {
      qkv: this.#qkv.ptr,
      bias: L.qkvBias?.ptr ?? 0n,
      positions: rowPos,
      invFreq: this.#invFreq.ptr,
      attentionFactor: this.#attentionFactor,
      q: this.#q.ptr,
      k: this.#k.ptr,
      v: this.#v.ptr,
    });
  }

  /**
   * Offload's next-layer prediction, recorded at layer `layer - 1` before its attention: the
   * approximate query of `layer` from the residual stream as it is (layer `layer - 1`'s input):
   * `layer`'s input RMSNorm, then `predict_query`: the Q rows of its fused QKV weight and RoPE at
   * the step's positions, computed at the layer's label channels only (the prediction reads no
   * other channel; a quarter of the Q rows at r 16, d 128). Writes #x (free until the next norm)
   * and returns the query buffer.
   */
  #predictQuery(layer: number): bigint {
    const c = this.config, L = this.weights.layers[layer], B = this.batch;
    const q = this.#qPredicted![layer % 2];
    const labelChannels = this.spec.labelChannels;
    this.#rmsnorm(this.#h, B, L.inputNorm);
    const blocks = Math.ceil(c.numHeads * labelChannels / PREDICT_QUERY_ITEMS);
    this.#kernels.launch("predict_query", [blocks, 1, 1], {
      x: this.#x.ptr,
      rows: B,
      wQ: L.qkv.ptr,
      bias: L.qkvBias?.ptr ?? 0n,
      positions: this.plan.buffers.rowPos,
      invFreq: this.#invFreq.ptr,
      attentionFactor: this.#attentionFactor,
      channels: this.cache.layers[layer].channels.ptr,
      labelChannels,
      labelHeadOfQ: this.#labelHeadOfQ!.ptr,
      q: q.ptr,
    });
    return q.ptr;
  }

  /** Output projection (into the residual) and the MLP of one layer. */
  #postAttention(layer: number, rows: number): void {
    const c = this.config, L = this.weights.layers[layer];
    this.#linear(this.#h, this.#attn, L.o, rows, c.hiddenSize, c.numHeads * c.headDim, true);
    this.#rmsnorm(this.#h, rows, L.postNorm);
    this.#linear(this.#gu, this.#x, L.gateUp, rows, 2 * c.intermediateSize, c.hiddenSize);
    this.#kernels.launch("swiglu", [rows, rowChunks(c.intermediateSize), 1], {
      gu: this.#gu.ptr,
      act: this.#act.ptr,
    });
    this.#linear(this.#h, this.#act, L.down, rows, c.hiddenSize, c.intermediateSize, true);
  }

  #embedRows(rows: number): void {
    this.#kernels.launch("embed", [rows, 1, 1], {
      tokens: this.#tokens.ptr,
      embed: this.weights.embed.ptr,
      h: this.#h.ptr,
    });
  }

  /** Final norm and LM head of `rows` hidden rows of `src` into the logits buffer. */
  #logitsOf(src: DeviceBuffer, rows: number): void {
    const c = this.config;
    this.#rmsnorm(src, rows, this.weights.finalNorm);
    this.#linear(this.#logits, this.#x, this.weights.lmHead, rows, c.vocabSize, c.hiddenSize);
  }

  #collectStats(layer: number, rows: number): void {
    if (!this.#stats) return;
    const c = this.config;
    const at = (b: DeviceBuffer, perLayer: number) => b.ptr + BigInt(layer * perLayer * 8);
    this.#kernels.launch("channel_stats", [Math.ceil((c.numHeads * c.headDim) / 256), 1, 1], {
      q: this.#q.ptr,
      k: this.#k.ptr,
      rows,
      statQ: at(this.#stats.q, c.numHeads * c.headDim),
      statK: at(this.#stats.k, c.numKvHeads * c.headDim),
      statQk: at(this.#stats.qk, c.numHeads * c.headDim),
    });
  }

  isDenseLayer(layer: number): boolean {
    return this.dense || this.spec.denseLayers.includes(layer);
  }

  // ---- prefill ----

  /**
   * Prefill: appends each prompt to its (empty or partial) sequence and returns the logits of
   * every prompt's last token, [numSeqs][vocab] (zeros for empty prompts). The prompts go through
   * in chunks of at most maxPrefillRows rows (sequences share a chunk); each chunk runs every
   * layer with no host round trip: GEMMs, the label-writing append, causal attention of the chunk
   * over everything already cached, the MLP; only the logits of the prompts it finishes come back.
   */
  prefill(
    prompts: number[][],
    onProgress?: (p: PrefillProgress) => void,
  ): Float32Array {
    const c = this.config;
    if (prompts.length !== this.batch) {
      throw new ArgumentError(
        "GpuDecoder.prefill",
        "prompts.length",
        prompts.length,
        `${this.batch}, one prompt per sequence (empty for none)`,
      );
    }
    this.cache.pages.checkGrowth(prompts.map((p) => p.length)); // a full context: no launch
    const last = new Float32Array(this.batch * c.vocabSize);
    const total = prompts.reduce((n, p) => n + p.length, 0);
    let done = 0;
    for (const chunk of prefillChunks(prompts.map((p) => p.length), this.#rows)) {
      const tokens: number[] = [], rowSeq: number[] = [], rowPos: number[] = [];
      const segments: PrefillSegment[] = [];
      const finished: number[] = [], finishedRows: number[] = [];
      for (const { seq: b, offset, rows: take } of chunk) {
        const start = this.cache.pages.grow(b, take);
        segments.push({ row0: tokens.length, seq: b, pos0: start, rows: take });
        for (let i = 0; i < take; i++) {
          tokens.push(prompts[b][offset + i]);
          rowSeq.push(b);
          rowPos.push(start + i);
        }
        if (offset + take === prompts[b].length) {
          finished.push(b);
          finishedRows.push(tokens.length - 1);
        }
      }
      const rows = tokens.length;
      this.cache.syncBlockTables(this.stream);
      this.#tokens.upload(Int32Array.from(tokens), this.stream);
      this.#rowSeq.upload(Int32Array.from(rowSeq), this.stream);
      this.#rowPos.upload(Int32Array.from(rowPos), this.stream);
      this.prefillPlan.setChunk(segments, this.stream);
      this.#embedRows(rows);
      for (let layer = 0; layer < c.numLayers; layer++) {
        this.#preAttention(layer, rows, this.#rowPos.ptr);
        this.plan.appendRows(
          layer,
          this.#k.ptr,
          this.#v.ptr,
          this.#rowSeq.ptr,
          this.#rowPos.ptr,
          rows,
        );
        this.prefillPlan.attention(layer, this.#q.ptr, this.#attn.ptr);
        this.#postAttention(layer, rows);
      }
      if (finished.length > 0) {
        this.#lastRows.upload(Int32Array.from(finishedRows), this.stream);
        this.#kernels.launch("gather_rows", [finished.length, 1, 1], {
          src: this.#h.ptr,
          rows: this.#lastRows.ptr,
          dst: this.#lastHidden.ptr,
        });
        this.#logitsOf(this.#lastHidden, finished.length);
        const out = new Float32Array(finished.length * c.vocabSize);
        this.#logits.download(out, this.stream);
        finished.forEach((b, i) =>
          last.set(out.subarray(i * c.vocabSize, (i + 1) * c.vocabSize), b * c.vocabSize)
        );
      } else {
        this.stream.synchronize();
      }
      done += rows;
      onProgress?.({ done, total });
    }
    return last;
  }

  // ---- decode ----

  /**
   * Records one decode step's launches (all layers) on the stream, ending with the logits copied
   * to pinned memory, or (`choose`) with the device's token choice and only the ids copied.
   */
  #recordStep(choose: boolean): void {
    const c = this.config, B = this.batch;
    this.#hostTokens.copyTo(this.#tokens.ptr, this.stream, B * 4);
    this.plan.uploadStepInputs(this.stream);
    this.#embedRows(B);
    this.offload?.beginLayers(this.stream);
    for (let layer = 0; layer < c.numLayers; layer++) {
      this.#preAttention(layer, B, this.plan.buffers.rowPos);
      const offloaded = this.offload?.handles(layer) ?? false;
      if (offloaded) this.offload!.append(layer, this.#k.ptr, this.#v.ptr, this.stream);
      else this.plan.append(layer, this.#k.ptr, this.#v.ptr);
      // The next layer's prediction runs on a side stream beside this layer's attention and MLP.
      const next = layer + 1;
      if (this.offload?.predicts(next) && this.plan.routeSignature !== "dense") {
        this.offload.predict(next, this.#predictQuery(next), this.stream);
      }
      this.#collectStats(layer, B);
      const lse = this.#lse && !this.isDenseLayer(layer)
        ? (i: number) => this.#lse!.ptr + BigInt(((layer * 2 + i) * B * c.numHeads) * 4)
        : undefined;
      const dense = this.isDenseLayer(layer);
      if (offloaded) {
        this.offload!.attention(layer, this.#q.ptr, this.#attn.ptr, dense, this.stream, lse?.(0));
      } else this.plan.attention(layer, this.#q.ptr, this.#attn.ptr, dense, lse?.(0));
      if (this.#selections && !this.isDenseLayer(layer)) {
        const sel = this.plan.workspace.selIdx;
        this.stream.copyDeviceToDevice(this.#selections[layer].ptr, sel.ptr, sel.bytes);
      }
      if (lse) {
        // The dense pass for the recall writes its output into the (free) gate/up buffer.
        this.plan.dense(layer, this.#q.ptr, true);
        this.plan.merge(this.#gu.ptr, true, lse(1));
      }
      this.#postAttention(layer, B);
    }
    this.offload?.endLayers(this.stream);
    this.#logitsOf(this.#h, B);
    if (choose) this.#chooseTokens();
    else this.#hostLogits.copyFrom(this.#logits.ptr, this.stream, B * c.vocabSize * 4);
    if (this.#lse) this.#hostLse!.copyFrom(this.#lse.ptr, this.stream, this.#lse.bytes);
  }

  /** The choice kernel on the step's logits; only the ids go to pinned memory. */
  #chooseTokens(): void {
    const B = this.batch, inputs = this.#choiceInputs.ptr;
    this.#hostChoiceInputs.copyTo(inputs, this.stream);
    this.#kernels.launch("choose_tokens", [B, 1, 1], {
      logits: this.#logits.ptr,
      vocab: this.config.vocabSize,
      temperature: inputs,
      topP: inputs + BigInt(4 * B),
      uniform: inputs + BigInt(8 * B),
      probs: this.#probs.ptr,
      tokens: this.#chosen.ptr,
    });
    this.#hostChosen.copyFrom(this.#chosen.ptr, this.stream, B * 4);
  }

  /**
   * One decode step: feeds `tokens[b]` to sequence b at its next position and returns the logits
   * [batch][vocab]. The first call captures the step as a CUDA graph; later calls replay it.
   */
  step(tokens: ArrayLike<number>, useGraph = true): Float32Array {
    this.#run(tokens, useGraph, false);
    return new Float32Array(this.#hostLogits.buffer, 0, this.batch * this.config.vocabSize).slice();
  }

  /**
   * One decode step that also chooses each sequence's next token on the device (see
   * `TokenChoice`) and returns only those ids [batch]; the logits stay on the device. The step is
   * captured once per route signature, like `step`'s, and replayed whatever the choice options.
   */
  stepChoose(
    tokens: ArrayLike<number>,
    choice: TokenChoice = {},
    useGraph = true,
  ): Int32Array<ArrayBuffer> {
    this.#setChoiceInputs(choice);
    this.#run(tokens, useGraph, true);
    return new Int32Array(this.#hostChosen.buffer, 0, this.batch).slice();
  }

  /**
   * One `stepChoose` of each of several decoders, overlapped: every decoder's step is launched on
   * its own stream before any is waited for, so their kernels may run side by side. Returns each
   * decoder's ids, in order. Decoders launched before one that fails to launch are still waited
   * for. `bench:offload --two-streams` times two offloaded half-batches this way; with the SM
   * gather they were slower than one decoder of the whole batch (docs/offload.md).
   */
  static stepChooseTogether(
    steps: readonly { decoder: GpuDecoder; tokens: ArrayLike<number>; choice?: TokenChoice }[],
  ): Int32Array<ArrayBuffer>[] {
    const decoders = new Set(steps.map((s) => s.decoder));
    if (decoders.size !== steps.length) {
      throw new ArgumentError(
        "GpuDecoder.stepChooseTogether",
        "steps",
        `${steps.length} steps of ${decoders.size} decoders`,
        "one step per decoder (a decoder's steps run in order on its stream)",
      );
    }
    const launched: GpuDecoder[] = [];
    try {
      for (const { decoder, tokens, choice } of steps) {
        decoder.#setChoiceInputs(choice ?? {});
        decoder.#launch(tokens, true, true);
        launched.push(decoder);
      }
    } finally {
      for (const d of launched) d.#finish();
    }
    return steps.map(({ decoder }) =>
      new Int32Array(decoder.#hostChosen.buffer, 0, decoder.batch).slice()
    );
  }

  /** The choice kernel's per-sequence inputs (temperature, top-p, uniforms) in pinned memory. */
  #setChoiceInputs(choice: TokenChoice): void {
    const B = this.batch;
    const temperature = checkTemperature(choice.temperature ?? 0);
    const topP = checkTopP(choice.topP ?? 1);
    const inputs = new Float32Array(this.#hostChoiceInputs.buffer, 0, 3 * B);
    inputs.fill(temperature, 0, B);
    inputs.fill(topP, B, 2 * B);
    inputs.fill(0, 2 * B);
    if (temperature > 0) {
      const u = choice.uniforms;
      if (!u || u.length !== B) {
        throw new RangeError(
          `stepChoose: uniforms: got ${u ? `${u.length} numbers` : "none"}; allowed: ${B} ` +
            `numbers in [0, 1), one per sequence (temperature ${temperature} samples)`,
        );
      }
      for (let b = 0; b < B; b++) {
        if (!(u[b] >= 0 && u[b] < 1)) {
          throw new RangeError(`stepChoose: uniforms[${b}]: got ${u[b]}; allowed: [0, 1)`);
        }
        inputs[2 * B + b] = u[b];
      }
    }
  }

  /** Uploads the step's tokens and runs (or replays) the step, then waits. */
  #run(tokens: ArrayLike<number>, useGraph: boolean, choose: boolean): void {
    this.#launch(tokens, useGraph, choose);
    this.#finish();
  }

  /** Uploads the step's tokens and launches (or records) the step on this decoder's stream. */
  #launch(tokens: ArrayLike<number>, useGraph: boolean, choose: boolean): void {
    const B = this.batch;
    new Int32Array(this.#hostTokens.buffer, 0, B).set(Array.from(tokens));
    this.plan.beginStep(); // refuses a full context (ContextFullError) before any launch
    this.offload?.beginStep();
    this.cache.syncBlockTables(this.stream);
    if (useGraph) {
      const key = this.#graphKey(choose);
      let graph = this.#graphs.get(key);
      if (!graph) {
        graph = this.stream.capture(() => this.#recordStep(choose));
        this.#graphs.set(key, graph);
      }
      graph.launch(this.stream);
    } else {
      this.#recordStep(choose);
    }
  }

  /** Waits for the launched step; it counts once it is done. */
  #finish(): void {
    this.stream.synchronize();
    this.steps++;
  }

  /**
   * Graphs are per route signature, per ending (logits back, or ids back) and, with offload
   * reuse, per step parity (which staging a step writes).
   */
  #graphKey(choose: boolean): string {
    return `${this.plan.routeSignature}|${choose ? "choose" : "logits"}|${
      this.offload?.graphKey ?? ""
    }`;
  }

  /** Offload: cumulative gather counts per layer (rows from the previous step, prefetch, host). */
  gatherCounts(): GatherCounts[] {
    return this.#offloadFor("GpuDecoder.gatherCounts").gatherCounts(this.stream);
  }

  /** The offload plan, or a typed error naming `method` for a decoder made without offload. */
  #offloadFor(method: string): OffloadPlan {
    if (!this.offload) {
      throw new ArgumentError(
        method,
        "options.offload",
        undefined,
        "a decoder created with options.offload (gather counts and timings are offload's)",
      );
    }
    return this.offload;
  }

  /**
   * Where the decoder's memory is: device bytes of the weights, the caches' device part (labels,
   * device-placed K/V, block tables), the decode plan's workspaces and the offload buffers; and
   * pinned host bytes of host-placed K/V.
   */
  get memory(): {
    weights: number;
    cacheDevice: number;
    plan: number;
    offload: number;
    hostKv: number;
  } {
    return {
      weights: this.weights.bytes,
      cacheDevice: this.cache.deviceBytes,
      plan: this.plan.deviceBytes,
      offload: this.offload?.deviceBytes ?? 0,
      hostKv: this.cache.hostBytes,
    };
  }

  /**
   * After a step with keepSelection: per selection head, the ascending token positions that
   * `layer`'s sparse attention read for sequence `seq`; undefined for dense layers and for a
   * sequence routed dense in that step.
   */
  lastSelected(seq: number, layer: number): Int32Array[] | undefined {
    if (!this.#selections) {
      throw new ArgumentError(
        "GpuDecoder.lastSelected",
        "options.keepSelection",
        undefined,
        "a decoder created with keepSelection: true",
      );
    }
    if (this.isDenseLayer(layer) || this.plan.routes[seq] !== "sparse") return undefined;
    const SH = this.spec.numSelectionHeads, stride = this.plan.selStride;
    const all = new Int32Array(this.#selections[layer].bytes / 4);
    this.#selections[layer].download(all, this.stream);
    const k = this.plan.budgets[seq];
    return Array.from({ length: SH }, (_, h) => {
      const at = (seq * SH + h) * stride;
      return all.slice(at, at + k).sort();
    });
  }

  /**
   * After a step with measureRecall: per layer, the mean over sparse-routed sequences and query
   * heads of (softmax mass of the selected tokens) / (mass of all tokens), and how many
   * (sequence, head) pairs that mean covers (0 for dense layers or when every route is dense).
   */
  lastRecall(): { mean: number; count: number }[] {
    if (!this.#hostLse) {
      throw new ArgumentError(
        "GpuDecoder.lastRecall",
        "options.measureRecall",
        undefined,
        "a decoder created with measureRecall: true",
      );
    }
    const c = this.config, B = this.batch;
    const lse = new Float32Array(this.#hostLse.buffer, 0, c.numLayers * 2 * B * c.numHeads);
    return Array.from({ length: c.numLayers }, (_, layer) => {
      if (this.isDenseLayer(layer)) return { mean: 1, count: 0 };
      let sum = 0, count = 0;
      for (let b = 0; b < B; b++) {
        if (this.plan.routes[b] !== "sparse") continue;
        for (let h = 0; h < c.numHeads; h++) {
          const s = lse[(layer * 2 * B + b) * c.numHeads + h];
          const d = lse[((layer * 2 + 1) * B + b) * c.numHeads + h];
          sum += 2 ** (s - d);
          count++;
        }
      }
      return { mean: count ? sum / count : 1, count };
    });
  }

  /**
   * Median milliseconds of the attention part of one decode step (every layer's attention
   * kernels on the current q, as a graph), for the share of step time spent in attention.
   * Call after at least one step; it does not change the caches.
   */
  timeAttention(repeats = 20): number {
    const graph = this.stream.capture(() => {
      for (let layer = 0; layer < this.config.numLayers; layer++) {
        this.plan.attention(layer, this.#q.ptr, this.#attn.ptr, this.isDenseLayer(layer));
      }
    });
    try {
      return this.#timeGraph(graph, repeats);
    } finally {
      graph.dispose();
    }
  }

  /**
   * Offload: median milliseconds and bytes of gathering every offloaded layer's selected rows
   * from host memory (the last step's selection, as a graph): the gather kernel's bandwidth.
   */
  timeGather(repeats = 10): { ms: number; bytes: number } {
    const offload = this.#offloadFor("GpuDecoder.timeGather");
    let bytes = 0;
    const graph = this.stream.capture(() => (bytes = offload.gatherAllFromHost()));
    try {
      return { ms: this.#timeGraph(graph, repeats), bytes };
    } finally {
      graph.dispose();
    }
  }

  /**
   * Median milliseconds of one whole decode step replayed as a graph (no host work): the step of
   * `step` (logits back) or, with `choose`, of `stepChoose` (token choice, ids back).
   */
  timeStep(repeats = 20, choose = false): number {
    const graph = this.#graphs.get(this.#graphKey(choose));
    if (!graph) throw new Error(`timeStep: run ${choose ? "stepChoose" : "step"}() once first`);
    return this.#timeGraph(graph, repeats);
  }

  #timeGraph(graph: GraphExec, repeats: number): number {
    return medianEventMs(this.#cuda, this.stream, () => graph.launch(this.stream), repeats);
  }

  /** Empties every sequence (pages go back to the pool); statistics are kept. */
  reset(): void {
    for (let b = 0; b < this.batch; b++) this.cache.pages.release(b);
    // Staged rows name token positions whose pages may now hold other tokens.
    this.offload?.invalidate(this.stream);
  }

  /** Summed calibration statistics since creation, [layer][row][channel] per kind. */
  readStats(): Record<ChannelKind, Float64Array> {
    if (!this.#stats) {
      throw new ArgumentError(
        "GpuDecoder.readStats",
        "options.collectStats",
        undefined,
        "a decoder created with collectStats: true",
      );
    }
    const out = {} as Record<ChannelKind, Float64Array>;
    for (const kind of CHANNEL_KINDS) {
      const buf = this.#stats[kind];
      const values = new Float64Array(buf.bytes / 8);
      buf.download(values, this.stream);
      out[kind] = values;
    }
    return out;
  }

  dispose(): void {
    for (const g of this.#graphs.values()) g.dispose();
    this.#graphs.clear();
    for (const d of this.#owned.splice(0).reverse()) d[Symbol.dispose]();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
