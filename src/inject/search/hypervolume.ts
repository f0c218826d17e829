/**
 * Exact hypervolume in two dimensions, for minimisation: the area dominated by a point set and bounded
 * by a reference point r (only points strictly better than r in both coordinates count).
 */

/** Area dominated by the points (flat arrays x, y of length n) within the box up to `ref`. */
export function hypervolume2dFlat(x: ArrayLike<number>, y: ArrayLike<number>, n: number, ref: readonly [number, number]): number {
  const idx: number[] = [];
  for (let i = 0; i < n; i++) if (x[i] < ref[0] && y[i] < ref[1]) idx.push(i);
  idx.sort((a, b) => x[a] - x[b] || y[a] - y[b]);
  let area = 0;
  let prevY = ref[1];
  // Sweep in x: each point that lowers the staircase adds a horizontal slab [x_i, r_x] × [y_i, prevY].
  for (const i of idx) {
    if (y[i] < prevY) {
      area += (ref[0] - x[i]) * (prevY - y[i]);
      prevY = y[i];
    }
  }
  return area;
}

export function hypervolume2d(points: ReadonlyArray<readonly [number, number] | readonly number[]>, ref: readonly [number, number]): number {
  const n = points.length;
  const x = new Float64Array(n);
  const y = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    x[i] = points[i][0];
    y[i] = points[i][1];
  }
  return hypervolume2dFlat(x, y, n, ref);
}

/**
 * A 2-D front prepared for many improvement queries: its points sorted by x ascending (so y
 * descending), already clipped to those strictly inside the reference box.
 */
export interface SortedFront {
  x: Float64Array;
  y: Float64Array;
  n: number;
}

/** Non-dominated points of (x, y) inside the reference box, sorted by x. */
export function sortedFront(x: ArrayLike<number>, y: ArrayLike<number>, n: number, ref: readonly [number, number]): SortedFront {
  const idx: number[] = [];
  for (let i = 0; i < n; i++) if (x[i] < ref[0] && y[i] < ref[1]) idx.push(i);
  idx.sort((a, b) => x[a] - x[b] || y[a] - y[b]);
  const fx: number[] = [];
  const fy: number[] = [];
  let prevY = Infinity;
  for (const i of idx) {
    if (y[i] < prevY) {
      fx.push(x[i]);
      fy.push(y[i]);
      prevY = y[i];
    }
  }
  return { x: Float64Array.from(fx), y: Float64Array.from(fy), n: fx.length };
}

/**
 * Hypervolume improvement of one point p over a sorted front: the area of the box [p, r] not already
 * dominated by the front. O(front size).
 */
export function hypervolumeImprovement2d(front: SortedFront, px: number, py: number, ref: readonly [number, number]): number {
  if (!(px < ref[0] && py < ref[1])) return 0;
  // Dominated area inside [p, r] = hypervolume of the front clipped to p: points max(q, p).
  // Walk the front in x order; clipping keeps that order and the staircase shape.
  let covered = 0;
  let prevY = ref[1];
  for (let i = 0; i < front.n; i++) {
    const qx = front.x[i] > px ? front.x[i] : px;
    const qy = front.y[i] > py ? front.y[i] : py;
    if (qx >= ref[0]) break;
    if (qy < prevY) {
      covered += (ref[0] - qx) * (prevY - qy);
      prevY = qy;
    }
  }
  return (ref[0] - px) * (ref[1] - py) - covered;
}
