/**
 * The sparse axis-aligned subspace (SAAS) prior of Eriksson & Jankowiak (2021), with the priors of
 * BoTorch's SaasFullyBayesianSingleTaskGP, fitted either fully Bayesian (NUTS; the model is then an
 * equal-weight mixture over the kept draws) or by MAP (L-BFGS from several starts; the fast mode).
 *
 *   τ ~ HalfCauchy(0.1)                  global shrinkage (BoTorch's "kernel_tausq")
 *   ρ̃_d ~ HalfCauchy(1),  ρ_d = τ ρ̃_d   inverse squared length-scales, i.e. ρ_d ~ HalfCauchy(τ)
 *   s ~ Gamma(2, 0.15)                   outputscale
 *   σ² = 1e-4 + Gamma(0.9, 10)           noise variance (BoTorch's MIN_INFERRED_NOISE_LEVEL floor)
 *   c ~ Normal(0, 1)                     constant mean
 *   on standardised outcomes, inputs in the unit cube, Matérn-5/2 kernel.
 *
 * Both fits work on the unconstrained vector u = [log τ, log ρ̃_1..d, log s, log(σ² − 1e-4), c] and
 * its log density includes the log-Jacobian of the exp transforms (so MAP is the mode in u).
 */
import { SearchError } from './errors.js';
import { GpPosterior, GpTrainingData, logMarginalLikelihood, standardize, type GpHyperparameters } from './gp.js';
import { lbfgsMinimize } from './lbfgs.js';
import { DEFAULT_NUTS, runNuts, type NutsOptions, type NutsStats } from './nuts.js';
import type { Rng } from '../../util/rng.js';
import { withDefaults } from '../../util/options.js';

export const SAAS_PRIOR = {
  tauScale: 0.1,
  outputscaleConcentration: 2,
  outputscaleRate: 0.15,
  noiseConcentration: 0.9,
  noiseRate: 10,
  minNoise: 1e-4,
} as const;

const LOG_PI = Math.log(Math.PI);
const LOG_2PI = Math.log(2 * Math.PI);

/** Length of the unconstrained parameter vector for d input dimensions. */
export function saasParameterCount(d: number): number {
  return d + 4;
}

/** Maps the unconstrained vector to GP hyperparameters. */
export function saasHyperparameters(u: Float64Array, d: number): GpHyperparameters {
  const tau = Math.exp(u[0]);
  const lengthscale = new Float64Array(d);
  for (let k = 0; k < d; k++) lengthscale[k] = 1 / Math.sqrt(tau * Math.exp(u[1 + k]));
  return {
    lengthscale,
    outputscale: Math.exp(u[d + 1]),
    noise: SAAS_PRIOR.minNoise + Math.exp(u[d + 2]),
    mean: u[d + 3],
  };
}

function lgamma(x: number): number {
  // Lanczos approximation (g=7, n=9); only called with the fixed prior concentrations.
  const c = [
    0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059, 12.507343278686905,
    -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
  ];
  if (x < 0.5) return Math.log(Math.PI / Math.abs(Math.sin(Math.PI * x))) - lgamma(1 - x);
  x -= 1;
  let a = c[0];
  const t = x + 7.5;
  for (let i = 1; i < 9; i++) a += c[i] / (x + i);
  return 0.5 * LOG_2PI + (x + 0.5) * Math.log(t) - t + Math.log(a);
}

/** log HalfCauchy(e^v; scale) + v, and its derivative in v. */
function halfCauchyLog(v: number, scale: number): [number, number] {
  const z2 = Math.exp(2 * v) / (scale * scale);
  return [Math.log(2) - LOG_PI - Math.log(scale) - Math.log1p(z2) + v, 1 - (2 * z2) / (1 + z2)];
}

/** log Gamma(e^v; a, b) + v, and its derivative in v. */
function gammaLog(v: number, a: number, b: number): [number, number] {
  const x = Math.exp(v);
  return [a * Math.log(b) - lgamma(a) + a * v - b * x, a - b * x];
}

/**
 * Log posterior density of u (up to a constant) with gradient written into `grad`.
 * Throws SearchError('cholesky_failed') where the covariance cannot be factored.
 */
export function saasLogPosterior(data: GpTrainingData, u: Float64Array, grad?: Float64Array): number {
  const d = data.d;
  if (u.length !== saasParameterCount(d)) throw new SearchError('hyper_shape', `SAAS vector has ${u.length} entries, d=${d} needs ${d + 4}`, { d, length: u.length });
  const h = saasHyperparameters(u, d);
  const ml = logMarginalLikelihood(data, h, grad !== undefined);
  let lp = ml.value;
  const [lt, dlt] = halfCauchyLog(u[0], SAAS_PRIOR.tauScale);
  lp += lt;
  let gTau = dlt;
  for (let k = 0; k < d; k++) {
    const [lr, dlr] = halfCauchyLog(u[1 + k], 1);
    lp += lr;
    // log ℓ_d = −½(log τ + log ρ̃_d).
    const gl = -0.5 * ml.gradLogLengthscale[k];
    if (grad) grad[1 + k] = dlr + gl;
    gTau += gl;
  }
  const [ls, dls] = gammaLog(u[d + 1], SAAS_PRIOR.outputscaleConcentration, SAAS_PRIOR.outputscaleRate);
  lp += ls;
  const [ln, dln] = gammaLog(u[d + 2], SAAS_PRIOR.noiseConcentration, SAAS_PRIOR.noiseRate);
  lp += ln;
  const c = u[d + 3];
  lp += -0.5 * c * c - 0.5 * LOG_2PI;
  if (grad) {
    grad[0] = gTau;
    grad[d + 1] = dls + ml.gradLogOutputscale;
    // σ² = 1e-4 + e^v: ∂L/∂v = ∂L/∂log σ² · e^v / σ².
    grad[d + 2] = dln + (ml.gradLogNoise * Math.exp(u[d + 2])) / h.noise;
    grad[d + 3] = -c + ml.gradMean;
  }
  return lp;
}

export interface MapOptions {
  /** Number of L-BFGS starts (the first is a fixed, moderate point; the rest are random). */
  restarts: number;
  maxIterations: number;
}

export const DEFAULT_MAP: MapOptions = { restarts: 4, maxIterations: 200 };

export interface FitOptions {
  method: 'map' | 'nuts';
  map: Partial<MapOptions>;
  nuts: Partial<NutsOptions>;
}

export interface FitDiagnostics {
  method: 'map' | 'nuts';
  seconds: number;
  gradientEvaluations: number;
  /** Best log posterior found by MAP (also the NUTS starting point). */
  mapLogPosterior: number;
  nuts?: Omit<NutsStats, 'inverseMass'> & { draws: number };
}

/** A surrogate for one objective: an equal-weight mixture of GP posteriors (one for MAP). */
export interface ObjectiveModel {
  components: GpPosterior[];
  /** The unconstrained SAAS vectors behind each component. */
  parameters: Float64Array[];
  diagnostics: FitDiagnostics;
}

function startingPoint(d: number, rng: Rng, index: number): Float64Array {
  const u = new Float64Array(d + 4);
  if (index === 0) {
    // Moderate start: every length-scale ≈ 1 (ρ = τρ̃ = 1), unit outputscale, small noise.
    u[0] = Math.log(SAAS_PRIOR.tauScale);
    for (let k = 0; k < d; k++) u[1 + k] = Math.log(1 / SAAS_PRIOR.tauScale);
    u[d + 1] = 0;
    u[d + 2] = Math.log(0.05);
    u[d + 3] = 0;
    return u;
  }
  u[0] = Math.log(SAAS_PRIOR.tauScale) + rng.normal();
  for (let k = 0; k < d; k++) u[1 + k] = Math.log(1 / SAAS_PRIOR.tauScale) + 1.5 * rng.normal();
  u[d + 1] = 0.5 * rng.normal();
  u[d + 2] = Math.log(0.05) + rng.normal();
  u[d + 3] = 0.3 * rng.normal();
  return u;
}

function mapFit(data: GpTrainingData, rng: Rng, o: MapOptions): { u: Float64Array; value: number; evaluations: number } {
  let best: Float64Array | null = null;
  let bestValue = -Infinity;
  let evaluations = 0;
  const negLogPost = (u: Float64Array, g: Float64Array): number => {
    const v = saasLogPosterior(data, u, g);
    for (let i = 0; i < g.length; i++) g[i] = -g[i];
    return -v;
  };
  for (let r = 0; r < Math.max(1, o.restarts); r++) {
    const res = lbfgsMinimize(negLogPost, startingPoint(data.d, rng, r), { maxIterations: o.maxIterations });
    evaluations += res.evaluations;
    if (Number.isFinite(res.value) && -res.value > bestValue) {
      bestValue = -res.value;
      best = res.x;
    }
  }
  if (!best) throw new SearchError('fit_failed', `no MAP start reached a finite log posterior (n=${data.n}, d=${data.d})`, { n: data.n, d: data.d });
  return { u: best, value: bestValue, evaluations };
}

/**
 * Fits the SAAS GP to one objective. `x` is n×d in the unit cube, `y` the raw outcomes
 * (standardised here; predictions come back in raw units).
 */
export function fitSaasModel(
  x: Float64Array,
  n: number,
  d: number,
  y: ArrayLike<number>,
  rng: Rng,
  options: Partial<FitOptions> = {},
): ObjectiveModel {
  const t0 = performance.now();
  const method = options.method ?? 'map';
  const { z } = standardize(y);
  const data = new GpTrainingData(x, n, d, z);
  const mapOpts: MapOptions = withDefaults(DEFAULT_MAP, options.map);
  if (method === 'map') {
    const m = mapFit(data, rng, mapOpts);
    return {
      components: [new GpPosterior(x, n, d, y, saasHyperparameters(m.u, d))],
      parameters: [m.u],
      diagnostics: { method, seconds: (performance.now() - t0) / 1000, gradientEvaluations: m.evaluations, mapLogPosterior: m.value },
    };
  }
  // NUTS starts from a single-start MAP point: short chains then spend no warm-up walking in from the tails.
  const m = mapFit(data, rng, { ...mapOpts, restarts: 1 });
  // Dense metric by default: only τ·ρ̃_d is identified for a relevant dimension, a linear ridge in u
  // that a diagonal metric can only cross with small steps (about 30% fewer gradients measured).
  const nutsOpts: NutsOptions = withDefaults<NutsOptions>({ ...DEFAULT_NUTS, metric: 'dense' }, options.nuts);
  const res = runNuts((u, g) => saasLogPosterior(data, u, g), m.u, rng, nutsOpts);
  const draws = res.draws.length > 0 ? res.draws : [m.u];
  const components = draws.map((u) => new GpPosterior(x, n, d, y, saasHyperparameters(u, d)));
  const { inverseMass: _ignored, ...stats } = res.stats;
  return {
    components,
    parameters: draws,
    diagnostics: {
      method,
      seconds: (performance.now() - t0) / 1000,
      gradientEvaluations: m.evaluations + res.stats.gradientEvaluations,
      mapLogPosterior: m.value,
      nuts: { ...stats, draws: res.draws.length },
    },
  };
}

/** Median (over mixture components) length-scale per dimension: small means the dimension matters. */
export function medianLengthscales(model: ObjectiveModel): Float64Array {
  const d = model.components[0].d;
  const out = new Float64Array(d);
  for (let k = 0; k < d; k++) {
    const v = model.components.map((c) => c.hyper.lengthscale[k]).sort((a, b) => a - b);
    const mid = v.length >> 1;
    out[k] = v.length % 2 ? v[mid] : 0.5 * (v[mid - 1] + v[mid]);
  }
  return out;
}
