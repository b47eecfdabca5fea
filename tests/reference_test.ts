import assert from "node:assert/strict";
import { type AttentionInput, type AttentionSpec, defineAttention } from "../src/dsl/mod.ts";
import { kvHeadOfLabelHead, labelMetaOffset, labelRowOffset } from "../src/dsl/layout.ts";
import {
  bf16BitsFromFloat,
  decodeArray,
  encodeArray,
  f16BitsFromFloat,
  floatFromBf16Bits,
  floatFromF16Bits,
  rintHalfEven,
  roundTo,
} from "../src/util/dtype.ts";
import { dequantizeRow, packCodes, quantizeRow, unpackCodes } from "../src/reference/labels.ts";
import { PageTable } from "../src/util/page_table.ts";
import { CpuPagedCache } from "../src/reference/paged_cache.ts";
import {
  denseDecode,
  doubleSparsityDecode,
  labelScores,
  sparseDecode,
  topK,
} from "../src/reference/attention.ts";
import { maxRelDiff, randomArray, randomPermutation, seededRandom } from "./helpers.ts";

// ---------------------------------------------------------------------------------------------
// Quantization

Deno.test("labels: [0, 1, 2, 3] at 2 bits quantizes to codes 0..3 with scale 1, min 0", () => {
  const q = quantizeRow([0, 1, 2, 3], 2);
  assert.deepEqual([...q.codes], [0, 1, 2, 3]);
  assert.equal(q.scale, 1); // (3 - 0) / (2^2 - 1)
  assert.equal(q.min, 0);
  assert.deepEqual([...dequantizeRow(q)], [0, 1, 2, 3]);
});

Deno.test("labels: a negative range at 4 bits: scale (max-min)/15, codes relative to min", () => {
  // min -3, max 12: scale 15 / 15 = 1; x - min = 0, 3, 8, 15.
  const q = quantizeRow([-3, 0, 5, 12], 4);
  assert.equal(q.scale, 1);
  assert.equal(q.min, -3);
  assert.deepEqual([...q.codes], [0, 3, 8, 15]);
});

Deno.test("labels: a constant vector uses the 1e-5 range floor and dequantizes exactly", () => {
  const q = quantizeRow([5, 5, 5, 5], 4);
  assert.ok(q.scale > 0, "scale must stay positive");
  assert.ok(Math.abs(q.scale - 1e-5 / 15) < 1e-5 / 15 * 1e-6, `scale ${q.scale}`);
  assert.equal(q.min, 5);
  assert.deepEqual([...q.codes], [0, 0, 0, 0]);
  assert.deepEqual([...dequantizeRow(q)], [5, 5, 5, 5]);
  // A range below the floor still uses the floor: 1e-6 / (1e-5 / 3) = 0.3 -> code 0.
  const tiny = quantizeRow([0, 1e-6], 2);
  assert.ok(Math.abs(tiny.scale - 1e-5 / 3) < 1e-5 / 3 * 1e-6, `scale ${tiny.scale}`);
  assert.deepEqual([...tiny.codes], [0, 0]);
});

Deno.test("labels: exact halves round to even, values above the range clamp", () => {
  // min 0, max 15 at 4 bits: scale 1, so (x - min) / scale = x exactly.
  const q = quantizeRow([0, 0.5, 1.5, 2.5, 3.5, 14.5, 15], 4);
  assert.equal(q.scale, 1);
  assert.deepEqual([...q.codes], [0, 0, 2, 2, 4, 14, 15]);
  // rintHalfEven itself, including negative halves.
  const cases: [number, number][] = [[0.5, 0], [1.5, 2], [2.5, 2], [-1.5, -2], [-2.5, -2], [
    2.4999,
    2,
  ], [2.5001, 3]];
  for (const [x, want] of cases) assert.equal(rintHalfEven(x), want, `rint(${x})`);
});

/** Asserts no neighbouring code dequantizes closer to the input than the chosen one. */
function assertCodesOptimal(
  values: ArrayLike<number>,
  q: { codes: Uint8Array; scale: number; min: number },
  bits: number,
  what: string,
): void {
  const levels = (1 << bits) - 1;
  for (let i = 0; i < values.length; i++) {
    const c = q.codes[i];
    const err = (code: number) => Math.abs(code * q.scale + q.min - values[i]);
    const slack = 1e-6 * q.scale;
    if (c > 0) assert.ok(err(c) <= err(c - 1) + slack, `${what}: ${values[i]} code ${c}`);
    if (c < levels) assert.ok(err(c) <= err(c + 1) + slack, `${what}: ${values[i]} code ${c}`);
    // Away from the clamped ends, within half a step.
    if (c > 0 && c < levels) assert.ok(err(c) <= q.scale / 2 + slack, `${what}: ${values[i]}`);
  }
}

Deno.test("labels: stored (fp16/bf16) scale and min are exact 16-bit values and codes stay optimal", () => {
  const random = seededRandom(7);
  for (const dtype of ["fp16", "bf16"] as const) {
    for (const bits of [8, 4, 2]) {
      for (let trial = 0; trial < 50; trial++) {
        const values = Float32Array.from(randomArray(random, 32, -2, 3));
        const q = quantizeRow(values, bits, dtype);
        assert.equal(roundTo(dtype, q.scale), q.scale, `${dtype} scale`);
        assert.equal(roundTo(dtype, q.min), q.min, `${dtype} min`);
        // Codes are chosen against the stored scale and min, not the unrounded ones.
        assertCodesOptimal(values, q, bits, `${dtype} b${bits}`);
      }
    }
  }
});

Deno.test("labels: packCodes lays codes out little-endian per word, unpackCodes inverts it", () => {
  const out = new Uint32Array(2);
  packCodes([1, 2, 3, 4, 5, 6, 7, 8], 4, out);
  assert.equal(out[0], 0x87654321);
  packCodes([0x11, 0x22, 0x33, 0x44, 0xaa, 0xbb, 0xcc, 0xdd], 8, out);
  assert.deepEqual([...out], [0x44332211, 0xddccbbaa]);
  packCodes([1, 2, 3], 2, out, 1); // at word 1: 1 | 2 << 2 | 3 << 4
  assert.equal(out[1], 1 + 8 + 48);
  packCodes([0, 0, 0, 0, 0, 0, 0, 15], 4, out);
  assert.equal(out[0], 0xf0000000, "the top code must not make the word negative");

  const random = seededRandom(3);
  for (const bits of [2, 4, 8]) {
    const n = 64;
    const codes = Array.from({ length: n }, () => Math.floor(random() * (1 << bits)));
    const words = new Uint32Array(3 + (n * bits) / 32);
    packCodes(codes, bits, words, 3);
    assert.deepEqual([...unpackCodes(words, 3, n, bits)], codes, `${bits} bits`);
  }
});

// ---------------------------------------------------------------------------------------------
// fp16 / bf16

Deno.test("dtype: bf16 rounds to nearest, ties to even, overflows to inf, keeps NaN and -0", () => {
  assert.equal(bf16BitsFromFloat(1), 0x3f80);
  assert.equal(bf16BitsFromFloat(-2), 0xc000);
  // bf16 has 7 mantissa bits: at 1.0 a step is 2^-7.
  assert.equal(bf16BitsFromFloat(1 + 2 ** -8), 0x3f80, "tie -> even (down)");
  assert.equal(bf16BitsFromFloat(1 + 3 * 2 ** -8), 0x3f82, "tie -> even (up)");
  assert.equal(bf16BitsFromFloat(1 + 2 ** -8 + 2 ** -20), 0x3f81, "above the tie -> up");
  assert.equal(bf16BitsFromFloat(1 + 2 ** -8 - 2 ** -20), 0x3f80, "below the tie -> down");
  // The largest float is above the midpoint between bf16 max (0x7f7f) and 2^128: rounds to inf.
  assert.equal(bf16BitsFromFloat(3.4028234663852886e38), 0x7f80);
  assert.equal(bf16BitsFromFloat(-Infinity), 0xff80);
  assert.ok(Number.isNaN(floatFromBf16Bits(bf16BitsFromFloat(NaN))));
  assert.ok(Object.is(floatFromBf16Bits(bf16BitsFromFloat(-0)), -0));
  assert.equal(floatFromBf16Bits(0x3f81), 1 + 2 ** -7);
});

Deno.test("dtype: fp16 rounds to nearest even, overflows to inf past 65520, handles subnormals", () => {
  assert.equal(f16BitsFromFloat(1), 0x3c00);
  assert.equal(f16BitsFromFloat(65504), 0x7bff); // fp16 max
  assert.equal(f16BitsFromFloat(65519), 0x7bff); // below the midpoint to 65536
  assert.equal(f16BitsFromFloat(65520), 0x7c00); // the midpoint ties to even: inf
  assert.equal(f16BitsFromFloat(1e5), 0x7c00);
  assert.equal(f16BitsFromFloat(-1e5), 0xfc00);
  // 10 mantissa bits: at 1.0 a step is 2^-10.
  assert.equal(f16BitsFromFloat(1 + 2 ** -11), 0x3c00, "tie -> even (down)");
  assert.equal(f16BitsFromFloat(1 + 3 * 2 ** -11), 0x3c02, "tie -> even (up)");
  assert.equal(f16BitsFromFloat(2 ** -24), 0x0001, "smallest subnormal");
  assert.equal(f16BitsFromFloat(2 ** -25), 0x0000, "half the smallest subnormal ties to 0");
  assert.equal(f16BitsFromFloat(1.5 * 2 ** -25), 0x0001);
  assert.equal(floatFromF16Bits(0x3555), 0.333251953125);
  assert.ok(Number.isNaN(floatFromF16Bits(f16BitsFromFloat(NaN))));
});

Deno.test("dtype: array encode/decode agree with the scalar conversions", () => {
  const random = seededRandom(11);
  const values = Float32Array.from(randomArray(random, 257, -70000, 70000));
  values[0] = 1 + 2 ** -8; // a bf16 tie
  for (const dtype of ["fp16", "bf16"] as const) {
    const bits = encodeArray(dtype, values);
    const back = decodeArray(dtype, bits);
    for (let i = 0; i < values.length; i++) {
      const want = dtype === "fp16" ? f16BitsFromFloat(values[i]) : bf16BitsFromFloat(values[i]);
      assert.equal(bits[i], want, `${dtype} encode ${values[i]}`);
      assert.ok(Object.is(back[i], roundTo(dtype, values[i])), `${dtype} decode ${values[i]}`);
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Page table

Deno.test("page table: growth across page boundaries, locate, exhaustion and release", () => {
  // 5 physical pages of 4 tokens, 2 sequences of at most 3 pages.
  const t = new PageTable(2, 5, 4, 3);
  assert.equal(t.maxTokensPerSeq, 12);
  assert.equal(t.grow(0, 3), 0);
  assert.equal(t.freePages, 4, "3 tokens fit one page");
  assert.equal(t.grow(0), 3);
  assert.equal(t.freePages, 4, "token 3 fills the first page");
  assert.equal(t.grow(0), 4);
  assert.equal(t.freePages, 3, "token 4 opens a second page");
  assert.equal(t.grow(1, 5), 0);
  assert.equal(t.freePages, 1);
  assert.deepEqual([...t.seqLens], [5, 5]);

  // Pages are handed out in ascending order: seq 0 got 0 and 1, seq 1 got 2 and 3.
  assert.deepEqual([...t.blockTables], [0, 1, -1, 2, 3, -1]);
  assert.deepEqual(t.locate(0, 3), { page: 0, row: 3 });
  assert.deepEqual(t.locate(0, 4), { page: 1, row: 0 });
  assert.deepEqual(t.locate(1, 4), { page: 3, row: 0 });
  assert.throws(() => t.locate(0, 5), /position 5 outside \[0, 5\)/);
  assert.throws(() => t.locate(2, 0), /sequence index 2/);

  // Over the block table's 12 tokens.
  assert.throws(() => t.grow(0, 8), /13 tokens exceed/);
  // Seq 1 takes the last page; seq 0 then cannot grow into a third page.
  assert.equal(t.grow(1, 7), 5);
  assert.equal(t.freePages, 0);
  assert.throws(() => t.grow(0, 4), /needs 1 more pages, only 0 free/);
  assert.equal(t.seqLens[0], 5, "a failed grow leaves the sequence unchanged");
  assert.equal(t.grow(0, 3), 5, "growth within the sequence's last page needs no new page");

  t.release(1);
  assert.equal(t.freePages, 3);
  assert.equal(t.seqLens[1], 0);
  assert.deepEqual([...t.blockTables.subarray(3)], [-1, -1, -1]);
  assert.equal(t.grow(0, 4), 8, "freed pages are reusable");
  assert.equal(t.freePages, 2);
});

// ---------------------------------------------------------------------------------------------
// Paged cache

/** Fills `cache` with `lens[seq]` random tokens per sequence; returns the stored K/V as floats. */
function fillCache(
  cache: CpuPagedCache,
  lens: number[],
  random: () => number,
): { k: Float64Array[][]; v: Float64Array[][] } {
  const s = cache.spec;
  const width = s.numKvHeads * s.headDim;
  const k: Float64Array[][] = lens.map(() => []);
  const v: Float64Array[][] = lens.map(() => []);
  // Interleave the sequences so their pages are not contiguous.
  for (let pos = 0; pos < Math.max(...lens); pos++) {
    for (let seq = 0; seq < lens.length; seq++) {
      if (pos >= lens[seq]) continue;
      const kf = Float32Array.from(randomArray(random, width, -2, 2));
      const vf = Float32Array.from(randomArray(random, width, -2, 2));
      const kBits = encodeArray(s.kvDtype, kf);
      const vBits = encodeArray(s.kvDtype, vf);
      assert.equal(cache.append(seq, kBits, vBits), pos);
      k[seq].push(Float64Array.from(kf, (x) => roundTo(s.kvDtype, x)));
      v[seq].push(Float64Array.from(vf, (x) => roundTo(s.kvDtype, x)));
    }
  }
  return { k, v };
}

function randomChannels(spec: AttentionSpec, random: () => number): Int32Array {
  const out: number[] = [];
  for (let lh = 0; lh < spec.numLabelHeads; lh++) {
    out.push(...randomPermutation(random, spec.headDim).slice(0, spec.labelChannels));
  }
  return Int32Array.from(out);
}

function newCache(spec: AttentionSpec, channels: Int32Array, lens: number[], random: () => number) {
  const maxPages = Math.max(...lens.map((l) => Math.ceil(l / spec.pageSize)));
  const cache = new CpuPagedCache(
    spec,
    channels,
    lens.length,
    lens.length * maxPages + 3,
    maxPages,
  );
  cache.pages.scrambleFreeList(random);
  return cache;
}

const SMALL: AttentionInput = {
  headDim: 64,
  numQHeads: 4,
  numKvHeads: 2,
  kvDtype: "fp16",
  pageSize: 4,
  labels: { channels: 4, bits: 16 },
  selection: "head",
  budget: { tokens: 3 },
};

Deno.test("paged cache: 16-bit label rows are the selected K channels, two per word", () => {
  const random = seededRandom(21);
  for (
    const labels of [{ channels: 4, bits: 16 }, { channels: 6, bits: 16, heads: "kv" }] as const
  ) {
    for (const kvDtype of ["fp16", "bf16"] as const) {
      const spec = defineAttention({ ...SMALL, kvDtype, labels });
      const channels = randomChannels(spec, random);
      const cache = newCache(spec, channels, [6, 9], random);
      const { k } = fillCache(cache, [6, 9], random);
      const r = spec.labelChannels;
      for (let seq = 0; seq < 2; seq++) {
        for (let t = 0; t < k[seq].length; t++) {
          const { page, row } = cache.pages.locate(seq, t);
          for (let lh = 0; lh < spec.numLabelHeads; lh++) {
            // Query-head labels take K of the head's kv head (head / 2); kv labels their own.
            const kvh = labels.heads === "kv" ? lh : Math.floor(lh / 2);
            const want = Array.from(
              { length: r },
              (_, c) => k[seq][t][kvh * 64 + channels[lh * r + c]],
            );
            assert.deepEqual([...cache.labelRow(seq, t, lh)], want, `seq ${seq} t ${t} lh ${lh}`);
            // The raw words: channel 0 in the low half of word 0, channel 1 in the high half.
            const at = ((page * spec.numLabelHeads + lh) * 4 + row) * (r / 2);
            assert.equal(
              cache.labels[at] & 0xffff,
              cache.k[
                ((page * 2 + kvh) * 4 + row) * 64 + channels[lh * r]
              ],
            );
            assert.equal(
              cache.labels[at] >>> 16,
              cache.k[
                ((page * 2 + kvh) * 4 + row) * 64 + channels[lh * r + 1]
              ],
            );
          }
        }
      }
    }
  }
});

Deno.test("paged cache: quantized label rows are the quantized K channels with 16-bit meta", () => {
  const random = seededRandom(22);
  for (const [bits, channels] of [[8, 4], [4, 8], [2, 16]] as const) {
    for (const kvDtype of ["fp16", "bf16"] as const) {
      const spec = defineAttention({
        ...SMALL,
        kvDtype,
        labels: { channels, bits },
        selection: "group",
      });
      const chans = randomChannels(spec, random);
      const cache = newCache(spec, chans, [7], random);
      const { k } = fillCache(cache, [7], random);
      for (let t = 0; t < 7; t++) {
        const { page, row } = cache.pages.locate(0, t);
        for (let lh = 0; lh < spec.numLabelHeads; lh++) {
          assert.equal(kvHeadOfLabelHead(spec, lh), lh);
          const values = Array.from(
            { length: channels },
            (_, c) => k[0][t][lh * 64 + chans[lh * channels + c]],
          );
          const q = quantizeRow(values, bits, kvDtype);
          const got = cache.labelRow(0, t, lh);
          assert.deepEqual([...got], [...dequantizeRow(q)], `b${bits} ${kvDtype} t ${t}`);
          assertCodesOptimal(values, q, bits, `b${bits} ${kvDtype} t ${t}`);
          const meta = cache.meta[labelMetaOffset(spec, page, lh, row)];
          assert.equal(
            meta & 0xffff,
            kvDtype === "fp16" ? f16BitsFromFloat(q.scale) : bf16BitsFromFloat(q.scale),
          );
          assert.equal(
            meta >>> 16,
            kvDtype === "fp16" ? f16BitsFromFloat(q.min) : bf16BitsFromFloat(q.min),
          );
          const words = (channels * bits) / 32;
          assert.equal(labelRowOffset(spec, page, lh, row), ((page * 2 + lh) * 4 + row) * words);
          assert.deepEqual(
            [...unpackCodes(cache.labels, labelRowOffset(spec, page, lh, row), channels, bits)],
            [...q.codes],
          );
        }
      }
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Top-k and label scores

Deno.test("topK: highest scores, ties to the lower index, ascending output", () => {
  assert.deepEqual([...topK([1, 5, 3, 5, 2], 2)], [1, 3]);
  assert.deepEqual([...topK([1, 5, 3, 5, 2], 3)], [1, 2, 3]);
  assert.deepEqual([...topK([2, 2, 2, 2], 2)], [0, 1]);
  assert.deepEqual([...topK([1, 3, 3, 0, 3], 2)], [1, 2]);
  assert.deepEqual([...topK([0, -1, -Infinity, -0.5], 2)], [0, 3]);
  assert.deepEqual([...topK([4, 9, 1], 10)], [0, 1, 2]);
  assert.deepEqual([...topK([4, 9, 1], 0)], []);
});

Deno.test("labelScores: GQA group selection sums the group's query labels (hand-computed)", () => {
  // d = 64, 4 query heads, 2 kv heads (group 2), labels on channels [3, 10] (kv head 0) and
  // [5, 7] (kv head 1); every other value is noise the scores must not see.
  const spec = defineAttention({
    ...SMALL,
    labels: { channels: 2, bits: 16 },
    selection: "group",
    budget: { tokens: 2 },
  });
  const random = seededRandom(5);
  const cache = new CpuPagedCache(spec, Int32Array.from([3, 10, 5, 7]), 1, 2, 2);
  const kTok = [
    { 3: 1, 10: 2, 69: 1, 71: 1 }, // kv head 1 lives at 64 + c
    { 3: -1, 10: 4, 69: 3, 71: -1 },
    { 3: 0.5, 10: 3, 69: 0, 71: -2 },
  ];
  for (const entries of kTok) {
    const kf = Float32Array.from(randomArray(random, 128, -4, 4), (x) => roundTo("fp16", x));
    for (const [i, x] of Object.entries(entries)) kf[Number(i)] = x;
    const vf = Float32Array.from(randomArray(random, 128));
    cache.append(0, encodeArray("fp16", kf), encodeArray("fp16", vf));
  }
  const q = randomArray(random, 4 * 64, -4, 4);
  [q[3], q[10]] = [1, 2]; // head 0
  [q[64 + 3], q[64 + 10]] = [3, -1]; // head 1 -> group 0 label (4, 1)
  [q[128 + 5], q[128 + 7]] = [2, 0]; // head 2
  [q[192 + 5], q[192 + 7]] = [-1, 1]; // head 3 -> group 1 label (1, 1)
  const { scores } = labelScores(cache, 0, q);
  // Group 0: 4*1 + 1*2 = 6; 4*-1 + 1*4 = 0; 4*0.5 + 1*3 = 5.
  // Group 1: 1*1 + 1*1 = 2; 1*3 + 1*-1 = 2; 1*0 + 1*-2 = -2.
  assert.deepEqual([...scores[0]], [6, 0, 5]);
  assert.deepEqual([...scores[1]], [2, 2, -2]);

  const ds = doubleSparsityDecode(cache, 0, q);
  assert.equal(ds.route, "sparse");
  assert.equal(ds.budget, 2);
  assert.deepEqual(ds.selected.map((s) => [...s]), [[0, 2], [0, 1]]);
});

Deno.test("labelScores: per-head 4-bit labels quantize the query label too (hand-computed)", () => {
  // One query head per kv head, label channels 0..7 at 4 bits (15 levels).
  const spec = defineAttention({
    ...SMALL,
    numQHeads: 2,
    labels: { channels: 8, bits: 4 },
    budget: { tokens: 1 },
  });
  const chans = [0, 1, 2, 3, 4, 5, 6, 7];
  const cache = new CpuPagedCache(spec, Int32Array.from([...chans, ...chans]), 1, 1, 1);
  const k = new Float32Array(128);
  k.set([0, 15, 1, 2, 3, 4, 5, 6], 0); // kv head 0: min 0, max 15, scale 1: exact codes
  k.set([1, 1, 1, 1, 1, 1, 1, 1], 64); // kv head 1: constant, dequantizes to 1 exactly
  cache.append(0, encodeArray("fp16", k), encodeArray("fp16", new Float32Array(128)));
  const q = new Float64Array(128);
  // Scale 1: 0.4 -> 0, 0.6 -> 1, 1.5 -> 2 and 2.5 -> 2 (ties to even).
  q.set([0, 15, 0.4, 0.6, 1.5, 2.5, 7, 8], 0);
  q.set([1, 2, 3, 4, 5, 6, 7, 8], 64);
  const { scores } = labelScores(cache, 0, q);
  // (0, 15, 0, 1, 2, 2, 7, 8) . (0, 15, 1, 2, 3, 4, 5, 6) = 225 + 2 + 6 + 8 + 35 + 48.
  assert.deepEqual([...scores[0]], [324]);
  // Head 1: every k label is 1, so the score is the sum of the dequantized q label, 36 up to
  // the q quantization: scale 7/15, codes 0, 2, 4, 6, 9, 11, 13, 15 -> 8 + 60 * 7/15 = 36.
  assert.ok(Math.abs(scores[1][0] - 36) < 1e-5, `score ${scores[1][0]}`);
});

// ---------------------------------------------------------------------------------------------
// Attention

/** Independent naive attention of query head h over `tokens` of the stored K/V of a sequence. */
function naiveAttention(
  spec: AttentionSpec,
  k: Float64Array[],
  v: Float64Array[],
  q: ArrayLike<number>,
  h: number,
  tokens: ArrayLike<number>,
): Float64Array {
  const d = spec.headDim;
  const kvh = Math.floor(h / (spec.numQHeads / spec.numKvHeads));
  const logits = Array.from(tokens, (t) => {
    let dot = 0;
    for (let c = 0; c < d; c++) dot += q[h * d + c] * k[t][kvh * d + c];
    return dot / Math.sqrt(d);
  });
  const max = Math.max(...logits);
  const w = logits.map((l) => Math.exp(l - max));
  const sum = w.reduce((a, b) => a + b, 0);
  const out = new Float64Array(d);
  Array.from(tokens).forEach((t, i) => {
    for (let c = 0; c < d; c++) out[c] += (w[i] / sum) * v[t][kvh * d + c];
  });
  return out;
}

const SHAPES: AttentionInput[] = [
  { ...SMALL, numQHeads: 2, numKvHeads: 2, pageSize: 8 }, // MHA
  { ...SMALL, numQHeads: 8, numKvHeads: 2, pageSize: 4 }, // GQA 4, head selection
  {
    ...SMALL,
    headDim: 128,
    numQHeads: 4,
    numKvHeads: 1,
    kvDtype: "bf16",
    pageSize: 16,
    labels: { channels: 8, bits: 16 },
    selection: "group",
  },
  { ...SMALL, numQHeads: 6, numKvHeads: 3, labels: { channels: 8, bits: 4 }, selection: "group" },
];
const LENS = [1, 3, 4, 5, 16, 17, 33];

Deno.test("attention: Double Sparsity with k >= context equals independent dense attention", () => {
  const random = seededRandom(31);
  for (const input of SHAPES) {
    // A budget covering every token: route dense; and the sparse pipeline forced with k >= L.
    const spec = defineAttention({ ...input, budget: { ratio: 1 } });
    const cache = newCache(spec, randomChannels(spec, random), LENS, random);
    const { k, v } = fillCache(cache, LENS, random);
    for (let seq = 0; seq < LENS.length; seq++) {
      const q = randomArray(random, spec.numQHeads * spec.headDim, -3, 3);
      const want = new Float64Array(spec.numQHeads * spec.headDim);
      const all = Array.from({ length: LENS[seq] }, (_, i) => i);
      for (let h = 0; h < spec.numQHeads; h++) {
        want.set(naiveAttention(spec, k[seq], v[seq], q, h, all), h * spec.headDim);
      }
      const ds = doubleSparsityDecode(cache, seq, q);
      assert.equal(ds.route, "dense");
      assert.ok(maxRelDiff(ds.out, want) < 1e-12, `${spec.variant} len ${LENS[seq]}`);
      const { scores } = labelScores(cache, seq, q);
      const selected = scores.map((sc) => topK(sc, LENS[seq] + 2));
      for (const sel of selected) assert.deepEqual([...sel], all);
      const sparse = sparseDecode(cache, seq, q, selected);
      assert.ok(maxRelDiff(sparse, want) < 1e-12, `${spec.variant} len ${LENS[seq]} sparse`);
    }
  }
});

Deno.test("attention: sparseDecode over all tokens (any order) equals denseDecode", () => {
  const random = seededRandom(32);
  for (const input of SHAPES) {
    const spec = defineAttention(input);
    const cache = newCache(spec, randomChannels(spec, random), LENS, random);
    fillCache(cache, LENS, random);
    for (let seq = 0; seq < LENS.length; seq++) {
      const q = randomArray(random, spec.numQHeads * spec.headDim, -3, 3);
      const shuffled = Int32Array.from(randomPermutation(random, LENS[seq]));
      const sets = Array.from({ length: spec.numSelectionHeads }, () => shuffled);
      const dense = denseDecode(cache, seq, q);
      assert.ok(maxRelDiff(sparseDecode(cache, seq, q, sets), dense) < 1e-12, spec.variant);
    }
  }
});

Deno.test("attention: oracle labels (r = headDim, 16 bits) select exactly the top-k of q.k", () => {
  const random = seededRandom(33);
  for (const selection of ["head", "group"] as const) {
    const spec = defineAttention({
      ...SMALL,
      numQHeads: 4,
      numKvHeads: 2,
      labels: { channels: 64, bits: 16 },
      selection,
      budget: { ratio: 1 / 4, min: 3 },
    });
    const lens = [9, 20, 37];
    const cache = newCache(spec, randomChannels(spec, random), lens, random);
    const { k, v } = fillCache(cache, lens, random);
    for (let seq = 0; seq < lens.length; seq++) {
      const len = lens[seq];
      const budget = Math.max(3, Math.ceil(len / 4));
      const q = randomArray(random, 4 * 64, -3, 3);
      const ds = doubleSparsityDecode(cache, seq, q);
      assert.equal(ds.route, "sparse");
      assert.equal(ds.budget, budget);
      const want = new Float64Array(4 * 64);
      for (let sh = 0; sh < spec.numSelectionHeads; sh++) {
        const heads = selection === "head" ? [sh] : [2 * sh, 2 * sh + 1];
        const exact = Array.from({ length: len }, (_, t) => {
          let s = 0;
          for (const h of heads) {
            for (let c = 0; c < 64; c++) s += q[h * 64 + c] * k[seq][t][(h >> 1) * 64 + c];
          }
          return s;
        });
        const order = exact.map((_, t) => t).sort((a, b) => exact[b] - exact[a]);
        const top = order.slice(0, budget).sort((a, b) => a - b);
        assert.deepEqual([...ds.selected[sh]], top, `${selection} seq ${seq} head ${sh}`);
        for (const h of heads) {
          want.set(naiveAttention(spec, k[seq], v[seq], q, h, top), h * 64);
        }
      }
      assert.ok(maxRelDiff(ds.out, want) < 1e-12, `${selection} seq ${seq}`);
    }
  }
});

Deno.test("attention: softmax of two tokens, hand-computed", () => {
  // d = 64, one head; q . k0 / sqrt(64) = ln 3 and q . k1 = 0: weights 3/4 and 1/4.
  const spec = defineAttention({
    ...SMALL,
    numQHeads: 1,
    numKvHeads: 1,
    labels: { channels: 2, bits: 16 },
  });
  const cache = new CpuPagedCache(spec, Int32Array.from([0, 1]), 1, 1, 1);
  const k0 = new Float32Array(64), v0 = new Float32Array(64);
  const k1 = new Float32Array(64), v1 = new Float32Array(64);
  k0[0] = 1;
  v0[0] = 4;
  v1[1] = 8;
  cache.append(0, encodeArray("fp16", k0), encodeArray("fp16", v0));
  cache.append(0, encodeArray("fp16", k1), encodeArray("fp16", v1));
  const q = new Float64Array(64);
  q[0] = 8 * Math.log(3);
  const out = denseDecode(cache, 0, q);
  assert.ok(Math.abs(out[0] - 3) < 1e-12, `out[0] = ${out[0]}`); // 3/4 * 4
  assert.ok(Math.abs(out[1] - 2) < 1e-12, `out[1] = ${out[1]}`); // 1/4 * 8
  for (let c = 2; c < 64; c++) assert.equal(out[c], 0);
  // An explicit scale of 0 gives equal weights: the mean of the values.
  const flat = denseDecode(cache, 0, q, 0);
  assert.deepEqual([flat[0], flat[1]], [2, 4]);
  // Only token 1 selected: its value exactly.
  const one = sparseDecode(cache, 0, q, [[1]]);
  assert.deepEqual([one[0], one[1]], [0, 8]);
});
