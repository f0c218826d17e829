/**
 * Gradient rules of elementwise ops. Output gradients may arrive smaller than the output (they
 * broadcast to it); every rule here is written so that stays correct.
 */
import type { Value } from '../ir.js';
import * as ops from '../ops.js';
import type { VjpRule } from './rule.js';
import { constScalar, mulG, unbroadcast } from './helpers.js';
import { sign } from './emit.js';

const TWO_OVER_SQRT_PI = 2 / Math.sqrt(Math.PI);

/** A rule for a unary op: dx = local(x, y, g). */
function unaryRule(local: (g: Value, x: Value, y: Value) => Value): VjpRule {
  return (n, [g]) => [local(g!, n.inputs[0]!, n.outputs[0])];
}

export const add: VjpRule = (n, [g], needs) => {
  const [a, b] = n.inputs as Value[];
  return [needs[0] ? unbroadcast(g!, a) : null, needs[1] ? unbroadcast(g!, b) : null];
};

export const sub: VjpRule = (n, [g], needs) => {
  const [a, b] = n.inputs as Value[];
  // Negate after summing: the reduced tensor is the smaller one.
  return [needs[0] ? unbroadcast(g!, a) : null, needs[1] ? ops.neg(unbroadcast(g!, b)) : null];
};

export const mul: VjpRule = (n, [g], needs) => {
  const [a, b] = n.inputs as Value[];
  return [needs[0] ? unbroadcast(mulG(g!, b), a) : null, needs[1] ? unbroadcast(mulG(g!, a), b) : null];
};

export const div: VjpRule = (n, [g], needs) => {
  const [a, b] = n.inputs as Value[];
  const y = n.outputs[0];
  // d(a/b)/db = -a/b^2 = -y/b, reusing the forward quotient.
  return [
    needs[0] ? unbroadcast(ops.div(g!, b), a) : null,
    needs[1] ? ops.neg(unbroadcast(ops.div(mulG(g!, y), b), b)) : null,
  ];
};

export const pow: VjpRule = (n, [g], needs) => {
  const [x, p] = n.inputs as Value[];
  const y = n.outputs[0];
  let dx: Value | null = null;
  if (needs[0]) {
    const c = constScalar(p);
    let local: Value;
    if (c === null) local = ops.mul(ops.pow(x, ops.sub(p, 1)), p);
    else if (c === 1) local = x.graph.constant(1, x.dtype);
    else if (c === 2) local = ops.mul(x, 2);
    else if (c === 3) local = ops.mul(ops.mul(x, x), 3); // GELU's cube: two Muls beat ORT's Pow kernel
    else if (c === 0.5) local = ops.div(0.5, y);
    else local = ops.mul(ops.pow(x, c - 1), c);
    dx = unbroadcast(mulG(g!, local), x);
  }
  // d(x^p)/dp = x^p ln x (defined for x > 0).
  const dp = needs[1] ? unbroadcast(mulG(g!, ops.mul(y, ops.log(x))), p) : null;
  return [dx, dp];
};

/** Max/Min: the gradient goes to the selected operand; ties split it evenly (a valid subgradient). */
function selectRule(pick: (a: Value, b: Value) => Value): VjpRule {
  return (n, [g], needs) => {
    const [a, b] = n.inputs as Value[];
    const dt = a.dtype;
    const tie = ops.mul(ops.cast(ops.equal(a, b), dt), 0.5);
    const toA = ops.add(ops.cast(pick(a, b), dt), tie);
    return [
      needs[0] ? unbroadcast(ops.mul(g!, toA), a) : null,
      needs[1] ? unbroadcast(ops.mul(g!, ops.sub(1, toA)), b) : null,
    ];
  };
}
export const max = selectRule((a, b) => ops.greater(a, b));
export const min = selectRule((a, b) => ops.less(a, b));

export const where: VjpRule = (n, [g], needs) => {
  const [c, a, b] = n.inputs as Value[];
  return [
    null,
    needs[1] ? unbroadcast(ops.where(c, g!, 0), a) : null,
    needs[2] ? unbroadcast(ops.where(c, 0, g!), b) : null,
  ];
};

export const neg = unaryRule((g) => ops.neg(g));
export const identity = unaryRule((g) => g);
export const exp = unaryRule((g, _x, y) => mulG(g, y));
export const log = unaryRule((g, x) => ops.div(g, x));
export const sqrt = unaryRule((g, _x, y) => ops.div(ops.mul(g, 0.5), y));
export const reciprocal = unaryRule((g, _x, y) => ops.neg(mulG(g, ops.mul(y, y))));
export const tanh = unaryRule((g, _x, y) => mulG(g, ops.sub(1, ops.mul(y, y))));
export const sigmoid = unaryRule((g, _x, y) => mulG(g, ops.mul(y, ops.sub(1, y))));
export const erf = unaryRule((g, x) => mulG(g, ops.mul(ops.exp(ops.neg(ops.mul(x, x))), TWO_OVER_SQRT_PI)));
// Relu's output is positive exactly where its input is.
export const relu = unaryRule((g, _x, y) => ops.where(ops.greater(y, 0), g, 0));
export const abs = unaryRule((g, x) => mulG(g, sign(x)));
/** Cast between float types: the gradient is cast back. */
export const cast = unaryRule((g, x) => ops.cast(g, x.dtype));
