// Every repository path that the tracked text files cite (`docs/...`, `src/...`, `bench/...` in
// Markdown, comments or messages, and relative Markdown links) must exist, so no document points
// at a file that is not in the repository.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, normalize, relative } from "node:path";
import { REPO_ROOT } from "./helpers.ts";

/** Top-level folders whose paths are checked when cited. */
const CITABLE = ["docs", "src", "bench", "examples", "tests", "scripts", "templates", "npm"];
const TEXT = /\.(md|ts|mjs|js|sh|hbs|cuh|cu|json|ya?ml|txt)$|(^|\/)(ds|run)$/;
/** Paths that are data rather than prose (generated output, fixtures, model files). */
const SKIP =
  /^(generated|tests\/fixtures|examples\/data|examples\/models|bench\/results\/.*\.json)\//;

/** This file, whose probe below cites missing paths on purpose. */
const SELF = "tests/doc_links_test.ts";
/** A cited path: a citable folder, then path characters; not the tail of a longer path. */
const CITED = new RegExp(
  String.raw`(?<![\w./@$-])((?:${CITABLE.join("|")})/[\w./<>{}*$-]*)`,
  "g",
);
/** Placeholders (`generated/<variant>/`, `eval-${date}.json`, `src/{a,b}/`, `*.ts`) are skipped. */
const PLACEHOLDER = /[<>{}*$]|\.\.\./;
/** A document named without a folder (`DOUBLE_SPARSITY.md`, `README.md`). */
const BARE_DOCUMENT = /(?<![\w./@$-])([\w-]+\.md)\b/g;
const MARKDOWN_LINK = /\]\(([^)\s#]+)(?:#[^)]*)?\)/g;

function trackedTextFiles(): string[] {
  const out = new Deno.Command("git", { args: ["ls-files", "-z"], cwd: REPO_ROOT }).outputSync();
  assert.ok(out.success, "git ls-files failed");
  return new TextDecoder().decode(out.stdout).split("\0")
    .filter((f) => f !== "" && TEXT.test(f) && !SKIP.test(f) && f !== SELF);
}

/** Problems as `file:line: cites path, which does not exist`. */
function missingCitations(files: string[]): string[] {
  const problems: string[] = [];
  for (const file of files) {
    const text = readFileSync(join(REPO_ROOT, file), "utf8");
    text.split("\n").forEach((line, i) => {
      const where = `${file}:${i + 1}`;
      for (const [, raw] of line.matchAll(CITED)) {
        const path = raw.replace(/[.,:;)]+$/, "");
        if (PLACEHOLDER.test(path)) continue;
        if (!existsSync(join(REPO_ROOT, path))) problems.push(`${where}: cites ${path}`);
      }
      for (const [, doc] of line.matchAll(BARE_DOCUMENT)) {
        // Found at the root, in docs/, or beside the citing file.
        const places = [doc, join("docs", doc), join(dirname(file), doc)];
        if (!places.some((p) => existsSync(join(REPO_ROOT, p)))) {
          problems.push(`${where}: cites ${doc}`);
        }
      }
      if (!file.endsWith(".md")) return;
      for (const [, target] of line.matchAll(MARKDOWN_LINK)) {
        if (/^[a-z]+:/i.test(target)) continue; // a URL
        const resolved = normalize(join(dirname(file), target));
        if (resolved.startsWith("..") || !existsSync(join(REPO_ROOT, resolved))) {
          problems.push(`${where}: links ${target} (${relative(".", resolved)})`);
        }
      }
    });
  }
  return problems;
}

Deno.test("docs: every cited repository path exists", () => {
  const files = trackedTextFiles();
  assert.ok(files.includes("README.md") && files.includes("docs/method.md"));
  const problems = missingCitations(files);
  assert.deepEqual(problems, [], `cited paths that do not exist:\n  ${problems.join("\n  ")}`);
});

Deno.test("docs: the check finds a missing path, a broken link, and skips placeholders", () => {
  const dir = Deno.makeTempDirSync({ dir: REPO_ROOT, prefix: ".doc-links-" });
  try {
    const name = relative(REPO_ROOT, join(dir, "probe.md"));
    const [nowhere, gone, bare] = ["docs/nowhere.md", "docs/gone.md", "NOT_HERE.md"];
    Deno.writeTextFileSync(
      join(REPO_ROOT, name),
      `See docs/method.md and ${nowhere}, src/dsl/spec.ts, README.md, ${bare}.\n` +
        "Writes generated/<variant>/ and bench/results/eval-${date}.json.\n" +
        `[ok](../docs/method.md) [broken](../${gone}) [web](https://example.com/src/x)\n`,
    );
    assert.deepEqual(missingCitations([name]), [
      `${name}:1: cites ${nowhere}`,
      `${name}:1: cites ${bare}`,
      `${name}:3: links ../${gone} (${gone})`,
    ]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
