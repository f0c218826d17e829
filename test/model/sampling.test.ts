import { describe, expect, it } from 'vitest';
import { MIN_LOGPROB, SamplingError, argmax, bannedAfter, candidateDistribution, checkSampling, sampleToken, shapeLogits, tokenLogprobs } from '../../src/model/sampling.js';
import { Rng } from '../../src/util/rng.js';

const logits = Float32Array.from([1, 3, 2, -1, 3, 0.5]);

function freq(opts: Parameters<typeof sampleToken>[1], n = 4000, seed = 1, history?: Parameters<typeof sampleToken>[3]): number[] {
  const rng = new Rng(seed);
  const c = Array(logits.length).fill(0);
  for (let i = 0; i < n; i++) c[sampleToken(logits, opts, rng, history)]++;
  return c.map((x) => x / n);
}

const softmax = (xs: number[], t = 1): number[] => {
  const m = Math.max(...xs);
  const e = xs.map((x) => Math.exp((x - m) / t));
  const z = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / z);
};

describe('sampling', () => {
  it('greedy is the first argmax and draws nothing', () => {
    const rng = new Rng(5);
    const before = new Rng(5).nextU32();
    expect(sampleToken(logits, { temperature: 0 }, rng)).toBe(1);
    expect(rng.nextU32()).toBe(before);
    expect(argmax([0, 2, 2])).toBe(1);
  });

  it('temperature reshapes the distribution (softmax(l / T))', () => {
    for (const t of [0.5, 1, 2]) {
      const { ids, probs } = candidateDistribution(logits, { temperature: t });
      const ref = softmax([...logits], t);
      ids.forEach((id, i) => expect(probs[i]).toBeCloseTo(ref[id], 10));
    }
    const f = freq({ temperature: 2 });
    softmax([...logits], 2).forEach((p, i) => expect(Math.abs(f[i] - p)).toBeLessThan(0.03));
  });

  it('top-k keeps the k largest (ties by lower index), renormalised', () => {
    const { ids, probs } = candidateDistribution(logits, { topK: 3 });
    expect(ids).toEqual([1, 4, 2]);
    const ref = softmax([3, 3, 2]);
    probs.forEach((p, i) => expect(p).toBeCloseTo(ref[i], 10));
    const f = freq({ topK: 2 });
    expect(f[0] + f[2] + f[3] + f[5]).toBe(0);
    expect(Math.abs(f[1] - 0.5)).toBeLessThan(0.03);
  });

  it('top-p keeps the smallest most-likely set reaching p', () => {
    const p = softmax([...logits]); // sorted: 1, 4 (0.33 each), 2 (0.12), 0 (0.045), ...
    const twoTop = p[1] + p[4];
    expect(candidateDistribution(logits, { topP: twoTop - 1e-6 }).ids).toEqual([1, 4]);
    expect(candidateDistribution(logits, { topP: twoTop + 1e-3 }).ids).toEqual([1, 4, 2]);
    expect(candidateDistribution(logits, { topP: 1e-9 }).ids).toEqual([1]);
    const f = freq({ topP: twoTop - 1e-6 });
    expect(f[1] + f[4]).toBe(1);
  });

  it('top-p over a large vocabulary matches a brute-force nucleus', () => {
    const rng = new Rng(3);
    const big = Float32Array.from({ length: 5000 }, () => 3 * rng.normal());
    for (const [t, p] of [[1, 0.9], [0.7, 0.5], [1.3, 0.99]]) {
      const probs = softmax([...big], t);
      const order = probs.map((_, i) => i).sort((a, b) => probs[b] - probs[a] || a - b);
      const want: number[] = [];
      let cum = 0;
      for (const i of order) {
        want.push(i);
        cum += probs[i];
        if (cum >= p) break;
      }
      expect(candidateDistribution(big, { temperature: t, topP: p }).ids).toEqual(want);
    }
  });

  it('min-p keeps the tokens at least p times as likely as the most likely one, after temperature, top-k and top-p (a brute-force reference)', () => {
    const rng = new Rng(4);
    const big = Float32Array.from({ length: 3000 }, () => 2 * rng.normal());
    for (const [t, k, p, minP] of [[1, 0, 1, 0.05], [0.7, 0, 1, 0.3], [1.5, 50, 1, 0.2], [1, 0, 0.8, 0.1], [2, 0, 0.95, 0.5]]) {
      // The reference: softmax(l / T), top-k (ties by lower index), the nucleus, then min-p, renormalised.
      const probs = softmax([...big], t);
      let order = probs.map((_, i) => i).sort((a, b) => probs[b] - probs[a] || a - b);
      if (k > 0) order = order.slice(0, k);
      const mass = order.reduce((a, i) => a + probs[i], 0);
      const nucleus: number[] = [];
      let cum = 0;
      for (const i of order) {
        if (cum >= p * mass) break;
        nucleus.push(i);
        cum += probs[i];
      }
      const best = probs[nucleus[0]];
      const want = nucleus.filter((i) => probs[i] >= minP * best);
      const z = want.reduce((a, i) => a + probs[i], 0);
      const got = candidateDistribution(big, { temperature: t, topK: k || undefined, topP: p, minP });
      expect(got.ids, `T ${t} k ${k} p ${p} min-p ${minP}`).toEqual(want);
      got.probs.forEach((q, i) => expect(q).toBeCloseTo(probs[want[i]] / z, 9));
      expect(want.length).toBeLessThan(nucleus.length);
    }
    // On the small row: p 0.3 keeps 1, 4 and 2 (e^-1 = 0.37 of the best), p 0.4 only the two best; draws stay within.
    expect(candidateDistribution(logits, { minP: 0.3 }).ids).toEqual([1, 4, 2]);
    expect(candidateDistribution(logits, { minP: 0.4 }).ids).toEqual([1, 4]);
    const f = freq({ minP: 0.4 });
    expect(f[1] + f[4]).toBe(1);
    // 1 keeps the best tokens alone; 0 keeps all.
    expect(candidateDistribution(logits, { minP: 1 }).ids).toEqual([1, 4]);
    expect(candidateDistribution(logits, { minP: 0 }).ids).toHaveLength(logits.length);
  });

  it('bad words: a word\'s last token is banned where the reply ends with the tokens before it; a one-token word always', () => {
    const words = [[7], [1, 2, 3], [2, 5]];
    expect(bannedAfter(words, [])).toEqual(new Set([7]));
    expect(bannedAfter(words, [9, 1, 2])).toEqual(new Set([7, 3, 5]));
    expect(bannedAfter(words, [1, 2, 4])).toEqual(new Set([7]));
    expect(bannedAfter(words, [2])).toEqual(new Set([7, 5]));
    expect(bannedAfter([[1, 2, 3]], [2])).toBeUndefined();
    expect(() => checkSampling({ badWords: [[]] })).toThrow(/badWords/);
    expect(() => checkSampling({ badWords: [[1, -1]] })).toThrow(/badWords/);
  });

  it('repetition penalty divides positive logits and multiplies negative ones, once per distinct token', () => {
    const out = shapeLogits(logits, { repetitionPenalty: 2 }, { seen: new Set([1, 3]) });
    expect([...out]).toEqual([1, 1.5, 2, -2, 3, 0.5]);
    expect(logits[1]).toBe(3); // input untouched
    expect(sampleToken(logits, { temperature: 0, repetitionPenalty: 2 }, new Rng(1), { seen: new Set([1, 4]) })).toBe(2);
  });

  it('frequency and presence penalties: minus count × frequency, minus presence once a token was generated', () => {
    const counts = new Map([[1, 2], [4, 1], [5, 0]]);
    const out = shapeLogits(logits, { frequencyPenalty: 0.5, presencePenalty: 0.25 }, { counts });
    // 3 - 2·0.5 - 0.25 and 3 - 1·0.5 - 0.25; a count of 0 is no occurrence.
    expect([...out]).toEqual([1, 1.75, 2, -1, 2.25, 0.5]);
    expect(sampleToken(logits, { temperature: 0, frequencyPenalty: 0.5, presencePenalty: 0.25 }, new Rng(1), { counts })).toBe(4);
    // Negative penalties encourage repeats (OpenAI's range is -2 to 2).
    expect([...shapeLogits(logits, { presencePenalty: -1 }, { counts })]).toEqual([1, 4, 2, -1, 4, 0.5]);
    // The draw follows softmax of the shaped logits.
    const f = freq({ temperature: 1, frequencyPenalty: 0.5, presencePenalty: 0.25 }, 20000, 3, { counts });
    softmax([1, 1.75, 2, -1, 2.25, 0.5]).forEach((p, i) => expect(Math.abs(f[i] - p)).toBeLessThan(0.015));
  });

  it('logit bias is added first, before the repetition penalty, and -100 bans a token', () => {
    expect(sampleToken(logits, { temperature: 0, logitBias: new Map([[5, 10]]) }, new Rng(1))).toBe(5);
    expect(sampleToken(logits, { temperature: 0, logitBias: new Map([[1, -100], [4, -100]]) }, new Rng(1))).toBe(2);
    // Token 0: (1 - 3) · 2 = -4 with the bias first; 1 / 2 - 3 = -2.5 the other way round.
    const out = shapeLogits(logits, { repetitionPenalty: 2, logitBias: new Map([[0, -3]]) }, { seen: new Set([0]) });
    expect(out[0]).toBe(-4);
    const f = freq({ temperature: 1, logitBias: new Map([[1, -100], [3, 2]]) }, 20000, 4);
    expect(f[1]).toBe(0);
    softmax([1, -97, 2, 1, 3, 0.5]).forEach((p, i) => expect(Math.abs(f[i] - p)).toBeLessThan(0.015));
  });

  it('suppressed tokens cannot be drawn, after every other shaping', () => {
    const suppress = new Set([1, 4]);
    const out = shapeLogits(logits, { logitBias: new Map([[1, 100]]) }, { suppress });
    expect([...out]).toEqual([1, -Infinity, 2, -1, -Infinity, 0.5]);
    expect(sampleToken(logits, { temperature: 0 }, new Rng(1), { suppress })).toBe(2);
    const f = freq({ temperature: 1, topK: 3 }, 20000, 5, { suppress });
    expect(f[1] + f[4]).toBe(0);
    softmax([1, 2, 0.5]).forEach((p, i) => expect(Math.abs(f[[0, 2, 5][i]] - p)).toBeLessThan(0.015));
  });

  it('shapes nothing (the logits themselves, no copy) when no bias or penalty applies', () => {
    expect(shapeLogits(logits, {}, { seen: new Set([1]), counts: new Map([[1, 1]]) })).toBe(logits);
    expect(shapeLogits(logits, { repetitionPenalty: 2 })).toBe(logits);
    expect(shapeLogits(logits, { frequencyPenalty: 1 }, { counts: new Map() })).toBe(logits);
    expect(shapeLogits(logits, { logitBias: new Map() })).toBe(logits);
    expect(shapeLogits(logits, {}, { suppress: new Set() })).toBe(logits);
  });

  it('is reproducible from the seed, and seeds differ', () => {
    const draw = (seed: number): number[] => {
      const rng = new Rng(seed);
      return Array.from({ length: 50 }, () => sampleToken(logits, { temperature: 1.5, topP: 0.95 }, rng));
    };
    expect(draw(7)).toEqual(draw(7));
    expect(draw(7)).not.toEqual(draw(8));
  });

  it('rejects out-of-range options', () => {
    expect(() => checkSampling({ temperature: -1 })).toThrow(SamplingError);
    expect(() => checkSampling({ topP: 0 })).toThrow(/topP/);
    expect(() => checkSampling({ topK: 1.5 })).toThrow(/topK/);
    expect(() => checkSampling({ minP: 1.1 })).toThrow(/minP/);
    expect(() => checkSampling({ minP: -0.1 })).toThrow(/minP/);
    expect(() => checkSampling({ repetitionPenalty: 0 })).toThrow(/repetitionPenalty/);
    expect(() => checkSampling({ frequencyPenalty: NaN })).toThrow(/frequencyPenalty/);
    expect(() => checkSampling({ presencePenalty: Infinity })).toThrow(/presencePenalty/);
    expect(() => checkSampling({ logitBias: new Map([[-1, 1]]) })).toThrow(/logitBias/);
    expect(() => checkSampling({ logitBias: new Map([[2, NaN]]) })).toThrow(/logitBias\[2\]/);
  });
});

describe('tokenLogprobs', () => {
  it('is the log of the softmax of the logits, with the most likely tokens first (lower id first on ties)', () => {
    const p = softmax(Array.from(logits));
    const r = tokenLogprobs(logits, 3, 3);
    expect(r.tokenId).toBe(3);
    expect(r.logprob).toBeCloseTo(Math.log(p[3]), 12);
    expect(r.top.map((t) => t.tokenId)).toEqual([1, 4, 2]);
    r.top.forEach((t) => expect(t.logprob).toBeCloseTo(Math.log(p[t.tokenId]), 12));
    expect(tokenLogprobs(logits, 0, 0).top).toEqual([]);
    expect(tokenLogprobs(logits, 0, 50).top.map((t) => t.tokenId)).toEqual([1, 4, 2, 0, 5, 3]);
  });

  it('ranks the token among all tokens as a full sort would (1: the most likely; lower id first on ties), the order `top` lists them in', () => {
    const rng = new Rng(7);
    for (let trial = 0; trial < 200; trial++) {
      const n = 1 + rng.int(40);
      // Few distinct values, so that ties are common.
      const x = Float32Array.from({ length: n }, () => rng.int(6) - 3);
      const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => x[b] - x[a] || a - b);
      const all = tokenLogprobs(x, 0, n).top.map((t) => t.tokenId);
      expect(all).toEqual(order);
      for (let t = 0; t < n; t++) expect(tokenLogprobs(x, t, 0).rank).toBe(order.indexOf(t) + 1);
    }
  });

  it('stays finite for large logits and floors vanishing probabilities at MIN_LOGPROB', () => {
    const big = Float32Array.from([1e4, 1e4, -1e5]);
    const r = tokenLogprobs(big, 0, 3);
    expect(r.logprob).toBeCloseTo(-Math.LN2, 12);
    expect(r.top[2]).toEqual({ tokenId: 2, logprob: MIN_LOGPROB });
    expect(r.top.every((t) => Number.isFinite(t.logprob) && t.logprob <= 0)).toBe(true);
  });
});
