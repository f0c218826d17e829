import { describe, expect, it } from 'vitest';
import { SearchError } from '../../../src/inject/search/errors.js';
import {
  cholesky,
  cholSolve,
  inverseFromCholesky,
  invertLower,
  logDetFromCholesky,
  lowerTimesVector,
  matMul,
  solveLower,
  solveLowerMatrixInPlace,
  solveLowerT,
} from '../../../src/inject/search/linalg.js';
import { Rng } from '../../../src/util/rng.js';

function randomSpd(n: number, rng: Rng): Float64Array {
  const b = new Float64Array(n * n);
  for (let i = 0; i < b.length; i++) b[i] = rng.normal();
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += b[i * n + k] * b[j * n + k];
      a[i * n + j] = s + (i === j ? n : 0);
    }
  return a;
}

describe('cholesky', () => {
  it('reconstructs A = L Lᵀ with a lower-triangular factor', () => {
    const rng = new Rng(1);
    const n = 9;
    const a = randomSpd(n, rng);
    const { l, jitter } = cholesky(a, n);
    expect(jitter).toBe(0);
    for (let i = 0; i < n; i++)
      for (let j = 0; j < n; j++) {
        if (j > i) expect(l[i * n + j]).toBe(0);
        let s = 0;
        for (let k = 0; k < n; k++) s += l[i * n + k] * l[j * n + k];
        expect(s).toBeCloseTo(a[i * n + j], 10);
      }
  });

  it('factors a 2×2 matrix to the hand-computed values', () => {
    // A = [[4, 2], [2, 3]] → L = [[2, 0], [1, √2]].
    const { l } = cholesky(new Float64Array([4, 2, 2, 3]), 2);
    expect(Array.from(l)).toEqual([2, 0, 1, Math.SQRT2].map((v, i) => (i === 3 ? expect.closeTo(v, 14) : v)));
    expect(logDetFromCholesky(l, 2)).toBeCloseTo(Math.log(8), 14);
  });

  it('adds jitter to a singular positive semi-definite matrix', () => {
    // Rank one: v vᵀ.
    const v = [1, 2, 3];
    const a = new Float64Array(9);
    for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) a[i * 3 + j] = v[i] * v[j];
    const { jitter } = cholesky(a, 3);
    expect(jitter).toBeGreaterThan(0);
    expect(jitter).toBeLessThan(1e-2);
  });

  it('fails with a code and the offending pivot on an indefinite matrix', () => {
    const a = new Float64Array([1, 0, 0, -5]);
    let err: unknown;
    try {
      cholesky(a, 2);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SearchError);
    expect((err as SearchError).code).toBe('cholesky_failed');
    expect((err as SearchError).details).toMatchObject({ n: 2, pivot: 1 });
  });

  it('rejects a non-finite diagonal', () => {
    expect(() => cholesky(new Float64Array([NaN, 0, 0, 1]), 2)).toThrow(/not positive|not positive definite/);
  });
});

describe('triangular solves, inverse, products', () => {
  const rng = new Rng(7);
  const n = 7;
  const a = randomSpd(n, rng);
  const { l } = cholesky(a, n);
  const b = Float64Array.from({ length: n }, () => rng.normal());

  it('solveLower and solveLowerT invert L and Lᵀ', () => {
    const x = solveLower(l, n, b);
    const lx = lowerTimesVector(l, n, x);
    for (let i = 0; i < n; i++) expect(lx[i]).toBeCloseTo(b[i], 10);
    const y = solveLowerT(l, n, b);
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += l[k * n + i] * y[k];
      expect(s).toBeCloseTo(b[i], 10);
    }
  });

  it('cholSolve solves A x = b', () => {
    const x = cholSolve(l, n, b);
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += a[i * n + k] * x[k];
      expect(s).toBeCloseTo(b[i], 9);
    }
  });

  it('solveLowerMatrixInPlace matches column-by-column solves', () => {
    const m = 3;
    const B = Float64Array.from({ length: n * m }, () => rng.normal());
    const cols = [0, 1, 2].map((c) => solveLower(l, n, Array.from({ length: n }, (_, i) => B[i * m + c])));
    solveLowerMatrixInPlace(l, n, B, m);
    for (let c = 0; c < m; c++) for (let i = 0; i < n; i++) expect(B[i * m + c]).toBeCloseTo(cols[c][i], 12);
  });

  it('inverseFromCholesky and invertLower give identities', () => {
    const inv = inverseFromCholesky(l, n);
    const id = matMul(a, inv, n, n, n);
    const li = invertLower(l, n);
    const id2 = matMul(l, li, n, n, n);
    for (let i = 0; i < n; i++)
      for (let j = 0; j < n; j++) {
        expect(id[i * n + j]).toBeCloseTo(i === j ? 1 : 0, 9);
        expect(id2[i * n + j]).toBeCloseTo(i === j ? 1 : 0, 12);
      }
  });
});
