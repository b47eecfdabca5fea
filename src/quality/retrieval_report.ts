/**
 * The retrieval evaluation's record (JSON) and its Markdown: accuracy per context length against
 * the reference, per depth bucket, per length and bucket, and every document whose outcome
 * differs from dense attention under the same protocol (the flips to explain).
 */
import type { RetrievalPreset } from "./retrieval_presets.ts";
import { retrievalTolerance } from "./retrieval_presets.ts";
import type {
  AccuracyCell,
  RetrievalOutcome,
  RetrievalProtocol,
  RetrievalSummary,
} from "./retrieval_eval.ts";

export interface RetrievalRun {
  readonly preset: RetrievalPreset;
  /** spec.variant, or "dense". */
  readonly variant: string;
  readonly protocol: RetrievalProtocol;
  readonly summary: RetrievalSummary;
  readonly outcomes: readonly RetrievalOutcome[];
  readonly seconds: number;
}

export interface RetrievalRecord {
  readonly date: string;
  readonly device: string;
  readonly model: string;
  readonly data: string;
  readonly channels: string | null;
  readonly depthBuckets: number;
  /** `--offload-mode` of the GPU runs of Double Sparsity variants, or null (K/V on the GPU). */
  readonly offloadMode?: string | null;
  readonly runs: readonly RetrievalRun[];
}

const pct = (c: AccuracyCell | undefined) =>
  c ? `${(100 * c.accuracy).toFixed(1)}% (${c.correct}/${c.total})` : "-";

/** Whether a teacher-forced cell is within the tolerance of the reference. */
export function withinReference(run: RetrievalRun, length: string): boolean | undefined {
  const want = run.preset.expected[length];
  const got = run.summary.byLength[length];
  if (run.protocol !== "teacher-forced" || want === undefined || !got) return undefined;
  return Math.abs(got.accuracy - want) <= retrievalTolerance(run.preset) + 1e-9;
}

/** Documents whose correctness differs from the dense run of the same protocol. */
export function flips(runs: readonly RetrievalRun[]): {
  run: RetrievalRun;
  outcome: RetrievalOutcome;
  dense: RetrievalOutcome;
}[] {
  const out = [];
  for (const run of runs) {
    const dense = runs.find((r) => r.variant === "dense" && r.protocol === run.protocol);
    if (!dense || run === dense) continue;
    const byId = new Map(dense.outcomes.map((o) => [o.id, o]));
    for (const o of run.outcomes) {
      const d = byId.get(o.id);
      if (d && d.correct !== o.correct) out.push({ run, outcome: o, dense: d });
    }
  }
  return out;
}

export function retrievalMarkdown(record: RetrievalRecord): string {
  const runs = record.runs;
  const lengths = [...new Set(runs.flatMap((r) => Object.keys(r.summary.byLength)))]
    .sort((a, b) => Number(a) - Number(b));
  const buckets = [...new Set(runs.flatMap((r) => Object.keys(r.summary.byDepth)))].sort();
  const lines = [
    `# Line retrieval (${record.date.slice(0, 10)})`,
    "",
    `- model: ${record.model}`,
    `- data: ${record.data}`,
    `- channels: ${record.channels ?? "none needed"}`,
    `- device: ${record.device}`,
    ...(record.offloadMode
      ? [
        `- offload: --offload-mode ${record.offloadMode} (Double Sparsity variants' K/V in pinned ` +
        "host memory; dense runs keep theirs on the GPU)",
      ]
      : []),
    "- teacher-forced: prompt + answer in one pass, every position attends to the top-k of its " +
    "own prefix (k = max(16, ceil(len/16))); correct when the argmax gives every digit",
    "- deployed: dense prefill of the prompt but its last byte, then that byte and the answer " +
    "as Double Sparsity decode steps, greedy; correct when the generated digits are exact",
    "",
    "## Accuracy by context length",
    "",
    `| variant | protocol | ${lengths.join(" | ")} | reference (teacher-forced) | within |`,
    `|---|---|${lengths.map(() => "---|").join("")}---|---|`,
  ];
  for (const run of runs) {
    const ref = lengths.map((L) => {
      const e = run.preset.expected[L];
      return e === undefined ? "-" : `${(100 * e).toFixed(1)}%`;
    }).join(" / ");
    const within = lengths.map((L) => withinReference(run, L));
    const verdict = within.every((w) => w === undefined)
      ? "-"
      : within.map((w) => (w === undefined ? "-" : w ? "yes" : "NO")).join(" / ");
    lines.push(
      `| ${run.preset.name} | ${run.protocol} | ${
        lengths.map((L) => pct(run.summary.byLength[L])).join(" | ")
      } | ${ref} | ${verdict} |`,
    );
  }
  lines.push(
    "",
    "## Accuracy by depth of the asked line (all lengths)",
    "",
    `| variant | protocol | ${buckets.join(" | ")} |`,
    `|---|---|${buckets.map(() => "---|").join("")}`,
  );
  for (const run of runs) {
    lines.push(
      `| ${run.preset.name} | ${run.protocol} | ${
        buckets.map((b) => pct(run.summary.byDepth[b])).join(" | ")
      } |`,
    );
  }
  for (const L of lengths) {
    lines.push(
      "",
      `## ${L} bytes, by depth`,
      "",
      `| variant | protocol | ${buckets.join(" | ")} |`,
      `|---|---|${buckets.map(() => "---|").join("")}`,
    );
    for (const run of runs) {
      const row = run.summary.byLengthDepth[L] ?? {};
      lines.push(
        `| ${run.preset.name} | ${run.protocol} | ${buckets.map((b) => pct(row[b])).join(" | ")} |`,
      );
    }
  }
  const changed = flips(runs);
  lines.push("", "## Documents that flip against dense (same protocol)", "");
  if (changed.length === 0) lines.push("none");
  else {
    lines.push(
      "| variant | protocol | document | length | depth | expected | dense | variant's |",
      "|---|---|---|---|---|---|---|---|",
    );
    for (const { run, outcome: o, dense } of changed) {
      lines.push(
        `| ${run.preset.name} | ${run.protocol} | ${o.id} | ${o.contextBytes} | ` +
          `${o.depth.toFixed(3)} | ${o.expected} | ${JSON.stringify(dense.got)} | ` +
          `${JSON.stringify(o.got)} |`,
      );
    }
  }
  return lines.join("\n") + "\n";
}
