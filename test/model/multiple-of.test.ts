/** multipleOf's arithmetic: divisors read from their decimal digits, the digit-by-digit follower against brute force, and the multiples listed within bounds. */
import { describe, expect, it } from 'vitest';
import { endsMultiple, multipleOf, multiplesWithin, stepMultiple } from '../../src/model/multiple-of.js';
import { decimalOf } from '../../src/model/number-pattern.js';
import { isMultiple } from './exact-decimal.js';

describe('multipleOf', () => {
  it('reads a divisor from its decimal digits', () => {
    expect(multipleOf(0.01)).toEqual({ k: 1, e: 2 });
    expect(multipleOf(2.5)).toEqual({ k: 25, e: 1 });
    expect(multipleOf(1e-7)).toEqual({ k: 1, e: 7 });
    expect(multipleOf(300)).toEqual({ k: 300, e: 0 });
    expect(multipleOf(0.3)).toEqual({ k: 3, e: 1 });
    for (const bad of [0, -1, Infinity, 1e-13, 1e13]) expect(multipleOf(bad), String(bad)).toBeNull();
    expect(decimalOf(-1.5e-8)).toEqual({ negative: true, digits: 15n, scale: 9 });
    expect(decimalOf(2e21)).toEqual({ negative: false, digits: 2000000000000000000000n, scale: 0 });
  });

  it('follows a number digit by digit: it ends exactly on multiples, and refuses only digits after which none can come', () => {
    for (const divisor of ['0.25', '3', '0.04', '1.5', '7', '0.001']) {
      const m = multipleOf(Number(divisor))!;
      // Every text of up to 3 integer and 4 fraction digits.
      for (let int = 0; int < 400; int += 7) {
        for (const frac of ['', '0', '5', '25', '75', '04', '333', '5000', '0040', '001', '3']) {
          const text = frac ? `${int}.${frac}` : String(int);
          const state = { r: 0, f: -1 };
          let taken = true;
          for (const b of new TextEncoder().encode(text)) taken &&= stepMultiple(m, state, b);
          // Taken whole and ended: exactly the multiples.
          expect(taken && endsMultiple(m, state), `${text} of ${divisor}`).toBe(isMultiple(text, divisor));
          // A fraction refused part way has no completion within the divisor's places (brute force over them).
          if (!taken && frac) {
            const places = m.e;
            const prefix = text;
            const completions = Array.from({ length: 10 ** Math.min(places, 4) }, (_, y) => `${prefix}${String(y).padStart(Math.min(places, 4), '0')}`);
            expect(completions.some((c) => isMultiple(c, divisor)), `${text} of ${divisor}`).toBe(false);
          }
        }
      }
    }
  });

  it('lists the multiples within bounds, exclusive ones left out, integers only when asked', () => {
    const m = multipleOf(0.25)!;
    expect(multiplesWithin(m, { v: 0.3, strict: false }, { v: 1.25, strict: false }, false, 100)).toEqual(['0.5', '0.75', '1', '1.25']);
    expect(multiplesWithin(m, { v: 0.5, strict: true }, { v: 1.25, strict: true }, false, 100)).toEqual(['0.75', '1']);
    expect(multiplesWithin(m, { v: -1, strict: false }, { v: 1, strict: false }, true, 100)).toEqual(['-1', '0', '1']);
    expect(multiplesWithin(multipleOf(0.1)!, { v: 0.25, strict: false }, { v: 0.55, strict: false }, false, 100)).toEqual(['0.3', '0.4', '0.5']);
    expect(multiplesWithin(multipleOf(3)!, { v: -7, strict: false }, { v: 0, strict: true }, false, 100)).toEqual(['-6', '-3']);
    expect(multiplesWithin(m, { v: 0, strict: false }, { v: 1000, strict: false }, false, 100)).toBeNull();
    expect(multiplesWithin(m, { v: 0.6, strict: false }, { v: 0.7, strict: false }, false, 100)).toEqual([]);
  });
});
