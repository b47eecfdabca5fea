/**
 * Line-retrieval documents (LongEval "lines", as in the Double Sparsity paper): many lines
 * `line abcde-fghij: REGISTER_CONTENT is <NNNNN>`, then a question about one of them; the answer
 * is that line's digits and `>`. This module reads them from JSONL, builds new ones (for the
 * decode demo and the calibration recipe) and sorts them into context lengths and depth buckets.
 * Byte vocabulary: a document's tokens are its UTF-8 bytes.
 */
import { mulberry32 } from "../util/random.ts";

export interface RetrievalDocument {
  /** Line number (1-based) in its JSONL file, or the build index. */
  readonly id: number;
  readonly prompt: string;
  /** The expected continuation, e.g. `77096>`. */
  readonly answer: string;
  /** The digits a correct answer starts with (all of the answer's leading digits). */
  readonly digits: string;
  /** Nominal context length of the document's group (the file's context_bytes). */
  readonly contextBytes: number;
  /** Where the asked line sits, 0 (first line) to 1 (last line). */
  readonly depth: number;
}

const encoder = new TextEncoder();

/** A document's prompt as token ids (bytes). */
export function promptTokens(doc: RetrievalDocument): number[] {
  return Array.from(encoder.encode(doc.prompt));
}

/** The digits as token ids. */
export function digitTokens(doc: RetrievalDocument): number[] {
  return Array.from(encoder.encode(doc.digits));
}

const LINE = /^line ([a-z]+-[a-z]+): REGISTER_CONTENT is <(\d+)>$/;
const QUESTION = /in line ([a-z]+-[a-z]+)\?/;

/** Index of the line the question asks about, or undefined when it is not found. */
export function askedLine(prompt: string): number | undefined {
  const lines = prompt.split("\n");
  const key = QUESTION.exec(lines[lines.length - 1])?.[1];
  if (key === undefined) return undefined;
  const index = lines.slice(0, -1).findIndex((l) => LINE.exec(l)?.[1] === key);
  return index < 0 ? undefined : index;
}

/** The depth of the asked line: (index + 0.5) / lines, or undefined when it is not found. */
export function locateDepth(prompt: string): number | undefined {
  const index = askedLine(prompt);
  return index === undefined ? undefined : (index + 0.5) / (prompt.split("\n").length - 1);
}

/**
 * Parses JSONL of `{prompt, answer, context_bytes?, depth?}`. A missing context_bytes is the
 * document's byte length; a missing depth is located from the question's key. Every problem
 * names the file, the line, the field and the value.
 */
export function parseRetrievalJsonl(text: string, source: string): RetrievalDocument[] {
  const docs: RetrievalDocument[] = [];
  text.split("\n").forEach((raw, i) => {
    const line = i + 1;
    if (raw.trim() === "") return;
    const where = `${source}:${line}`;
    let row: Record<string, unknown>;
    try {
      row = JSON.parse(raw);
    } catch (e) {
      throw new Error(`${where}: not JSON (${(e as Error).message})`);
    }
    if (typeof row !== "object" || row === null || Array.isArray(row)) {
      throw new Error(`${where}: expected a JSON object {prompt, answer}`);
    }
    const { prompt, answer } = row;
    if (typeof prompt !== "string" || prompt.length === 0) {
      throw new Error(`${where}: field "prompt" is ${brief(prompt)}; expected a non-empty string`);
    }
    const digits = typeof answer === "string" ? /^\d+/.exec(answer)?.[0] : undefined;
    if (typeof answer !== "string" || digits === undefined) {
      throw new Error(
        `${where}: field "answer" is ${brief(answer)}; expected a string starting with digits`,
      );
    }
    const length = encoder.encode(prompt + answer).length;
    const contextBytes = row.context_bytes ?? length;
    if (typeof contextBytes !== "number" || !Number.isInteger(contextBytes) || contextBytes < 1) {
      throw new Error(
        `${where}: field "context_bytes" is ${brief(row.context_bytes)}; expected an integer >= 1`,
      );
    }
    const depth = row.depth ?? locateDepth(prompt);
    if (typeof depth !== "number" || !(depth >= 0 && depth <= 1)) {
      throw new Error(
        `${where}: field "depth" is ${brief(row.depth)} and the asked line was not found in ` +
          `the prompt; expected a number in [0, 1]`,
      );
    }
    docs.push({ id: line, prompt, answer, digits, contextBytes, depth });
  });
  if (docs.length === 0) throw new Error(`${source}: no documents`);
  return docs;
}

function brief(v: unknown): string {
  const s = JSON.stringify(v);
  return s === undefined ? "missing" : s.length > 40 ? `${s.slice(0, 40)}...` : s;
}

/** Reads a JSONL file of retrieval documents. */
export async function readRetrievalDocuments(file: string): Promise<RetrievalDocument[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    throw new Error(`${file}: cannot read: ${(e as Error).message}`);
  }
  return parseRetrievalJsonl(text, file);
}

// ---- building documents ----------------------------------------------------------------------

const LETTERS = "abcdefghijklmnopqrstuvwxyz";
/** `line abcde-fghij: REGISTER_CONTENT is <NNNNN>\n`: 46 bytes. */
const LINE_BYTES = 46;
const QUESTION_BYTES = questionFor("abcde-fghij").length;
const ANSWER_BYTES = "NNNNN>".length;

function questionFor(key: string): string {
  return `Tell me what is the REGISTER_CONTENT in line ${key}? I need the number. <`;
}

/**
 * A document in the file's format of at most `contextBytes` bytes (prompt + answer), as many
 * whole lines as fit, the asked line at line floor(depth * lines) (the file's placement).
 * Keys are distinct; values are 10000..99999. Deterministic in `seed`.
 */
export function buildRetrievalDocument(
  contextBytes: number,
  depth: number,
  seed: number,
): RetrievalDocument {
  const lines = Math.floor((contextBytes - QUESTION_BYTES - ANSWER_BYTES) / LINE_BYTES);
  if (lines < 1) {
    throw new Error(
      `retrieval document: ${contextBytes} bytes holds no line; needs at least ` +
        `${LINE_BYTES + QUESTION_BYTES + ANSWER_BYTES}`,
    );
  }
  if (!(depth >= 0 && depth <= 1)) {
    throw new Error(`retrieval document: depth ${depth} outside [0, 1]`);
  }
  const rand = mulberry32(seed);
  const word = () => Array.from({ length: 5 }, () => LETTERS[Math.floor(rand() * 26)]).join("");
  const keys = new Set<string>();
  while (keys.size < lines) keys.add(`${word()}-${word()}`);
  const body = [...keys].map((key) => ({ key, value: String(10000 + Math.floor(rand() * 90000)) }));
  const asked = body[Math.min(lines - 1, Math.floor(depth * lines))];
  const prompt = body.map((l) => `line ${l.key}: REGISTER_CONTENT is <${l.value}>\n`).join("") +
    questionFor(asked.key);
  return {
    id: seed,
    prompt,
    answer: `${asked.value}>`,
    digits: asked.value,
    contextBytes,
    depth,
  };
}

/**
 * Calibration rows of exactly `rowBytes` + 1 bytes (a protocol window: T inputs and one
 * target): each is the tail of a freshly built document (never one of the evaluation
 * documents) whose asked line sits at depth (i + 0.5) / count, so it ends with the question and
 * the answer, as the model's long-context training rows did; the first line may be cut.
 */
export function retrievalCalibrationRows(count: number, rowBytes: number, seed = 1): Uint8Array[] {
  return Array.from({ length: count }, (_, i) => {
    const doc = buildRetrievalDocument(rowBytes + 1 + LINE_BYTES, (i + 0.5) / count, seed + i);
    const bytes = encoder.encode(doc.prompt + doc.answer);
    return bytes.subarray(bytes.length - (rowBytes + 1));
  });
}

// ---- grouping --------------------------------------------------------------------------------

/** Bucket index of a depth among `buckets` equal slices of [0, 1]. */
export function depthBucket(depth: number, buckets: number): number {
  return Math.min(buckets - 1, Math.floor(depth * buckets));
}

/** "0.0-0.2" for bucket 0 of 5. */
export function depthBucketLabel(bucket: number, buckets: number): string {
  return `${(bucket / buckets).toFixed(1)}-${((bucket + 1) / buckets).toFixed(1)}`;
}

/**
 * The documents of the listed context lengths, at most `perLength` of each (evenly spread over
 * depth when fewer than the file holds), in file order.
 */
export function selectDocuments(
  docs: readonly RetrievalDocument[],
  lengths?: readonly number[],
  perLength?: number,
): RetrievalDocument[] {
  const present = [...new Set(docs.map((d) => d.contextBytes))];
  const wanted = lengths ?? present;
  for (const L of wanted) {
    if (!present.includes(L)) {
      throw new Error(
        `context length ${L}: no documents of that length; the file has ${present.join(", ")}`,
      );
    }
  }
  const out: RetrievalDocument[] = [];
  for (const L of wanted) {
    const group = docs.filter((d) => d.contextBytes === L);
    const n = Math.min(perLength ?? group.length, group.length);
    for (let i = 0; i < n; i++) out.push(group[Math.floor(((i + 0.5) * group.length) / n)]);
  }
  return out;
}
