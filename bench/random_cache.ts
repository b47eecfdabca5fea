/**
 * What the offload benchmarks share: a paged cache with every layer's K/V in pinned host memory
 * for the Llama-3-8B shape and its Double Sparsity variant without dense layers, random contents
 * for any paged cache (L - 1 cached tokens per sequence: K/V and labels from seeded normal fills,
 * the same whether the cache lives on the device or the host), and the decoder options over such
 * a cache.
 */
import type { Cuda, Stream } from "../src/cuda/driver.ts";
import { PagedKvCache } from "../src/runtime/caches.ts";
import type { UtilKernels } from "../src/runtime/util_kernels.ts";
import type { GpuDecoderOptions } from "../src/decoding/gpu_decoder.ts";
import type { OffloadOptions } from "../src/runtime/offload_plan.ts";
import { LLAMA3_8B, LLAMA3_8B_GROUP_SPEC_NO_DENSE } from "./llama3_shape.ts";

/** The first token of each of `batch` sequences (spread over the vocabulary, deterministic). */
export const firstTokens = (batch: number): number[] =>
  Array.from({ length: batch }, (_, b) => (b * 7919) % LLAMA3_8B.vocabSize);

/** Bytes of `batch` sequences of `maxContext` tokens of K and V over every layer. */
export const kvCacheBytes = (batch: number, maxContext: number): number =>
  batch * maxContext * LLAMA3_8B.numLayers * 2 * LLAMA3_8B.numKvHeads * LLAMA3_8B.headDim * 2;

/** A cache of `batch` sequences of up to `maxContext` tokens, every layer's K/V on the host. */
export function hostKvCache(cuda: Cuda, batch: number, maxContext: number): PagedKvCache {
  return new PagedKvCache(cuda, LLAMA3_8B_GROUP_SPEC_NO_DENSE, {
    numLayers: LLAMA3_8B.numLayers,
    numSeqs: batch,
    maxContext,
    kvPlacement: Array(LLAMA3_8B.numLayers).fill("host"),
  });
}

/** Decoder options of the offload benchmarks (random channels); `cache` from hostKvCache. */
export function offloadDecoderOptions(
  batch: number,
  maxContext: number,
  offload?: OffloadOptions,
  cache?: PagedKvCache,
): GpuDecoderOptions {
  return {
    batch,
    maxContext,
    spec: LLAMA3_8B_GROUP_SPEC_NO_DENSE,
    channels: { randomSeed: 3 },
    maxPrefillRows: batch,
    offload,
    cache,
  };
}

export function fillRandomCache(
  util: UtilKernels,
  cache: PagedKvCache,
  batch: number,
  L: number,
  stream: Stream,
): void {
  for (let b = 0; b < batch; b++) cache.pages.grow(b, L - 1);
  cache.syncBlockTables(stream);
  cache.layers.forEach((layer, i) => {
    util.fillNormal(layer.k, 100 + 3 * i, 1, stream);
    util.fillNormal(layer.v, 101 + 3 * i, 1, stream);
    util.fillLabels(layer.labels, layer.meta, cache.spec.labelBits, 102 + 3 * i, stream);
  });
  stream.synchronize();
}
