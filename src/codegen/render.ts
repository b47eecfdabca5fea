/**
 * Renders the CUDA sources of a variant from the Handlebars templates in `templates/`
 * (compiled with `noEscape` and `strict`, so a missing value is an error, not an empty string).
 * Pure apart from reading the template files; runs under Deno and Node.
 */
import Handlebars from "handlebars";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { type AttentionSpec, ensureSpec, type KvDtype } from "../dsl/spec.ts";
import { type DeviceConstants, deviceConstants } from "../dsl/layout.ts";
import {
  DECODE_GEMM_MAX_ROWS,
  DECODE_GEMM_UNROLL,
  DECODE_GEMM_WARPS,
  type FamilyKernel,
  GEMM_THREADS,
  GEMM_TILE,
  GEMM_TILE_K,
  MODEL_KERNELS,
  PREDICT_QUERY_ROWS,
  PREDICT_QUERY_SPLIT,
  TOKEN_CHOICE_EXP2_POLY,
  TOKEN_CHOICE_THREADS,
  UTIL_KERNELS,
} from "./families.ts";
import { type KernelId, KERNELS, symbolOf, threadsOf, type Tuning, tuningFor } from "./kernels.ts";
import { wgmmaWrappers } from "./wgmma.ts";
import { WGMMA_SCHEDULE_CODE } from "./prefill_wgmma_variants.ts";

/** Where the templates live: `DS_TEMPLATES_DIR`, else `templates/` beside `src/`. */
export function templatesDir(): string {
  const fromEnv = typeof process !== "undefined" ? process.env?.DS_TEMPLATES_DIR : undefined;
  return fromEnv ?? fileURLToPath(new URL("../../templates/", import.meta.url));
}

const PARTIALS = [
  "prelude",
  "constants",
  "quantize",
  "labels",
  "attention",
  "prefill_wgmma",
  "score_body",
  "select_body",
  "resolve_body",
  "sparse_body",
  "merge_body",
  "row_copy",
] as const;
/**
 * Templates outside a variant ({@linkcode renderFamilySource}): benchmark/test utilities and the
 * decoder's own kernels.
 */
export type ExtraTemplate = "util" | "model";
const EXTRA_TEMPLATES: readonly ExtraTemplate[] = ["util", "model"];

type Template = (context: object) => string;

let cached: { dir: string; engine: typeof Handlebars; kernels: Map<string, Template> } | undefined;

function engine(): { engine: typeof Handlebars; kernels: Map<string, Template> } {
  const dir = templatesDir();
  if (cached?.dir === dir) return cached;
  const hb = Handlebars.create();
  const read = (name: string) => readFileSync(`${dir}/${name}`, "utf8");
  const opts = { noEscape: true, strict: true };
  for (const p of PARTIALS) hb.registerPartial(p, hb.compile(read(`${p}.cuh.hbs`), opts));
  const kernels = new Map<string, Template>();
  for (const k of KERNELS) kernels.set(k.id, hb.compile(read(k.template), opts));
  for (const name of EXTRA_TEMPLATES) kernels.set(name, hb.compile(read(`${name}.cu.hbs`), opts));
  cached = { dir, engine: hb, kernels };
  return cached;
}

/** One kernel's CUDA source, rendered for a variant. */
export interface RenderedKernel {
  /** Which kernel of the decode step. */
  readonly id: KernelId;
  /** The `extern "C"` symbol, `<variant>_<id>`. */
  readonly symbol: string;
  /** File name inside the variant's directory, e.g. `score.cu`. */
  readonly file: string;
  /** The CUDA C++ source. */
  readonly source: string;
  /** sha256 of the source, hex. */
  readonly sha256: string;
  /** Threads per block the kernel must be launched with. */
  readonly threads: number;
}

/** sha256 of a UTF-8 text, hex. */
export const sha256 = (text: string): string => createHash("sha256").update(text).digest("hex");

/** The C parameter list of a kernel, one documented parameter per line. */
export function renderParams(
  desc: { readonly args: readonly { cType: string; name: string; doc: string }[] },
): string {
  const width = Math.max(...desc.args.map((a) => a.cType.length + a.name.length)) + 1;
  return desc.args.map((a, i) => {
    const decl = `${a.cType}${a.name}${i < desc.args.length - 1 ? "," : ""}`;
    return `    ${decl.padEnd(width + 4)}// ${a.doc}`;
  }).join("\n") + "\n";
}

const cBool = (b: boolean): CBool => (b ? "true" : "false");

/** A C++ boolean literal. */
export type CBool = "true" | "false";

/** The prelude's dtype fields (also used by the templates that are not per attention variant). */
export interface DtypeContext {
  /** The KV dtype, named in comments and kernel symbols. */
  readonly kvDtype: KvDtype;
  /** Prelude function converting the KV dtype to float. */
  readonly kvToF32: "f16_to_f32" | "bf16_to_f32";
  /** Prelude function converting float to the KV dtype. */
  readonly f32ToKv: "f32_to_f16" | "f32_to_bf16";
}

/** Everything the templates of one variant may reference (strict mode: nothing else). */
export interface TemplateContext extends DtypeContext {
  /** The variant's name (src/dsl/spec.ts variantName). */
  readonly variant: string;
  /** The layout constants, by CUDA name: the constants header renders each of them once. */
  readonly c: DeviceConstants;
  /** PTX type of the tensor-core operands. */
  readonly mmaType: "f16" | "bf16";
  /** Knobs of each kernel's template, from {@linkcode Tuning}. */
  readonly append: { readonly threads: number };
  /** Score kernel knobs. */
  readonly score: {
    readonly threads: number;
    readonly minBlocks: number;
    readonly unroll: number;
    readonly headsPerBlock: number;
  };
  /** Select kernel knobs. */
  readonly select: { readonly threads: number; readonly keysPerThread: number };
  /** Resolve kernel knobs. */
  readonly resolve: {
    readonly threads: number;
    readonly minBlocks: number;
    readonly smemCandidates: number;
    readonly candUnroll: number;
    readonly unroll: number;
  };
  /** Knobs of the attention body shared by the dense and sparse kernels. */
  readonly attention: {
    readonly threads: number;
    readonly minBlocks: number;
    readonly rowTile: number;
    readonly useMma: CBool;
  };
  /** Dense attention kernel knobs. */
  readonly dense: { readonly headsPerBlock: number; readonly unroll: number };
  /** Sparse attention kernel knobs. */
  readonly sparse: { readonly headsPerBlock: number; readonly unroll: number };
  /** Merge kernel knobs. */
  readonly merge: { readonly unroll: number };
  /** Persistent step knobs. */
  readonly persistent: { readonly smemCandidates: number };
  /** sort_selection kernel knobs. */
  readonly sortSelection: { readonly threads: number };
  /** gather_kv kernel knobs. */
  readonly gatherKv: { readonly threads: number; readonly unroll: number };
  /** Prefill attention kernel knobs. */
  readonly prefill: {
    readonly threads: number;
    readonly keyTile: number;
    readonly mTiles: number;
    readonly qInRegisters: CBool;
    /** The variant has the sm_90a (wgmma) body; without it the template renders an #error. */
    readonly wgmma: boolean;
    readonly wgmmaThreads: number;
    readonly wgmmaKeyTile: number;
    /**
     * The template's SCHEDULE (0 sync, 1 mbar, 2 ws, 3 tma), ring depth, grid order, pingpong and
     * lazy rescale.
     */
    readonly wgmmaSchedule: number;
    readonly wgmmaStages: number;
    readonly wgmmaHeadsFastest: CBool;
    readonly wgmmaPingpong: CBool;
    readonly wgmmaLazyRescale: CBool;
    /** Two P buffers (the PV wait one tile later) and split K/V producer threads (tma). */
    readonly wgmmaDoubleP: CBool;
    readonly wgmmaSplitProducer: CBool;
    /** The inline-PTX wgmma wrappers of the body (src/codegen/wgmma.ts); empty without it. */
    readonly wgmmaWrappers: string;
    readonly headDim: number;
  };
}

/** Everything the templates may reference for one variant. */
export function templateContext(spec: AttentionSpec, tuning: Tuning): TemplateContext {
  const mmaType = spec.kvDtype === "fp16" ? "f16" : "bf16";
  return {
    variant: spec.variant,
    c: deviceConstants(spec),
    ...dtypeContext(spec.kvDtype),
    mmaType,
    append: { threads: tuning.appendThreads },
    score: {
      threads: tuning.scoreThreads,
      minBlocks: tuning.scoreMinBlocks,
      unroll: tuning.scoreUnroll,
      headsPerBlock: tuning.scoreHeadsPerBlock,
    },
    select: { threads: tuning.selectThreads, keysPerThread: tuning.selectKeysPerThread },
    resolve: {
      threads: tuning.resolveThreads,
      minBlocks: tuning.resolveMinBlocks,
      smemCandidates: tuning.resolveSmemCandidates,
      candUnroll: tuning.resolveCandUnroll,
      unroll: tuning.resolveUnroll,
    },
    attention: {
      threads: tuning.attentionThreads,
      minBlocks: tuning.attentionMinBlocks,
      rowTile: tuning.attentionRowTile,
      useMma: cBool(tuning.attentionMma),
    },
    dense: { headsPerBlock: tuning.denseHeadsPerBlock, unroll: tuning.denseUnroll },
    sparse: { headsPerBlock: tuning.sparseHeadsPerBlock, unroll: tuning.sparseUnroll },
    prefill: {
      threads: tuning.prefillThreads,
      keyTile: tuning.prefillKeyTile,
      mTiles: tuning.prefillMTiles,
      qInRegisters: cBool(tuning.prefillQInRegisters),
      wgmma: tuning.prefillWgmma,
      wgmmaThreads: tuning.prefillWgmmaThreads,
      wgmmaKeyTile: tuning.prefillWgmmaKeyTile,
      wgmmaSchedule: WGMMA_SCHEDULE_CODE[tuning.prefillWgmmaSchedule],
      wgmmaStages: tuning.prefillWgmmaStages,
      wgmmaHeadsFastest: cBool(tuning.prefillWgmmaHeadsFastest),
      wgmmaPingpong: cBool(tuning.prefillWgmmaPingpong),
      wgmmaLazyRescale: cBool(tuning.prefillWgmmaLazyRescale),
      wgmmaDoubleP: cBool(tuning.prefillWgmmaDoubleP),
      wgmmaSplitProducer: cBool(tuning.prefillWgmmaSplitProducer),
      wgmmaWrappers: tuning.prefillWgmma
        ? wgmmaWrappers(mmaType, tuning.prefillWgmmaKeyTile, spec.headDim)
        : "",
      headDim: spec.headDim,
    },
    merge: { unroll: tuning.mergeUnroll },
    persistent: { smemCandidates: tuning.persistentSmemCandidates },
    sortSelection: { threads: tuning.sortThreads },
    gatherKv: { threads: tuning.gatherThreads, unroll: tuning.gatherUnroll },
  };
}

/** Renders every kernel of the variant. */
export function renderKernels(input: AttentionSpec, tuning?: Tuning): RenderedKernel[] {
  const spec = ensureSpec(input, "renderKernels(spec)");
  tuning ??= tuningFor(spec);
  const { kernels } = engine();
  const base = templateContext(spec, tuning);
  return KERNELS.map((desc) => {
    const symbol = symbolOf(spec, desc.id);
    const body = kernels.get(desc.id)!({ ...base, symbol, params: renderParams(desc) });
    const source =
      `// Generated by double-sparsity from templates/${desc.template}; do not edit.\n` +
      `// Kernel ${symbol}: ${desc.doc}\n` + body;
    return {
      id: desc.id,
      symbol,
      file: `${desc.id}.cu`,
      source,
      sha256: sha256(source),
      threads: threadsOf(desc.id, tuning),
    };
  });
}

/** Context fields the prelude needs, for templates that are not per attention variant. */
export function dtypeContext(kvDtype: KvDtype): DtypeContext {
  return {
    kvDtype,
    kvToF32: kvDtype === "fp16" ? "f16_to_f32" : "bf16_to_f32",
    f32ToKv: kvDtype === "fp16" ? "f32_to_f16" : "f32_to_bf16",
  };
}

/**
 * Renders a kernel family's source (`model`: the decoder's kernels for one model shape; `util`:
 * benchmark utilities) with `context` plus the dtype fields, each kernel's parameter list
 * (`{{params.<id>}}`) rendered from its description in src/codegen/families.ts.
 */
export function renderFamilySource(
  family: ExtraTemplate,
  kvDtype: "fp16" | "bf16",
  context: Record<string, unknown> = {},
): { source: string; sha256: string } {
  const table: Record<string, FamilyKernel> = family === "model" ? MODEL_KERNELS : UTIL_KERNELS;
  const params = Object.fromEntries(Object.entries(table).map(([id, k]) => [id, renderParams(k)]));
  const own = family === "model" ? { ...tokenChoiceContext(), ...gemmContext(kvDtype) } : {};
  const source = `// Generated by double-sparsity from templates/${family}.cu.hbs; do not edit.\n` +
    engine().kernels.get(family)!({ ...dtypeContext(kvDtype), ...own, ...context, params });
  return { source, sha256: sha256(source) };
}

/** The GEMMs' tile constants (src/codegen/families.ts sizes their grids from them). */
function gemmContext(kvDtype: KvDtype): Record<string, unknown> {
  return {
    gemmTile: GEMM_TILE,
    gemmTileK: GEMM_TILE_K,
    gemmThreads: GEMM_THREADS,
    decodeGemmWarps: DECODE_GEMM_WARPS,
    decodeGemmUnroll: DECODE_GEMM_UNROLL,
    decodeGemmMaxRows: DECODE_GEMM_MAX_ROWS,
    predictQuerySplit: PREDICT_QUERY_SPLIT,
    predictQueryRows: PREDICT_QUERY_ROWS,
    mmaType: kvDtype === "fp16" ? "f16" : "bf16",
  };
}

/** The token-choice kernel's constants, exactly as the CPU reference uses them. */
function tokenChoiceContext(): Record<string, unknown> {
  return {
    choiceThreads: TOKEN_CHOICE_THREADS,
    choiceExp2Poly: TOKEN_CHOICE_EXP2_POLY.map(f32HexLiteral).join(", "),
    choiceLog2e: f32HexLiteral(Math.fround(Math.LOG2E)),
  };
}

/** A positive normal float32 as an exact C++17 hex literal (`0x1.xxxxxxp<e>f`). */
export function f32HexLiteral(value: number): string {
  const bits = new Uint32Array(Float32Array.of(value).buffer)[0];
  const exponent = ((bits >>> 23) & 0xff) - 127;
  if (!(value > 0) || exponent < -126 || exponent > 127) {
    throw new RangeError(`f32HexLiteral: got ${value}; allowed: a positive normal float32`);
  }
  const fraction = ((bits & 0x7fffff) << 1).toString(16).padStart(6, "0");
  return `0x1.${fraction}p${exponent}f`;
}
