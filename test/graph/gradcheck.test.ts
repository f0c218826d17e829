/**
 * The gradient check must be able to fail: deliberately broken rules (swapped operands, a missing
 * transpose, a lost accumulation, a dropped term, a missed mask) are each caught.
 */
import { describe, expect, it } from 'vitest';
import { VJP_RULES, type VjpRule } from '../../src/graph/autodiff.js';
import type { Value } from '../../src/graph/ir.js';
import * as ops from '../../src/graph/ops.js';
import { Rng } from '../../src/util/rng.js';
import { type GradCheckSpec, expectGradcheck, gradcheck, int64s, normal, uniform } from './gradcheck.js';

const F = 'float64';
const rng = new Rng(99);

async function expectCaught(spec: GradCheckSpec, rules: Record<string, VjpRule>): Promise<void> {
  await expectGradcheck(spec); // the intact table passes
  const r = await gradcheck({ ...spec, rules });
  expect(r.maxRelError).toBeGreaterThan(1e-2);
  await expect(expectGradcheck({ ...spec, rules })).rejects.toThrow(/gradcheck failed/);
}

describe('gradcheck catches broken rules', () => {
  it('Mul with swapped operands', async () => {
    await expectCaught(
      {
        build: (g) => {
          const a = g.input('a', F, [3, 4]);
          const b = g.input('b', F, [4]);
          return { out: ops.mul(a, b), params: [a, b] };
        },
        feeds: { a: normal(rng, [3, 4]), b: normal(rng, [4]) },
      },
      {
        Mul: (n, [g], needs) => {
          const [a, b] = n.inputs as Value[];
          return [needs[0] ? ops.mul(g!, a) : null, needs[1] ? ops.reduceSum(ops.mul(g!, b), [0], false) : null];
        },
      },
    );
  });

  it('MatMul without the transpose (square operands, so shapes still fit)', async () => {
    await expectCaught(
      {
        build: (g) => {
          const a = g.input('a', F, [4, 4]);
          const b = g.input('b', F, [4, 4]);
          return { out: ops.matmul(a, b), params: [a] };
        },
        feeds: { a: normal(rng, [4, 4]), b: normal(rng, [4, 4]) },
      },
      { MatMul: (n, [g]) => [ops.matmul(g!, n.inputs[1]!), null] },
    );
  });

  it('Softmax with a sign error', async () => {
    await expectCaught(
      {
        build: (g) => {
          const x = g.input('x', F, [2, 5]);
          return { out: ops.softmax(x), params: [x] };
        },
        feeds: { x: normal(rng, [2, 5]) },
      },
      {
        Softmax: (n, [g]) => {
          const y = n.outputs[0];
          const gy = ops.mul(g!, y);
          return [ops.add(gy, ops.mul(y, ops.reduceSum(gy, [1], true)))];
        },
      },
    );
  });

  it('Gather that overwrites instead of accumulating repeated indices', async () => {
    await expectCaught(
      {
        build: (g) => {
          const t = g.input('t', F, [4, 3]);
          const ids = g.input('ids', 'int64', [5]);
          return { out: ops.gather(t, ids), params: [t] };
        },
        feeds: { t: normal(rng, [4, 3]), ids: int64s([5], [1, 1, 3, 0, 1]) },
      },
      {
        Gather: (n, [g]) => {
          const [t, ids] = n.inputs as Value[];
          const zeros = ops.expand(t.graph.constant(0, t.dtype), t.shape);
          return [t.graph.addNode('ScatterND', [zeros, ops.unsqueeze(ids, [-1]), g!], {}, [{ dtype: t.dtype, shape: t.shape }])[0]];
        },
      },
    );
  });

  it('LayerNormalization without the mean term (float32 against the float64 reference)', async () => {
    const c = 6;
    await expectCaught(
      {
        build: (g) => {
          const x = g.input('x', 'float32', [3, c]);
          const s = g.input('scale', 'float32', [c]);
          const b = g.input('bias', 'float32', [c]);
          return { out: ops.layerNorm(x, s, b), params: [x] };
        },
        feeds: { x: normal(rng, [3, c], 'float32'), scale: uniform(rng, [c], 0.5, 1.5, 'float32'), bias: normal(rng, [c], 'float32') },
        eps: 1e-5,
        reference: (f) => {
          const x = f.x.data as Float64Array;
          const s = f.scale.data as Float64Array;
          const b = f.bias.data as Float64Array;
          const out: number[] = [];
          for (let r = 0; r < 3; r++) {
            const row = x.subarray(r * c, r * c + c);
            const m = row.reduce((p, v) => p + v, 0) / c;
            const inv = 1 / Math.sqrt(row.reduce((p, v) => p + (v - m) ** 2, 0) / c + 1e-5);
            row.forEach((v, j) => out.push((v - m) * inv * s[j] + b[j]));
          }
          return out;
        },
      },
      {
        LayerNormalization: (n, [g]) => {
          const [x, scale] = n.inputs as Value[];
          const [, mean, inv] = n.outputs;
          const xh = ops.mul(ops.sub(x, mean), inv);
          const dxh = ops.mul(g!, scale);
          return [ops.mul(ops.sub(dxh, ops.mul(xh, ops.reduceMean(ops.mul(dxh, xh), [-1], true))), inv), null, null];
        },
      },
    );
  });

  it('Slice that puts the gradient at the wrong offset', async () => {
    await expectCaught(
      {
        build: (g) => {
          const x = g.input('x', F, [3, 6]);
          return { out: ops.slice(x, { axes: [1], starts: [1], ends: [4] }), params: [x] };
        },
        feeds: { x: normal(rng, [3, 6]) },
      },
      { Slice: (_n, [g]) => [ops.concat([g!, ops.expand(g!.graph.constant(0, F), [3, 3])], 1)] },
    );
  });

  it('cross-entropy that ignores the ignore_index mask', async () => {
    await expectCaught(
      {
        build: (g) => {
          const x = g.input('x', F, [4, 3]);
          return { out: ops.crossEntropy(x, g.constant([2, -100, 0, 1], 'int64', [4])).loss, params: [x] };
        },
        feeds: { x: normal(rng, [4, 3]) },
      },
      {
        SoftmaxCrossEntropyLoss: (n) => {
          const [x, labels] = n.inputs as Value[];
          const safe = ops.where(ops.less(labels, 0), 0, labels);
          const p = ops.exp(n.outputs[1]);
          return [ops.mul(ops.sub(p, ops.oneHot(safe, 3, F)), 1 / 4), null, null];
        },
      },
    );
  });

  it('a correct float64 check is far below the tolerance, and reports what it checked', async () => {
    const r = await gradcheck({
      build: (g) => {
        const x = g.input('x', F, [3, 4]);
        const w = g.input('w', F, [4, 2]);
        return { out: ops.tanh(ops.matmul(x, w)), params: [x, w] };
      },
      feeds: { x: normal(rng, [3, 4]), w: normal(rng, [4, 2]) },
    });
    expect(r.maxRelError).toBeLessThan(1e-6);
    expect(r.ops).toEqual(['MatMul', 'Tanh']);
    expect(r.params.map((p) => p.name)).toEqual(['x', 'w']);
    expect(r.checks).toBe(12 + 2 + 8 + 2);
    expect(Object.keys(VJP_RULES)).toContain('Tanh');
  });
});
