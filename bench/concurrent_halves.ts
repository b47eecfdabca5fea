/**
 * `deno task bench:halves` (GPU machine; an experiment, issue 15): does a decode-attention step
 * of B sequences finish sooner as two steps of B/2 on two streams of one graph? Each stage of the
 * chain (score, select, resolve, sparse, merge) ends in a tail where part of the card idles, and
 * select + resolve are latency chains that move few bytes; a second, independent chain could fill
 * both. Times, per case and in one process: the one plan of B sequences (as `bench` does), and two
 * plans of B/2 sequences (own caches and workspaces) forked and joined inside one captured graph,
 * once sized for the whole card and once for half of it (PlanOptions.targetBlocks). Same timing as
 * `bench`: CUDA-event medians of graph replays over L2-defeating cache copies, each mode twice,
 * interleaved, the faster kept. Prints one line per case; writes nothing.
 *
 *   deno task bench:halves [--batches 2,8,16] [--contexts 16384,32768] [--shapes LIST]
 *                          [--repeats N]
 */
import { intFlag, intListFlag, openCommand } from "../src/cli/front_door.ts";
import { UsageError } from "../src/util/errors.ts";
import { requireGpu } from "../src/runtime/device.ts";
import type { DeviceBuffer, GraphExec } from "../src/cuda/driver.ts";
import { type AttentionSpec, denseStepBytes, sparseStepBytes } from "../src/dsl/spec.ts";
import { PagedKvCache } from "../src/runtime/caches.ts";
import { DecodePlan } from "../src/runtime/decode_plan.ts";
import { copyBandwidth, medianEventMs } from "../src/runtime/timing.ts";
import { UtilKernels } from "../src/runtime/util_kernels.ts";
import { Variant } from "../src/runtime/variant.ts";
import { attentionShapes } from "./attention_shapes.ts";

const { values: args } = openCommand({
  name: "bench:halves",
  usage: `deno task bench:halves [options]
  --batches LIST        comma list of even batch sizes (default 2,8,16)
  --contexts LIST       comma list of context lengths (default 16384,32768)
  --shapes LIST         comma list of shape names (default all: llama3-8b, llama2-7b)
  --repeats N           graph replays per measurement (default 60)`,
  options: {
    batches: { type: "string" },
    contexts: { type: "string" },
    shapes: { type: "string" },
    repeats: { type: "string" },
  },
});
const batches = args.batches ? intListFlag("batches", args.batches, { min: 2 }) : [2, 8, 16];
const odd = batches.filter((b) => b % 2 !== 0);
if (odd.length > 0) {
  throw new UsageError(`--batches: got ${odd.join(", ")}; allowed: even batch sizes`);
}
const contexts = args.contexts
  ? intListFlag("contexts", args.contexts, { min: 1 })
  : [16384, 32768];
const repeats = intFlag("repeats", args.repeats, { min: 1 }) ?? 60;
const shapes = attentionShapes(args.shapes);
const cuda = requireGpu("deno task bench:halves");
const info = cuda.info;
const s0 = cuda.stream(), s1 = cuda.stream();
using util = new UtilKernels(cuda, "fp16");
const bandwidth = copyBandwidth(cuda, s0);
console.log(
  `${info.name} (${info.arch}): copy bandwidth ${(bandwidth / 1e12).toFixed(2)} TB/s`,
);

/** Cache copies rotated over: three L2 sizes of step bytes, within a third of device memory. */
function copiesFor(spec: AttentionSpec, batch: number, context: number): number {
  const kvBytes = denseStepBytes(spec, context) * batch;
  const stepBytes = Math.min(sparseStepBytes(spec, context) * batch, kvBytes);
  return Math.max(
    1,
    Math.min(
      32,
      Math.ceil((3 * info.l2Bytes) / stepBytes),
      Math.floor((info.totalMemBytes * 0.3) / kvBytes),
    ),
  );
}

/** A cache of `batch` full sequences over `copies` layers, random K/V and labels. */
function randomCache(
  spec: AttentionSpec,
  batch: number,
  context: number,
  copies: number,
  seed: number,
  held: DeviceBuffer[],
): { cache: PagedKvCache; qs: DeviceBuffer[]; outs: DeviceBuffer[] } {
  const cache = new PagedKvCache(cuda, spec, {
    numLayers: copies,
    numSeqs: batch,
    maxContext: context,
  });
  cache.pages.scrambleFreeList(Math.random);
  for (let b = 0; b < batch; b++) cache.pages.grow(b, context);
  cache.syncBlockTables(s0);
  const channels = new Int32Array(spec.numLabelHeads * spec.labelChannels).map((_, i) =>
    (i * 7) % spec.headDim
  );
  const qs: DeviceBuffer[] = [], outs: DeviceBuffer[] = [];
  cache.layers.forEach((layer, i) => {
    const s = seed + 11 * i;
    util.fillNormal(layer.k, s + 1, 1, s0);
    util.fillNormal(layer.v, s + 2, 1, s0);
    util.fillLabels(layer.labels, layer.meta, spec.labelBits, s + 3, s0);
    layer.setChannels(channels, s0);
    const q = cuda.alloc(batch * spec.numQHeads * spec.headDim * 2);
    util.fillNormal(q, s + 4, 1, s0);
    qs.push(q);
    outs.push(cuda.alloc(batch * spec.numQHeads * spec.headDim * 2));
  });
  held.push(...qs, ...outs);
  return { cache, qs, outs };
}

for (const shape of shapes) {
  for (const method of shape.methods) {
    const spec = method.spec!;
    using variant = await Variant.load(cuda, spec, { stream: s0 });
    for (const batch of batches) {
      for (const context of contexts) {
        const copies = copiesFor(spec, batch, context);
        const held: DeviceBuffer[] = [];
        const graphs: GraphExec[] = [];
        using fork = cuda.event(false), join = cuda.event(false);
        try {
          const whole = randomCache(spec, batch, context, copies, 1, held);
          using wholeCache = whole.cache;
          const halves = [0, 1].map((h) =>
            randomCache(spec, batch / 2, context, copies, 1000 * (h + 1), held)
          );
          using h0Cache = halves[0].cache;
          using h1Cache = halves[1].cache;
          variant.bindStream(s0);
          using plan = new DecodePlan(cuda, variant, wholeCache, s0);
          plan.describeCurrent();
          plan.upload(s0);
          const halfPlans = (targetBlocks?: number) =>
            [h0Cache, h1Cache].map((c) => {
              const p = new DecodePlan(cuda, variant, c, s0, { targetBlocks });
              p.describeCurrent();
              p.upload(s0);
              return p;
            });
          using stack = new DisposableStack();
          const [a, b] = halfPlans().map((p) => stack.use(p));
          const half = Math.ceil(cuda.info.multiprocessors * 2);
          const [ah, bh] = halfPlans(half).map((p) => stack.use(p));
          s0.synchronize();

          const capture = (body: (i: number) => void) => {
            const made = Array.from({ length: copies }, (_, i) => s0.capture(() => body(i)));
            graphs.push(...made);
            return made;
          };
          const time = (g: GraphExec[]) =>
            medianEventMs(cuda, s0, (i) => g[i % g.length].launch(s0), repeats, copies);
          const pair = (p: DecodePlan, q: DecodePlan) =>
            capture((i) => {
              fork.record(s0);
              s1.waitEvent(fork);
              variant.bindStream(s0);
              p.attention(i, halves[0].qs[i].ptr, halves[0].outs[i].ptr);
              variant.bindStream(s1);
              q.attention(i, halves[1].qs[i].ptr, halves[1].outs[i].ptr);
              join.record(s1);
              s0.waitEvent(join);
              variant.bindStream(s0);
            });
          const one = capture((i) => plan.attention(i, whole.qs[i].ptr, whole.outs[i].ptr));
          const two = pair(a, b);
          const twoHalf = pair(ah, bh);
          // the halves one after the other on one stream: the same kernels, no overlap
          const serial = capture((i) => {
            a.attention(i, halves[0].qs[i].ptr, halves[0].outs[i].ptr);
            b.attention(i, halves[1].qs[i].ptr, halves[1].outs[i].ptr);
          });
          const t = { one: Infinity, two: Infinity, twoHalf: Infinity, serial: Infinity };
          for (let r = 0; r < 2; r++) {
            t.one = Math.min(t.one, time(one));
            t.two = Math.min(t.two, time(two));
            t.twoHalf = Math.min(t.twoHalf, time(twoHalf));
            t.serial = Math.min(t.serial, time(serial));
          }
          const floorMs = ((sparseStepBytes(spec, context) * batch) / bandwidth) * 1e3;
          const pct = (ms: number) => `${((100 * floorMs) / ms).toFixed(1)}%`;
          console.log(
            `${shape.name} ${method.key} B=${batch} L=${context} (${copies} copies): ` +
              `one plan ${t.one.toFixed(4)} ms (${pct(t.one)}) | two halves ${
                t.two.toFixed(4)
              } ms (${pct(t.two)}, ${(t.one / t.two).toFixed(3)}x) | two halves, half-card sizing ${
                t.twoHalf.toFixed(4)
              } ms (${pct(t.twoHalf)}, ${(t.one / t.twoHalf).toFixed(3)}x) | halves in series ${
                t.serial.toFixed(4)
              } ms`,
          );
        } finally {
          for (const g of graphs) g.dispose();
          for (const buf of held) buf.dispose();
          variant.bindStream(s0);
        }
      }
    }
  }
}
