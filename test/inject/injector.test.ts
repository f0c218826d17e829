import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { smallGpt2For } from '../model/fixtures.js';
import type { ModelConfig } from '../../src/model/config.js';
import { Model } from '../../src/model/model.js';
import { initAdapter, mergeModules } from '../../src/lora/adapter.js';
import { loraTargets } from '../../src/model/weights.js';
import { makePersonaUsers } from '../../src/eval/persona.js';
import { Injector } from '../../src/inject/injector.js';
import { prepareUserData, trainHistory, type UserData } from '../../src/inject/user-data.js';
import { searchUser } from '../../src/inject/search-user.js';
import { TrainCancelled } from '../../src/train/errors.js';
import { initWeights } from '../../src/pretrain/init.js';
import { Rng } from '../../src/util/rng.js';
import { makeTokenizerFixture, type TokenizerFixture } from '../model/tokenizer-fixture.js';

let fx: TokenizerFixture;
let model: Model;
let injector: Injector;
let data: UserData;
let cfg: ModelConfig;

beforeAll(() => {
  fx = makeTokenizerFixture();
  cfg = smallGpt2For(fx.tokenizer);
  model = new Model(cfg, initWeights(cfg, 3, 0.1));
  injector = new Injector(model, fx.tokenizer, { maxLen: 96, maxNewTokens: 8 });
  data = prepareUserData(injector, makePersonaUsers(1, 5)[0].history, 1);
});
afterAll(async () => {
  await model.close();
  fx.cleanup();
});

const spec = { layers: [true, true], n: 2, r: 8 as const };

describe('Injector', () => {
  it('builds rows that fit the context and score only target tokens', () => {
    expect(data.train.length).toBeGreaterThan(10);
    for (const e of [...data.train, ...data.val]) {
      expect(e.inputIds.length).toBeLessThanOrEqual(96);
      expect(e.labels.length).toBe(e.inputIds.length);
      expect(e.labels.filter((l) => l >= 0).length).toBe(e.scored);
      expect(e.scored).toBeGreaterThan(0);
    }
  });

  it('lowers the loss of the training pairs (memory is injected into the LoRA tensors)', async () => {
    const before = await injector.loss(data.train);
    // Validate on the training pairs themselves: the kept (best) adapter is then the best fit to them.
    const t = await injector.train(spec, data.train, data.train, { epochs: 12, lr: 1e-2, seed: 1, patience: 100 });
    const after = await injector.loss(data.train, t.adapter);
    expect(after).toBeLessThan(before * 0.9);
    expect(t.result.steps).toBe(12 * Math.ceil(data.train.length / 8));
    expect(Number.isFinite(t.valLoss)).toBe(true);
    expect(t.adapter.pairs.every((p) => p.B.some((v) => v !== 0))).toBe(true);
  });

  it('is deterministic under a seed', async () => {
    const a = await injector.train(spec, data.train, data.val, { epochs: 2, lr: 1e-2, seed: 7 });
    const b = await injector.train(spec, data.train, data.val, { epochs: 2, lr: 1e-2, seed: 7 });
    const c = await injector.train(spec, data.train, data.val, { epochs: 2, lr: 1e-2, seed: 8 });
    expect(a.adapter.pairs[0].B).toEqual(b.adapter.pairs[0].B);
    expect(a.adapter.pairs[0].B).not.toEqual(c.adapter.pairs[0].B);
  });

  it('releases the train-step session when training ends (its memory arena is the largest), and rebuilds it on demand', async () => {
    await injector.train(spec, data.train.slice(0, 8), data.val, { epochs: 1, seed: 1 });
    const compiles = model.runner.compiles;
    const sessions = model.runner.size;
    await injector.train(spec, data.train.slice(0, 8), data.val, { epochs: 1, seed: 1 });
    // Only the train step was compiled again (the loss graph stayed cached), and it is gone again.
    expect(model.runner.compiles - compiles).toBe(1);
    expect(model.runner.size).toBe(sessions);
  });

  it('evaluations stop on an aborted signal, so a job asked to pause is never held by one', async () => {
    const ac = new AbortController();
    ac.abort('pause');
    await expect(injector.loss(data.val, undefined, 8, ac.signal)).rejects.toBeInstanceOf(TrainCancelled);
    await expect(injector.replies(data.split.val, undefined, 8, ac.signal)).rejects.toBeInstanceOf(TrainCancelled);
    await expect(injector.rougeL(data.split.val, undefined, ac.signal)).rejects.toBeInstanceOf(TrainCancelled);
    // Aborted mid-generation: the decode loop notices between steps.
    const mid = new AbortController();
    const p = injector.replies(data.split.val, undefined, 8, mid.signal);
    setImmediate(() => mid.abort('pause'));
    await expect(p).rejects.toBeInstanceOf(TrainCancelled);
  });

  it('does not train the vanilla configuration', async () => {
    const t = await injector.train({ layers: [false, false], n: 3, r: 8 }, data.train, data.val);
    expect(t.adapter.pairs).toEqual([]);
    expect(t.result.steps).toBe(0);
    expect(t.valLoss).toBeCloseTo(await injector.loss(data.val), 6);
  });

  it('stops on cancellation', async () => {
    const ac = new AbortController();
    const p = injector.train(spec, data.train, data.val, { epochs: 50, signal: ac.signal, onProgress: (pr) => pr.step >= 5 && ac.abort() });
    await expect(p).rejects.toBeInstanceOf(TrainCancelled);
  });

  it('keeps validation and test conversations out of the training history', () => {
    const items = makePersonaUsers(1, 5)[0].history;
    const kept = trainHistory(items, data.split);
    const held = new Set([...data.split.val, ...data.split.test].map((p) => p.target));
    expect(kept.some((i) => held.has(i.text))).toBe(false);
    expect(kept.length).toBeGreaterThan(0);
  });
});

describe('rank n*r equivalence in the model graph', () => {
  it('a merged rank-16 adapter equals its two rank-8 modules folded into the base weights', async () => {
    const rng = new Rng(11);
    const targets = loraTargets(cfg);
    const modules = [0, 1].map((s) => {
      const a = initAdapter({ layers: [true, true], n: 1, r: 8 }, targets, 20 + s, 'gaussian');
      for (const p of a.pairs) for (let i = 0; i < p.B.length; i++) p.B[i] = 0.2 * rng.normal();
      return a;
    });
    const merged = { spec: { layers: [true, true], n: 2, r: 8 as const }, scaling: 1, pairs: targets.map((t, i) => mergeModules(t, modules.map((m) => ({ A: m.pairs[i].A, B: m.pairs[i].B, r: 8 })))) };
    // Fold scale * B_i A_i of every module into GPT-2's Conv1D weight W [in, out]: W'[i][o] += sum_k A[k][i] B[o][k].
    const folded = initWeights(cfg, 3, 0.1);
    for (const [ti, t] of targets.entries()) {
      const w = folded.get(`transformer.h.${t.layer}.${t.map}.weight`)!.data as Float32Array;
      for (const m of modules) {
        const { A, B } = m.pairs[ti];
        for (let i = 0; i < t.inFeatures; i++)
          for (let o = 0; o < t.outFeatures; o++) {
            let s = 0;
            for (let k = 0; k < 8; k++) s += A[k * t.inFeatures + i] * B[o * 8 + k];
            w[i * t.outFeatures + o] += s;
          }
      }
    }
    const foldedModel = new Model(cfg, folded);
    const rows = [data.train[0].inputIds.slice(0, 40), data.train[1].inputIds.slice(0, 25)];
    const withAdapter = await model.forwardLogits(rows, { adapter: merged });
    const withFolded = await foldedModel.forwardLogits(rows);
    let maxDiff = 0;
    withAdapter.forEach((l, r) => l.forEach((v, i) => (maxDiff = Math.max(maxDiff, Math.abs(v - withFolded[r][i])))));
    expect(maxDiff).toBeLessThan(1e-4);
    await foldedModel.close();
  });
});

describe('searchUser', () => {
  it('runs a small search, keeps the chosen adapter, and never trains a configuration twice', async () => {
    const keys: string[] = [];
    const res = await searchUser(injector, data, {
      budget: 4,
      initialPoints: 3,
      seed: 2,
      fit: 'map',
      nMax: 2,
      train: { epochs: 1, lr: 1e-2 },
      onProgress: (e) => e.type === 'trial' && keys.push(e.trial.key),
    });
    expect(res.search.trials.length).toBe(4);
    expect(new Set(keys).size).toBe(keys.length);
    expect(res.chosen).not.toBeNull();
    expect(res.chosen!.trialIndex).toBe(res.search.chosen!.index);
    expect(res.chosen!.valLoss).toBeCloseTo(res.search.chosen!.loss!, 6);
  });
});
