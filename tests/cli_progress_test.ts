/** The shared progress line: its rendering (pure) and its throttling (with a fake clock). */
import assert from "node:assert/strict";
import { formatDuration, Progress, renderProgress } from "../src/cli/progress.ts";

Deno.test("progress: renders bar, counts, rate and ETA", () => {
  // 1234 of 8192 in 0.242 s: 5,099 tokens/s, 6958 left -> 1.4 s.
  assert.equal(
    renderProgress(1234, 8192, 0.242, "tokens", 8),
    "[#.......] 1,234/8,192 tokens, 5,099 tokens/s, ETA 1.4 s",
  );
  assert.equal(
    renderProgress(4, 8, 2, "windows", 8),
    "[####....] 4/8 windows, 2.0 windows/s, ETA 2.0 s",
  );
  // Done: the bar is full and the time taken replaces the ETA.
  assert.equal(
    renderProgress(8, 8, 130, "documents", 4),
    "[####] 8/8 documents, 0.1 documents/s, took 2 min 10 s",
  );
  // Nothing done yet: rate and ETA are unknown, not infinite.
  assert.equal(renderProgress(0, 10, 0, "tokens", 4), "[....] 0/10 tokens, ? tokens/s, ETA ?");
});

Deno.test("progress: durations in seconds, minutes and hours", () => {
  assert.equal(formatDuration(0.04), "0.0 s");
  assert.equal(formatDuration(59.94), "59.9 s");
  assert.equal(formatDuration(65), "1 min 05 s");
  assert.equal(formatDuration(3 * 3600 + 7 * 60 + 20), "3 h 07 min");
});

Deno.test("progress: at most one line per interval, and always the last", () => {
  let now = 1000;
  const lines: string[] = [];
  const bar = new Progress("dense", "tokens", { write: (l) => lines.push(l), now: () => now });
  for (let done = 1; done <= 10; done++) {
    now += 120; // 10 updates over 1.2 s with a 0.5 s interval
    bar.update(done, 10);
  }
  bar.update(10, 10); // a repeated final report prints nothing more
  // Reports at 0.12 s steps: the first line at 0.6 s (5/10), the next due at 1.1 s is not
  // reached before the end (9/10 at 1.08 s), then the final line at 1.2 s.
  assert.deepEqual(lines, [
    `  [dense] [${"#".repeat(15)}${".".repeat(15)}] 5/10 tokens, 8.3 tokens/s, ETA 0.6 s`,
    `  [dense] [${"#".repeat(30)}] 10/10 tokens, 8.3 tokens/s, took 1.2 s`,
  ]);
});

Deno.test("progress: the clock can start before the first report", () => {
  let now = 5000;
  const lines: string[] = [];
  const bar = new Progress("x", "windows", {
    write: (l) => lines.push(l),
    now: () => now,
    startMs: 3000,
  });
  now = 6000;
  bar.update(1, 1, "positions");
  assert.deepEqual(lines, [
    `  [x] [${"#".repeat(30)}] 1/1 positions, 0.3 positions/s, took 3.0 s`,
  ]);
});
