/** Gradient rules of matrix products, reductions and the fused neural-network ops. */
import type { Value } from '../ir.js';
import * as ops from '../ops.js';
import { normAxis } from '../shape.js';
import { GraphError } from '../types.js';
import { scatterElements, size } from './emit.js';
import { axesOf, expandTo, intAttr, mulG, product, transposeLast2, unbroadcast } from './helpers.js';
import type { VjpRule } from './rule.js';

/**
 * MatMul: dA = G B^T, dB = A^T G, summed over broadcast batch dims. A weight shared by every batch
 * row (x[..., k] @ W[k, n]) gets one GEMM over the flattened rows instead of a batch of small
 * products and a reduction.
 */
export const matmul: VjpRule = (n, [g], needs) => {
  const [a, b] = n.inputs as Value[];
  const da = needs[0] ? unbroadcast(ops.matmul(g!, transposeLast2(b)), a) : null;
  let db: Value | null = null;
  if (needs[1]) {
    const k = a.shape[a.rank - 1];
    const m = g!.shape[g!.rank - 1];
    if (b.rank === 2 && a.rank > 2 && typeof k === 'number' && typeof m === 'number') {
      db = ops.matmul(transposeLast2(ops.reshape(a, [-1, k])), ops.reshape(g!, [-1, m]));
    } else db = unbroadcast(ops.matmul(transposeLast2(a), g!), b);
  }
  return [da, db];
};

/** Reduced axes of a Reduce* node, and the output gradient with those axes restored as size 1. */
function restore(n: Parameters<VjpRule>[0], g: Value): { axes: number[]; gk: Value; keep: boolean } {
  const x = n.inputs[0]!;
  const noop = intAttr(n, 'noop_with_empty_axes', 0) === 1;
  const axes = axesOf(n, 1, x.rank) ?? (noop ? [] : [...Array(x.rank).keys()]);
  const keep = intAttr(n, 'keepdims', 1) === 1;
  return { axes, keep, gk: keep || axes.length === 0 ? g : ops.unsqueeze(g, axes) };
}

/** The broadcast back to the input's shape is left to the consumer (gradients may broadcast). */
export const reduceSum: VjpRule = (n, [g]) => [restore(n, g!).gk];

export const reduceMean: VjpRule = (n, [g]) => {
  const x = n.inputs[0]!;
  const { axes, gk } = restore(n, g!);
  const count = product(axes.map((a) => x.shape[a]));
  if (count !== null) return [count === 1 ? gk : ops.mul(gk, 1 / count)];
  const ratio = ops.cast(ops.div(size(x), size(n.outputs[0])), x.dtype);
  return [ops.div(gk, ratio)];
};

/** ReduceMax: the gradient goes to the maxima, split evenly between ties. */
export const reduceMax: VjpRule = (n, [g]) => {
  const x = n.inputs[0]!;
  const { axes, gk, keep } = restore(n, g!);
  const y = n.outputs[0];
  const yk = keep || axes.length === 0 ? y : ops.unsqueeze(y, axes);
  const mask = ops.cast(ops.equal(x, yk), x.dtype);
  return [ops.mul(mask, ops.div(gk, ops.reduceSum(mask, axes, true)))];
};

/** Softmax: dx = y (g - sum(g y)); an additive mask input is an Add upstream and needs nothing here. */
export const softmax: VjpRule = (n, [g]) => {
  const y = n.outputs[0];
  const axis = normAxis(intAttr(n, 'axis', -1), y.rank);
  const gy = ops.mul(g!, y);
  return [ops.sub(gy, ops.mul(y, ops.reduceSum(gy, [axis], true)))];
};

/** LogSoftmax: dx = g - softmax sum(g), with softmax = exp(y) from the forward output. */
export const logSoftmax: VjpRule = (n, [g]) => {
  const y = n.outputs[0];
  const axis = normAxis(intAttr(n, 'axis', -1), y.rank);
  return [ops.sub(g!, ops.mul(ops.exp(y), ops.reduceSum(g!, [axis], true)))];
};

/**
 * LayerNormalization, from its own Mean and InvStdDev outputs (no recomputed statistics):
 * with xh = (x - mean) invStd and dxh = g scale,
 * dx = invStd (dxh - mean(dxh) - xh mean(dxh xh)); dscale = sum(g xh); dbias = sum(g).
 * Gradients reaching the Mean / InvStdDev outputs are honoured too.
 */
export const layerNormalization: VjpRule = (n, [gy, gMean, gInv], needs) => {
  const [x, scale] = n.inputs as Value[];
  const [, meanOut, invOut] = n.outputs;
  const ax = normAxis(intAttr(n, 'axis', -1), x.rank);
  const normAxes = Array.from({ length: x.rank - ax }, (_, i) => ax + i);
  const rowAxes = Array.from({ length: ax }, (_, i) => i);
  const eps = n.attrs.epsilon && n.attrs.epsilon.kind === 'float' ? n.attrs.epsilon.value : 1e-5;
  let mean = meanOut;
  let invStd = invOut;
  if (!mean || !invStd) {
    mean = ops.reduceMean(x, normAxes, true);
    const c = ops.sub(x, mean);
    invStd = ops.reciprocal(ops.sqrt(ops.add(ops.reduceMean(ops.mul(c, c), normAxes, true), eps)));
  }
  const xc = ops.sub(x, mean);
  const xh = ops.mul(xc, invStd);
  const sumRows = (v: Value): Value => (rowAxes.length ? ops.reduceSum(v, rowAxes, false) : v);
  const res: (Value | null)[] = [null, null, null];
  if (gy && needs[2]) res[2] = sumRows(gy);
  if (gy && needs[1]) res[1] = sumRows(ops.mul(gy, xh));
  if (needs[0]) {
    let dx: Value | null = null;
    if (gy) {
      const dxh = ops.mul(gy, scale);
      const mDxh = ops.reduceMean(dxh, normAxes, true);
      const mDxhXh = ops.reduceMean(ops.mul(dxh, xh), normAxes, true);
      dx = ops.mul(ops.sub(ops.sub(dxh, mDxh), ops.mul(xh, mDxhXh)), invStd);
    }
    if (gMean || gInv) {
      const count = product(normAxes.map((a) => x.shape[a]));
      if (count === null) throw new GraphError('vjp_unsupported', 'LayerNormalization: statistics gradients need static normalised dims');
      // d mean/dx = 1/C; d invStd/dx = -invStd^3 (x - mean) / C.
      if (gMean) dx = dx ? ops.add(dx, ops.mul(gMean, 1 / count)) : ops.mul(gMean, 1 / count);
      if (gInv) {
        const inv3 = ops.mul(ops.mul(invStd, invStd), invStd);
        const t = ops.mul(ops.mul(gInv, ops.mul(inv3, -1 / count)), xc);
        dx = dx ? ops.add(dx, t) : t;
      }
    }
    res[0] = dx;
  }
  return res;
};

/**
 * SoftmaxCrossEntropyLoss over logits [N, C] and int64 labels [N]: dlogits = (softmax - onehot) g
 * per row, zero for ignored rows, divided by the count of counted rows for reduction "mean".
 * The one-hot subtraction is a ScatterElements-add into exp(logProb), one pass over [N, C].
 */
export const softmaxCrossEntropyLoss: VjpRule = (n, [gLoss, gLogProb], needs) => {
  const [logits, labels, weights] = n.inputs as (Value | null)[];
  if (!needs[0]) return [null, null, null];
  if (weights) throw new GraphError('vjp_unsupported', 'SoftmaxCrossEntropyLoss with class weights has no gradient rule', { op: n.op });
  if (logits!.rank !== 2) throw new GraphError('vjp_unsupported', `SoftmaxCrossEntropyLoss: logits must be [N, C], got rank ${logits!.rank}`);
  const dt = logits!.dtype;
  const gr = logits!.graph;
  const logProb = n.outputs[1];
  if (!logProb) throw new GraphError('vjp_unsupported', 'SoftmaxCrossEntropyLoss without its log_prob output has no gradient rule');
  const p = ops.exp(logProb);
  const a = n.attrs.reduction;
  const reduction = a && a.kind === 'string' ? a.value : 'mean';
  const ign = n.attrs.ignore_index;
  let dx: Value | null = null;
  if (gLoss) {
    const lab = labels!;
    let safe = lab;
    let rowScale: Value; // [N] or scalar
    if (ign && ign.kind === 'int') {
      const keep = ops.not(ops.equal(lab, ign.value));
      const keepF = ops.cast(keep, dt);
      safe = ops.where(keep, lab, 0);
      const scaled = reduction === 'none' ? ops.mul(gLoss, keepF) : mulG(gLoss, keepF);
      rowScale = reduction === 'mean' ? ops.div(scaled, ops.maximum(ops.reduceSum(keepF, [0], false), 1)) : scaled;
    } else {
      rowScale = reduction === 'mean' ? ops.div(gLoss, ops.cast(size(lab), dt)) : gLoss;
    }
    const idx = ops.unsqueeze(safe, [1]);
    const diff = scatterElements(p, idx, expandTo(gr.constant(-1, dt), idx), 1, 'add');
    dx = mulG(rowScale.rank === 1 ? ops.unsqueeze(rowScale, [1]) : rowScale, diff);
  }
  if (gLogProb) {
    const t = ops.sub(gLogProb, ops.mul(p, ops.reduceSum(gLogProb, [1], true)));
    dx = dx ? ops.add(dx, t) : t;
  }
  return [dx, null, null];
};
