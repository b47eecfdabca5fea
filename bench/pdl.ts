/**
 * `deno task bench:pdl` (GPU machine): the Double Sparsity decode step by stage with one launch
 * lever off and on, in one process, so the two are compared on one card: `--lever pdl`
 * (default; sm_90+) Programmatic Dependent Launch (docs/perf-notes.md, "Programmatic Dependent
 * Launch"), `--lever persistent` the persistent small-batch step against the five-launch chain
 * (PDL off for both; docs/perf-notes.md, "Persistent small-batch step"). Same timing as `bench`
 * (src/runtime/attention_timing.ts: CUDA-event medians of graph replays over L2-defeating cache
 * copies); each case is timed off, on, off, on and the faster run of each mode is kept.
 * Writes ./results/<lever>-<card>-<date>.{md,json} (or under --out / $DS_RESULTS_DIR).
 *
 *   deno task bench:pdl [--lever pdl|persistent] [--batches 1,2,4] [--contexts 32768,131072]
 *                       [--shapes LIST] [--repeats N] [--out DIR] [--json FILE]
 */
import { intFlag, intListFlag, openCommand } from "../src/cli/front_door.ts";
import { UsageError } from "../src/util/errors.ts";
import { cardSlug, defaultResultsDir } from "../src/cli/results.ts";
import { writeJsonReport } from "../src/cli/json_report.ts";
import { requireGpu } from "../src/runtime/device.ts";
import { join } from "node:path";
import { Variant } from "../src/runtime/variant.ts";
import { AttentionTimer, type StepTiming } from "../src/runtime/attention_timing.ts";
import { writeFileAtomic } from "../src/util/fs.ts";
import { attentionShapes } from "./attention_shapes.ts";

const { values: args } = openCommand({
  name: "bench:pdl",
  usage: `deno task bench:pdl [options]
  --lever NAME          pdl (default: Programmatic Dependent Launch) or persistent (the
                        persistent small-batch step against the five-launch chain)
  --batches LIST        comma list of batch sizes (default 1,2,4)
  --contexts LIST       comma list of context lengths (default 32768,131072)
  --shapes LIST         comma list of shape names (default all: llama3-8b, llama2-7b)
  --repeats N           graph replays per measurement (default 60)
  --out DIR             results folder (default ./results or $DS_RESULTS_DIR)
  --json FILE           write the JSON rows here instead of <out>/<lever>-<card>-<date>.json`,
  options: {
    lever: { type: "string" },
    batches: { type: "string" },
    contexts: { type: "string" },
    shapes: { type: "string" },
    repeats: { type: "string" },
    out: { type: "string" },
    json: { type: "string" },
  },
});

const LEVERS = { pdl: "PDL", persistent: "persistent step" } as const;
type Lever = keyof typeof LEVERS;
const lever = (args.lever ?? "pdl") as Lever;
if (!Object.hasOwn(LEVERS, lever)) {
  throw new UsageError(
    `--lever: got ${JSON.stringify(args.lever)}; allowed: ${Object.keys(LEVERS).join(", ")}`,
  );
}
const leverName = LEVERS[lever];
const batches = args.batches ? intListFlag("batches", args.batches, { min: 1 }) : [1, 2, 4];
const contexts = args.contexts
  ? intListFlag("contexts", args.contexts, { min: 1 })
  : [32768, 131072];
const repeats = intFlag("repeats", args.repeats, { min: 1 }) ?? 60;
const shapes = attentionShapes(args.shapes);
const outDir = args.out ?? defaultResultsDir();
const cuda = requireGpu("deno task bench:pdl");
const stream = cuda.stream();
const info = cuda.info;

using timer = new AttentionTimer(cuda, stream);
console.log(
  `${info.name} (${info.arch}, driver ${info.driverVersion}): copy bandwidth ${
    (timer.bandwidth / 1e12).toFixed(2)
  } TB/s`,
);

/** One case, the lever off and on: each the faster of its two runs. */
interface Row {
  shape: string;
  method: string;
  label: string;
  batch: number;
  context: number;
  off: StepTiming;
  on: StepTiming;
}
const rows: Row[] = [];

/** The run with the shorter step of two. */
const better = (a: StepTiming, b: StepTiming) => (a.ms <= b.ms ? a : b);

for (const shape of shapes) {
  for (const method of shape.methods) {
    const spec = method.spec!;
    using variant = await Variant.load(cuda, spec, { stream });
    variant.bindStream(stream);
    for (const batch of batches) {
      for (const context of contexts) {
        const tooLarge = timer.tooLarge(spec, batch, context);
        if (tooLarge) {
          console.log(`skip ${shape.name} B=${batch} L=${context}: ${tooLarge}`);
          continue;
        }
        const time = (on: boolean) =>
          timer.time(
            variant,
            spec,
            batch,
            context,
            lever === "pdl"
              ? { repeats, programmaticLaunch: on, persistentStep: false }
              : { repeats, programmaticLaunch: false, persistentStep: on },
          );
        // Interleaved, so a drift of the card's clocks over the case hits both alike.
        const off1 = time(false), on1 = time(true), off2 = time(false), on2 = time(true);
        const row = {
          shape: shape.name,
          method: method.key,
          label: method.label,
          batch,
          context,
          off: better(off1, off2),
          on: better(on1, on2),
        };
        rows.push(row);
        console.log(
          `${shape.name} B=${batch} L=${context} ${method.key}: step ${row.off.ms.toFixed(4)} -> ` +
            `${row.on.ms.toFixed(4)} ms with the ${leverName} (${
              (row.off.ms / row.on.ms).toFixed(2)
            }x)`,
        );
      }
    }
  }
}

// ---- Report: per case, off and on, every stage against its own bytes. ----
const fmt = (x: number, digits = 4) => x.toFixed(digits);
const pct = (
  floorMs: number,
  ms: number,
) => (ms > 0 ? `${((100 * floorMs) / ms).toFixed(0)}%` : "-");
const date = new Date().toISOString().slice(0, 10);
const lines = [
  `# ${
    lever === "pdl" ? "Programmatic Dependent Launch" : "Persistent small-batch step"
  }, decode step by stage, on ${info.name} (${date})`,
  "",
  `Copy bandwidth ${(timer.bandwidth / 1e12).toFixed(2)} TB/s; driver ${info.driverVersion}. ` +
  `CUDA-event medians of ${repeats} graph replays, each case timed off, on, off, on (the faster ` +
  `of each pair kept). Stages from differences of graphs (score; score + select + resolve; the ` +
  `step; with the persistent step, the same kernel stopped after score and after top-k), each ` +
  `with the share of its own byte floor; "top-k" = select + resolve's share of the step.`,
  "",
  `| shape | method | batch | context | ${leverName} | step ms | step % floor | score ms (% floor) | ` +
  "select + resolve ms (% floor) | attend ms (% floor) | top-k % | off / on |",
  "|---|---|---|---|---|---|---|---|---|---|---|---|",
];
for (const r of rows) {
  for (const [mode, t] of [["off", r.off], ["on", r.on]] as const) {
    const stages = t.stages.map((s) => `${fmt(s.ms)} (${pct(s.floorMs, s.ms)})`).join(" | ");
    lines.push(
      `| ${r.shape} | ${r.label} | ${r.batch} | ${r.context} | ${mode} | ${fmt(t.ms)} | ` +
        `${pct(t.floorMs, t.ms)} | ${stages} | ${((100 * t.selectMs) / t.ms).toFixed(1)} | ` +
        `${mode === "on" ? `${(r.off.ms / r.on.ms).toFixed(2)}x` : ""} |`,
    );
  }
}
const md = lines.join("\n");
console.log("\n" + md);
const stem = join(outDir, `${lever}-${cardSlug(info.name)}-${date}`);
writeJsonReport(args.json ?? `${stem}.json`, {
  device: info,
  date,
  bandwidth: timer.bandwidth,
  repeats,
  lever,
  rows,
});
writeFileAtomic(`${stem}.md`, md + "\n");
console.log(`wrote ${stem}.{md,json}`);
