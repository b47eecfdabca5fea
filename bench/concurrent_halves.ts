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
import { sparseStepBytes } from "../src/dsl/spec.ts";
import { cacheCopies, randomFullCache } from "../src/runtime/attention_timing.ts";
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

for (const shape of shapes) {
  for (const method of shape.methods) {
    const spec = method.spec!;
    using variant = await Variant.load(cuda, spec, { stream: s0 });
    for (const batch of batches) {
      for (const context of contexts) {
        // three caches at once (the whole batch, two halves): each within 30% of memory
        const copies = cacheCopies(info, spec, batch, context, 0.3);
        const held: DeviceBuffer[] = [];
        const graphs: GraphExec[] = [];
        using fork = cuda.event(false), join = cuda.event(false);
        using caches = new DisposableStack();
        const random = (b: number, seed: number) => {
          const made = randomFullCache(cuda, util, spec, b, context, copies, s0, seed);
          caches.use(made.cache);
          held.push(...made.qs, ...made.outs);
          return made;
        };
        try {
          const whole = random(batch, 0);
          const halves = [random(batch / 2, 1000), random(batch / 2, 2000)];
          const [wholeCache, h0Cache, h1Cache] = [whole.cache, halves[0].cache, halves[1].cache];
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
          const half = 2 * info.multiprocessors; // blocks: half of the default 4 an SM
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
