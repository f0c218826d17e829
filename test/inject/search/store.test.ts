import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runSearch } from '../../../src/inject/search/loop.js';
import { createSpace } from '../../../src/inject/search/space.js';
import { JsonFileTrialStore, MemoryTrialStore } from '../../../src/inject/search/store.js';
import type { Trial } from '../../../src/inject/search/trial.js';

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});
async function tempDir() {
  const d = await mkdtemp(join(tmpdir(), 'memlora-search-'));
  dirs.push(d);
  return d;
}

const trial = (index: number): Trial => ({
  index,
  key: 'vanilla',
  config: { layers: [false, false], n: 0, r: 8 },
  phase: 'initial',
  status: 'ok',
  loss: 1 + index,
  rougeL: 0.1,
  cost: { seconds: 2 },
  startedAt: '2026-01-01T00:00:00.000Z',
  durationMs: 5,
});

describe('trial stores', () => {
  it('memory store hands out copies', async () => {
    const s = new MemoryTrialStore();
    const t = trial(0);
    await s.save(t);
    t.loss = 99;
    const loaded = await s.load();
    expect(loaded[0].loss).toBe(1);
    loaded[0].loss = 42;
    expect((await s.load())[0].loss).toBe(1);
  });

  it('JSON file store: empty when missing, persists every save, survives reopening', async () => {
    const path = join(await tempDir(), 'nested', 'trials.json');
    const a = new JsonFileTrialStore(path);
    expect(await a.load()).toEqual([]);
    await Promise.all([a.save(trial(0)), a.save(trial(1))]);
    const b = new JsonFileTrialStore(path);
    expect(await b.load()).toEqual([trial(0), trial(1)]);
    const raw = JSON.parse(await readFile(path, 'utf8'));
    expect(raw.version).toBe(1);
    expect(raw.trials).toHaveLength(2);
  });

  it('JSON file store: a search resumes from the file without re-evaluating', async () => {
    const path = join(await tempDir(), 'trials.json');
    const space = createSpace({ layers: 4 });
    const seen: string[] = [];
    const evaluate = async (c: { layers: boolean[]; n: number }) => {
      seen.push(JSON.stringify(c));
      return { loss: 2 - c.n / 32 - (c.layers[1] ? 0.2 : 0), rougeL: 0.1 + (c.layers[1] ? 0.05 : 0) + c.n / 320 };
    };
    await runSearch({ space, evaluate, budget: 6, initialPoints: 4, seed: 1, store: new JsonFileTrialStore(path) });
    expect(seen).toHaveLength(6);
    const res = await runSearch({ space, evaluate, budget: 8, initialPoints: 4, seed: 1, store: new JsonFileTrialStore(path) });
    expect(seen).toHaveLength(8);
    expect(new Set(seen).size).toBe(8);
    expect(res.trials).toHaveLength(8);
    expect(await new JsonFileTrialStore(path).load()).toHaveLength(8);
  });

  it('JSON file store: a corrupt file is an error with a code, not an empty search', async () => {
    const path = join(await tempDir(), 'trials.json');
    await writeFile(path, '{"version": 1, "trials": [');
    await expect(new JsonFileTrialStore(path).load()).rejects.toMatchObject({ code: 'store_corrupt' });
    await writeFile(path, '{"version": 2, "trials": []}');
    await expect(new JsonFileTrialStore(path).load()).rejects.toMatchObject({ code: 'store_corrupt' });
  });
});
