/**
 * A decoder's weights on the device: the checkpoint's matrices in the model dtype (q/k/v and
 * gate/up fused so one GEMM computes each), norms and biases in fp32. Either uploaded from a
 * loaded checkpoint or drawn at random on the device (benchmarks of large shapes, no host copy).
 */
import type { Cuda, DeviceBuffer, Stream } from "../cuda/driver.ts";
import { encodeArray } from "../util/dtype.ts";
import type { ModelConfig } from "../checkpoint/config.ts";
import type { LoadedModel } from "../checkpoint/weights.ts";
import { UtilKernels } from "../runtime/util_kernels.ts";

/** A model whose weights are drawn at random on the device (for benchmarks of large shapes). */
export interface RandomModel {
  readonly config: ModelConfig;
  readonly seed: number;
  /** Standard deviation of every matrix entry. */
  readonly scale: number;
}

export interface LayerWeightsGpu {
  readonly inputNorm: DeviceBuffer;
  /** [(Hq + 2 Hkv) d][hidden]: q, k and v projections stacked. */
  readonly qkv: DeviceBuffer;
  readonly qkvBias: DeviceBuffer | null;
  readonly o: DeviceBuffer;
  readonly postNorm: DeviceBuffer;
  /** [2 intermediate][hidden]: gate then up. */
  readonly gateUp: DeviceBuffer;
  readonly down: DeviceBuffer;
}

/** Bytes of the device weights of a model shape in a 16-bit dtype (norms and biases fp32). */
export function weightBytes(c: ModelConfig): number {
  const qkvRows = (c.numHeads + 2 * c.numKvHeads) * c.headDim;
  const perLayer = 2 * c.hiddenSize * (qkvRows + c.numHeads * c.headDim + 3 * c.intermediateSize) +
    4 * 2 * c.hiddenSize;
  const lmHead = c.tieWordEmbeddings ? 0 : 2 * c.vocabSize * c.hiddenSize;
  return c.numLayers * perLayer + 2 * c.vocabSize * c.hiddenSize + lmHead + 4 * c.hiddenSize;
}

export class DeviceWeights implements Disposable {
  readonly embed: DeviceBuffer;
  readonly layers: LayerWeightsGpu[];
  readonly finalNorm: DeviceBuffer;
  readonly lmHead: DeviceBuffer;
  readonly #owned: DeviceBuffer[] = [];

  /** Device bytes of every weight buffer. */
  get bytes(): number {
    return this.#owned.reduce((n, b) => n + b.bytes, 0);
  }

  constructor(
    cuda: Cuda,
    model: LoadedModel | RandomModel,
    dtype: "fp16" | "bf16",
    stream: Stream,
  ) {
    const c = model.config;
    const own = (b: DeviceBuffer) => (this.#owned.push(b), b);
    try {
      const upload = (values: Float32Array, asFloat = false) => {
        const bits = asFloat ? values : encodeArray(dtype, values);
        const buf = own(cuda.alloc(bits.byteLength));
        buf.upload(bits, stream);
        return buf;
      };
      if ("weights" in model) {
        const w = model.weights;
        this.embed = upload(w.embed);
        this.layers = w.layers.map((l, i) => {
          if (l.oBias) throw new Error(`layer ${i}: an o_proj bias is not supported on the GPU`);
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
          stream.synchronize(); // the host staging arrays may go
          return layer;
        });
        this.finalNorm = upload(w.finalNorm, true);
        this.lmHead = w.lmHead === w.embed ? this.embed : upload(w.lmHead);
      } else {
        // N(0, scale^2) matrices drawn on the device, unit norms.
        using util = new UtilKernels(cuda, dtype);
        let seed = model.seed;
        const matrix = (rows: number, cols: number) => {
          const buf = own(cuda.alloc(rows * cols * 2));
          util.fillNormal(buf, seed++, model.scale, stream);
          return buf;
        };
        const ones = () => upload(new Float32Array(c.hiddenSize).fill(1), true);
        const qkvRows = (c.numHeads + 2 * c.numKvHeads) * c.headDim;
        this.embed = matrix(c.vocabSize, c.hiddenSize);
        this.layers = Array.from({ length: c.numLayers }, () => ({
          inputNorm: ones(),
          qkv: matrix(qkvRows, c.hiddenSize),
          qkvBias: null,
          o: matrix(c.hiddenSize, c.numHeads * c.headDim),
          postNorm: ones(),
          gateUp: matrix(2 * c.intermediateSize, c.hiddenSize),
          down: matrix(c.hiddenSize, c.intermediateSize),
        }));
        this.finalNorm = ones();
        this.lmHead = c.tieWordEmbeddings ? this.embed : matrix(c.vocabSize, c.hiddenSize);
        stream.synchronize();
      }
    } catch (e) {
      this.dispose();
      throw e;
    }
  }

  dispose(): void {
    for (const b of this.#owned.splice(0).reverse()) b.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

function concat(...parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) (out.set(p, at), at += p.length);
  return out;
}
