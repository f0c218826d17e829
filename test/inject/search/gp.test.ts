import { describe, expect, it } from 'vitest';
import { GpPosterior, GpTrainingData, logMarginalLikelihood, standardize, type GpHyperparameters } from '../../../src/inject/search/gp.js';
import { Rng } from '../../../src/util/rng.js';

/** Matérn-5/2 written out independently of the module under test. */
function maternByHand(x: number[], y: number[], ls: number[], s: number): number {
  const r = Math.sqrt(x.reduce((acc, xi, i) => acc + ((xi - y[i]) / ls[i]) ** 2, 0));
  return s * (1 + Math.sqrt(5) * r + (5 * r * r) / 3) * Math.exp(-Math.sqrt(5) * r);
}

const hyper = (ls: number[], outputscale: number, noise: number, mean: number): GpHyperparameters => ({
  lengthscale: Float64Array.from(ls),
  outputscale,
  noise,
  mean,
});

describe('GP posterior vs closed form', () => {
  it('one training point: mean and variance by hand', () => {
    // With one point the outcome standardises to z = 0 with std 1.
    const x1 = [0.2, 0.7];
    const y1 = 3.5;
    const h = hyper([0.5, 2], 1.7, 0.1, 0.3);
    const gp = new GpPosterior(Float64Array.from(x1), 1, 2, [y1], h);
    const xs = [0.6, 0.1];
    const k = maternByHand(xs, x1, [0.5, 2], 1.7);
    const denom = 1.7 + 0.1;
    const meanZ = 0.3 + (k / denom) * (0 - 0.3);
    const varZ = 1.7 - (k * k) / denom;
    const p = gp.predict(Float64Array.from(xs), 1);
    expect(p.mean[0]).toBeCloseTo(y1 + meanZ, 12);
    expect(p.variance[0]).toBeCloseTo(varZ, 12);
  });

  it('two training points: mean, variance and joint covariance by hand (2×2 inverse)', () => {
    const X = [
      [0.1, 0.9, 0.5],
      [0.8, 0.3, 0.4],
    ];
    const y = [2.0, -1.0];
    const ls = [0.7, 0.4, 1.3];
    const s = 0.9;
    const noise = 0.05;
    const c = -0.2;
    const gp = new GpPosterior(Float64Array.from(X.flat()), 2, 3, y, hyper(ls, s, noise, c));
    // Standardisation with the unbiased std.
    const ybar = 0.5;
    const sd = Math.abs(y[0] - y[1]) / Math.SQRT2;
    const z = y.map((v) => (v - ybar) / sd);
    const a = s + noise;
    const k12 = maternByHand(X[0], X[1], ls, s);
    const det = a * a - k12 * k12;
    const Kinv = [
      [a / det, -k12 / det],
      [-k12 / det, a / det],
    ];
    const pts = [
      [0.5, 0.5, 0.5],
      [0.15, 0.85, 0.5],
    ];
    const kstar = pts.map((p) => X.map((xi) => maternByHand(p, xi, ls, s)));
    const resid = z.map((zi) => zi - c);
    const w = [Kinv[0][0] * resid[0] + Kinv[0][1] * resid[1], Kinv[1][0] * resid[0] + Kinv[1][1] * resid[1]];
    const quad = (u: number[], v: number[]) =>
      u[0] * (Kinv[0][0] * v[0] + Kinv[0][1] * v[1]) + u[1] * (Kinv[1][0] * v[0] + Kinv[1][1] * v[1]);
    const joint = gp.joint(Float64Array.from(pts.flat()), 2);
    for (let i = 0; i < 2; i++) {
      const m = c + kstar[i][0] * w[0] + kstar[i][1] * w[1];
      expect(joint.mean[i]).toBeCloseTo(ybar + sd * m, 11);
      for (let j = 0; j < 2; j++) {
        const cov = maternByHand(pts[i], pts[j], ls, s) - quad(kstar[i], kstar[j]);
        expect(joint.covariance[i * 2 + j]).toBeCloseTo(sd * sd * cov, 11);
      }
    }
    const marg = gp.predict(Float64Array.from(pts.flat()), 2);
    expect(marg.variance[1]).toBeCloseTo(joint.covariance[3], 12);
    // Near a training point with small noise the variance collapses.
    expect(marg.variance[1]).toBeLessThan(marg.variance[0]);
  });

  it('log marginal likelihood matches the bivariate normal density by hand', () => {
    const X = [0.2, 0.4, 0.9, 0.1];
    const z = Float64Array.from([0.7, -0.7]);
    const ls = [0.3, 0.8];
    const h = hyper(ls, 1.3, 0.2, 0.1);
    const data = new GpTrainingData(Float64Array.from(X), 2, 2, z);
    const a = 1.3 + 0.2;
    const k12 = maternByHand([0.2, 0.4], [0.9, 0.1], ls, 1.3);
    const det = a * a - k12 * k12;
    const r = [0.6, -0.8];
    const quad = (a * r[0] * r[0] - 2 * k12 * r[0] * r[1] + a * r[1] * r[1]) / det;
    const expected = -0.5 * quad - 0.5 * Math.log(det) - Math.log(2 * Math.PI);
    expect(logMarginalLikelihood(data, h, false).value).toBeCloseTo(expected, 12);
  });
});

describe('marginal likelihood gradient', () => {
  it('matches central finite differences in every log-hyperparameter and the mean', () => {
    const rng = new Rng(3);
    const n = 9;
    const d = 4;
    const x = Float64Array.from({ length: n * d }, () => rng.uniform());
    const y = Float64Array.from({ length: n }, (_, i) => Math.sin(3 * x[i * d]) + 0.3 * x[i * d + 2] + 0.1 * rng.normal());
    const data = new GpTrainingData(x, n, d, standardize(y).z);
    const logLs = [Math.log(0.4), Math.log(1.1), Math.log(0.25), Math.log(2.0)];
    const logS = Math.log(0.8);
    const logNoise = Math.log(0.03);
    const mean = 0.15;
    const make = (ll: number[], ls: number, ln: number, c: number) => hyper(ll.map(Math.exp), Math.exp(ls), Math.exp(ln), c);
    const f = (ll: number[], ls: number, ln: number, c: number) => logMarginalLikelihood(data, make(ll, ls, ln, c), false).value;
    const g = logMarginalLikelihood(data, make(logLs, logS, logNoise, mean));
    const eps = 1e-5;
    for (let k = 0; k < d; k++) {
      const up = logLs.slice();
      const dn = logLs.slice();
      up[k] += eps;
      dn[k] -= eps;
      const fd = (f(up, logS, logNoise, mean) - f(dn, logS, logNoise, mean)) / (2 * eps);
      expect(g.gradLogLengthscale[k]).toBeCloseTo(fd, 5);
    }
    expect(g.gradLogOutputscale).toBeCloseTo((f(logLs, logS + eps, logNoise, mean) - f(logLs, logS - eps, logNoise, mean)) / (2 * eps), 5);
    expect(g.gradLogNoise).toBeCloseTo((f(logLs, logS, logNoise + eps, mean) - f(logLs, logS, logNoise - eps, mean)) / (2 * eps), 5);
    expect(g.gradMean).toBeCloseTo((f(logLs, logS, logNoise, mean + eps) - f(logLs, logS, logNoise, mean - eps)) / (2 * eps), 5);
    // The gradient is not trivially zero.
    expect(Math.max(...Array.from(g.gradLogLengthscale).map(Math.abs))).toBeGreaterThan(1e-3);
  });
});

describe('standardize', () => {
  it('uses the unbiased standard deviation and keeps std 1 for constant outcomes', () => {
    const s = standardize([1, 2, 3, 4]);
    expect(s.mean).toBe(2.5);
    expect(s.std).toBeCloseTo(Math.sqrt(5 / 3), 14);
    expect(standardize([2, 2, 2]).std).toBe(1);
  });
  it('rejects non-finite outcomes with a code', () => {
    expect(() => new GpTrainingData(new Float64Array(2), 2, 1, Float64Array.from([0, NaN]))).toThrow(/outcome 1 is NaN/);
  });
});
