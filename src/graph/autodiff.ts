/**
 * Reverse-mode autodiff over the IR, in the shape of tinygrad's gradient.py: one table of
 * vector-Jacobian rules keyed by op, and one walk over the nodes that lie between the requested
 * parameters and the loss. The backward pass is emitted into the same graph, so a train-step graph
 * is the forward graph plus the gradient outputs.
 */
import type { Node, Value } from './ir.js';
import * as ops from './ops.js';
import { GraphError, isFloat } from './types.js';
import * as ew from './vjp/elementwise.js';
import { expandTo, fitsShape } from './vjp/helpers.js';
import * as ix from './vjp/indexing.js';
import * as mv from './vjp/movement.js';
import * as nn from './vjp/nn.js';
import type { VjpRule } from './vjp/rule.js';

export type { VjpRule } from './vjp/rule.js';

/** The rule of every differentiable op, by ONNX op type. */
export const VJP_RULES: Readonly<Record<string, VjpRule>> = Object.freeze({
  // elementwise arithmetic (broadcasting)
  Add: ew.add,
  Sub: ew.sub,
  Mul: ew.mul,
  Div: ew.div,
  Pow: ew.pow,
  Max: ew.max,
  Min: ew.min,
  Where: ew.where,
  // elementwise unary
  Neg: ew.neg,
  Identity: ew.identity,
  Exp: ew.exp,
  Log: ew.log,
  Sqrt: ew.sqrt,
  Reciprocal: ew.reciprocal,
  Tanh: ew.tanh,
  Sigmoid: ew.sigmoid,
  Erf: ew.erf,
  Relu: ew.relu,
  Abs: ew.abs,
  Cast: ew.cast,
  // products and reductions
  MatMul: nn.matmul,
  ReduceSum: nn.reduceSum,
  ReduceMean: nn.reduceMean,
  ReduceMax: nn.reduceMax,
  // fused nn ops
  Softmax: nn.softmax,
  LogSoftmax: nn.logSoftmax,
  LayerNormalization: nn.layerNormalization,
  SoftmaxCrossEntropyLoss: nn.softmaxCrossEntropyLoss,
  // data movement
  Reshape: mv.reshape,
  Transpose: mv.transpose,
  Unsqueeze: mv.unsqueeze,
  Squeeze: mv.squeeze,
  Expand: mv.expand,
  Slice: mv.slice,
  Concat: mv.concat,
  Split: mv.split,
  Gather: ix.gather,
  ScatterND: ix.scatterNd,
});

/**
 * Ops whose rules accept an output gradient that merely broadcasts to the output. Gradients coming
 * out of reductions and broadcasts stay small until a rule outside this set needs the full shape,
 * which saves a materialised Expand per broadcast (RMSNorm, attention scales, biases).
 */
export const BROADCAST_TOLERANT: ReadonlySet<string> = new Set([
  'Add', 'Sub', 'Mul', 'Div', 'Pow', 'Max', 'Min', 'Where', 'Neg', 'Identity', 'Exp', 'Log', 'Sqrt',
  'Reciprocal', 'Tanh', 'Sigmoid', 'Erf', 'Relu', 'Abs', 'Cast', 'Expand',
]);

export interface GradOptions {
  /** Gradient of the final objective w.r.t. `loss` (a vector-Jacobian seed); ones by default. */
  seed?: Value;
  /** Rules that replace or extend the table for this call (experimental ops, tests of the walk). */
  rules?: Readonly<Record<string, VjpRule>>;
}

export interface GradientPath {
  /** Nodes on a path from a requested parameter to the loss, in graph order: the only ones differentiated. */
  nodes: Node[];
  /** Float values that depend on a requested parameter (the parameters included). */
  dependent: Set<Value>;
}

const ruleKey = (n: Node): string => (n.domain ? `${n.domain}:${n.op}` : n.op);

/**
 * The pruned part of the graph that a gradient needs: forward from the parameters (what depends on
 * them), intersected with backward from the loss (what the loss depends on). Frozen weights and
 * everything computed before the lowest parameter fall outside it.
 */
export function gradientPath(loss: Value, params: readonly Value[]): GradientPath {
  const g = loss.graph;
  const end = loss.node ? g.nodes.indexOf(loss.node) + 1 : 0;
  const dependent = new Set<Value>(params);
  for (let i = 0; i < end; i++) {
    const n = g.nodes[i];
    if (n.inputs.some((v) => v !== null && dependent.has(v))) {
      // Integer and boolean outputs (shapes, indices, masks) carry no gradient.
      for (const o of n.outputs) if (isFloat(o.dtype)) dependent.add(o);
    }
  }
  const onPath = new Set<Node>();
  const seen = new Set<Value>();
  const stack = dependent.has(loss) ? [loss] : [];
  while (stack.length) {
    const v = stack.pop()!;
    if (seen.has(v)) continue;
    seen.add(v);
    const n = v.node;
    if (!n || onPath.has(n)) continue;
    // A parameter computed by a node (an activation) is where the walk stops: its producer is only on
    // the path if one of its own inputs depends on a parameter.
    const inner = n.inputs.filter((i): i is Value => i !== null && dependent.has(i));
    if (inner.length === 0) continue;
    onPath.add(n);
    stack.push(...inner);
  }
  return { nodes: g.nodes.slice(0, end).filter((n) => onPath.has(n)), dependent };
}

/**
 * Emit the gradients of `loss` w.r.t. each of `params` into loss's graph and return them (each with
 * its parameter's shape and dtype). Values used several times accumulate their gradients; a parameter
 * the loss does not depend on gets zeros. An op without a rule on the path is a GraphError naming it.
 */
export function grad(loss: Value, params: readonly Value[], opts: GradOptions = {}): Value[] {
  const g = loss.graph;
  if (!isFloat(loss.dtype)) throw new GraphError('not_differentiable', `loss ${loss} is not a float tensor`, { loss: loss.name });
  for (const p of params) {
    if (p.graph !== g) throw new GraphError('foreign_value', `parameter ${p.name} belongs to another graph`);
    if (!isFloat(p.dtype)) throw new GraphError('not_differentiable', `parameter ${p} is not a float tensor`, { param: p.name });
  }
  const seed = opts.seed ?? g.constant(1, loss.dtype);
  if (seed.graph !== g || seed.dtype !== loss.dtype || !fitsShape(seed.shape, loss.shape)) {
    throw new GraphError('bad_seed', `seed ${seed} does not fit loss ${loss}`, { seed: seed.name, loss: loss.name });
  }
  const rules = opts.rules ? { ...VJP_RULES, ...opts.rules } : VJP_RULES;
  const { nodes, dependent } = gradientPath(loss, params);

  const grads = new Map<Value, Value>();
  if (dependent.has(loss)) grads.set(loss, seed);
  for (let i = nodes.length - 1; i >= 0; i--) {
    const n = nodes[i];
    let outGrads = n.outputs.map((o) => grads.get(o) ?? null);
    if (outGrads.every((x) => x === null)) continue;
    const key = ruleKey(n);
    const rule = rules[key];
    if (!rule) {
      throw new GraphError('no_vjp', `no gradient rule for op ${key} (node ${n.op}_${n.id}) on the path from a parameter to the loss`, {
        op: key,
        node: n.id,
      });
    }
    if (!BROADCAST_TOLERANT.has(key) || opts.rules?.[key]) outGrads = outGrads.map((gv, k) => gv && expandTo(gv, n.outputs[k]));
    const needs = n.inputs.map((v) => v !== null && dependent.has(v));
    const res = rule(n, outGrads, needs);
    n.inputs.forEach((v, k) => {
      const r = res[k];
      if (!v || !needs[k] || !r) return;
      if (r.dtype !== v.dtype || !fitsShape(r.shape, v.shape)) {
        throw new GraphError('vjp_shape', `${key} rule gave ${r} as the gradient of input ${k} ${v}`, {
          op: key,
          input: k,
          got: r.shape,
          want: v.shape,
        });
      }
      const prev = grads.get(v);
      grads.set(v, prev ? ops.add(prev, r) : r);
    });
  }
  return params.map((p) => {
    const gp = grads.get(p);
    return gp ? expandTo(gp, p) : mv.zerosOf(p);
  });
}
