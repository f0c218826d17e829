import { describe, expect, it } from 'vitest';
import { GpPosterior } from '../../../src/inject/search/gp.js';
import { Nehvi, paretoProbabilities } from '../../../src/inject/search/nehvi.js';
import { Rng } from '../../../src/util/rng.js';
import { fitSaasModel, type ObjectiveModel } from '../../../src/inject/search/saas.js';

function fixedModel(x: number[][], y: number[], ls: number[], outputscale: number, noise: number, mean: number): ObjectiveModel {
  const d = x[0].length;
  const gp = new GpPosterior(Float64Array.from(x.flat()), x.length, d, y, { lengthscale: Float64Array.from(ls), outputscale, noise, mean });
  return { components: [gp], parameters: [], diagnostics: { method: 'map', seconds: 0, gradientEvaluations: 0, mapLogPosterior: 0 } };
}

const Phi = (z: number) => 0.5 * (1 + erf(z / Math.SQRT2));
const phi = (z: number) => Math.exp(-0.5 * z * z) / Math.sqrt(2 * Math.PI);
function erf(x: number): number {
  // Numerical Recipes' Chebyshev fit of erfc (fractional error below 1.2e-7).
  const t = 1 / (1 + 0.5 * Math.abs(x));
  const y =
    1 -
    t *
      Math.exp(
        -x * x -
          1.26551223 +
          t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
      );
  return x >= 0 ? y : -y;
}

/** E[(r − X)+] for X ~ N(μ, σ²). */
const ePos = (r: number, mu: number, s: number) => (r - mu) * Phi((r - mu) / s) + s * phi((r - mu) / s);
/** E[(r − max(X, b))+] for X ~ N(μ, σ²), b < r. */
function eClip(r: number, b: number, mu: number, s: number): number {
  const zr = (r - mu) / s;
  const zb = (b - mu) / s;
  return (r - mu) * (Phi(zr) - Phi(zb)) - s * (phi(zb) - phi(zr)) + (r - b) * Phi(zb);
}

describe('NEHVI', () => {
  it('matches the closed-form expected improvement over a known one-point front', () => {
    // One observed point B at the origin, observed almost noise-free; the candidate is far away
    // (length-scale 0.01), so its objectives are independent normals N(y + c, s).
    const B = [[0, 0]];
    const m0 = fixedModel(B, [1.0], [0.01, 0.01], 0.09, 1e-8, -0.2);
    const m1 = fixedModel(B, [2.0], [0.01, 0.01], 0.16, 1e-8, 0.1);
    const ref: [number, number] = [1.5, 2.6];
    const acq = new Nehvi([m0, m1], Float64Array.from(B.flat()), 1, 2, new Float64Array(0), 0, ref, new Rng(1), { mcSamples: 40000 });
    const v = acq.evaluate(Float64Array.from([1, 1]), 1)[0];
    const [mu0, s0, b0] = [0.8, 0.3, 1.0];
    const [mu1, s1, b1] = [2.1, 0.4, 2.0];
    const expected = ePos(ref[0], mu0, s0) * ePos(ref[1], mu1, s1) - eClip(ref[0], b0, mu0, s0) * eClip(ref[1], b1, mu1, s1);
    expect(expected).toBeGreaterThan(0.05);
    expect(Math.abs(v - expected) / expected).toBeLessThan(0.03);
  });

  it('ranks an obviously dominating candidate first', () => {
    // Two objectives over [0,1]²: x0 trades them off, x1 only hurts both.
    const f = (x: number[]) => [x[0] + 0.8 * x[1], 1 - x[0] + 0.8 * x[1]];
    const rng = new Rng(3);
    const X: number[][] = [];
    for (let i = 0; i < 12; i++) X.push([rng.uniform(), 0.4 + 0.6 * rng.uniform()]);
    const flat = Float64Array.from(X.flat());
    const models = [0, 1].map((k) => fitSaasModel(flat, X.length, 2, X.map((x) => f(x)[k] + 0.01 * rng.normal()), new Rng(k), { method: 'map' })) as [ObjectiveModel, ObjectiveModel];
    const ys = X.map(f);
    const ref: [number, number] = [Math.max(...ys.map((y) => y[0])) + 0.1, Math.max(...ys.map((y) => y[1])) + 0.1];
    const acq = new Nehvi(models, flat, X.length, 2, new Float64Array(0), 0, ref, new Rng(5));
    // Candidates: copies of observed points shifted to worse x1, and one at x1 = 0.1 in the middle.
    const cands = [...X.slice(0, 6).map((x) => [x[0], Math.min(1, x[1] + 0.2)]), [0.5, 0.1]];
    const v = acq.evaluate(Float64Array.from(cands.flat()), cands.length);
    const best = Array.from(v).indexOf(Math.max(...v));
    expect(best).toBe(cands.length - 1);
    expect(v[best]).toBeGreaterThan(5 * Math.max(...Array.from(v).slice(0, -1)));
  });

  it('values a pending point at about zero once it is in the baseline (greedy batches)', () => {
    const B = [[0, 0]];
    const m0 = fixedModel(B, [1.0], [0.3, 0.3], 0.09, 1e-6, -0.2);
    const m1 = fixedModel(B, [2.0], [0.3, 0.3], 0.16, 1e-6, 0.1);
    const ref: [number, number] = [1.5, 2.6];
    const x = Float64Array.from([0.7, 0.9]);
    const alone = new Nehvi([m0, m1], Float64Array.from(B.flat()), 1, 2, new Float64Array(0), 0, ref, new Rng(2)).evaluate(x, 1)[0];
    const withPending = new Nehvi([m0, m1], Float64Array.from(B.flat()), 1, 2, x, 1, ref, new Rng(2)).evaluate(x, 1)[0];
    expect(alone).toBeGreaterThan(0.01);
    expect(withPending).toBeLessThan(1e-3 * alone);
  });

  it('prunes observed points that are never Pareto-optimal', () => {
    // Point 2 is far worse in both objectives with a tiny noise: it never makes a sampled front.
    const X = [[0.1, 0.5], [0.9, 0.5], [0.5, 0.5]];
    const m0 = fixedModel(X, [0, 1, 5], [0.2, 1], 1, 1e-4, 0);
    const m1 = fixedModel(X, [1, 0, 5], [0.2, 1], 1, 1e-4, 0);
    const p = paretoProbabilities([m0, m1], Float64Array.from(X.flat()), 3, 2, 256, new Rng(1));
    expect(p[0]).toBe(1);
    expect(p[1]).toBe(1);
    expect(p[2]).toBe(0);
    const acq = new Nehvi([m0, m1], Float64Array.from(X.flat()), 3, 2, new Float64Array(0), 0, [10, 10], new Rng(1));
    expect(acq.baselineIndices).toEqual([0, 1]);
  });
});
