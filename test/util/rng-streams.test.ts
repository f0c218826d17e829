import { describe, expect, it } from 'vitest';
import { hashSeed, Rng } from '../../src/util/rng.js';

describe('Rng', () => {
  it('is reproducible per seed and differs between seeds and derived streams', () => {
    const a = new Rng(42);
    const b = new Rng(42);
    const xs = Array.from({ length: 5 }, () => a.uniform());
    expect(Array.from({ length: 5 }, () => b.uniform())).toEqual(xs);
    expect(new Rng(43).uniform()).not.toBe(xs[0]);
    expect(new Rng(42).derive(1).uniform()).not.toBe(new Rng(42).derive(2).uniform());
    expect(hashSeed(1, 2)).not.toBe(hashSeed(2, 1));
    expect(hashSeed(2 ** 40)).not.toBe(hashSeed(0));
  });

  it('draws uniforms in [0,1) and integers in range with the right moments', () => {
    const r = new Rng(1);
    const n = 100000;
    let s = 0;
    let s2 = 0;
    const counts = new Array(7).fill(0);
    let lo = Infinity;
    let hi = -Infinity;
    for (let i = 0; i < n; i++) {
      const u = r.uniform();
      lo = Math.min(lo, u);
      hi = Math.max(hi, u);
      s += u;
      s2 += u * u;
      counts[r.int(7)]++;
    }
    expect(lo).toBeGreaterThanOrEqual(0);
    expect(hi).toBeLessThan(1);
    expect(s / n).toBeCloseTo(0.5, 2);
    expect(s2 / n - (s / n) ** 2).toBeCloseTo(1 / 12, 2);
    for (const c of counts) expect(Math.abs(c / n - 1 / 7)).toBeLessThan(0.01);
  });

  it('draws standard normals (mean 0, variance 1, symmetric tails)', () => {
    const r = new Rng(2);
    const n = 100000;
    let s = 0;
    let s2 = 0;
    let beyond2 = 0;
    for (let i = 0; i < n; i++) {
      const z = r.normal();
      s += z;
      s2 += z * z;
      if (Math.abs(z) > 1.96) beyond2++;
    }
    expect(Math.abs(s / n)).toBeLessThan(0.015);
    expect(Math.abs(s2 / n - 1)).toBeLessThan(0.02);
    expect(Math.abs(beyond2 / n - 0.05)).toBeLessThan(0.005);
  });

  it('shuffles into a permutation', () => {
    const xs = [...Array(20).keys()];
    const shuffled = new Rng(3).shuffle([...xs]);
    expect(shuffled).not.toEqual(xs);
    expect([...shuffled].sort((a, b) => a - b)).toEqual(xs);
  });
});
