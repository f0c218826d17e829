/** Gradient rules of gathers and scatters (embedding lookups and their transposes). */
import type { Value } from '../ir.js';
import * as ops from '../ops.js';
import { isStatic, normAxis } from '../shape.js';
import { GraphError } from '../types.js';
import { expandToVec, gatherND, scatterND } from './emit.js';
import { dimScalar, intAttr, invertPerm, permute } from './helpers.js';
import { zerosOf } from './movement.js';
import type { VjpRule } from './rule.js';

/**
 * Gather: rows that were read receive the output gradient, summed where an index repeats. ScatterND
 * with reduction "add" does that in one pass over the gradient, O(tokens x width), rather than a
 * one-hot matmul over the whole table.
 */
export const gather: VjpRule = (n, [g]) => {
  const [data, indices] = n.inputs as Value[];
  const gr = data.graph;
  const axis = normAxis(intAttr(n, 'axis', 0), data.rank);
  let idx = indices.dtype === 'int64' ? indices : ops.cast(indices, 'int64');
  idx = ops.where(ops.less(idx, 0), ops.add(idx, dimScalar(data, axis)), idx); // Gather allows negative indices
  const loc = ops.unsqueeze(idx, [-1]);
  if (axis === 0) return [scatterND(zerosOf(data), loc, g!, 'add')];
  // Bring the gathered axis to the front on both sides, scatter, and move it back.
  const q = indices.rank;
  const r = data.rank;
  const permG = [
    ...Array.from({ length: q }, (_, i) => axis + i),
    ...Array.from({ length: axis }, (_, i) => i),
    ...Array.from({ length: r - axis - 1 }, (_, i) => axis + q + i),
  ];
  const permD = [axis, ...Array.from({ length: axis }, (_, i) => i), ...Array.from({ length: r - axis - 1 }, (_, i) => axis + 1 + i)];
  const tShape = permD.map((p) => data.shape[p]);
  const zero = gr.constant(0, data.dtype);
  const zeros = isStatic(tShape)
    ? ops.expand(zero, tShape)
    : expandToVec(zero, ops.gather(ops.shapeOf(data), gr.constant(permD, 'int64', [r])), tShape);
  return [permute(scatterND(zeros, loc, permute(g!, permG), 'add'), invertPerm(permD))];
};

export const scatterNd: VjpRule = (n, [g], needs) => {
  const [, indices, updates] = n.inputs as Value[];
  const a = n.attrs.reduction;
  const reduction = a && a.kind === 'string' ? a.value : 'none';
  if (reduction !== 'none' && reduction !== 'add') {
    throw new GraphError('vjp_unsupported', `ScatterND with reduction "${reduction}" has no gradient rule`, { op: 'ScatterND', reduction });
  }
  // Overwritten positions of `data` do not reach the output; added ones pass straight through.
  const dData = needs[0] ? (reduction === 'add' ? g! : scatterND(g!, indices, zerosOf(updates), 'none')) : null;
  const dUpdates = needs[2] ? gatherND(g!, indices, updates.shape) : null;
  return [dData, null, dUpdates];
};
