/**
 * `deno task tune` (GPU machine): the speed/accuracy frontier of Double Sparsity variants for a
 * model and a target context (issue 15). For every variant of a grid (src/quality/frontier.ts):
 *  - speed: one decode-attention step at --batch and --context on the timing shape (the model's
 *    own heads, or --shape llama2-7b|llama3-8b), measured as `deno task bench` measures it, vs
 *    this project's dense kernel and PyTorch SDPA (bench/sdpa.py, same call);
 *  - accuracy on the model: teacher-forced bits/byte on held-out text and line-retrieval
 *    accuracy (teacher-forced, and as deployed for reference), through the eval code;
 * dense is measured once as the reference row. Writes the Pareto front and the recommended
 * variants for "<= 1%" and "<= 3%" loss to <out>/frontier-<model>-<card>-<date>.{json,md,svg}
 * and <out>/frontier-latest.md (the same table, a stable name to link).
 *
 *   deno task tune [--model DIR] [--context N] [--batch N] [--shape model|llama2-7b|llama3-8b]
 *                  [--grid quick|full] [--out DIR] [--json FILE] [--no-sdpa] ...
 */
import { existsSync } from "node:fs";
import * as path from "node:path";
import { BUNDLED_MODEL_DIR, positiveInt } from "./args.ts";
import { choiceFlag, type FlagValues, intFlag, runCommand } from "./front_door.ts";
import { writeJsonReport } from "./json_report.ts";
import { Progress } from "./progress.ts";
import { cardSlug, defaultResultsDir } from "./results.ts";
import { packageRoot } from "../util/package_root.ts";
import { DsError } from "../util/errors.ts";
import { writeFileAtomic } from "../util/fs.ts";
import { requireGpu } from "../runtime/device.ts";
import { Variant } from "../runtime/variant.ts";
import { AttentionTimer, type StepTiming } from "../runtime/attention_timing.ts";
import { runSdpa, sdpaMsFor } from "../runtime/sdpa_baseline.ts";
import { loadModel } from "../checkpoint/weights.ts";
import { readChannelConfig } from "../quality/channel_config.ts";
import { readChannelStatistics, statsPathFor } from "../quality/calibrate_run.ts";
import { evaluateGpu, type EvalVariant, presetVariant } from "../quality/evaluate.ts";
import { checkWindowFits, readWindows } from "../quality/windows.ts";
import { readRetrievalDocuments, selectDocuments } from "../quality/retrieval.ts";
import { retrievalGpu, type RetrievalProtocol, summarize } from "../quality/retrieval_eval.ts";
import {
  type AttentionShape,
  GRIDS,
  modelSpeedup,
  planGrid,
  type PlannedVariant,
  pointPreset,
  TIMING_SHAPES,
} from "../quality/frontier.ts";
import {
  buildFrontier,
  frontierMarkdown,
  type FrontierRow,
  frontierSvg,
} from "../quality/frontier_report.ts";

const SHAPE_NAMES = ["model", ...TIMING_SHAPES.map((s) => s.name)] as const;

const HELP = `deno task tune [options]
  --model DIR            model directory (default examples/models/tiny-code-llama-8k)
  --context N            target context of the speed measurement (default 32768)
  --batch N              sequences per step of the speed measurement (default 8)
  --shape NAME           timing shape: model (its own heads, default), ${
  TIMING_SHAPES.map((s) => s.name).join(", ")
}
  --grid quick|full      quick: 18 variants covering the extremes (default); full: channels
                         8-64 x bits 16/8/4/2 x budget 1/8-1/64 x head/group x dense layers
                         none/0,1 (256)
  --windows N            bits/byte windows (default 8)
  --window-size T        bytes per window (default 8192, at most the model's positions)
  --data FILE            bits/byte text (default examples/data/python-heldout.txt)
  --retrieval-data FILE  line-retrieval JSONL (default examples/data/line-retrieval.jsonl)
  --per-length N         at most N retrieval documents per context length (default: all)
  --channels FILE        qk channel config (default examples/data/<model>-qk-channels.json;
                         <channels>.stats.json is used for group rankings when present)
  --repeats N            graph replays per speed measurement (default 30)
  --no-sdpa              skip the PyTorch SDPA baseline
  --out DIR              results folder (default ./results or $DS_RESULTS_DIR)
  --json FILE            write the JSON record here instead of <out>/frontier-<model>-<card>-<date>.json`;

const COMMAND = {
  name: "tune",
  usage: HELP,
  options: {
    model: { type: "string" },
    context: { type: "string", default: "32768" },
    batch: { type: "string", default: "8" },
    shape: { type: "string", default: "model" },
    grid: { type: "string", default: "quick" },
    windows: { type: "string", default: "8" },
    "window-size": { type: "string", default: "8192" },
    data: { type: "string" },
    "retrieval-data": { type: "string" },
    "per-length": { type: "string" },
    channels: { type: "string" },
    repeats: { type: "string", default: "30" },
    "no-sdpa": { type: "boolean", default: false },
    out: { type: "string" },
    json: { type: "string" },
  },
} as const;

/** The stem of the copy of the latest table, under a name that stays the same between runs. */
const LATEST_STEM = "frontier-latest";

/** The ranking protocol of retrieval (every position sparse, as the bits/byte protocol). */
const RANKED: RetrievalProtocol = "teacher-forced";

async function main(args: FlagValues<typeof COMMAND.options>): Promise<number> {
  // ---- flags, all checked before anything heavy ----
  const root = packageRoot();
  const modelDir = args.model ?? BUNDLED_MODEL_DIR;
  const context = intFlag("context", args.context, { min: 16 });
  const batch = positiveInt("--batch", args.batch);
  const shapeName = choiceFlag("shape", args.shape, SHAPE_NAMES);
  const grid = choiceFlag("grid", args.grid, GRIDS);
  const numWindows = positiveInt("--windows", args.windows);
  const windowSize = positiveInt("--window-size", args["window-size"]);
  const repeats = positiveInt("--repeats", args.repeats);
  const perLength = args["per-length"] === undefined
    ? undefined
    : positiveInt("--per-length", args["per-length"]);
  const data = args.data ?? path.join(root, "examples", "data", "python-heldout.txt");
  const retrievalData = args["retrieval-data"] ??
    path.join(root, "examples", "data", "line-retrieval.jsonl");
  const modelName = path.basename(path.resolve(modelDir));
  const channelsPath = args.channels ??
    path.join(root, "examples", "data", `${modelName}-qk-channels.json`);
  const outDir = args.out ?? defaultResultsDir();

  // ---- model, channels, grid ----
  const model = await loadModel(modelDir);
  const c = model.config;
  checkWindowFits("--window-size", windowSize, c.maxPositionEmbeddings);
  if (!existsSync(channelsPath)) {
    throw new DsError(
      `${channelsPath}: no channel config; make it with \`deno task calibrate --recipe ` +
        `retrieval-mix --out ${channelsPath}\` or pass --channels FILE`,
    );
  }
  const config = await readChannelConfig(channelsPath, c);
  const statsPath = statsPathFor(channelsPath);
  const stats = existsSync(statsPath) ? await readChannelStatistics(statsPath) : undefined;
  const modelShape: AttentionShape = {
    name: modelName,
    headDim: c.headDim,
    numQHeads: c.numHeads,
    numKvHeads: c.numKvHeads,
    numLayers: c.numLayers,
  };
  const timingShape = shapeName === "model"
    ? modelShape
    : TIMING_SHAPES.find((s) => s.name === shapeName)!;
  const { variants, skipped } = planGrid(grid, modelShape, timingShape);
  console.log(
    `grid ${grid}: ${variants.length} variant(s), ${skipped.length} skipped; speed on ` +
      `${timingShape.name} at batch ${batch}, context ${context}; accuracy on ${modelName}`,
  );
  for (const s of skipped) console.log(`  skip ${s.name}: ${s.reason}`);
  if (variants.length === 0) throw new DsError(`tune: no valid variant in the ${grid} grid`);
  const windows = await readWindows(data, windowSize, numWindows);
  const docs = selectDocuments(await readRetrievalDocuments(retrievalData), undefined, perLength);
  const evalVariants: EvalVariant[] = variants.map((v) =>
    presetVariant(pointPreset(v.point), c, { config, stats })
  );

  const cuda = requireGpu("deno task tune");
  using stream = cuda.stream();
  const started = performance.now();

  // ---- SDPA first, in its own process (it frees its memory when it exits) ----
  const sdpa = args["no-sdpa"] ? { results: [], note: "SDPA skipped (--no-sdpa)" } : runSdpa([{
    batch,
    q_heads: timingShape.numQHeads,
    kv_heads: timingShape.numKvHeads,
    head_dim: timingShape.headDim,
    context,
  }]);
  console.log(sdpa.note);
  const sdpaMs = sdpaMsFor(sdpa.results, batch, timingShape.numKvHeads, context) ?? null;

  // ---- speed ----
  using timer = new AttentionTimer(cuda, stream);
  const tooLarge = timer.tooLarge(variants[0].timingSpec, batch, context);
  if (tooLarge) throw new DsError(`tune: batch ${batch} x context ${context}: ${tooLarge}`);
  const speed = new Map<PlannedVariant, StepTiming>();
  const speedBar = new Progress("speed", "variants");
  for (const [i, v] of variants.entries()) {
    speedBar.update(i, variants.length);
    using variant = await Variant.load(cuda, v.timingSpec, { stream });
    variant.bindStream(stream);
    speed.set(v, timer.time(variant, v.timingSpec, batch, context, { repeats, dense: i === 0 }));
  }
  speedBar.update(variants.length, variants.length);
  const dense = speed.get(variants[0])!.dense!;

  // ---- bits/byte: dense and every variant in one call (relative to its dense row) ----
  let bar: { variant: string; progress: Progress } | undefined;
  const evalRows = await evaluateGpu(cuda, model, windows, [{ name: "dense" }, ...evalVariants], {
    onProgress: (p) => {
      if (bar?.variant !== p.variant) {
        bar = { variant: p.variant, progress: new Progress(`bits/byte | ${p.variant}`, p.unit) };
      }
      bar.progress.update(p.done, p.total, p.unit);
    },
  });

  // ---- retrieval: teacher-forced (ranked) and deployed ----
  const retrievalBar = new Progress("retrieval", "documents");
  const retrievalTotal = 2 * docs.length * (variants.length + 1);
  let retrievalDone = 0;
  const accuracy = async (v: EvalVariant, protocol: RetrievalProtocol) => {
    const outcomes = await retrievalGpu(cuda, model, docs, v, protocol, (done, total) => {
      retrievalBar.update(retrievalDone + done, retrievalTotal);
      if (done === total) retrievalDone += total;
    });
    return summarize(outcomes, 1).overall.accuracy;
  };
  const denseRanked = await accuracy({ name: "dense" }, RANKED);
  const denseDeployed = await accuracy({ name: "dense" }, "deployed");

  const rows: FrontierRow[] = [];
  for (const [i, v] of variants.entries()) {
    const t = speed.get(v)!;
    const e = evalRows[i + 1];
    const ranked = await accuracy(evalVariants[i], RANKED);
    const deployed = await accuracy(evalVariants[i], "deployed");
    const nDense = v.point.denseLayers.length;
    const sparseRecall = e.recallPerLayer.filter((_, l) => !v.point.denseLayers.includes(l));
    rows.push({
      name: v.name,
      variant: v.timingSpec.variant,
      bitsPerByte: e.bitsPerByte,
      bitsPerByteLossPct: 100 * (e.relativeToDense ?? NaN),
      retrievalAccuracy: ranked,
      retrievalDropPts: 100 * (denseRanked - ranked),
      deployedAccuracy: deployed,
      meanRecall: sparseRecall.reduce((a, b) => a + b, 0) / Math.max(1, sparseRecall.length),
      stepMs: t.ms,
      floorMs: t.floorMs,
      bytes: t.bytes,
      speedup: modelSpeedup(dense.ms, t.ms, dense.ms, timingShape.numLayers, nDense),
      speedupVsSdpa: sdpaMs === null
        ? null
        : modelSpeedup(sdpaMs, t.ms, dense.ms, timingShape.numLayers, nDense),
      stepSpeedup: dense.ms / t.ms,
      stepSpeedupVsSdpa: sdpaMs === null ? null : sdpaMs / t.ms,
    });
  }

  // ---- report ----
  const date = new Date().toISOString().slice(0, 10);
  const record = buildFrontier(
    {
      date,
      device: cuda.info.name,
      model: modelName,
      modelShape,
      timingShape,
      batch,
      context,
      grid,
      evalData: path.relative(root, path.resolve(data)),
      windows: numWindows,
      windowSize,
      retrievalData: path.relative(root, path.resolve(retrievalData)),
      retrievalDocuments: docs.length,
      channels: path.relative(root, path.resolve(channelsPath)),
      bandwidth: timer.bandwidth,
      sdpaNote: sdpa.note,
      repeats,
    },
    {
      bitsPerByte: evalRows[0].bitsPerByte,
      retrievalAccuracy: denseRanked,
      deployedAccuracy: denseDeployed,
      stepMs: dense.ms,
      floorMs: dense.floorMs,
      sdpaStepMs: sdpaMs,
    },
    rows,
    skipped,
    (performance.now() - started) / 1000,
  );
  const stem = path.join(outDir, `frontier-${modelName}-${cardSlug(cuda.info.name)}-${date}`);
  const svgName = `${path.basename(stem)}.svg`;
  const markdown = frontierMarkdown(record, svgName);
  console.log("\n" + markdown);
  writeJsonReport(args.json ?? `${stem}.json`, record);
  writeFileAtomic(`${stem}.md`, markdown);
  writeFileAtomic(`${stem}.svg`, frontierSvg(record));
  // The stable name the README links; its image points at this run's dated plot.
  const latest = path.join(outDir, `${LATEST_STEM}.md`);
  writeFileAtomic(latest, markdown);
  console.log(`wrote ${stem}.{md,svg} and ${latest}`);
  return 0;
}

if (import.meta.main) await runCommand(COMMAND, ({ values }) => main(values));
