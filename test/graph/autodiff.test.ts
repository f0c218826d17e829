/**
 * Every VJP rule against finite differences (float64 graphs, or a float64 TypeScript reference where
 * ONNX Runtime has no float64 kernel), on random shapes with broadcasting edge cases and symbolic dims
 * fed at several sizes; then the pruning of the walk, and its errors.
 */
import { describe, expect, it } from 'vitest';
import { VJP_RULES, grad, gradientPath } from '../../src/graph/autodiff.js';
import { Graph, type Value } from '../../src/graph/ir.js';
import * as ops from '../../src/graph/ops.js';
import { SLICE_END } from '../../src/graph/shape.js';
import { type Dim, GraphError, type HostTensor } from '../../src/graph/types.js';
import { Rng } from '../../src/util/rng.js';
import { type FeedSet, type GradCheckSpec, awayFromZero, expectGradcheck, int64s, normal, randomInts, uniform } from './gradcheck.js';

const F = 'float64';
const rng = new Rng(20261129);
const covered = new Set<string>();

async function check(spec: GradCheckSpec): Promise<void> {
  const r = await expectGradcheck(spec);
  for (const op of r.ops) covered.add(op);
  expect(r.checks).toBeGreaterThan(0);
}

const boolTensor = (dims: number[], values: boolean[]): HostTensor => ({ dtype: 'bool', dims, data: Uint8Array.from(values.map(Number)) });
const fmt = (s: readonly Dim[]): string => `[${s.join(',')}]`;

// ---------------------------------------------------------------- elementwise

describe('elementwise binary ops with broadcasting', () => {
  const pairs: [number[], number[]][] = [
    [[3, 4], [3, 4]],
    [[3, 4], [4]],
    [[2, 1, 4], [3, 1]],
    [[], [2, 3]],
    [[1], [3, 2]],
    [[5], [2, 3, 5]],
    [[2, 3, 1], [1, 1, 4]],
  ];
  const binaries: [string, (a: Value, b: Value) => Value, (d: number[]) => HostTensor][] = [
    ['Add', ops.add, (d) => normal(rng, d)],
    ['Sub', ops.sub, (d) => normal(rng, d)],
    ['Mul', ops.mul, (d) => normal(rng, d)],
    ['Div', ops.div, (d) => awayFromZero(rng, d, 0.5, 2)],
    ['Max', ops.maximum, (d) => normal(rng, d)],
    ['Min', ops.minimum, (d) => normal(rng, d)],
  ];
  for (const [name, op, gen] of binaries) {
    for (const [sa, sb] of pairs) {
      it(`${name} ${fmt(sa)} with ${fmt(sb)}`, async () => {
        await check({
          build: (g) => {
            const a = g.input('a', F, sa);
            const b = g.input('b', F, sb);
            return { out: op(a, b), params: [a, b] };
          },
          feeds: { a: normal(rng, sa), b: gen(sb) },
        });
      });
    }
  }

  it('Max/Min against a constant and a value used several times (accumulation)', async () => {
    await check({
      build: (g) => {
        const x = g.input('x', F, [3, 4]);
        const y = ops.add(ops.mul(ops.maximum(x, 0.3), x), ops.minimum(x, -0.2));
        return { out: ops.mul(y, x), params: [x] };
      },
      feeds: { x: normal(rng, [3, 4]) },
    });
  });

  it('Pow with constant exponents 1, 2, 3, 0.5, -1.5 and a broadcast tensor exponent', async () => {
    for (const c of [1, 2, 3, 0.5, -1.5]) {
      await check({
        build: (g) => {
          const x = g.input('x', F, [2, 3]);
          return { out: ops.pow(x, c), params: [x] };
        },
        feeds: { x: uniform(rng, [2, 3], 0.5, 2) },
      });
    }
    await check({
      build: (g) => {
        const x = g.input('x', F, [3, 4]);
        const p = g.input('p', F, [4]);
        return { out: ops.pow(x, p), params: [x, p] };
      },
      feeds: { x: uniform(rng, [3, 4], 0.5, 2), p: uniform(rng, [4], -2, 3) },
    });
  });

  it('Where w.r.t. both branches, condition broadcast', async () => {
    await check({
      build: (g) => {
        const c = g.input('c', 'bool', [3, 1]);
        const a = g.input('a', F, [3, 4]);
        const b = g.input('b', F, [4]);
        return { out: ops.where(c, a, b), params: [a, b] };
      },
      feeds: { c: boolTensor([3, 1], [true, false, true]), a: normal(rng, [3, 4]), b: normal(rng, [4]) },
    });
  });
});

describe('elementwise unary ops', () => {
  const unaries: [string, (x: Value) => Value, (d: number[]) => HostTensor][] = [
    ['Neg', ops.neg, (d) => normal(rng, d)],
    ['Identity', ops.identity, (d) => normal(rng, d)],
    ['Exp', ops.exp, (d) => normal(rng, d)],
    ['Log', ops.log, (d) => uniform(rng, d, 0.5, 3)],
    ['Sqrt', ops.sqrt, (d) => uniform(rng, d, 0.5, 3)],
    ['Reciprocal', ops.reciprocal, (d) => awayFromZero(rng, d, 0.5, 2)],
    ['Tanh', ops.tanh, (d) => normal(rng, d)],
    ['Sigmoid', ops.sigmoid, (d) => normal(rng, d, 'float64', 2)],
    ['Relu', ops.relu, (d) => awayFromZero(rng, d, 0.05, 2)],
    ['Abs', ops.abs, (d) => awayFromZero(rng, d, 0.05, 2)],
  ];
  for (const [name, op, gen] of unaries) {
    it(`${name} on [2,3,4] and on a symbolic [B,3] at B = 1, 4`, async () => {
      await check({
        build: (g) => {
          const x = g.input('x', F, [2, 3, 4]);
          return { out: op(x), params: [x] };
        },
        feeds: { x: gen([2, 3, 4]) },
      });
      await check({
        build: (g) => {
          const x = g.input('x', F, ['B', 3]);
          return { out: op(x), params: [x] };
        },
        feeds: [{ x: gen([1, 3]) }, { x: gen([4, 3]) }],
      });
    });
  }

  it('Erf (float32 graph: no float64 kernel) against a float64 reference', async () => {
    const x = uniform(rng, [3, 5], -2.5, 2.5, 'float32');
    await check({
      build: (g) => {
        const v = g.input('x', 'float32', [3, 5]);
        return { out: ops.erf(v), params: [v] };
      },
      feeds: { x },
      eps: 1e-5,
      reference: (f) => Array.from(f.x.data as Float64Array, erfRef),
    });
  });

  it('Cast float64 -> float32 -> float64 (quadratic, so a wide step is exact)', async () => {
    await check({
      build: (g) => {
        const x = g.input('x', F, [2, 3]);
        const y = ops.cast(x, 'float32');
        return { out: ops.cast(ops.mul(y, y), F), params: [x] };
      },
      feeds: { x: uniform(rng, [2, 3], 0.5, 2) },
      eps: 1e-2,
    });
  });
});

// ---------------------------------------------------------------- linear algebra

describe('MatMul', () => {
  const cases: [number[], number[]][] = [
    [[3, 4], [4, 5]],
    [[2, 3, 4], [2, 4, 5]],
    [[2, 1, 3, 4], [3, 4, 5]],
    [[2, 3, 4], [4, 5]],
    [[3, 4], [2, 4, 5]],
    [[1, 3, 4], [2, 4, 2]],
  ];
  for (const [sa, sb] of cases) {
    it(`${fmt(sa)} @ ${fmt(sb)}`, async () => {
      await check({
        build: (g) => {
          const a = g.input('a', F, sa);
          const b = g.input('b', F, sb);
          return { out: ops.matmul(a, b), params: [a, b] };
        },
        feeds: { a: normal(rng, sa), b: normal(rng, sb) },
      });
    });
  }

  it('with transposed operands (x W^T, Q K^T per head)', async () => {
    await check({
      build: (g) => {
        const x = g.input('x', F, [2, 3, 4]);
        const w = g.input('w', F, [5, 4]);
        return { out: ops.matmul(x, ops.transposeLast2(w)), params: [x, w] };
      },
      feeds: { x: normal(rng, [2, 3, 4]), w: normal(rng, [5, 4]) },
    });
    await check({
      build: (g) => {
        const q = g.input('q', F, [2, 2, 3, 4]);
        const k = g.input('k', F, [2, 2, 3, 4]);
        return { out: ops.matmul(q, ops.transposeLast2(k)), params: [q, k] };
      },
      feeds: { q: normal(rng, [2, 2, 3, 4]), k: normal(rng, [2, 2, 3, 4]) },
    });
  });

  it('with symbolic batch dims [B,T,4] @ [4,3] at several sizes', async () => {
    await check({
      build: (g) => {
        const x = g.input('x', F, ['B', 'T', 4]);
        const w = g.input('w', F, [4, 3]);
        return { out: ops.matmul(x, w), params: [x, w] };
      },
      feeds: [
        { x: normal(rng, [1, 2, 4]), w: normal(rng, [4, 3]) },
        { x: normal(rng, [3, 5, 4]), w: normal(rng, [4, 3]) },
      ],
    });
  });
});

// ---------------------------------------------------------------- movement

describe('shape and movement ops', () => {
  it('Reshape (static, with -1, and symbolic)', async () => {
    await check({
      build: (g) => {
        const x = g.input('x', F, [2, 3, 4]);
        return { out: ops.reshape(ops.reshape(x, [6, 4]), [4, -1]), params: [x] };
      },
      feeds: { x: normal(rng, [2, 3, 4]) },
    });
    await check({
      build: (g) => {
        const x = g.input('x', F, ['B', 3, 4]);
        return { out: ops.reshape(x, [-1, 4]), params: [x] };
      },
      feeds: [{ x: normal(rng, [1, 3, 4]) }, { x: normal(rng, [3, 3, 4]) }],
    });
  });

  it('Transpose, Unsqueeze, Squeeze', async () => {
    await check({
      build: (g) => {
        const x = g.input('x', F, [2, 3, 4]);
        const t = ops.transpose(x, [2, 0, 1]);
        const u = ops.unsqueeze(t, [0, 3]);
        return { out: ops.squeeze(u, [0]), params: [x] };
      },
      feeds: { x: normal(rng, [2, 3, 4]) },
    });
  });

  it('Expand (static and to a symbolic shape)', async () => {
    await check({
      build: (g) => {
        const x = g.input('x', F, [3, 1]);
        return { out: ops.expand(x, [2, 3, 4]), params: [x] };
      },
      feeds: { x: normal(rng, [3, 1]) },
    });
    await check({
      build: (g) => {
        const x = g.input('x', F, [1, 4]);
        const like = g.input('like', F, ['B', 4]);
        return { out: ops.mul(ops.expandLike(x, like), like), params: [x] };
      },
      feeds: [
        { x: normal(rng, [1, 4]), like: normal(rng, [2, 4]) },
        { x: normal(rng, [1, 4]), like: normal(rng, [5, 4]) },
      ],
    });
  });

  it('Slice: several axes, negative bounds, to the end (Pad path)', async () => {
    await check({
      build: (g) => {
        const x = g.input('x', F, [4, 5, 6]);
        return { out: ops.slice(x, { axes: [0, 2], starts: [1, -4], ends: [3, SLICE_END] }), params: [x] };
      },
      feeds: { x: normal(rng, [4, 5, 6]) },
    });
  });

  it('Slice: steps 2 and -1, and a symbolic sliced axis (scatter path)', async () => {
    await check({
      build: (g) => {
        const x = g.input('x', F, [4, 6]);
        return { out: ops.slice(x, { axes: [1, 0], starts: [1, -1], ends: [SLICE_END, -SLICE_END], steps: [2, -1] }), params: [x] };
      },
      feeds: { x: normal(rng, [4, 6]) },
    });
    await check({
      build: (g) => {
        const x = g.input('x', F, ['T', 3]);
        return { out: ops.slice(x, { axes: [0], starts: [1], ends: [3] }), params: [x] };
      },
      feeds: [{ x: normal(rng, [3, 3]) }, { x: normal(rng, [6, 3]) }],
    });
  });

  it('Slice with run-time bounds (sliceDynamic)', async () => {
    await check({
      build: (g) => {
        const x = g.input('x', F, [2, 7, 3]);
        const s = g.input('s', 'int64', [1]);
        const e = g.input('e', 'int64', [1]);
        return { out: ops.sliceDynamic(x, 1, s, e, 'L'), params: [x] };
      },
      feeds: [
        { x: normal(rng, [2, 7, 3]), s: int64s([1], [2]), e: int64s([1], [5]) },
        { x: normal(rng, [2, 7, 3]), s: int64s([1], [0]), e: int64s([1], [7]) },
      ],
    });
  });

  it('Concat (static sizes; one input not differentiated) and along a symbolic axis', async () => {
    await check({
      build: (g) => {
        const a = g.input('a', F, [2, 3]);
        const b = g.input('b', F, [2, 5]);
        const c = g.input('c', F, [2, 1]);
        return { out: ops.concat([a, b, c], 1), params: [a, c] };
      },
      feeds: { a: normal(rng, [2, 3]), b: normal(rng, [2, 5]), c: normal(rng, [2, 1]) },
    });
    await check({
      build: (g) => {
        const a = g.input('a', F, ['T', 3]);
        const b = g.input('b', F, ['S', 3]);
        return { out: ops.concat([a, b], 0), params: [a, b] };
      },
      feeds: [
        { a: normal(rng, [2, 3]), b: normal(rng, [1, 3]) },
        { a: normal(rng, [4, 3]), b: normal(rng, [3, 3]) },
      ],
    });
  });

  it('Split with an unused output', async () => {
    await check({
      build: (g) => {
        const x = g.input('x', F, [2, 6]);
        const [p, , r] = ops.split(x, [1, 2, 3], 1);
        return { out: ops.concat([ops.mul(p, 2), ops.exp(r)], 1), params: [x] };
      },
      feeds: { x: normal(rng, [2, 6]) },
    });
  });

  it('Gather: embedding rows with repeated and negative indices, another axis, a scalar index', async () => {
    await check({
      build: (g) => {
        const table = g.input('table', F, [5, 3]);
        const ids = g.input('ids', 'int64', ['B', 4]);
        return { out: ops.gather(table, ids), params: [table] };
      },
      feeds: [
        { table: normal(rng, [5, 3]), ids: int64s([2, 4], [0, 1, 1, 4, 4, 4, -1, 2]) },
        { table: normal(rng, [5, 3]), ids: randomInts(rng, [3, 4], 0, 5) },
      ],
    });
    await check({
      build: (g) => {
        const x = g.input('x', F, [3, 5, 2]);
        const ids = g.input('ids', 'int64', [4]);
        return { out: ops.gather(x, ids, 1), params: [x] };
      },
      feeds: { x: normal(rng, [3, 5, 2]), ids: int64s([4], [4, 0, 4, -2]) },
    });
    await check({
      build: (g) => {
        const x = g.input('x', F, [4, 3]);
        return { out: ops.gather(x, g.constant(2, 'int64')), params: [x] };
      },
      feeds: { x: normal(rng, [4, 3]) },
    });
  });

  it('Gather: repeated indices sum exactly with two intra-op threads (no racing scatter-add)', async () => {
    const g = new Graph('gather-threads');
    const table = g.input('table', 'float32', [4, 64]);
    const ids = g.input('ids', 'int64', [20000]);
    const [gt] = grad(ops.reduceSum(ops.gather(table, ids), [0, 1]), [table]);
    g.output('gt', gt);
    const { runOnce } = await import('../../src/graph/runner.js');
    const idv = Array.from({ length: 20000 }, (_, i) => (i % 5 === 0 ? 1 : 0)); // 16,000 zeros, 4,000 ones
    const r = await runOnce(g, { table: { dtype: 'float32', dims: [4, 64], data: new Float32Array(256) }, ids: int64s([20000], idv) }, { intraOpThreads: 2 });
    const d = r.gt.data as Float32Array;
    expect([d[0], d[63], d[64], d[127], d[128], d[255]]).toEqual([16000, 16000, 4000, 4000, 0, 0]);
  });

  it('ScatterND (add and overwrite) w.r.t. data and updates', async () => {
    for (const reduction of ['add', 'none']) {
      await check({
        build: (g) => {
          const data = g.input('data', F, [4, 3]);
          const upd = g.input('upd', F, [2, 3]);
          const idx = g.constant([1, 3], 'int64', [2, 1]);
          const out = g.addNode('ScatterND', [data, idx, upd], { reduction: { kind: 'string', value: reduction } }, [
            { dtype: F, shape: [4, 3] },
          ])[0];
          return { out, params: [data, upd] };
        },
        feeds: { data: normal(rng, [4, 3]), upd: normal(rng, [2, 3]) },
      });
    }
  });
});

// ---------------------------------------------------------------- reductions and nn

describe('reductions', () => {
  const variants: [string, number[], boolean][] = [
    ['axis 1', [1], false],
    ['axes 0,2 keepdims', [0, 2], true],
    ['all axes', [0, 1, 2], false],
  ];
  for (const [name, op] of [
    ['ReduceSum', ops.reduceSum],
    ['ReduceMean', ops.reduceMean],
    ['ReduceMax', ops.reduceMax],
  ] as const) {
    for (const [label, axes, keep] of variants) {
      it(`${name} over ${label}`, async () => {
        await check({
          build: (g) => {
            const x = g.input('x', F, [2, 3, 4]);
            return { out: op(x, axes, keep), params: [x] };
          },
          feeds: { x: normal(rng, [2, 3, 4]) },
        });
      });
    }
  }

  it('ReduceMean over a symbolic axis (count known only at run time)', async () => {
    await check({
      build: (g) => {
        const x = g.input('x', F, ['B', 'T', 3]);
        return { out: ops.reduceMean(x, [1], false), params: [x] };
      },
      feeds: [{ x: normal(rng, [2, 1, 3]) }, { x: normal(rng, [1, 5, 3]) }],
    });
  });
});

describe('softmax family', () => {
  it('Softmax along the last and a middle axis', async () => {
    for (const axis of [-1, 1]) {
      await check({
        build: (g) => {
          const x = g.input('x', F, [2, 3, 4]);
          return { out: ops.softmax(x, axis), params: [x] };
        },
        feeds: { x: normal(rng, [2, 3, 4]) },
      });
    }
  });

  it('Softmax with an additive causal mask and with a Where mask, symbolic T', async () => {
    const mask = (t: number): HostTensor => ({
      dtype: F,
      dims: [t, t],
      data: Float64Array.from({ length: t * t }, (_, i) => (i % t > Math.floor(i / t) ? -1e9 : 0)),
    });
    await check({
      build: (g) => {
        const s = g.input('s', F, [2, 'T', 'T']);
        const m = g.input('m', F, ['T', 'T']);
        return { out: ops.softmax(ops.add(s, m)), params: [s] };
      },
      feeds: [
        { s: normal(rng, [2, 3, 3]), m: mask(3) },
        { s: normal(rng, [2, 5, 5]), m: mask(5) },
      ],
    });
    await check({
      build: (g) => {
        const s = g.input('s', F, [2, 4, 4]);
        const keep = g.input('keep', 'bool', [4, 4]);
        return { out: ops.softmax(ops.where(keep, s, -1e9)), params: [s] };
      },
      feeds: {
        s: normal(rng, [2, 4, 4]),
        keep: boolTensor([4, 4], Array.from({ length: 16 }, (_, i) => i % 4 <= Math.floor(i / 4))),
      },
    });
  });

  it('LogSoftmax', async () => {
    await check({
      build: (g) => {
        const x = g.input('x', F, [3, 5]);
        return { out: ops.logSoftmax(x), params: [x] };
      },
      feeds: { x: normal(rng, [3, 5]) },
    });
  });

  it('SoftmaxCrossEntropyLoss with ignore_index (mean), through a projection', async () => {
    await check({
      build: (g) => {
        const h = g.input('h', F, [6, 4]);
        const w = g.input('w', F, [4, 5]);
        const labels = g.input('labels', 'int64', [6]);
        return { out: ops.crossEntropy(ops.matmul(h, w), labels).loss, params: [h, w] };
      },
      feeds: [
        { h: normal(rng, [6, 4]), w: normal(rng, [4, 5]), labels: int64s([6], [1, -100, 4, 0, -100, 2]) },
        { h: normal(rng, [6, 4]), w: normal(rng, [4, 5]), labels: int64s([6], [3, 3, 3, 0, 1, 2]) },
      ],
    });
  });

  it('SoftmaxCrossEntropyLoss reductions sum and none, and gradients through its log_prob output', async () => {
    for (const reduction of ['sum', 'none']) {
      await check({
        build: (g) => {
          const x = g.input('x', F, [4, 3]);
          const labels = g.constant([2, -1, 0, 1], 'int64', [4]);
          const [loss] = g.addNode(
            'SoftmaxCrossEntropyLoss',
            [x, labels],
            { reduction: { kind: 'string', value: reduction }, ignore_index: { kind: 'int', value: -1 } },
            [
              { dtype: F, shape: reduction === 'none' ? [4] : [] },
              { dtype: F, shape: [4, 3] },
            ],
          );
          return { out: loss, params: [x] };
        },
        feeds: { x: normal(rng, [4, 3]) },
      });
    }
    await check({
      build: (g) => {
        const x = g.input('x', F, [4, 3]);
        const { loss, logProb } = ops.crossEntropy(x, g.constant([2, 1, 0, -100], 'int64', [4]));
        return { out: ops.add(ops.mul(logProb, 0.5), loss), params: [x] };
      },
      feeds: { x: normal(rng, [4, 3]) },
    });
  });
});

// ---------------------------------------------------------------- norms and activations

function layerNormRef(f: FeedSet, c: number, eps: number, withStats: boolean): number[] {
  const x = f.x.data as Float64Array;
  const s = f.scale.data as Float64Array;
  const b = f.bias.data as Float64Array;
  const out: number[] = [];
  for (let r = 0; r < x.length / c; r++) {
    const row = x.subarray(r * c, (r + 1) * c);
    const mean = row.reduce((p, v) => p + v, 0) / c;
    const variance = row.reduce((p, v) => p + (v - mean) ** 2, 0) / c;
    const inv = 1 / Math.sqrt(variance + eps);
    for (let j = 0; j < c; j++) out.push((row[j] - mean) * inv * s[j] + b[j] + (withStats ? 0.7 * mean - 0.3 * inv : 0));
  }
  return out;
}

describe('norms and activations', () => {
  it('fused LayerNormalization (float32 only in ORT) against a float64 reference, incl. its Mean/InvStdDev outputs', async () => {
    const feeds = (): FeedSet => ({
      x: normal(rng, [2, 3, 8], 'float32'),
      scale: uniform(rng, [8], 0.5, 1.5, 'float32'),
      bias: normal(rng, [8], 'float32'),
    });
    for (const withStats of [false, true]) {
      await check({
        build: (g) => {
          const x = g.input('x', 'float32', [2, 3, 8]);
          const scale = g.input('scale', 'float32', [8]);
          const bias = g.input('bias', 'float32', [8]);
          const { y, mean, invStd } = ops.layerNormFull(x, scale, bias, 1e-5);
          expect(y.node?.op).toBe('LayerNormalization');
          const out = withStats ? ops.sub(ops.add(y, ops.mul(mean, 0.7)), ops.mul(invStd, 0.3)) : y;
          return { out, params: [x, scale, bias] };
        },
        feeds: feeds(),
        eps: 1e-5,
        reference: (f) => layerNormRef(f, 8, 1e-5, withStats),
      });
    }
  });

  it('LayerNorm composed in float64, RMSNorm (composite), both with symbolic rows', async () => {
    await check({
      build: (g) => {
        const x = g.input('x', F, ['N', 6]);
        const scale = g.input('scale', F, [6]);
        const bias = g.input('bias', F, [6]);
        return { out: ops.layerNorm(x, scale, bias), params: [x, scale, bias] };
      },
      feeds: [1, 3].map((n) => ({ x: normal(rng, [n, 6]), scale: normal(rng, [6]), bias: normal(rng, [6]) })),
    });
    await check({
      build: (g) => {
        const x = g.input('x', F, ['N', 6]);
        const scale = g.input('scale', F, [6]);
        return { out: ops.rmsNorm(x, scale), params: [x, scale] };
      },
      feeds: [2, 3].map((n) => ({ x: normal(rng, [n, 6]), scale: normal(rng, [6]) })),
    });
  });

  it('GELU (tanh), SiLU in float64; GELU (erf) in float32 against a float64 reference', async () => {
    for (const act of [ops.geluTanh, ops.silu]) {
      await check({
        build: (g) => {
          const x = g.input('x', F, [3, 4]);
          return { out: act(x), params: [x] };
        },
        feeds: { x: normal(rng, [3, 4], 'float64', 2) },
      });
    }
    await check({
      build: (g) => {
        const x = g.input('x', 'float32', [3, 4]);
        return { out: ops.geluErf(x), params: [x] };
      },
      feeds: { x: uniform(rng, [3, 4], -2.5, 2.5, 'float32') },
      eps: 1e-5,
      reference: (f) => Array.from(f.x.data as Float64Array, (v) => 0.5 * v * (1 + erfRef(v / Math.SQRT2))),
    });
  });
});

// ---------------------------------------------------------------- composites

/** cos/sin tables [maxT, D] for rotary embeddings, gathered at run-time positions. */
function rotaryTables(g: Graph, maxT: number, d: number, pos: Value): { cos: Value; sin: Value } {
  const cos = new Float64Array(maxT * d);
  const sin = new Float64Array(maxT * d);
  for (let t = 0; t < maxT; t++) {
    for (let i = 0; i < d; i++) {
      const theta = t / 10000 ** ((2 * (i % (d / 2))) / d);
      cos[t * d + i] = Math.cos(theta);
      sin[t * d + i] = Math.sin(theta);
    }
  }
  return {
    cos: ops.gather(g.initializer('cos_table', F, [maxT, d], cos), pos),
    sin: ops.gather(g.initializer('sin_table', F, [maxT, d], sin), pos),
  };
}

describe('composites', () => {
  const D = 8;
  const rotaryFeeds = [2, 4].map((t) => ({ x: normal(rng, [2, 2, t, D]), pos: int64s([t], [...Array(t).keys()].map((i) => i + 3)) }));

  it('rotary embedding, Hugging Face rotate_half layout', async () => {
    await check({
      build: (g) => {
        const x = g.input('x', F, ['B', 2, 'T', D]);
        const pos = g.input('pos', 'int64', ['T']);
        const { cos, sin } = rotaryTables(g, 16, D, pos);
        const x1 = ops.slice(x, { axes: [-1], starts: [0], ends: [D / 2] });
        const x2 = ops.slice(x, { axes: [-1], starts: [D / 2], ends: [D] });
        const rot = ops.concat([ops.neg(x2), x1], -1);
        return { out: ops.add(ops.mul(x, cos), ops.mul(rot, sin)), params: [x] };
      },
      feeds: rotaryFeeds,
    });
  });

  it('rotary embedding, adjacent-pair layout (strided slices, interleave by reshape)', async () => {
    await check({
      build: (g) => {
        const x = g.input('x', F, ['B', 2, 'T', D]);
        const pos = g.input('pos', 'int64', ['T']);
        const half = rotaryTables(g, 16, D, pos);
        const cos = ops.slice(half.cos, { axes: [-1], starts: [0], ends: [D / 2] });
        const sin = ops.slice(half.sin, { axes: [-1], starts: [0], ends: [D / 2] });
        const even = ops.slice(x, { axes: [-1], starts: [0], ends: [SLICE_END], steps: [2] });
        const odd = ops.slice(x, { axes: [-1], starts: [1], ends: [SLICE_END], steps: [2] });
        const re = ops.sub(ops.mul(even, cos), ops.mul(odd, sin));
        const im = ops.add(ops.mul(even, sin), ops.mul(odd, cos));
        const pairs = ops.concat([ops.unsqueeze(re, [-1]), ops.unsqueeze(im, [-1])], -1);
        return { out: ops.reshapeLike(pairs, x), params: [x] };
      },
      feeds: rotaryFeeds,
    });
  });

  it('causal self-attention block (heads split by reshape/transpose)', async () => {
    const [T, C, H] = [3, 4, 2];
    await check({
      build: (g) => {
        const x = g.input('x', F, ['B', T, C]);
        const wqkv = g.input('wqkv', F, [C, 3 * C]);
        const wo = g.input('wo', F, [C, C]);
        const mask = g.constant(
          Array.from({ length: T * T }, (_, i) => (i % T > Math.floor(i / T) ? -1e9 : 0)),
          F,
          [T, T],
        );
        const heads = (v: Value): Value => ops.transpose(ops.reshape(v, ['B', T, H, C / H]), [0, 2, 1, 3]);
        const [q, k, v] = ops.split(ops.matmul(x, wqkv), [C, C, C], -1).map(heads);
        const att = ops.softmax(ops.add(ops.mul(ops.matmul(q, ops.transposeLast2(k)), 1 / Math.sqrt(C / H)), mask));
        const y = ops.reshape(ops.transpose(ops.matmul(att, v), [0, 2, 1, 3]), ['B', T, C]);
        return { out: ops.matmul(y, wo), params: [x, wqkv, wo] };
      },
      feeds: [1, 2].map((b) => ({ x: normal(rng, [b, T, C]), wqkv: normal(rng, [C, 3 * C]), wo: normal(rng, [C, C]) })),
    });
  });
});

it('every rule in the table was exercised by a gradient check above', () => {
  const missing = Object.keys(VJP_RULES).filter((op) => !covered.has(op));
  expect(missing).toEqual([]);
});

// ---------------------------------------------------------------- the walk

/** Two-layer MLP with frozen weights and a LoRA pair per layer; layer 2's dims differ from layer 1's. */
function twoLayers(g: Graph) {
  const x = g.input('x', F, ['B', 3]);
  const w1 = g.input('w1', F, [3, 5]);
  const a1 = g.input('a1', F, [3, 2]);
  const b1 = g.input('b1', F, [2, 5]);
  const mark = g.nodes.length;
  const h = ops.tanh(ops.add(ops.matmul(x, w1), ops.matmul(ops.matmul(x, a1), b1)));
  const layer1 = g.nodes.slice(mark);
  const w2 = g.input('w2', F, [5, 7]);
  const a2 = g.input('a2', F, [5, 4]);
  const b2 = g.input('b2', F, [4, 7]);
  const y = ops.add(ops.matmul(h, w2), ops.matmul(ops.matmul(h, a2), b2));
  const loss = ops.reduceSum(ops.mul(y, y), [0, 1]);
  return { x, w1, a1, b1, w2, a2, b2, h, loss, layer1 };
}

describe('grad: pruning', () => {
  it('grads w.r.t. the top layer never differentiate the lower layer', () => {
    const g = new Graph('prune');
    const m = twoLayers(g);
    const path = gradientPath(m.loss, [m.a2, m.b2]);
    expect(path.nodes.some((n) => m.layer1.includes(n))).toBe(false);
    expect(path.dependent.has(m.h)).toBe(false);
    const before = g.nodes.length;
    grad(m.loss, [m.a2, m.b2]);
    const added = g.nodes.slice(before);
    // No backward node reads a lower-layer value other than the layer's output h (needed for dA2).
    const lower = new Set(m.layer1.flatMap((n) => n.outputs).filter((v) => v !== m.h));
    expect(added.filter((n) => n.inputs.some((v) => v && lower.has(v)))).toEqual([]);
    // Nothing shaped like a gradient of h ([B,5] from a matmul with a transposed weight) is computed.
    expect(added.filter((n) => n.op === 'MatMul' && n.outputs[0].shape.join() === 'B,5')).toEqual([]);
  });

  it('frozen weights get no backward nodes: no gradient of W is formed', () => {
    const g = new Graph('frozen');
    const m = twoLayers(g);
    const before = g.nodes.length;
    grad(m.loss, [m.a1, m.b1, m.a2, m.b2]);
    const added = g.nodes.slice(before);
    const shapes = added.map((n) => n.outputs[0].shape.join());
    expect(shapes).not.toContain('3,5'); // dW1
    expect(shapes).not.toContain('5,7'); // dW2
    expect(shapes).toContain('3,2'); // dA1
    expect(shapes).toContain('2,5'); // dB1
  });

  it('a rule computes only the input gradients that are needed', () => {
    const g = new Graph('needs');
    const x = g.input('x', F, [4, 3]);
    const w = g.input('w', F, [3, 6]);
    const loss = ops.reduceSum(ops.matmul(x, w), [0, 1]);
    const before = g.nodes.length;
    grad(loss, [w]);
    const added = g.nodes.slice(before);
    expect(added.filter((n) => n.op === 'MatMul')).toHaveLength(1);
    expect(added.some((n) => n.outputs[0].shape.join() === '4,3')).toBe(false);
  });

  it('integer inputs get no gradient, and asking for one is an error', () => {
    const g = new Graph('ints');
    const table = g.input('table', F, [5, 3]);
    const ids = g.input('ids', 'int64', [4]);
    const loss = ops.reduceSum(ops.gather(table, ids), [0, 1]);
    const path = gradientPath(loss, [table]);
    expect(path.dependent.has(ids)).toBe(false);
    expect(() => grad(loss, [ids])).toThrow(GraphError);
  });

  it('a parameter the loss does not depend on gets zeros', async () => {
    const g = new Graph('unused');
    const x = g.input('x', F, [2]);
    const y = g.input('y', F, [3]);
    const [gx, gy] = grad(ops.reduceSum(ops.mul(x, x), [0]), [x, y]);
    g.output('gx', gx);
    g.output('gy', gy);
    const { runOnce } = await import('../../src/graph/runner.js');
    const r = await runOnce(g, { x: { dtype: F, dims: [2], data: Float64Array.from([1.5, -2]) }, y: normal(rng, [3]) });
    expect(Array.from(r.gx.data as Float64Array)).toEqual([3, -4]);
    expect(Array.from(r.gy.data as Float64Array)).toEqual([0, 0, 0]);
  });
});

describe('grad: parameters that are computed values', () => {
  it('differentiates w.r.t. an intermediate value and nothing below it', async () => {
    const g = new Graph('intermediate');
    const x = g.input('x', F, [3]);
    const h = ops.mul(ops.exp(x), 2);
    const loss = ops.reduceSum(ops.mul(h, h), [0]);
    expect(gradientPath(loss, [h]).nodes.map((n) => n.op)).toEqual(['Mul', 'ReduceSum']);
    const [gh] = grad(loss, [h]);
    g.output('h', h);
    g.output('gh', gh);
    const { runOnce } = await import('../../src/graph/runner.js');
    const r = await runOnce(g, { x: { dtype: F, dims: [3], data: Float64Array.from([0.1, -0.4, 1.2]) } });
    const hv = Array.from(r.h.data as Float64Array);
    expect(Array.from(r.gh.data as Float64Array)).toEqual(hv.map((v) => 2 * v));
  });
});

describe('grad: errors', () => {
  it('an op without a rule on the path is a GraphError naming the op', () => {
    const g = new Graph('unknown');
    const x = g.input('x', F, [3]);
    const [s] = g.addNode('Sin', [x], {}, [{ dtype: F, shape: [3] }]);
    const loss = ops.reduceSum(s, [0]);
    let err: unknown;
    try {
      grad(loss, [x]);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(GraphError);
    expect((err as GraphError).code).toBe('no_vjp');
    expect((err as GraphError).message).toContain('Sin');
  });

  it('an op without a rule off the path is fine', () => {
    const g = new Graph('offpath');
    const x = g.input('x', F, [3]);
    const c = g.input('c', F, [3]);
    const [s] = g.addNode('Sin', [c], {}, [{ dtype: F, shape: [3] }]);
    expect(() => grad(ops.reduceSum(ops.mul(s, x), [0]), [x])).not.toThrow();
  });

  it('a rule returning a wrongly shaped gradient is caught at build time', () => {
    const g = new Graph('badshape');
    const x = g.input('x', F, [3, 4]);
    const loss = ops.reduceSum(ops.exp(x), [0, 1]);
    expect(() => grad(loss, [x], { rules: { Exp: (_n, [gr]) => [ops.reduceSum(gr!, [1], false)] } })).toThrow(/Exp rule gave/);
  });

  it('a seed that does not fit the loss is rejected', () => {
    const g = new Graph('seed');
    const x = g.input('x', F, [3]);
    const s = g.input('s', F, [4]);
    expect(() => grad(ops.exp(x), [x], { seed: s })).toThrow(GraphError);
  });
});

// ---------------------------------------------------------------- float64 erf reference

/** erf by its Maclaurin series: full double precision for |x| <= 3 (the tests stay inside). */
function erfRef(x: number): number {
  let term = x;
  let sum = x;
  for (let n = 1; n < 200; n++) {
    term *= (-x * x) / n;
    const add = term / (2 * n + 1);
    sum += add;
    if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
  }
  return (2 / Math.sqrt(Math.PI)) * sum;
}
