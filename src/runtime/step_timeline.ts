/**
 * A diagnostic timeline of one recorded step: named marks (timing events) on any stream, read
 * back as milliseconds from the first mark once the step has finished. It shows where work on
 * two streams overlapped and where one waited for the other, which a step's total time cannot
 * (the offload prediction's side stream against the layer's own work, bench/offload_timeline.ts).
 *
 * Marks are recorded either while a step is recorded eagerly, or (`inCapture`) while its graph is
 * captured, as event record nodes that every replay records again; then read after a replay. An
 * eager step pays the host's launch cost between marks, which distorts the split wherever the
 * host is slower than the GPU (6 ms a step at B=1 64K with prediction: docs/perf-notes.md, "What
 * a host-memory gather costs the kernels beside it"). Events are made on first use of a
 * (name, layer) pair and reused by later steps; `clear()` forgets the readings.
 */
import type { Event, Stream } from "../cuda/driver.ts";

/** What the timeline needs of the driver: timing events (a fake in the CPU tests). */
export interface TimelineEvents {
  event(timing: boolean): Event;
}

/** One mark of the last recorded step. */
export interface TimelineMark {
  readonly name: string;
  readonly layer: number;
  /** Milliseconds after the step's first mark. */
  readonly ms: number;
}

export class StepTimeline implements Disposable {
  readonly #events = new Map<string, Event>();
  /** The marks of the step being recorded, in recording order. */
  #order: { name: string; layer: number; event: Event }[] = [];

  /**
   * `inCapture`: the marks are recorded while a step graph is captured, as event record nodes
   * (Event.recordInCapture), and read after a replay of it.
   */
  constructor(readonly cuda: TimelineEvents, readonly inCapture = false) {}

  /** Records mark `name` of `layer` on `stream` (after the work recorded on it so far). */
  mark(name: string, layer: number, stream: Stream): void {
    const key = `${name}@${layer}`;
    let event = this.#events.get(key);
    if (!event) {
      event = this.cuda.event(true);
      this.#events.set(key, event);
    }
    if (this.inCapture) event.recordInCapture(stream);
    else event.record(stream);
    this.#order.push({ name, layer, event });
  }

  /** Starts a new step: the marks recorded so far are dropped. */
  clear(): void {
    this.#order = [];
  }

  /** The marks of the recorded step, ms after its first, sorted by time (waits for them). */
  read(): TimelineMark[] {
    if (this.#order.length === 0) return [];
    for (const m of this.#order) m.event.synchronize();
    const first = this.#order[0].event;
    return this.#order
      .map((m) => ({ name: m.name, layer: m.layer, ms: m.event.since(first) }))
      .sort((a, b) => a.ms - b.ms);
  }

  [Symbol.dispose](): void {
    for (const e of this.#events.values()) e.dispose();
    this.#events.clear();
  }
}

/** Per-layer durations derived from the offload plan's marks (see OffloadPlan.timeline). */
export interface OffloadLayerTimes {
  readonly layer: number;
  /** Side stream: the prediction's top-k (from the fork, or the previous side work's end). */
  readonly sideTopKMs: number | null;
  /** Side stream: the prediction's gather of the predicted rows. */
  readonly sideGatherMs: number | null;
  /** Main stream: this layer's exact top-k. */
  readonly topKMs: number;
  /** Main stream: waiting for the prediction after its own top-k (0 when it was already done). */
  readonly stallMs: number;
  /** Main stream: the gather of this layer's rows (the missed ones with prediction). */
  readonly gatherMs: number;
  /** Main stream: sparse attention and merge. */
  readonly attendMs: number;
  /** Main stream: from the end of this layer's attention to the next layer's attention start. */
  readonly betweenMs: number | null;
}

/**
 * Per-layer durations from a step's marks: `attn`, `topk`, `waited`, `gathered`, `end` on the
 * main stream per layer, and `fork`, `side-topk` (the select stream), `side-done` (the side
 * stream) for predicted layers; `ownSelectStream` when the select stream is not the side stream
 * (skipMissed) (missing marks give null, or 0 for the stall of a layer that waits for nothing).
 */
export function offloadLayerTimes(
  marks: readonly TimelineMark[],
  ownSelectStream = false,
): OffloadLayerTimes[] {
  const at = new Map(marks.map((m) => [`${m.name}@${m.layer}`, m.ms]));
  const get = (name: string, layer: number) => at.get(`${name}@${layer}`) ?? null;
  const layers = [...new Set(marks.filter((m) => m.name === "attn").map((m) => m.layer))].sort(
    (a, b) => a - b,
  );
  return layers.map((layer, i) => {
    const attn = get("attn", layer)!, topk = get("topk", layer) ?? attn;
    const waited = get("waited", layer) ?? topk;
    const gathered = get("gathered", layer) ?? waited, end = get("end", layer) ?? gathered;
    const fork = get("fork", layer), sideTopK = get("side-topk", layer);
    const sideDone = get("side-done", layer);
    // One side stream runs each layer's top-k and gather in order: this layer's top-k starts after
    // its fork and the previous predicted layer's gather. A select stream of its own (skipMissed)
    // orders the top-ks only.
    const prevSide = i > 0 ? get(ownSelectStream ? "side-topk" : "side-done", layers[i - 1]) : null;
    const sideStart = fork === null ? null : Math.max(fork, prevSide ?? fork);
    const nextAttn = i + 1 < layers.length ? get("attn", layers[i + 1]) : null;
    return {
      layer,
      sideTopKMs: sideStart !== null && sideTopK !== null ? sideTopK - sideStart : null,
      sideGatherMs: sideTopK !== null && sideDone !== null ? sideDone - sideTopK : null,
      topKMs: topk - attn,
      stallMs: Math.max(0, waited - topk),
      gatherMs: gathered - waited,
      attendMs: end - gathered,
      betweenMs: nextAttn !== null ? nextAttn - end : null,
    };
  });
}
