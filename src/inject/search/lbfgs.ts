/**
 * Limited-memory BFGS (Nocedal & Wright, Algorithm 7.4/7.5) with a backtracking Armijo line search.
 * Used for MAP fits of GP hyperparameters, where the objective is smooth but may be undefined in
 * places (a covariance that will not factor): such points count as +∞ and the step is shortened.
 */
import { withDefaults } from '../../util/options.js';

/** Writes ∇f(x) into `grad` and returns f(x). */
export type Objective = (x: Float64Array, grad: Float64Array) => number;

export interface LbfgsOptions {
  maxIterations: number;
  /** Number of correction pairs kept. */
  memory: number;
  /** Stop when max |∇f| falls below this. */
  gradTolerance: number;
  /** Stop when the relative decrease of f over an iteration falls below this. */
  relativeTolerance: number;
}

export interface MinimizeResult {
  x: Float64Array;
  value: number;
  iterations: number;
  evaluations: number;
  converged: boolean;
}

const DEFAULTS: LbfgsOptions = { maxIterations: 200, memory: 8, gradTolerance: 1e-5, relativeTolerance: 1e-10 };

function dot(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

export function lbfgsMinimize(f: Objective, x0: Float64Array, options: Partial<LbfgsOptions> = {}): MinimizeResult {
  const o = withDefaults(DEFAULTS, options);
  const dim = x0.length;
  let evaluations = 0;
  const safeEval = (x: Float64Array, g: Float64Array): number => {
    evaluations++;
    let v: number;
    try {
      v = f(x, g);
    } catch {
      return Infinity;
    }
    if (!Number.isFinite(v)) return Infinity;
    for (let i = 0; i < dim; i++) if (!Number.isFinite(g[i])) return Infinity;
    return v;
  };
  let x = x0.slice();
  let g = new Float64Array(dim);
  let fx = safeEval(x, g);
  if (fx === Infinity) return { x, value: Infinity, iterations: 0, evaluations, converged: false };
  const sHist: Float64Array[] = [];
  const yHist: Float64Array[] = [];
  const rhoHist: number[] = [];
  const alpha = new Float64Array(o.memory);
  let converged = false;
  let it = 0;
  for (; it < o.maxIterations; it++) {
    let gmax = 0;
    for (let i = 0; i < dim; i++) gmax = Math.max(gmax, Math.abs(g[i]));
    if (gmax < o.gradTolerance) {
      converged = true;
      break;
    }
    // Two-loop recursion: direction = −H∇f.
    const dir = g.slice();
    for (let k = sHist.length - 1; k >= 0; k--) {
      alpha[k] = rhoHist[k] * dot(sHist[k], dir);
      const yk = yHist[k];
      for (let i = 0; i < dim; i++) dir[i] -= alpha[k] * yk[i];
    }
    if (sHist.length > 0) {
      const last = sHist.length - 1;
      const gamma = dot(sHist[last], yHist[last]) / dot(yHist[last], yHist[last]);
      for (let i = 0; i < dim; i++) dir[i] *= gamma;
    } else {
      // First step: unit-length steepest descent so the first trial point is not wildly far away.
      const gn = Math.sqrt(dot(g, g));
      for (let i = 0; i < dim; i++) dir[i] /= Math.max(gn, 1);
    }
    for (let k = 0; k < sHist.length; k++) {
      const beta = rhoHist[k] * dot(yHist[k], dir);
      const sk = sHist[k];
      for (let i = 0; i < dim; i++) dir[i] += sk[i] * (alpha[k] - beta);
    }
    for (let i = 0; i < dim; i++) dir[i] = -dir[i];
    let slope = dot(g, dir);
    if (!(slope < 0)) {
      // Not a descent direction (curvature information went stale): restart from steepest descent.
      sHist.length = 0;
      yHist.length = 0;
      rhoHist.length = 0;
      for (let i = 0; i < dim; i++) dir[i] = -g[i];
      slope = -dot(g, g);
    }
    let step = 1;
    const xNew = new Float64Array(dim);
    const gNew = new Float64Array(dim);
    let fNew = Infinity;
    let accepted = false;
    for (let ls = 0; ls < 40; ls++) {
      for (let i = 0; i < dim; i++) xNew[i] = x[i] + step * dir[i];
      fNew = safeEval(xNew, gNew);
      if (fNew <= fx + 1e-4 * step * slope) {
        accepted = true;
        break;
      }
      step *= 0.5;
    }
    if (!accepted) break;
    const s = new Float64Array(dim);
    const y = new Float64Array(dim);
    for (let i = 0; i < dim; i++) {
      s[i] = xNew[i] - x[i];
      y[i] = gNew[i] - g[i];
    }
    const sy = dot(s, y);
    if (sy > 1e-12) {
      if (sHist.length === o.memory) {
        sHist.shift();
        yHist.shift();
        rhoHist.shift();
      }
      sHist.push(s);
      yHist.push(y);
      rhoHist.push(1 / sy);
    }
    const decrease = fx - fNew;
    x = xNew;
    g = gNew;
    fx = fNew;
    if (decrease <= o.relativeTolerance * Math.max(1, Math.abs(fx))) {
      converged = true;
      it++;
      break;
    }
  }
  return { x, value: fx, iterations: it, evaluations, converged };
}
