/**
 * Gaussian-process regression with a Matérn-5/2 ARD kernel (one length-scale per input dimension),
 * an outputscale, Gaussian noise and a constant mean, fitted to standardised outcomes.
 *
 *   k(x, x') = s · (1 + √5 r + 5/3 r²) · exp(−√5 r),   r² = Σ_d (x_d − x'_d)² / ℓ_d²
 *   y ~ N(c·1, K + σ²I)   (on standardised y)
 *
 * The log marginal likelihood comes with its analytic gradient with respect to log ℓ_d, log s,
 * log σ² and c: ∂L/∂θ = ½ tr((ααᵀ − K⁻¹) ∂K/∂θ), α = K⁻¹(y − c) (Rasmussen & Williams, eq. 5.9).
 */
import { SearchError } from './errors.js';
import { cholesky, cholSolve, inverseFromCholesky, logDetFromCholesky, solveLowerMatrixInPlace } from './linalg.js';

const SQRT5 = Math.sqrt(5);
const LOG_2PI = Math.log(2 * Math.PI);

/** Hyperparameters on the standardised outcome scale. */
export interface GpHyperparameters {
  /** One length-scale per input dimension (inputs live in the unit cube). */
  lengthscale: Float64Array;
  /** Kernel variance s. */
  outputscale: number;
  /** Observation noise variance σ². */
  noise: number;
  /** Constant mean c. */
  mean: number;
}

export interface Standardization {
  mean: number;
  std: number;
}

/** z = (y − mean) / std; a constant y keeps std = 1 so that the model stays well-defined. */
export function standardize(y: ArrayLike<number>): Standardization & { z: Float64Array } {
  const n = y.length;
  if (n === 0) throw new SearchError('empty_data', 'cannot standardise zero outcomes', { n });
  let mean = 0;
  for (let i = 0; i < n; i++) mean += y[i];
  mean /= n;
  let ss = 0;
  for (let i = 0; i < n; i++) ss += (y[i] - mean) ** 2;
  // Unbiased std, as BoTorch's Standardize; a single point or constant outcomes get std 1.
  let std = n > 1 ? Math.sqrt(ss / (n - 1)) : 1;
  if (!(std > 1e-12) || !Number.isFinite(std)) std = 1;
  const z = new Float64Array(n);
  for (let i = 0; i < n; i++) z[i] = (y[i] - mean) / std;
  return { mean, std, z };
}

/** Matérn-5/2 correlation as a function of the scaled squared distance r². */
export function matern52(r2: number): number {
  const r = Math.sqrt(r2);
  return (1 + SQRT5 * r + (5 / 3) * r2) * Math.exp(-SQRT5 * r);
}

/** Prior kernel matrix k(A, B) (na×nb row-major), without noise. */
export function kernelMatrix(
  lengthscale: Float64Array,
  outputscale: number,
  a: Float64Array,
  na: number,
  b: Float64Array,
  nb: number,
): Float64Array {
  const d = lengthscale.length;
  const inv2 = new Float64Array(d);
  for (let k = 0; k < d; k++) inv2[k] = 1 / (lengthscale[k] * lengthscale[k]);
  const out = new Float64Array(na * nb);
  for (let i = 0; i < na; i++) {
    const ai = i * d;
    for (let j = 0; j < nb; j++) {
      const bj = j * d;
      let r2 = 0;
      for (let k = 0; k < d; k++) {
        const t = a[ai + k] - b[bj + k];
        r2 += t * t * inv2[k];
      }
      out[i * nb + j] = outputscale * matern52(r2);
    }
  }
  return out;
}

function checkInputs(x: Float64Array, n: number, d: number, y: ArrayLike<number>): void {
  if (x.length !== n * d) throw new SearchError('data_shape', `x has ${x.length} entries, n=${n} d=${d} needs ${n * d}`, { n, d, length: x.length });
  if (y.length !== n) throw new SearchError('data_shape', `y has ${y.length} entries, expected n=${n}`, { n, length: y.length });
  for (let i = 0; i < n; i++) if (!Number.isFinite(y[i])) throw new SearchError('nonfinite_outcome', `outcome ${i} is ${y[i]}`, { index: i, value: y[i] });
}

/**
 * A training set prepared for repeated likelihood evaluations (NUTS evaluates thousands):
 * squared per-dimension differences of every pair are computed once, stored dimension-major so that
 * both the distance sum and the length-scale gradient are contiguous vector loops.
 */
export class GpTrainingData {
  /** Dimension-major squared differences: pairs[k·numPairs + p] for dimension k and pair p (i<j, row order). */
  readonly pairs: Float64Array;
  readonly numPairs: number;

  /** `y` must already be standardised (see `standardize`). */
  constructor(
    readonly x: Float64Array,
    readonly n: number,
    readonly d: number,
    readonly y: Float64Array,
  ) {
    checkInputs(x, n, d, y);
    const P = (n * (n - 1)) / 2;
    this.numPairs = P;
    this.pairs = new Float64Array(P * d);
    let p = 0;
    for (let i = 0; i < n; i++) {
      for (let j = i + 1; j < n; j++) {
        for (let k = 0; k < d; k++) {
          const t = x[i * d + k] - x[j * d + k];
          this.pairs[k * P + p] = t * t;
        }
        p++;
      }
    }
  }
}

export interface MarginalLikelihood {
  value: number;
  /** ∂L/∂log ℓ_d. */
  gradLogLengthscale: Float64Array;
  /** ∂L/∂log s. */
  gradLogOutputscale: number;
  /** ∂L/∂log σ². */
  gradLogNoise: number;
  /** ∂L/∂c. */
  gradMean: number;
}

/**
 * Log marginal likelihood log N(y | c, K + σ²I) and its gradient. Throws SearchError
 * ('cholesky_failed') when the covariance cannot be factored even with jitter.
 */
export function logMarginalLikelihood(data: GpTrainingData, h: GpHyperparameters, withGradient = true): MarginalLikelihood {
  const { n, d, pairs, y, numPairs: P } = data;
  if (h.lengthscale.length !== d) throw new SearchError('hyper_shape', `${h.lengthscale.length} length-scales for ${d} dimensions`, { d, got: h.lengthscale.length });
  const s = h.outputscale;
  const inv2 = new Float64Array(d);
  for (let k = 0; k < d; k++) inv2[k] = 1 / (h.lengthscale[k] * h.lengthscale[k]);
  const r2s = new Float64Array(P);
  for (let k = 0; k < d; k++) {
    const a = inv2[k];
    const row = k * P;
    for (let p = 0; p < P; p++) r2s[p] += a * pairs[row + p];
  }

  const K = new Float64Array(n * n);
  // Per-pair factor of ∂k/∂log ℓ_d = s·5/3·(1+√5r)·e^{−√5r} · Δ_d²/ℓ_d², kept for the gradient.
  const dfac = new Float64Array(withGradient ? P : 0);
  let p = 0;
  for (let i = 0; i < n; i++) {
    K[i * n + i] = s + h.noise;
    for (let j = i + 1; j < n; j++) {
      const r2 = r2s[p];
      const r = Math.sqrt(r2);
      const e = Math.exp(-SQRT5 * r);
      const kij = s * (1 + SQRT5 * r + (5 / 3) * r2) * e;
      K[i * n + j] = kij;
      K[j * n + i] = kij;
      if (withGradient) dfac[p] = s * (5 / 3) * (1 + SQRT5 * r) * e;
      p++;
    }
  }
  const { l } = cholesky(K, n);
  const resid = new Float64Array(n);
  for (let i = 0; i < n; i++) resid[i] = y[i] - h.mean;
  const alpha = cholSolve(l, n, resid);
  let quad = 0;
  for (let i = 0; i < n; i++) quad += resid[i] * alpha[i];
  const value = -0.5 * quad - 0.5 * logDetFromCholesky(l, n) - 0.5 * n * LOG_2PI;

  const gradLogLengthscale = new Float64Array(d);
  if (!withGradient) return { value, gradLogLengthscale, gradLogOutputscale: 0, gradLogNoise: 0, gradMean: 0 };

  const kinv = inverseFromCholesky(l, n);
  let gradMean = 0;
  let traceW = 0;
  for (let i = 0; i < n; i++) {
    gradMean += alpha[i];
    traceW += alpha[i] * alpha[i] - kinv[i * n + i];
  }
  // Off-diagonal pairs count twice in the trace (W and ∂K are symmetric), which cancels the ½.
  let offOutput = 0;
  const c = dfac; // reused in place: c_p = W_p · dfac_p
  p = 0;
  for (let i = 0; i < n; i++) {
    const ai = alpha[i];
    const ri = i * n;
    for (let j = i + 1; j < n; j++) {
      const w = ai * alpha[j] - kinv[ri + j];
      offOutput += w * K[ri + j];
      c[p] *= w;
      p++;
    }
  }
  for (let k = 0; k < d; k++) {
    const row = k * P;
    let g = 0;
    for (let q = 0; q < P; q++) g += c[q] * pairs[row + q];
    gradLogLengthscale[k] = g * inv2[k];
  }
  return {
    value,
    gradLogLengthscale,
    gradLogOutputscale: 0.5 * traceW * s + offOutput,
    gradLogNoise: 0.5 * traceW * h.noise,
    gradMean,
  };
}

export interface Projection {
  /** Posterior mean in original outcome units. */
  mean: Float64Array;
  /** V = L⁻¹ k(X, xs), n×m row-major, in standardised units: posterior cov(A,B) = std²·(k(A,B) − V_Aᵀ V_B). */
  v: Float64Array;
  /** The points, m×d row-major. */
  xs: Float64Array;
  m: number;
}

/**
 * The posterior of the latent function f given training data and fixed hyperparameters, in original
 * outcome units (standardisation undone).
 */
export class GpPosterior {
  readonly l: Float64Array;
  readonly alpha: Float64Array;
  readonly standardization: Standardization;
  /** Jitter that had to be added to K + σ²I to factor it. */
  readonly jitter: number;

  constructor(
    readonly x: Float64Array,
    readonly n: number,
    readonly d: number,
    y: ArrayLike<number>,
    readonly hyper: GpHyperparameters,
  ) {
    checkInputs(x, n, d, y);
    const st = standardize(y);
    this.standardization = { mean: st.mean, std: st.std };
    const K = kernelMatrix(hyper.lengthscale, hyper.outputscale, x, n, x, n);
    for (let i = 0; i < n; i++) K[i * n + i] += hyper.noise;
    const ch = cholesky(K, n);
    this.l = ch.l;
    this.jitter = ch.jitter;
    const resid = new Float64Array(n);
    for (let i = 0; i < n; i++) resid[i] = st.z[i] - hyper.mean;
    this.alpha = cholSolve(ch.l, n, resid);
  }

  /** Prior covariance k(A, B) in standardised units. */
  priorCovariance(a: Float64Array, na: number, b: Float64Array, nb: number): Float64Array {
    return kernelMatrix(this.hyper.lengthscale, this.hyper.outputscale, a, na, b, nb);
  }

  /** Mean and whitened cross-covariance of m points, the building block of all posterior queries. */
  project(xs: Float64Array, m: number): Projection {
    if (xs.length !== m * this.d) throw new SearchError('data_shape', `points have ${xs.length} entries, m=${m} d=${this.d} needs ${m * this.d}`, { m, d: this.d });
    const { n } = this;
    const kxs = this.priorCovariance(this.x, n, xs, m);
    const mean = new Float64Array(m);
    for (let i = 0; i < n; i++) {
      const ai = this.alpha[i];
      for (let j = 0; j < m; j++) mean[j] += kxs[i * m + j] * ai;
    }
    const { mean: mu, std } = this.standardization;
    for (let j = 0; j < m; j++) mean[j] = mu + std * (this.hyper.mean + mean[j]);
    const v = solveLowerMatrixInPlace(this.l, n, kxs, m);
    return { mean, v, xs, m };
  }

  /** Posterior covariance between two projected sets (na×nb), original units. */
  covarianceBetween(a: Projection, b: Projection): Float64Array {
    const { n } = this;
    const out = this.priorCovariance(a.xs, a.m, b.xs, b.m);
    for (let k = 0; k < n; k++) {
      const ra = k * a.m;
      const rb = k * b.m;
      for (let i = 0; i < a.m; i++) {
        const vai = a.v[ra + i];
        if (vai === 0) continue;
        const oi = i * b.m;
        for (let j = 0; j < b.m; j++) out[oi + j] -= vai * b.v[rb + j];
      }
    }
    const s2 = this.standardization.std ** 2;
    for (let i = 0; i < out.length; i++) out[i] *= s2;
    return out;
  }

  /** Posterior variances (diagonal only) of a projected set, original units, clamped at 0. */
  varianceOf(p: Projection): Float64Array {
    const { n } = this;
    const out = new Float64Array(p.m);
    for (let j = 0; j < p.m; j++) {
      let q = 0;
      for (let k = 0; k < n; k++) {
        const t = p.v[k * p.m + j];
        q += t * t;
      }
      out[j] = Math.max(0, this.hyper.outputscale - q) * this.standardization.std ** 2;
    }
    return out;
  }

  /** Posterior mean and variance of f at m points (original units). */
  predict(xs: Float64Array, m: number): { mean: Float64Array; variance: Float64Array } {
    const p = this.project(xs, m);
    return { mean: p.mean, variance: this.varianceOf(p) };
  }

  /** Posterior mean and joint covariance (m×m) of f at m points (original units). */
  joint(xs: Float64Array, m: number): { mean: Float64Array; covariance: Float64Array } {
    const p = this.project(xs, m);
    return { mean: p.mean, covariance: this.covarianceBetween(p, p) };
  }
}
