/**
 * Prefix caching under a random mix: three users' chats run at once through one engine with a small
 * prefix cache (conversations evicted), turn after turn, some forking from an earlier turn (an edited
 * question), some continuing a prefilled assistant reply, some cancelled mid-way. Every turn that ran
 * whole must reply exactly as an engine without the cache replies to the same request, and the cache
 * must stay within its budget and keep only conversations of users it served.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PrefixCache } from '../../src/serve/prefix-cache.js';
import type { ServeRequest, ServeResult } from '../../src/serve/types.js';
import { Rng } from '../../src/util/rng.js';
import { makeServeFixture, never, randomStoredAdapter, req, type ServeFixture } from './fixtures.js';

let f: ServeFixture;
const USERS = ['ps-a', 'ps-b', 'ps-c'];
beforeAll(async () => {
  f = makeServeFixture({ maxPositions: 512 });
  await f.giveAdapter('ps-a', randomStoredAdapter(f.cfg, [0, 1], 2, 61));
  await f.giveAdapter('ps-b', randomStoredAdapter(f.cfg, [1], 3, 62));
});
afterAll(() => f?.cleanup());

type Msg = { role: 'user' | 'assistant'; content: string };
const QUESTIONS = ['Hello, how are you today?', 'Tell me more about that.', 'And what should I do tomorrow?', 'Why?', 'Thank you, doctor.'];

describe('prefix caching under a random mix', () => {
  it('every turn that ran whole replies as without the cache; the cache stays within its budget', async () => {
    // Room for a few conversations of this model (about 50 KB per 100 tokens): they are evicted as the chats go on.
    const prefix = new PrefixCache({ maxBytes: 150_000, shape: f.model.kvShape, minTokens: 4, perScope: 2 });
    const cached = f.engine({ prefixCache: prefix, maxBatch: 4 });
    const plain = f.engine({ maxBatch: 4 });
    const rng = new Rng(Number(process.env.STRESS_SEED ?? 7));
    const done: Array<{ r: ServeRequest; result: ServeResult }> = [];
    let cancelled = 0;
    const chat = async (userId: string): Promise<void> => {
      let messages: Msg[] = [];
      for (let t = 0; t < 7; t++) {
        // Fork from an earlier turn now and then: the conversation up to a user message, a new question.
        if (messages.length >= 4 && rng.uniform() < 0.25) messages = messages.slice(0, 2 * Math.floor(rng.uniform() * (messages.length / 2)));
        messages.push({ role: 'user', content: QUESTIONS[Math.floor(rng.uniform() * QUESTIONS.length)] });
        const continued = rng.uniform() < 0.15;
        const r = req(userId, { prompt: undefined, messages: continued ? [...messages, { role: 'assistant', content: 'Well,' }] : [...messages], continueFinalMessage: continued || undefined, maxTokens: 4 + Math.floor(rng.uniform() * 8) });
        const ac = new AbortController();
        if (rng.uniform() < 0.2) setTimeout(() => ac.abort(new Error('client went away')), Math.floor(rng.uniform() * 30));
        const result = await cached.generate(r, ac.signal);
        if (result.finishReason === 'cancelled') {
          cancelled++;
          messages.pop();
          continue;
        }
        done.push({ r, result });
        messages.push({ role: 'assistant', content: (continued ? 'Well,' : '') + result.text });
      }
    };
    await Promise.all(USERS.map(chat));
    expect(cancelled).toBeGreaterThan(0);
    const stats = prefix.stats();
    expect(stats.hits).toBeGreaterThan(5);
    expect(stats.evictions).toBeGreaterThan(0);
    expect(stats.bytes).toBeLessThanOrEqual(stats.maxBytes);
    expect(cached.occupancy).toEqual({ active: 0, waiting: 0 });
    // Each turn as an engine without the cache replies to it.
    expect(done.some((d) => d.result.usage.cachedTokens > 0)).toBe(true);
    for (const { r, result } of done) {
      const want = await plain.generate(r, never());
      expect(result.text, JSON.stringify(r.messages)).toBe(want.text);
      expect(result.usage.promptTokens).toBe(want.usage.promptTokens);
    }
  });
});
