/**
 * Choosing the next token from logits: greedy (temperature 0), or temperature sampling with
 * nucleus (top-p) filtering, from a seeded generator so that runs can be repeated.
 */

export interface SamplingOptions {
  /** 0 = greedy (the default). */
  readonly temperature?: number;
  /** Keep the smallest set of tokens whose probability reaches top-p (default 1: all). */
  readonly topP?: number;
}

/** A seeded uniform [0, 1) generator (mulberry32). */
export { mulberry32 as seededUniform } from "../util/random.ts";

/** The next token of logits[start, start + length). Ties in greedy mode go to the lower id. */
export function sampleToken(
  logits: ArrayLike<number>,
  opts: SamplingOptions,
  random: () => number,
  start = 0,
  length = logits.length - start,
): number {
  const temperature = opts.temperature ?? 0;
  const topP = opts.topP ?? 1;
  if (!(temperature >= 0)) throw new RangeError(`temperature: got ${temperature}; allowed: >= 0`);
  if (!(topP > 0 && topP <= 1)) throw new RangeError(`top-p: got ${topP}; allowed: (0, 1]`);
  let best = 0;
  for (let i = 1; i < length; i++) if (logits[start + i] > logits[start + best]) best = i;
  if (temperature === 0) return best;
  // Softmax at the temperature, in float64, relative to the maximum.
  const probs = new Float64Array(length);
  let sum = 0;
  for (let i = 0; i < length; i++) {
    probs[i] = Math.exp((logits[start + i] - logits[start + best]) / temperature);
    sum += probs[i];
  }
  const order = Array.from({ length }, (_, i) => i).sort((a, b) => probs[b] - probs[a] || a - b);
  // The nucleus: the most probable tokens until their mass reaches top-p.
  let kept = 0, mass = 0;
  while (kept < length && mass < topP * sum) mass += probs[order[kept++]];
  let r = random() * mass;
  for (let i = 0; i < kept; i++) {
    r -= probs[order[i]];
    if (r < 0) return order[i];
  }
  return order[kept - 1];
}
