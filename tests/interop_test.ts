// Interoperability with the paper's authors and SGLang: channel files written here load in
// their loaders' shape, theirs load here, and SGLang's Double Sparsity flags map onto a spec.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import {
  CHANNEL_KINDS,
  type ChannelConfig,
  type ChannelKind,
  type ChannelShape,
  formatChannelConfig,
  leadingChannels,
  parseChannelConfig,
  sglangFlagsFromSpec,
  specFromSglangFlags,
} from "../src/interop/mod.ts";
import { readChannelConfig, writeChannelConfig } from "../src/quality/channel_config.ts";
import { SpecError } from "../src/dsl/spec.ts";
import { randomPermutation, repoPath, seededRandom, withTempDir } from "./helpers.ts";

/**
 * The authors' loader (DoubleSparse, and SGLang's after it), reimplemented: `json.load`, then
 * for every layer `torch.tensor(config[f"model.layers.{i}.self_attn.{type}_proj"])[:, :r]`.
 * Mirrors what those lines demand: the key must exist (KeyError), the rows must form a
 * rectangular integer tensor, and the slice keeps the first r of each row.
 */
function authorsLoad(text: string, numLayers: number, type: ChannelKind, r: number): number[][][] {
  const config = JSON.parse(text) as Record<string, unknown>;
  const layers: number[][][] = [];
  for (let i = 0; i < numLayers; i++) {
    const key = "model.layers." + String(i) + ".self_attn." + type + "_proj";
    if (!(key in config)) throw new Error(`KeyError: '${key}'`);
    const rows = config[key];
    assert.ok(Array.isArray(rows) && rows.length > 0, `${key}: not a list of rows`);
    const width = (rows[0] as unknown[]).length;
    for (const row of rows as unknown[][]) {
      assert.ok(Array.isArray(row) && row.length === width, `${key}: ragged rows`);
      assert.ok(row.every((c) => Number.isInteger(c)), `${key}: non-integer channel`);
    }
    layers.push((rows as number[][]).map((row) => row.slice(0, r)));
  }
  return layers;
}

function randomConfig(shape: ChannelShape, seed: number): ChannelConfig {
  const random = seededRandom(seed);
  const kinds: ChannelConfig["kinds"] = {};
  for (const kind of CHANNEL_KINDS) {
    const rows = kind === "k" ? shape.numKvHeads : shape.numHeads;
    kinds[kind] = Array.from(
      { length: shape.numLayers },
      () => Array.from({ length: rows }, () => randomPermutation(random, shape.headDim)),
    );
  }
  return { kinds };
}

Deno.test("interop: a channel file written here loads in the authors' loader shape", async () => {
  // GQA: 8 query heads over 2 kv heads, so q/qk and k differ in rows per layer.
  const shape: ChannelShape = { numLayers: 3, numHeads: 8, numKvHeads: 2, headDim: 64 };
  const config = randomConfig(shape, 7);
  await withTempDir(async (dir) => {
    const file = join(dir, "channels.json");
    await writeChannelConfig(file, config);
    const text = readFileSync(file, "utf8");
    for (const kind of CHANNEL_KINDS) {
      for (const r of [8, 16, 64]) {
        const loaded = authorsLoad(text, shape.numLayers, kind, r);
        const rows = kind === "k" ? shape.numKvHeads : shape.numHeads;
        assert.deepEqual(loaded.map((l) => l.length), Array(shape.numLayers).fill(rows));
        assert.ok(loaded.flat().every((row) => row.length === r));
        assert.deepEqual(loaded, leadingChannels(config.kinds[kind]!, r));
      }
    }
    // A layer past the model is a KeyError there, as it would be in theirs.
    assert.throws(() => authorsLoad(text, shape.numLayers + 1, "qk", 8), /KeyError/);
    // And the file reads back here unchanged.
    assert.deepEqual(await readChannelConfig(file, shape), config);
  });
});

Deno.test("interop: the authors' channel files load here and survive a rewrite", () => {
  // The bundled model's file (examples/data) and the tests' small calibration (tests/fixtures).
  const dirs = [repoPath("examples", "data"), repoPath("tests", "fixtures")];
  const files = dirs.flatMap((dir) =>
    readdirSync(dir).filter((f) => f.endsWith("-channels.json")).map((f) => join(dir, f))
  );
  assert.ok(files.length > 0, `no *-channels.json reference file in ${dirs.join(" or ")}`);
  for (const name of files) {
    const text = readFileSync(name, "utf8");
    const json = JSON.parse(text) as Record<string, number[][]>;
    const keys = Object.keys(json);
    const kind = /\.(q|k|qk)_proj$/.exec(keys[0])![1] as ChannelKind;
    const rows = json[keys[0]].length;
    const shape: ChannelShape = {
      numLayers: keys.length,
      numHeads: kind === "k" ? 1 : rows,
      numKvHeads: kind === "k" ? rows : 1,
      headDim: json[keys[0]][0].length,
    };
    const parsed = parseChannelConfig(json, shape, name);
    const rewritten = formatChannelConfig(parsed);
    for (const r of [1, 16, shape.headDim]) {
      assert.deepEqual(
        authorsLoad(rewritten, shape.numLayers, kind, r),
        authorsLoad(text, shape.numLayers, kind, r),
        `${name}: r=${r} differs after a rewrite`,
      );
    }
  }
});

Deno.test("interop: SGLang's flags map onto a spec, and back", () => {
  const model = { headDim: 128, numQHeads: 32, numKvHeads: 8 };
  const { spec, channelKind, channelConfigPath } = specFromSglangFlags({
    "--ds-heavy-channel-num": "16",
    "--ds-heavy-token-num": 512,
    "--ds-heavy-channel-type": "qk",
    "--ds-sparse-decode-threshold": "2048",
    "--ds-channel-config-path": "/models/llama/channels.json",
  }, model);
  assert.equal(spec.variant, "ds_d128_q32_kv8_p16_fp16_r16b16_head");
  assert.deepEqual(spec.budget, { kind: "fixed", tokens: 512 });
  assert.equal(spec.denseThreshold, 2048);
  assert.deepEqual(spec.denseLayers, []);
  assert.equal(spec.labelHeads, "query");
  assert.equal(channelKind, "qk");
  assert.equal(channelConfigPath, "/models/llama/channels.json");
  assert.deepEqual(sglangFlagsFromSpec(spec, channelKind), {
    ds_heavy_channel_num: 16,
    ds_heavy_token_num: 512,
    ds_heavy_channel_type: "qk",
    ds_sparse_decode_threshold: 2048,
  });

  // SGLang's defaults; "k" rankings have one row per kv head, so labels are per kv head.
  const defaults = specFromSglangFlags({}, model);
  assert.equal(defaults.spec.variant, "ds_d128_q32_kv8_p16_fp16_r32b16_head");
  assert.deepEqual(defaults.spec.budget, { kind: "fixed", tokens: 256 });
  assert.equal(defaults.spec.denseThreshold, 4096);
  const k = specFromSglangFlags({ ds_heavy_channel_type: "k" }, { ...model, kvDtype: "bf16" });
  assert.equal(k.spec.variant, "ds_d128_q32_kv8_p16_bf16_r32b16_headkv");
  assert.equal(k.channelKind, "k");

  // The rows the authors' loader reads for the flags' kind are the spec's label heads.
  const shape = { numLayers: 2, numHeads: 32, numKvHeads: 8, headDim: 128 };
  const text = formatChannelConfig(randomConfig(shape, 3));
  for (const s of [defaults, k]) {
    const layers = authorsLoad(text, 2, s.channelKind, s.spec.labelChannels);
    assert.equal(layers[0].length, s.spec.numLabelHeads);
    assert.equal(layers[0][0].length, s.spec.labelChannels);
  }
});

Deno.test("interop: bad SGLang flags name the flag, the value and what is allowed", () => {
  const model = { headDim: 128, numQHeads: 32, numKvHeads: 8 };
  const problems = (flags: Record<string, unknown>, m = model) => {
    try {
      specFromSglangFlags(flags, m);
    } catch (e) {
      assert.ok(e instanceof SpecError, String(e));
      return e.problems;
    }
    assert.fail("expected a SpecError");
  };
  assert.deepEqual(problems({ "--ds-heavy-token-num": "many", ds_heavy_channel_type: "v" }), [
    `--ds-heavy-token-num: got "many"; allowed: an integer >= 1`,
    `--ds-heavy-channel-type: got "v"; allowed: "q", "k", "qk"`,
  ]);
  assert.match(
    problems({ "--ds-heavy-chanel-num": 8 })[0],
    /^--ds-heavy-chanel-num: not a Double Sparsity flag of SGLang; allowed: --enable-double-sparsity, /,
  );
  assert.match(
    problems({ "--ds-heavy-channel-num": 7 })[0],
    /^--ds-heavy-channel-num \(labels\.channels: got 7 at 16 bits/,
  );
  assert.match(problems({}, { ...model, headDim: 96 })[0], /^model shape: headDim: got 96/);
  assert.deepEqual(problems({ enable_double_sparsity: false }), [
    "--enable-double-sparsity: got false; allowed: true (or left out)",
  ]);
  // What SGLang cannot express is named on the way back.
  const quantized = specFromSglangFlags({}, model).spec;
  assert.throws(
    () => sglangFlagsFromSpec({ ...quantized, labelBits: 4, selection: "group" }, "qk"),
    /labelBits: got 4; SGLang stores labels unquantized[\s\S]*selection: got "group"/,
  );
});
