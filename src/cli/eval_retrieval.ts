/**
 * `deno task eval:retrieval`: line-retrieval accuracy (issue 10) of dense attention and the
 * Double Sparsity presets, teacher-forced and as deployed, per context length and per depth of
 * the asked line; writes <out>/retrieval.json (with every document's outcome; --json FILE
 * instead when given) and <out>/retrieval.md.
 *
 *   deno task eval:retrieval [--data FILE] [--lengths 2048,4096,8000] [--per-length N]
 *     [--variants LIST] [--protocols teacher-forced,deployed] [--depth-buckets 5]
 *     [--channels FILE] [--out DIR] [--json FILE] [--device auto|cpu|gpu] [--model DIR] [--seed 1]
 *     [--offload-mode MODE]
 *
 * Exit code 0 whatever the accuracies (a report).
 */
import { existsSync } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { packageRoot } from "../util/package_root.ts";
import { BUNDLED_MODEL_DIR, positiveInt } from "./args.ts";
import { writeJsonReport } from "./json_report.ts";
import { Progress } from "./progress.ts";
import { type FlagValues, runCommand } from "./front_door.ts";
import { DsError, UsageError } from "../util/errors.ts";
import { writeFileAtomic } from "../util/fs.ts";
import { parseDeviceChoice, resolveDevice } from "../runtime/device.ts";
import { loadModel } from "../checkpoint/weights.ts";
import { readChannelConfig } from "../quality/channel_config.ts";
import { parsePresetList, presetVariant } from "../quality/evaluate.ts";
import { readRetrievalDocuments, selectDocuments } from "../quality/retrieval.ts";
import {
  RETRIEVAL_PROTOCOLS,
  retrievalCpu,
  retrievalGpu,
  type RetrievalProtocol,
  summarize,
} from "../quality/retrieval_eval.ts";
import { RETRIEVAL_PRESETS } from "../quality/retrieval_presets.ts";
import { OFFLOAD_MODES, offloadFromFlags } from "./offload_flags.ts";
import { retrievalMarkdown, type RetrievalRun } from "../quality/retrieval_report.ts";

const HELP = `deno task eval:retrieval [options]
  --model DIR            model directory (default examples/models/tiny-code-llama-8k)
  --data FILE            JSONL of {prompt, answer[, context_bytes, depth]}
                         (default examples/data/line-retrieval.jsonl)
  --lengths LIST         context lengths to run, e.g. 2048,4096 (default: every length in the file)
  --per-length N         at most N documents per length, spread over depth (default: all)
  --variants LIST        comma list of presets, or "all" (default); presets:
${RETRIEVAL_PRESETS.map((p) => `                           ${p.name}`).join("\n")}
  --protocols LIST       teacher-forced, deployed or both (default both)
  --depth-buckets N      depth buckets of the report (default 5)
  --channels FILE        qk channel config (default examples/data/<model>-qk-channels.json)
  --seed N               seed of the random-channel ablation (default 1)
  --out DIR              where <out>/retrieval.json and <out>/retrieval.md go
                         (default <tmp>/double-sparsity-retrieval-<time>, printed)
  --json FILE            write the JSON record here instead of <out>/retrieval.json
  --device auto|cpu|gpu  (default auto; the CPU is slow: use --lengths and --per-length)
  --offload-mode MODE    GPU only: the Double Sparsity variants decode with their K/V in pinned
                         host memory (${Object.keys(OFFLOAD_MODES).join(", ")}; see
                         docs/offload.md); exact modes give the on-GPU accuracy, and
                         predict-skip-missed measures what the paper's approximate scheme costs.
                         Dense runs keep their K/V on the GPU`;

function parseProtocols(value: string): RetrievalProtocol[] {
  if (value === "both") return [...RETRIEVAL_PROTOCOLS];
  return value.split(",").map((p) => {
    const name = p.trim() as RetrievalProtocol;
    if (!RETRIEVAL_PROTOCOLS.includes(name)) {
      throw new UsageError(
        `--protocols: got ${JSON.stringify(p)}; allowed: ${RETRIEVAL_PROTOCOLS.join(", ")}, both`,
      );
    }
    return name;
  });
}

const COMMAND = {
  name: "eval:retrieval",
  usage: HELP,
  options: {
    model: { type: "string" },
    data: { type: "string" },
    lengths: { type: "string" },
    "per-length": { type: "string" },
    variants: { type: "string" },
    protocols: { type: "string", default: "both" },
    "depth-buckets": { type: "string", default: "5" },
    channels: { type: "string" },
    seed: { type: "string", default: "1" },
    out: { type: "string" },
    json: { type: "string" },
    device: { type: "string", default: "auto" },
    "offload-mode": { type: "string" },
  },
} as const;

async function main(args: FlagValues<typeof COMMAND.options>): Promise<number> {
  const root = packageRoot();
  const modelDir = args.model ?? BUNDLED_MODEL_DIR;
  const data = args.data ?? path.join(root, "examples", "data", "line-retrieval.jsonl");
  const lengths = args.lengths?.split(",").map((s) => positiveInt("--lengths", s.trim()));
  const perLength = args["per-length"] === undefined
    ? undefined
    : positiveInt("--per-length", args["per-length"]);
  const buckets = positiveInt("--depth-buckets", args["depth-buckets"]);
  const presets = parsePresetList(args.variants, RETRIEVAL_PRESETS);
  const protocols = parseProtocols(args.protocols);
  const seed = positiveInt("--seed", args.seed);
  const offloadMode = args["offload-mode"];
  const offload = offloadFromFlags(undefined, offloadMode);
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  const outDir = args.out ?? path.join(os.tmpdir(), `double-sparsity-retrieval-${stamp}`);

  const deviceChoice = parseDeviceChoice(args.device);
  /** Offload needs the GPU: said before anything loads where --device cpu asks for the CPU. */
  const refuseOffloadOnCpu = (reason: string) => {
    if (offload) {
      throw new UsageError(
        `--offload-mode: got ${offloadMode} with the CPU device (${reason}); allowed: only on a GPU`,
      );
    }
  };
  if (deviceChoice === "cpu") refuseOffloadOnCpu("--device cpu");
  const model = await loadModel(modelDir);
  const docs = selectDocuments(await readRetrievalDocuments(data), lengths, perLength);
  const modelName = path.basename(path.resolve(modelDir));
  const channelsPath = args.channels ??
    path.join(root, "examples", "data", `${modelName}-qk-channels.json`);
  const needsChannels = presets.some((p) => p.selection && !p.randomChannels);
  if (needsChannels && !existsSync(channelsPath)) {
    throw new DsError(
      `${channelsPath}: no channel config; make it with \`deno task calibrate --recipe ` +
        `retrieval-mix --out ${channelsPath}\` or pass --channels FILE`,
    );
  }
  const config = needsChannels ? await readChannelConfig(channelsPath, model.config) : undefined;
  const device = resolveDevice(deviceChoice);
  if (device.kind !== "gpu") refuseOffloadOnCpu(device.reason);
  console.log(`device: ${device.name}${device.kind === "cpu" ? ` (${device.reason})` : ""}`);
  console.log(
    `${docs.length} document(s) of ${data} (lengths ${
      [...new Set(docs.map((d) => d.contextBytes))].join(", ")
    }); ${presets.length} variant(s); ${protocols.join(" and ")}` +
      (config ? `; channels ${channelsPath}` : ""),
  );

  const runs: RetrievalRun[] = [];
  for (const protocol of protocols) {
    for (const preset of presets) {
      const variant = presetVariant(preset, model.config, { config, randomSeed: seed });
      const bar = new Progress(`${protocol} | ${preset.name}`, "documents");
      const progress = (done: number, total: number) => bar.update(done, total);
      const started = performance.now();
      const outcomes = device.kind === "gpu"
        ? await retrievalGpu(device.cuda, model, docs, variant, protocol, progress, offload)
        : retrievalCpu(model, docs, variant, protocol, progress);
      const summary = summarize(outcomes, buckets);
      const seconds = (performance.now() - started) / 1000;
      runs.push({
        preset,
        variant: variant.spec?.variant ?? "dense",
        protocol,
        summary,
        outcomes,
        seconds,
      });
      const perLen = Object.entries(summary.byLength)
        .map(([L, c]) => `${L}: ${(100 * c.accuracy).toFixed(1)}%`).join(", ");
      console.log(
        `${protocol.padEnd(14)} ${preset.name.padEnd(30)} ${perLen} (${seconds.toFixed(1)} s)`,
      );
    }
  }

  const record = {
    date: new Date().toISOString(),
    device: device.name,
    model: modelDir,
    data,
    channels: config ? channelsPath : null,
    depthBuckets: buckets,
    offloadMode: offload ? offloadMode! : null,
    runs,
  };
  const markdown = retrievalMarkdown(record);
  console.log("\n" + markdown);
  // Named from one stem: "<out>/retrieval" + .json and .md.
  const stem = path.join(outDir, "retrieval");
  writeJsonReport(args.json ?? `${stem}.json`, record);
  writeFileAtomic(`${stem}.md`, markdown);
  console.log(`wrote ${path.resolve(stem)}.md`);
  return 0;
}

if (import.meta.main) await runCommand(COMMAND, ({ values }) => main(values));
