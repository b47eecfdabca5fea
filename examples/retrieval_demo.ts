/**
 * `examples/decode.ts --retrieval`: one line-retrieval document, prefilled densely, then the
 * answer decoded greedily with dense attention and with Double Sparsity, side by side, and
 * where each Double Sparsity step looked: for every sparse layer and query head, which lines of
 * the document its selected tokens came from, and whether the asked line was among them.
 *
 * The document is a line of examples/data/line-retrieval.jsonl (--document N) or a freshly built
 * one (--context BYTES --depth D). Selected tokens come from the CPU reference
 * (CpuDoubleSparsityAttention.lastSelected) or, on the GPU, from the generated kernels
 * (GpuDecoder with keepSelection: lastSelected).
 */
import { type AttentionSpec, budgetFor } from "../src/dsl/spec.ts";
import type { Cuda } from "../src/cuda/driver.ts";
import type { LoadedModel } from "../src/checkpoint/weights.ts";
import type { ChannelSource } from "../src/quality/channels.ts";
import { labelChannelsFor } from "../src/quality/channels.ts";
import { argmax, CpuDecoder, DenseAttention } from "../src/decoding/cpu_decoder.ts";
import { CpuDoubleSparsityAttention } from "../src/decoding/cpu_ds_attention.ts";
import { GpuDecoder } from "../src/decoding/gpu_decoder.ts";
import type { GemmBackend } from "../src/runtime/gemm_choice.ts";
import {
  askedLine,
  buildRetrievalDocument,
  digitTokens,
  promptTokens,
  readRetrievalDocuments,
  type RetrievalDocument,
} from "../src/quality/retrieval.ts";

export interface RetrievalDemoOptions {
  readonly model: LoadedModel;
  readonly spec: AttentionSpec;
  readonly channels: ChannelSource;
  /** The GPU, or undefined for the CPU reference. */
  readonly cuda?: Cuda;
  /** JSONL file and 1-based line of the document; or build one. */
  readonly file: string;
  readonly documentLine?: number;
  readonly contextBytes: number;
  readonly depth: number;
  readonly seed: number;
  /** The GPU decoders' GEMM (GpuDecoderOptions.gemm; unset: $DS_GEMM, else cuBLAS). */
  readonly gemm?: GemmBackend;
}

/** The document to show: a line of the file, or a built one. */
export async function demoDocument(o: RetrievalDemoOptions): Promise<RetrievalDocument> {
  if (o.documentLine === undefined) return buildRetrievalDocument(o.contextBytes, o.depth, o.seed);
  const doc = (await readRetrievalDocuments(o.file)).find((d) => d.id === o.documentLine);
  if (!doc) throw new Error(`--document: ${o.file} has no document on line ${o.documentLine}`);
  return doc;
}

/** Index of the line each token position falls in (0-based; the question is the last line). */
export function lineOfPositions(prompt: number[]): Int32Array {
  const out = new Int32Array(prompt.length);
  let line = 0;
  prompt.forEach((t, i) => {
    out[i] = line;
    if (t === 10) line++;
  });
  return out;
}

/** Per sparse layer and selection head: the selected tokens of one decode step. */
type Selection = { layer: number; heads: Int32Array[] }[];

interface AnswerRun {
  readonly digits: number[];
  /** The selection of each answer step. */
  readonly selections?: Selection[];
}

function decodeCpu(o: RetrievalDemoOptions, prompt: number[], n: number, ds: boolean): AnswerRun {
  const c = o.model.config;
  const attention = ds
    ? new CpuDoubleSparsityAttention(
      o.spec,
      Array.from({ length: c.numLayers }, (_, l) => labelChannelsFor(o.spec, o.channels, l)),
      prompt.length + n,
    )
    : undefined;
  const decoder = new CpuDecoder(o.model, { attention: attention ?? new DenseAttention() });
  if (attention) attention.prefill = true;
  decoder.forward(prompt.slice(0, -1));
  if (attention) attention.prefill = false;
  const digits: number[] = [], selections: Selection[] = [];
  let token = prompt[prompt.length - 1];
  for (let i = 0; i < n; i++) {
    token = argmax(decoder.forward([token]));
    digits.push(token);
    if (attention) {
      selections.push(
        attention.lastSelected.flatMap((heads, layer) =>
          heads && attention.lastRoutes[layer] === "sparse" ? [{ layer, heads }] : []
        ),
      );
    }
  }
  return { digits, selections: attention ? selections : undefined };
}

async function decodeGpu(
  cuda: Cuda,
  o: RetrievalDemoOptions,
  prompt: number[],
  n: number,
  ds: boolean,
): Promise<AnswerRun> {
  using decoder = await GpuDecoder.create(cuda, o.model, {
    batch: 1,
    maxContext: prompt.length + n,
    spec: ds ? o.spec : undefined,
    channels: ds ? o.channels : undefined,
    keepSelection: ds,
    gemm: o.gemm,
  });
  decoder.prefill([prompt.slice(0, -1)]);
  const digits: number[] = [], selections: Selection[] = [];
  let token = prompt[prompt.length - 1];
  for (let i = 0; i < n; i++) {
    token = argmax(decoder.step([token]));
    digits.push(token);
    if (ds) {
      selections.push(
        Array.from({ length: o.model.config.numLayers }, (_, layer) => ({
          layer,
          heads: decoder.lastSelected(0, layer),
        })).flatMap((s) => (s.heads ? [{ layer: s.layer, heads: s.heads }] : [])),
      );
    }
  }
  return { digits, selections: ds ? selections : undefined };
}

const text = (ids: number[]) => new TextDecoder().decode(Uint8Array.from(ids));

/** Runs the demo and prints it. */
export async function runRetrievalDemo(o: RetrievalDemoOptions): Promise<void> {
  const doc = await demoDocument(o);
  const prompt = promptTokens(doc);
  const n = digitTokens(doc).length;
  const lines = doc.prompt.split("\n");
  const lineOf = lineOfPositions(prompt);
  const asked = askedLine(doc.prompt) ?? -1;
  console.log(
    `\ndocument: ${doc.id > 0 && o.documentLine !== undefined ? `${o.file}:${doc.id}` : "built"}` +
      `, ${prompt.length} prompt bytes, ${lines.length - 1} lines, asked line ${asked} ` +
      `(depth ${doc.depth.toFixed(3)})`,
  );
  console.log(`  ... ${lines[asked]}`);
  console.log(`  ... ${lines[lines.length - 1]}`);
  console.log(`expected answer: ${doc.digits}`);
  const run = (ds: boolean) =>
    o.cuda ? decodeGpu(o.cuda, o, prompt, n, ds) : Promise.resolve(decodeCpu(o, prompt, n, ds));
  const dense = await run(false);
  const sparse = await run(true);
  console.log(`\n| attention | answer | correct |\n|---|---|---|`);
  for (const [name, r] of [["dense", dense], ["double sparsity", sparse]] as const) {
    console.log(
      `| ${name} | ${text(r.digits)} | ${text(r.digits) === doc.digits ? "yes" : "no"} |`,
    );
  }
  if (!sparse.selections) {
    console.log(
      "\n(no selected tokens were recorded for the Double Sparsity run)",
    );
    return;
  }
  console.log(
    `\nwhere the Double Sparsity steps looked (k = ${
      budgetFor(o.spec.budget, prompt.length)
    } of ${prompt.length} tokens per head at the first step): per sparse layer and head, the ` +
      `lines holding most selected tokens (line: tokens), and how many were on the asked line`,
  );
  sparse.selections.forEach((step, i) => {
    console.log(`answer digit ${i + 1} (${text([sparse.digits[i]])}):`);
    for (const { layer, heads } of step) {
      heads.forEach((tokens, h) => {
        const perLine = new Map<number, number>();
        for (const t of tokens) {
          const line = t < lineOf.length ? lineOf[t] : lines.length; // generated digits
          perLine.set(line, (perLine.get(line) ?? 0) + 1);
        }
        const top = [...perLine].sort((a, b) => b[1] - a[1]).slice(0, 4)
          .map(([l, k]) =>
            `${l === lines.length - 1 ? "question" : l === lines.length ? "answer" : l}: ${k}`
          );
        const onAsked = perLine.get(asked) ?? 0;
        console.log(
          `  layer ${layer} head ${h}: ${top.join(", ")}; asked line ${onAsked}/${tokens.length}`,
        );
      });
    }
  });
}
