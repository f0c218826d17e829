/**
 * Chunked prefill in the engine (EngineOptions.prefillChunk), on a tiny random model with real SQLite
 * and adapters: a long prompt read a chunk at a time replies as one read whole (plain, through an
 * adapter, beside other rows, continuing a cached conversation); the rows already decoding keep
 * getting tokens while it is read (none do when it is read whole); it holds its row meanwhile, shows
 * in the queue report as prefilling, and a cancellation between chunks frees everything.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { Counter } from '../../src/metrics.js';
import type { Engine } from '../../src/serve/engine.js';
import { PrefixCache } from '../../src/serve/prefix-cache.js';
import type { ServeRequest, ServeResult } from '../../src/serve/types.js';
import { makeServeFixture, never, randomStoredAdapter, req, type ServeFixture } from './fixtures.js';

let f: ServeFixture;
beforeAll(() => {
  f = makeServeFixture({ maxPositions: 256 });
});
afterAll(() => f.cleanup());

const SENTENCES = ['The weather was calm over the harbour this morning.', 'Fishermen mended their nets beside the old stone wall.', 'A child ran along the pier with a red kite.', 'Later the wind rose and the boats came home early.'];
/** A prompt of about `sentences` times 34 tokens (the fixture's small vocabulary). */
const longPrompt = (sentences: number, salt = 0): string => Array.from({ length: sentences }, (_, i) => SENTENCES[(i + salt) % SENTENCES.length]).join(' ');
const chunks = (): number => (f.registry.get('memlora_generate_prefill_chunks_total') as Counter).get();
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));
const comparable = (r: ServeResult) => ({ text: r.text, finishReason: r.finishReason, usage: r.usage, personalization: r.personalization, logprobs: r.logprobs?.map((l) => l.token) });

describe('chunked prefill', () => {
  it('a long prompt read a chunk at a time replies as one read whole: plain and through an adapter, alone and beside other rows', async () => {
    await f.giveAdapter('ck-a', randomStoredAdapter(f.cfg, [0, 1], 2, 61));
    await f.giveAdapter('ck-b', randomStoredAdapter(f.cfg, [1], 1, 62));
    const whole = f.engine();
    const chunked = f.engine({ prefillChunk: 16 });
    const requests: ServeRequest[] = [
      req('ck-a', { prompt: longPrompt(3), maxTokens: 12, logprobs: true, topLogprobs: 2 }),
      req('ck-plain', { prompt: longPrompt(2, 1), maxTokens: 12, logprobs: true }),
      req('ck-b', { prompt: 'Hi there.', maxTokens: 12 }), // short: read whole by both
      req('ck-b', { prompt: longPrompt(2, 2), maxTokens: 12 }),
    ];
    const want = await Promise.all(requests.map((r) => whole.generate(r, never())));
    // Alone, one at a time.
    for (let i = 0; i < requests.length; i++) {
      const before = chunks();
      const got = await chunked.generate(requests[i], never());
      expect(comparable(got)).toEqual(comparable(want[i]));
      const n = got.usage.promptTokens;
      expect(chunks() - before).toBe(n > 16 ? Math.ceil(n / 16) : 0);
      got.logprobs?.forEach((l, k) => expect(l.logprob).toBeCloseTo(want[i].logprobs![k].logprob, 4));
    }
    expect(want[0].usage.promptTokens).toBeGreaterThan(80);
    expect(want[0].personalization).toEqual({ mode: 'injected', adapterVersion: 1 });
    // All at once: the long ones are read in turn while the short one decodes.
    const together = await Promise.all(requests.map((r) => chunked.generate(r, never())));
    expect(together.map(comparable)).toEqual(want.map(comparable));
  }, 60_000);

  it('joiners arriving together are read in calls of like length: long prompts do not pad the short ones to their length', async () => {
    // Every user with an adapter, cached by the runs alone: all five are ready at once, and each
    // group's rows in the pool are its own (the long ones' group reads the pool past the short ones').
    for (let i = 0; i < 5; i++) await f.giveAdapter(`ck-g${i}`, randomStoredAdapter(f.cfg, [i % 2, 1], 1 + (i % 3), 65 + i));
    const e = f.engine({ prefillChunk: 0 });
    const prompts = [longPrompt(3), longPrompt(3, 1), 'Hi.', 'Hello there.', 'Good day!'];
    const requests = prompts.map((prompt, i) => req(`ck-g${i}`, { prompt, maxTokens: 6 }));
    const alone: ServeResult[] = [];
    for (const r of requests) alone.push(await e.generate(r, never()));
    const calls: number[][] = [];
    const prefill = f.model.prefill.bind(f.model);
    const spy = vi.spyOn(f.model, 'prefill').mockImplementation((rows, lora, padding) => {
      calls.push(rows.map((r) => r.length));
      return prefill(rows, lora, padding);
    });
    try {
      const together = await Promise.all(requests.map((r) => e.generate(r, never())));
      expect(together.map(comparable)).toEqual(alone.map(comparable));
    } finally {
      spy.mockRestore();
    }
    const lengths = alone.map((r) => r.usage.promptTokens);
    expect(calls).toEqual([lengths.slice(2).sort((a, b) => a - b), lengths.slice(0, 2).sort((a, b) => a - b)]);
    expect(alone.every((r) => r.personalization.mode === 'injected')).toBe(true);
  }, 60_000);

  it('scoring requests arriving together are scored in calls of like length, as they are alone', async () => {
    const e = f.engine();
    const requests = [longPrompt(3), 'Hi.', longPrompt(3, 2), 'Good day!'].map((prompt, i) => ({ userId: `ck-s${i}`, prompt, text: ' Fine, thank you.', mode: 'vanilla' as const, topLogprobs: 2 }));
    const alone = [];
    for (const r of requests) alone.push(await e.score(r, never()));
    const calls: number[][] = [];
    const forward = f.model.forwardLogits.bind(f.model);
    const spy = vi.spyOn(f.model, 'forwardLogits').mockImplementation((rows, lora) => {
      calls.push(rows.map((r) => r.length));
      return forward(rows, lora);
    });
    try {
      const together = await Promise.all(requests.map((r) => e.score(r, never())));
      expect(together.map((r) => r.tokens)).toEqual(alone.map((r) => r.tokens));
    } finally {
      spy.mockRestore();
    }
    expect(calls.length).toBe(2);
    expect(calls.map((c) => c.length)).toEqual([2, 2]);
    expect(Math.max(...calls[0])).toBeLessThan(Math.min(...calls[1]));
  }, 60_000);

  it('a scoring request with a long context is read a chunk at a time, each pass (its adapter\'s, the base model\'s) as read whole; other rows decode meanwhile; cancelled between chunks, it is freed', async () => {
    await f.giveAdapter('ck-sc', randomStoredAdapter(f.cfg, [0, 1], 2, 71));
    const request = { userId: 'ck-sc', prompt: longPrompt(3), text: ' The boats came home early.', mode: 'auto' as const, topLogprobs: 2, compare: true };
    const want = await f.engine().score(request, never());
    const e = f.engine({ prefillChunk: 16 });
    const before = chunks();
    const got = await e.score(request, never());
    expect(want.personalization.mode).toBe('injected');
    expect(got.usage).toEqual(want.usage);
    expect(got.personalization).toEqual(want.personalization);
    const n = want.usage.contextTokens + want.usage.scoredTokens;
    expect(n).toBeGreaterThan(80);
    expect(chunks() - before).toBe(Math.ceil(n / 16) + Math.ceil((want.usage.baseContextTokens! + want.usage.scoredTokens) / 16));
    expect(got.tokens.map((t) => [t.token, t.rank, t.top.map((a) => a.token)])).toEqual(want.tokens.map((t) => [t.token, t.rank, t.top.map((a) => a.token)]));
    got.tokens.forEach((t, i) => expect(t.logprob).toBeCloseTo(want.tokens[i].logprob, 4));
    got.base!.logprobs.forEach((lp, i) => expect(lp).toBeCloseTo(want.base!.logprobs[i], 4));
    expect(got.logprob).toBeCloseTo(want.logprob, 3);
    expect(Math.abs(got.logprob - got.base!.logprob)).toBeGreaterThan(0.01); // the two passes differ: the adapter is read

    // Another row decodes while the context is read; a cancellation between chunks frees it.
    const slow = f.engine({ prefillChunk: 4 });
    let tokens = 0;
    const streaming = (async () => {
      for await (const ev of slow.stream(req('ck-sc-stream', { maxTokens: 200, ignoreEos: true }), never())) if (ev.type === 'token') tokens++;
    })();
    while (tokens < 2) await tick();
    const ac = new AbortController();
    const start = chunks();
    const scoring = slow.score(request, ac.signal).catch((err: unknown) => err);
    const tokensBefore = tokens;
    while (chunks() - start < 6) await tick();
    expect(tokens - tokensBefore).toBeGreaterThanOrEqual(4);
    expect(slow.queue(10).rows.find((r) => r.userId === 'ck-sc')).toMatchObject({ state: 'prefill', promptTokensRead: expect.any(Number) });
    ac.abort();
    expect(await scoring).toMatchObject({ code: 'cancelled' });
    expect(chunks() - start).toBeLessThan(2 * Math.ceil(n / 4));
    await streaming;
    expect(slow.queue(10).rows).toEqual([]);
  }, 60_000);

  it('a request arriving while the last chunk of one that ends at once is read is served (no lost wake-up)', async () => {
    const e = f.engine({ prefillChunk: 8 });
    const within = <T>(p: Promise<T>): Promise<T> => Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error('not served within 10 s')), 10_000))]);
    // A scoring request, and a reply of one token: neither joins the batch after its last chunk.
    await within(e.score({ userId: 'ck-wake', prompt: longPrompt(2), text: ' Fine.', mode: 'vanilla' }, never()));
    expect((await within(e.score({ userId: 'ck-wake', prompt: 'Hi.', text: ' Fine.', mode: 'vanilla' }, never()))).tokens.length).toBeGreaterThan(0);
    await within(e.generate(req('ck-wake', { prompt: longPrompt(2), maxTokens: 1 }), never()));
    expect((await within(e.generate(req('ck-wake', { maxTokens: 2 }), never()))).usage.completionTokens).toBe(2);
  }, 60_000);

  it('rows already decoding keep getting tokens while a long prompt is read (none do while one is read whole), and it holds its row meanwhile', async () => {
    const during = async (prefillChunk: number): Promise<{ tokens: number; rows: number; prefilling: number; read: number[]; promptTokens: number }> => {
      const e = f.engine({ prefillChunk, maxBatch: 2 });
      let tokens = 0;
      const streaming = (async () => {
        for await (const ev of e.stream(req('ck-stream', { maxTokens: 120, ignoreEos: true }), never())) if (ev.type === 'token') tokens++;
      })();
      while (tokens < 2) await tick();
      let first = -1;
      let report = e.queue(10);
      const read: number[] = [];
      const reading = (async () => {
        for await (const ev of e.stream(req('ck-long', { prompt: longPrompt(3), maxTokens: 4 }), never())) {
          if (ev.type === 'token' && first < 0) first = tokens;
        }
      })();
      const before = tokens;
      // A third request waits: the long prompt holds the batch's second row while it is read.
      const third = e.generate(req('ck-third', { maxTokens: 2 }), never());
      while (first < 0) {
        const q = e.queue(10);
        const row = q.rows.find((r) => r.state === 'prefill' && r.userId === 'ck-long');
        if (row) {
          report = q;
          if (read.at(-1) !== row.promptTokensRead) read.push(row.promptTokensRead);
        }
        await tick();
      }
      await Promise.all([streaming, reading, third]);
      const long = report.rows.find((r) => r.userId === 'ck-long');
      return { tokens: first - before, rows: report.rows.length, prefilling: report.rows.filter((r) => r.state === 'prefill' && r.userId === 'ck-long').length, read, promptTokens: long?.promptTokens ?? 0 };
    };
    const chunked = await during(8);
    const whole = await during(0);
    // About 100 tokens in 8-token chunks: a decode step of the other row after each.
    expect(chunked.tokens).toBeGreaterThanOrEqual(10);
    expect(chunked.rows).toBe(2); // the streaming row and the long prompt; the third waits
    expect(chunked.prefilling).toBe(1);
    // The queue report shows the prompt read so far, a chunk at a time.
    expect(chunked.read.length).toBeGreaterThanOrEqual(5);
    expect(chunked.read.every((n, i) => n % 8 === 0 && n < chunked.promptTokens && (i === 0 || n > chunked.read[i - 1]))).toBe(true);
    expect(whole.tokens).toBeLessThanOrEqual(1); // at most the step that was running when it arrived
  }, 60_000);

  it('a request cancelled between chunks is freed: nothing left in the batch, the queue or its user\'s row count', async () => {
    await f.giveAdapter('ck-cancel', randomStoredAdapter(f.cfg, [0], 1, 63));
    const e = f.engine({ prefillChunk: 4 });
    const ac = new AbortController();
    const before = chunks();
    const reply = e.generate(req('ck-cancel', { prompt: longPrompt(3), maxTokens: 8 }), ac.signal);
    while (chunks() - before < 2) await tick();
    ac.abort();
    const r = await reply;
    expect(r.finishReason).toBe('cancelled');
    expect(r.text).toBe('');
    expect(chunks() - before).toBeLessThan(Math.ceil(r.usage.promptTokens / 4));
    expect(e.occupancy).toEqual({ active: 0, waiting: 0 });
    expect(e.queue(10).rows).toEqual([]);
    expect(e.queue(10).users).toEqual([]);
    // The engine goes on serving, the same user included.
    expect((await e.generate(req('ck-cancel', { maxTokens: 3 }), never())).finishReason).not.toBe('cancelled');
  }, 60_000);

  it("a chat's next turn continuing a cached conversation reads its new tokens a chunk at a time, as it would whole", async () => {
    await f.giveAdapter('ck-chat', randomStoredAdapter(f.cfg, [0, 1], 1, 64));
    const chat = async (e: Engine): Promise<ServeResult[]> => {
      const messages: Array<{ role: 'user' | 'assistant'; content: string }> = [];
      const out: ServeResult[] = [];
      for (const q of [longPrompt(2), longPrompt(5, 3)]) {
        messages.push({ role: 'user', content: q });
        const r = await e.generate(req('ck-chat', { prompt: undefined, messages: [...messages], maxTokens: 10 }), never());
        out.push(r);
        messages.push({ role: 'assistant', content: r.text });
      }
      return out;
    };
    const prefix = () => new PrefixCache({ maxBytes: 16 * 1024 * 1024, shape: f.model.kvShape, minTokens: 4 });
    const want = await chat(f.engine({ prefixCache: prefix() }));
    const before = chunks();
    const got = await chat(f.engine({ prefixCache: prefix(), prefillChunk: 8 }));
    expect(got.map(comparable)).toEqual(want.map(comparable));
    expect(got[1].usage.cachedTokens).toBeGreaterThan(0);
    const fresh = got[1].usage.promptTokens - got[1].usage.cachedTokens;
    expect(fresh).toBeGreaterThan(8);
    expect(chunks() - before).toBe(Math.ceil(got[0].usage.promptTokens / 8) + Math.ceil(fresh / 8));
  }, 60_000);
});
