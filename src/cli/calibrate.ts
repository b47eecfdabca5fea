/**
 * `deno task calibrate`: offline channel calibration (Double Sparsity step 1). Feeds calibration
 * windows through the model with dense attention, accumulates per layer, head and channel the
 * mean |q|, |k| and |q*k| (post-RoPE), and writes
 *   - the channel config (q, k and qk rankings, the authors' / SGLang format), atomically;
 *   - `<name>.stats.json` beside it: the raw statistics, so group rankings can be recomputed.
 * Then prints each head's leading channels and their agreement with a reference file.
 *
 *   deno task calibrate [--model DIR] [--data FILE] [--windows 16] [--window-size 2048]
 *                       [--recipe python|retrieval-mix] [--kinds q,k,qk]
 *                       [--out FILE] [--compare FILE] [--json FILE] [--device auto|cpu|gpu]
 */
import * as path from "node:path";
import { existsSync } from "node:fs";
import { packageRoot } from "../util/package_root.ts";
import { BUNDLED_MODEL_DIR, positiveInt } from "./args.ts";
import { type FlagValues, runCommand } from "./front_door.ts";
import { writeJsonReport } from "./json_report.ts";
import { Progress } from "./progress.ts";
import { UsageError } from "../util/errors.ts";
import {
  DEFAULT_CALIBRATION_DATA,
  defaultChannelPath,
  statsPathFor,
  writeChannelStatistics,
} from "../quality/calibrate_run.ts";
import { parseDeviceChoice, resolveDevice } from "../runtime/device.ts";
import {
  CHANNEL_KINDS,
  type ChannelKind,
  readChannelConfig,
  writeChannelConfig,
} from "../quality/channel_config.ts";
import { loadModel } from "../checkpoint/weights.ts";
import {
  checkWindowFits,
  PROTOCOL_CALIBRATION_WINDOWS,
  PROTOCOL_WINDOW,
} from "../quality/windows.ts";
import {
  calibrateSets,
  CALIBRATION_RECIPES,
  parseRecipe,
  recipeSets,
  RETRIEVAL_MIX,
} from "../quality/calibration_recipes.ts";

const HELP = `deno task calibrate [options]
  --model DIR          model directory (default examples/models/tiny-code-llama-8k)
  --data FILE          calibration text (default examples/data/python-calibration.txt)
  --windows N          calibration windows (default ${PROTOCOL_CALIBRATION_WINDOWS})
  --window-size T      bytes per window (default ${PROTOCOL_WINDOW})
  --recipe NAME        ${CALIBRATION_RECIPES.join(" | ")} (default python: the windows above);
                       retrieval-mix: ${RETRIEVAL_MIX.retrievalRows} built retrieval rows of ${RETRIEVAL_MIX.retrievalRowBytes} bytes and
                       ${RETRIEVAL_MIX.pythonWindows} windows of ${RETRIEVAL_MIX.pythonWindowBytes} bytes of --data (see src/quality/calibration_recipes.ts)
  --kinds LIST         rankings to write, of q, k, qk (default all three)
  --out FILE           channel config to write (default .cache/channels/<model>.json;
                       <model>-<N>x<T>.json for other sizes, <model>-retrieval-mix.json);
                       statistics go to <out>.stats.json
  --compare FILE       reference channel config to compare the qk rankings with (default for
                       the bundled model: examples/data/<model>-qk-channels.json when present)
  --json FILE          also write what was written, the leading channels and the agreement
                       as JSON
  --device auto|cpu|gpu  (default auto: the GPU when one is usable)`;

const COMMAND = {
  name: "calibrate",
  usage: HELP,
  options: {
    model: { type: "string" },
    data: { type: "string" },
    windows: { type: "string", default: String(PROTOCOL_CALIBRATION_WINDOWS) },
    "window-size": { type: "string", default: String(PROTOCOL_WINDOW) },
    recipe: { type: "string", default: "python" },
    kinds: { type: "string", default: CHANNEL_KINDS.join(",") },
    out: { type: "string" },
    compare: { type: "string" },
    json: { type: "string" },
    device: { type: "string", default: "auto" },
  },
} as const;

async function main(args: FlagValues<typeof COMMAND.options>): Promise<number> {
  const root = packageRoot();
  const modelDir = args.model ?? BUNDLED_MODEL_DIR;
  const data = args.data ?? DEFAULT_CALIBRATION_DATA;
  const numWindows = positiveInt("--windows", args.windows);
  const windowSize = positiveInt("--window-size", args["window-size"]);
  const recipe = parseRecipe(args.recipe);
  const kinds = args.kinds.split(",").map((k) => {
    const kind = k.trim() as ChannelKind;
    if (!CHANNEL_KINDS.includes(kind)) {
      throw new UsageError(
        `--kinds: got ${JSON.stringify(k)}; allowed: ${CHANNEL_KINDS.join(", ")}`,
      );
    }
    return kind;
  });
  const modelName = path.basename(path.resolve(modelDir));
  const out = args.out ??
    (recipe === "python"
      ? defaultChannelPath(modelDir, numWindows, windowSize)
      : path.join(root, ".cache", "channels", `${modelName}-${recipe}.json`));
  const bundledReference = path.join(root, "examples", "data", `${modelName}-qk-channels.json`);
  const compare = args.compare ?? (existsSync(bundledReference) ? bundledReference : undefined);

  const model = await loadModel(modelDir);
  const c = model.config;
  checkWindowFits("--window-size", windowSize, c.maxPositionEmbeddings);
  const sets = await recipeSets(recipe, data, { windows: numWindows, windowSize });
  console.log(
    `model ${modelDir}: ${c.numLayers} layers, ${c.numHeads} query / ${c.numKvHeads} kv heads, ` +
      `head dim ${c.headDim}`,
  );
  console.log(`calibrating (recipe ${recipe}) on ${sets.map((s) => s.label).join(" and ")}`);
  const device = resolveDevice(parseDeviceChoice(args.device));
  const bars = sets.map((_, i) => new Progress(`set ${i + 1}/${sets.length}`, "positions"));
  const run = await calibrateSets(model, sets, {
    device,
    onProgress: (i, p) => bars[i].update(p.done, p.total, p.unit),
  });
  console.log(`calibrated on ${run.deviceName} (${run.device}) in ${run.seconds.toFixed(1)} s`);

  await Deno.mkdir(path.dirname(path.resolve(out)), { recursive: true });
  await writeChannelConfig(out, run.stats.toChannelConfig(kinds));
  const statsOut = statsPathFor(out);
  writeChannelStatistics(statsOut, run.stats, {
    data: recipe === "python" ? data : `recipe ${recipe}: ${sets.map((s) => s.label).join("; ")}`,
    windowSize: recipe === "python" ? windowSize : undefined,
    device: run.deviceName,
  });
  console.log(`wrote ${out} (${kinds.join(", ")} rankings)`);
  console.log(`wrote ${statsOut} (raw statistics)`);

  const ours = run.stats.rankings("qk");
  const referenceConfig = compare ? await readChannelConfig(compare, c) : undefined;
  if (referenceConfig?.note) console.log(`note: ${referenceConfig.note}`);
  const reference = referenceConfig?.kinds.qk;
  if (compare && !reference) console.log(`${compare} holds no qk rankings; nothing to compare`);
  console.log(
    `\nqk rankings: leading 8 channels per layer and query head` +
      (reference ? `; top-16 agreement with ${compare}` : ""),
  );
  const heads: { layer: number; head: number; leading: number[]; agreement: number | null }[] = [];
  ours.forEach((layer, l) =>
    layer.forEach((row, h) => {
      let line = `  layer ${l} head ${h}: [${row.slice(0, 8).join(", ")}]`;
      let agreement = null;
      if (reference) {
        const ref = new Set(reference[l][h].slice(0, 16));
        agreement = row.slice(0, 16).filter((ch) => ref.has(ch)).length;
        line += `  top-16 agreement ${agreement}/16`;
      }
      heads.push({ layer: l, head: h, leading: row.slice(0, 8), agreement });
      console.log(line);
    })
  );
  const agreements = heads.flatMap((r) => r.agreement === null ? [] : [r.agreement]);
  const meanAgreement = agreements.length > 0
    ? agreements.reduce((a, b) => a + b, 0) / agreements.length
    : null;
  if (meanAgreement !== null) {
    console.log(`mean top-16 agreement: ${meanAgreement.toFixed(2)}/16`);
  }
  if (args.json !== undefined) {
    writeJsonReport(args.json, {
      model: modelDir,
      recipe,
      sets: sets.map((s) => s.label),
      device: run.device,
      deviceName: run.deviceName,
      seconds: run.seconds,
      channels: path.resolve(out),
      stats: path.resolve(statsOut),
      kinds,
      compare: reference ? compare : null,
      meanTop16Agreement: meanAgreement,
      heads,
    });
  }
  return 0;
}

if (import.meta.main) await runCommand(COMMAND, ({ values }) => main(values));
