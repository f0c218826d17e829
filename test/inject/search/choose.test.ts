import { describe, expect, it } from 'vitest';
import { chooseTrial, paretoTrials } from '../../../src/inject/search/choose.js';
import type { Trial } from '../../../src/inject/search/trial.js';

const t = (index: number, loss: number | null, rougeL: number | null): Trial => ({
  index,
  key: `k${index}`,
  config: { layers: [true], n: 1, r: 8 },
  phase: 'bo',
  status: loss === null ? 'failed' : 'ok',
  loss,
  rougeL,
  startedAt: '2026-01-01T00:00:00.000Z',
  durationMs: 1,
});

describe('chosen configuration rule', () => {
  const trials = [
    t(0, 2.0, 0.1), // best loss
    t(1, 2.03, 0.15), // within 2% (limit 2.04): the pick
    t(2, 2.039, 0.14), // within 2%, lower ROUGE-L than trial 1 and dominated by it? no: higher loss, lower rouge → dominated
    t(3, 2.2, 0.3), // best ROUGE-L but 10% worse loss
    t(4, null, null), // failed
    t(5, 2.5, 0.05), // dominated
  ];

  it('by default takes the lowest validation loss', () => {
    const { trial, rule } = chooseTrial(trials);
    expect(trial?.index).toBe(0);
    expect(rule).toContain('lowest validation loss');
    expect(paretoTrials(trials).map((x) => x.index)).toEqual([0, 1, 3]);
  });

  it('breaks a tie in loss by the higher ROUGE-L', () => {
    expect(chooseTrial([t(0, 2.0, 0.1), t(1, 2.0, 0.2), t(2, 2.1, 0.3)]).trial?.index).toBe(1);
  });

  it('with a tolerance takes the best ROUGE-L among Pareto points within it: 2% reaches trial 1, 15% the ROUGE-L leader', () => {
    expect(chooseTrial(trials, 0.02).trial?.index).toBe(1);
    expect(chooseTrial(trials, 0.02).rule).toContain('within 2% of the best observed loss');
    expect(chooseTrial(trials, 0.15).trial?.index).toBe(3);
    expect(chooseTrial(trials, 0.15).rule).toContain('15%');
  });

  it('returns null when no trial succeeded', () => {
    expect(chooseTrial([t(0, null, null)]).trial).toBeNull();
  });
});
