// Builds the npm package (scripts/build_npm.ts, which also tests it under Node) and checks what
// it wrote. The package's dependencies are linked from node_modules/, so no network is needed.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { VERSION } from "../src/version.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const OUT = join(ROOT, "dist", "npm");

interface Manifest {
  name: string;
  version: string;
  type: string;
  exports: Record<string, { types: string; import: string }>;
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
  assert.match(stdout, /^ {2}node: OK ds_d128_q32_kv8_p16_fp16_r16b8_group: 7 kernels /m);

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
  });
  for (const target of Object.values(pkg.exports).flatMap((e) => [e.types, e.import])) {
    assert.ok(existsSync(join(OUT, target)), `${target} missing`);
  }
  const root = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
  assert.deepEqual(pkg.dependencies, {
    handlebars: root.dependencies.handlebars,
    "ts-morph": root.dependencies["ts-morph"],
  });
  assert.ok(pkg.files.includes("esm/") && pkg.files.includes("templates/"));

  // render.js finds the templates at ../../templates/, as src/codegen/render.ts does.
  const templates = new URL("../../templates/", pathToFileURL(join(OUT, "esm/codegen/render.js")));
  assert.ok(existsSync(new URL("score.cu.hbs", templates)));
  // Only the pure modules went in.
  for (const dir of ["cuda", "runtime", "model", "cli"]) {
    assert.ok(!existsSync(join(OUT, "esm", dir)), `esm/${dir} should not be in the package`);
  }
});
