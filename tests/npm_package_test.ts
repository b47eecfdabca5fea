// Builds the npm package (scripts/build_npm.ts, which also tests it under Node: it installs the
// packed tarball into an empty project, type-checks a consumer, imports every entry point, runs a
// codegen round trip against generated/ and the README's example) and checks what it wrote. The
// package's dependencies are linked from node_modules/, so no network is needed.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { VERSION } from "../src/version.ts";
import { KERNELS } from "../src/codegen/kernels.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const OUT = join(ROOT, "dist", "npm");

interface Manifest {
  name: string;
  version: string;
  type: string;
  license: string;
  exports: Record<string, { types: string; import: string } | string>;
  dependencies: Record<string, string>;
  engines: { node: string };
  files: string[];
}

Deno.test("npm package: builds, and works under Node", async () => {
  const build = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      "--allow-run",
      "scripts/build_npm.ts",
    ],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(build.stdout);
  const stderr = new TextDecoder().decode(build.stderr);
  assert.ok(build.success, `build_npm.ts failed (exit ${build.code}):\n${stderr}${stdout}`);
  // The Node smoke test (npm/smoke.mjs) ran against the packed tarball and printed OK.
  assert.match(
    stdout,
    new RegExp(
      `^ {2}node: OK ds_d128_q32_kv8_p16_fp16_r16b8_group: ${KERNELS.length} kernels, ` +
        "launchers and manifest identical to generated/; 5 entry points",
      "m",
    ),
  );
  // Each entry point's .d.ts exports exactly what `deno doc` documents.
  assert.match(
    stdout,
    /^ {2}api: the \.d\.ts of 5 entry points export the \d+ names deno doc documents$/m,
  );
  assert.match(stdout, /^ {2}readme: npm\/README.md's example printed what the README shows$/m);

  const pkg: Manifest = JSON.parse(readFileSync(join(OUT, "package.json"), "utf8"));
  assert.equal(pkg.name, "double-sparsity");
  assert.equal(pkg.version, VERSION);
  assert.equal(pkg.type, "module");
  assert.equal(pkg.engines.node, ">=20");
  assert.deepEqual(pkg.exports, {
    ".": { types: "./esm/mod.d.ts", import: "./esm/mod.js" },
    "./dsl": { types: "./esm/dsl/mod.d.ts", import: "./esm/dsl/mod.js" },
    "./codegen": { types: "./esm/codegen/mod.d.ts", import: "./esm/codegen/mod.js" },
    "./reference": { types: "./esm/reference/mod.d.ts", import: "./esm/reference/mod.js" },
    "./interop": { types: "./esm/interop/mod.d.ts", import: "./esm/interop/mod.js" },
    "./package.json": "./package.json",
  });
  for (
    const target of Object.values(pkg.exports).flatMap((e) =>
      typeof e === "string" ? [e] : [e.types, e.import]
    )
  ) {
    assert.ok(existsSync(join(OUT, target)), `${target} missing`);
  }
  // The launchers are plain text now: the TypeScript compiler is not a run-time dependency.
  const root = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
  assert.deepEqual(pkg.dependencies, { handlebars: root.dependencies.handlebars });
  assert.deepEqual(pkg.files, ["esm/", "templates/", "README.md", "LICENSE"]);

  // Its own README, for Node users: npm commands and package imports, no repository paths.
  const readme = readFileSync(join(OUT, "README.md"), "utf8");
  assert.equal(readme, readFileSync(join(ROOT, "npm", "README.md"), "utf8"));
  for (const repoOnly of [/\.\/ds\b/, /\.\/src\//, /\bdeno task\b/, /from "\.\.?\//]) {
    assert.doesNotMatch(readme, repoOnly, `the package README mentions ${repoOnly}`);
  }
  assert.match(readme, /npm install double-sparsity/);
  assert.match(readme, /ESM only/);
  assert.match(readme, /await import\("double-sparsity/);
  for (
    const subpath of Object.keys(pkg.exports).filter((s) =>
      s.startsWith("./") && s !== "./package.json"
    )
  ) {
    assert.ok(readme.includes(`double-sparsity/${subpath.slice(2)}`), `README omits ${subpath}`);
  }
  // The license it declares, with the text beside it (the repository's LICENSE).
  assert.equal(pkg.license, "MIT");
  const license = readFileSync(join(OUT, "LICENSE"), "utf8");
  assert.equal(license, readFileSync(join(ROOT, "LICENSE"), "utf8"));
  assert.match(license, /^MIT License\n\nCopyright \(c\) \d{4} the double-sparsity authors\n/);

  // render.js finds the templates at ../../templates/, as src/codegen/render.ts does.
  const templates = new URL("../../templates/", pathToFileURL(join(OUT, "esm/codegen/render.js")));
  assert.ok(existsSync(new URL("score.cu.hbs", templates)));
  // Only the pure modules went in.
  for (const dir of ["cuda", "runtime", "checkpoint", "decoding", "quality", "cli"]) {
    assert.ok(!existsSync(join(OUT, "esm", dir)), `esm/${dir} should not be in the package`);
  }
});
