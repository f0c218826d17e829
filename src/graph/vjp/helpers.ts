/** Small pieces shared by the gradient rules: constants read at build time, broadcasting, folding. */
import type { Node, Value } from '../ir.js';
import * as ops from '../ops.js';
import { isStatic, normAxis } from '../shape.js';
import { type Dim, GraphError, type Shape } from '../types.js';

/** The elements of a constant (initializer) value, or null when it is computed or fed at run time. */
export function constData(v: Value | null | undefined): number[] | null {
  if (!v || v.source.kind !== 'initializer') return null;
  return Array.from(v.source.data as ArrayLike<number | bigint>, (x) => Number(x));
}

/** A constant whose elements all equal one number (a lifted scalar such as pow(x, 3)'s exponent). */
export function constScalar(v: Value | null | undefined): number | null {
  const d = constData(v);
  if (!d || d.length === 0) return null;
  return d.every((x) => x === d[0]) ? d[0] : null;
}

export function intAttr(n: Node, name: string, dflt: number): number {
  const a = n.attrs[name];
  return a && a.kind === 'int' ? a.value : dflt;
}

/** Shapes s and t are the same (symbols compare by name). */
export function sameShape(s: Shape, t: Shape): boolean {
  return s.length === t.length && s.every((d, i) => d === t[i]);
}

/**
 * s broadcasts to t without growing t: rank at most t's and each aligned dim equal or a static 1.
 * Symbols are trusted (reshapes may name one run-time dim in two ways).
 */
export function fitsShape(s: Shape, t: Shape): boolean {
  if (s.length > t.length) return false;
  const lead = t.length - s.length;
  return s.every((d, i) => d === 1 || d === t[i + lead] || typeof d !== 'number' || typeof t[i + lead] !== 'number');
}

function isOnes(v: Value): boolean {
  return constScalar(v) === 1;
}

/**
 * g * x, skipping the multiply when g is a constant one that does not widen x (the default seed),
 * so a scalar loss's backward starts without a wasted pass.
 */
export function mulG(g: Value, x: Value): Value {
  if (isOnes(g) && fitsShape(g.shape, x.shape) && g.shape.every((d) => d === 1)) return x;
  if (isOnes(x) && fitsShape(x.shape, g.shape) && x.shape.every((d) => d === 1)) return g;
  return ops.mul(g, x);
}

/**
 * Sum a gradient over the axes along which `x` was broadcast, so it fits x again. The result may still
 * be smaller than x (a size-1 dim where x has more, or fewer leading dims): gradients are allowed to
 * broadcast to their value's shape and are expanded only where a rule needs the full shape.
 */
export function unbroadcast(grad: Value, x: Value): Value {
  const lead = Math.max(0, grad.rank - x.rank);
  const axes: number[] = [];
  for (let i = 0; i < grad.rank; i++) {
    if (i < lead) axes.push(i);
    else {
      const xd = x.shape[i - (grad.rank - x.rank)];
      if (xd === 1 && grad.shape[i] !== 1) axes.push(i);
    }
  }
  if (axes.length === 0) return grad;
  const inner = axes.filter((a) => a >= lead);
  if (inner.length === 0) return ops.reduceSum(grad, axes, false);
  const r = ops.reduceSum(grad, axes, true);
  return lead > 0 ? ops.squeeze(r, [...Array(lead).keys()]) : r;
}

/** The run-time shape of x as an int64 vector: a constant when static. */
export function shapeVec(x: Value): Value {
  return isStatic(x.shape) ? x.graph.constant(x.shape, 'int64', [x.rank]) : ops.shapeOf(x);
}

/** Broadcast g to the full shape of x (no-op when it already has it). */
export function expandTo(g: Value, x: Value): Value {
  if (sameShape(g.shape, x.shape)) return g;
  return isStatic(x.shape) ? ops.expand(g, x.shape) : ops.expandLike(g, x);
}

/** Reshape g to x's shape, with a constant target when x's shape is static. */
export function reshapeTo(g: Value, x: Value): Value {
  if (sameShape(g.shape, x.shape)) return g;
  return isStatic(x.shape) ? ops.reshape(g, [...x.shape]) : ops.reshapeLike(g, x);
}

/** Dim `axis` of x as an int64 scalar. */
export function dimScalar(x: Value, axis: number): Value {
  const d = x.shape[axis];
  if (typeof d === 'number') return x.graph.constant(d, 'int64');
  const s = ops.slice(ops.shapeOf(x), { axes: [0], starts: [axis], ends: [axis + 1] });
  return ops.squeeze(s, [0]);
}

/**
 * Swap the last two axes of v. When v is itself a Transpose (attention's K^T), compose the two
 * permutations so the backward pass reads the forward tensor instead of transposing twice.
 */
export function transposeLast2(v: Value): Value {
  const perm = [...Array(v.rank).keys()];
  [perm[v.rank - 1], perm[v.rank - 2]] = [perm[v.rank - 2], perm[v.rank - 1]];
  return permute(v, perm);
}

export function permute(v: Value, perm: number[]): Value {
  const n = v.node;
  if (n && n.op === 'Transpose' && n.inputs[0]) {
    const src = n.inputs[0];
    const inner = permOf(n);
    const composed = perm.map((p) => inner[p]);
    if (composed.every((p, i) => p === i)) return src;
    return ops.transpose(src, composed);
  }
  if (perm.every((p, i) => p === i)) return v;
  return ops.transpose(v, perm);
}

export function permOf(n: Node): number[] {
  const a = n.attrs.perm;
  const rank = n.inputs[0]!.rank;
  return a && a.kind === 'ints' ? a.value : [...Array(rank).keys()].reverse();
}

export function invertPerm(perm: number[]): number[] {
  const inv = new Array<number>(perm.length);
  perm.forEach((p, i) => (inv[p] = i));
  return inv;
}

/** Axes read from a constant axes input (or attribute), normalised and sorted; null when absent. */
export function axesOf(n: Node, inputIndex: number, rank: number): number[] | null {
  const a = n.attrs.axes;
  let raw: number[] | null = null;
  if (a && a.kind === 'ints') raw = a.value;
  else if (n.inputs[inputIndex]) {
    raw = constData(n.inputs[inputIndex]);
    if (!raw) throw new GraphError('vjp_unsupported', `${n.op}: axes computed at run time have no gradient rule`, { op: n.op });
  }
  return raw ? raw.map((x) => normAxis(x, rank)).sort((p, q) => p - q) : null;
}

export function product(dims: readonly Dim[]): number | null {
  let p = 1;
  for (const d of dims) {
    if (typeof d !== 'number') return null;
    p *= d;
  }
  return p;
}
