/**
 * `deno task gen`: generates every spec of examples/specs/ into generated/ (only changed files
 * are written; variants no longer specified are removed) and prints the fact table.
 *
 *   deno task gen [--specs DIR] [--out DIR]
 */
import { parseArgs } from "node:util";
import { budgetFor, denseStepBytes, sparseStepBytes } from "../dsl/spec.ts";
import {
  generateVariant,
  pruneVariants,
  writeKernelApi,
  writeKernelApiSource,
  writeVariant,
} from "../codegen/generate.ts";
import { EXAMPLE_SPECS_DIR, GENERATED_DIR, loadSpecs } from "./specs.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { specs: { type: "string" }, out: { type: "string" } },
});
const specsDir = values.specs ?? EXAMPLE_SPECS_DIR;
const outDir = values.out ?? GENERATED_DIR;

const specs = await loadSpecs(specsDir);
const rows: string[][] = [];
let written = 0;
for (const spec of specs) {
  const gen = generateVariant(spec);
  const report = writeVariant(outDir, gen);
  written += report.written.length + report.removed.length;
  const ctx = 32768;
  const sparse = sparseStepBytes(spec, ctx);
  const withoutKeys = sparse - ctx * spec.bytes.scoreTraffic;
  rows.push([
    spec.variant,
    String(gen.kernels.length),
    String(budgetFor(spec.budget, ctx)),
    String(spec.bytes.denseRead),
    (sparse / ctx).toFixed(1),
    (denseStepBytes(spec, ctx) / withoutKeys).toFixed(2) + "x",
    (denseStepBytes(spec, ctx) / sparse).toFixed(2) + "x",
  ]);
}
if (writeKernelApiSource()) written++;
if (writeKernelApi(outDir)) written++;
const removed = pruneVariants(outDir, new Set(specs.map((s) => s.variant)));

const header = [
  "variant",
  "kernels",
  "k @32K",
  "dense B/token",
  "DS B/token",
  "ideal ratio",
  "with score keys",
];
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join("  ");
console.log(line(header));
console.log(widths.map((w) => "-".repeat(w)).join("  "));
for (const r of rows) console.log(line(r));
console.log(
  `\n${specs.length} variants in ${outDir}: ${written} files written` +
    (removed.length ? `, removed ${removed.join(", ")}` : "") +
    `.\nBytes per cached token for all heads of one sequence at a 32K context with each spec's ` +
    `budget k; the ideal ratio counts labels and selected K/V (the paper's count), the last ` +
    `column adds the 2-byte score keys written and read back by top-k.`,
);
