/**
 * The engine under a random mix of everything at once: users with adapters (a cache too small for
 * them all, so adapters are evicted and reloaded), memory and plain users; generations plain and
 * streamed, greedy and seeded, guided to JSON, with logprobs and stop strings; scoring with the base
 * model beside it; arriving over 60 ms, and about a third of them cancelled at random moments, some
 * streams left early (STRESS_SEED picks another mix).
 * Every request must settle (its result, or a ServeError of an expected code), and afterwards nothing
 * may be left behind: no row, nothing waiting, no adapter leased, no quota held. Greedy requests that
 * ran to their end must equal the same request run alone.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adapterBytes } from '../../src/lora/adapter.js';
import { ServeError } from '../../src/serve/errors.js';
import type { ServeRequest, ServeResult } from '../../src/serve/types.js';
import { Rng } from '../../src/util/rng.js';
import { makeServeFixture, never, randomStoredAdapter, req, serveConfig, type ServeFixture } from './fixtures.js';

let f: ServeFixture;
const ADAPTED = ['st-a', 'st-b', 'st-c', 'st-d'];
const USERS = [...ADAPTED, 'st-mem', 'st-plain'];

beforeAll(async () => {
  const probe = randomStoredAdapter(serveConfig(256), [0, 1], 2, 1);
  // Room for one adapter of the four (more while they are leased): the mix evicts and reloads them.
  f = makeServeFixture({ maxPositions: 256, cacheBytes: adapterBytes(probe) + 1024 });
  for (const [i, u] of ADAPTED.entries()) await f.giveAdapter(u, randomStoredAdapter(f.cfg, [i % 2, 1], 2, 100 + i));
  f.addHistory('st-mem', ['I keep bees in my garden.', 'Honey harvest is in August.']);
  f.addHistory('st-plain', []);
});
afterAll(() => f?.cleanup());

const EXPECTED_CODES = new Set(['cancelled', 'queue_full', 'user_queue_full']);

describe('the engine under a random mix', () => {
  it('settles every request and leaves nothing behind; greedy requests that ran whole equal themselves alone', async () => {
    const e = f.engine({ maxBatch: 6, maxQueue: 256 });
    const rng = new Rng(Number(process.env.STRESS_SEED ?? 2026));
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rng.uniform() * xs.length)];
    const greedyDone: Array<{ r: ServeRequest; result: ServeResult }> = [];
    let cancelledSeen = 0;
    let scored = 0;
    const runs = Array.from({ length: 120 }, async (_, i) => {
      const userId = pick(USERS);
      const ac = new AbortController();
      const abortAfter = rng.uniform() < 0.35 ? Math.floor(rng.uniform() * 40) : -1;
      const greedy = rng.uniform() < 0.5;
      const r = req(userId, {
        maxTokens: 1 + Math.floor(rng.uniform() * 12),
        mode: pick(['auto', 'auto', 'vanilla', 'memory', 'injected'] as const),
        prompt: pick(['Hello, how are you?', 'Tell me about bees.', 'What is the weather?', 'Count: one two']),
        ...(greedy ? {} : { temperature: 0.8, topP: 0.9, seed: i }),
        ...(rng.uniform() < 0.2 ? { responseFormat: { type: 'json_object' as const } } : {}),
        ...(rng.uniform() < 0.2 ? { logprobs: true, topLogprobs: 2 } : {}),
        ...(rng.uniform() < 0.2 ? { stop: ['e'] } : {}),
      });
      const kind = rng.uniform();
      const leaveAfter = rng.uniform() < 0.3 ? 1 + Math.floor(rng.uniform() * 3) : Infinity;
      const compare = rng.uniform() < 0.5;
      // Arrivals spread over 60 ms, so requests join and leave a running batch between its steps.
      await new Promise((resolve) => setTimeout(resolve, Math.floor(rng.uniform() * 60)));
      if (abortAfter >= 0) setTimeout(() => ac.abort(new Error('client went away')), abortAfter);
      try {
        if (kind < 0.15) {
          const s = await e.score({ userId, prompt: r.prompt as string, text: ' Fine, thanks.', mode: r.mode, compare }, ac.signal);
          expect(s.tokens.length).toBeGreaterThan(0);
          scored++;
          return;
        }
        if (kind < 0.5) {
          // Streamed; some consumers leave after a few events.
          let events = 0;
          for await (const ev of e.stream({ ...r, stream: true }, ac.signal)) {
            if (++events >= leaveAfter) break;
            if (ev.type === 'done' && ev.result.finishReason === 'cancelled') cancelledSeen++;
          }
          return;
        }
        const result = await e.generate(r, ac.signal);
        if (result.finishReason === 'cancelled') cancelledSeen++;
        else if (greedy && abortAfter < 0) greedyDone.push({ r, result });
      } catch (err) {
        expect(err, String(err)).toBeInstanceOf(ServeError);
        expect(EXPECTED_CODES, (err as ServeError).code).toContain((err as ServeError).code);
        if ((err as ServeError).code === 'cancelled') cancelledSeen++;
      }
    });
    await Promise.all(runs);
    // Nothing left behind.
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(e.occupancy).toEqual({ active: 0, waiting: 0 });
    expect(e.queue(10)).toMatchObject({ rows: [], waiting: 0 });
    expect(f.cache.stats()).toMatchObject({ pinnedEntries: 0, pinnedBytes: 0, loading: 0 });
    for (const u of USERS) expect(e.heldTokens(u), u).toBe(0);
    // The mix did what it meant to: cancellations, scoring, adapters reloaded, greedy replies to compare.
    expect(cancelledSeen).toBeGreaterThan(5);
    expect(scored).toBeGreaterThan(3);
    expect(f.cache.counters().evictions).toBeGreaterThan(0);
    expect(greedyDone.length).toBeGreaterThan(5);
    // Greedy replies in the mix equal the same request alone (the adapter versions did not change).
    for (const { r, result } of greedyDone) {
      const alone = await e.generate(r, never());
      expect(alone.text, JSON.stringify(r)).toBe(result.text);
      expect(alone.personalization).toEqual(result.personalization);
    }
  });
});
