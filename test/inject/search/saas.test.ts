import { describe, expect, it } from 'vitest';
import { GpTrainingData, logMarginalLikelihood, standardize } from '../../../src/inject/search/gp.js';
import { Rng } from '../../../src/util/rng.js';
import { fitSaasModel, medianLengthscales, saasHyperparameters, saasLogPosterior } from '../../../src/inject/search/saas.js';

function dataset(n: number, d: number, seed: number, f: (x: Float64Array, i: number) => number) {
  const rng = new Rng(seed);
  const x = Float64Array.from({ length: n * d }, () => rng.uniform());
  const y = Float64Array.from({ length: n }, (_, i) => f(x, i) + 0.02 * rng.normal());
  return { x, y };
}

describe('SAAS log posterior', () => {
  const d = 3;
  const n = 8;
  const { x, y } = dataset(n, d, 1, (x, i) => Math.cos(4 * x[i * d + 1]));
  const data = new GpTrainingData(x, n, d, standardize(y).z);
  const u = Float64Array.from([Math.log(0.2), 0.3, -1.2, 0.8, Math.log(1.4), Math.log(0.02), 0.1]);

  it('equals the marginal likelihood plus the BoTorch priors and log-Jacobians, written out by hand', () => {
    const h = saasHyperparameters(u, d);
    expect(h.lengthscale[1]).toBeCloseTo(1 / Math.sqrt(0.2 * Math.exp(-1.2)), 12);
    expect(h.noise).toBeCloseTo(1e-4 + 0.02, 15);
    const halfCauchy = (v: number, scale: number) => Math.log(2 / (Math.PI * scale)) - Math.log(1 + (Math.exp(v) / scale) ** 2) + v;
    // Γ(2) = 1, log Γ(0.9) = 0.0663762397347431.
    const gamma = (v: number, a: number, b: number, lgammaA: number) => a * Math.log(b) - lgammaA + (a - 1) * v - b * Math.exp(v) + v;
    const expected =
      logMarginalLikelihood(data, h, false).value +
      halfCauchy(u[0], 0.1) +
      halfCauchy(u[1], 1) +
      halfCauchy(u[2], 1) +
      halfCauchy(u[3], 1) +
      gamma(u[4], 2, 0.15, 0) +
      gamma(u[5], 0.9, 10, 0.0663762397347431) -
      0.5 * u[6] ** 2 -
      0.5 * Math.log(2 * Math.PI);
    expect(saasLogPosterior(data, u)).toBeCloseTo(expected, 10);
  });

  it('has an analytic gradient that matches central finite differences', () => {
    const g = new Float64Array(u.length);
    saasLogPosterior(data, u, g);
    const eps = 1e-5;
    for (let i = 0; i < u.length; i++) {
      const up = u.slice();
      const dn = u.slice();
      up[i] += eps;
      dn[i] -= eps;
      const fd = (saasLogPosterior(data, up) - saasLogPosterior(data, dn)) / (2 * eps);
      expect(g[i]).toBeCloseTo(fd, 5);
    }
  });
});

describe('SAAS fits find the relevant dimensions', () => {
  // Five inputs, only dimension 2 matters.
  const n = 24;
  const d = 5;
  const { x, y } = dataset(n, d, 7, (x, i) => Math.sin(5 * x[i * d + 2]));

  it('MAP: the relevant length-scale is far shorter than every other', () => {
    const m = fitSaasModel(x, n, d, y, new Rng(1), { method: 'map' });
    expect(m.components).toHaveLength(1);
    const ls = medianLengthscales(m);
    for (let k = 0; k < d; k++) if (k !== 2) expect(ls[k]).toBeGreaterThan(4 * ls[2]);
    // The fit interpolates its (nearly noiseless) data.
    const p = m.components[0].predict(x, n);
    for (let i = 0; i < n; i++) expect(Math.abs(p.mean[i] - y[i])).toBeLessThan(0.1);
  });

  it('NUTS: a mixture of kept draws that agrees, with held-out predictions close to the truth', () => {
    const m = fitSaasModel(x, n, d, y, new Rng(2), { method: 'nuts', nuts: { warmup: 64, samples: 64, thinning: 8 } });
    expect(m.components).toHaveLength(8);
    expect(m.diagnostics.nuts?.draws).toBe(8);
    const ls = medianLengthscales(m);
    for (let k = 0; k < d; k++) if (k !== 2) expect(ls[k]).toBeGreaterThan(4 * ls[2]);
    const rng = new Rng(99);
    const xt = Float64Array.from({ length: 10 * d }, () => rng.uniform());
    let err = 0;
    for (const c of m.components) {
      const p = c.predict(xt, 10);
      for (let i = 0; i < 10; i++) err += Math.abs(p.mean[i] - Math.sin(5 * xt[i * d + 2])) / (10 * m.components.length);
    }
    expect(err).toBeLessThan(0.15);
  });
});
