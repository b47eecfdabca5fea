/**
 * `deno task gen`: generates every spec of examples/specs/ into generated/ (only changed files
 * are written; variants no longer specified are removed) and prints the fact table.
 *
 *   deno task gen [--specs DIR] [--out DIR] [--json FILE]
 *
 * It deletes only what it wrote: each variant folder it writes carries a marker file, and only
 * marked folders are cleaned or pruned. `--specs DIR` without `--out` writes into generated/ but
 * prunes nothing there (the committed variants of the other specs stay).
 */
import { budgetFor, denseStepBytes, sparseStepBytes } from "../dsl/spec.ts";
import {
  GENERATED_MARKER,
  generateVariant,
  pruneVariants,
  writeKernelApi,
  writeKernelApiSource,
  writeVariant,
} from "../codegen/generate.ts";
import { EXAMPLE_SPECS_DIR, GENERATED_DIR, loadSpecs } from "./specs.ts";
import { openCommand } from "./front_door.ts";
import { writeJsonReport } from "./json_report.ts";

const USAGE = `deno task gen [--specs DIR] [--out DIR] [--json FILE]
  --specs DIR   folder of spec modules (default examples/specs); each default-exports a spec
                from defineAttention() or an array of them
  --out DIR     output folder (default generated/). Variant folders the generator wrote carry a
                ${GENERATED_MARKER} marker; only those are rewritten or pruned. Without --out,
                a custom --specs prunes nothing.
  --json FILE   also write the fact table and what was written or removed as JSON`;

const { values } = openCommand({
  name: "gen",
  usage: USAGE,
  options: { specs: { type: "string" }, out: { type: "string" }, json: { type: "string" } },
});
const specsDir = values.specs ?? EXAMPLE_SPECS_DIR;
const outDir = values.out ?? GENERATED_DIR;
// Pruning removes variants that are no longer specified; with other specs aimed at generated/,
// "no longer specified" would mean every committed variant.
const prune = values.out !== undefined || values.specs === undefined;

const specs = await loadSpecs(specsDir);
const CONTEXT = 32768;
const facts = [];
let written = 0;
for (const spec of specs) {
  const gen = generateVariant(spec);
  const report = writeVariant(outDir, gen);
  written += report.written.length + report.removed.length;
  const sparse = sparseStepBytes(spec, CONTEXT);
  const withoutKeys = sparse - CONTEXT * spec.bytes.scoreTraffic;
  facts.push({
    variant: spec.variant,
    kernels: gen.kernels.length,
    budgetAt32K: budgetFor(spec.budget, CONTEXT),
    denseBytesPerToken: spec.bytes.denseRead,
    sparseBytesPerToken: sparse / CONTEXT,
    idealRatio: denseStepBytes(spec, CONTEXT) / withoutKeys,
    ratioWithScoreKeys: denseStepBytes(spec, CONTEXT) / sparse,
  });
}
const rows = facts.map((f) => [
  f.variant,
  String(f.kernels),
  String(f.budgetAt32K),
  String(f.denseBytesPerToken),
  f.sparseBytesPerToken.toFixed(1),
  f.idealRatio.toFixed(2) + "x",
  f.ratioWithScoreKeys.toFixed(2) + "x",
]);
if (writeKernelApiSource()) written++;
if (writeKernelApi(outDir)) written++;
const pruned = prune
  ? pruneVariants(outDir, new Set(specs.map((s) => s.variant)))
  : { removed: [], leftAlone: [] };
const removed = pruned.removed;

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
if (values.json !== undefined) {
  writeJsonReport(values.json, {
    outDir,
    contextTokens: CONTEXT,
    variants: facts,
    filesWritten: written,
    removed,
    pruned: prune,
    leftAlone: pruned.leftAlone,
  });
}
if (!prune) console.log(`Not pruning ${outDir}: --specs was given without --out.`);
if (pruned.leftAlone.length) {
  console.log(
    `Left alone (no ${GENERATED_MARKER} marker, not written by gen): ${
      pruned.leftAlone.join(", ")
    }`,
  );
}
