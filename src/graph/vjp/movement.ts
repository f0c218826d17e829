/** Gradient rules of ops that move data without arithmetic: reshapes, transposes, slices, joins. */
import type { Value } from '../ir.js';
import * as ops from '../ops.js';
import { isStatic, normAxis } from '../shape.js';
import { GraphError } from '../types.js';
import { expandToVec, pad, range, scatterElements, splitDynamic } from './emit.js';
import {
  axesOf,
  constData,
  dimScalar,
  expandTo,
  intAttr,
  invertPerm,
  permOf,
  permute,
  reshapeTo,
  shapeVec,
  unbroadcast,
} from './helpers.js';
import type { VjpRule } from './rule.js';

/** Zeros shaped like v (a constant-shape Expand when v's shape is static). */
export function zerosOf(v: Value): Value {
  const zero = v.graph.constant(0, v.dtype);
  return isStatic(v.shape) ? ops.expand(zero, v.shape) : ops.zerosLike(v);
}

export const reshape: VjpRule = (n, [g]) => [reshapeTo(g!, n.inputs[0]!)];

export const transpose: VjpRule = (n, [g]) => [permute(g!, invertPerm(permOf(n)))];

export const unsqueeze: VjpRule = (n, [g]) => {
  const axes = axesOf(n, 1, n.outputs[0].rank)!;
  return [ops.squeeze(g!, axes)];
};

export const squeeze: VjpRule = (n, [g]) => {
  const x = n.inputs[0]!;
  const axes = axesOf(n, 1, x.rank);
  return [axes ? ops.unsqueeze(g!, axes) : reshapeTo(g!, x)];
};

/** Expand broadcasts, so its gradient sums back over the broadcast axes. */
export const expand: VjpRule = (n, [g]) => [unbroadcast(g!, n.inputs[0]!)];

/** ONNX Slice's clamping of a start or end for a positive step. */
function clampIndex(v: number, d: number): number {
  return Math.max(0, Math.min(d, v < 0 ? v + d : v));
}

/**
 * Slice: the gradient is the output gradient placed back into zeros. Constant unit-step slices of
 * static axes become one Pad; anything else (run-time bounds, steps, symbolic axes) scatters one axis
 * at a time, reusing Slice itself on a position range so its bound semantics are matched exactly.
 */
export const slice: VjpRule = (n, [g]) => {
  const x = n.inputs[0]!;
  const r = x.rank;
  const [, startsIn, endsIn, axesIn, stepsIn] = n.inputs;
  const starts = constData(startsIn);
  const ends = constData(endsIn);
  let axes: number[] | null;
  if (axesIn) {
    axes = constData(axesIn);
    if (!axes) throw new GraphError('vjp_unsupported', 'Slice: axes computed at run time have no gradient rule', { op: 'Slice' });
  } else axes = startsIn && startsIn.rank === 1 && typeof startsIn.shape[0] === 'number' ? [...Array(startsIn.shape[0]).keys()] : null;
  if (!axes) throw new GraphError('vjp_unsupported', 'Slice: unknown number of sliced axes', { op: 'Slice' });
  const ax = axes.map((a) => normAxis(a, r));
  const steps = stepsIn ? constData(stepsIn) : ax.map(() => 1);

  if (starts && ends && steps && steps.every((s) => s === 1) && ax.every((a) => typeof x.shape[a] === 'number')) {
    const pads = new Array<number>(2 * r).fill(0);
    ax.forEach((a, i) => {
      const d = x.shape[a] as number;
      const s = clampIndex(starts[i], d);
      const e = Math.max(s, clampIndex(ends[i], d));
      pads[a] = s;
      pads[r + a] = d - e;
    });
    return [pad(g!, pads, x.shape)];
  }

  const gr = x.graph;
  const part = (v: Value | null, consts: number[] | null, i: number, dflt: number): Value => {
    if (consts) return gr.constant([consts[i]], 'int64', [1]);
    if (!v) return gr.constant([dflt], 'int64', [1]);
    const v64 = v.dtype === 'int64' ? v : ops.cast(v, 'int64');
    return ops.slice(v64, { axes: [0], starts: [i], ends: [i + 1] });
  };
  let cur = g!;
  const done = new Array<boolean>(r).fill(false);
  for (let i = ax.length - 1; i >= 0; i--) {
    const a = ax[i];
    const positions = gr.addNode(
      'Slice',
      [
        range(gr.constant(0, 'int64'), dimScalar(x, a), gr.constant(1, 'int64'), x.shape[a]),
        part(startsIn, starts, i, 0),
        part(endsIn, ends, i, 0),
        gr.constant([0], 'int64', [1]),
        part(stepsIn ?? null, steps, i, 1),
      ],
      {},
      [{ dtype: 'int64', shape: [cur.shape[a]] }],
    )[0];
    const idx = expandTo(
      ops.unsqueeze(positions, [...Array(r).keys()].filter((k) => k !== a)),
      cur,
    );
    done[a] = true;
    const nextShape = cur.shape.map((d, k) => (done[k] ? x.shape[k] : d));
    const vec = ops.where(gr.constant(done.map(Number), 'bool', [r]), shapeVec(x), shapeVec(cur));
    cur = scatterElements(expandToVec(gr.constant(0, x.dtype), vec, nextShape), idx, cur, a, 'none');
  }
  return [cur];
};

export const concat: VjpRule = (n, [g], needs) => {
  const xs = n.inputs as Value[];
  const a = normAxis(intAttr(n, 'axis', 0), xs[0].rank);
  const wanted = needs.filter(Boolean).length;
  const sizes = xs.map((x) => x.shape[a]);
  if (sizes.every((d) => typeof d === 'number')) {
    const sz = sizes as number[];
    if (wanted > 1) {
      const parts = ops.split(g!, sz, a);
      return parts.map((p, i) => (needs[i] ? p : null));
    }
    let off = 0;
    return xs.map((_, i) => {
      const start = off;
      off += sz[i];
      return needs[i] ? ops.slice(g!, { axes: [a], starts: [start], ends: [start + sz[i]] }) : null;
    });
  }
  const gr = g!.graph;
  const sizeVec = ops.concat(
    xs.map((x) => (typeof x.shape[a] === 'number' ? gr.constant([x.shape[a] as number], 'int64', [1]) : ops.unsqueeze(dimScalar(x, a), [0]))),
    0,
  );
  const parts = splitDynamic(g!, sizeVec, a, xs.map((x) => x.shape));
  return parts.map((p, i) => (needs[i] ? p : null));
};

export const split: VjpRule = (n, grads) => {
  const a = normAxis(intAttr(n, 'axis', 0), n.inputs[0]!.rank);
  const parts = n.outputs.map((o, i) => (grads[i] ? expandTo(grads[i]!, o) : zerosOf(o)));
  return [ops.concat(parts, a)];
};
