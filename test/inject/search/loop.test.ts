import { describe, expect, it } from 'vitest';
import { SearchError } from '../../../src/inject/search/errors.js';
import { formatProgress, hypervolumeCurve, inferReferencePoint, runSearch, type Evaluator, type SearchProgress } from '../../../src/inject/search/loop.js';
import { createSpace, type LoraConfig } from '../../../src/inject/search/space.js';
import { MemoryTrialStore } from '../../../src/inject/search/store.js';
import { isOk } from '../../../src/inject/search/trial.js';

const space = createSpace({ layers: 6 });

/** Depends on layer 2, n and r only; deterministic so repeated evaluations would be visible. */
function objective(c: LoraConfig) {
  const a = c.layers[2] && c.n > 0 ? 1 : 0;
  const u = c.n / 32;
  const v = space.ranks.indexOf(c.r) / 4;
  return { loss: 1.5 - a * (0.4 * (1 - Math.exp(-4 * u)) + 0.1 * v), rougeL: 0.2 + a * 0.08 * Math.exp(-((u - 0.3) ** 2) / 0.02) * (1 - 0.5 * v) };
}

function counting() {
  const calls: string[] = [];
  const evaluate: Evaluator = async (c) => {
    calls.push(space.key(c));
    return { ...objective(c), cost: { seconds: 1 } };
  };
  return { calls, evaluate };
}

describe('runSearch', () => {
  it('runs warm starts, then the quasi-random design, then BO, with no duplicates', async () => {
    const { calls, evaluate } = counting();
    const warm: LoraConfig[] = [
      { layers: [false, false, true, false, false, false], n: 10, r: 8 },
      { layers: [false, false, true, false, false, false], n: 10, r: 8 }, // duplicate: evaluated once
      { layers: [true, true, true, true, true, true], n: 1, r: 8 },
    ];
    const events: SearchProgress[] = [];
    const res = await runSearch({ space, evaluate, budget: 14, initialPoints: 6, seed: 3, warmStart: warm, onProgress: (e) => events.push(e) });
    expect(res.trials).toHaveLength(14);
    expect(res.stopReason).toBe('budget');
    expect(new Set(calls).size).toBe(14);
    expect(res.trials.map((t) => t.phase)).toEqual([...Array(2).fill('warm-start'), ...Array(4).fill('initial'), ...Array(8).fill('bo')]);
    expect(res.trials[0].key).toBe(space.key(warm[0]));
    expect(res.trials.map((t) => t.index)).toEqual([...Array(14).keys()]);
    expect(res.trials[0].cost).toEqual({ seconds: 1 });
    // BO trials carry their acquisition value; progress lines read well.
    expect(res.trials.filter((t) => t.phase === 'bo').every((t) => t.acquisition === undefined || t.acquisition > 0)).toBe(true);
    const trialEvents = events.filter((e) => e.type === 'trial');
    expect(trialEvents).toHaveLength(14);
    expect(formatProgress(trialEvents[13], space)).toMatch(/^trial 14\/14 \[bo\] .*loss \d\.\d{4} rougeL \d\.\d{4} \| best loss/);
    expect(events.filter((e) => e.type === 'fitted')).toHaveLength(8);
    expect(events.at(-1)?.type).toBe('done');
    // The hypervolume curve never decreases and ends at the front's hypervolume.
    for (let i = 1; i < res.hypervolume.length; i++) expect(res.hypervolume[i]).toBeGreaterThanOrEqual(res.hypervolume[i - 1]);
    expect(res.hypervolume.at(-1)).toBeGreaterThan(0);
    expect(res.front.length).toBeGreaterThan(0);
    expect(res.chosen).not.toBeNull();
    expect(res.front.map((t) => t.index)).toContain(res.chosen!.index);
    expect(res.rule).toMatch(/lowest validation loss/);
    expect(res.chosen!.loss).toBe(Math.min(...res.trials.flatMap((t) => (t.loss === null ? [] : [t.loss]))));
  });

  it('resumes from its store without re-evaluating any stored trial', async () => {
    const store = new MemoryTrialStore();
    const first = counting();
    await runSearch({ space, evaluate: first.evaluate, budget: 10, initialPoints: 5, seed: 7, store });
    expect(store.trials).toHaveLength(10);
    const second = counting();
    const events: SearchProgress[] = [];
    const res = await runSearch({ space, evaluate: second.evaluate, budget: 14, initialPoints: 5, seed: 7, store, onProgress: (e) => events.push(e) });
    expect(events[0]).toEqual({ type: 'resumed', trials: 10, ok: 10 });
    expect(second.calls).toHaveLength(4);
    for (const k of second.calls) expect(first.calls).not.toContain(k);
    expect(res.trials.map((t) => t.index)).toEqual([...Array(14).keys()]);
    expect(store.trials).toHaveLength(14);
    // Budget already spent: nothing is evaluated at all.
    const third = counting();
    const again = await runSearch({ space, evaluate: third.evaluate, budget: 14, initialPoints: 5, seed: 7, store });
    expect(third.calls).toHaveLength(0);
    expect(again.stopReason).toBe('budget');
    expect(again.trials).toHaveLength(14);
  });

  it('resumes an interrupted initial design where it stopped', async () => {
    const store = new MemoryTrialStore();
    const a = counting();
    await runSearch({ space, evaluate: a.evaluate, budget: 3, initialPoints: 6, seed: 11, store });
    const b = counting();
    await runSearch({ space, evaluate: b.evaluate, budget: 6, initialPoints: 6, seed: 11, store });
    const c = counting();
    await runSearch({ space, evaluate: c.evaluate, budget: 6, initialPoints: 6, seed: 11, store: new MemoryTrialStore() });
    // Same six design points as an uninterrupted run with the same seed.
    expect([...a.calls, ...b.calls]).toEqual(c.calls);
  });

  it('stops on abort without recording the interrupted trial', async () => {
    const ac = new AbortController();
    const store = new MemoryTrialStore();
    let n = 0;
    const evaluate: Evaluator = async (c, ctx) => {
      if (++n === 4) {
        ac.abort();
        if (ctx.signal.aborted) throw new Error('aborted by signal');
      }
      return objective(c);
    };
    const res = await runSearch({ space, evaluate, budget: 10, seed: 1, store, signal: ac.signal });
    expect(res.stopReason).toBe('aborted');
    expect(res.trials).toHaveLength(3);
    expect(store.trials).toHaveLength(3);
  });

  it('records failed trials, never retries them, and gives up after consecutive failures', async () => {
    let n = 0;
    const flaky: Evaluator = async (c) => {
      n++;
      if (n === 2) throw new Error('out of memory');
      if (n === 3) return { loss: NaN, rougeL: 0.1 };
      return objective(c);
    };
    const res = await runSearch({ space, evaluate: flaky, budget: 8, initialPoints: 4, seed: 2 });
    expect(res.trials.map((t) => t.status)).toEqual(['ok', 'failed', 'failed', 'ok', 'ok', 'ok', 'ok', 'ok']);
    expect(res.trials[1].error).toBe('out of memory');
    expect(res.trials[2].error).toMatch(/nonfinite_objective/);
    expect(new Set(res.trials.map((t) => t.key)).size).toBe(8);
    const broken: Evaluator = async () => {
      throw new Error('CUDA? no.');
    };
    await expect(runSearch({ space, evaluate: broken, budget: 8, seed: 2 })).rejects.toMatchObject({ code: 'evaluation_failed' });
  });

  it('stops when a small space is exhausted', async () => {
    const tiny = createSpace({ layers: 2, fixed: { n: 1, r: 8 } });
    const res = await runSearch({ space: tiny, evaluate: async (c) => ({ loss: 1 + c.layers.filter(Boolean).length, rougeL: 0.1 * c.layers.filter(Boolean).length }), budget: 10, initialPoints: 2, seed: 1 });
    expect(res.trials).toHaveLength(4);
    expect(res.stopReason).toBe('exhausted');
  });

  it('stops at the time budget: no trial starts past it, the running one finishes', async () => {
    // A clock of its own, so that the budget does not depend on how busy the machine is: each trial takes 30 ms of it.
    let clock = 1000;
    const res = await runSearch({
      space,
      evaluate: async (c) => {
        clock += 30;
        return objective(c);
      },
      timeBudgetMs: 50,
      now: () => clock,
      seed: 1,
    });
    expect(res.stopReason).toBe('time');
    expect(res.trials).toHaveLength(2); // started at 0 and 30 ms; at 60 ms the budget is spent
    expect(res.trials.map((t) => t.durationMs)).toEqual([30, 30]);
  });

  it('proposes distinct batches with NUTS-fitted models (q = 2)', async () => {
    const { calls, evaluate } = counting();
    const res = await runSearch({ space, evaluate, budget: 10, initialPoints: 6, batchSize: 2, fit: 'nuts', nuts: { warmup: 24, samples: 16, thinning: 4 }, seed: 5 });
    expect(res.trials).toHaveLength(10);
    expect(new Set(calls).size).toBe(10);
    expect(res.trials.slice(6).every((t) => t.phase === 'bo')).toBe(true);
  });

  it('rejects a search without a budget and stored trials from another space', async () => {
    const { evaluate } = counting();
    await expect(runSearch({ space, evaluate })).rejects.toBeInstanceOf(SearchError);
    const store = new MemoryTrialStore();
    await runSearch({ space, evaluate, budget: 2, seed: 1, store });
    await expect(runSearch({ space: createSpace({ layers: 4 }), evaluate, budget: 3, store })).rejects.toMatchObject({ code: 'store_mismatch' });
  });

  it('infers the reference point from the worst values plus 10% of their range', () => {
    const mk = (loss: number, rougeL: number, index: number) => ({ index, key: `${index}`, config: space.vanilla(), phase: 'initial' as const, status: 'ok' as const, loss, rougeL, startedAt: '', durationMs: 0 });
    const ref = inferReferencePoint([mk(1, 0.2, 0), mk(2, 0.4, 1)]);
    expect(ref.loss).toBeCloseTo(2.1, 12);
    expect(ref.rougeL).toBeCloseTo(0.18, 12);
    // HV after each trial, by hand: box (2.1−1)·(0.2−0.18), then add (2.1−2)·(0.4−0.2).
    const curve = hypervolumeCurve([mk(1, 0.2, 0), mk(2, 0.4, 1)], ref);
    expect(curve[0]).toBeCloseTo(1.1 * 0.02, 12);
    expect(curve[1]).toBeCloseTo(1.1 * 0.02 + 0.1 * 0.2, 12);
    expect(isOk(mk(1, 0.2, 0))).toBe(true);
  });
});
