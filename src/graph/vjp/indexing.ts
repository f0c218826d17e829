/** Gradient rules of gathers and scatters (embedding lookups and their transposes). */
import type { Value } from '../ir.js';
import * as ops from '../ops.js';
import { mulDims, normAxis } from '../shape.js';
import { GraphError } from '../types.js';
import { gatherND, range as emitRange, scatterND } from './emit.js';
import { dimScalar, intAttr, invertPerm, permute } from './helpers.js';
import { zerosOf } from './movement.js';
import type { VjpRule } from './rule.js';

/**
 * Gather: rows that were read receive the output gradient, summed where an index repeats, as a
 * one-hot matmul: dData[v] = sum over the N gathered positions n with index v of g[n], i.e.
 * OneHot(idx)^T [V, N] x g [N, rest]. Not ScatterND with reduction "add": ONNX Runtime's CPU kernel
 * applies the updates in parallel, so repeated indices (every embedding lookup) lose updates as soon
 * as a session has two intra-op threads (test/graph/autodiff.test.ts shows it). The matmul costs
 * N x V x width multiply-adds instead of N x width, a small share of a training step.
 */
export const gather: VjpRule = (n, [g]) => {
  const [data, indices] = n.inputs as Value[];
  const gr = data.graph;
  const axis = normAxis(intAttr(n, 'axis', 0), data.rank);
  let idx = indices.dtype === 'int64' ? indices : ops.cast(indices, 'int64');
  idx = ops.where(ops.less(idx, 0), ops.add(idx, dimScalar(data, axis)), idx); // Gather allows negative indices
  // Bring the gathered axis to the front on both sides: g [...Q, ...rest], data [V, ...rest].
  const q = indices.rank;
  const r = data.rank;
  const permG = [
    ...Array.from({ length: q }, (_, i) => axis + i),
    ...Array.from({ length: axis }, (_, i) => i),
    ...Array.from({ length: r - axis - 1 }, (_, i) => axis + q + i),
  ];
  const permD = [axis, ...Array.from({ length: axis }, (_, i) => i), ...Array.from({ length: r - axis - 1 }, (_, i) => axis + 1 + i)];
  const gFront = axis === 0 ? g! : permute(g!, permG);
  const rest = permD.slice(1).map((p) => data.shape[p]);
  const count = mulDims(...indices.shape);
  const width = mulDims(...rest);
  const depth = data.shape[axis];
  const flat = ops.reshape(idx, [count]);
  let hot: Value; // [N, V]
  if (typeof depth === 'number') hot = ops.oneHot(flat, depth, data.dtype);
  else {
    const range = emitRange(gr.constant(0, 'int64'), dimScalar(data, axis), gr.constant(1, 'int64'), depth);
    hot = ops.cast(ops.equal(ops.unsqueeze(flat, [-1]), range), data.dtype);
  }
  const summed = ops.matmul(ops.transposeLast2(hot), ops.reshape(gFront, [count, width])); // [V, width]
  const dFront = ops.reshape(summed, permD.map((p) => data.shape[p]));
  return [axis === 0 ? dFront : permute(dFront, invertPerm(permD))];
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
