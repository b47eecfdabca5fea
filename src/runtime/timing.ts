/**
 * Device time of a piece of stream work: the median of `repeats` runs, each between two CUDA
 * events, after `warmup` untimed runs. `run(i)` receives the run's index (for rotating inputs).
 */
import type { Cuda, Stream } from "../cuda/driver.ts";

export function medianEventMs(
  cuda: Cuda,
  stream: Stream,
  run: (i: number) => void,
  repeats: number,
  warmup = 1,
): number {
  for (let i = 0; i < warmup; i++) run(i);
  stream.synchronize();
  using start = cuda.event(), end = cuda.event();
  const times: number[] = [];
  for (let i = 0; i < repeats; i++) {
    start.record(stream);
    run(warmup + i);
    end.record(stream);
    end.synchronize();
    times.push(end.since(start));
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}
