/**
 * Op builders: each appends one ONNX op (opset 18) to the graph of its inputs and infers the output
 * type. Shape errors surface here, at build time, naming the op and the shapes.
 */
import { type Attrs, type Graph, type Value, attr } from './ir.js';
import { SLICE_END, addDims, broadcastShapes, mulDims, normAxis, shapeStr } from './shape.js';
import { type DType, type Dim, type Shape, GraphError, isFloat } from './types.js';

type Operand = Value | number;

function graphOf(...xs: Operand[]): Graph {
  for (const x of xs) if (typeof x !== 'number') return x.graph;
  throw new GraphError('no_graph', 'an op needs at least one Value operand');
}

function dtypeOf(...xs: Operand[]): DType {
  for (const x of xs) if (typeof x !== 'number') return x.dtype;
  throw new GraphError('no_graph', 'an op needs at least one Value operand');
}

/** Lift a number to a scalar constant of the other operand's dtype. */
function lift(x: Operand, dtype: DType, g: Graph): Value {
  return typeof x === 'number' ? g.constant(x, dtype) : x;
}

function checkSameDtype(op: string, ...xs: Value[]): void {
  const d = xs[0].dtype;
  for (const x of xs) {
    if (x.dtype !== d) throw new GraphError('dtype_mismatch', `${op}: dtypes ${xs.map((v) => v.dtype).join(' vs ')}`, { op });
  }
}

function one(g: Graph, op: string, inputs: (Value | null)[], attrs: Attrs, dtype: DType, shape: Shape, domain = ''): Value {
  return g.addNode(op, inputs, attrs, [{ dtype, shape }], domain)[0];
}

function ints64(g: Graph, values: number[]): Value {
  return g.constant(values, 'int64', [values.length]);
}

// ---------------------------------------------------------------- elementwise

function binary(op: string, a: Operand, b: Operand): Value {
  const g = graphOf(a, b);
  const dt = dtypeOf(a, b);
  const x = lift(a, dt, g);
  const y = lift(b, dt, g);
  checkSameDtype(op, x, y);
  return one(g, op, [x, y], {}, dt, broadcastShapes(op, x.shape, y.shape));
}

export const add = (a: Operand, b: Operand): Value => binary('Add', a, b);
export const sub = (a: Operand, b: Operand): Value => binary('Sub', a, b);
export const mul = (a: Operand, b: Operand): Value => binary('Mul', a, b);
export const div = (a: Operand, b: Operand): Value => binary('Div', a, b);
export const pow = (a: Operand, b: Operand): Value => binary('Pow', a, b);
/** Elementwise maximum / minimum (two operands). */
export const maximum = (a: Operand, b: Operand): Value => binary('Max', a, b);
export const minimum = (a: Operand, b: Operand): Value => binary('Min', a, b);

function compare(op: string, a: Operand, b: Operand): Value {
  const g = graphOf(a, b);
  const dt = dtypeOf(a, b);
  const x = lift(a, dt, g);
  const y = lift(b, dt, g);
  checkSameDtype(op, x, y);
  return one(g, op, [x, y], {}, 'bool', broadcastShapes(op, x.shape, y.shape));
}
export const equal = (a: Operand, b: Operand): Value => compare('Equal', a, b);
export const less = (a: Operand, b: Operand): Value => compare('Less', a, b);
export const greater = (a: Operand, b: Operand): Value => compare('Greater', a, b);

function unary(op: string, x: Value, attrs: Attrs = {}): Value {
  return one(x.graph, op, [x], attrs, x.dtype, x.shape);
}
export const neg = (x: Value): Value => unary('Neg', x);
export const exp = (x: Value): Value => unary('Exp', x);
export const log = (x: Value): Value => unary('Log', x);
export const sqrt = (x: Value): Value => unary('Sqrt', x);
export const reciprocal = (x: Value): Value => unary('Reciprocal', x);
export const tanh = (x: Value): Value => unary('Tanh', x);
export const erf = (x: Value): Value => unary('Erf', x);
export const sigmoid = (x: Value): Value => unary('Sigmoid', x);
export const relu = (x: Value): Value => unary('Relu', x);
export const abs = (x: Value): Value => unary('Abs', x);
export const identity = (x: Value): Value => unary('Identity', x);
export const not = (x: Value): Value => unary('Not', x);

export function where(cond: Value, a: Operand, b: Operand): Value {
  const g = cond.graph;
  const dt = dtypeOf(a, b);
  const x = lift(a, dt, g);
  const y = lift(b, dt, g);
  checkSameDtype('Where', x, y);
  if (cond.dtype !== 'bool') throw new GraphError('dtype_mismatch', `Where: condition is ${cond.dtype}, needs bool`);
  return one(g, 'Where', [cond, x, y], {}, dt, broadcastShapes('Where', cond.shape, x.shape, y.shape));
}

export function cast(x: Value, to: DType): Value {
  if (x.dtype === to) return x;
  return one(x.graph, 'Cast', [x], { to: attr.int(onnxTypeCode(to)) }, to, x.shape);
}

/** ONNX TensorProto.DataType codes. */
export function onnxTypeCode(d: DType): number {
  switch (d) {
    case 'float32':
      return 1;
    case 'uint8':
      return 2;
    case 'int32':
      return 6;
    case 'int64':
      return 7;
    case 'bool':
      return 9;
    case 'float64':
      return 11;
  }
}

// ---------------------------------------------------------------- linear algebra

/** Batched matmul with numpy semantics; both operands need rank >= 2. */
export function matmul(a: Value, b: Value): Value {
  checkSameDtype('MatMul', a, b);
  if (a.rank < 2 || b.rank < 2) {
    throw new GraphError('shape_mismatch', `MatMul: operands need rank >= 2, got ${shapeStr(a.shape)} and ${shapeStr(b.shape)}`);
  }
  const [m, k1] = a.shape.slice(-2);
  const [k2, n] = b.shape.slice(-2);
  if (k1 !== k2) {
    throw new GraphError('shape_mismatch', `MatMul: inner dims differ: ${shapeStr(a.shape)} @ ${shapeStr(b.shape)}`, {
      a: a.shape,
      b: b.shape,
    });
  }
  const batch = broadcastShapes('MatMul', a.shape.slice(0, -2), b.shape.slice(0, -2));
  return one(a.graph, 'MatMul', [a, b], {}, a.dtype, [...batch, m, n]);
}

// ---------------------------------------------------------------- shape ops

/** The runtime shape of x as an int64 vector. */
export function shapeOf(x: Value): Value {
  return one(x.graph, 'Shape', [x], {}, 'int64', [x.rank]);
}

/**
 * A runtime int64 vector holding `dims`. Numbers become constants; a symbol is read off the first
 * graph value that carries it (inputs first); a product symbol ("B*T") is the product of its factors.
 */
export function shapeTensor(g: Graph, dims: Shape): Value {
  if (dims.every((d) => typeof d === 'number')) return ints64(g, dims as number[]);
  const parts = dims.map((d) => dimTensor(g, d));
  return one(g, 'Concat', parts, { axis: attr.int(0) }, 'int64', [dims.length]);
}

function dimTensor(g: Graph, d: Dim): Value {
  if (typeof d === 'number') return ints64(g, [d]);
  const candidates = [...g.inputs, ...g.nodes.flatMap((n) => n.outputs)];
  for (const v of candidates) {
    const idx = v.shape.indexOf(d);
    if (idx >= 0) {
      const s = shapeOf(v);
      return one(g, 'Slice', [s, ints64(g, [idx]), ints64(g, [idx + 1])], {}, 'int64', [1]);
    }
  }
  const fs = d.split('*');
  if (fs.length > 1) {
    let acc = dimTensor(g, maybeNum(fs[0]));
    for (const f of fs.slice(1)) acc = mul(acc, dimTensor(g, maybeNum(f)));
    return acc;
  }
  throw new GraphError('unknown_symbol', `cannot compute symbolic dim "${d}" at run time: no value carries it`, { dim: d });
}

function maybeNum(s: string): Dim {
  const n = Number(s);
  return Number.isFinite(n) && s.trim() !== '' ? n : s;
}

/**
 * Reshape to `target` (numbers and symbols; at most one -1). Dims equal to the input's dim at the same
 * position are copied (ONNX 0); a single remaining symbol becomes -1; otherwise the shape is computed.
 */
export function reshape(x: Value, target: Dim[]): Value {
  const g = x.graph;
  const out: Dim[] = [...target];
  const minus = out.filter((d) => d === -1).length;
  if (minus > 1) throw new GraphError('bad_reshape', `Reshape: more than one -1 in ${shapeStr(target)}`);
  if (minus === 1) {
    const known = out.filter((d) => d !== -1);
    const total = mulDims(...x.shape);
    const rest = mulDims(...known);
    out[out.indexOf(-1)] =
      typeof total === 'number' && typeof rest === 'number' ? total / rest : divideDims(total, rest, x.shape, target);
  }
  const totalIn = mulDims(...x.shape);
  const totalOut = mulDims(...out);
  if (typeof totalIn === 'number' && typeof totalOut === 'number' && totalIn !== totalOut) {
    throw new GraphError('bad_reshape', `Reshape: ${shapeStr(x.shape)} has ${totalIn} elements, target ${shapeStr(target)} ${totalOut}`);
  }
  // Encode: copy (0), static numbers, at most one inferred (-1); otherwise compute at run time.
  const enc: (number | null)[] = out.map((d, i) => (typeof d === 'number' ? d : i < x.rank && x.shape[i] === d ? 0 : null));
  const unknown = enc.filter((e) => e === null).length;
  let shapeVal: Value;
  if (enc.includes(0) && out.some((d) => d === 0)) {
    shapeVal = shapeTensor(g, out); // a literal zero-size dim: never use the copy code
  } else if (unknown <= 1) {
    shapeVal = ints64(
      g,
      enc.map((e) => (e === null ? -1 : e)),
    );
  } else shapeVal = shapeTensor(g, out);
  return one(g, 'Reshape', [x, shapeVal], {}, x.dtype, out);
}

function divideDims(total: Dim, rest: Dim, inShape: Shape, target: Dim[]): Dim {
  // Numeric factors divide as numbers ("12*B" / 4 = "3*B"); symbols cancel by name.
  const split = (d: Dim): { num: number; syms: string[] } => {
    let num = 1;
    const syms: string[] = [];
    for (const f of String(d).split('*')) {
      const n = maybeNum(f);
      if (typeof n === 'number') num *= n;
      else syms.push(n);
    }
    return { num, syms };
  };
  const t = split(total);
  const r = split(rest);
  for (const f of r.syms) {
    const i = t.syms.indexOf(f);
    if (i < 0) throw new GraphError('bad_reshape', `Reshape: cannot infer -1 for ${shapeStr(inShape)} -> ${shapeStr(target)}`);
    t.syms.splice(i, 1);
  }
  if (t.num % r.num !== 0) throw new GraphError('bad_reshape', `Reshape: cannot infer -1 for ${shapeStr(inShape)} -> ${shapeStr(target)}`);
  return mulDims(t.num / r.num, ...t.syms);
}

/** Reshape to the run-time shape of `like`. */
export function reshapeLike(x: Value, like: Value): Value {
  return one(x.graph, 'Reshape', [x, shapeOf(like)], {}, x.dtype, like.shape);
}

export function transpose(x: Value, perm: number[]): Value {
  if (perm.length !== x.rank || [...perm].sort((a, b) => a - b).some((p, i) => p !== i)) {
    throw new GraphError('bad_perm', `Transpose: perm [${perm}] invalid for rank ${x.rank}`);
  }
  return one(x.graph, 'Transpose', [x], { perm: attr.ints(perm) }, x.dtype, perm.map((p) => x.shape[p]));
}

/** Swap the last two axes. */
export function transposeLast2(x: Value): Value {
  const perm = [...Array(x.rank).keys()];
  [perm[x.rank - 1], perm[x.rank - 2]] = [perm[x.rank - 2], perm[x.rank - 1]];
  return transpose(x, perm);
}

export function unsqueeze(x: Value, axes: number[]): Value {
  const rank = x.rank + axes.length;
  const norm = axes.map((a) => normAxis(a, rank)).sort((a, b) => a - b);
  const out: Dim[] = [];
  let k = 0;
  for (let i = 0; i < rank; i++) out.push(norm.includes(i) ? 1 : x.shape[k++]);
  return one(x.graph, 'Unsqueeze', [x, ints64(x.graph, norm)], {}, x.dtype, out);
}

export function squeeze(x: Value, axes: number[]): Value {
  const norm = axes.map((a) => normAxis(a, x.rank));
  for (const a of norm) {
    if (x.shape[a] !== 1) throw new GraphError('shape_mismatch', `Squeeze: axis ${a} of ${shapeStr(x.shape)} is not 1`);
  }
  return one(
    x.graph,
    'Squeeze',
    [x, ints64(x.graph, norm)],
    {},
    x.dtype,
    x.shape.filter((_, i) => !norm.includes(i)),
  );
}

export interface SliceSpec {
  axes: number[];
  starts: number[];
  ends: number[];
  steps?: number[];
}

/** Static slice; ends may be SLICE_END ("to the end"). Negative starts/ends count from the end. */
export function slice(x: Value, spec: SliceSpec): Value {
  const steps = spec.steps ?? spec.axes.map(() => 1);
  const out = [...x.shape];
  spec.axes.forEach((ax, i) => {
    const a = normAxis(ax, x.rank);
    out[a] = sliceDim(x.shape[a], spec.starts[i], spec.ends[i], steps[i]);
  });
  const g = x.graph;
  return one(
    g,
    'Slice',
    [x, ints64(g, spec.starts), ints64(g, spec.ends.map((e) => Math.min(e, SLICE_END))), ints64(g, spec.axes), ints64(g, steps)],
    {},
    x.dtype,
    out,
  );
}

function sliceDim(d: Dim, start: number, end: number, step: number): Dim {
  if (step !== 1 && typeof d !== 'number') return `slice(${d},${start},${end},${step})`;
  if (typeof d === 'number') {
    // ONNX clamps start and end to [0, d] for positive steps; for negative ones start to [0, d-1], end to [-1, d-1].
    const clamp = (v: number, lo: number, hi: number): number => Math.max(lo, Math.min(hi, v < 0 ? v + d : v));
    const s = step > 0 ? clamp(start, 0, d) : clamp(start, 0, d - 1);
    const e = step > 0 ? clamp(end, 0, d) : clamp(end, -1, d - 1);
    return step > 0 ? Math.max(0, Math.ceil((e - s) / step)) : Math.max(0, Math.ceil((s - e) / -step));
  }
  if (start === 0 && end >= SLICE_END) return d;
  if (start >= 0 && end > 0 && end < SLICE_END) return end - start; // assumes d >= end, checked at run time by ORT
  return `slice(${d},${start},${end})`;
}

/** Slice along one axis with run-time start/end (int64 [1] tensors), for KV caches. */
export function sliceDynamic(x: Value, axis: number, start: Value, end: Value, outDim: Dim): Value {
  const g = x.graph;
  const a = normAxis(axis, x.rank);
  const out = [...x.shape];
  out[a] = outDim;
  return one(g, 'Slice', [x, start, end, ints64(g, [a])], {}, x.dtype, out);
}

export function concat(xs: Value[], axis: number): Value {
  if (xs.length === 0) throw new GraphError('empty', 'Concat of nothing');
  checkSameDtype('Concat', ...xs);
  const rank = xs[0].rank;
  const a = normAxis(axis, rank);
  const out = [...xs[0].shape];
  for (const x of xs.slice(1)) {
    if (x.rank !== rank) throw new GraphError('shape_mismatch', `Concat: ranks differ (${xs.map((v) => shapeStr(v.shape)).join(', ')})`);
    x.shape.forEach((d, i) => {
      if (i !== a && d !== out[i]) {
        throw new GraphError('shape_mismatch', `Concat: dim ${i} differs (${xs.map((v) => shapeStr(v.shape)).join(', ')})`);
      }
    });
    out[a] = addDims(out[a], x.shape[a]);
  }
  return one(xs[0].graph, 'Concat', xs, { axis: attr.int(a) }, xs[0].dtype, out);
}

export function split(x: Value, sizes: number[], axis: number): Value[] {
  const a = normAxis(axis, x.rank);
  const d = x.shape[a];
  const total = sizes.reduce((s, v) => s + v, 0);
  if (typeof d === 'number' && d !== total) {
    throw new GraphError('shape_mismatch', `Split: sizes [${sizes}] sum to ${total}, axis ${a} of ${shapeStr(x.shape)} is ${d}`);
  }
  const outs = sizes.map((s) => {
    const sh = [...x.shape];
    sh[a] = s;
    return { dtype: x.dtype, shape: sh };
  });
  return x.graph.addNode('Split', [x, ints64(x.graph, sizes)], { axis: attr.int(a) }, outs);
}

/** Broadcast x to `dims` (numbers or symbols resolved at run time). */
export function expand(x: Value, dims: Shape): Value {
  const out = broadcastShapes('Expand', x.shape, dims);
  return one(x.graph, 'Expand', [x, shapeTensor(x.graph, dims)], {}, x.dtype, out);
}

/** Broadcast x to the run-time shape of `like`. */
export function expandLike(x: Value, like: Value): Value {
  const out = broadcastShapes('Expand', x.shape, like.shape);
  return one(x.graph, 'Expand', [x, shapeOf(like)], {}, x.dtype, out);
}

/** Zeros with the run-time shape and dtype of `like`. */
export function zerosLike(like: Value): Value {
  return expandLike(like.graph.constant(0, like.dtype), like);
}

// ---------------------------------------------------------------- reductions

function reduce(op: string, x: Value, axes: number[], keepdims: boolean): Value {
  const norm = axes.map((a) => normAxis(a, x.rank)).sort((a, b) => a - b);
  const out: Dim[] = [];
  x.shape.forEach((d, i) => {
    if (!norm.includes(i)) out.push(d);
    else if (keepdims) out.push(1);
  });
  return one(x.graph, op, [x, ints64(x.graph, norm)], { keepdims: attr.int(keepdims ? 1 : 0) }, x.dtype, out);
}
export const reduceSum = (x: Value, axes: number[], keepdims = false): Value => reduce('ReduceSum', x, axes, keepdims);
export const reduceMean = (x: Value, axes: number[], keepdims = false): Value => reduce('ReduceMean', x, axes, keepdims);
export const reduceMax = (x: Value, axes: number[], keepdims = false): Value => reduce('ReduceMax', x, axes, keepdims);

// ---------------------------------------------------------------- nn

export function softmax(x: Value, axis = -1): Value {
  return unary('Softmax', x, { axis: attr.int(normAxis(axis, x.rank)) });
}

export function logSoftmax(x: Value, axis = -1): Value {
  return unary('LogSoftmax', x, { axis: attr.int(normAxis(axis, x.rank)) });
}

/** Gather along `axis` (embedding lookup with axis 0). */
export function gather(data: Value, indices: Value, axis = 0): Value {
  if (indices.dtype !== 'int64' && indices.dtype !== 'int32') {
    throw new GraphError('dtype_mismatch', `Gather: indices are ${indices.dtype}, need int64/int32`);
  }
  const a = normAxis(axis, data.rank);
  const out = [...data.shape.slice(0, a), ...indices.shape, ...data.shape.slice(a + 1)];
  return one(data.graph, 'Gather', [data, indices], { axis: attr.int(a) }, data.dtype, out);
}

/** One-hot encoding along a new last axis (Equal against an arange, so every dtype works on CPU). */
export function oneHot(indices: Value, depth: number, dtype: DType): Value {
  const g = indices.graph;
  const range = g.constant([...Array(depth).keys()], indices.dtype, [depth]);
  return cast(equal(unsqueeze(indices, [-1]), range), dtype);
}

/**
 * LayerNormalization over the last axis. Also yields mean and inverse std-dev (shape [..., 1]) so the
 * backward rule needs no recomputation. float32 uses the fused ONNX op (opset 17); ONNX Runtime's CPU
 * provider has no float64 kernel for it, so float64 graphs (gradient checks) get the same maths
 * composed from primitives.
 */
export function layerNormFull(x: Value, scale: Value, bias: Value, epsilon = 1e-5): { y: Value; mean: Value; invStd: Value } {
  checkSameDtype('LayerNormalization', x, scale, bias);
  const c = x.shape[x.rank - 1];
  if (scale.rank !== 1 || scale.shape[0] !== c || bias.rank !== 1 || bias.shape[0] !== c) {
    throw new GraphError(
      'shape_mismatch',
      `LayerNormalization: scale ${shapeStr(scale.shape)} / bias ${shapeStr(bias.shape)} must be [${c}]`,
    );
  }
  if (x.dtype !== 'float32') {
    const mean = reduceMean(x, [-1], true);
    const xc = sub(x, mean);
    const invStd = reciprocal(sqrt(add(reduceMean(mul(xc, xc), [-1], true), epsilon)));
    return { y: add(mul(mul(xc, invStd), scale), bias), mean, invStd };
  }
  const stat = [...x.shape.slice(0, -1), 1];
  const [y, mean, invStd] = x.graph.addNode(
    'LayerNormalization',
    [x, scale, bias],
    { axis: attr.int(-1), epsilon: attr.float(epsilon), stash_type: attr.int(onnxTypeCode(x.dtype)) },
    [
      { dtype: x.dtype, shape: x.shape },
      { dtype: x.dtype, shape: stat },
      { dtype: x.dtype, shape: stat },
    ],
  );
  return { y, mean, invStd };
}

export const layerNorm = (x: Value, scale: Value, bias: Value, epsilon = 1e-5): Value => layerNormFull(x, scale, bias, epsilon).y;

/** RMSNorm over the last axis, composed from primitives: x * rsqrt(mean(x^2) + eps) * scale. */
export function rmsNorm(x: Value, scale: Value, epsilon = 1e-5): Value {
  const ms = reduceMean(mul(x, x), [-1], true);
  const inv = reciprocal(sqrt(add(ms, epsilon)));
  return mul(mul(x, inv), scale);
}

/**
 * Mean cross-entropy of `logits` [N, V] against int64 `labels` [N]; labels equal to `ignoreIndex`
 * contribute nothing and are not counted (ONNX SoftmaxCrossEntropyLoss, reduction mean).
 * Returns a scalar; also the log-probabilities for the backward rule.
 */
export function crossEntropy(logits: Value, labels: Value, ignoreIndex = -100): { loss: Value; logProb: Value } {
  if (logits.rank !== 2 || labels.rank !== 1 || labels.dtype !== 'int64' || logits.shape[0] !== labels.shape[0]) {
    throw new GraphError(
      'shape_mismatch',
      `crossEntropy: logits ${shapeStr(logits.shape)} must be [N,V], labels ${shapeStr(labels.shape)} int64 [N]`,
    );
  }
  if (!isFloat(logits.dtype)) throw new GraphError('dtype_mismatch', `crossEntropy: logits are ${logits.dtype}`);
  const [loss, logProb] = logits.graph.addNode(
    'SoftmaxCrossEntropyLoss',
    [logits, labels],
    { reduction: attr.string('mean'), ignore_index: attr.int(ignoreIndex) },
    [
      { dtype: logits.dtype, shape: [] },
      { dtype: logits.dtype, shape: logits.shape },
    ],
  );
  return { loss, logProb };
}

/** GPT-2's tanh approximation of GELU, composed from primitives. */
export function geluTanh(x: Value): Value {
  const c = Math.sqrt(2 / Math.PI);
  const inner = mul(add(x, mul(pow(x, 3), 0.044715)), c);
  return mul(mul(x, 0.5), add(tanh(inner), 1));
}

/** Exact GELU: 0.5 x (1 + erf(x / sqrt 2)). */
export function geluErf(x: Value): Value {
  return mul(mul(x, 0.5), add(erf(mul(x, Math.SQRT1_2)), 1));
}

export function silu(x: Value): Value {
  return mul(x, sigmoid(x));
}
