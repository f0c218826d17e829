/**
 * Noisy expected hypervolume improvement (qNEHVI, Daulton, Balandat & Bakshy 2021) for two objectives,
 * both in minimisation form (memlora: [validation loss, −ROUGE-L]).
 *
 *   NEHVI(x) = E_f [ HV(front(f(B) ∪ f(x))) − HV(front(f(B))) ]
 *
 * where B is the baseline (observed points that have a chance of being Pareto-optimal, plus the points
 * already chosen for this batch) and f is drawn jointly at B and x from the GP posterior. Because the
 * current front is itself a posterior draw rather than the noisy observations, noise does not make
 * lucky observations look unbeatable. Batches (q > 1) are built by sequential greedy selection: the
 * points chosen so far join B as pending points, as BoTorch does with X_pending.
 *
 * Monte-Carlo: S fixed base samples (common random numbers across candidates); sample s uses mixture
 * component s mod M of each objective's model. Joint draws at (B, x) reuse the draws at B:
 *   f_s(B) = μ_B + L_BB z_s,  f_s(x) = μ_x + wᵀ z_s + √(σ²_x − wᵀw) ε_s,  w = L_BB⁻¹ Σ_Bx.
 */
import { cholesky, lowerTimesVector, solveLowerMatrixInPlace } from './linalg.js';
import { hypervolumeImprovement2d, sortedFront, type SortedFront } from './hypervolume.js';
import { paretoMask2d } from './pareto.js';
import type { GpPosterior, Projection } from './gp.js';
import type { Rng } from '../../util/rng.js';
import type { ObjectiveModel } from './saas.js';
import { withDefaults } from '../../util/options.js';

export interface NehviOptions {
  /** Monte-Carlo samples of the acquisition (BoTorch's default is 128). */
  mcSamples: number;
  /** Samples used to decide which observed points may be Pareto-optimal. */
  pruneSamples: number;
  /** Keep at most this many observed points in the baseline (most likely Pareto-optimal first). */
  maxBaseline: number;
}

export const DEFAULT_NEHVI: NehviOptions = { mcSamples: 128, pruneSamples: 128, maxBaseline: 64 };

/** Flat row-major subset of the rows `idx` of an n×d matrix. */
function rows(x: Float64Array, d: number, idx: readonly number[]): Float64Array {
  const out = new Float64Array(idx.length * d);
  idx.forEach((i, k) => out.set(x.subarray(i * d, (i + 1) * d), k * d));
  return out;
}

/** Joint draws of f at m points for each sample, from one GP component. */
function jointDraws(gp: GpPosterior, proj: Projection, zs: Float64Array[]): Float64Array[] {
  const m = proj.m;
  const cov = gp.covarianceBetween(proj, proj);
  const { l } = cholesky(cov, m, { initialJitter: 1e-8 });
  return zs.map((z) => {
    const f = lowerTimesVector(l, m, z);
    for (let i = 0; i < m; i++) f[i] += proj.mean[i];
    return f;
  });
}

/**
 * Probability, per observed point, of lying on the Pareto front of a joint posterior draw
 * (BoTorch's prune_inferior_points_multi_objective).
 */
export function paretoProbabilities(models: readonly [ObjectiveModel, ObjectiveModel], x: Float64Array, n: number, d: number, samples: number, rng: Rng): Float64Array {
  const counts = new Float64Array(n);
  if (n === 0) return counts;
  const draws: Float64Array[][] = [[], []];
  for (let k = 0; k < 2; k++) {
    const comps = models[k].components;
    const per: number[][] = comps.map(() => []);
    for (let s = 0; s < samples; s++) per[s % comps.length].push(s);
    const out = new Array<Float64Array>(samples);
    comps.forEach((gp, c) => {
      if (per[c].length === 0) return;
      const proj = gp.project(x, n);
      const zs = per[c].map(() => rng.normals(new Float64Array(n)));
      jointDraws(gp, proj, zs).forEach((f, j) => (out[per[c][j]] = f));
    });
    draws[k] = out;
  }
  const mask = new Uint8Array(n);
  for (let s = 0; s < samples; s++) {
    paretoMask2d(draws[0][s], draws[1][s], n, mask);
    for (let i = 0; i < n; i++) counts[i] += mask[i];
  }
  for (let i = 0; i < n; i++) counts[i] /= samples;
  return counts;
}

interface ComponentState {
  gp: GpPosterior;
  proj: Projection;
  /** Cholesky factor of the posterior covariance at the baseline. */
  lBB: Float64Array;
  /** Sample indices that use this component. */
  samples: number[];
}

export class Nehvi {
  readonly mcSamples: number;
  /** Indices of the observed points kept in the baseline. */
  readonly baselineIndices: number[];
  private readonly nb: number;
  private readonly states: ComponentState[][];
  /** Base samples per objective: z[k][s] (length nb) and ε[k][s]. */
  private readonly z: Float64Array[][];
  private readonly eps: Float64Array[];
  private readonly fronts: SortedFront[];

  /**
   * @param models one model per objective, minimisation form
   * @param observed n×d encoded observed points (the models' training inputs)
   * @param pending p×d points already chosen for this batch (may be empty)
   * @param ref reference point in minimisation form
   */
  constructor(
    readonly models: readonly [ObjectiveModel, ObjectiveModel],
    observed: Float64Array,
    n: number,
    readonly d: number,
    pending: Float64Array,
    p: number,
    readonly ref: readonly [number, number],
    rng: Rng,
    options: Partial<NehviOptions> = {},
  ) {
    const o = withDefaults(DEFAULT_NEHVI, options);
    this.mcSamples = o.mcSamples;
    const probs = paretoProbabilities(models, observed, n, d, o.pruneSamples, rng);
    const keep = Array.from({ length: n }, (_, i) => i)
      .filter((i) => probs[i] > 0)
      .sort((a, b) => probs[b] - probs[a] || a - b)
      .slice(0, o.maxBaseline)
      .sort((a, b) => a - b);
    this.baselineIndices = keep;
    const nb = keep.length + p;
    this.nb = nb;
    const bx = new Float64Array(nb * d);
    bx.set(rows(observed, d, keep));
    bx.set(pending.subarray(0, p * d), keep.length * d);

    const S = o.mcSamples;
    this.z = [0, 1].map(() => Array.from({ length: S }, () => rng.normals(new Float64Array(nb))));
    this.eps = [0, 1].map(() => rng.normals(new Float64Array(S)));
    const fb: Float64Array[][] = [new Array(S), new Array(S)];
    this.states = [0, 1].map((k) => {
      const comps = models[k].components;
      return comps.map((gp, c) => {
        const proj = gp.project(bx, nb);
        const lBB = nb > 0 ? cholesky(gp.covarianceBetween(proj, proj), nb, { initialJitter: 1e-8 }).l : new Float64Array(0);
        const samples: number[] = [];
        for (let s = c; s < S; s += comps.length) samples.push(s);
        for (const s of samples) {
          const f = lowerTimesVector(lBB, nb, this.z[k][s]);
          for (let i = 0; i < nb; i++) f[i] += proj.mean[i];
          fb[k][s] = f;
        }
        return { gp, proj, lBB, samples };
      });
    });
    this.fronts = Array.from({ length: S }, (_, s) => sortedFront(fb[0][s], fb[1][s], nb, ref));
  }

  /** Posterior draws of both objectives at m candidates: draws[k][s·m + j]. */
  private candidateDraws(xs: Float64Array, m: number): [Float64Array, Float64Array] {
    const S = this.mcSamples;
    const nb = this.nb;
    const out: [Float64Array, Float64Array] = [new Float64Array(S * m), new Float64Array(S * m)];
    for (let k = 0; k < 2; k++) {
      for (const st of this.states[k]) {
        const px = st.gp.project(xs, m);
        const varX = st.gp.varianceOf(px);
        // w = L_BB⁻¹ Σ_Bx, nb×m.
        const w = nb > 0 ? solveLowerMatrixInPlace(st.lBB, nb, st.gp.covarianceBetween(st.proj, px), m) : new Float64Array(0);
        const sd = new Float64Array(m);
        for (let j = 0; j < m; j++) {
          let q = 0;
          for (let i = 0; i < nb; i++) q += w[i * m + j] ** 2;
          sd[j] = Math.sqrt(Math.max(0, varX[j] - q));
        }
        for (const s of st.samples) {
          const z = this.z[k][s];
          const e = this.eps[k][s];
          const row = s * m;
          for (let j = 0; j < m; j++) out[k][row + j] = px.mean[j] + sd[j] * e;
          for (let i = 0; i < nb; i++) {
            const zi = z[i];
            if (zi === 0) continue;
            const wi = i * m;
            for (let j = 0; j < m; j++) out[k][row + j] += w[wi + j] * zi;
          }
        }
      }
    }
    return out;
  }

  /** NEHVI of each of m candidates (m×d, encoded), in objective units squared. */
  evaluate(xs: Float64Array, m: number): Float64Array {
    const values = new Float64Array(m);
    if (m === 0) return values;
    const [f0, f1] = this.candidateDraws(xs, m);
    const S = this.mcSamples;
    for (let s = 0; s < S; s++) {
      const front = this.fronts[s];
      const row = s * m;
      for (let j = 0; j < m; j++) values[j] += hypervolumeImprovement2d(front, f0[row + j], f1[row + j], this.ref);
    }
    for (let j = 0; j < m; j++) values[j] /= S;
    return values;
  }
}
