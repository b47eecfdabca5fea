import assert from "node:assert/strict";
import {
  offloadLayerTimes,
  StepTimeline,
  type TimelineMark,
} from "../src/runtime/step_timeline.ts";
import type { Event, Stream } from "../src/cuda/driver.ts";

const marks = (list: [string, number, number][]): TimelineMark[] =>
  list.map(([name, layer, ms]) => ({ name, layer, ms }));

Deno.test("offloadLayerTimes: main-stream stages, the stall and the side streams' order", () => {
  const list = marks([
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
    ["attn", 2, 11],
    ["side-done", 2, 12],
  ]);
  const t = offloadLayerTimes(list);
  assert.deepEqual(t.length, 3);
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
  assert.deepEqual(t[1].betweenMs, 1);
  // One side stream: layer 2's top-k waits for layer 1's gather (side-done 9), after its fork (8).
  assert.deepEqual(t[2].sideTopKMs, 1.5);
  assert.deepEqual(t[2].sideGatherMs, 1.5);
  assert.deepEqual(t[2].betweenMs, null);
  // A select stream of its own: the top-k starts at its fork, only the previous top-k (5.5)
  // orders it.
  assert.deepEqual(offloadLayerTimes(list, true)[2].sideTopKMs, 2.5);
});

Deno.test("StepTimeline: marks go into a captured graph as event record nodes only with inCapture", () => {
  for (const inCapture of [false, true]) {
    const calls: string[] = [];
    let made = 0;
    const fakeEvents = {
      event(timing: boolean) {
        assert.equal(timing, true, "timeline events must time");
        made++;
        return {
          record: () => calls.push("record"),
          recordInCapture: () => calls.push("recordInCapture"),
          dispose: () => {},
        } as unknown as Event;
      },
    };
    const timeline = new StepTimeline(fakeEvents, inCapture);
    const stream = {} as Stream;
    timeline.mark("attn", 0, stream);
    timeline.mark("end", 0, stream);
    timeline.mark("attn", 0, stream); // the same (name, layer) reuses its event
    assert.equal(made, 2);
    assert.deepEqual(calls, Array(3).fill(inCapture ? "recordInCapture" : "record"));
  }
});
