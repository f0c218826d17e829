import { describe, expect, it } from 'vitest';
import { massAdaptationWindows, runNuts, type LogDensity } from '../../../src/inject/search/nuts.js';
import { Rng } from '../../../src/util/rng.js';

function moments(draws: Float64Array[], dim: number) {
  const n = draws.length;
  const mean = new Array(dim).fill(0);
  for (const d of draws) for (let i = 0; i < dim; i++) mean[i] += d[i] / n;
  const cov = Array.from({ length: dim }, () => new Array(dim).fill(0));
  for (const d of draws) for (let i = 0; i < dim; i++) for (let j = 0; j < dim; j++) cov[i][j] += ((d[i] - mean[i]) * (d[j] - mean[j])) / (n - 1);
  return { mean, cov };
}

describe('NUTS', () => {
  it('recovers the mean and covariance of a correlated 2-D Gaussian within 5%', () => {
    const mu = [3, -2];
    const sd = [1, 2];
    const rho = 0.8;
    const c = [
      [sd[0] ** 2, rho * sd[0] * sd[1]],
      [rho * sd[0] * sd[1], sd[1] ** 2],
    ];
    const det = c[0][0] * c[1][1] - c[0][1] ** 2;
    const p = [
      [c[1][1] / det, -c[0][1] / det],
      [-c[0][1] / det, c[0][0] / det],
    ];
    const logp: LogDensity = (q, g) => {
      const a = q[0] - mu[0];
      const b = q[1] - mu[1];
      g[0] = -(p[0][0] * a + p[0][1] * b);
      g[1] = -(p[1][0] * a + p[1][1] * b);
      return -0.5 * (a * (p[0][0] * a + p[0][1] * b) + b * (p[1][0] * a + p[1][1] * b));
    };
    const res = runNuts(logp, Float64Array.from([0, 0]), new Rng(11), { warmup: 500, samples: 30000, thinning: 1, maxTreeDepth: 8 });
    const m = moments(res.draws, 2);
    // Means within 5% of the marginal standard deviation; variances within 5% relative.
    expect(Math.abs(m.mean[0] - mu[0])).toBeLessThan(0.05 * sd[0]);
    expect(Math.abs(m.mean[1] - mu[1])).toBeLessThan(0.05 * sd[1]);
    expect(Math.abs(m.cov[0][0] / c[0][0] - 1)).toBeLessThan(0.05);
    expect(Math.abs(m.cov[1][1] / c[1][1] - 1)).toBeLessThan(0.05);
    expect(Math.abs(m.cov[0][1] / c[0][1] - 1)).toBeLessThan(0.05);
    expect(res.stats.divergences).toBe(0);
    // Dual averaging lands near its target.
    expect(res.stats.meanAcceptStat).toBeGreaterThan(0.65);
    // The adapted inverse mass approximates the marginal variances (1 and 4).
    expect(res.stats.inverseMass[1] / res.stats.inverseMass[0]).toBeGreaterThan(2);
  });

  it('samples a banana-shaped target with known moments', () => {
    // x1 ~ N(0,1), x2 | x1 ~ N(b(x1² − 1), s²): E x2 = 0, Var x2 = s² + 2b².
    // Mild curvature: a stronger banana makes the tails diverge with any single step size.
    const b = 0.5;
    const s = 1;
    const logp: LogDensity = (q, g) => {
      const r = q[1] - b * (q[0] * q[0] - 1);
      g[0] = -q[0] + (r / (s * s)) * 2 * b * q[0];
      g[1] = -r / (s * s);
      return -0.5 * q[0] * q[0] - (0.5 * r * r) / (s * s);
    };
    const res = runNuts(logp, Float64Array.from([0.5, 0.5]), new Rng(5), { warmup: 500, samples: 12000, thinning: 1, maxTreeDepth: 8 });
    const m = moments(res.draws, 2);
    expect(Math.abs(m.mean[0])).toBeLessThan(0.1);
    expect(Math.abs(m.mean[1])).toBeLessThan(0.1);
    expect(res.stats.divergences).toBeLessThan(0.01 * 12000);
    expect(Math.abs(m.cov[0][0] - 1)).toBeLessThan(0.1);
    expect(Math.abs(m.cov[1][1] - (s * s + 2 * b * b)) / (s * s + 2 * b * b)).toBeLessThan(0.1);
  });

  it('keeps samples/thinning draws and is reproducible from its seed', () => {
    const logp: LogDensity = (q, g) => {
      g[0] = -q[0];
      return -0.5 * q[0] * q[0];
    };
    const a = runNuts(logp, Float64Array.from([1]), new Rng(9), { warmup: 40, samples: 64, thinning: 16 });
    const b = runNuts(logp, Float64Array.from([1]), new Rng(9), { warmup: 40, samples: 64, thinning: 16 });
    expect(a.draws).toHaveLength(4);
    expect(a.draws.map((d) => d[0])).toEqual(b.draws.map((d) => d[0]));
  });

  it('treats a throwing or infinite density as outside the support', () => {
    // Half-normal on x > 0, written as a density that throws for x ≤ 0.
    const logp: LogDensity = (q, g) => {
      if (q[0] <= 0) throw new Error('outside');
      g[0] = -q[0];
      return -0.5 * q[0] * q[0];
    };
    const res = runNuts(logp, Float64Array.from([1]), new Rng(2), { warmup: 200, samples: 3000, thinning: 1 });
    expect(res.draws.every((d) => d[0] > 0)).toBe(true);
    const mean = res.draws.reduce((s, d) => s + d[0], 0) / res.draws.length;
    expect(mean).toBeGreaterThan(0.7);
    expect(mean).toBeLessThan(0.9); // √(2/π) ≈ 0.798
  });

  it("uses Stan's warm-up windows", () => {
    // 1000 warm-up: 75 initial, windows 25, 50, 100, 200, 500 (last stretched), 50 terminal.
    expect(massAdaptationWindows(1000)).toEqual([
      [75, 100],
      [100, 150],
      [150, 250],
      [250, 450],
      [450, 950],
    ]);
    const short = massAdaptationWindows(64);
    expect(short[0][0]).toBe(9);
    expect(short[short.length - 1][1]).toBe(64 - 6);
    expect(massAdaptationWindows(10)).toEqual([]);
  });
});

describe('NUTS with a dense metric', () => {
  it('recovers a strongly correlated Gaussian and learns the covariance as its metric', () => {
    const rho = 0.95;
    const sd = [1, 3];
    const c01 = rho * sd[0] * sd[1];
    const det = sd[0] ** 2 * sd[1] ** 2 - c01 ** 2;
    const p = [sd[1] ** 2 / det, -c01 / det, sd[0] ** 2 / det];
    const logp: LogDensity = (q, g) => {
      g[0] = -(p[0] * q[0] + p[1] * q[1]);
      g[1] = -(p[1] * q[0] + p[2] * q[1]);
      return -0.5 * (q[0] * (p[0] * q[0] + p[1] * q[1]) + q[1] * (p[1] * q[0] + p[2] * q[1]));
    };
    const res = runNuts(logp, Float64Array.from([1, 1]), new Rng(4), { warmup: 600, samples: 30000, thinning: 1, metric: 'dense' });
    const m = moments(res.draws, 2);
    expect(Math.abs(m.mean[0])).toBeLessThan(0.05 * sd[0]);
    expect(Math.abs(m.mean[1])).toBeLessThan(0.05 * sd[1]);
    expect(Math.abs(m.cov[0][0] / sd[0] ** 2 - 1)).toBeLessThan(0.05);
    expect(Math.abs(m.cov[1][1] / sd[1] ** 2 - 1)).toBeLessThan(0.05);
    expect(Math.abs(m.cov[0][1] / c01 - 1)).toBeLessThan(0.05);
    // The adapted inverse metric is close to the target covariance, so trees stay shallow.
    expect(res.stats.inverseMass).toHaveLength(4);
    expect(res.stats.inverseMass[1] / Math.sqrt(res.stats.inverseMass[0] * res.stats.inverseMass[3])).toBeGreaterThan(0.85);
    expect(res.stats.meanTreeDepth).toBeLessThan(3);
  });
});
