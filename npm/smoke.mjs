// Node smoke test of the packed npm package, run by scripts/build_npm.ts from a temporary
// directory where `double-sparsity` is installed from its tarball. Prints one line starting with
// OK, or throws. DS_GENERATED_DIR names the repository's generated/, which the codegen round
// trip must reproduce byte for byte.
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as root from "double-sparsity";
import * as dsl from "double-sparsity/dsl";
import * as codegen from "double-sparsity/codegen";
import * as reference from "double-sparsity/reference";
import * as interop from "double-sparsity/interop";

assert.equal(typeof globalThis.Deno, "undefined", "must run under Node, not Deno");
const require = createRequire(import.meta.url);

// package.json is exported; require() is refused, as the README says (ESM only).
const manifest = require("double-sparsity/package.json");
assert.equal(manifest.version, root.VERSION);
for (const subpath of Object.keys(manifest.exports).filter((s) => s !== "./package.json")) {
  const name = `double-sparsity${subpath.slice(1)}`;
  assert.throws(() => require(name), { code: "ERR_PACKAGE_PATH_NOT_EXPORTED" }, name);
}

// The root entry point re-exports every subpath.
for (const [name, mod] of Object.entries({ dsl, codegen, reference, interop })) {
  for (const [key, value] of Object.entries(mod)) {
    assert.equal(root[key], value, `double-sparsity does not re-export ${name}.${key}`);
  }
}

// Llama-3-8B attention, as examples/specs/llama3_8b.ts defines it.
const spec = dsl.defineAttention({
  headDim: 128,
  numQHeads: 32,
  numKvHeads: 8,
  kvDtype: "fp16",
  pageSize: 16,
  labels: { channels: 16, bits: 8 },
  selection: "group",
  budget: { ratio: 1 / 16, min: 16 },
  denseLayers: [0, 1],
});
assert.equal(spec.groupSize, 4);
assert.equal(dsl.budgetFor(spec.budget, 4096), 256);
assert.equal(dsl.budgetFor(spec.budget, 100), 16);

// Codegen round trip: generate, write, read back; the files equal the repository's generated/.
const gen = codegen.generateVariant(spec);
assert.equal(gen.kernels.length, codegen.KERNELS.length);
assert.ok(gen.kernels.some((k) => k.id === "prefill"), "no prefill kernel");
const out = mkdtempSync(join(tmpdir(), "ds-smoke-"));
try {
  const report = codegen.writeVariant(out, gen);
  assert.equal(report.written.length, gen.files.size);
  assert.equal(codegen.writeKernelApi(out), true);
  const dir = join(out, spec.variant);
  // The files and the generator's marker (only marked folders are ever rewritten or pruned).
  assert.deepEqual(
    readdirSync(dir).sort(),
    [...gen.files.keys(), codegen.GENERATED_MARKER].sort(),
  );
  for (const [name, text] of gen.files) assert.equal(readFileSync(join(dir, name), "utf8"), text);
  assert.deepEqual(codegen.writeVariant(out, gen).written, [], "second write rewrote files");
  assert.throws(() => codegen.writeVariant(dir, gen), /pass its parent/);

  const repo = process.env.DS_GENERATED_DIR;
  assert.ok(repo, "DS_GENERATED_DIR is not set");
  for (const name of [...gen.files.keys(), "../kernel_api.ts"]) {
    assert.equal(
      readFileSync(join(dir, name), "utf8"),
      readFileSync(join(repo, spec.variant, name), "utf8"),
      `${name} differs from the repository's generated/${spec.variant}/${name}`,
    );
  }
} finally {
  rmSync(out, { recursive: true, force: true });
}

// The reference: top-k with its documented tie-break (lower index first).
assert.deepEqual(Array.from(reference.topK([0.1, 0.9, 0.5, 0.9], 2)), [1, 3]);

// Interop: a channel config round trip, and SGLang's flags.
const shape = { numLayers: 1, numHeads: 2, numKvHeads: 1, headDim: 64 };
const ranking = (shift) => Array.from({ length: 64 }, (_, i) => (i + shift) % 64);
const config = { kinds: { qk: [[ranking(3), ranking(5)]] } };
const text = interop.formatChannelConfig(config);
assert.deepEqual(interop.parseChannelConfig(JSON.parse(text), shape), config);
assert.equal(
  interop.specFromSglangFlags({}, { headDim: 128, numQHeads: 32, numKvHeads: 8 }).spec.variant,
  "ds_d128_q32_kv8_p16_fp16_r32b16_head",
);

console.log(
  `OK ${spec.variant}: ${gen.kernels.length} kernels, launchers and manifest identical to ` +
    `generated/; 5 entry points, package.json; require() refused; under Node ${process.version}`,
);
