import assert from "node:assert/strict";
import {
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
} from "node:fs";
import { join } from "node:path";
import type { AttentionSpec } from "../src/dsl/mod.ts";
import {
  GENERATED_MARKER,
  generateVariant,
  KERNEL_API_FILE,
  KERNEL_API_SOURCE,
  pruneVariants,
  writeKernelApi,
  writeVariant,
} from "../src/codegen/generate.ts";
import { camelCase, KERNELS } from "../src/codegen/kernels.ts";
import { renderKernelApi } from "../src/codegen/launchers.ts";
import { renderKernels, sha256 } from "../src/codegen/render.ts";
import { GENERATED_DIR, loadSpecs } from "../src/cli/specs.ts";
import { firstDifference, repoPath, withTempDir } from "./helpers.ts";
import { InputError } from "../src/util/errors.ts";

const GOLDEN_DIR = repoPath("tests", "fixtures", "golden");
const GOLDEN_HASHES = join(GOLDEN_DIR, "sha256.json");
/** An example variant, for the tests that need any one. */
const EXAMPLE_VARIANT = "ds_d128_q4_kv2_p16_fp16_r16b16_head";
const STALE =
  "generated/ is out of date: run `deno task gen` (./ds task gen) and commit the result";

async function specNamed(variant: string): Promise<AttentionSpec> {
  const spec = (await loadSpecs()).find((s) => s.variant === variant);
  assert.ok(spec, `no example spec gives ${variant}`);
  return spec;
}

async function goldenSpec(): Promise<AttentionSpec> {
  const [spec] = await loadSpecs(GOLDEN_DIR);
  assert.ok(spec, `no spec in ${GOLDEN_DIR}`);
  return spec;
}

const listFiles = (dir: string) =>
  readdirSync(dir, { withFileTypes: true }).filter((e) => e.isFile()).map((e) => e.name).sort();
const listDirs = (dir: string) =>
  readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name)
    .sort();

// ---------------------------------------------------------------------------------------------
// (a) golden hashes of a variant outside examples/specs (generated/ pins those)

Deno.test("codegen: the golden variant renders the files of tests/fixtures/golden/sha256.json (UPDATE_GOLDEN=1 rewrites it)", async () => {
  const spec = await goldenSpec();
  assert.ok(
    !(await loadSpecs()).some((s) => s.variant === spec.variant),
    `${spec.variant} is an example variant: generated/ already pins it; pick another golden`,
  );
  const gen = generateVariant(spec);
  const hashes = {
    variant: spec.variant,
    files: Object.fromEntries([...gen.files].map(([name, text]) => [name, sha256(text)]).sort()),
  };
  if (Deno.env.get("UPDATE_GOLDEN") === "1") {
    Deno.writeTextFileSync(GOLDEN_HASHES, JSON.stringify(hashes, null, 2) + "\n");
    console.log(`UPDATE_GOLDEN=1: rewrote ${GOLDEN_HASHES}; review the template diff first.`);
    return;
  }
  const hint = "if the change is intended, rerun with UPDATE_GOLDEN=1 (render it with " +
    "`./ds run -A src/cli/gen.ts --specs tests/fixtures/golden --out /tmp/golden` to read it)";
  assert.ok(existsSync(GOLDEN_HASHES), `no ${GOLDEN_HASHES}; ${hint}`);
  const golden = JSON.parse(readFileSync(GOLDEN_HASHES, "utf8"));
  assert.equal(golden.variant, spec.variant, `golden variant differs; ${hint}`);
  assert.deepEqual(Object.keys(golden.files), Object.keys(hashes.files), `file set; ${hint}`);
  for (const [name, hash] of Object.entries(hashes.files)) {
    assert.equal(hash, golden.files[name], `${spec.variant}/${name} changed; ${hint}`);
  }
});

// ---------------------------------------------------------------------------------------------
// (b) generated/ is up to date

Deno.test("codegen: generated/ holds exactly the current output for every example spec", async () => {
  const specs = await loadSpecs();
  const variants = specs.map((s) => s.variant).sort();
  assert.deepEqual(listDirs(GENERATED_DIR), variants, `variant directories differ; ${STALE}`);
  for (const spec of specs) {
    const gen = generateVariant(spec);
    const dir = join(GENERATED_DIR, spec.variant);
    assert.deepEqual(
      listFiles(dir),
      [...gen.files.keys(), GENERATED_MARKER].sort(),
      `${dir}: files differ; ${STALE}`,
    );
    for (const [name, text] of gen.files) {
      const committed = readFileSync(join(dir, name), "utf8");
      assert.ok(
        committed === text,
        `generated/${spec.variant}/${name} differs at ${
          firstDifference(text, committed)
        }\n${STALE}`,
      );
    }
  }
  const api = readFileSync(join(GENERATED_DIR, KERNEL_API_FILE), "utf8");
  const want = renderKernelApi();
  const source = readFileSync(KERNEL_API_SOURCE, "utf8");
  assert.ok(
    source === want,
    `src/codegen/${KERNEL_API_FILE} differs at ${firstDifference(want, source)}\n${STALE}`,
  );
  assert.ok(
    api === want,
    `generated/${KERNEL_API_FILE} differs at ${firstDifference(want, api)}\n${STALE}`,
  );
});

// ---------------------------------------------------------------------------------------------
// (c) writes only what changed

Deno.test("codegen: writeVariant writes only changed files and removes stale ones", async () => {
  const gen = generateVariant(await specNamed(EXAMPLE_VARIANT));
  await withTempDir((out) => {
    const dir = join(out, EXAMPLE_VARIANT);
    const all = [...gen.files.keys()].map((n) => join(dir, n)).sort();
    // The variant's own folder is refused: it would nest the folder twice.
    assert.throws(
      () => writeVariant(dir, gen),
      new RegExp(`already ends with the variant folder ${EXAMPLE_VARIANT}; pass its parent`),
    );
    const first = writeVariant(out, gen);
    assert.deepEqual(first.written.sort(), all);
    assert.deepEqual([first.unchanged, first.removed], [[], []]);
    // Atomic writes replace the file, so an unchanged inode means "not rewritten".
    const inode = (name: string) => statSync(join(dir, name)).ino;
    const before = new Map([...gen.files.keys()].map((n) => [n, inode(n)]));

    const second = writeVariant(out, gen);
    assert.deepEqual([second.written, second.removed], [[], []]);
    assert.deepEqual(second.unchanged.sort(), all);
    for (const [n, ino] of before) assert.equal(inode(n), ino, `${n} was rewritten`);

    Deno.writeTextFileSync(join(dir, "dense.cu"), "// edited by hand\n");
    Deno.writeTextFileSync(join(dir, "stale.cu"), "// no longer generated\n");
    const third = writeVariant(out, gen);
    assert.deepEqual(third.written, [join(dir, "dense.cu")]);
    assert.deepEqual(third.removed, [join(dir, "stale.cu")]);
    assert.equal(readFileSync(join(dir, "dense.cu"), "utf8"), gen.files.get("dense.cu"));
    for (const [n, ino] of before) {
      if (n !== "dense.cu") assert.equal(inode(n), ino, `${n} was rewritten`);
    }
  });
});

Deno.test("codegen: writeKernelApi reports changes; pruneVariants removes only marked other ds_ dirs", async () => {
  await withTempDir((out) => {
    assert.equal(writeKernelApi(out), true);
    assert.equal(writeKernelApi(out), false);
    for (const d of ["ds_keep", "ds_old", "ds_theirs", "notes"]) mkdirSync(join(out, d));
    for (const d of ["ds_keep", "ds_old"]) {
      Deno.writeTextFileSync(join(out, d, GENERATED_MARKER), "");
    }
    Deno.writeTextFileSync(join(out, "ds_theirs", "notes.txt"), "not the generator's");
    assert.deepEqual(pruneVariants(out, new Set(["ds_keep"])), {
      removed: ["ds_old"],
      leftAlone: ["ds_theirs"],
    });
    assert.deepEqual(listDirs(out), ["ds_keep", "ds_theirs", "notes"]);
    assert.deepEqual(listFiles(out), [KERNEL_API_FILE]);
    assert.equal(Deno.readTextFileSync(join(out, "ds_theirs", "notes.txt")), "not the generator's");
  });
});

Deno.test("codegen: writeVariant marks its folder and refuses a folder it did not write", async () => {
  const gen = generateVariant(await specNamed(EXAMPLE_VARIANT));
  await withTempDir((out) => {
    const dir = join(out, EXAMPLE_VARIANT);
    mkdirSync(dir);
    Deno.writeTextFileSync(join(dir, "mine.txt"), "a user's file");
    assert.throws(
      () => writeVariant(out, gen),
      (e: unknown) =>
        e instanceof InputError &&
        e.message === `${dir}: exists and has no ${GENERATED_MARKER} marker, so the generator ` +
            `did not write it; leaving it untouched (move it away or choose another --out)`,
    );
    assert.deepEqual(listFiles(dir), ["mine.txt"], "nothing written or removed");
    rmSync(dir, { recursive: true });
    writeVariant(out, gen);
    assert.ok(existsSync(join(dir, GENERATED_MARKER)), "a folder it writes carries the marker");
  });
});

// ---------------------------------------------------------------------------------------------
// (d) Handlebars strict mode

Deno.test("codegen: a template referencing a missing field fails to render (strict mode)", async () => {
  const spec = await specNamed(EXAMPLE_VARIANT);
  const reference = renderKernels(spec);
  const previous = Deno.env.get("DS_TEMPLATES_DIR");
  try {
    await withTempDir((dir) => {
      // An unmodified copy renders the same sources.
      const copy = join(dir, "same");
      cpSync(repoPath("templates"), copy, { recursive: true });
      Deno.env.set("DS_TEMPLATES_DIR", copy);
      assert.deepEqual(renderKernels(spec).map((k) => k.source), reference.map((k) => k.source));

      for (const file of ["merge.cu.hbs", "prelude.cuh.hbs"]) {
        const broken = join(dir, `broken-${file}`);
        cpSync(repoPath("templates"), broken, { recursive: true });
        const path = join(broken, file);
        Deno.writeTextFileSync(path, Deno.readTextFileSync(path) + "\n{{missingField}}\n");
        Deno.env.set("DS_TEMPLATES_DIR", broken);
        assert.throws(() => renderKernels(spec), /missingField/, file);
      }
    });
  } finally {
    if (previous === undefined) Deno.env.delete("DS_TEMPLATES_DIR");
    else Deno.env.set("DS_TEMPLATES_DIR", previous);
  }
  assert.deepEqual(renderKernels(spec).map((k) => k.source), reference.map((k) => k.source));
});

// ---------------------------------------------------------------------------------------------
// (e) launchers match the CUDA signatures

interface CParam {
  type: string;
  name: string;
}

/**
 * The parameter list of the `extern "C" __global__` kernel of a source. A source may hold several
 * bodies of it behind preprocessor switches (prefill: wgmma and mma.sync): every one must have
 * the same parameters.
 */
function cudaParams(source: string, symbol: string): CParam[] {
  const starts = [...source.matchAll(/extern "C" __global__/g)].map((m) => m.index!);
  assert.ok(starts.length > 0, `${symbol}: no extern "C" __global__ kernel`);
  const lists = starts.map((start) => paramsAt(source, symbol, start));
  for (const l of lists.slice(1)) assert.deepEqual(l, lists[0], `${symbol}: bodies differ`);
  return lists[0];
}

function paramsAt(source: string, symbol: string, start: number): CParam[] {
  const open = source.indexOf(`${symbol}(`, start);
  assert.ok(open >= 0, `${symbol}: kernel name not found after extern "C"`);
  const close = source.indexOf(") {", open);
  const list = source.slice(open + symbol.length + 1, close).replace(/\/\/[^\n]*/g, "");
  return list.split(",").map((p) => p.trim()).filter((p) => p !== "").map((p) => {
    const m = /^(.*?)\s*\b([A-Za-z_]\w*)$/.exec(p);
    assert.ok(m, `${symbol}: cannot parse parameter "${p}"`);
    return { type: m[1].trim(), name: m[2] };
  });
}

/** The `v.setX(offset, a.field, true)` statements of a generated launch function. */
function launcherSetters(
  launchers: string,
  fn: string,
): { setter: string; at: number; field: string }[] {
  const start = launchers.indexOf(`export function ${fn}(`);
  assert.ok(start >= 0, `no ${fn} in launchers.ts`);
  const body = launchers.slice(start, launchers.indexOf("\n}\n", start));
  return [...body.matchAll(/v\.(set\w+)\((\d+), a\.(\w+), true\);/g)].map((m) => ({
    setter: m[1],
    at: Number(m[2]),
    field: m[3],
  }));
}

/** Property names of an interface in kernel_api.ts. */
function interfaceFields(api: string, name: string): string[] {
  const start = api.indexOf(`export interface ${name} {`);
  assert.ok(start >= 0, `no interface ${name} in kernel_api.ts`);
  const body = api.slice(start, api.indexOf("\n}\n", start));
  return [...body.matchAll(/^\s*readonly (\w+): /gm)].map((m) => m[1]);
}

Deno.test("codegen: every launcher packs exactly the CUDA signature's parameters, in order", async () => {
  const api = renderKernelApi();
  for (const spec of await loadSpecs()) {
    const gen = generateVariant(spec);
    const launchers = gen.files.get("launchers.ts")!;
    const manifest = JSON.parse(gen.files.get("manifest.json")!);
    for (const k of gen.kernels) {
      const params = cudaParams(k.source, k.symbol);
      const pascal = k.id[0].toUpperCase() + camelCase(k.id).slice(1);
      const sets = launcherSetters(launchers, `launch${pascal}`);
      const where = `${spec.variant}/${k.file}`;
      assert.ok(params.length > 0, where);
      assert.equal(sets.length, params.length, `${where}: launcher arg count vs CUDA signature`);
      params.forEach((p, i) => {
        const want = p.type.includes("*")
          ? "setBigUint64"
          : p.type === "int"
          ? "setInt32"
          : p.type === "float"
          ? "setFloat32"
          : `unknown C type ${p.type}`;
        assert.deepEqual(sets[i], { setter: want, at: 8 * i, field: camelCase(p.name) }, where);
      });
      assert.deepEqual(interfaceFields(api, `${pascal}Args`), params.map((p) => camelCase(p.name)));
      const entry = manifest.kernels.find((m: { id: string }) => m.id === k.id);
      assert.equal(entry.args.length, params.length, `${where}: manifest args`);
      assert.match(launchers, new RegExp(`${k.id}: \\{[^}]*argCount: ${params.length},`), where);
    }
    assert.equal(gen.kernels.length, KERNELS.length);
  }
});

Deno.test("codegen: nothing under src/ imports from generated/ (the runtime uses src/codegen/kernel_api.ts)", () => {
  const offenders: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, e.name);
      if (e.isDirectory()) walk(path);
      else if (
        e.name.endsWith(".ts") && /from "(\.\.\/)+generated\//.test(readFileSync(path, "utf8"))
      ) {
        offenders.push(path);
      }
    }
  };
  walk(repoPath("src"));
  assert.deepEqual(offenders, []);
});
