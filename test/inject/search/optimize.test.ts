import { describe, expect, it } from 'vitest';
import { optimizeAcquisition } from '../../../src/inject/search/optimize.js';
import { Rng } from '../../../src/util/rng.js';
import { createSpace, type LoraConfig } from '../../../src/inject/search/space.js';

describe('acquisition optimiser', () => {
  const space = createSpace({ layers: 12 });
  const target: LoraConfig = { layers: [...'101100010011'].map((b) => b === '1'), n: 19, r: 64 };
  // A smooth score peaking at the target: random draws almost never hit it, local search must.
  const distance = (c: LoraConfig) =>
    c.layers.reduce((s, b, l) => s + (b !== target.layers[l] ? 1 : 0), 0) + Math.abs(c.n - target.n) / 4 + Math.abs(space.ranks.indexOf(c.r) - space.ranks.indexOf(target.r));
  const scorer = (cs: LoraConfig[]) => Float64Array.from(cs, (c) => 100 - distance(c));

  it('climbs to the optimum of a score that random candidates miss', () => {
    const p = optimizeAcquisition(space, scorer, new Set(), [], new Rng(1), { randomCandidates: 64 });
    expect(p).not.toBeNull();
    expect(p!.key).toBe(space.key(target));
    expect(p!.value).toBe(100);
    expect(p!.fallback).toBe(false);
  });

  it('never proposes an excluded configuration and returns the best allowed one', () => {
    const p = optimizeAcquisition(space, scorer, new Set([space.key(target)]), [], new Rng(2), { randomCandidates: 64 });
    expect(p!.key).not.toBe(space.key(target));
    expect(p!.value).toBe(100 - 0.25);
  });

  it('scores small spaces exhaustively and returns null when everything is excluded', () => {
    const small = createSpace({ layers: 2, fixed: { n: 2, r: 8 } });
    const keys = [...small.enumerate()].map((c) => small.key(c));
    expect(keys).toHaveLength(4);
    let calls = 0;
    const s = (cs: LoraConfig[]) => {
      calls += cs.length;
      return Float64Array.from(cs, (c) => c.layers.filter(Boolean).length);
    };
    const p = optimizeAcquisition(small, s, new Set(['11:n2:r8']), [], new Rng(3));
    expect(['10:n2:r8', '01:n2:r8']).toContain(p!.key);
    expect(calls).toBe(3);
    expect(optimizeAcquisition(small, s, new Set(keys), [], new Rng(3))).toBeNull();
  });

  it('falls back to a random unevaluated candidate when nothing scores above zero', () => {
    const p = optimizeAcquisition(space, (cs) => new Float64Array(cs.length), new Set(), [], new Rng(4), { randomCandidates: 32 });
    expect(p!.fallback).toBe(true);
  });

  it('starts local searches from the seeds (Pareto points)', () => {
    // The score is positive only within distance 1 of the target; the target's neighbour is a seed.
    const narrow = (cs: LoraConfig[]) => Float64Array.from(cs, (c) => Math.max(0, 2 - distance(c)));
    const seed: LoraConfig = { ...target, n: target.n + 4 };
    const p = optimizeAcquisition(space, narrow, new Set([space.key(seed)]), [seed], new Rng(5), { randomCandidates: 16 });
    expect(p!.key).toBe(space.key(target));
  });
});
