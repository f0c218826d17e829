import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { dominates, paretoFront, paretoMask2d, toMinimization } from '../../../src/inject/search/pareto.js';

describe('Pareto filtering', () => {
  it('keeps exactly the non-dominated points of a hand-made set', () => {
    const pts = [
      [1, 5], // front
      [2, 3], // front
      [3, 3], // dominated by [2,3]
      [4, 1], // front
      [4, 2], // dominated by [4,1]
      [5, 5], // dominated
      [2, 3], // duplicate of index 1: dropped
    ];
    expect(paretoFront(pts)).toEqual([0, 1, 3]);
    const x = pts.map((p) => p[0]);
    const y = pts.map((p) => p[1]);
    const mask = paretoMask2d(x, y, pts.length, new Uint8Array(pts.length));
    expect(Array.from(mask)).toEqual([1, 1, 0, 1, 0, 0, 0]);
  });

  it('maps (loss, ROUGE-L) to minimisation so lower loss and higher ROUGE-L both dominate', () => {
    const a = toMinimization({ loss: 1.0, rougeL: 0.3 });
    const b = toMinimization({ loss: 1.2, rougeL: 0.2 });
    expect(dominates(a, b)).toBe(true);
    expect(dominates(b, a)).toBe(false);
    expect(dominates(a, a)).toBe(false);
  });

  it('agrees between the general filter and the 2-D sweep on random sets (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 6 }), fc.integer({ min: 0, max: 6 })), { minLength: 1, maxLength: 30 }), (pts) => {
        const front = paretoFront(pts);
        const mask = paretoMask2d(
          pts.map((p) => p[0]),
          pts.map((p) => p[1]),
          pts.length,
          new Uint8Array(pts.length),
        );
        const fromMask = Array.from(mask).flatMap((m, i) => (m ? [i] : []));
        // Both keep one representative per objective vector; compare the vectors.
        const key = (ix: number[]) => ix.map((i) => pts[i].join(',')).sort();
        expect(key(fromMask)).toEqual(key(front));
        for (const i of front) for (let j = 0; j < pts.length; j++) expect(dominates(pts[j], pts[i])).toBe(false);
      }),
      { numRuns: 200 },
    );
  });
});
