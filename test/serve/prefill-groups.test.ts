/** Joiners grouped for batched prefills by length: no group's padding past its own tokens. */
import { describe, expect, it } from 'vitest';
import { lengthGroups } from '../../src/serve/prefill-groups.js';
import { Rng } from '../../src/util/rng.js';

const groupsOf = (lengths: number[]): number[][] => lengthGroups(lengths, (n) => n);

describe('lengthGroups', () => {
  it('reads a long prompt apart from short ones, and like lengths together', () => {
    expect(groupsOf([10, 128, 10, 10, 10, 10, 10, 10])).toEqual([[10, 10, 10, 10, 10, 10, 10], [128]]);
    expect(groupsOf([120, 10, 120, 10, 120, 10, 120, 10])).toEqual([[10, 10, 10, 10], [120, 120, 120, 120]]);
    expect(groupsOf([30, 35, 40, 33])).toEqual([[30, 33, 35, 40]]);
    expect(groupsOf([5])).toEqual([[5]]);
    expect(groupsOf([])).toEqual([]);
  });

  it('keeps every item once, each group at most half padding, in random draws', () => {
    const rng = new Rng(5);
    for (let draw = 0; draw < 200; draw++) {
      const lengths = Array.from({ length: 1 + rng.int(12) }, () => 1 + rng.int(rng.int(2) ? 20 : 500));
      const groups = groupsOf(lengths);
      expect(groups.flat().sort((a, b) => a - b)).toEqual([...lengths].sort((a, b) => a - b));
      for (const g of groups) expect(g.length * Math.max(...g)).toBeLessThanOrEqual(2 * g.reduce((a, b) => a + b, 0));
      // Fewer calls where padding allows: two neighbouring groups together would pad more than the rule allows.
      for (let i = 1; i < groups.length; i++) {
        const both = [...groups[i - 1], groups[i][0]];
        expect(both.length * Math.max(...both)).toBeGreaterThan(2 * both.reduce((a, b) => a + b, 0));
      }
    }
  });
});
