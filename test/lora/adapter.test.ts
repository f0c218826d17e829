import { describe, expect, it } from 'vitest';
import { adapterBytes, initAdapter, mergeModules, toServed, type LoraTarget } from '../../src/lora/adapter.js';

const targets: LoraTarget[] = [0, 1, 2].flatMap((layer) => [
  { layer, map: 'mlp.c_fc', inFeatures: 16, outFeatures: 64 },
  { layer, map: 'mlp.c_proj', inFeatures: 64, outFeatures: 16 },
]);

/** y = B (A x) for a pair stored row-major. */
function apply(A: Float32Array, B: Float32Array, rank: number, inF: number, outF: number, x: number[]): number[] {
  const h = Array.from({ length: rank }, (_, k) => x.reduce((s, xi, i) => s + A[k * inF + i] * xi, 0));
  return Array.from({ length: outF }, (_, o) => h.reduce((s, hk, k) => s + B[o * rank + k] * hk, 0));
}

describe('initAdapter', () => {
  it('creates merged rank-n*r pairs on the injected layers only, B zero, A within the Kaiming bound', () => {
    const a = initAdapter({ layers: [true, false, true], n: 2, r: 8 }, targets, 1);
    expect(a.pairs.map((p) => `${p.target.layer}.${p.target.map}`)).toEqual(['0.mlp.c_fc', '0.mlp.c_proj', '2.mlp.c_fc', '2.mlp.c_proj']);
    for (const p of a.pairs) {
      expect(p.rank).toBe(16);
      expect(p.A.length).toBe(16 * p.target.inFeatures);
      expect(p.B.every((v) => v === 0)).toBe(true);
      const bound = 1 / Math.sqrt(p.target.inFeatures);
      expect(Math.max(...p.A.map(Math.abs))).toBeLessThanOrEqual(bound);
      expect(Math.max(...p.A.map(Math.abs))).toBeGreaterThan(bound * 0.8);
    }
    expect(adapterBytes(a)).toBe(a.pairs.reduce((s, p) => s + 4 * 16 * (p.target.inFeatures + p.target.outFeatures), 0));
  });

  it('is deterministic under a seed and empty for the vanilla spec', () => {
    const s = { layers: [true, true, true], n: 1, r: 8 as const };
    expect(initAdapter(s, targets, 5).pairs[0].A).toEqual(initAdapter(s, targets, 5).pairs[0].A);
    expect(initAdapter(s, targets, 5).pairs[0].A).not.toEqual(initAdapter(s, targets, 6).pairs[0].A);
    expect(initAdapter({ ...s, n: 0 }, targets, 5).pairs).toEqual([]);
  });
});

describe('mergeModules', () => {
  it('n rank-r modules equal one rank-n*r module: sum_i B_i A_i x = [B_1..B_n][A_1;..;A_n] x', () => {
    const t = targets[0];
    const r = 8;
    const mods = [0, 1, 2].map((seed) => {
      const a = initAdapter({ layers: [true, false, false], n: 1, r }, [t], 10 + seed, 'gaussian').pairs[0];
      const B = Float32Array.from({ length: t.outFeatures * r }, (_, i) => Math.sin(i + seed));
      return { A: a.A, B, r };
    });
    const merged = mergeModules(t, mods);
    expect(merged.rank).toBe(24);
    const x = Array.from({ length: t.inFeatures }, (_, i) => Math.cos(i));
    const separate = mods
      .map((m) => apply(m.A, m.B, r, t.inFeatures, t.outFeatures, x))
      .reduce((acc, y) => acc.map((v, i) => v + y[i]));
    const joint = apply(merged.A, merged.B, 24, t.inFeatures, t.outFeatures, x);
    joint.forEach((v, i) => expect(v).toBeCloseTo(separate[i], 4));
  });
});

describe('toServed', () => {
  it('turns the adapter itself into the served form: every B transposed in its own memory (Bt [rank, out]), same bytes', () => {
    const a = initAdapter({ layers: [true, true, false], n: 3, r: 8 }, targets, 5);
    for (const p of a.pairs) p.B.forEach((_, i) => (p.B[i] = Math.sin(i + p.target.layer)));
    const before = a.pairs.map((p) => ({ A: p.A, B: Float32Array.from(p.B), mem: p.B, rank: p.rank, out: p.target.outFeatures, inF: p.target.inFeatures }));
    const bytes = adapterBytes(a);
    const s = toServed(a);
    expect(s).toBe(a as unknown); // the same object: the cache's entry is served from now on
    expect(adapterBytes(s)).toBe(bytes);
    s.pairs.forEach((p, i) => {
      const b = before[i];
      expect('B' in p).toBe(false);
      expect(p.A).toBe(b.A);
      expect(p.Bt).toBe(b.mem); // the same memory, rewritten
      for (let k = 0; k < b.rank; k++) for (let o = 0; o < b.out; o++) expect(p.Bt[k * b.out + o]).toBe(b.B[o * b.rank + k]);
      const x = Array.from({ length: b.inF }, (_, j) => Math.cos(j));
      const h = Array.from({ length: b.rank }, (_, k) => x.reduce((acc, xi, j) => acc + p.A[k * b.inF + j] * xi, 0));
      const y = Array.from({ length: b.out }, (_, o) => h.reduce((acc, hk, k) => acc + p.Bt[k * b.out + o] * hk, 0));
      expect(y).toEqual(apply(b.A, b.B, b.rank, b.inF, b.out, x));
    });
    // Served already: nothing changes a second time.
    const again = s.pairs.map((p) => Float32Array.from(p.Bt));
    expect(toServed(s)).toBe(s);
    s.pairs.forEach((p, i) => expect([...p.Bt]).toEqual([...again[i]]));
  });
});
