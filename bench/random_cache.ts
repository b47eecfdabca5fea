/**
 * Random cache contents for the offload benchmarks: L - 1 cached tokens per sequence (K/V and
 * labels from seeded normal fills), the same whether the cache lives on the device or the host.
 */
import type { Stream } from "../src/cuda/driver.ts";
import type { PagedKvCache } from "../src/runtime/caches.ts";
import type { UtilKernels } from "../src/runtime/util_kernels.ts";

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
    util.fillLabels(layer.labels, layer.meta, 102 + 3 * i, stream);
  });
  stream.synchronize();
}
