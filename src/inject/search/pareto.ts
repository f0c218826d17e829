/**
 * Pareto dominance for minimisation in every coordinate. memlora's two objectives enter as
 * [validation loss, −ROUGE-L] (see `toMinimization`), so "smaller is better" holds throughout.
 */

export type Point = readonly number[];

/** The search's objectives as the user sees them. */
export interface Objectives {
  loss: number;
  rougeL: number;
}

/** Minimise loss, maximise ROUGE-L → minimise [loss, −rougeL]. */
export function toMinimization(o: Objectives): [number, number] {
  return [o.loss, -o.rougeL];
}

/** a dominates b: no worse in every coordinate and strictly better in one. */
export function dominates(a: Point, b: Point): boolean {
  let strictly = false;
  for (let i = 0; i < a.length; i++) {
    if (a[i] > b[i]) return false;
    if (a[i] < b[i]) strictly = true;
  }
  return strictly;
}

/**
 * Indices (ascending) of the non-dominated points. Of several identical points only the first is kept,
 * so the front never lists one objective vector twice.
 */
export function paretoFront(points: readonly Point[]): number[] {
  const keep: number[] = [];
  outer: for (let i = 0; i < points.length; i++) {
    const p = points[i];
    for (let j = 0; j < points.length; j++) {
      if (j === i) continue;
      const q = points[j];
      if (dominates(q, p)) continue outer;
      if (j < i && q.every((v, k) => v === p[k])) continue outer;
    }
    keep.push(i);
  }
  return keep;
}

/**
 * Pareto mask for 2-D points in flat arrays (x[i], y[i]), O(n log n): used inside Monte-Carlo loops.
 * Writes 1 for non-dominated points into `mask`.
 */
export function paretoMask2d(x: ArrayLike<number>, y: ArrayLike<number>, n: number, mask: Uint8Array): Uint8Array {
  const sorted = Array.from({ length: n }, (_, i) => i);
  sorted.sort((a, b) => x[a] - x[b] || y[a] - y[b] || a - b);
  mask.fill(0, 0, n);
  let bestY = Infinity;
  for (const i of sorted) {
    // Sorted by x then y: a point is non-dominated iff its y beats every y seen so far.
    if (y[i] < bestY) {
      mask[i] = 1;
      bestY = y[i];
    }
  }
  return mask;
}
