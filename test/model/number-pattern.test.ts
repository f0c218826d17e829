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

  it('boundedNumberPattern writes exactly the numbers within the bounds: integers canonically, decimals with any fraction digits', () => {
    const cases: Array<[{ min?: number; max?: number; exclusiveMin?: number; exclusiveMax?: number }, boolean]> = [
      [{ min: 0, max: 5 }, false],
      [{ min: 1, max: 5 }, true],
      [{ exclusiveMin: 0, exclusiveMax: 1 }, false],
      [{ min: -2.5, max: 3.5 }, false],
      [{ exclusiveMin: -10, max: -3 }, false],
      [{ min: 0.5 }, true],
      [{ exclusiveMax: 100 }, false],
      [{ min: 0.2, max: 0.8 }, false],
      [{ exclusiveMin: 0.25, exclusiveMax: 0.75 }, false],
      [{ min: -0.05, exclusiveMax: 0.05 }, false],
      [{ min: 1.5, max: 1.5 }, false],
      [{ exclusiveMin: -3.75, exclusiveMax: 12.125 }, false],
      [{ min: 0.1 }, false],
      [{ exclusiveMax: -0.3 }, false],
      [{ min: 0.333, max: 0.334, exclusiveMin: 0.333 }, false],
      [{ min: 9.99, max: 10.01 }, false],
      // Empty ranges: none (before, bounds whose integer parts differ wrote their own fractions: 10.5 for 10 to 1).
      [{ min: 10, max: 1, exclusiveMin: -2 }, false],
      [{ min: 3, max: 2.5 }, false],
      [{ exclusiveMin: 2, max: 2 }, false],
    ];
    const rng = new Rng(5);
    for (const [b, integer] of cases) {
      const pattern = boundedNumberPattern(b, integer);
      const inRange = (x: number) =>
        (b.min === undefined || x >= b.min) && (b.max === undefined || x <= b.max) && (b.exclusiveMin === undefined || x > b.exclusiveMin) && (b.exclusiveMax === undefined || x < b.exclusiveMax);
      if (pattern === null) {
        for (let n = -50; n <= 50; n += 0.125) expect(inRange(n) && (!integer || Number.isInteger(n)), `${n} for ${JSON.stringify(b)}`).toBe(false);
        continue;
      }
      const re = whole(pattern);
      // Random decimals (up to 4 fraction digits, trailing zeros and negative zero included), and each bound's neighbours.
      const texts: string[] = [];
      for (let k = 0; k < 4000; k++) {
        const int = Math.floor(rng.uniform() * 150);
        const digits = Math.floor(rng.uniform() * 5);
        const frac = Array.from({ length: digits }, () => Math.floor(rng.uniform() * 10)).join('');
        texts.push(`${rng.uniform() < 0.5 ? '-' : ''}${int}${digits > 0 ? `.${frac}` : ''}`);
      }
      for (const v of Object.values(b)) {
        for (let d = 1; d <= 4; d++) for (const step of [-1, 0, 1]) texts.push((v + step * 10 ** -d).toFixed(d), (v + step * 10 ** -d).toFixed(d + 2));
      }
      for (const text of texts) {
        if (text === '-0' || /^-?0[0-9]/.test(text)) continue; // not canonical: never written, whatever its value
        const x = Number(text);
        const expected = inRange(x) && (!integer || !text.includes('.'));
        expect(re.test(text), `${text} for ${JSON.stringify(b)}`).toBe(expected);
      }
    }
    // (0, 1) holds no integer, only fractions of 0; (-1, 0) those of -0; the top bound's own fractions are out.
    expect(['0.5', '0.05', '0.0', '1', '0'].map((t) => whole(boundedNumberPattern({ exclusiveMin: 0, exclusiveMax: 1 }, false)!).test(t))).toEqual([true, true, false, false, false]);
    expect(['-0.5', '0.5', '-1', '0'].map((t) => whole(boundedNumberPattern({ exclusiveMin: -1, exclusiveMax: 0 }, false)!).test(t))).toEqual([true, false, false, false]);
    expect(['5', '5.1', '4.9', '-2.5', '-2.6', '-3', '5.000', '-2.50', '-2.501'].map((t) => whole(boundedNumberPattern({ min: -2.5, max: 5 }, false)!).test(t))).toEqual([true, false, true, true, false, false, true, true, false]);
    // A bound's own decimal digits decide, not the double nearest them: 0.3 is above 0.29999 and equal to 0.30.
    expect(['0.3', '0.30', '0.29999', '0.30001'].map((t) => whole(boundedNumberPattern({ min: 0.3, max: 0.3 }, false)!).test(t))).toEqual([true, true, false, false]);
    expect(boundedNumberPattern({ exclusiveMin: 0.5, exclusiveMax: 0.5 }, false)).toBeNull();
    expect(boundedNumberPattern({ min: 0.2, max: 0.8 }, true)).toBeNull();
  });
});
