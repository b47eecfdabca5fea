import assert from "node:assert/strict";
import { offloadLayerTimes, type TimelineMark } from "../src/runtime/step_timeline.ts";

const marks = (list: [string, number, number][]): TimelineMark[] =>
  list.map(([name, layer, ms]) => ({ name, layer, ms }));

Deno.test("offloadLayerTimes: main-stream stages, the stall and the side stream's order", () => {
  const t = offloadLayerTimes(marks([
    ["attn", 0, 0],
    ["topk", 0, 1],
    ["gathered", 0, 3],
    ["end", 0, 4],
    ["fork", 1, 4.5],
    ["side-topk", 1, 5.5],
    ["attn", 1, 6],
    ["topk", 1, 7],
    ["fork", 2, 8],
    ["waited", 1, 9],
    ["side-done", 1, 9],
    ["gathered", 1, 9.5],
    ["end", 1, 10],
    ["side-topk", 2, 10.5],
    ["side-done", 2, 12],
  ]));
  assert.deepEqual(t.length, 2);
  assert.deepEqual(t[0], {
    layer: 0,
    sideTopKMs: null,
    sideGatherMs: null,
    topKMs: 1,
    stallMs: 0,
    gatherMs: 2,
    attendMs: 1,
    betweenMs: 2,
  });
  assert.deepEqual(t[1].stallMs, 2);
  assert.deepEqual(t[1].gatherMs, 0.5);
  assert.deepEqual(t[1].sideTopKMs, 1);
  assert.deepEqual(t[1].sideGatherMs, 3.5);
  assert.deepEqual(t[1].betweenMs, null);
});
