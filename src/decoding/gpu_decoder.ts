/**
 * The decoder on the GPU: every layer runs there. Projections through cuBLAS (fp16/bf16 operands,
 * fp32 accumulation and outputs, o_proj and down_proj accumulating straight into the fp32
 * residual stream); embedding, RMSNorm, RoPE, SwiGLU and causal prefill attention from
 * templates/model.cu.hbs; decode attention from the generated Double Sparsity kernels (dense
 * layers and dense mode use the variant's dense kernel). Once shapes are fixed, a whole decode
 * step (all layers, logits copied to pinned memory) is captured as one CUDA graph and replayed.
 */
import { type AttentionSpec, defineAttention } from "../dsl/spec.ts";
import { renderExtra } from "../codegen/render.ts";
import { Cublas, type GemmDtype } from "../cuda/cublas.ts";
import type {
  Cuda,
  DeviceBuffer,
  GraphExec,
  HostBuffer,
  KernelFunction,
  LaunchSlot,
  Stream,
} from "../cuda/driver.ts";
import { PagedKvCache } from "../runtime/caches.ts";
import { DecodePlan } from "../runtime/decode_plan.ts";
import { sharedCompiler, Variant } from "../runtime/variant.ts";
import { encodeArray } from "../util/dtype.ts";
import { CHANNEL_KINDS, type ChannelKind } from "../quality/channel_config.ts";
import { type ChannelSource, labelChannelsFor } from "../quality/channels.ts";
import type { ModelConfig } from "../checkpoint/config.ts";
import { ropeInverseFrequencies } from "../checkpoint/rope.ts";
import type { LoadedModel } from "../checkpoint/weights.ts";
import { UtilKernels } from "../runtime/util_kernels.ts";
import { medianEventMs } from "../runtime/timing.ts";

/** A model whose weights are drawn at random on the device (for benchmarks of large shapes). */
export interface RandomModel {
  readonly config: ModelConfig;
  readonly seed: number;
  /** Standard deviation of every matrix entry. */
  readonly scale: number;
}

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
  /** Rows a prefill call may carry (default 4096). */
  readonly maxPrefillRows?: number;
  readonly dtype?: "fp16" | "bf16";
}

/** A dense stand-in variant for a model shape: its dense kernel and caches serve dense decoding. */
export function denseSpecFor(config: ModelConfig, dtype: "fp16" | "bf16" = "fp16"): AttentionSpec {
  return defineAttention({
    headDim: config.headDim,
    numQHeads: config.numHeads,
    numKvHeads: config.numKvHeads,
    kvDtype: dtype,
    pageSize: 16,
    labels: { channels: 2, bits: 16 },
    selection: "head",
    budget: { ratio: 1 },
  });
}

interface LayerWeightsGpu {
  inputNorm: DeviceBuffer;
  qkv: DeviceBuffer;
  qkvBias: DeviceBuffer | null;
  o: DeviceBuffer;
  postNorm: DeviceBuffer;
  gateUp: DeviceBuffer;
  down: DeviceBuffer;
}

type ModelKernel = "embed" | "rmsnorm" | "rope" | "swiglu" | "channel_stats" | "prefill_attention";

export class GpuDecoder implements Disposable {
  readonly config: ModelConfig;
  readonly spec: AttentionSpec;
  readonly dense: boolean;
  readonly variant: Variant;
  readonly cache: PagedKvCache;
  readonly plan: DecodePlan;
  readonly stream: Stream;
  readonly #cuda: Cuda;
  readonly #blas: Cublas;
  readonly #gemmType: GemmDtype;
  readonly #owned: Disposable[] = [];
  readonly #kernels: Record<ModelKernel, LaunchSlot>;
  readonly #embed: DeviceBuffer;
  readonly #layers: LayerWeightsGpu[];
  readonly #finalNorm: DeviceBuffer;
  readonly #lmHead: DeviceBuffer;
  readonly #invFreq: DeviceBuffer;
  // Activations for up to `rows` rows (decode: batch; prefill: maxPrefillRows).
  readonly #rows: number;
  readonly #h: DeviceBuffer;
  readonly #x: DeviceBuffer;
  readonly #qkv: DeviceBuffer;
  readonly #q: DeviceBuffer;
  readonly #k: DeviceBuffer;
  readonly #v: DeviceBuffer;
  readonly #attn: DeviceBuffer;
  readonly #gu: DeviceBuffer;
  readonly #act: DeviceBuffer;
  readonly #logits: DeviceBuffer;
  readonly #tokens: DeviceBuffer;
  readonly #rowSeq: DeviceBuffer;
  readonly #rowPos: DeviceBuffer;
  readonly #hostTokens: HostBuffer;
  readonly #hostLogits: HostBuffer;
  readonly #stats: Record<ChannelKind, DeviceBuffer> | null;
  /** [layer][sparse, dense][batch][Hq] log2-sum-exp2, when measuring recall. */
  readonly #lse: DeviceBuffer | null;
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
    modelFns: Record<ModelKernel, KernelFunction>,
  ) {
    this.#cuda = cuda;
    const c = (this.config = model.config);
    const dtype = opts.dtype ?? opts.spec?.kvDtype ?? "fp16";
    this.dense = !opts.spec;
    this.spec = opts.spec ?? denseSpecFor(c, dtype);
    this.variant = variant;
    this.#gemmType = dtype === "fp16" ? "F16" : "BF16";
    const own = <T extends Disposable>(x: T): T => (this.#owned.push(x), x);
    this.stream = own(cuda.stream());
    variant.bindStream(this.stream);
    const ws = own(cuda.alloc(32 << 20));
    this.#blas = own(new Cublas(this.stream, { ptr: ws.ptr, bytes: ws.bytes }));
    this.#kernels = Object.fromEntries(
      Object.entries(modelFns).map((
        [name, fn],
      ) => [name, fn.slot(16, [name === "prefill_attention" ? 128 : 256, 1, 1], 0, this.stream)]),
    ) as Record<ModelKernel, LaunchSlot>;

    const upload = (values: Float32Array, asFloat = false) => {
      const bits = asFloat ? values : encodeArray(dtype, values);
      const buf = own(cuda.alloc(bits.byteLength));
      buf.upload(bits, this.stream);
      return buf;
    };
    const concat = (...parts: Float32Array[]) => {
      const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
      let at = 0;
      for (const p of parts) (out.set(p, at), at += p.length);
      return out;
    };
    if ("weights" in model) {
      const w = model.weights;
      this.#embed = upload(w.embed);
      this.#layers = w.layers.map((l) => {
        if (l.oBias) throw new Error("GpuDecoder: o_proj bias is not supported");
        const hasBias = !!(l.qBias && l.kBias && l.vBias);
        const layer: LayerWeightsGpu = {
          inputNorm: upload(l.inputNorm, true),
          qkv: upload(concat(l.q, l.k, l.v)),
          qkvBias: hasBias ? upload(concat(l.qBias!, l.kBias!, l.vBias!), true) : null,
          o: upload(l.o),
          postNorm: upload(l.postAttentionNorm, true),
          gateUp: upload(concat(l.gate, l.up)),
          down: upload(l.down),
        };
        this.stream.synchronize(); // host staging arrays may go
        return layer;
      });
      this.#finalNorm = upload(w.finalNorm, true);
      this.#lmHead = upload(w.lmHead);
    } else {
      // Random weights drawn on the device (benchmarks of large shapes): N(0, scale^2)
      // matrices, unit norms.
      using util = new UtilKernels(cuda, dtype);
      let seed = model.seed;
      const matrix = (rows: number, cols: number) => {
        const buf = own(cuda.alloc(rows * cols * 2));
        util.fillNormal(buf, seed++, model.scale, this.stream);
        return buf;
      };
      const ones = () => upload(new Float32Array(c.hiddenSize).fill(1), true);
      const qkvRows = (c.numHeads + 2 * c.numKvHeads) * c.headDim;
      this.#embed = matrix(c.vocabSize, c.hiddenSize);
      this.#layers = Array.from({ length: c.numLayers }, () => ({
        inputNorm: ones(),
        qkv: matrix(qkvRows, c.hiddenSize),
        qkvBias: null,
        o: matrix(c.hiddenSize, c.numHeads * c.headDim),
        postNorm: ones(),
        gateUp: matrix(2 * c.intermediateSize, c.hiddenSize),
        down: matrix(c.hiddenSize, c.intermediateSize),
      }));
      this.#finalNorm = ones();
      this.#lmHead = matrix(c.vocabSize, c.hiddenSize);
      this.stream.synchronize();
    }
    this.#invFreq = upload(Float32Array.from(ropeInverseFrequencies(c.headDim, c.ropeTheta)), true);

    this.cache = own(
      new PagedKvCache(cuda, this.spec, {
        numLayers: c.numLayers,
        numSeqs: opts.batch,
        maxContext: opts.maxContext,
      }),
    );
    if (!this.dense) {
      if (!opts.channels) {
        throw new Error(
          "GpuDecoder: a Double Sparsity spec needs label channels (options.channels)",
        );
      }
      this.cache.layers.forEach((l, i) =>
        l.setChannels(labelChannelsFor(this.spec, opts.channels!, i), this.stream)
      );
    } else {
      // The stand-in spec's labels are written but never read; any valid channels do.
      const ch = new Int32Array(this.spec.numLabelHeads * this.spec.labelChannels).map((_, i) =>
        i % this.spec.labelChannels
      );
      for (const l of this.cache.layers) l.setChannels(ch, this.stream);
    }
    this.plan = own(new DecodePlan(cuda, variant, this.cache, this.stream));

    const rows = (this.#rows = Math.max(opts.batch, opts.maxPrefillRows ?? 4096));
    const qkvWidth = (c.numHeads + 2 * c.numKvHeads) * c.headDim;
    const f32 = (n: number) => own(cuda.alloc(n * 4));
    const half = (n: number) => own(cuda.alloc(n * 2));
    this.#h = f32(rows * c.hiddenSize);
    this.#x = half(rows * Math.max(c.hiddenSize, c.intermediateSize));
    this.#qkv = f32(rows * qkvWidth);
    this.#q = half(rows * c.numHeads * c.headDim);
    this.#k = half(rows * c.numKvHeads * c.headDim);
    this.#v = half(rows * c.numKvHeads * c.headDim);
    this.#attn = half(rows * c.numHeads * c.headDim);
    this.#gu = f32(rows * 2 * c.intermediateSize);
    this.#act = half(rows * c.intermediateSize);
    this.#logits = f32(rows * c.vocabSize);
    this.#tokens = f32(rows);
    this.#rowSeq = f32(rows);
    this.#rowPos = f32(rows);
    this.#hostTokens = own(cuda.allocHost(opts.batch * 4));
    this.#hostLogits = own(cuda.allocHost(opts.batch * c.vocabSize * 4));
    this.#stats = opts.collectStats
      ? {
        q: f32(2 * c.numLayers * c.numHeads * c.headDim),
        k: f32(2 * c.numLayers * c.numKvHeads * c.headDim),
        qk: f32(2 * c.numLayers * c.numHeads * c.headDim),
      }
      : null;
    if (this.#stats) { for (const b of Object.values(this.#stats)) b.fill8(0, this.stream); }
    const lseFloats = c.numLayers * 2 * opts.batch * c.numHeads;
    this.#lse = opts.measureRecall ? f32(lseFloats) : null;
    this.#hostLse = opts.measureRecall ? own(cuda.allocHost(lseFloats * 4)) : null;
    this.stream.synchronize();
  }

  static async create(
    cuda: Cuda,
    model: LoadedModel | RandomModel,
    opts: GpuDecoderOptions,
  ): Promise<GpuDecoder> {
    const c = model.config;
    const spec = opts.spec ?? denseSpecFor(c, opts.dtype);
    if (
      spec.headDim !== c.headDim || spec.numQHeads !== c.numHeads ||
      spec.numKvHeads !== c.numKvHeads
    ) {
      throw new Error(
        `GpuDecoder: spec ${spec.variant} is for d=${spec.headDim}, ${spec.numQHeads}/${spec.numKvHeads} heads; ` +
          `the model has d=${c.headDim}, ${c.numHeads}/${c.numKvHeads}`,
      );
    }
    if (c.headDim % 32 !== 0) {
      throw new Error(`GpuDecoder: head dim ${c.headDim} must be a multiple of 32`);
    }
    const variant = await Variant.load(cuda, spec);
    const { source } = renderExtra("model", spec.kvDtype, {
      hidden: c.hiddenSize,
      headDim: c.headDim,
      numQHeads: c.numHeads,
      numKvHeads: c.numKvHeads,
      intermediate: c.intermediateSize,
      pageSize: spec.pageSize,
    });
    const compiled = sharedCompiler().compile({
      source,
      programName: "model.cu",
      arch: cuda.info.arch,
    });
    const mod = cuda.loadModule(compiled.cubin!, "model.cu");
    const names: ModelKernel[] = [
      "embed",
      "rmsnorm",
      "rope",
      "swiglu",
      "channel_stats",
      "prefill_attention",
    ];
    const fns = Object.fromEntries(names.map((n) => [n, mod.function(`ds_model_${n}`)])) as Record<
      ModelKernel,
      KernelFunction
    >;
    const dec = new GpuDecoder(cuda, model, opts, variant, fns);
    dec.#owned.push(mod, variant);
    return dec;
  }

  get batch(): number {
    return this.plan.batch;
  }

  // ---- kernel launches (argument order as in templates/model.cu.hbs) ----
  #launch(name: ModelKernel, grid: number, args: (v: DataView) => void): void {
    const slot = this.#kernels[name];
    args(slot.args);
    slot.launch([grid, 1, 1]);
  }

  #rmsnorm(rows: number, w: DeviceBuffer): void {
    this.#launch("rmsnorm", rows, (v) => {
      v.setBigUint64(0, this.#h.ptr, true);
      v.setBigUint64(8, w.ptr, true);
      v.setFloat32(16, this.config.rmsNormEps, true);
      v.setBigUint64(24, this.#x.ptr, true);
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
    this.#blas.linear(y.ptr, "F32", x.ptr, w.ptr, this.#gemmType, m, n, k, accumulate);
  }

  /** Everything of one layer before attention: norm, QKV, RoPE (positions from `rowPos`). */
  #preAttention(layer: number, rows: number, rowPos: bigint): void {
    const c = this.config, L = this.#layers[layer];
    this.#rmsnorm(rows, L.inputNorm);
    this.#linear(
      this.#qkv,
      this.#x,
      L.qkv,
      rows,
      (c.numHeads + 2 * c.numKvHeads) * c.headDim,
      c.hiddenSize,
    );
    this.#launch("rope", rows, (v) => {
      v.setBigUint64(0, this.#qkv.ptr, true);
      v.setBigUint64(8, L.qkvBias?.ptr ?? 0n, true);
      v.setBigUint64(16, rowPos, true);
      v.setBigUint64(24, this.#invFreq.ptr, true);
      v.setBigUint64(32, this.#q.ptr, true);
      v.setBigUint64(40, this.#k.ptr, true);
      v.setBigUint64(48, this.#v.ptr, true);
    });
  }

  /** Output projection (into the residual) and the MLP of one layer. */
  #postAttention(layer: number, rows: number): void {
    const c = this.config, L = this.#layers[layer];
    this.#linear(this.#h, this.#attn, L.o, rows, c.hiddenSize, c.numHeads * c.headDim, true);
    this.#rmsnorm(rows, L.postNorm);
    this.#linear(this.#gu, this.#x, L.gateUp, rows, 2 * c.intermediateSize, c.hiddenSize);
    this.#launch("swiglu", rows, (v) => {
      v.setBigUint64(0, this.#gu.ptr, true);
      v.setBigUint64(8, this.#act.ptr, true);
    });
    this.#linear(this.#h, this.#act, L.down, rows, c.hiddenSize, c.intermediateSize, true);
  }

  #embedRows(rows: number): void {
    this.#launch("embed", rows, (v) => {
      v.setBigUint64(0, this.#tokens.ptr, true);
      v.setBigUint64(8, this.#embed.ptr, true);
      v.setBigUint64(16, this.#h.ptr, true);
    });
  }

  #logitsOf(rows: number): void {
    const c = this.config;
    this.#rmsnorm(rows, this.#finalNorm);
    this.#linear(this.#logits, this.#x, this.#lmHead, rows, c.vocabSize, c.hiddenSize);
  }

  #collectStats(layer: number, rows: number): void {
    if (!this.#stats) return;
    const c = this.config;
    const at = (b: DeviceBuffer, perLayer: number) => b.ptr + BigInt(layer * perLayer * 8);
    this.#launch("channel_stats", Math.ceil((c.numHeads * c.headDim) / 256), (v) => {
      v.setBigUint64(0, this.#q.ptr, true);
      v.setBigUint64(8, this.#k.ptr, true);
      v.setInt32(16, rows, true);
      v.setBigUint64(24, at(this.#stats!.q, c.numHeads * c.headDim), true);
      v.setBigUint64(32, at(this.#stats!.k, c.numKvHeads * c.headDim), true);
      v.setBigUint64(40, at(this.#stats!.qk, c.numHeads * c.headDim), true);
    });
  }

  isDenseLayer(layer: number): boolean {
    return this.dense || this.spec.denseLayers.includes(layer);
  }

  /**
   * Prefill: appends each prompt to its (empty or partial) sequence and returns the logits of
   * every prompt's last token, [numSeqs][vocab]. Prompts longer than maxPrefillRows are chunked.
   */
  prefill(prompts: number[][]): Float32Array {
    const c = this.config;
    if (prompts.length !== this.batch) {
      throw new Error(`prefill: ${prompts.length} prompts for a batch of ${this.batch}`);
    }
    const last = new Float32Array(this.batch * c.vocabSize);
    const pending = prompts.map((p) => p.slice());
    while (pending.some((p) => p.length > 0)) {
      const tokens: number[] = [], rowSeq: number[] = [], rowPos: number[] = [];
      const lastRow = new Map<number, number>();
      for (let b = 0; b < this.batch && tokens.length < this.#rows; b++) {
        const take = pending[b].splice(0, this.#rows - tokens.length);
        if (take.length === 0) continue;
        const start = this.cache.pages.grow(b, take.length);
        take.forEach((t, i) => {
          tokens.push(t);
          rowSeq.push(b);
          rowPos.push(start + i);
        });
        if (pending[b].length === 0) lastRow.set(b, tokens.length - 1);
      }
      const rows = tokens.length;
      this.cache.syncBlockTables(this.stream);
      this.#tokens.upload(Int32Array.from(tokens), this.stream);
      this.#rowSeq.upload(Int32Array.from(rowSeq), this.stream);
      this.#rowPos.upload(Int32Array.from(rowPos), this.stream);
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
        const l = this.cache.layers[layer];
        this.#launch("prefill_attention", Math.ceil((rows * c.numHeads) / 4), (v) => {
          v.setBigUint64(0, this.#q.ptr, true);
          v.setBigUint64(8, this.#rowSeq.ptr, true);
          v.setBigUint64(16, this.#rowPos.ptr, true);
          v.setBigUint64(24, this.cache.blockTables.ptr, true);
          v.setInt32(32, this.cache.maxPagesPerSeq, true);
          v.setBigUint64(40, l.k.ptr, true);
          v.setBigUint64(48, l.v.ptr, true);
          v.setFloat32(56, 1 / Math.sqrt(c.headDim), true);
          v.setInt32(64, rows, true);
          v.setBigUint64(72, this.#attn.ptr, true);
        });
        this.#postAttention(layer, rows);
      }
      this.#logitsOf(rows);
      const all = new Float32Array(rows * c.vocabSize);
      this.#logits.download(all, this.stream, 0);
      for (const [b, row] of lastRow) {
        last.set(all.subarray(row * c.vocabSize, (row + 1) * c.vocabSize), b * c.vocabSize);
      }
    }
    return last;
  }

  /** Records one decode step's launches (all layers) on the stream. */
  #recordStep(): void {
    const c = this.config, B = this.batch;
    this.#hostTokens.copyTo(this.#tokens.ptr, this.stream, B * 4);
    this.plan.uploadStepInputs(this.stream);
    this.#embedRows(B);
    for (let layer = 0; layer < c.numLayers; layer++) {
      this.#preAttention(layer, B, this.plan.buffers.rowPos);
      this.plan.append(layer, this.#k.ptr, this.#v.ptr);
      this.#collectStats(layer, B);
      const lse = this.#lse && !this.isDenseLayer(layer)
        ? (i: number) => this.#lse!.ptr + BigInt(((layer * 2 + i) * B * c.numHeads) * 4)
        : undefined;
      this.plan.attention(layer, this.#q.ptr, this.#attn.ptr, this.isDenseLayer(layer), lse?.(0));
      if (lse) {
        // The dense pass for the recall writes its output into the (free) gate/up buffer.
        this.plan.dense(layer, this.#q.ptr, true);
        this.plan.merge(this.#gu.ptr, true, lse(1));
      }
      this.#postAttention(layer, B);
    }
    this.#logitsOf(B);
    this.#hostLogits.copyFrom(this.#logits.ptr, this.stream, B * c.vocabSize * 4);
    if (this.#lse) this.#hostLse!.copyFrom(this.#lse.ptr, this.stream, this.#lse.bytes);
  }

  /**
   * One decode step: feeds `tokens[b]` to sequence b at its next position and returns the logits
   * [batch][vocab]. The first call captures the step as a CUDA graph; later calls replay it.
   */
  step(tokens: ArrayLike<number>, useGraph = true): Float32Array {
    const B = this.batch;
    new Int32Array(this.#hostTokens.buffer, 0, B).set(Array.from(tokens));
    this.plan.beginStep();
    this.cache.syncBlockTables(this.stream);
    if (useGraph) {
      const signature = this.plan.routeSignature;
      let graph = this.#graphs.get(signature);
      if (!graph) {
        graph = this.stream.capture(() => this.#recordStep());
        this.#graphs.set(signature, graph);
      }
      graph.launch(this.stream);
    } else {
      this.#recordStep();
    }
    this.stream.synchronize();
    this.steps++;
    return new Float32Array(this.#hostLogits.buffer, 0, B * this.config.vocabSize).slice();
  }

  /**
   * After a step with measureRecall: per layer, the mean over sparse-routed sequences and query
   * heads of (softmax mass of the selected tokens) / (mass of all tokens), and how many
   * (sequence, head) pairs that mean covers (0 for dense layers or when every route is dense).
   */
  lastRecall(): { mean: number; count: number }[] {
    if (!this.#hostLse) throw new Error("GpuDecoder: created without measureRecall");
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

  /** Median milliseconds of one whole decode step replayed as a graph (no host work). */
  timeStep(repeats = 20): number {
    const graph = this.#graphs.get(this.plan.routeSignature);
    if (!graph) throw new Error("timeStep: run step() once first");
    return this.#timeGraph(graph, repeats);
  }

  #timeGraph(graph: GraphExec, repeats: number): number {
    return medianEventMs(this.#cuda, this.stream, () => graph.launch(this.stream), repeats);
  }

  /** Empties every sequence (pages go back to the pool); statistics are kept. */
  reset(): void {
    for (let b = 0; b < this.batch; b++) this.cache.pages.release(b);
  }

  /** Summed calibration statistics since creation, [layer][row][channel] per kind. */
  readStats(): Record<ChannelKind, Float64Array> {
    if (!this.#stats) throw new Error("GpuDecoder: created without collectStats");
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
    for (const d of this.#owned.reverse()) d[Symbol.dispose]();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
