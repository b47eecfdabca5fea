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

/**
 * Wall-clock time of host calls that wait for their own work (a decode step as a caller runs it):
 * the median of `repeats` calls, after `warmup` untimed ones (graph capture). The middle element,
 * the upper of the two for an even count.
 */
export function medianWallMs(run: () => void, repeats: number, warmup = 0): number {
  for (let i = 0; i < warmup; i++) run();
  const walls: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const t0 = performance.now();
    run();
    walls.push(performance.now() - t0);
  }
  walls.sort((a, b) => a - b);
  return walls[Math.floor(walls.length / 2)];
}

/** Device-to-device copy bandwidth in bytes/s, read + write counted (median of 10 copies). */
export function copyBandwidth(cuda: Cuda, stream: Stream): number {
  const bytes = 1 << 30;
  using a = cuda.alloc(bytes);
  using b = cuda.alloc(bytes);
  a.fill8(1, stream);
  const ms = medianEventMs(
    cuda,
    stream,
    () => stream.copyDeviceToDevice(b.ptr, a.ptr, bytes),
    10,
    2,
  );
  return (2 * bytes) / (ms / 1e3);
}
