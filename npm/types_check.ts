// A TypeScript consumer of the npm package, type-checked by scripts/build_npm.ts against the
// packed declarations (module NodeNext, as a Node project would), so a wrong `types` path or an
// unresolvable import in a .d.ts fails the build. Not run.
import * as root from "double-sparsity";
import { type AttentionSpec, budgetFor, defineAttention } from "double-sparsity/dsl";
import { generateVariant, type RenderedKernel, renderKernels } from "double-sparsity/codegen";
import { topK } from "double-sparsity/reference";
import {
  type ChannelConfig,
  parseChannelConfig,
  type SglangSettings,
  specFromSglangFlags,
} from "double-sparsity/interop";

const spec: AttentionSpec = defineAttention({
  headDim: 128,
  numQHeads: 32,
  numKvHeads: 8,
  kvDtype: "fp16",
  pageSize: 16,
  labels: { channels: 16, bits: 8 },
  selection: "group",
  budget: { ratio: 1 / 16, min: 16 },
});
const kernels: RenderedKernel[] = renderKernels(spec);
const files: ReadonlyMap<string, string> = generateVariant(spec).files;
const picked: Int32Array = topK([0.1, 0.9], 1);
const tokens: number = budgetFor(spec.budget, 4096);
const same: typeof defineAttention = root.defineAttention;
const config: ChannelConfig = parseChannelConfig({}, {
  numLayers: 1,
  numHeads: 1,
  numKvHeads: 1,
  headDim: 64,
});
const sglang: SglangSettings = specFromSglangFlags({ ds_heavy_token_num: 512 }, {
  headDim: 128,
  numQHeads: 32,
  numKvHeads: 8,
});

export { config, files, kernels, picked, same, sglang, tokens };
