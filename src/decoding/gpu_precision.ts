/**
 * The GPU decoder's 16-bit storage, for the CPU decoder to emulate (CpuDecoderOptions.emulate):
 * GpuDecoder keeps the residual stream, GEMM outputs and softmax statistics in fp32 but stores in
 * its dtype (fp16 unless told otherwise, whatever the checkpoint's own dtype):
 *  - the weight matrices and the embedding (norm weights and biases stay fp32): gpu_weights.ts;
 *  - each RMSNorm's output, the GEMM input (`ds_model_rmsnorm`);
 *  - q, k and v after the bias and RoPE; k and v are the KV cache (`ds_model_rope`);
 *  - the softmax probabilities P before the PV product (`pack2` in attention.cuh.hbs and
 *    prefill_attention.cu.hbs, tensor-core bodies); the normalizer sums the unrounded P;
 *  - the attention output, the o_proj GEMM input (merge.cu.hbs, prefill_attention.cu.hbs);
 *  - the SwiGLU output, the down_proj GEMM input (`ds_model_swiglu`).
 * Everything else the CPU decoder computes in float64 and stores in float32, as before.
 */
import type { KvDtype } from "../dsl/spec.ts";
import type { LayerWeights, ModelWeights } from "../checkpoint/weights.ts";
import { roundArrayTo } from "../util/dtype.ts";

/** A copy of `weights` with the matrices and the embedding rounded to `dtype`, as uploaded. */
export function weightsAsStored(weights: ModelWeights, dtype: KvDtype): ModelWeights {
  const round = (m: Float32Array) => roundArrayTo(dtype, m.slice());
  const embed = round(weights.embed);
  return {
    embed,
    layers: weights.layers.map((l): LayerWeights => ({
      ...l,
      q: round(l.q),
      k: round(l.k),
      v: round(l.v),
      o: round(l.o),
      gate: round(l.gate),
      up: round(l.up),
      down: round(l.down),
    })),
    finalNorm: weights.finalNorm,
    lmHead: weights.lmHead === weights.embed ? embed : round(weights.lmHead),
  };
}
