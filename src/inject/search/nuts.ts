/**
 * The No-U-Turn Sampler (Hoffman & Gelman 2014) in its multinomial form (Betancourt 2017, as Stan
 * and Pyro implement it): trajectories grow by doubling in a random direction, the next state is drawn
 * from the trajectory with weights exp(−H) (biased progressive sampling between subtrees), and
 * growth stops at a generalised U-turn (with Stan's extra checks across merged subtrees), a
 * divergence, or the maximum depth.
 *
 * Warm-up adapts the step size by dual averaging (target acceptance δ, γ=0.05, t₀=10, κ=0.75) and a
 * diagonal inverse mass matrix by Welford variance over Stan's doubling windows.
 */
import { SearchError } from './errors.js';
import { cholesky, solveLowerT } from './linalg.js';
import type { Rng } from '../../util/rng.js';
import { withDefaults } from '../../util/options.js';

/** Writes ∇log p(q) into `grad` and returns log p(q); −Infinity (or a throw) marks an invalid point. */
export type LogDensity = (q: Float64Array, grad: Float64Array) => number;

export interface NutsOptions {
  /** Warm-up (adaptation) iterations, discarded. */
  warmup: number;
  /** Iterations after warm-up. */
  samples: number;
  /** Keep every `thinning`-th post-warm-up iteration. */
  thinning: number;
  /** Maximum tree depth (2^depth − 1 leapfrog steps at most). */
  maxTreeDepth: number;
  /** Target mean acceptance statistic for dual averaging. */
  targetAccept: number;
  /** Adapt the mass matrix during warm-up. */
  adaptMass: boolean;
  /**
   * Mass-matrix form: 'diag' (Stan's and Pyro's default) or 'dense'. Dense pays off when parameters
   * are linearly correlated, as the SAAS global and per-dimension shrinkage are (only τ·ρ̃_d is
   * identified for a relevant dimension), and costs O(p²) per leapfrog step for p parameters.
   */
  metric: 'diag' | 'dense';
  /** Energy error beyond which a trajectory is divergent. */
  maxEnergyError: number;
  /** Initial step size; found by the Hoffman–Gelman heuristic when absent. */
  initialStepSize?: number;
}

export const DEFAULT_NUTS: NutsOptions = {
  warmup: 256,
  samples: 128,
  thinning: 16,
  maxTreeDepth: 6,
  targetAccept: 0.8,
  adaptMass: true,
  metric: 'diag',
  maxEnergyError: 1000,
};

export interface NutsStats {
  stepSize: number;
  /** Inverse mass matrix after adaptation: its diagonal for 'diag', the full p×p matrix for 'dense'. */
  inverseMass: Float64Array;
  divergences: number;
  meanTreeDepth: number;
  meanAcceptStat: number;
  gradientEvaluations: number;
}

export interface NutsResult {
  /** Kept draws (post-warm-up, thinned). */
  draws: Float64Array[];
  /** Log density of each kept draw. */
  logDensities: number[];
  stats: NutsStats;
}

interface State {
  q: Float64Array;
  p: Float64Array;
  grad: Float64Array;
  logp: number;
}

interface Tree {
  /** Earliest and latest states in trajectory time. */
  minus: State;
  plus: State;
  /** The state drawn from this (sub)tree. */
  sample: State;
  /** log Σ exp(−(H − H₀)) over the tree's states. */
  logWeight: number;
  /** Sum of momenta over the tree's states. */
  rho: Float64Array;
  sumAccept: number;
  steps: number;
  /** False after a U-turn or divergence inside the tree. */
  valid: boolean;
  divergent: boolean;
}

function logAddExp(a: number, b: number): number {
  if (a === -Infinity) return b;
  if (b === -Infinity) return a;
  const m = Math.max(a, b);
  return m + Math.log(Math.exp(a - m) + Math.exp(b - m));
}

export class NutsSampler {
  private readonly dim: number;
  /** Inverse mass: diagonal (length p) or dense (p×p row-major). */
  private invMass: Float64Array;
  /** Diagonal: 1/√(M⁻¹_ii). Dense: Cholesky factor C of M⁻¹ = C Cᵀ, so p = C⁻ᵀ z ~ N(0, M). */
  private momentumFactor: Float64Array;
  private readonly dense: boolean;
  gradientEvaluations = 0;

  constructor(
    private readonly logDensity: LogDensity,
    dim: number,
    private readonly rng: Rng,
    private readonly maxTreeDepth = DEFAULT_NUTS.maxTreeDepth,
    private readonly maxEnergyError = DEFAULT_NUTS.maxEnergyError,
    metric: 'diag' | 'dense' = 'diag',
  ) {
    this.dim = dim;
    this.dense = metric === 'dense';
    if (this.dense) {
      this.invMass = new Float64Array(dim * dim);
      for (let i = 0; i < dim; i++) this.invMass[i * dim + i] = 1;
      this.momentumFactor = this.invMass.slice();
    } else {
      this.invMass = new Float64Array(dim).fill(1);
      this.momentumFactor = new Float64Array(dim).fill(1);
    }
  }

  /** Sets M⁻¹ (diagonal vector or dense matrix, matching the metric). */
  setInverseMass(m: Float64Array): void {
    this.invMass = m.slice();
    if (this.dense) {
      this.momentumFactor = cholesky(m, this.dim).l;
    } else {
      this.momentumFactor = new Float64Array(this.dim);
      for (let i = 0; i < this.dim; i++) this.momentumFactor[i] = 1 / Math.sqrt(m[i]);
    }
  }

  get inverseMass(): Float64Array {
    return this.invMass.slice();
  }

  evaluate(q: Float64Array): State {
    const grad = new Float64Array(this.dim);
    let logp: number;
    try {
      logp = this.logDensity(q, grad);
    } catch {
      // Numerical failures (a covariance that will not factor) mark the point as outside the support.
      logp = -Infinity;
    }
    this.gradientEvaluations++;
    if (!Number.isFinite(logp)) logp = -Infinity;
    return { q, p: new Float64Array(this.dim), grad, logp };
  }

  /** p ~ N(0, M). */
  private sampleMomentum(): Float64Array {
    const { dim } = this;
    const p = new Float64Array(dim);
    for (let i = 0; i < dim; i++) p[i] = this.rng.normal();
    if (!this.dense) {
      for (let i = 0; i < dim; i++) p[i] *= this.momentumFactor[i];
      return p;
    }
    return solveLowerT(this.momentumFactor, dim, p, p);
  }

  /** M⁻¹ p: the velocity, also the "sharp" momentum of the U-turn criterion. */
  private velocity(p: Float64Array, out: Float64Array = new Float64Array(this.dim)): Float64Array {
    const { dim, invMass } = this;
    if (!this.dense) {
      for (let i = 0; i < dim; i++) out[i] = invMass[i] * p[i];
      return out;
    }
    for (let i = 0; i < dim; i++) {
      let s = 0;
      const ri = i * dim;
      for (let j = 0; j < dim; j++) s += invMass[ri + j] * p[j];
      out[i] = s;
    }
    return out;
  }

  private kinetic(p: Float64Array): number {
    const v = this.velocity(p);
    let k = 0;
    for (let i = 0; i < this.dim; i++) k += p[i] * v[i];
    return 0.5 * k;
  }

  private leapfrog(s: State, eps: number): State {
    const { dim } = this;
    const pHalf = new Float64Array(dim);
    for (let i = 0; i < dim; i++) pHalf[i] = s.p[i] + 0.5 * eps * s.grad[i];
    const v = this.velocity(pHalf);
    const q = new Float64Array(dim);
    for (let i = 0; i < dim; i++) q[i] = s.q[i] + eps * v[i];
    const next = this.evaluate(q);
    for (let i = 0; i < dim; i++) next.p[i] = pHalf[i] + 0.5 * eps * next.grad[i];
    return next;
  }

  /** Generalised no-U-turn criterion: both end velocities point along rho. */
  private noUTurn(pMinus: Float64Array, pPlus: Float64Array, rho: Float64Array): boolean {
    const a = this.velocity(pMinus);
    const b = this.velocity(pPlus);
    let sa = 0;
    let sb = 0;
    for (let i = 0; i < this.dim; i++) {
      sa += a[i] * rho[i];
      sb += b[i] * rho[i];
    }
    return sa > 0 && sb > 0;
  }

  /** Merges two adjacent trees, `early` before `late` in trajectory time, checking U-turns across them. */
  private mergeValid(early: Tree, late: Tree, rho: Float64Array): boolean {
    if (!this.noUTurn(early.minus.p, late.plus.p, rho)) return false;
    const dim = this.dim;
    const ext1 = new Float64Array(dim);
    const ext2 = new Float64Array(dim);
    for (let i = 0; i < dim; i++) {
      ext1[i] = early.rho[i] + late.minus.p[i];
      ext2[i] = late.rho[i] + early.plus.p[i];
    }
    return this.noUTurn(early.minus.p, late.minus.p, ext1) && this.noUTurn(early.plus.p, late.plus.p, ext2);
  }

  private buildTree(edge: State, direction: number, depth: number, eps: number, h0: number): Tree {
    if (depth === 0) {
      const s = this.leapfrog(edge, direction * eps);
      const h = s.logp === -Infinity ? Infinity : -s.logp + this.kinetic(s.p);
      const dH = h - h0;
      const divergent = !(dH <= this.maxEnergyError);
      return {
        minus: s,
        plus: s,
        sample: s,
        logWeight: Number.isFinite(dH) ? -dH : -Infinity,
        rho: s.p.slice(),
        sumAccept: Number.isFinite(dH) ? Math.min(1, Math.exp(-dH)) : 0,
        steps: 1,
        valid: !divergent,
        divergent,
      };
    }
    const first = this.buildTree(edge, direction, depth - 1, eps, h0);
    if (!first.valid) return first;
    const from = direction > 0 ? first.plus : first.minus;
    const second = this.buildTree(from, direction, depth - 1, eps, h0);
    const steps = first.steps + second.steps;
    const sumAccept = first.sumAccept + second.sumAccept;
    const early = direction > 0 ? first : second;
    const late = direction > 0 ? second : first;
    if (!second.valid) {
      return { ...first, minus: early.minus, plus: late.plus, steps, sumAccept, valid: false, divergent: second.divergent };
    }
    const logWeight = logAddExp(first.logWeight, second.logWeight);
    // Multinomial sampling inside a subtree: pick the second half with its share of the weight.
    const takeSecond = Math.log(this.rng.uniform()) < second.logWeight - logWeight;
    const rho = new Float64Array(this.dim);
    for (let i = 0; i < this.dim; i++) rho[i] = first.rho[i] + second.rho[i];
    return {
      minus: early.minus,
      plus: late.plus,
      sample: takeSecond ? second.sample : first.sample,
      logWeight,
      rho,
      sumAccept,
      steps,
      valid: this.mergeValid(early, late, rho),
      divergent: false,
    };
  }

  /** One NUTS transition from `current`. */
  transition(current: State, eps: number): { state: State; acceptStat: number; depth: number; divergent: boolean } {
    const dim = this.dim;
    const p0 = this.sampleMomentum();
    const start: State = { q: current.q, p: p0, grad: current.grad, logp: current.logp };
    const h0 = -start.logp + this.kinetic(p0);
    let tree: Tree = {
      minus: start,
      plus: start,
      sample: start,
      logWeight: 0,
      rho: p0.slice(),
      sumAccept: 0,
      steps: 0,
      valid: true,
      divergent: false,
    };
    let depth = 0;
    let divergent = false;
    let sumAccept = 0;
    let steps = 0;
    while (depth < this.maxTreeDepth) {
      const direction = this.rng.uniform() < 0.5 ? -1 : 1;
      const edge = direction > 0 ? tree.plus : tree.minus;
      const sub = this.buildTree(edge, direction, depth, eps, h0);
      sumAccept += sub.sumAccept;
      steps += sub.steps;
      depth++;
      if (!sub.valid) {
        divergent = sub.divergent;
        break;
      }
      // Biased progressive sampling: favour the new subtree in proportion to its weight.
      let sample = tree.sample;
      if (Math.log(this.rng.uniform()) < sub.logWeight - tree.logWeight) sample = sub.sample;
      const rho = new Float64Array(dim);
      for (let i = 0; i < dim; i++) rho[i] = tree.rho[i] + sub.rho[i];
      const early = direction > 0 ? tree : sub;
      const late = direction > 0 ? sub : tree;
      const valid = this.mergeValid(early, late, rho);
      tree = {
        minus: early.minus,
        plus: late.plus,
        sample,
        logWeight: logAddExp(tree.logWeight, sub.logWeight),
        rho,
        sumAccept: 0,
        steps: 0,
        valid,
        divergent: false,
      };
      if (!valid) break;
    }
    const s = tree.sample;
    return {
      state: { q: s.q, p: s.p, grad: s.grad, logp: s.logp },
      acceptStat: steps > 0 ? sumAccept / steps : 0,
      depth,
      divergent,
    };
  }

  /** Hoffman & Gelman's heuristic: double or halve ε until one leapfrog step's acceptance crosses ½. */
  findReasonableStepSize(current: State, start = 1): number {
    let eps = start;
    const trial = (e: number): number => {
      const p0 = this.sampleMomentum();
      const s0: State = { ...current, p: p0 };
      const s1 = this.leapfrog(s0, e);
      if (s1.logp === -Infinity) return -Infinity;
      return s1.logp - this.kinetic(s1.p) - (s0.logp - this.kinetic(p0));
    };
    let logRatio = trial(eps);
    const direction = logRatio > Math.log(0.5) ? 1 : -1;
    for (let i = 0; i < 100; i++) {
      if (direction > 0 ? !(logRatio > Math.log(0.5)) : logRatio > Math.log(0.5)) break;
      eps = direction > 0 ? eps * 2 : eps / 2;
      if (eps > 1e7 || eps < 1e-10) break;
      logRatio = trial(eps);
    }
    return eps;
  }
}

/** Dual averaging of log ε (Hoffman & Gelman 2014, Algorithm 5; Stan's constants). */
class DualAveraging {
  private mu = 0;
  private hBar = 0;
  private logEpsBar = 0;
  private t = 0;
  logEps = 0;

  constructor(
    private readonly target: number,
    private readonly gamma = 0.05,
    private readonly t0 = 10,
    private readonly kappa = 0.75,
  ) {}

  restart(eps: number): void {
    this.mu = Math.log(10 * eps);
    this.hBar = 0;
    this.logEpsBar = 0;
    this.t = 0;
    this.logEps = Math.log(eps);
  }

  update(acceptStat: number): void {
    this.t++;
    const eta = 1 / (this.t + this.t0);
    this.hBar = (1 - eta) * this.hBar + eta * (this.target - acceptStat);
    this.logEps = this.mu - (Math.sqrt(this.t) / this.gamma) * this.hBar;
    const w = Math.pow(this.t, -this.kappa);
    this.logEpsBar = w * this.logEps + (1 - w) * this.logEpsBar;
  }

  get finalStepSize(): number {
    return Math.exp(this.logEpsBar);
  }
}

/**
 * Stan's warm-up windows: a fast initial buffer (step size only), slow windows that double in length
 * (step size and mass matrix; the mass matrix is set at each window's end), and a fast final buffer.
 * Returns the slow windows as [start, end) warm-up iterations; the mass matrix is set at each end.
 */
export function massAdaptationWindows(warmup: number): Array<[number, number]> {
  if (warmup < 20) return [];
  let init = 75;
  let term = 50;
  let base = 25;
  if (warmup < init + term + base) {
    init = Math.floor(0.15 * warmup);
    term = Math.floor(0.1 * warmup);
    base = warmup - init - term;
  }
  const windows: Array<[number, number]> = [];
  const lastEnd = warmup - term;
  let start = init;
  let size = base;
  while (start < lastEnd) {
    let end = start + size;
    // A window that would leave less than a doubled window before the final buffer absorbs the rest.
    if (end + 2 * size > lastEnd) end = lastEnd;
    windows.push([start, end]);
    start = end;
    size *= 2;
  }
  return windows;
}

/** Welford mean and (co)variance of the draws in one adaptation window. */
class WindowEstimator {
  private count = 0;
  private readonly mean: Float64Array;
  private readonly m2: Float64Array;

  constructor(
    private readonly dim: number,
    private readonly dense: boolean,
  ) {
    this.mean = new Float64Array(dim);
    this.m2 = new Float64Array(dense ? dim * dim : dim);
  }

  add(q: Float64Array): void {
    const { dim } = this;
    this.count++;
    const delta = new Float64Array(dim);
    for (let i = 0; i < dim; i++) {
      delta[i] = q[i] - this.mean[i];
      this.mean[i] += delta[i] / this.count;
    }
    if (this.dense) {
      for (let i = 0; i < dim; i++) for (let j = 0; j < dim; j++) this.m2[i * dim + j] += delta[i] * (q[j] - this.mean[j]);
    } else {
      for (let i = 0; i < dim; i++) this.m2[i] += delta[i] * (q[i] - this.mean[i]);
    }
  }

  /** Stan's shrinkage towards 1e-3·I keeps short windows from producing a degenerate metric. */
  regularised(): Float64Array {
    const n = this.count;
    const w = n / (n + 5);
    const shrink = 1e-3 * (5 / (n + 5));
    const out = new Float64Array(this.m2.length);
    const denom = Math.max(1, n - 1);
    for (let i = 0; i < out.length; i++) out[i] = (w * this.m2[i]) / denom;
    if (this.dense) {
      for (let i = 0; i < this.dim; i++) out[i * this.dim + i] += shrink;
      // Symmetrise against round-off so the Cholesky factor is well-defined.
      for (let i = 0; i < this.dim; i++)
        for (let j = 0; j < i; j++) {
          const a = 0.5 * (out[i * this.dim + j] + out[j * this.dim + i]);
          out[i * this.dim + j] = a;
          out[j * this.dim + i] = a;
        }
    } else {
      for (let i = 0; i < out.length; i++) out[i] += shrink;
    }
    return out;
  }

  reset(): void {
    this.count = 0;
    this.mean.fill(0);
    this.m2.fill(0);
  }
}

/** Runs warm-up and sampling from `init`; `onIteration` may report progress. */
export function runNuts(
  logDensity: LogDensity,
  init: Float64Array,
  rng: Rng,
  options: Partial<NutsOptions> = {},
  onIteration?: (i: number, total: number) => void,
): NutsResult {
  const o: NutsOptions = withDefaults(DEFAULT_NUTS, options);
  const dim = init.length;
  const sampler = new NutsSampler(logDensity, dim, rng, o.maxTreeDepth, o.maxEnergyError, o.metric);
  let current = sampler.evaluate(init.slice());
  if (current.logp === -Infinity) {
    throw new SearchError('nuts_bad_init', 'NUTS initial point has zero density', { init: Array.from(init) });
  }
  let eps = o.initialStepSize ?? sampler.findReasonableStepSize(current);
  const da = new DualAveraging(o.targetAccept);
  da.restart(eps);
  const windows = o.adaptMass ? massAdaptationWindows(o.warmup) : [];
  let wIdx = 0;
  const window = new WindowEstimator(dim, o.metric === 'dense');
  const draws: Float64Array[] = [];
  const logDensities: number[] = [];
  let divergences = 0;
  let depthSum = 0;
  let acceptSum = 0;
  const total = o.warmup + o.samples;
  for (let it = 0; it < total; it++) {
    const warm = it < o.warmup;
    const stepSize = warm ? Math.exp(da.logEps) : eps;
    const tr = sampler.transition(current, stepSize);
    current = tr.state;
    if (warm) {
      da.update(tr.acceptStat);
      if (wIdx < windows.length && it >= windows[wIdx][0]) {
        window.add(current.q);
        if (it + 1 === windows[wIdx][1]) {
          sampler.setInverseMass(window.regularised());
          const e = sampler.findReasonableStepSize(current, Math.exp(da.logEps));
          da.restart(e);
          wIdx++;
          window.reset();
        }
      }
      if (it + 1 === o.warmup) eps = da.finalStepSize;
    } else {
      if (tr.divergent) divergences++;
      depthSum += tr.depth;
      acceptSum += tr.acceptStat;
      const k = it - o.warmup + 1;
      if (k % o.thinning === 0) {
        draws.push(current.q.slice());
        logDensities.push(current.logp);
      }
    }
    onIteration?.(it + 1, total);
  }
  if (o.warmup === 0) eps = Math.exp(da.logEps);
  return {
    draws,
    logDensities,
    stats: {
      stepSize: eps,
      inverseMass: sampler.inverseMass,
      divergences,
      meanTreeDepth: o.samples > 0 ? depthSum / o.samples : 0,
      meanAcceptStat: o.samples > 0 ? acceptSum / o.samples : 0,
      gradientEvaluations: sampler.gradientEvaluations,
    },
  };
}
