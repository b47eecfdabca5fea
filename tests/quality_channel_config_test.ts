import assert from "node:assert/strict";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import {
  type ChannelConfig,
  formatChannelConfig,
  leadingChannels,
  parseChannelConfig,
  readChannelConfig,
  writeChannelConfig,
} from "../src/quality/channel_config.ts";
import { withTempDir } from "./helpers.ts";

const QK_FILE = fileURLToPath(
  new URL("./fixtures/tiny-code-llama-8k-python-2x512-qk-channels.json", import.meta.url),
);
const TINY_CODE_LLAMA = { numLayers: 4, numHeads: 4, numKvHeads: 2, headDim: 128 };
const SMALL = { numLayers: 2, numHeads: 2, numKvHeads: 1, headDim: 4 };

/** A valid config of SMALL's shape with q, k and qk rankings. */
function smallConfig(): Record<string, number[][]> {
  return {
    "model.layers.0.self_attn.q_proj": [[0, 1, 2, 3], [3, 2, 1, 0]],
    "model.layers.0.self_attn.k_proj": [[1, 0, 3, 2]],
    "model.layers.0.self_attn.qk_proj": [[2, 0, 1, 3], [0, 2, 3, 1]],
    "model.layers.1.self_attn.q_proj": [[1, 2, 3, 0], [0, 3, 1, 2]],
    "model.layers.1.self_attn.k_proj": [[3, 2, 1, 0]],
    "model.layers.1.self_attn.qk_proj": [[0, 1, 3, 2], [2, 1, 0, 3]],
  };
}

function problemsOf(json: unknown, shape = SMALL): string {
  try {
    parseChannelConfig(json, shape, "test.json");
  } catch (e) {
    return (e as Error).message;
  }
  assert.fail("expected the channel config to be rejected");
}

Deno.test("channel config: a tiny-code-llama-8k qk file parses", async () => {
  const config = await readChannelConfig(QK_FILE, TINY_CODE_LLAMA);
  assert.deepEqual(Object.keys(config.kinds), ["qk"]);
  const qk = config.kinds.qk!;
  assert.equal(qk.length, 4);
  assert.equal(qk[0].length, 4);
  assert.equal(qk[0][0][0], 107);
  assert.deepEqual(leadingChannels(qk, 2)[0][0], [107, 49]);
  await assert.rejects(
    readChannelConfig(QK_FILE, { ...TINY_CODE_LLAMA, numHeads: 8 }),
    /has 4 rows, expected 8 \(one per query head\)/,
  );
});

Deno.test("channel config: format -> parse round trip, deterministic order", async () => {
  const parsed = parseChannelConfig(smallConfig(), SMALL);
  const text = formatChannelConfig(parsed);
  const keys = Object.keys(JSON.parse(text));
  assert.deepEqual(keys, [
    "model.layers.0.self_attn.q_proj",
    "model.layers.0.self_attn.k_proj",
    "model.layers.0.self_attn.qk_proj",
    "model.layers.1.self_attn.q_proj",
    "model.layers.1.self_attn.k_proj",
    "model.layers.1.self_attn.qk_proj",
  ]);
  assert.deepEqual(parseChannelConfig(JSON.parse(text), SMALL), parsed);

  const bundled = await readChannelConfig(QK_FILE, TINY_CODE_LLAMA);
  const dir = await Deno.makeTempDir();
  try {
    const out = path.join(dir, "qk.json");
    await writeChannelConfig(out, bundled);
    assert.deepEqual(await readChannelConfig(out, TINY_CODE_LLAMA), bundled);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["qk.json"]);
    const broken: ChannelConfig = { kinds: { qk: [[[0, 0, 1, 2]]] } };
    await assert.rejects(
      writeChannelConfig(path.join(dir, "bad.json"), broken),
      /duplicate channel 0/,
    );
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["qk.json"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("channel config: each validation problem is named", () => {
  const wrongHeads = smallConfig();
  wrongHeads["model.layers.1.self_attn.qk_proj"].pop();
  assert.match(
    problemsOf(wrongHeads),
    /"model\.layers\.1\.self_attn\.qk_proj": has 1 rows, expected 2 \(one per query head\)/,
  );

  const duplicate = smallConfig();
  duplicate["model.layers.0.self_attn.q_proj"][1] = [3, 2, 3, 0];
  const dupMessage = problemsOf(duplicate);
  assert.match(
    dupMessage,
    /"model\.layers\.0\.self_attn\.q_proj" query head 1: duplicate channel 3 at entries 0 and 2/,
  );
  assert.match(dupMessage, /query head 1: missing 1 channel\(s\): 1/);

  const missingLayer = smallConfig();
  delete missingLayer["model.layers.1.self_attn.k_proj"];
  assert.match(
    problemsOf(missingLayer),
    /layer 1 is missing for kind "k" \(no key "model\.layers\.1\.self_attn\.k_proj"\)/,
  );

  const badKey = { ...smallConfig(), "layers.0.qk": [[0, 1, 2, 3]] };
  assert.match(problemsOf(badKey), /key "layers\.0\.qk" does not match/);

  const outOfRange = { ...smallConfig(), "model.layers.2.self_attn.k_proj": [[0, 1, 2, 3]] };
  assert.match(problemsOf(outOfRange), /layer 2 is out of range \(model has 2\)/);

  const badEntries = smallConfig();
  badEntries["model.layers.1.self_attn.k_proj"] = [[0, 1.5, 7, 3]] as number[][];
  const badMessage = problemsOf(badEntries);
  assert.match(badMessage, /kv head 0: entry 1 is 1\.5, not an integer/);
  assert.match(badMessage, /kv head 0: entry 2 is channel 7, outside 0\.\.3/);

  assert.match(problemsOf({}), /no channel rankings/);
  assert.throws(() => parseChannelConfig([], SMALL), /expected a JSON object/);
});

Deno.test("channel config: all problems are reported together, capped", () => {
  const many = smallConfig();
  many["model.layers.0.self_attn.qk_proj"] = [[0, 0, 0, 0], [1, 1, 1, 1]];
  delete many["model.layers.1.self_attn.q_proj"];
  many["bogus"] = [];
  const message = problemsOf(many);
  assert.match(message, /^test\.json: invalid channel config \(\d+ problem\(s\)\):/);
  assert.match(message, /key "bogus"/);
  assert.match(message, /layer 1 is missing for kind "q"/);
  assert.match(message, /query head 0: duplicate channel 0/);
  assert.match(message, /query head 1: duplicate channel 1/);

  const huge: Record<string, number[][]> = {};
  for (let l = 0; l < 2; l++) {
    huge[`model.layers.${l}.self_attn.qk_proj`] = [[5, 6, 7, 8], [9, 9, 9, 9], [9, 9, 9, 9]];
  }
  const capped = problemsOf(huge);
  const listed = capped.split("\n").filter((line) => line.startsWith("  - "));
  assert.equal(listed.length, 20);
  assert.match(capped, /\.\.\. and \d+ more problem\(s\)$/);
});

Deno.test("channel config: the authors' files with v_proj, o_proj and mlp.down_proj keys load", async () => {
  // The published configs for Llama-2-7B and Mistral-7B rank other projections too; written here
  // in that layout (SMALL's shape, GQA: one k row per kv head), then read from disk.
  const json: Record<string, number[][]> = smallConfig();
  for (const layer of [0, 1]) {
    json[`model.layers.${layer}.self_attn.v_proj`] = [[0, 1, 2, 3]];
    json[`model.layers.${layer}.self_attn.o_proj`] = [[3, 2, 1, 0], [0, 1, 2, 3]];
    json[`model.layers.${layer}.mlp.down_proj`] = [[1, 2, 3, 0]];
  }
  await withTempDir(async (dir) => {
    const file = path.join(dir, "llama-2-7b.json");
    await Deno.writeTextFile(file, JSON.stringify(json));
    const config = await readChannelConfig(file, SMALL);
    assert.deepEqual(Object.keys(config.kinds), ["q", "k", "qk"]);
    assert.deepEqual(config.kinds.k![1], [[3, 2, 1, 0]], "one k row per kv head");
    assert.deepEqual(config.kinds.qk![0], smallConfig()["model.layers.0.self_attn.qk_proj"]);
    assert.equal(
      config.note,
      `${file}: used the q_proj, k_proj, qk_proj rankings of 2 layers; ignored ` +
        "self_attn.v_proj (2 keys), self_attn.o_proj (2 keys), mlp.down_proj (2 keys)",
    );
  });
  // A clean file carries no note; a file of only other projections is still refused.
  assert.equal(parseChannelConfig(smallConfig(), SMALL).note, undefined);
  assert.match(
    problemsOf({ "model.layers.0.mlp.down_proj": [[0, 1, 2, 3]] }),
    /no q, k or qk rankings \(only mlp\.down_proj\)/,
  );
});
