// The API reference: the npm package's entry points are what `deno task doc:lint` and
// `deno task doc:html` document, every exported symbol has documentation, and the HTML
// reference builds. (That the package's .d.ts export exactly the documented names is checked by
// scripts/build_npm.ts, run by tests/npm_package_test.ts.)
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { ENTRY_POINTS } from "../scripts/build_npm.ts";
import { REPO_ROOT, withTempDir } from "./helpers.ts";

const tasks: Record<string, string> = JSON.parse(
  readFileSync(join(REPO_ROOT, "deno.json"), "utf8"),
).tasks;
const entryFiles = Object.values(ENTRY_POINTS).map((p) => `src/${p}`);

/** The arguments of a `deno doc` task, checked to name exactly the package's entry points. */
function docTask(name: string): string[] {
  const words = tasks[name]?.split(/\s+/) ?? [];
  assert.deepEqual(words.slice(0, 2), ["deno", "doc"], `task ${name}: ${tasks[name]}`);
  const files = words.filter((w) => w.endsWith(".ts"));
  assert.deepEqual(files, entryFiles, `task ${name} documents other files than the package`);
  return words.slice(2);
}

async function deno(args: string[]): Promise<{ ok: boolean; out: string }> {
  const result = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: REPO_ROOT,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { ok: result.success, out: decode(result.stdout) + decode(result.stderr) };
}

Deno.test("api docs: every exported symbol of the package's entry points is documented", async () => {
  const { ok, out } = await deno(["doc", ...docTask("doc:lint")]);
  assert.ok(ok, `deno task doc:lint failed:\n${out}`);
});

Deno.test("api docs: doc:html builds the reference of every entry point", async () => {
  const args = docTask("doc:html");
  assert.ok(args.includes("--output=dist/api"), "doc:html should write dist/api (git-ignored)");
  await withTempDir(async (dir) => {
    const out = join(dir, "api");
    const { ok, out: log } = await deno([
      "doc",
      ...args.map((a) => a === "--output=dist/api" ? `--output=${out}` : a),
    ]);
    assert.ok(ok, `deno doc --html failed:\n${log}`);
    const index = readFileSync(join(out, "index.html"), "utf8");
    assert.match(index, /double-sparsity/);
    // A page per symbol, under <entry module>/~/; one symbol of each entry point.
    const samples: Record<string, string> = {
      ".": "VERSION",
      "./dsl": "defineAttention",
      "./codegen": "generateVariant",
      "./reference": "topK",
      "./interop": "specFromSglangFlags",
    };
    assert.deepEqual(Object.keys(samples), Object.keys(ENTRY_POINTS));
    for (const [subpath, name] of Object.entries(samples)) {
      const page = join(out, ENTRY_POINTS[subpath], "~", `${name}.html`);
      assert.ok(existsSync(page), `no page for ${name} of ${subpath} (${page})`);
    }
  });
});
