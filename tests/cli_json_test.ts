/**
 * `--json FILE` through the CPU commands (gen, eval on the CPU reference with tiny sizes; the
 * calibrate one is in quality_eval_cli_test.ts): the file holds the same rows the command
 * printed, lands in a folder that did not exist, and its path is printed. The GPU commands
 * (bench, bench:e2e, bench:prefill) and eval:retrieval (over a minute on the CPU) write
 * through the same `writeJsonReport`.
 */
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { repoPath, runScript, withTempDir } from "./helpers.ts";

/** The rows of a printed table: the lines after the `---` rule, split on two or more spaces. */
function tableRows(stdout: string, firstHeader: string): string[][] {
  const lines = stdout.split("\n");
  const start = lines.findIndex((l) => l.startsWith(firstHeader));
  assert.ok(start >= 0, `no table headed ${firstHeader} in:\n${stdout}`);
  const rows: string[][] = [];
  for (const line of lines.slice(start + 2)) {
    if (line.trim() === "") break;
    rows.push(line.trim().split(/ {2,}/));
  }
  return rows;
}

Deno.test("gen --json: the fact table's rows, as numbers, in a new folder", async () => {
  await withTempDir(async (dir) => {
    const specs = join(dir, "specs");
    mkdirSync(specs);
    const example = pathToFileURL(repoPath("examples", "specs", "tiny_code_llama.ts")).href;
    Deno.writeTextFileSync(
      join(specs, "one.ts"),
      `export { default } from ${JSON.stringify(example)};\n`,
    );
    const json = join(dir, "reports", "gen.json");
    const r = await runScript("src/cli/gen.ts", [
      "--specs",
      specs,
      "--out",
      join(dir, "out"),
      "--json",
      json,
    ]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.match(r.stdout, new RegExp(`wrote ${json.replace(/[/.]/g, "\\$&")}\n`));
    const record = JSON.parse(Deno.readTextFileSync(json));
    const printed = tableRows(r.stdout, "variant");
    assert.ok(printed.length > 0);
    assert.equal(record.variants.length, printed.length);
    assert.equal(record.outDir, join(dir, "out"));
    assert.equal(record.filesWritten > 0, true);
    record.variants.forEach((v: Record<string, number | string>, i: number) => {
      const [variant, kernels, budget, dense, sparse, ideal, withKeys] = printed[i];
      assert.equal(v.variant, variant);
      assert.equal(String(v.kernels), kernels);
      assert.equal(String(v.budgetAt32K), budget);
      assert.equal(String(v.denseBytesPerToken), dense);
      assert.equal((v.sparseBytesPerToken as number).toFixed(1), sparse);
      assert.equal((v.idealRatio as number).toFixed(2) + "x", ideal);
      assert.equal((v.ratioWithScoreKeys as number).toFixed(2) + "x", withKeys);
    });
  });
});

Deno.test("eval --json on the CPU: the printed rows, and a progress line on stderr", async () => {
  await withTempDir(async (dir) => {
    const json = join(dir, "new", "eval.json");
    const r = await runScript("src/cli/eval.ts", [
      "--device",
      "cpu",
      "--windows",
      "2",
      "--window-size",
      "48",
      "--variants",
      "dense",
      "--json",
      json,
    ]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.match(r.stdout, new RegExp(`wrote ${json.replace(/[/.]/g, "\\$&")}\n`));
    // The last report of the step always prints: a full bar with the time taken.
    assert.match(
      r.stderr,
      /\[dense\] \[#{30}\] 2\/2 windows, [\d.,]+ windows\/s, took [\d.]+ s/,
    );
    const record = JSON.parse(Deno.readTextFileSync(json));
    assert.equal(record.device, "cpu");
    assert.equal(record.windows, 2);
    assert.equal(record.rows.length, 1);
    const row = record.rows[0];
    assert.equal(row.name, "dense");
    // The Markdown row shows bits/byte to 4 decimals.
    const md = r.stdout.split("\n").find((l) => l.startsWith("| dense |"));
    assert.ok(md, r.stdout);
    assert.equal(md.split("|")[6].trim(), row.bitsPerByte.toFixed(4));
  });
});
