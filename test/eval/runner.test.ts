import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { smallGpt2For } from '../model/fixtures.js';
import { ablateUser, ablationTable, fixedPartsOf, summariseAblation, type AblationUser } from '../../src/eval/ablation.js';
import { loadMedDia, type MedDia } from '../../src/eval/meddia.js';
import { rouge1, rougeL } from '../../src/eval/metrics.js';
import { markdownTable, summarise } from '../../src/eval/report.js';
import { evaluateUser, type UserResult } from '../../src/eval/runner.js';
import { Injector } from '../../src/inject/injector.js';
import { prepareUserData } from '../../src/inject/user-data.js';
import { evaluateConfig, searchUser, trialSeed } from '../../src/inject/search-user.js';
import { defaultSpec } from '../../src/lora/spec.js';
import { toHistoryItems } from '../../src/eval/meddia.js';
import type { ModelConfig } from '../../src/model/config.js';
import { Model } from '../../src/model/model.js';
import { initWeights } from '../../src/pretrain/init.js';
import { makeTokenizerFixture, type TokenizerFixture } from '../model/tokenizer-fixture.js';

let fx: TokenizerFixture;
let model: Model;
let injector: Injector;
let med: MedDia;

beforeAll(() => {
  fx = makeTokenizerFixture();
  const cfg: ModelConfig = smallGpt2For(fx.tokenizer);
  model = new Model(cfg, initWeights(cfg, 5, 0.1));
  injector = new Injector(model, fx.tokenizer, { maxLen: 96, maxNewTokens: 6 });
  med = loadMedDia();
});
afterAll(async () => {
  await model.close();
  fx.cleanup();
});

describe('fixedPartsOf (the ablation variants)', () => {
  it('holds exactly the parts a variant does not search, at the default configuration', () => {
    const all = [true, true, true];
    expect(fixedPartsOf('default', 3)).toEqual({ layers: all, n: 1, r: 8 });
    expect(fixedPartsOf('layers', 3)).toEqual({ n: 1, r: 8 });
    expect(fixedPartsOf('n', 3)).toEqual({ layers: all, r: 8 });
    expect(fixedPartsOf('r', 3)).toEqual({ layers: all, n: 1 });
    expect(fixedPartsOf('layers+n', 3)).toEqual({ r: 8 });
    expect(fixedPartsOf('n+r', 3)).toEqual({ layers: all });
    expect(fixedPartsOf('all', 3)).toEqual({});
  });
});

describe('the evaluation runner on one MedDia user (tiny random model)', () => {
  const user = () => med.testUserIds[0];

  it('scores every method on the same test pairs; vanilla equals an independent scoring of the vanilla replies', async () => {
    const log: string[] = [];
    const r = await evaluateUser(injector, med, user(), {
      methods: ['vanilla', 'memory', 'default', 'milp', 'milp+memory'],
      budget: 2,
      initialPoints: 2,
      nMax: 2,
      seed: 1,
      memoryK: 2,
      train: { epochs: 1, lr: 1e-2 },
      log: (l) => log.push(l),
    });
    const data = prepareUserData(injector, toHistoryItems(med.user(user())), 1);
    expect(r.pairs.test).toBe(data.split.test.length);
    const replies = await injector.replies(data.split.test);
    const n = data.split.test.length;
    const rl = data.split.test.reduce((s, p, i) => s + rougeL(p.target, replies[i]).fmeasure, 0) / n;
    const r1 = data.split.test.reduce((s, p, i) => s + rouge1(p.target, replies[i]).fmeasure, 0) / n;
    expect(r.scores.vanilla!.rougeLF).toBeCloseTo(rl, 12);
    expect(r.scores.vanilla!.rouge1F).toBeCloseTo(r1, 12);
    for (const m of ['memory', 'default', 'milp', 'milp+memory'] as const) {
      const s = r.scores[m]!;
      for (const v of Object.values(s)) expect(v >= 0 && v <= 1).toBe(true);
    }
    expect(r.chosen?.trials).toBe(2);
    expect(r.samples[0].replies.vanilla).toBe(replies[0]);
    expect(log.filter((l) => l.includes(' R-L ')).length).toBe(5);
  });

  it('an ablation variant searches only its parts and reports the chosen adapter on the test pairs', async () => {
    const r = await ablateUser(injector, med, user(), { variants: ['default', 'r'], budget: 2, initialPoints: 2, seed: 1, train: { epochs: 1, lr: 1e-2 }, log: () => {} });
    expect(r.variants.default!.config).toBe("L11-n1-r8");
    expect(r.variants.default!.trials).toBe(1);
    // Only r was searched: layers stay all-on and n stays 1 in the chosen configuration.
    expect(r.variants.r!.config).toMatch(/^L11-n1-r(8|16|32|64|96)$/);
    expect(r.variants.r!.trials).toBe(2);
    const rows = summariseAblation([r], ['default', 'r']);
    expect(rows.map((x) => x.variant)).toEqual(['vanilla', 'default', 'r']);
    expect(rows[2].testRougeL.mean).toBe(r.variants.r!.testRougeL);
  });
});

describe('searchUser with already evaluated configurations', () => {
  it('counts them as its first trials without training them again, and can choose them', async () => {
    const data = prepareUserData(injector, toHistoryItems(med.user(med.testUserIds[0])), 1);
    const t0 = await evaluateConfig(injector, data, defaultSpec(2), { epochs: 1, lr: 1e-2, seed: trialSeed(1, 0) }, 0);
    let trained = 0;
    const s = await searchUser(injector, data, { budget: 1, initialPoints: 1, seed: 1, fit: 'map', train: { epochs: 1, lr: 1e-2, onProgress: () => void trained++ }, evaluated: [t0] });
    expect(trained).toBe(0);
    expect(s.search.trials.map((t) => [t.phase, t.loss])).toEqual([['warm-start', t0.valLoss]]);
    expect(s.chosen!.adapter).toBe(t0.adapter);
    await expect(searchUser(injector, data, { budget: 1, initialPoints: 1, seed: 1, fit: 'map', train: {}, evaluated: [{ ...t0, trialIndex: 3 }] })).rejects.toThrow(/trialIndex/);
  });
});

describe('reports', () => {
  const u = (id: string, v: number, m: number, mem: number): UserResult => ({
    userId: id,
    pairs: { train: 1, val: 1, test: 1 },
    scores: Object.fromEntries(
      Object.entries({ vanilla: v, memory: mem, milp: m }).map(([k, x]) => [k, { rouge1F: x, rouge1R: x, rougeLF: x, rougeLR: x, personaF1: x }]),
    ),
    seconds: {},
    samples: [],
  });

  it('MiLP gain is relative to the better baseline, with a paired interval', () => {
    const s = summarise([u('a', 0.1, 0.2, 0.05), u('b', 0.2, 0.3, 0.1)], ['vanilla', 'memory', 'milp']);
    expect(s.milpGain!.over).toBe('vanilla');
    expect(s.milpGain!.relative).toBeCloseTo(0.25 / 0.15 - 1, 12);
    expect(s.milpGain!.difference.mean).toBeCloseTo(0.1, 12);
    expect(s.milpGain!.difference.pBelowZero).toBe(0);
    const md = markdownTable(s);
    expect(md).toContain('| MiLP (searched) | 2 | 25.00 [20.00, 30.00]');
    expect(md).toContain('+66.7%');
  });

  it('the ablation table lists vanilla first and every variant with its searched parts', () => {
    const cell = (x: number) => ({ config: 'c', trials: 1, valLoss: 1, valRougeL: x, testRouge1: x, testRougeL: x, seconds: 1 });
    const users: AblationUser[] = [
      { userId: 'a', vanilla: { testRouge1: 0.1, testRougeL: 0.1 }, variants: { all: cell(0.3), n: cell(0.2) } },
      { userId: 'b', vanilla: { testRouge1: 0.1, testRougeL: 0.1 }, variants: { all: cell(0.5), n: cell(0.2) } },
    ];
    const t = ablationTable(summariseAblation(users, ['n', 'all']));
    const lines = t.split('\n');
    expect(lines[2]).toMatch(/^\| no adapter \| 2 \| 10\.00 \| 10\.00 \| – \| – \|$/);
    expect(lines[3]).toMatch(/^\| n \| 2 \| 20\.00 \| 20\.00 \| 1\.0000 \| 20\.00 \|$/);
    expect(lines[4]).toMatch(/^\| layers \+ n \+ r \| 2 \| 40\.00 \[30\.00, 50\.00\]/);
  });
});
