import { describe, expect, it } from 'vitest';
import { AdamW } from '../../src/train/adamw.js';
import { TrainCancelled } from '../../src/train/errors.js';
import { type Param, clipGradients } from '../../src/train/params.js';
import { learningRate } from '../../src/train/schedule.js';
import { type TrainBatch, type TrainProblem, type TrainerState, train } from '../../src/train/trainer.js';
import { Rng } from '../../src/util/rng.js';

/**
 * Linear regression y = w.x + b on fixed data: a problem whose loss and gradient are known in closed
 * form, so the trainer is tested without ONNX Runtime.
 */
function regression(seed = 0, n = 64, noise = 0.01): { problem: TrainProblem; trueW: number[] } {
  const rng = new Rng(seed);
  const trueW = [1.5, -2, 0.5];
  const xs = Array.from({ length: n }, () => trueW.map(() => rng.normal()));
  const ys = xs.map((x) => x.reduce((s, xi, i) => s + xi * trueW[i], 0) + 0.3 + noise * rng.normal());
  const val = Array.from({ length: 16 }, () => trueW.map(() => rng.normal()));
  const valY = val.map((x) => x.reduce((s, xi, i) => s + xi * trueW[i], 0) + 0.3);
  const params: Param[] = [
    { name: 'w', data: new Float32Array(3), dims: [3], decay: true },
    { name: 'b', data: new Float32Array(1), dims: [1], decay: false },
  ];
  const lossOn = (idx: number[], X: number[][], Y: number[]): { loss: number; gw: Float32Array; gb: Float32Array } => {
    const [w, b] = [params[0].data, params[1].data];
    const gw = new Float32Array(3);
    const gb = new Float32Array(1);
    let loss = 0;
    for (const i of idx) {
      const e = X[i].reduce((s, xi, k) => s + xi * w[k], 0) + b[0] - Y[i];
      loss += e * e;
      X[i].forEach((xi, k) => (gw[k] += (2 * e * xi) / idx.length));
      gb[0] += (2 * e) / idx.length;
    }
    return { loss: loss / idx.length, gw, gb };
  };
  const problem: TrainProblem = {
    params,
    batches(_epoch, r) {
      const order = r.shuffle([...Array(n).keys()]);
      const out: TrainBatch[] = [];
      for (let i = 0; i < n; i += 8) out.push({ feeds: {}, tokens: 8, idx: order.slice(i, i + 8) } as TrainBatch & { idx: number[] });
      return out;
    },
    async step(batch) {
      const { loss, gw, gb } = lossOn((batch as TrainBatch & { idx: number[] }).idx, xs, ys);
      return { loss, grads: new Map([['w', gw], ['b', gb]]) };
    },
    async evaluate() {
      return lossOn([...val.keys()], val, valY).loss;
    },
  };
  return { problem, trueW };
}

describe('learning-rate schedule', () => {
  it('warms up linearly over 10% then decays linearly to zero', () => {
    const s = { peak: 1, totalSteps: 100, warmupFrac: 0.1, kind: 'linear' as const };
    expect(learningRate(0, s)).toBeCloseTo(0.1);
    expect(learningRate(9, s)).toBeCloseTo(1);
    expect(learningRate(10, s)).toBeCloseTo(1);
    expect(learningRate(55, s)).toBeCloseTo(0.5);
    expect(learningRate(100, s)).toBeCloseTo(0);
  });
  it('cosine decays to its floor', () => {
    const s = { peak: 2, totalSteps: 10, warmupFrac: 0, kind: 'cosine' as const, minFrac: 0.1 };
    expect(learningRate(0, s)).toBeCloseTo(2);
    expect(learningRate(5, s)).toBeCloseTo(2 * (0.1 + 0.9 * 0.5));
    expect(learningRate(10, s)).toBeCloseTo(0.2);
  });
});

describe('AdamW', () => {
  it('matches a hand-computed first and second step with decoupled decay', () => {
    const p: Param = { name: 'p', data: Float32Array.from([1, -2]), dims: [2], decay: true };
    const opt = new AdamW([p], { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1 });
    opt.step(new Map([['p', Float32Array.from([0.5, 0.25])]]), 0.01);
    // Step 1: m_hat = g, v_hat = g^2, so the update is lr * sign(g); decay multiplies by (1 - lr*wd).
    expect(p.data[0]).toBeCloseTo(1 * (1 - 0.001) - 0.01, 6);
    expect(p.data[1]).toBeCloseTo(-2 * (1 - 0.001) - 0.01, 6);
    const before = p.data[0];
    opt.step(new Map([['p', Float32Array.from([-0.5, 0.25])]]), 0.01);
    const m = 0.9 * 0.1 * 0.5 + 0.1 * -0.5; // m2 = b1*m1 + (1-b1)*g2 with m1 = 0.05
    const v = 0.999 * 0.001 * 0.25 + 0.001 * 0.25;
    const expected = before * (1 - 0.001) - (0.01 * (m / (1 - 0.81))) / (Math.sqrt(v / (1 - 0.999 ** 2)) + 1e-8);
    expect(p.data[0]).toBeCloseTo(expected, 6);
  });
  it('does not decay parameters marked decay=false', () => {
    const p: Param = { name: 'b', data: Float32Array.from([3]), dims: [1], decay: false };
    new AdamW([p], { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.5 }).step(new Map([['b', Float32Array.from([0])]]), 0.1);
    expect(p.data[0]).toBe(3);
  });
});

describe('clipGradients', () => {
  it('scales to the max global norm and reports the norm before', () => {
    const g = new Map([['a', Float32Array.from([3, 0])], ['b', Float32Array.from([4])]]);
    expect(clipGradients(g, 1)).toBeCloseTo(5);
    expect(g.get('a')![0]).toBeCloseTo(0.6, 5);
    expect(g.get('b')![0]).toBeCloseTo(0.8, 5);
  });
});

describe('train', () => {
  it('fits a regression and reports progress', async () => {
    const { problem, trueW } = regression();
    const progress: number[] = [];
    const res = await train(problem, { lr: 0.05, epochs: 40, seed: 1, onProgress: (p) => progress.push(p.step), progressEvery: 5 });
    expect(res.stopReason).toBe('completed');
    expect(res.steps).toBe(40 * 8);
    Array.from(problem.params[0].data).forEach((w, i) => expect(w).toBeCloseTo(trueW[i], 1));
    expect(problem.params[1].data[0]).toBeCloseTo(0.3, 1);
    expect(res.bestValLoss!).toBeLessThan(0.01);
    expect(progress.length).toBeGreaterThan(10);
  });

  it('is deterministic under a seed and differs with another seed', async () => {
    const run = async (seed: number): Promise<number[]> => {
      const { problem } = regression();
      await train(problem, { lr: 0.05, epochs: 3, seed });
      return Array.from(problem.params[0].data);
    };
    expect(await run(3)).toEqual(await run(3));
    expect(await run(3)).not.toEqual(await run(4));
  });

  it('stops early when validation stops improving and restores the best parameters', async () => {
    const { problem } = regression();
    const vals: number[] = [];
    let calls = 0;
    const evaluate = problem.evaluate!;
    // Validation that gets worse after the third evaluation.
    problem.evaluate = async () => {
      calls++;
      const v = calls <= 3 ? (await evaluate()) : 100 + calls;
      vals.push(v);
      return v;
    };
    let bestParams: number[] = [];
    const res = await train(problem, {
      lr: 0.05,
      epochs: 50,
      evalEvery: 4,
      patience: 2,
      onProgress: (p) => {
        if (p.valLoss !== undefined && p.valLoss === p.bestValLoss) bestParams = Array.from(problem.params[0].data);
      },
    });
    expect(res.stopReason).toBe('early_stopped');
    expect(res.steps).toBe(5 * 4);
    expect(res.bestStep).toBe(12);
    expect(Array.from(problem.params[0].data)).toEqual(bestParams);
  });

  it('stops on cancellation without applying the step in flight', async () => {
    const { problem } = regression();
    const ac = new AbortController();
    const inner = problem.step.bind(problem);
    let steps = 0;
    let atAbort: number[] = [];
    problem.step = async (b) => {
      steps++;
      if (steps === 5) {
        atAbort = Array.from(problem.params[0].data);
        ac.abort();
      }
      return inner(b);
    };
    await expect(train(problem, { lr: 0.05, epochs: 10, signal: ac.signal })).rejects.toBeInstanceOf(TrainCancelled);
    expect(Array.from(problem.params[0].data)).toEqual(atAbort);
  });

  it('resumes from a checkpoint to exactly the uninterrupted result', async () => {
    const full = regression();
    await train(full.problem, { lr: 0.05, epochs: 4, seed: 9, evalEvery: 6 });
    const part = regression();
    let saved: TrainerState | undefined;
    const ac = new AbortController();
    await expect(
      train(part.problem, {
        lr: 0.05,
        epochs: 4,
        seed: 9,
        evalEvery: 6,
        checkpointEvery: 13,
        onCheckpoint: (s) => {
          saved = s;
          ac.abort();
        },
        signal: ac.signal,
      }),
    ).rejects.toBeInstanceOf(TrainCancelled);
    expect(saved!.step).toBe(13);
    const resumed = regression();
    await train(resumed.problem, { lr: 0.05, epochs: 4, seed: 9, evalEvery: 6, resume: saved });
    expect(Array.from(resumed.problem.params[0].data)).toEqual(Array.from(full.problem.params[0].data));
  });
});

describe('options', () => {
  it('an option passed as undefined keeps its default (it must not erase it and train 0 steps)', async () => {
    const { problem } = regression();
    const res = await train(problem, { lr: 0.05, epochs: undefined, maxSteps: undefined });
    expect(res.steps).toBe(8);
  });
});
