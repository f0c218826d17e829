/**
 * Small dense linear algebra on row-major Float64Array matrices, enough for Gaussian processes with
 * up to a few hundred points: Cholesky with adaptive jitter, triangular solves, log-determinants and
 * inverses. Our own code (no dependency): the matrices are small, and owning the failure path lets us
 * report which pivot broke and how much jitter was tried.
 */
import { SearchError } from './errors.js';

/**
 * In-place Cholesky A = L Lᵀ on the lower triangle of `a` (n×n row-major); zeroes the upper triangle.
 * Returns -1 on success, otherwise the index of the first non-positive pivot (then `a` is garbage).
 */
export function choleskyInPlace(a: Float64Array, n: number): number {
  for (let j = 0; j < n; j++) {
    const rj = j * n;
    let s = a[rj + j];
    for (let k = 0; k < j; k++) s -= a[rj + k] * a[rj + k];
    if (!(s > 0) || !Number.isFinite(s)) return j;
    const ljj = Math.sqrt(s);
    a[rj + j] = ljj;
    const inv = 1 / ljj;
    for (let i = j + 1; i < n; i++) {
      const ri = i * n;
      let t = a[ri + j];
      for (let k = 0; k < j; k++) t -= a[ri + k] * a[rj + k];
      a[ri + j] = t * inv;
    }
    for (let k = j + 1; k < n; k++) a[rj + k] = 0;
  }
  return -1;
}

export interface CholeskyOptions {
  /** First jitter tried, relative to the mean diagonal (default 1e-10). */
  initialJitter?: number;
  /** Number of jitter increases (×10 each) before giving up (default 8, i.e. up to 1e-3·mean diag). */
  maxTries?: number;
}

export interface CholeskyResult {
  /** Lower-triangular factor, n×n row-major (upper triangle zero). */
  l: Float64Array;
  /** Jitter added to the diagonal (absolute); 0 when the matrix factored as given. */
  jitter: number;
}

/**
 * Cholesky factor of a symmetric positive (semi-)definite matrix. Kernel matrices are often
 * numerically singular (nearby inputs, tiny noise), so on failure we add a growing multiple of the
 * mean diagonal, as GPyTorch's psd_safe_cholesky does. Throws SearchError('cholesky_failed').
 */
export function cholesky(a: Float64Array, n: number, opts: CholeskyOptions = {}): CholeskyResult {
  if (a.length < n * n) throw new SearchError('matrix_shape', `matrix has ${a.length} entries, n=${n} needs ${n * n}`, { n, length: a.length });
  const l = new Float64Array(n * n);
  l.set(a.subarray(0, n * n));
  let pivot = choleskyInPlace(l, n);
  if (pivot < 0) return { l, jitter: 0 };
  let meanDiag = 0;
  for (let i = 0; i < n; i++) meanDiag += Math.abs(a[i * n + i]);
  meanDiag = n > 0 ? meanDiag / n : 1;
  if (!(meanDiag > 0) || !Number.isFinite(meanDiag)) {
    throw new SearchError('cholesky_failed', `matrix diagonal is not positive and finite (mean |diag| = ${meanDiag})`, { n, meanDiag, pivot });
  }
  const tries = opts.maxTries ?? 8;
  let jitter = (opts.initialJitter ?? 1e-10) * meanDiag;
  for (let t = 0; t < tries; t++) {
    l.set(a.subarray(0, n * n));
    for (let i = 0; i < n; i++) l[i * n + i] += jitter;
    pivot = choleskyInPlace(l, n);
    if (pivot < 0) return { l, jitter };
    jitter *= 10;
  }
  throw new SearchError(
    'cholesky_failed',
    `matrix is not positive definite: pivot ${pivot} failed even with jitter ${jitter / 10} (n=${n})`,
    { n, pivot, jitter: jitter / 10, meanDiag },
  );
}

/** Solves L x = b (L lower triangular); writes into `out` (may alias b). */
export function solveLower(l: Float64Array, n: number, b: ArrayLike<number>, out: Float64Array = new Float64Array(n)): Float64Array {
  for (let i = 0; i < n; i++) {
    const ri = i * n;
    let s = b[i];
    for (let k = 0; k < i; k++) s -= l[ri + k] * out[k];
    out[i] = s / l[ri + i];
  }
  return out;
}

/** Solves Lᵀ x = b (L lower triangular); writes into `out` (may alias b). */
export function solveLowerT(l: Float64Array, n: number, b: ArrayLike<number>, out: Float64Array = new Float64Array(n)): Float64Array {
  for (let i = n - 1; i >= 0; i--) {
    let s = b[i];
    for (let k = i + 1; k < n; k++) s -= l[k * n + i] * out[k];
    out[i] = s / l[i * n + i];
  }
  return out;
}

/** Solves (L Lᵀ) x = b given the Cholesky factor L. */
export function cholSolve(l: Float64Array, n: number, b: ArrayLike<number>): Float64Array {
  const y = solveLower(l, n, b);
  return solveLowerT(l, n, y, y);
}

/**
 * Solves L X = B for m right-hand sides at once; B is n×m row-major, overwritten with X.
 * Row-wise elimination keeps the inner loop contiguous over the m columns.
 */
export function solveLowerMatrixInPlace(l: Float64Array, n: number, b: Float64Array, m: number): Float64Array {
  for (let i = 0; i < n; i++) {
    const ri = i * n;
    const bi = i * m;
    for (let k = 0; k < i; k++) {
      const lik = l[ri + k];
      if (lik === 0) continue;
      const bk = k * m;
      for (let c = 0; c < m; c++) b[bi + c] -= lik * b[bk + c];
    }
    const inv = 1 / l[ri + i];
    for (let c = 0; c < m; c++) b[bi + c] *= inv;
  }
  return b;
}

/** log det(L Lᵀ) = 2 Σ log L_ii. */
export function logDetFromCholesky(l: Float64Array, n: number): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += Math.log(l[i * n + i]);
  return 2 * s;
}

/** L⁻¹ for lower-triangular L (n×n row-major, lower-triangular result). */
export function invertLower(l: Float64Array, n: number): Float64Array {
  const inv = new Float64Array(n * n);
  // Row i of X = L⁻¹ from L X = I: X_i = (e_i − Σ_{k<i} L_ik X_k) / L_ii; rows keep the inner loop contiguous.
  for (let i = 0; i < n; i++) {
    const ri = i * n;
    for (let k = 0; k < i; k++) {
      const lik = l[ri + k];
      if (lik === 0) continue;
      const rk = k * n;
      for (let j = 0; j <= k; j++) inv[ri + j] -= lik * inv[rk + j];
    }
    inv[ri + i] += 1;
    const d = 1 / l[ri + i];
    for (let j = 0; j <= i; j++) inv[ri + j] *= d;
  }
  return inv;
}

/** (L Lᵀ)⁻¹ = L⁻ᵀ L⁻¹ as a full symmetric matrix. */
export function inverseFromCholesky(l: Float64Array, n: number): Float64Array {
  const li = invertLower(l, n);
  const out = new Float64Array(n * n);
  // out_ij = Σ_{k ≥ max(i,j)} Li_ki Li_kj: accumulate row by row of L⁻¹ so reads stay contiguous.
  for (let k = 0; k < n; k++) {
    const rk = k * n;
    for (let i = 0; i <= k; i++) {
      const a = li[rk + i];
      if (a === 0) continue;
      const ri = i * n;
      for (let j = 0; j <= i; j++) out[ri + j] += a * li[rk + j];
    }
  }
  for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) out[j * n + i] = out[i * n + j];
  return out;
}

/** y = L z for lower-triangular L (used to draw correlated normal samples). */
export function lowerTimesVector(l: Float64Array, n: number, z: ArrayLike<number>, out: Float64Array = new Float64Array(n)): Float64Array {
  for (let i = n - 1; i >= 0; i--) {
    const ri = i * n;
    let s = 0;
    for (let k = 0; k <= i; k++) s += l[ri + k] * z[k];
    out[i] = s;
  }
  return out;
}

/** Dense product C = A B (A: n×k, B: k×m, all row-major). */
export function matMul(a: Float64Array, b: Float64Array, n: number, k: number, m: number): Float64Array {
  const c = new Float64Array(n * m);
  for (let i = 0; i < n; i++) {
    const ci = i * m;
    for (let t = 0; t < k; t++) {
      const ait = a[i * k + t];
      if (ait === 0) continue;
      const bt = t * m;
      for (let j = 0; j < m; j++) c[ci + j] += ait * b[bt + j];
    }
  }
  return c;
}
