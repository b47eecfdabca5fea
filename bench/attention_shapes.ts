/**
 * The decode-attention shapes `bench` and `bench:pdl` time, and each one's Double Sparsity
 * variants: Llama-3-8B (32 query heads, 8 kv heads) with group and per-head selection at 16
 * 8-bit label channels, and Llama-2-7B (32/32) with 8 fp16 channels and with 32 4-bit channels;
 * d 128, fp16 K/V, 16-token pages, budget context/16.
 */
import { type AttentionSpec, defineAttention } from "../src/dsl/spec.ts";
import { UsageError } from "../src/util/errors.ts";

export interface Method {
  readonly key: string;
  readonly label: string;
  readonly spec?: AttentionSpec;
}

export interface AttentionShape {
  readonly name: string;
  /** kv heads (query heads are 32 in every shape). */
  readonly kv: number;
  readonly methods: readonly Method[];
}

const budget = { ratio: 1 / 16, min: 16 };
const base = { headDim: 128, numQHeads: 32, kvDtype: "fp16", pageSize: 16 } as const;
const SHAPES: readonly AttentionShape[] = [
  {
    name: "llama3-8b",
    kv: 8,
    methods: [
      {
        key: "ds-group",
        label: "DS group r16b8",
        spec: defineAttention({
          ...base,
          numKvHeads: 8,
          labels: { channels: 16, bits: 8 },
          selection: "group",
          budget,
        }),
      },
      {
        key: "ds-head",
        label: "DS head (kv labels) r16b8",
        spec: defineAttention({
          ...base,
          numKvHeads: 8,
          labels: { channels: 16, bits: 8, heads: "kv" },
          selection: "head",
          budget,
        }),
      },
    ],
  },
  {
    name: "llama2-7b",
    kv: 32,
    methods: [
      {
        key: "ds-r8b16",
        label: "DS r8b16 (8 fp16 channels)",
        spec: defineAttention({
          ...base,
          numKvHeads: 32,
          labels: { channels: 8, bits: 16 },
          selection: "head",
          budget,
        }),
      },
      {
        key: "ds-r32b4",
        label: "DS r32b4",
        spec: defineAttention({
          ...base,
          numKvHeads: 32,
          labels: { channels: 32, bits: 4 },
          selection: "head",
          budget,
        }),
      },
    ],
  },
];

/**
 * The shapes named in `list` (comma-separated; every shape when undefined); an unknown name is a
 * UsageError naming it and the known ones.
 */
export function attentionShapes(list: string | undefined): readonly AttentionShape[] {
  if (list === undefined) return SHAPES;
  const names = list.split(",").map((s) => s.trim());
  const unknown = names.filter((n) => !SHAPES.some((s) => s.name === n));
  if (unknown.length > 0) {
    throw new UsageError(
      `--shapes: got ${unknown.join(", ")}; allowed: ${SHAPES.map((s) => s.name).join(", ")}`,
    );
  }
  return SHAPES.filter((s) => names.includes(s.name));
}
