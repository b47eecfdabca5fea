/**
 * The bundled tiny-code-llama-8k as the benchmarks use it: the model, the held-out Python text,
 * its bundled qk channel file and the Double Sparsity variant of the end-to-end rows (head
 * selection, 16 label channels at 16 bits, budget 1/16, layers 0 and 1 dense).
 */
import { join } from "node:path";
import type { AttentionSpec } from "../src/dsl/spec.ts";
import { type LoadedModel, loadModel } from "../src/checkpoint/weights.ts";
import type { ChannelConfig } from "../src/quality/channel_config.ts";
import { specForModelFile } from "../src/quality/model_spec.ts";

export interface TinyBench {
  readonly model: LoadedModel;
  /** examples/data/python-heldout.txt, bytes = token ids. */
  readonly text: Uint8Array;
  /** examples/data/tiny-code-llama-8k-qk-channels.json. */
  readonly channels: ChannelConfig;
  readonly spec: AttentionSpec;
}

export async function loadTinyBench(root: string): Promise<TinyBench> {
  const model = await loadModel(join(root, "examples/models/tiny-code-llama-8k"));
  const text = Deno.readFileSync(join(root, "examples/data/python-heldout.txt"));
  const { spec, channels } = await specForModelFile(
    model.config,
    join(root, "examples", "data", "tiny-code-llama-8k-qk-channels.json"),
    {
      labels: { channels: 16, bits: 16 },
      selection: "head",
      budget: { ratio: 1 / 16, min: 16 },
      denseLayers: [0, 1],
    },
  );
  return { model, text, channels, spec };
}
