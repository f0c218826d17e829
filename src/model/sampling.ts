/**
 * Choosing the next token from a row of logits, in TypeScript on Float32Array: repetition penalty
 * (CTRL / Hugging Face: positive logits divided by it, negative ones multiplied), temperature (0 means
 * greedy), top-k, then top-p (the smallest set of most likely tokens whose probability reaches p),
 * then a draw from the seeded generator. The same logits, options and generator state always give
 * the same token.
 */
import type { Rng } from '../util/rng.js';

export interface SamplingOptions {
  /** 0 = greedy (argmax). Default 1. */
  temperature?: number;
  /** Keep only the k most likely tokens; 0 or absent = all. */
  topK?: number;
  /** Nucleus: keep the most likely tokens up to cumulative probability p; 1 or absent = all. */
  topP?: number;
  /** > 1 discourages tokens already in the context; 1 or absent = off. */
  repetitionPenalty?: number;
}

export class SamplingError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = 'SamplingError';
  }
}

export function checkSampling(o: SamplingOptions): void {
  const bad = (field: string, value: unknown): never => {
    throw new SamplingError('bad_sampling', `sampling option ${field} = ${String(value)} is out of range`, { field, value });
  };
  if (o.temperature !== undefined && !(o.temperature >= 0 && Number.isFinite(o.temperature))) bad('temperature', o.temperature);
  if (o.topK !== undefined && !(Number.isInteger(o.topK) && o.topK >= 0)) bad('topK', o.topK);
  if (o.topP !== undefined && !(o.topP > 0 && o.topP <= 1)) bad('topP', o.topP);
  if (o.repetitionPenalty !== undefined && !(o.repetitionPenalty > 0 && Number.isFinite(o.repetitionPenalty))) bad('repetitionPenalty', o.repetitionPenalty);
}

/** Logits after the repetition penalty on every token in `seen` (a copy; the input is not touched). */
export function applyRepetitionPenalty(logits: Float32Array, seen: Iterable<number>, penalty: number): Float32Array {
  const out = Float32Array.from(logits);
  if (penalty === 1) return out;
  for (const t of seen) {
    const v = out[t];
    out[t] = v > 0 ? v / penalty : v * penalty;
  }
  return out;
}

/** Index of the largest value (the first one on ties). */
export function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

/**
 * The candidate tokens and their probabilities after temperature, top-k and top-p, most likely
 * first (probabilities sum to 1). Exposed for tests and for callers that want logprobs.
 */
export function candidateDistribution(logits: Float32Array, opts: SamplingOptions): { ids: number[]; probs: number[] } {
  const temperature = opts.temperature ?? 1;
  if (temperature <= 0) return { ids: [argmax(logits)], probs: [1] };
  const v = logits.length;
  let ids: number[];
  const k = opts.topK && opts.topK < v ? opts.topK : v;
  if (k < v) {
    // Partial selection: a small sorted buffer beats sorting the whole vocabulary.
    ids = [];
    for (let i = 0; i < v; i++) {
      if (ids.length === k && logits[i] <= logits[ids[k - 1]]) continue;
      let at = ids.length === k ? k - 1 : ids.length;
      if (ids.length < k) ids.push(i);
      while (at > 0 && logits[ids[at - 1]] < logits[i]) {
        ids[at] = ids[at - 1];
        at--;
      }
      ids[at] = i;
    }
  } else {
    ids = Array.from({ length: v }, (_, i) => i).sort((a, b) => logits[b] - logits[a] || a - b);
  }
  const max = logits[ids[0]];
  let probs = ids.map((i) => Math.exp((logits[i] - max) / temperature));
  let total = probs.reduce((a, b) => a + b, 0);
  probs = probs.map((p) => p / total);
  const topP = opts.topP ?? 1;
  if (topP < 1) {
    let cum = 0;
    let keep = 0;
    while (keep < probs.length && cum < topP) cum += probs[keep++];
    ids = ids.slice(0, Math.max(1, keep));
    probs = probs.slice(0, ids.length);
    total = probs.reduce((a, b) => a + b, 0);
    probs = probs.map((p) => p / total);
  }
  return { ids, probs };
}

/** Pick the next token. `rng` is only drawn from when sampling (temperature > 0). */
export function sampleToken(logits: Float32Array, opts: SamplingOptions, rng: Rng, seen?: Iterable<number>): number {
  const penalty = opts.repetitionPenalty ?? 1;
  const l = penalty !== 1 && seen ? applyRepetitionPenalty(logits, seen, penalty) : logits;
  if ((opts.temperature ?? 1) <= 0) return argmax(l);
  const { ids, probs } = candidateDistribution(l, opts);
  const u = rng.uniform();
  let cum = 0;
  for (let i = 0; i < ids.length; i++) {
    cum += probs[i];
    if (u < cum) return ids[i];
  }
  return ids[ids.length - 1];
}
