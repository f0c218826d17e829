import { describe, expect, it } from 'vitest';
import { initialDesign, primitivePolynomials, sobolPoints } from '../../../src/inject/search/design.js';
import { Rng } from '../../../src/util/rng.js';
import { createSpace } from '../../../src/inject/search/space.js';

describe('scrambled Sobol design', () => {
  it('enumerates the known primitive polynomials of low degree', () => {
    // x+1; x²+x+1; x³+x+1, x³+x²+1; x⁴+x+1, x⁴+x³+1; six of degree 5.
    const p = primitivePolynomials(12);
    expect(p.slice(0, 6).map((q) => q.poly)).toEqual([0b11, 0b111, 0b1011, 0b1101, 0b10011, 0b11001]);
    expect(p.filter((q) => q.degree === 5).map((q) => q.poly)).toEqual([0b100101, 0b101001, 0b101111, 0b110111, 0b111011, 0b111101]);
  });

  it('puts the first 2^m points one per interval of width 2^−m in every coordinate', () => {
    for (const m of [3, 4, 6]) {
      const pts = sobolPoints(34, 2 ** m, new Rng(m));
      for (let j = 0; j < 34; j++) {
        const cells = new Set(pts.map((p) => Math.floor(p[j] * 2 ** m)));
        expect(cells.size).toBe(2 ** m);
      }
      for (const p of pts) for (const v of p) expect(v >= 0 && v < 1).toBe(true);
    }
  });

  it('keeps the (0,m,2)-net property in its first two coordinates', () => {
    // 16 points: every box of area 1/16 (2^a × 2^(4−a) grid) holds exactly one point.
    const pts = sobolPoints(5, 16, new Rng(21));
    for (let a = 0; a <= 4; a++) {
      const cells = new Set(pts.map((p) => `${Math.floor(p[0] * 2 ** a)},${Math.floor(p[1] * 2 ** (4 - a))}`));
      expect(cells.size).toBe(16);
    }
  });

  it('is reproducible per seed and differs between seeds', () => {
    expect(sobolPoints(10, 8, new Rng(1))).toEqual(sobolPoints(10, 8, new Rng(1)));
    expect(sobolPoints(10, 8, new Rng(1))).not.toEqual(sobolPoints(10, 8, new Rng(2)));
  });

  it('gives distinct configurations with each layer on in half of 8 initial points', () => {
    const space = createSpace({ layers: 8 });
    const design = initialDesign(space, 8, new Rng(5));
    expect(design).toHaveLength(8);
    expect(new Set(design.map((c) => space.key(c))).size).toBe(8);
    // Stratification survives unless a point rounded to vanilla (its bits are then reset).
    if (!design.some((c) => space.isVanilla(c))) for (let l = 0; l < 8; l++) expect(design.filter((c) => c.layers[l]).length).toBe(4);
    const ns = design.map((c) => c.n).sort((a, b) => a - b);
    expect(ns[7] - ns[0]).toBeGreaterThan(16);
  });

  it('skips excluded keys and stops when a small space runs out', () => {
    const space = createSpace({ layers: 2, fixed: { n: 1, r: 8 } });
    // Layer subsets of 2 layers: 3 adapters + vanilla.
    const all = initialDesign(space, 10, new Rng(1));
    expect(all).toHaveLength(4);
    const rest = initialDesign(space, 10, new Rng(1), new Set(['vanilla', '11:n1:r8']));
    expect(rest.map((c) => space.key(c)).sort()).toEqual(['01:n1:r8', '10:n1:r8']);
  });
});
