import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { hypervolume2d, hypervolumeImprovement2d, sortedFront } from '../../../src/inject/search/hypervolume.js';

describe('2-D hypervolume', () => {
  it('matches a hand-computed staircase', () => {
    // Reference (4, 4); points (1,3), (2,2), (3,1): slabs 3×1 + 2×1 + 1×1 = 6.
    expect(hypervolume2d([[1, 3], [2, 2], [3, 1]], [4, 4])).toBe(6);
    // Order and dominated points do not matter: (2.5, 2.5) is dominated by (2, 2).
    expect(hypervolume2d([[3, 1], [2.5, 2.5], [1, 3], [2, 2]], [4, 4])).toBe(6);
    // A single point: a rectangle.
    expect(hypervolume2d([[0.5, 1.5]], [2, 3])).toBeCloseTo(1.5 * 1.5, 15);
    // Points outside the reference box count for nothing.
    expect(hypervolume2d([[5, 0], [0, 5], [4, 1]], [4, 4])).toBe(0);
    expect(hypervolume2d([], [1, 1])).toBe(0);
  });

  it('computes improvements by hand and as differences of hypervolumes', () => {
    const ref: [number, number] = [4, 4];
    const front = sortedFront([1, 2, 3], [3, 2, 1], 3, ref);
    // (1.5, 1.5): box [1.5,4]² = 6.25 minus the part the front already covers; clipped to p the
    // front is (1.5,3), (2,2), (3,1.5) → 2.5·1 + 2·1 + 1·0.5 = 5, so the improvement is 1.25.
    expect(hypervolumeImprovement2d(front, 1.5, 1.5, ref)).toBeCloseTo(1.25, 14);
    expect(hypervolumeImprovement2d(front, 2.5, 2.5, ref)).toBe(0);
    expect(hypervolumeImprovement2d(front, 5, 0, ref)).toBe(0);
    // A point dominating the whole front: the full box minus the old hypervolume.
    expect(hypervolumeImprovement2d(front, 0, 0, ref)).toBeCloseTo(16 - 6, 14);
  });

  it('improvement equals HV(front ∪ p) − HV(front) on random sets (property)', () => {
    const num = fc.double({ min: 0, max: 10, noNaN: true });
    fc.assert(
      fc.property(fc.array(fc.tuple(num, num), { maxLength: 20 }), num, num, (pts, px, py) => {
        const ref: [number, number] = [8, 8];
        const front = sortedFront(
          pts.map((p) => p[0]),
          pts.map((p) => p[1]),
          pts.length,
          ref,
        );
        const before = hypervolume2d(pts, ref);
        const after = hypervolume2d([...pts, [px, py]], ref);
        expect(hypervolumeImprovement2d(front, px, py, ref)).toBeCloseTo(after - before, 9);
      }),
      { numRuns: 300 },
    );
  });
});
