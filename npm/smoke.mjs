// Node smoke test of the packed npm package, run by scripts/build_npm.ts from a temporary
// directory where `double-sparsity` is installed from its tarball. Prints one line starting with
// OK, or throws.
import assert from "node:assert/strict";
import * as root from "double-sparsity";
import { budgetFor, defineAttention } from "double-sparsity/dsl";
import { generateVariant, renderKernels } from "double-sparsity/codegen";
import { topK } from "double-sparsity/reference";

assert.equal(typeof globalThis.Deno, "undefined", "must run under Node, not Deno");

// Llama-3-8B attention, as examples/specs/llama3_8b.ts defines it.
const spec = defineAttention({
  headDim: 128,
  numQHeads: 32,
  numKvHeads: 8,
  kvDtype: "fp16",
  pageSize: 16,
  labels: { channels: 16, bits: 8 },
  selection: "group",
  budget: { ratio: 1 / 16, min: 16 },
});
assert.equal(spec.groupSize, 4);

// Rendering reads templates/ through ../../templates/ from esm/codegen/render.js.
const kernels = renderKernels(spec);
assert.equal(kernels.length, 7);
for (const k of kernels) {
  assert.ok(k.source.includes('extern "C" __global__'), `${k.file} declares no kernel`);
  assert.ok(k.source.includes(k.symbol), `${k.file} lacks ${k.symbol}`);
}

// The launchers are generated with ts-morph, a dependency loaded on first use.
const variant = generateVariant(spec);
assert.match(variant.files.get("launchers.ts"), /export function launchScore\(/);

assert.deepEqual(Array.from(topK([0.1, 0.9, 0.5, 0.7], 2)), [1, 3]);
assert.equal(budgetFor(spec.budget, 4096), 256);
assert.equal(budgetFor(spec.budget, 100), 16);

// The root entry point re-exports the subpaths.
assert.equal(root.defineAttention, defineAttention);
assert.equal(root.renderKernels, renderKernels);
assert.equal(root.topK, topK);

console.log(
  `OK ${spec.variant}: ${kernels.length} kernels (${kernels.map((k) => k.id).join(", ")}), ` +
    `launchers, topK, budgetFor under Node ${process.version}`,
);
