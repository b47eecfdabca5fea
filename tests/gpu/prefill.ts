/**
 * GPU checks of the generated prefill kernel against a float64 CPU reference: causal attention of
 * a chunk's query rows over the paged cache, where the chunk may start anywhere in a sequence
 * (inside a page or on a page boundary), several sequences of different lengths share the chunk,
 * GQA maps query heads to kv heads, and the output is poisoned before the launch so every row
 * must be written. Every case runs once per requested body of the kernel (src/runtime/
 * prefill_body.ts): `deno task test:gpu` asks for mma and auto (wgmma on an H100 with NVRTC 12+);
 * alone, `deno run -A tests/gpu/prefill.ts [--bodies mma,wgmma]` asks for both by name, and a
 * body asked for by name that cannot be loaded is a FAIL, not a skip. `--wgmma-variants
 * sync,mbar3,ws3-h` checks each named variant of the wgmma body (src/codegen/
 * prefill_wgmma_variants.ts). Head dim 256 has no wgmma
 * body: its case says SKIP with that reason for wgmma (and is checked under mma).
 */
import { type AttentionSpec, defineAttention } from "../../src/dsl/spec.ts";
import type { Cuda, Stream } from "../../src/cuda/driver.ts";
import { Variant } from "../../src/runtime/variant.ts";
import { PagedKvCache } from "../../src/runtime/caches.ts";
import { DecodePlan } from "../../src/runtime/decode_plan.ts";
import { PrefillPlan } from "../../src/runtime/prefill_plan.ts";
import type { PrefillSegment } from "../../src/runtime/prefill_tiles.ts";
import { decodeArray, encodeArray } from "../../src/util/dtype.ts";
import { Random, relativeError } from "./support.ts";
import {
  PREFILL_BODY_CHOICES,
  type PrefillBodyChoice,
  prefillRuns,
} from "../../src/runtime/prefill_body.ts";
import { parseWgmmaVariant, WGMMA_VARIANTS } from "../../src/codegen/prefill_wgmma_variants.ts";
import { tuningFor } from "../../src/codegen/kernels.ts";

interface PrefillCase {
  readonly name: string;
  readonly headDim: 64 | 128 | 256;
  readonly q: number;
  readonly kv: number;
  readonly dtype: "fp16" | "bf16";
  readonly page: number;
  /** Per sequence: [positions already cached, positions in this chunk]. */
  readonly seqs: readonly (readonly [number, number])[];
}

export const PREFILL_CASES: PrefillCase[] = [
  // chunk starts inside a page (40 % 16), a one-token sequence, GQA 4
  {
    name: "d128-gqa4-fp16-p16",
    headDim: 128,
    q: 8,
    kv: 2,
    dtype: "fp16",
    page: 16,
    seqs: [[0, 300], [40, 37], [0, 1]],
  },
  // chunk starts on a page boundary after 512 cached tokens, crosses pages of 64
  {
    name: "d128-mha-bf16-p64",
    headDim: 128,
    q: 4,
    kv: 4,
    dtype: "bf16",
    page: 64,
    seqs: [[512, 488]],
  },
  {
    name: "d64-gqa2-fp16-p16",
    headDim: 64,
    q: 4,
    kv: 2,
    dtype: "fp16",
    page: 16,
    seqs: [[0, 200], [64, 65]],
  },
  // several 128-key tiles, a chunk starting mid-page, bf16 at head dim 64
  {
    name: "d64-gqa4-bf16-p16",
    headDim: 64,
    q: 8,
    kv: 2,
    dtype: "bf16",
    page: 16,
    seqs: [[333, 190], [0, 129]],
  },
  {
    name: "d256-gqa2-bf16-p32",
    headDim: 256,
    q: 4,
    kv: 2,
    dtype: "bf16",
    page: 32,
    seqs: [[17, 133]],
  },
  // 17 key tiles of 128: every slot of a 3- or 4-stage ring is reused several times (the
  // mbarrier phases of the mbar and ws schedules wrap), a chunk starting mid-page, GQA 4
  {
    name: "d128-gqa4-fp16-p16-long",
    headDim: 128,
    q: 4,
    kv: 1,
    dtype: "fp16",
    page: 16,
    seqs: [[1900, 200]],
  },
  // more query rows than one tile per sequence, ragged ends
  {
    name: "d128-gqa2-fp16-p16-ragged",
    headDim: 128,
    q: 4,
    kv: 2,
    dtype: "fp16",
    page: 16,
    seqs: [[0, 129], [1, 63], [100, 65], [0, 64]],
  },
];

function specOf(c: PrefillCase): AttentionSpec {
  return defineAttention({
    headDim: c.headDim,
    numQHeads: c.q,
    numKvHeads: c.kv,
    kvDtype: c.dtype,
    pageSize: c.page,
    labels: { channels: 16, bits: 16 },
    selection: "head",
    budget: { ratio: 1 / 16, min: 16 },
  });
}

/** Float64 causal attention of one query row over keys [0, pos] of its sequence. */
function referenceRow(
  q: Float64Array | Float32Array,
  keys: Float32Array,
  values: Float32Array,
  pos: number,
  d: number,
  scale: number,
): Float64Array {
  const s = new Float64Array(pos + 1);
  let mx = -Infinity;
  for (let t = 0; t <= pos; t++) {
    let dot = 0;
    for (let e = 0; e < d; e++) dot += q[e] * keys[t * d + e];
    s[t] = dot * scale;
    mx = Math.max(mx, s[t]);
  }
  const out = new Float64Array(d);
  let sum = 0;
  for (let t = 0; t <= pos; t++) {
    const p = Math.exp(s[t] - mx);
    sum += p;
    for (let e = 0; e < d; e++) out[e] += p * values[t * d + e];
  }
  for (let e = 0; e < d; e++) out[e] /= sum;
  return out;
}

export interface PrefillCheckResult {
  readonly name: string;
  /** The body that ran (Variant.prefill.body, with its wgmma variant after a colon). */
  readonly body: string;
  readonly error: number;
  readonly pass: boolean;
  readonly detail: string;
}

/** Runs one case: appends every position's K/V, prefills the chunk, compares with float64. */
export async function runPrefillCase(
  cuda: Cuda,
  stream: Stream,
  c: PrefillCase,
  rng: Random,
  body: PrefillBodyChoice = "auto",
  wgmmaVariant?: string,
): Promise<PrefillCheckResult> {
  const spec = specOf(c);
  using variant = await Variant.load(cuda, spec, {
    stream,
    prefillBody: body,
    prefillWgmmaVariant: wgmmaVariant,
  });
  variant.bindStream(stream);
  const maxContext = Math.max(...c.seqs.map(([a, b]) => a + b));
  using cache = new PagedKvCache(cuda, spec, {
    numLayers: 1,
    numSeqs: c.seqs.length,
    maxContext,
  });
  cache.pages.scrambleFreeList(() => rng.next());
  const d = c.headDim, Hkv = c.kv, Hq = c.q;
  // Every sequence's full K/V (cached part + chunk) as rows [pos][Hkv][d], rounded to the dtype.
  const kv = c.seqs.map(([cached, chunk]) => {
    const n = cached + chunk;
    const k = decodeArray(c.dtype, encodeArray(c.dtype, rng.floats(n * Hkv * d)));
    const v = decodeArray(c.dtype, encodeArray(c.dtype, rng.floats(n * Hkv * d)));
    return { k, v, n };
  });
  // Append all positions through the decode plan's append (the decoder's own path).
  using plan = new DecodePlan(cuda, variant, cache, stream);
  const channels = new Int32Array(spec.numLabelHeads * spec.labelChannels).map((_, i) =>
    i % spec.headDim
  );
  cache.layers[0].setChannels(channels, stream);
  const rowSeq: number[] = [], rowPos: number[] = [];
  const kAll: number[] = [], vAll: number[] = [];
  kv.forEach(({ k, v, n }, s) => {
    cache.pages.grow(s, n);
    for (let p = 0; p < n; p++) {
      rowSeq.push(s);
      rowPos.push(p);
      for (let i = 0; i < Hkv * d; i++) {
        kAll.push(k[p * Hkv * d + i]);
        vAll.push(v[p * Hkv * d + i]);
      }
    }
  });
  cache.syncBlockTables(stream);
  const rowsAll = rowSeq.length;
  using kBuf = cuda.alloc(rowsAll * Hkv * d * 2);
  using vBuf = cuda.alloc(rowsAll * Hkv * d * 2);
  using seqBuf = cuda.alloc(rowsAll * 4);
  using posBuf = cuda.alloc(rowsAll * 4);
  kBuf.upload(encodeArray(c.dtype, Float32Array.from(kAll)), stream);
  vBuf.upload(encodeArray(c.dtype, Float32Array.from(vAll)), stream);
  seqBuf.upload(Int32Array.from(rowSeq), stream);
  posBuf.upload(Int32Array.from(rowPos), stream);
  plan.appendRows(0, kBuf.ptr, vBuf.ptr, seqBuf.ptr, posBuf.ptr, rowsAll);

  // The chunk: each sequence's last `chunk` positions, rows in sequence order.
  const segments: PrefillSegment[] = [];
  let row = 0;
  c.seqs.forEach(([cached, chunk], s) => {
    segments.push({ row0: row, seq: s, pos0: cached, rows: chunk });
    row += chunk;
  });
  const chunkRows = row;
  const q = decodeArray(c.dtype, encodeArray(c.dtype, rng.floats(chunkRows * Hq * d)));
  using qBuf = cuda.alloc(chunkRows * Hq * d * 2);
  using outBuf = cuda.alloc(chunkRows * Hq * d * 2);
  qBuf.upload(encodeArray(c.dtype, q), stream);
  outBuf.fill8(0xff, stream); // NaN in fp16 and bf16: every element must be written
  using prefill = new PrefillPlan(cuda, variant, cache, chunkRows);
  prefill.setChunk(segments, stream);
  prefill.attention(0, qBuf.ptr, outBuf.ptr);
  const outBits = new Uint16Array(chunkRows * Hq * d);
  outBuf.download(outBits, stream);
  const got = decodeArray(c.dtype, outBits);

  const want = new Float64Array(chunkRows * Hq * d);
  const scale = 1 / Math.sqrt(d);
  for (const seg of segments) {
    const { k, v } = kv[seg.seq];
    for (let h = 0; h < Hq; h++) {
      const kvh = Math.floor(h / (Hq / Hkv));
      const n = seg.pos0 + seg.rows;
      const keys = new Float32Array(n * d), values = new Float32Array(n * d);
      for (let t = 0; t < n; t++) {
        keys.set(k.subarray((t * Hkv + kvh) * d, (t * Hkv + kvh + 1) * d), t * d);
        values.set(v.subarray((t * Hkv + kvh) * d, (t * Hkv + kvh + 1) * d), t * d);
      }
      for (let i = 0; i < seg.rows; i++) {
        const r = seg.row0 + i;
        const qRow = q.subarray((r * Hq + h) * d, (r * Hq + h + 1) * d);
        want.set(referenceRow(qRow, keys, values, seg.pos0 + i, d, scale), (r * Hq + h) * d);
      }
    }
  }
  const unwritten = got.findIndex((x) => !Number.isFinite(x));
  const error = relativeError(got, want);
  const tol = c.dtype === "fp16" ? 2e-3 : 1e-2;
  const pass = unwritten < 0 && error < tol;
  return {
    name: c.name,
    body: variant.prefill.wgmmaVariant === null
      ? variant.prefill.body
      : `${variant.prefill.body}:${variant.prefill.wgmmaVariant}`,
    error,
    pass,
    detail: unwritten >= 0
      ? `element ${unwritten} not written (or not finite)`
      : `rows=${chunkRows} tiles=${prefill.numTiles} rel err ${
        error.toExponential(2)
      } (tol ${tol})`,
  };
}

/**
 * Every prefill case under each of `bodies` (the wgmma ones once per variant of `wgmmaVariants`,
 * none: the default variant); prints a line each (with the body that ran) and returns whether all
 * passed. A body asked for by name that cannot be loaded fails the case.
 */
export async function runPrefillChecks(
  cuda: Cuda,
  stream: Stream,
  seed: number,
  bodies: readonly PrefillBodyChoice[] = ["mma", "auto"],
  wgmmaVariants: readonly string[] = [],
): Promise<boolean> {
  let ok = true;
  for (const [body, wgmmaVariant] of prefillRuns(bodies, wgmmaVariants)) {
    const asked = wgmmaVariant === undefined ? body : `${body}:${wgmmaVariant}`;
    const rng = new Random(seed);
    for (const c of PREFILL_CASES) {
      if (body === "wgmma" && !tuningFor(specOf(c)).prefillWgmma) {
        console.log(
          `SKIP prefill ${c.name} [${asked} asked]: head dim ${c.headDim} has no wgmma body ` +
            "(mma.sync only; checked under mma)",
        );
        continue;
      }
      let r: PrefillCheckResult;
      try {
        r = await runPrefillCase(cuda, stream, c, rng, body, wgmmaVariant);
      } catch (e) {
        console.log(
          `FAIL prefill ${c.name} [${asked} asked]: ${e instanceof Error ? e.message : e}`,
        );
        ok = false;
        continue;
      }
      console.log(
        `${
          r.pass ? "PASS" : "FAIL"
        } prefill ${c.name} [${asked} asked, ${r.body} ran]: ${r.detail}`,
      );
      ok &&= r.pass;
    }
  }
  return ok;
}

if (import.meta.main) {
  const { cuda: openCuda } = await import("../../src/cuda/driver.ts");
  const { openCommand } = await import("../../src/cli/front_door.ts");
  const { parsePrefillBody } = await import("../../src/runtime/prefill_body.ts");
  const { values } = openCommand({
    name: "tests/gpu/prefill.ts",
    usage: `deno run -A tests/gpu/prefill.ts [--bodies LIST] [--wgmma-variants LIST]
  --bodies LIST   prefill bodies to check, of ${PREFILL_BODY_CHOICES.join(", ")} (default mma,wgmma)
  --wgmma-variants LIST  variants of the wgmma body to check (default: the default one; all: ${
      WGMMA_VARIANTS.join(",")
    })`,
    options: {
      bodies: { type: "string", default: "mma,wgmma" },
      "wgmma-variants": { type: "string", default: "" },
    },
  });
  const bodies = values.bodies!.split(",").map((b) => parsePrefillBody(b, "--bodies"));
  const wgmmaVariants = values["wgmma-variants"]!.split(",").filter((v) => v);
  for (const v of wgmmaVariants) parseWgmmaVariant(v, "--wgmma-variants");
  const cuda = openCuda();
  using stream = cuda.stream();
  const seed = Number(Deno.env.get("DS_SEED") ?? Date.now() % 1e9);
  console.log(
    `prefill checks on ${cuda.info.name}, seed ${seed}, bodies ${bodies.join(", ")}` +
      (wgmmaVariants.length > 0 ? `, wgmma variants ${wgmmaVariants.join(", ")}` : ""),
  );
  const ok = await runPrefillChecks(cuda, stream, seed, bodies, wgmmaVariants);
  Deno.exit(ok ? 0 : 1);
}
