import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  askedLine,
  buildRetrievalDocument,
  depthBucket,
  depthBucketLabel,
  locateDepth,
  parseRetrievalJsonl,
  readRetrievalDocuments,
  retrievalCalibrationRows,
  type RetrievalDocument,
  selectDocuments,
} from "../src/quality/retrieval.ts";
import { type RetrievalOutcome, summarize } from "../src/quality/retrieval_eval.ts";
import { RETRIEVAL_PRESETS } from "../src/quality/retrieval_presets.ts";
import { parsePresetList } from "../src/quality/evaluate.ts";
import { runScript, withTempDir } from "./helpers.ts";

const DATA = fileURLToPath(new URL("../examples/data/line-retrieval.jsonl", import.meta.url));
const QK_FILE = fileURLToPath(
  new URL("./fixtures/tiny-code-llama-8k-python-2x512-qk-channels.json", import.meta.url),
);

Deno.test("retrieval: JSONL rows, optional fields, and problems named by file, line and field", () => {
  const doc = buildRetrievalDocument(300, 0.5, 3);
  const [row] = parseRetrievalJsonl(
    JSON.stringify({ prompt: doc.prompt, answer: doc.answer }),
    "x",
  );
  assert.equal(row.id, 1);
  assert.equal(row.digits, doc.digits);
  assert.equal(row.contextBytes, new TextEncoder().encode(doc.prompt + doc.answer).length);
  assert.equal(row.depth, locateDepth(doc.prompt));
  const bad = (line: string) => {
    try {
      parseRetrievalJsonl(`\n${line}`, "f.jsonl");
    } catch (e) {
      return (e as Error).message;
    }
    assert.fail(`accepted ${line}`);
  };
  assert.match(bad("{"), /^f\.jsonl:2: not JSON/);
  assert.match(bad("[1]"), /^f\.jsonl:2: expected a JSON object/);
  assert.match(bad('{"answer": "1>"}'), /^f\.jsonl:2: field "prompt" is missing; expected/);
  assert.match(
    bad('{"prompt": "p", "answer": ">"}'),
    /field "answer" is ">"; expected a string starting with digits/,
  );
  assert.match(
    bad('{"prompt": "p", "answer": "12>", "context_bytes": 1.5}'),
    /field "context_bytes" is 1\.5; expected an integer >= 1/,
  );
  assert.match(
    bad('{"prompt": "no question", "answer": "12>"}'),
    /field "depth" is missing and the asked line was not found/,
  );
  assert.throws(() => parseRetrievalJsonl("\n\n", "e.jsonl"), /e\.jsonl: no documents/);
});

Deno.test("retrieval: the bundled file, and built documents in its format", async () => {
  const docs = await readRetrievalDocuments(DATA);
  assert.equal(docs.length, 180);
  for (const L of [2048, 4096, 8000]) {
    const group = docs.filter((d) => d.contextBytes === L);
    assert.equal(group.length, 60, `length ${L}`);
    for (const [k, d] of group.entries()) {
      const lines = d.prompt.split("\n").length - 1;
      // The file's depth (3 decimals) and the asked line's position agree to half a line.
      assert.ok(Math.abs(locateDepth(d.prompt)! - d.depth) <= 0.5 / lines + 5e-4, `doc ${d.id}`);
      assert.equal(d.digits.length, 5);
      assert.equal(d.answer, `${d.digits}>`);
      // A document built at the same length and depth (unrounded: the k-th of 60 evenly spaced
      // depths) has the same shape.
      const built = buildRetrievalDocument(L, (k + 0.5) / group.length, d.id);
      assert.equal(built.prompt.length, d.prompt.length, `doc ${d.id}`);
      assert.equal(askedLine(built.prompt), askedLine(d.prompt), `doc ${d.id}`);
    }
  }
  const built = buildRetrievalDocument(2048, 0.3, 9);
  assert.match(built.prompt, /^(line [a-z]{5}-[a-z]{5}: REGISTER_CONTENT is <\d{5}>\n){42}Tell me/);
  assert.equal(buildRetrievalDocument(2048, 0.3, 9).prompt, built.prompt);
  assert.throws(() => buildRetrievalDocument(100, 0.5, 1), /100 bytes holds no line/);

  const picked = selectDocuments(docs, [4096], 3);
  assert.deepEqual(picked.map((d) => d.contextBytes), [4096, 4096, 4096]);
  assert.ok(picked[0].depth < 0.2 && picked[2].depth > 0.8);
  assert.throws(() => selectDocuments(docs, [1000]), /context length 1000: no documents/);
});

Deno.test("retrieval: calibration rows are protocol windows ending with the answer", () => {
  const rows = retrievalCalibrationRows(3, 400, 5);
  assert.equal(rows.length, 3);
  for (const r of rows) {
    assert.equal(r.length, 401);
    assert.match(new TextDecoder().decode(r), /I need the number\. <\d{5}>$/);
  }
  assert.notDeepEqual(rows[0], rows[1]);
});

Deno.test("retrieval: accuracy by length and depth bucket (hand-checked)", () => {
  assert.equal(depthBucket(0.0, 5), 0);
  assert.equal(depthBucket(0.39, 5), 1);
  assert.equal(depthBucket(1, 5), 4);
  assert.equal(depthBucketLabel(1, 5), "0.2-0.4");
  const o = (contextBytes: number, depth: number, correct: boolean): RetrievalOutcome => ({
    id: 0,
    contextBytes,
    depth,
    expected: "1",
    got: correct ? "1" : "2",
    correct,
  });
  const s = summarize(
    [o(2048, 0.1, true), o(2048, 0.9, false), o(4096, 0.15, true), o(4096, 0.5, true)],
    5,
  );
  assert.deepEqual(s.overall, { correct: 3, total: 4, accuracy: 0.75 });
  assert.deepEqual(Object.keys(s.byLength), ["2048", "4096"]);
  assert.equal(s.byLength["2048"].accuracy, 0.5);
  assert.deepEqual(s.byDepth["0.0-0.2"], { correct: 2, total: 2, accuracy: 1 });
  assert.deepEqual(s.byDepth["0.8-1.0"], { correct: 0, total: 1, accuracy: 0 });
  assert.equal(s.byDepth["0.6-0.8"], undefined);
  assert.deepEqual(s.byLengthDepth["4096"]["0.4-0.6"], { correct: 1, total: 1, accuracy: 1 });
});

Deno.test("retrieval: the presets of the reference table", () => {
  assert.deepEqual(
    parsePresetList("dense, head r8 b16 dense 0,1;oracle", RETRIEVAL_PRESETS).map((p) => p.name),
    ["dense", "head r8 b16 dense 0,1", "oracle"],
  );
  assert.throws(() => parsePresetList("head r32 b4", RETRIEVAL_PRESETS), /unknown variant/);
  assert.equal(RETRIEVAL_PRESETS.length, 6);
});

Deno.test("eval:retrieval CLI: both protocols on the CPU reference, a short document", async () => {
  await withTempDir(async (dir) => {
    // Three lines (216 prompt bytes): the budget (16 tokens) is a real choice in layers 2, 3.
    const doc: RetrievalDocument = buildRetrievalDocument(222, 0.5, 11);
    const data = join(dir, "docs.jsonl");
    await Deno.writeTextFile(
      data,
      JSON.stringify({ prompt: doc.prompt, answer: doc.answer }) + "\n",
    );
    const out = join(dir, "out");
    const r = await runScript("src/cli/eval_retrieval.ts", [
      "--device",
      "cpu",
      "--data",
      data,
      "--variants",
      "dense,head r16 b16 dense 0,1",
      "--channels",
      QK_FILE,
      "--out",
      out,
    ]);
    console.log(`eval:retrieval CLI: ${r.ms.toFixed(0)} ms\n${r.stdout}`);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    const record = JSON.parse(await Deno.readTextFile(join(out, "retrieval") + ".json"));
    assert.deepEqual(
      record.runs.map((x: { protocol: string; variant: string }) => `${x.protocol} ${x.variant}`),
      [
        "teacher-forced dense",
        "teacher-forced ds_d128_q4_kv2_p16_fp16_r16b16_head",
        "deployed dense",
        "deployed ds_d128_q4_kv2_p16_fp16_r16b16_head",
      ],
    );
    for (const run of record.runs) {
      assert.equal(run.outcomes.length, 1);
      assert.equal(run.outcomes[0].expected, doc.digits);
      assert.equal(run.outcomes[0].got.length, 5);
      assert.equal(run.summary.overall.correct, run.outcomes[0].correct ? 1 : 0);
    }
    // Dense attention reads this short document right under both protocols.
    assert.equal(record.runs[0].outcomes[0].got, doc.digits);
    assert.equal(record.runs[2].outcomes[0].got, doc.digits);
    const md = await Deno.readTextFile(join(out, "retrieval") + ".md");
    assert.match(md, /\| dense \| teacher-forced \| 100\.0% \(1\/1\) \|/);
    assert.match(md, /## Documents that flip against dense/);
  });
});

Deno.test("eval:retrieval CLI: bad flags and a missing channel file are named", async () => {
  const bad = await runScript("src/cli/eval_retrieval.ts", ["--protocols", "greedy"]);
  assert.equal(bad.code, 2, "a malformed flag is a usage error");
  assert.match(bad.stderr, /--protocols: got "greedy"; allowed: teacher-forced, deployed, both/);
  const mode = await runScript("src/cli/eval_retrieval.ts", ["--offload-mode", "ssd"]);
  assert.equal(mode.code, 2);
  assert.match(mode.stderr, /--offload-mode: got "ssd"; allowed: selected, reuse, predict,/);
  const cpu = await runScript("src/cli/eval_retrieval.ts", [
    "--device",
    "cpu",
    "--offload-mode",
    "predict",
  ]);
  assert.equal(cpu.code, 2, "offload needs a GPU");
  assert.match(
    cpu.stderr,
    /--offload-mode: got predict with the CPU device \(.*\); allowed: only on a GPU/,
  );
  const missing = await runScript("src/cli/eval_retrieval.ts", [
    "--channels",
    "/nonexistent/qk.json",
    "--variants",
    "oracle,head r16 b16",
  ]);
  assert.equal(missing.code, 1);
  assert.match(
    missing.stderr,
    /\/nonexistent\/qk\.json: no channel config; make it with `deno task calibrate --recipe retrieval-mix/,
  );
});
