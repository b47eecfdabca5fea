/**
 * `deno task bench` (GPU machine): decode attention, dense vs Double Sparsity vs PyTorch SDPA.
 *
 * For each shape (Llama-3-8B 32/8 heads and Llama-2-7B 32/32, d 128, fp16 K/V, 16-token pages,
 * budget context/16, labels 128 bits per token per kv head), batch and context:
 *  - the measured copy bandwidth (device-to-device copy of 2 GiB, read + write) sets the floor;
 *  - each method runs as a CUDA graph of one step, timed with CUDA events: the median of many
 *    replays after warm-up, rotating over enough cache copies that L2 cannot serve them;
 *  - bytes: dense reads K and V of every token; Double Sparsity reads the labels at their bit
 *    width, writes and reads back 2-byte score keys, and reads the selected K/V rows.
 * Writes ./results/attention-<card>-<date>.{json,md,svg} (or under --out / $DS_RESULTS_DIR).
 *
 *   deno task bench [--quick] [--batches 1,8,32] [--contexts 4096,...] [--no-sdpa] [--out DIR]
 *                  [--json FILE]
 */
import { intFlag, intListFlag, openCommand } from "../src/cli/front_door.ts";
import { cardSlug, defaultResultsDir } from "../src/cli/results.ts";
import { writeJsonReport } from "../src/cli/json_report.ts";
import { requireGpu } from "../src/runtime/device.ts";
import { join } from "node:path";
import { Variant } from "../src/runtime/variant.ts";
import { AttentionTimer, type StageTiming } from "../src/runtime/attention_timing.ts";
import { runSdpa, sdpaMsFor, type SdpaResult } from "../src/runtime/sdpa_baseline.ts";
import { writeFileAtomic } from "../src/util/fs.ts";
import { lineChart } from "../src/util/svg.ts";
import { Progress } from "../src/cli/progress.ts";
import { attentionShapes } from "./attention_shapes.ts";

const { values: args } = openCommand({
  name: "bench",
  usage: `deno task bench [options]
  --quick               batches 1,8 and contexts 4096,32768, fewer repeats
  --batches LIST        comma list of batch sizes (default 1,8,32)
  --contexts LIST       comma list of context lengths (default 4096,...,131072)
  --shapes LIST         comma list of shape names (default all)
  --no-sdpa             skip the PyTorch SDPA baseline
  --repeats N           graph replays per measurement (default 60, quick 30)
  --out DIR             results folder (default ./results or $DS_RESULTS_DIR)
  --json FILE           write the JSON rows here instead of <out>/attention-<card>-<date>.json`,
  options: {
    quick: { type: "boolean", default: false },
    batches: { type: "string" },
    contexts: { type: "string" },
    shapes: { type: "string" },
    "no-sdpa": { type: "boolean", default: false },
    out: { type: "string" },
    json: { type: "string" },
    repeats: { type: "string" },
  },
});

const list = (flag: string, s: string | undefined, def: number[]) =>
  s ? intListFlag(flag, s, { min: 1 }) : def;
const batches = list("batches", args.batches, args.quick ? [1, 8] : [1, 8, 32]);
const contexts = list(
  "contexts",
  args.contexts,
  args.quick ? [4096, 32768] : [4096, 16384, 32768, 65536, 131072],
);
const repeats = intFlag("repeats", args.repeats, { min: 1 }) ?? (args.quick ? 30 : 60);
const outDir = args.out ?? defaultResultsDir();
const cuda = requireGpu("deno task bench");
const stream = cuda.stream();
const info = cuda.info;

const SHAPES = attentionShapes(args.shapes);

// ---- 1. Copy bandwidth: the ceiling every floor is measured against. ----
using timer = new AttentionTimer(cuda, stream);
const bandwidth = timer.bandwidth;
console.log(
  `${info.name} (${info.multiprocessors} SMs, L2 ${info.l2Bytes >> 20} MiB): copy bandwidth ${
    (bandwidth / 1e12).toFixed(2)
  } TB/s (read + write)`,
);

// ---- 2. PyTorch SDPA in the decode layout (separate process, run first: it frees its memory). ----
let sdpa: SdpaResult[] = [];
let sdpaNote = "";
if (!args["no-sdpa"]) {
  const jobs = SHAPES.flatMap((s) =>
    batches.flatMap((b) =>
      contexts.map((L) => ({ batch: b, q_heads: 32, kv_heads: s.kv, head_dim: 128, context: L }))
    )
  ).filter((j) => 2 * j.batch * j.kv_heads * j.context * 256 < info.totalMemBytes * 0.4);
  ({ results: sdpa, note: sdpaNote } = runSdpa(jobs));
  console.log(sdpaNote);
}

// ---- 3. Dense and Double Sparsity through the generated kernels. ----
interface Row {
  shape: string;
  batch: number;
  context: number;
  method: string;
  label: string;
  ms: number;
  bytes: number;
  /** Bytes / copy bandwidth, in ms. */
  floorMs: number;
  scoreMs?: number;
  selectMs?: number;
  /** Double Sparsity rows: each stage's time against its own bytes. */
  stages?: readonly StageTiming[];
  sdpaMs?: number;
}
const rows: Row[] = [];

// Progress over the (shape, method, batch, context) cases, skipped ones included.
const totalCases = SHAPES.reduce((n, s) => n + s.methods.length, 0) * batches.length *
  contexts.length;
let casesDone = 0;
const casesBar = new Progress("bench", "cases");
for (const shape of SHAPES) {
  for (const method of shape.methods) {
    const spec = method.spec!;
    using variant = await Variant.load(cuda, spec, { stream });
    variant.bindStream(stream);
    for (const B of batches) {
      for (const L of contexts) {
        casesBar.update(casesDone++, totalCases);
        const tooLarge = timer.tooLarge(spec, B, L);
        if (tooLarge) {
          console.log(`skip ${shape.name} B=${B} L=${L}: ${tooLarge}`);
          continue;
        }
        const sdpaMs = sdpaMsFor(sdpa, B, shape.kv, L);
        const first = method === shape.methods[0];
        const t = timer.time(variant, spec, B, L, { repeats, dense: first });
        if (t.dense) {
          rows.push({
            shape: shape.name,
            batch: B,
            context: L,
            method: "dense",
            label: "dense (generated split-K)",
            ...t.dense,
            sdpaMs,
          });
        }
        rows.push({
          shape: shape.name,
          batch: B,
          context: L,
          method: method.key,
          label: method.label,
          ms: t.ms,
          bytes: t.bytes,
          floorMs: t.floorMs,
          scoreMs: t.scoreMs,
          selectMs: t.selectMs,
          stages: t.stages,
          sdpaMs,
        });
        console.log(
          `${shape.name} B=${B} L=${L} ${method.key}: ${t.ms.toFixed(4)} ms (floor ${
            t.floorMs.toFixed(4)
          }, ` +
            `score ${t.scoreMs.toFixed(4)}, select ${t.selectMs.toFixed(4)}), copies ${t.copies}`,
        );
      }
    }
  }
}

casesBar.update(totalCases, totalCases);

// ---- 4. Report. ----
const fmt = (x: number | undefined, digits = 3) => (x === undefined ? "-" : x.toFixed(digits));
const date = new Date().toISOString().slice(0, 10);
const card = cardSlug(info.name);
const lines: string[] = [
  `# Decode attention on ${info.name} (${date})`,
  "",
  `Copy bandwidth ${
    (bandwidth / 1e12).toFixed(2)
  } TB/s (device-to-device copy of 1 GiB, read + write). ` +
  `${sdpaNote}. Times are CUDA-event medians of ${repeats} graph replays; budget k = context/16; ` +
  `fp16 K/V, d = 128, 16-token pages. "% floor" = (bytes / copy bandwidth) / time. "score" = the ` +
  `score kernel alone (keys, histogram, and the threshold bin found by its last block); "top-k" = ` +
  `the select and resolve kernels' share of the step, measured as (score+select+resolve) - score.`,
  "",
];
for (const shape of SHAPES) {
  lines.push(`## ${shape.name} (32 query heads, ${shape.kv} kv heads)`, "");
  lines.push(
    "| batch | context | method | time ms | bytes MB | GB/s | % floor | score ms | top-k % | SDPA ms | vs SDPA |",
  );
  lines.push("|---|---|---|---|---|---|---|---|---|---|---|");
  for (const r of rows.filter((r) => r.shape === shape.name)) {
    lines.push(
      `| ${r.batch} | ${r.context} | ${r.label} | ${fmt(r.ms, 4)} | ${fmt(r.bytes / 1e6, 1)} | ` +
        `${fmt(r.bytes / (r.ms / 1e3) / 1e9, 0)} | ${fmt((100 * r.floorMs) / r.ms, 1)} | ${
          fmt(r.scoreMs, 4)
        } | ` +
        `${r.selectMs !== undefined ? fmt((100 * r.selectMs) / r.ms, 1) : "-"} | ${
          fmt(r.sdpaMs, 4)
        } | ` +
        `${r.sdpaMs ? fmt(r.sdpaMs / r.ms, 2) + "x" : "-"} |`,
    );
  }
  lines.push("");
  // Where a Double Sparsity step's time goes: each stage against the bytes only it must move.
  const staged = rows.filter((r) => r.shape === shape.name && r.stages);
  if (staged.length > 0) {
    lines.push(
      `### ${shape.name}: the Double Sparsity step by stage`,
      "",
      "Each stage's time (from differences of graph timings: score; score + select + resolve; the " +
        "whole step) and the share of its own byte floor: score = label rows at their bit width + " +
        "2-byte score keys written; select + resolve = the keys read back; attend = the selected " +
        "K/V rows + the split partials the merge reads.",
      "",
      "| batch | context | method | score ms (% floor) | select + resolve ms (% floor) | attend ms (% floor) | step % floor |",
      "|---|---|---|---|---|---|---|",
    );
    const cell = (t: StageTiming) =>
      `${fmt(t.ms, 4)} (${t.ms > 0 ? fmt((100 * t.floorMs) / t.ms, 0) : "-"}%)`;
    for (const r of staged) {
      lines.push(
        `| ${r.batch} | ${r.context} | ${r.label} | ${r.stages!.map(cell).join(" | ")} | ${
          fmt((100 * r.floorMs) / r.ms, 1)
        } |`,
      );
    }
    lines.push("");
  }
}
const md = lines.join("\n");
console.log("\n" + md);
const stem = join(outDir, `attention-${card}-${date}`);
writeJsonReport(args.json ?? `${stem}.json`, {
  device: info,
  date,
  bandwidth,
  sdpaNote,
  repeats,
  rows,
});
writeFileAtomic(`${stem}.md`, md + "\n");
writeFileAtomic(
  `${stem}.svg`,
  lineChart(
    `Decode attention on ${info.name}, ${date} (time vs context; budget 1/16)`,
    SHAPES.flatMap((s) =>
      batches.flatMap((b) => {
        const of = (m: string) =>
          rows.filter((r) => r.shape === s.name && r.batch === b && r.method === m).map((r) => ({
            x: r.context,
            y: r.ms,
          }));
        const sd = rows.filter((r) =>
          r.shape === s.name && r.batch === b && r.method === "dense" && r.sdpaMs
        )
          .map((r) => ({ x: r.context, y: r.sdpaMs! }));
        return [
          { panel: `${s.name} B=${b}`, name: "SDPA", points: sd },
          { panel: `${s.name} B=${b}`, name: "dense", points: of("dense") },
          ...s.methods.map((m) => ({ panel: `${s.name} B=${b}`, name: m.key, points: of(m.key) })),
        ];
      })
    ),
  ),
);
console.log(`wrote ${stem}.{md,svg}`);
