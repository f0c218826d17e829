/**
 * Choosing the next token from a row of logits, in TypeScript on Float32Array. The logits are shaped
 * first (`shapeLogits`, in vLLM's order): the logit bias added, the repetition penalty (CTRL / Hugging
 * Face: positive logits divided by it, negative ones multiplied, on every token of the prompt and the
 * reply), then the frequency and presence penalties (OpenAI: minus count × frequency and, once a token
 * has appeared, minus presence, counting the reply's tokens only), and suppressed tokens set to
 * -Infinity (end tokens before a request's minTokens), as are the tokens a guide's mask leaves out
 * (guided decoding: guide.ts). Then temperature (0 means greedy),
 * top-k, top-p (the smallest set of most likely tokens whose probability reaches p), min-p (the tokens
 * at least p times as likely as the most likely one; after top-k and top-p, as vLLM applies it), and a
 * draw from the seeded generator. The same logits, options, history and generator state always give the same
 * token.
 */
import type { Rng } from '../util/rng.js';

export interface SamplingOptions {
  /** 0 = greedy (argmax). Default 1. */
  temperature?: number;
  /** Keep only the k most likely tokens; 0 or absent = all. */
  topK?: number;
  /** Nucleus: keep the most likely tokens up to cumulative probability p; 1 or absent = all. */
  topP?: number;
  /** Keep the tokens at least p times as likely as the most likely one (after temperature); 0 or absent = all. */
  minP?: number;
  /** > 1 discourages tokens already in the context; 1 or absent = off. */
  repetitionPenalty?: number;
  /** Subtracted from a token's logit once per time it was generated (OpenAI's frequency_penalty); 0 or absent = off. */
  frequencyPenalty?: number;
  /** Subtracted from a token's logit once it has been generated at all (OpenAI's presence_penalty); 0 or absent = off. */
  presencePenalty?: number;
  /** Added to the logits of these token ids before anything else (OpenAI's logit_bias). */
  logitBias?: ReadonlyMap<number, number>;
  /**
   * Token sequences never written (vLLM's bad_words): a sequence's last token may not be drawn where
   * the reply so far ends with the tokens before it (a one-token sequence: never). Applied by the
   * Sequence, which knows the reply (bannedAfter).
   */
  badWords?: ReadonlyArray<readonly number[]>;
}

/** The tokens `badWords` forbid after the reply `reply` (vLLM's bad_words), or undefined for none. */
export function bannedAfter(badWords: ReadonlyArray<readonly number[]>, reply: readonly number[]): Set<number> | undefined {
  let banned: Set<number> | undefined;
  for (const word of badWords) {
    const before = word.length - 1;
    if (before > reply.length) continue;
    let follows = true;
    for (let k = 0; k < before && follows; k++) follows = reply[reply.length - before + k] === word[k];
    if (follows) (banned ??= new Set()).add(word[before]);
  }
  return banned;
}

/** What a sequence has seen so far, for the penalties. */
export interface SamplingHistory {
  /** The distinct tokens of the prompt and the reply so far (repetition penalty). */
  seen?: ReadonlySet<number>;
  /** How often each token was generated so far, the prompt not counted (frequency and presence penalties). */
  counts?: ReadonlyMap<number, number>;
  /** Tokens that may not be drawn at this step (end tokens before a request's minTokens): -Infinity. */
  suppress?: ReadonlySet<number>;
  /** Guided decoding: 1 for the tokens that may be drawn at this step, every other -Infinity (at least one must be 1). */
  allow?: Uint8Array;
}

/** Whether the options' frequency or presence penalty needs the reply's token counts. */
export function countsTokens(o: SamplingOptions): boolean {
  return (o.frequencyPenalty ?? 0) !== 0 || (o.presencePenalty ?? 0) !== 0;
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
  if (o.minP !== undefined && !(o.minP >= 0 && o.minP <= 1)) bad('minP', o.minP);
  if (o.repetitionPenalty !== undefined && !(o.repetitionPenalty > 0 && Number.isFinite(o.repetitionPenalty))) bad('repetitionPenalty', o.repetitionPenalty);
  if (o.frequencyPenalty !== undefined && !Number.isFinite(o.frequencyPenalty)) bad('frequencyPenalty', o.frequencyPenalty);
  if (o.presencePenalty !== undefined && !Number.isFinite(o.presencePenalty)) bad('presencePenalty', o.presencePenalty);
  for (const word of o.badWords ?? []) {
    if (word.length === 0 || !word.every((id) => Number.isInteger(id) && id >= 0)) bad('badWords', JSON.stringify(word));
  }
  for (const [id, bias] of o.logitBias ?? []) {
    if (!(Number.isInteger(id) && id >= 0)) bad('logitBias', id);
    if (!Number.isFinite(bias)) bad(`logitBias[${id}]`, bias);
  }
}

/**
 * The logits after the logit bias, the repetition penalty on `history.seen`, the frequency and
 * presence penalties on `history.counts`, and `history.suppress` and the tokens outside `history.allow`
 * set to -Infinity: the input itself when none applies, else a copy.
 */
export function shapeLogits(logits: Float32Array, opts: SamplingOptions, history: SamplingHistory = {}): Float32Array {
  const penalty = opts.repetitionPenalty ?? 1;
  const freq = opts.frequencyPenalty ?? 0;
  const presence = opts.presencePenalty ?? 0;
  const bias = opts.logitBias && opts.logitBias.size > 0 ? opts.logitBias : undefined;
  const repeat = penalty !== 1 && history.seen !== undefined;
  const counted = (freq !== 0 || presence !== 0) && history.counts !== undefined && history.counts.size > 0;
  const suppress = history.suppress !== undefined && history.suppress.size > 0 ? history.suppress : undefined;
  const allow = history.allow;
  if (!bias && !repeat && !counted && !suppress && !allow) return logits;
  const out = Float32Array.from(logits);
  if (bias) for (const [id, b] of bias) if (id < out.length) out[id] += b;
  if (repeat) {
    for (const t of history.seen!) {
      const v = out[t];
      out[t] = v > 0 ? v / penalty : v * penalty;
    }
  }
  if (counted) for (const [t, n] of history.counts!) if (n > 0) out[t] -= n * freq + presence;
  if (suppress) for (const t of suppress) out[t] = -Infinity;
  if (allow) for (let t = 0; t < out.length; t++) if (!allow[t]) out[t] = -Infinity;
  return out;
}

/** Index of the largest value (the first one on ties). */
export function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

/** Indices of the k largest values, largest first (lower index first on ties): a partial selection. */
function topKIndices(x: Float32Array, k: number): number[] {
  const ids: number[] = [];
  for (let i = 0; i < x.length; i++) {
    if (ids.length === k && x[i] <= x[ids[k - 1]]) continue;
    let at = ids.length === k ? k - 1 : ids.length;
    if (ids.length < k) ids.push(i);
    while (at > 0 && x[ids[at - 1]] < x[i]) {
      ids[at] = ids[at - 1];
      at--;
    }
    ids[at] = i;
  }
  return ids;
}

/**
 * The tokens that may be drawn and their unnormalised weights exp((l - max) / T), in index order.
 * Top-p never sorts token ids: only the weights that could reach the nucleus are sorted (natively,
 * as a Float64Array) to find the nucleus' smallest weight w*; the nucleus is then every token
 * heavier than w* plus, in index order, as many tokens of weight exactly w* as the sorted walk took.
 * Tokens lighter than (1 - p) / (2n) of the total cannot reach it: all of them together weigh less
 * than 1 - p.
 */
function candidates(logits: Float32Array, opts: SamplingOptions): { ids: ArrayLike<number>; weights: ArrayLike<number>; total: number } {
  const kept = nucleus(logits, opts);
  return (opts.minP ?? 0) > 0 ? withMinP(kept, opts.minP!) : kept;
}

/**
 * Min-p over the candidates: those whose weight is at least p times the largest. The most likely
 * token weighs exp(0) = 1 and top-k and top-p always keep it, so the bound is p itself.
 */
function withMinP(c: { ids: ArrayLike<number>; weights: ArrayLike<number> }, p: number): { ids: number[]; weights: number[]; total: number } {
  const ids: number[] = [];
  const weights: number[] = [];
  let total = 0;
  for (let i = 0; i < c.ids.length; i++) {
    if (c.weights[i] < p) continue;
    ids.push(c.ids[i]);
    weights.push(c.weights[i]);
    total += c.weights[i];
  }
  return { ids, weights, total };
}

/** The candidates after temperature, top-k and top-p. */
function nucleus(logits: Float32Array, opts: SamplingOptions): { ids: ArrayLike<number>; weights: ArrayLike<number>; total: number } {
  const t = opts.temperature ?? 1;
  const v = logits.length;
  const k = opts.topK && opts.topK < v ? opts.topK : v;
  const ids: ArrayLike<number> = k < v ? topKIndices(logits, k) : identity(v);
  const n = ids.length;
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, logits[ids[i]]);
  const weights = new Float64Array(n);
  let total = 0;
  for (let i = 0; i < n; i++) {
    weights[i] = Math.exp((logits[ids[i]] - max) / t);
    total += weights[i];
  }
  const topP = opts.topP ?? 1;
  if (topP >= 1) return { ids, weights, total };
  const floor = ((1 - topP) / (2 * n)) * total;
  let heavy = 0;
  for (let i = 0; i < n; i++) if (weights[i] > floor) heavy++;
  const sorted = new Float64Array(heavy);
  for (let i = 0, j = 0; i < n; i++) if (weights[i] > floor) sorted[j++] = weights[i];
  sorted.sort().reverse();
  let cum = 0;
  let m = 0;
  while (m < heavy && cum < topP * total) cum += sorted[m++];
  const wStar = sorted[m - 1];
  let ties = 0; // how many tokens of weight exactly w* the walk took
  for (let j = m - 1; j >= 0 && sorted[j] === wStar; j--) ties++;
  const keepIds: number[] = [];
  const keepW: number[] = [];
  for (let i = 0; i < n; i++) {
    const w = weights[i];
    if (w > wStar || (w === wStar && ties-- > 0)) {
      keepIds.push(ids[i]);
      keepW.push(w);
    }
  }
  return { ids: keepIds, weights: keepW, total: cum };
}

let identityCache: Uint32Array = new Uint32Array(0);
function identity(n: number): Uint32Array {
  if (identityCache.length < n) identityCache = Uint32Array.from({ length: n }, (_, i) => i);
  return identityCache.subarray(0, n);
}

/**
 * The candidate tokens and their probabilities after temperature, top-k, top-p and min-p, most likely
 * first (probabilities sum to 1). For tests and for callers that want to show the distribution.
 */
export function candidateDistribution(logits: Float32Array, opts: SamplingOptions): { ids: number[]; probs: number[] } {
  if ((opts.temperature ?? 1) <= 0) return { ids: [argmax(logits)], probs: [1] };
  const c = candidates(logits, opts);
  const order = Array.from({ length: c.ids.length }, (_, i) => i).sort((a, b) => c.weights[b] - c.weights[a] || c.ids[a] - c.ids[b]);
  return { ids: order.map((i) => c.ids[i]), probs: order.map((i) => c.weights[i] / c.total) };
}

/** Pick the next token. `rng` is only drawn from when sampling (temperature > 0). */
export function sampleToken(logits: Float32Array, opts: SamplingOptions, rng: Rng, history?: SamplingHistory): number {
  const l = shapeLogits(logits, opts, history);
  if ((opts.temperature ?? 1) <= 0) return argmax(l);
  const { ids, weights, total } = candidates(l, opts);
  const u = rng.uniform() * total;
  let cum = 0;
  for (let i = 0; i < ids.length; i++) {
    cum += weights[i];
    if (u < cum) return ids[i];
  }
  return ids[ids.length - 1];
}

/** A token's log-probability and rank, and the most likely tokens' (most likely first; lower id first on ties). */
export interface TokenLogprobs {
  tokenId: number;
  logprob: number;
  /** The token's place among all tokens, most likely first (1: the most likely), ties ordered as `top` orders them. */
  rank: number;
  top: Array<{ tokenId: number; logprob: number }>;
}

/** The floor of a reported log-probability (OpenAI's stand-in for minus infinity), so JSON never meets -Infinity. */
export const MIN_LOGPROB = -9999;

/**
 * The model's log-probability of `token` and of the `top` most likely tokens: the log-softmax of the
 * logits as given, before any logit bias, penalty, temperature, top-k or top-p (as OpenAI and vLLM
 * report them), so the figures describe the model, whatever the sampling settings. Summed in float64.
 */
export function tokenLogprobs(logits: Float32Array, token: number, top: number): TokenLogprobs {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
  const lse = max + Math.log(sum);
  const lp = (id: number): number => Math.max(MIN_LOGPROB, logits[id] - lse);
  const ids = top > 0 ? topKIndices(logits, Math.min(top, logits.length)) : [];
  return { tokenId: token, logprob: lp(token), rank: rankOf(logits, token), top: ids.map((id) => ({ tokenId: id, logprob: lp(id) })) };
}

/** 1 + the tokens ahead of `token`: more likely, or as likely with a lower id (vLLM's rank; `top`'s order). */
function rankOf(logits: Float32Array, token: number): number {
  const x = logits[token];
  let ahead = 0;
  for (let i = 0; i < logits.length; i++) if (logits[i] > x || (logits[i] === x && i < token)) ahead++;
  return ahead + 1;
}
