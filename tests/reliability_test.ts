/**
 * Reliability of the CPU-side entries: gen deletes only what it wrote, spec modules and the npm
 * API's entries validate what they are given, decoders check denseLayers, a full context is
 * refused before any work, and the typed flag parsers of the front door.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import {
  type AttentionInput,
  checkDenseLayers,
  defineAttention,
  ensureSpec,
  SpecError,
} from "../src/dsl/spec.ts";
import { GENERATED_MARKER, generateVariant } from "../src/codegen/generate.ts";
import { renderKernels } from "../src/codegen/render.ts";
import { topK } from "../src/reference/attention.ts";
import { quantizeRow } from "../src/reference/labels.ts";
import { PageTable } from "../src/util/page_table.ts";
import { ArgumentError, ContextFullError, InputError, UsageError } from "../src/util/errors.ts";
import {
  batchContextListFlag,
  intFlag,
  joinNegativeValues,
  numberFlag,
  parseFlags,
} from "../src/cli/front_door.ts";
import { loadSpecs } from "../src/cli/specs.ts";
import { GENERATED_DIR } from "../src/cli/specs.ts";
import { CpuDecoder } from "../src/decoding/cpu_decoder.ts";
import { CpuDoubleSparsityAttention } from "../src/decoding/cpu_ds_attention.ts";
import { randomModel, syntheticConfig } from "../src/checkpoint/synthetic.ts";
import { repoPath, runScript, withTempDir } from "./helpers.ts";

const SPEC_INPUT: AttentionInput = {
  headDim: 128,
  numQHeads: 4,
  numKvHeads: 2,
  kvDtype: "fp16",
  pageSize: 16,
  labels: { channels: 16, bits: 16 },
  selection: "head",
  budget: { ratio: 1 / 16, min: 16 },
  denseLayers: [0, 1],
};

const variantDirs = (dir: string) =>
  readdirSync(dir, { withFileTypes: true }).filter((e) =>
    e.isDirectory() && e.name.startsWith("ds_")
  )
    .map((e) => e.name).sort();

// ---- gen deletes only what it wrote ----

Deno.test("gen: --specs without --out writes into generated/ but deletes no committed variant", async () => {
  const before = variantDirs(GENERATED_DIR);
  assert.ok(before.length > 1);
  await withTempDir(async (dir) => {
    // One spec that is already committed: nothing in generated/ changes, and nothing is pruned.
    const example = pathToFileURL(repoPath("examples", "specs", "tiny_code_llama.ts")).href;
    Deno.writeTextFileSync(
      join(dir, "one.ts"),
      `export { default } from ${JSON.stringify(example)};\n`,
    );
    const r = await runScript("src/cli/gen.ts", ["--specs", dir]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Not pruning .*generated: --specs was given without --out\./);
  });
  assert.deepEqual(variantDirs(GENERATED_DIR), before, "every committed variant is still there");
});

Deno.test("gen: --out never deletes a folder it did not write (no marker), and says so", async () => {
  await withTempDir(async (dir) => {
    const specs = join(dir, "specs"), out = join(dir, "out");
    mkdirSync(specs);
    const example = pathToFileURL(repoPath("examples", "specs", "tiny_code_llama.ts")).href;
    Deno.writeTextFileSync(
      join(specs, "one.ts"),
      `export { default } from ${JSON.stringify(example)};\n`,
    );
    mkdirSync(join(out, "ds_old"), { recursive: true });
    Deno.writeTextFileSync(join(out, "ds_old", "precious.txt"), "keep");
    // A stale variant the generator did write is pruned.
    mkdirSync(join(out, "ds_stale"));
    Deno.writeTextFileSync(join(out, "ds_stale", GENERATED_MARKER), "");
    const r = await runScript("src/cli/gen.ts", ["--specs", specs, "--out", out]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(Deno.readTextFileSync(join(out, "ds_old", "precious.txt")), "keep");
    assert.ok(!existsSync(join(out, "ds_stale")), "the marked stale variant is pruned");
    assert.match(r.stdout, /removed ds_stale/);
    assert.match(r.stdout, /Left alone \(no \.ds-generated marker, not written by gen\): ds_old/);
  });
});

Deno.test("gen: a spec module exporting an object or a string is one clear error naming the file", async () => {
  await withTempDir(async (dir) => {
    const cases: [string, string, RegExp][] = [
      [
        "object.ts",
        "export default { headDim: 128 };\n",
        /default export: got an object without "variant"/,
      ],
      [
        "string.ts",
        `export default "llama";\n`,
        /default export: got "llama"; allowed: an attention spec from defineAttention\(\)/,
      ],
      ["array.ts", "export default [42];\n", /default export \[0\]: got 42/],
    ];
    for (const [name, text, why] of cases) {
      const specs = join(dir, name.replace(".ts", ""));
      mkdirSync(specs);
      Deno.writeTextFileSync(join(specs, name), text);
      await assert.rejects(loadSpecs(specs), (e: unknown) => {
        assert.ok(e instanceof InputError, String(e));
        assert.ok(e.message.startsWith(`${join(specs, name)}: `), e.message);
        assert.match(e.message, why);
        return true;
      });
    }
    const r = await runScript("src/cli/gen.ts", [
      "--specs",
      join(dir, "string"),
      "--out",
      join(dir, "o"),
    ]);
    assert.equal(r.code, 1);
    assert.equal(r.stderr.trimEnd().split("\n").length, 1, r.stderr);
    assert.ok(!existsSync(join(dir, "o")), "nothing written");
  });
});

// ---- validation at the npm API's entries ----

Deno.test("npm API: generateVariant and renderKernels take only validated specs", () => {
  const spec = defineAttention(SPEC_INPUT);
  // Plain input (never through defineAttention): a SpecError, not kernels with holes.
  assert.throws(
    () => generateVariant(SPEC_INPUT as never),
    (e: unknown) =>
      e instanceof SpecError &&
      /generateVariant\(spec\): got an object without "variant"/.test(e.message),
  );
  assert.throws(() => renderKernels({} as never), SpecError);
  assert.throws(() => renderKernels("ds_d128" as never), /renderKernels\(spec\): got "ds_d128"/);
  // A tampered copy: its fields are re-validated.
  const tampered = { ...spec, headDim: 96 };
  assert.throws(() => generateVariant(tampered), /generateVariant\(spec\): headDim: got 96/);
  const renamed = { ...spec, variant: "ds_other" };
  assert.throws(() => generateVariant(renamed), /variant: got "ds_other"; its fields define/);
  // A faithful copy (JSON round trip) generates exactly what the spec does.
  const copy = JSON.parse(JSON.stringify(spec));
  const [a, b] = [generateVariant(spec), generateVariant(copy)];
  assert.deepEqual([...b.files.entries()], [...a.files.entries()]);
  for (const text of a.files.values()) assert.ok(!/undefined|NaN/.test(text), "no holes");
  assert.equal(ensureSpec(spec, "x"), spec, "a defined spec passes as it is");
});

Deno.test("npm API: topK rejects a negative or fractional k and NaN scores", () => {
  assert.deepEqual([...topK([1, 3, 2], 2)], [1, 2]);
  assert.deepEqual([...topK([1, 3, 2], 0)], []);
  assert.deepEqual([...topK([1, 3, 2], 9)], [0, 1, 2]);
  assert.throws(
    () => topK([1, 2], -1),
    (e: unknown) =>
      e instanceof ArgumentError && e.message === "topK: k: got -1; allowed: an integer >= 0",
  );
  assert.throws(() => topK([1, 2], 1.5), ArgumentError);
  assert.throws(
    () => topK([1, NaN, 2], 1),
    /topK: scores\[1\]: got NaN; allowed: a number \(not NaN\)/,
  );
  assert.throws(() => quantizeRow([1, 2], 3), /quantizeRow: bits: got 3; allowed: 8, 4, 2/);
});

// ---- decoders and contexts ----

Deno.test("decoders: denseLayers beyond the model's layers are refused when the decoder is made", () => {
  const model = randomModel(
    syntheticConfig({ numLayers: 2, headDim: 128, numHeads: 4, numKvHeads: 2, hiddenSize: 512 }),
  );
  const spec = defineAttention({ ...SPEC_INPUT, denseLayers: [99] });
  const channels = Array.from({ length: 2 }, () => new Int32Array(spec.numLabelHeads * 16));
  assert.throws(
    () => new CpuDoubleSparsityAttention(spec, channels, 64),
    /CpuDoubleSparsityAttention: denseLayers: got \[99\]; allowed: layer indices below the model's 2 layers \(99 is outside\)/,
  );
  // A CpuAttention carrying a spec is checked by CpuDecoder against the model.
  const attention = { spec, attend: () => new Float32Array() };
  assert.throws(() => new CpuDecoder(model, { attention }), /CpuDecoder: denseLayers: got \[99\]/);
  assert.throws(() => checkDenseLayers(spec, 2, "GpuDecoder.create"), SpecError);
  checkDenseLayers(defineAttention(SPEC_INPUT), 2, "ok");
});

Deno.test("page table: growing past the maximum context is refused whole, before any change", () => {
  const pages = new PageTable(2, 8, 16, 4); // 2 sequences, 64 tokens each at most
  pages.grow(0, 60);
  const version = pages.version;
  assert.throws(() => pages.checkGrowth([1, 70]), (e: unknown) =>
    e instanceof ContextFullError &&
    e.message === "sequence 1: 70 tokens exceed its maximum context of 64 tokens (4 pages of " +
        "16); refused before any launch");
  assert.throws(() => pages.checkGrowth([5, 0]), ContextFullError);
  assert.throws(() => pages.grow(0, 5), ContextFullError);
  assert.equal(pages.seqLens[0], 60, "nothing changed");
  assert.equal(pages.version, version);
  pages.checkGrowth([4, 64]);
});

// ---- the front door's flag parsing ----

Deno.test("front door: strict flags, negative values, typed numbers", () => {
  const spec = {
    name: "t",
    usage: "t [--n N]",
    options: { n: { type: "string" }, quick: { type: "boolean" } },
  } as const;
  assert.deepEqual(joinNegativeValues(["--n", "-1", "--quick"], spec.options), [
    "--n=-1",
    "--quick",
  ]);
  assert.equal(parseFlags(spec, ["--n", "-1"]).values.n, "-1");
  assert.throws(
    () => parseFlags(spec, ["--bogus"]),
    (e: unknown) => e instanceof UsageError && e.message === "Unknown option '--bogus'",
  );
  assert.throws(() => parseFlags(spec, ["extra"]), UsageError);
  assert.throws(() => parseFlags(spec, ["--n"]), UsageError);
  assert.equal(intFlag("n", "12", { min: 1 }), 12);
  assert.equal(intFlag("n", undefined, { min: 1 }), undefined);
  for (const bad of ["", "x", "1.5", "0", "1e400", "NaN"]) {
    assert.throws(() => intFlag("n", bad, { min: 1 }), UsageError, bad);
  }
  assert.throws(() => numberFlag("t", "-1", { min: 0 }), /--t: got "-1"; allowed: a number >= 0/);
  assert.equal(numberFlag("p", "1", { min: 0, minExclusive: true, max: 1 }), 1);
  assert.throws(() => numberFlag("p", "0", { min: 0, minExclusive: true, max: 1 }), /> 0 and <= 1/);
  assert.deepEqual(batchContextListFlag("configs", "4x32768, 1x131072"), [[4, 32768], [1, 131072]]);
  for (const bad of ["4x", "x32768", "0x32768", "4x0", "4*32768", ""]) {
    assert.throws(
      () => batchContextListFlag("configs", bad),
      (e: unknown) =>
        e instanceof UsageError &&
        e.message ===
          `--configs: got ${
            JSON.stringify(bad)
          }; allowed: BxL with positive integers, e.g. 4x32768`,
    );
  }
  assert.throws(
    () => batchContextListFlag("llama3", "8x1", 2),
    (e: unknown) =>
      e instanceof UsageError &&
      e.message === '--llama3: got "8x1"; allowed: BxL with positive integers (context >= 2), ' +
          "e.g. 4x32768",
  );
});
