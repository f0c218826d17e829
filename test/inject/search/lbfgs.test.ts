import { describe, expect, it } from 'vitest';
import { lbfgsMinimize } from '../../../src/inject/search/lbfgs.js';

describe('L-BFGS', () => {
  it('finds the minimum of the Rosenbrock function', () => {
    const res = lbfgsMinimize(
      (x, g) => {
        const [a, b] = [x[0], x[1]];
        g[0] = -2 * (1 - a) - 400 * a * (b - a * a);
        g[1] = 200 * (b - a * a);
        return (1 - a) ** 2 + 100 * (b - a * a) ** 2;
      },
      Float64Array.from([-1.2, 1]),
      { maxIterations: 500 },
    );
    expect(res.converged).toBe(true);
    expect(res.x[0]).toBeCloseTo(1, 4);
    expect(res.x[1]).toBeCloseTo(1, 4);
    expect(res.evaluations).toBeLessThan(200);
  });

  it('solves an ill-conditioned quadratic in few iterations', () => {
    const h = [1, 10, 100, 1000];
    const res = lbfgsMinimize(
      (x, g) => {
        let f = 0;
        for (let i = 0; i < 4; i++) {
          g[i] = h[i] * (x[i] - i);
          f += 0.5 * h[i] * (x[i] - i) ** 2;
        }
        return f;
      },
      new Float64Array(4),
    );
    for (let i = 0; i < 4; i++) expect(res.x[i]).toBeCloseTo(i, 4);
    expect(res.iterations).toBeLessThan(40);
  });

  it('backs off from points where the objective is undefined', () => {
    // f = x − log x on x > 0 (minimum at 1); NaN and throws outside the domain.
    const res = lbfgsMinimize(
      (x, g) => {
        if (x[0] <= 0) throw new Error('outside the domain');
        g[0] = 1 - 1 / x[0];
        return x[0] - Math.log(x[0]);
      },
      Float64Array.from([5]),
    );
    expect(res.x[0]).toBeCloseTo(1, 4);
    const bad = lbfgsMinimize(() => NaN, Float64Array.from([0]));
    expect(bad.value).toBe(Infinity);
    expect(bad.converged).toBe(false);
  });
});
