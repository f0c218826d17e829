/**
 * Builders for the few ONNX ops that only gradient rules need (scatters, Pad, Range, Sign, ...).
 * They live here rather than in ops.ts so the forward-op API that models build on stays small.
 */
import { type Attrs, type Graph, type Value, attr } from '../ir.js';
import type { Dim, Shape } from '../types.js';

function one(g: Graph, op: string, inputs: (Value | null)[], attrs: Attrs, v: { dtype: Value['dtype']; shape: Shape }): Value {
  return g.addNode(op, inputs, attrs, [v])[0];
}

export const sign = (x: Value): Value => one(x.graph, 'Sign', [x], {}, x);

/** Constant zero padding: `pads` is [begin_0..begin_{r-1}, end_0..end_{r-1}], `shape` the padded shape. */
export function pad(x: Value, pads: number[], shape: Shape): Value {
  const g = x.graph;
  return one(g, 'Pad', [x, g.constant(pads, 'int64', [pads.length])], {}, { dtype: x.dtype, shape });
}

/** ScatterElements along `axis`; reduction "add" sums duplicates, "none" overwrites. */
export function scatterElements(data: Value, indices: Value, updates: Value, axis: number, reduction: 'none' | 'add'): Value {
  return one(
    data.graph,
    'ScatterElements',
    [data, indices, updates],
    { axis: attr.int(axis), reduction: attr.string(reduction) },
    data,
  );
}

export function scatterND(data: Value, indices: Value, updates: Value, reduction: 'none' | 'add'): Value {
  return one(data.graph, 'ScatterND', [data, indices, updates], { reduction: attr.string(reduction) }, data);
}

export function gatherND(data: Value, indices: Value, shape: Shape): Value {
  return one(data.graph, 'GatherND', [data, indices], {}, { dtype: data.dtype, shape });
}

/** int64 [start, limit) with step `delta`; all three are int64 scalars. */
export function range(start: Value, limit: Value, delta: Value, len: Dim): Value {
  return one(start.graph, 'Range', [start, limit, delta], {}, { dtype: 'int64', shape: [len] });
}

/** Broadcast x to the run-time shape held in the int64 vector `shapeVec`; `shape` is its IR shape. */
export function expandToVec(x: Value, shapeVec: Value, shape: Shape): Value {
  return one(x.graph, 'Expand', [x, shapeVec], {}, { dtype: x.dtype, shape });
}

/** Split with run-time sizes (an int64 vector), for concatenations along symbolic dims. */
export function splitDynamic(x: Value, sizes: Value, axis: number, shapes: Shape[]): Value[] {
  return x.graph.addNode(
    'Split',
    [x, sizes],
    { axis: attr.int(axis) },
    shapes.map((shape) => ({ dtype: x.dtype, shape })),
  );
}

/** Number of elements of x, as an int64 scalar. */
export const size = (x: Value): Value => one(x.graph, 'Size', [x], {}, { dtype: 'int64', shape: [] });
