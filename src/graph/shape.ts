import { type Dim, type Shape, GraphError } from './types.js';

/** Largest value ONNX Slice accepts as "to the end". */
export const SLICE_END = Number.MAX_SAFE_INTEGER;

function factors(d: Dim): string[] {
  return typeof d === 'number' ? [String(d)] : d.split('*');
}

/** Product of dims, folded to a number when all are numeric; symbols are kept sorted for equality. */
export function mulDims(...dims: Dim[]): Dim {
  let num = 1;
  const syms: string[] = [];
  for (const d of dims) {
    if (typeof d === 'number') num *= d;
    else
      for (const f of factors(d)) {
        const n = Number(f);
        if (Number.isFinite(n) && f.trim() !== '') num *= n;
        else syms.push(f);
      }
  }
  if (syms.length === 0) return num;
  syms.sort();
  return num === 1 ? syms.join('*') : [String(num), ...syms].join('*');
}

export function addDims(a: Dim, b: Dim): Dim {
  if (typeof a === 'number' && typeof b === 'number') return a + b;
  if (a === 0) return b;
  if (b === 0) return a;
  return `(${a}+${b})`;
}

export function normAxis(axis: number, rank: number, what = 'axis'): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) throw new GraphError('bad_axis', `${what} ${axis} out of range for rank ${rank}`, { axis, rank });
  return a;
}

export function shapeStr(s: Shape): string {
  return `[${s.join(',')}]`;
}

/** Numpy broadcasting with symbols: equal dims, or a static 1 on either side; anything else is an error. */
export function broadcastShapes(op: string, ...shapes: Shape[]): Dim[] {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out: Dim[] = [];
  for (let i = 0; i < rank; i++) {
    let d: Dim = 1;
    for (const s of shapes) {
      const k = i - (rank - s.length);
      if (k < 0) continue;
      const e = s[k];
      if (e === 1) continue;
      if (d === 1) d = e;
      else if (d !== e) {
        throw new GraphError('shape_mismatch', `${op}: cannot broadcast ${shapes.map(shapeStr).join(' with ')}`, {
          op,
          shapes,
        });
      }
    }
    out.push(d);
  }
  return out;
}

/** Axes of `out` along which a tensor of shape `inp` was broadcast (for summing gradients back). */
export function broadcastAxes(inp: Shape, out: Shape): number[] {
  const axes: number[] = [];
  const lead = out.length - inp.length;
  for (let i = 0; i < out.length; i++) {
    if (i < lead) axes.push(i);
    else if (inp[i - lead] === 1 && out[i] !== 1) axes.push(i);
  }
  return axes;
}

export function isStatic(s: Shape): s is number[] {
  return s.every((d) => typeof d === 'number');
}
