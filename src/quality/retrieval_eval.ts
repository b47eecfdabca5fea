/**
 * Line-retrieval accuracy of attention variants, in two protocols:
 *
 *  - "teacher-forced" (the reference's protocol): prompt + answer digits in one pass, every
 *    position attending to the top-k of its own prefix (the Double Sparsity step runs at every
 *    position, as in the bits/byte protocol); correct when the argmax at each answer position
 *    is the expected digit.
 *  - "deployed" (what a user gets): the prompt up to its last byte prefilled with dense
 *    attention, then the last prompt byte and each generated digit fed as Double Sparsity decode
 *    steps, greedily; correct when the generated digits are the expected ones. Every answer
 *    digit comes out of a sparse decode step (none from the dense prefill).
 *
 * The GPU runs every document of one prompt length as one batch (GpuDecoder's public API only);
 * the CPU runs one document at a time through the reference decoder (slow: small slices).
 */
import type { Cuda } from "../cuda/driver.ts";
import type { LoadedModel } from "../checkpoint/weights.ts";
import { argmax, type CpuAttention, CpuDecoder, DenseAttention } from "../decoding/cpu_decoder.ts";
import { CpuDoubleSparsityAttention } from "../decoding/cpu_ds_attention.ts";
import { GpuDecoder } from "../decoding/gpu_decoder.ts";
import type { OffloadOptions } from "../runtime/offload_plan.ts";
import { labelChannelsFor } from "./channels.ts";
import type { EvalVariant } from "./evaluate.ts";
import {
  depthBucket,
  depthBucketLabel,
  digitTokens,
  promptTokens,
  type RetrievalDocument,
} from "./retrieval.ts";

export type RetrievalProtocol = "teacher-forced" | "deployed";
export const RETRIEVAL_PROTOCOLS: readonly RetrievalProtocol[] = ["teacher-forced", "deployed"];

export interface RetrievalOutcome {
  /** The document's id (its line in the JSONL file). */
  readonly id: number;
  readonly contextBytes: number;
  readonly depth: number;
  readonly expected: string;
  /** What the model produced at the answer positions (argmax or greedy), as text. */
  readonly got: string;
  readonly correct: boolean;
}

const decoder = new TextDecoder();
const asText = (ids: number[]) => decoder.decode(Uint8Array.from(ids));

function outcome(doc: RetrievalDocument, got: number[]): RetrievalOutcome {
  const text = asText(got);
  return {
    id: doc.id,
    contextBytes: doc.contextBytes,
    depth: doc.depth,
    expected: doc.digits,
    got: text,
    correct: text === doc.digits,
  };
}

/** The attention of a variant on the CPU (fresh per document length). */
function cpuAttention(
  model: LoadedModel,
  variant: EvalVariant,
  maxContext: number,
): { attention: CpuAttention; ds?: CpuDoubleSparsityAttention } {
  if (!variant.spec) return { attention: new DenseAttention() };
  if (!variant.channels) throw new Error(`variant "${variant.name}" has a spec but no channels`);
  const layers = Array.from({ length: model.config.numLayers }, (_, l) => l);
  const ds = new CpuDoubleSparsityAttention(
    variant.spec,
    layers.map((l) => labelChannelsFor(variant.spec!, variant.channels!, l)),
    maxContext,
  );
  return { attention: ds, ds };
}

/** One protocol on the CPU reference decoder, one document at a time. */
export function retrievalCpu(
  model: LoadedModel,
  docs: readonly RetrievalDocument[],
  variant: EvalVariant,
  protocol: RetrievalProtocol,
  onDocument?: (done: number, total: number) => void,
): RetrievalOutcome[] {
  const vocab = model.config.vocabSize;
  const longest = Math.max(...docs.map((d) => promptTokens(d).length + d.digits.length));
  const { attention, ds } = cpuAttention(model, variant, longest);
  const cpu = new CpuDecoder(model, { attention });
  return docs.map((doc, i) => {
    const prompt = promptTokens(doc);
    const digits = digitTokens(doc);
    cpu.reset();
    ds?.reset();
    let got: number[];
    if (protocol === "teacher-forced") {
      const logits = cpu.forward([...prompt, ...digits.slice(0, -1)]);
      got = digits.map((_, j) => argmax(logits, (prompt.length - 1 + j) * vocab, vocab));
    } else {
      if (ds) ds.prefill = true;
      if (prompt.length > 1) cpu.forward(prompt.slice(0, -1));
      if (ds) ds.prefill = false;
      got = cpu.generateGreedy(prompt.slice(-1), digits.length);
    }
    onDocument?.(i + 1, docs.length);
    return outcome(doc, got);
  });
}

/** Documents grouped by (prompt tokens, digits): each group runs as one GPU batch. */
function batches(docs: readonly RetrievalDocument[]): RetrievalDocument[][] {
  const groups = new Map<string, RetrievalDocument[]>();
  for (const d of docs) {
    const key = `${promptTokens(d).length}:${d.digits.length}`;
    groups.set(key, [...(groups.get(key) ?? []), d]);
  }
  return [...groups.values()];
}

/**
 * One protocol on the GPU through the generated kernels. Outcomes come back in `docs` order.
 */
export async function retrievalGpu(
  cuda: Cuda,
  model: LoadedModel,
  docs: readonly RetrievalDocument[],
  variant: EvalVariant,
  protocol: RetrievalProtocol,
  onBatch?: (done: number, total: number) => void,
  offload?: OffloadOptions,
): Promise<RetrievalOutcome[]> {
  const vocab = model.config.vocabSize;
  const results = new Map<RetrievalDocument, RetrievalOutcome>();
  let done = 0;
  for (const group of batches(docs)) {
    const prompts = group.map(promptTokens);
    const digits = group.map(digitTokens);
    const P = prompts[0].length, n = digits[0].length, B = group.length;
    using gpu = await GpuDecoder.create(cuda, model, {
      batch: B,
      maxContext: P + n,
      spec: variant.spec,
      channels: variant.channels,
      maxPrefillRows: Math.max(B, 4096),
      // Only a Double Sparsity variant has a selection to offload.
      offload: variant.spec ? offload : undefined,
    });
    const got = group.map(() => [] as number[]);
    const tokens = new Int32Array(B);
    if (protocol === "teacher-forced") {
      // Every position is a decode step: the sparse kernels run at each one.
      for (let t = 0; t < P + n - 1; t++) {
        for (let b = 0; b < B; b++) tokens[b] = t < P ? prompts[b][t] : digits[b][t - P];
        const logits = gpu.step(tokens);
        if (t >= P - 1) {
          for (let b = 0; b < B; b++) got[b].push(argmax(logits, b * vocab, vocab));
        }
      }
    } else {
      if (P > 1) gpu.prefill(prompts.map((p) => p.slice(0, -1)));
      for (let b = 0; b < B; b++) tokens[b] = prompts[b][P - 1];
      for (let j = 0; j < n; j++) {
        const logits = gpu.step(tokens);
        for (let b = 0; b < B; b++) {
          tokens[b] = argmax(logits, b * vocab, vocab);
          got[b].push(tokens[b]);
        }
      }
    }
    group.forEach((doc, b) => results.set(doc, outcome(doc, got[b])));
    onBatch?.(done += B, docs.length);
  }
  return docs.map((d) => results.get(d)!);
}

// ---- summaries -------------------------------------------------------------------------------

export interface AccuracyCell {
  readonly correct: number;
  readonly total: number;
  readonly accuracy: number;
}

export interface RetrievalSummary {
  readonly overall: AccuracyCell;
  /** By context length ("2048"). */
  readonly byLength: Record<string, AccuracyCell>;
  /** By depth bucket ("0.0-0.2"). */
  readonly byDepth: Record<string, AccuracyCell>;
  /** By length, then depth bucket. */
  readonly byLengthDepth: Record<string, Record<string, AccuracyCell>>;
}

function cell(outcomes: readonly RetrievalOutcome[]): AccuracyCell {
  const correct = outcomes.filter((o) => o.correct).length;
  return {
    correct,
    total: outcomes.length,
    accuracy: outcomes.length ? correct / outcomes.length : 0,
  };
}

function groupBy<T>(items: readonly T[], key: (t: T) => string, order: string[]): Map<string, T[]> {
  const m = new Map<string, T[]>(order.map((k) => [k, []]));
  for (const it of items) m.get(key(it))?.push(it);
  for (const [k, v] of m) if (v.length === 0) m.delete(k);
  return m;
}

/** Accuracy overall, per context length, per depth bucket, and per length and bucket. */
export function summarize(
  outcomes: readonly RetrievalOutcome[],
  buckets: number,
): RetrievalSummary {
  const lengths = [...new Set(outcomes.map((o) => o.contextBytes))].sort((a, b) => a - b)
    .map(String);
  const labels = Array.from({ length: buckets }, (_, b) => depthBucketLabel(b, buckets));
  const bucketOf = (o: RetrievalOutcome) => labels[depthBucket(o.depth, buckets)];
  const cells = (m: Map<string, RetrievalOutcome[]>) =>
    Object.fromEntries([...m].map(([k, v]) => [k, cell(v)]));
  const perLength = groupBy(outcomes, (o) => String(o.contextBytes), lengths);
  return {
    overall: cell(outcomes),
    byLength: cells(perLength),
    byDepth: cells(groupBy(outcomes, bucketOf, labels)),
    byLengthDepth: Object.fromEntries(
      [...perLength].map(([L, v]) => [L, cells(groupBy(v, bucketOf, labels))]),
    ),
  };
}
