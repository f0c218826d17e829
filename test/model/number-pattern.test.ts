import { describe, expect, it } from 'vitest';
import { boundedNumberPattern, integerPattern } from '../../src/model/number-pattern.js';
import { Rng } from '../../src/util/rng.js';

const whole = (p: string) => new RegExp(`^(?:${p})$`);

describe('number patterns', () => {
  it('integerPattern matches exactly the integers in range, written canonically', () => {
    const rng = new Rng(3);
    const bounds: Array<[number, number]> = [[0, 0], [0, 9], [5, 5], [7, 123], [-15, 4], [-300, -12], [99, 1000], [0, Infinity], [42, Infinity], [-Infinity, -7], [-Infinity, 250], [-Infinity, Infinity]];
    for (let k = 0; k < 40; k++) {
      const a = Math.floor((rng.uniform() - 0.5) * 20000);
      bounds.push([a, a + Math.floor(rng.uniform() * 5000)]);
    }
    for (const [lo, hi] of bounds) {
      const re = whole(integerPattern(lo, hi)!);
      const centre = Number.isFinite(lo) ? lo : Number.isFinite(hi) ? hi : 0;
      for (let n = centre - 1200; n <= centre + 6000; n++) expect(re.test(String(n)), `${n} in [${lo}, ${hi}]`).toBe(n >= lo && n <= hi);
      for (const bad of ['-0', '007', '1e3', '+5', '1.0', '']) expect(re.test(bad), `${bad} in [${lo}, ${hi}]`).toBe(false);
    }
    expect(integerPattern(3, 2)).toBeNull();
  });

  it('boundedNumberPattern writes only numbers within the bounds, and every integer in them', () => {
    const cases: Array<[{ min?: number; max?: number; exclusiveMin?: number; exclusiveMax?: number }, boolean]> = [
      [{ min: 0, max: 5 }, false],
      [{ min: 1, max: 5 }, true],
      [{ exclusiveMin: 0, exclusiveMax: 1 }, false],
      [{ min: -2.5, max: 3.5 }, false],
      [{ exclusiveMin: -10, max: -3 }, false],
      [{ min: 0.5 }, true],
      [{ exclusiveMax: 100 }, false],
    ];
    const rng = new Rng(5);
    for (const [b, integer] of cases) {
      const pattern = boundedNumberPattern(b, integer);
      const inRange = (x: number) =>
        (b.min === undefined || x >= b.min) && (b.max === undefined || x <= b.max) && (b.exclusiveMin === undefined || x > b.exclusiveMin) && (b.exclusiveMax === undefined || x < b.exclusiveMax);
      if (pattern === null) {
        for (let n = -50; n <= 50; n++) expect(inRange(n) && integer, JSON.stringify(b)).toBe(false);
        continue;
      }
      const re = whole(pattern);
      for (let k = 0; k < 4000; k++) {
        const int = Math.floor((rng.uniform() - 0.5) * 300);
        const text = rng.uniform() < 0.5 ? String(int) : `${int}.${Math.floor(rng.uniform() * 1000)}`;
        // Whatever matches is in range (and an integer if asked); every integer in range matches.
        if (re.test(text)) expect(inRange(Number(text)) && (!integer || Number.isInteger(Number(text))), `${text} for ${JSON.stringify(b)}`).toBe(true);
        if (!text.includes('.') && inRange(int) && Object.is(Number(text), int)) expect(re.test(text), `${text} for ${JSON.stringify(b)}`).toBe(true);
      }
    }
    // (0, 1) holds no integer, only fractions of 0; (-1, 0) those of -0; the top bound's own fractions are out.
    expect(['0.5', '0.05', '0.0', '1', '0'].map((t) => whole(boundedNumberPattern({ exclusiveMin: 0, exclusiveMax: 1 }, false)!).test(t))).toEqual([true, true, false, false, false]);
    expect(['-0.5', '0.5', '-1', '0'].map((t) => whole(boundedNumberPattern({ exclusiveMin: -1, exclusiveMax: 0 }, false)!).test(t))).toEqual([true, false, false, false]);
    expect(['5', '5.1', '4.9', '-2.5', '-2.6', '-3'].map((t) => whole(boundedNumberPattern({ min: -2.5, max: 5 }, false)!).test(t))).toEqual([true, false, true, false, false, false]);
    expect(boundedNumberPattern({ min: 0.2, max: 0.8 }, false)).toBeNull();
  });
});
