/**
 * Fuzzing in CPU CI: 10,000 malformed inputs each (seeded, reproducible) for safetensors headers
 * and data sections, config.json, channel configs and attention spec objects. Every input must
 * parse or be rejected with one of the project's typed errors (DsError); no other exception, and
 * no hang: each target runs in a Worker that is cut off after HANG_LIMIT_MS.
 *
 * Seeds: DS_FUZZ_SEED (default fixed, so CI is reproducible); counts: DS_FUZZ_COUNT (default
 * 10000). A finding names the target, seed and case index; rerun with the same seed to see it.
 */
import assert from "node:assert/strict";
import type { FuzzReport, FuzzTarget } from "./fuzz_worker.ts";

const SEED = Number(Deno.env.get("DS_FUZZ_SEED") ?? 20261126);
const COUNT = Number(Deno.env.get("DS_FUZZ_COUNT") ?? 10_000);
const HANG_LIMIT_MS = 120_000;
const TARGETS: readonly FuzzTarget[] = ["safetensors", "config", "channels", "spec"];

/** One worker for every target (type-checking a worker costs seconds on this machine). */
let worker: Worker | undefined;
let pending = 0;

function fuzzInWorker(target: FuzzTarget, seed: number, count: number): Promise<FuzzReport> {
  worker ??= new Worker(new URL("./fuzz_worker.ts", import.meta.url).href, { type: "module" });
  const w = worker;
  pending++;
  const done = () => {
    if (--pending === 0 && target === TARGETS[TARGETS.length - 1]) {
      w.terminate();
      worker = undefined;
    }
  };
  return new Promise<FuzzReport>((resolve, reject) => {
    const timer = setTimeout(() => {
      w.terminate();
      worker = undefined;
      reject(new Error(`fuzz ${target} (seed ${seed}): no answer in ${HANG_LIMIT_MS} ms: a hang`));
    }, HANG_LIMIT_MS);
    w.onmessage = (e) => {
      clearTimeout(timer);
      done();
      resolve(e.data as FuzzReport);
    };
    w.onerror = (e) => {
      clearTimeout(timer);
      e.preventDefault();
      w.terminate();
      worker = undefined;
      reject(new Error(`fuzz ${target} (seed ${seed}): worker failed: ${e.message}`));
    };
    w.postMessage({ target, seed, count });
  });
}

for (const target of TARGETS) {
  Deno.test(`fuzz: ${COUNT} malformed ${target} inputs give only typed errors`, async () => {
    const r = await fuzzInWorker(target, SEED, COUNT);
    console.log(
      `fuzz ${target}: seed ${r.seed}, ${r.count} cases: ${r.accepted} accepted, ${r.rejected} ` +
        `rejected with a typed error, ${r.untyped} untyped; slowest case ${
          r.slowestMs.toFixed(1)
        } ms, total ${r.ms.toFixed(0)} ms`,
    );
    assert.equal(r.count, COUNT);
    assert.equal(r.accepted + r.rejected + r.untyped, COUNT);
    assert.deepEqual(r.findings, [], `seed ${SEED}: ${r.untyped} untyped exception(s)`);
    assert.equal(r.untyped, 0);
    // The generator must actually produce malformed input (and some valid input survives).
    assert.ok(r.rejected > COUNT / 4, `only ${r.rejected} rejected: the mutations are too weak`);
    assert.ok(r.slowestMs < 1000, `a case took ${r.slowestMs.toFixed(0)} ms`);
  });
}
