/**
 * Prefix caching in the engine, on a tiny random model with real SQLite and adapters: a chat's next
 * turns reuse the conversation's keys and values and reply exactly as without the cache (alone and
 * batched, plain and through adapters); the cache is per user and per adapter version, and a hot swap
 * retires the replaced version's conversations (a request naming a version keeps conversations of its
 * own and retires nothing); a forgotten user's conversations are gone, also those
 * of requests still running.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { activateAdapterVersion } from '../../src/db/queries/adapters.js';
import type { Counter } from '../../src/metrics.js';
import type { Engine } from '../../src/serve/engine.js';
import { PrefixCache } from '../../src/serve/prefix-cache.js';
import type { ServeRequest, ServeResult } from '../../src/serve/types.js';
import { forcingAdapter, makeServeFixture, never, randomStoredAdapter, req, tokenOf, type ServeFixture } from './fixtures.js';

let f: ServeFixture;
beforeAll(() => {
  f = makeServeFixture({ maxPositions: 512 });
});
afterAll(() => f.cleanup());

type Msg = { role: 'user' | 'assistant'; content: string };
const QUESTIONS = ['Hello, how are you today?', 'Tell me more about that.', 'And what should I do tomorrow?'];

const prefixEngine = (minTokens = 4): { engine: Engine; prefix: PrefixCache } => {
  const prefix = new PrefixCache({ maxBytes: 32 * 1024 * 1024, shape: f.model.kvShape, minTokens });
  return { engine: f.engine({ prefixCache: prefix }), prefix };
};

const turn = (userId: string, messages: Msg[], extra: Partial<ServeRequest> = {}): ServeRequest => req(userId, { prompt: undefined, messages, maxTokens: 12, ...extra });

/** A whole chat of QUESTIONS.length turns: each turn's prompt is the conversation so far. */
async function chat(e: Engine, userId: string, extra: Partial<ServeRequest> = {}): Promise<ServeResult[]> {
  const messages: Msg[] = [];
  const out: ServeResult[] = [];
  for (const q of QUESTIONS) {
    messages.push({ role: 'user', content: q });
    const r = await e.generate(turn(userId, [...messages], extra), never());
    out.push(r);
    messages.push({ role: 'assistant', content: r.text });
  }
  return out;
}

const cachedCounter = (): number => (f.registry.get('memlora_generate_prompt_tokens_total') as Counter).get({ source: 'cached' });

describe('prefix caching', () => {
  it('a chat\'s next turns reuse the conversation so far and reply exactly as without the cache, plain and through an adapter', async () => {
    await f.giveAdapter('pc-a', randomStoredAdapter(f.cfg, [0, 1], 2, 41));
    const plain = f.engine();
    const { engine } = prefixEngine();
    for (const user of ['pc-a', 'pc-plain']) {
      const want = await chat(plain, user);
      const before = cachedCounter();
      const got = await chat(engine, user);
      expect(got.map((r) => r.text)).toEqual(want.map((r) => r.text));
      expect(got.map((r) => r.personalization)).toEqual(want.map((r) => r.personalization));
      expect(want.every((r) => r.usage.cachedTokens === 0)).toBe(true);
      expect(got[0].usage.cachedTokens).toBe(0);
      // Each later turn reuses at least the previous turn's whole prompt.
      for (let t = 1; t < got.length; t++) {
        expect(got[t].usage.cachedTokens).toBeGreaterThanOrEqual(got[t - 1].usage.promptTokens);
        expect(got[t].usage.cachedTokens).toBeLessThan(got[t].usage.promptTokens);
        expect(got[t].usage.promptTokens).toBe(want[t].usage.promptTokens);
      }
      expect(cachedCounter() - before).toBe(got.reduce((s, r) => s + r.usage.cachedTokens, 0));
    }
    expect((await chat(engine, 'pc-a'))[0].personalization).toEqual({ mode: 'injected', adapterVersion: 1 });
  });

  it('second turns of several users joining together run in one batched extend call through the unit pool, as they would alone', async () => {
    const users = ['pc-b0', 'pc-b1', 'pc-b2', 'pc-b3'];
    await f.giveAdapter('pc-b0', randomStoredAdapter(f.cfg, [0], 1, 51));
    await f.giveAdapter('pc-b1', randomStoredAdapter(f.cfg, [1], 3, 52));
    await f.giveAdapter('pc-b2', randomStoredAdapter(f.cfg, [0, 1], 2, 53));
    const plain = f.engine();
    const { engine } = prefixEngine();
    const first = await Promise.all(users.map((u) => engine.generate(turn(u, [{ role: 'user', content: QUESTIONS[0] }]), never())));
    const second = users.map((u, i): Msg[] => [
      { role: 'user', content: QUESTIONS[0] },
      { role: 'assistant', content: first[i].text },
      { role: 'user', content: QUESTIONS[1] },
    ]);
    // Mixed with a new conversation, so that one prefill and one extend call share the admission.
    const fresh = turn('pc-b0', [{ role: 'user', content: 'A new chat entirely, about the weather.' }]);
    const together = await Promise.all([...users.map((u, i) => engine.generate(turn(u, second[i]), never())), engine.generate(fresh, never())]);
    const alone: ServeResult[] = [];
    for (const [i, u] of users.entries()) alone.push(await plain.generate(turn(u, second[i]), never()));
    alone.push(await plain.generate(fresh, never()));
    expect(together.map((r) => r.text)).toEqual(alone.map((r) => r.text));
    expect(together.slice(0, 4).every((r) => r.usage.cachedTokens > 0)).toBe(true);
    expect(together[4].usage.cachedTokens).toBe(0);
    expect(new Set(together.slice(0, 3).map((r) => r.text)).size).toBe(3); // the adapters matter
  });

  it('is per user and per adapter version: another user or a new version computes the whole prompt', async () => {
    const q = tokenOf(f.tokenizer, 'q');
    const z = tokenOf(f.tokenizer, 'z');
    await f.giveAdapter('pc-v', forcingAdapter(f.cfg, f.weights, q));
    const { engine } = prefixEngine();
    const msgs = (reply: string): Msg[] => [
      { role: 'user', content: QUESTIONS[0] },
      { role: 'assistant', content: reply },
      { role: 'user', content: QUESTIONS[1] },
    ];
    const t1 = await engine.generate(turn('pc-v', [{ role: 'user', content: QUESTIONS[0] }]), never());
    expect(t1.text).toBe('q'.repeat(12));
    // Another user sending the very same conversation shares nothing.
    f.addHistory('pc-other', ['x']);
    expect((await engine.generate(turn('pc-other', msgs(t1.text)), never())).usage.cachedTokens).toBe(0);
    // A new adapter version: the old version's keys and values are not used.
    await f.giveAdapter('pc-v', forcingAdapter(f.cfg, f.weights, z));
    const t2 = await engine.generate(turn('pc-v', msgs(t1.text)), never());
    expect(t2).toMatchObject({ text: 'z'.repeat(12), usage: { cachedTokens: 0 }, personalization: { adapterVersion: 2 } });
    const t3 = await engine.generate(turn('pc-v', [...msgs(t1.text), { role: 'assistant', content: t2.text }, { role: 'user', content: QUESTIONS[2] }]), never());
    expect(t3.usage.cachedTokens).toBeGreaterThanOrEqual(t2.usage.promptTokens);
    expect(t3.text).toBe('z'.repeat(12));
  });

  it('a hot swap retires the previous version\'s conversations, and a request still running on it finishes on it and keeps nothing', async () => {
    const { engine, prefix } = prefixEngine();
    await f.giveAdapter('pc-s', forcingAdapter(f.cfg, f.weights, tokenOf(f.tokenizer, 'q')));
    await chat(engine, 'pc-s');
    expect(prefix.entriesOf('pc-s')).toBe(1);
    // A request on version 1 still running when version 2 becomes active and the user's next request loads it.
    const running = engine.stream(turn('pc-s', [{ role: 'user', content: QUESTIONS[2] }], { maxTokens: 200 }), never())[Symbol.asyncIterator]();
    expect((await running.next()).done).toBe(false);
    await f.giveAdapter('pc-s', forcingAdapter(f.cfg, f.weights, tokenOf(f.tokenizer, 'z')));
    const next = await engine.generate(turn('pc-s', [{ role: 'user', content: 'A new chat entirely, about the weather.' }]), never());
    expect(next).toMatchObject({ text: 'z'.repeat(12), personalization: { mode: 'injected', adapterVersion: 2 } });
    let last: ServeResult | null = null;
    for (let ev = await running.next(); !ev.done; ev = await running.next()) if (ev.value.type === 'done') last = ev.value.result;
    expect(last).toMatchObject({ text: 'q'.repeat(200), personalization: { adapterVersion: 1 } });
    // Only version 2's conversation is left: version 1's went at the swap, the running one kept nothing.
    expect(prefix.entriesOf('pc-s')).toBe(1);
    expect(prefix.stats()).toMatchObject({ retired: 1, evictions: 0 });
    // Rolled back to version 1: a chat starts from nothing, and version 2's conversation is retired.
    activateAdapterVersion(f.db, 'pc-s', 1);
    const back = await chat(engine, 'pc-s');
    expect(back.map((r) => r.personalization.adapterVersion)).toEqual([1, 1, 1]);
    expect(back[0].usage.cachedTokens).toBe(0);
    expect(back[1].usage.cachedTokens).toBeGreaterThan(0);
    expect(prefix.entriesOf('pc-s')).toBe(1);
    expect(prefix.stats().retired).toBe(2);
  });

  it('a named adapter version keeps conversations of its own, exact as without the cache; the active version\'s stay (no swap)', async () => {
    const { engine, prefix } = prefixEngine();
    const plain = f.engine();
    await f.giveAdapter('pc-n', randomStoredAdapter(f.cfg, [0, 1], 2, 51)); // version 1
    await f.giveAdapter('pc-n', randomStoredAdapter(f.cfg, [1], 1, 52)); // version 2, active
    const active = await chat(engine, 'pc-n');
    expect(active.map((r) => r.personalization.adapterVersion)).toEqual([2, 2, 2]);
    expect(prefix.entriesOf('pc-n')).toBe(1);
    // The same chat on version 1, named: its own keys and values from its second turn on, the replies
    // exactly those without the cache, and version 2's conversation is not retired.
    const want = await chat(plain, 'pc-n', { adapterVersion: 1 });
    const got = await chat(engine, 'pc-n', { adapterVersion: 1 });
    expect(got.map((r) => r.text)).toEqual(want.map((r) => r.text));
    expect(got.map((r) => r.personalization)).toEqual(want.map((r) => r.personalization));
    expect(got.every((r) => r.personalization.pinned === true && r.personalization.adapterVersion === 1)).toBe(true);
    expect(got[0].usage.cachedTokens).toBe(0); // version 2's conversation is not version 1's
    expect(got[1].usage.cachedTokens).toBeGreaterThan(0);
    expect(prefix.entriesOf('pc-n')).toBe(2);
    expect(prefix.stats().retired).toBe(0);
    // Version 2's chat goes on from its cached conversation.
    const messages: Msg[] = QUESTIONS.flatMap((q, i) => [
      { role: 'user' as const, content: q },
      { role: 'assistant' as const, content: active[i].text },
    ]);
    const next = await engine.generate(turn('pc-n', [...messages, { role: 'user', content: 'One more thing.' }]), never());
    expect(next.personalization).toEqual({ mode: 'injected', adapterVersion: 2 });
    expect(next.usage.cachedTokens).toBeGreaterThanOrEqual(active[2].usage.promptTokens);
    expect(next.text).toBe((await plain.generate(turn('pc-n', [...messages, { role: 'user', content: 'One more thing.' }]), never())).text);
  });

  it('forgetting a user drops their conversations, and a request of theirs still running keeps nothing', async () => {
    const { engine, prefix } = prefixEngine();
    f.addHistory('pc-f', ['x']);
    await chat(engine, 'pc-f');
    expect(prefix.entriesOf('pc-f')).toBe(1); // one conversation: each turn replaced the one it continued
    expect(engine.forgetUser('pc-f')).toBe(1);
    expect(prefix.entriesOf('pc-f')).toBe(0);
    const r = await engine.generate(turn('pc-f', [{ role: 'user', content: QUESTIONS[0] }, { role: 'assistant', content: 'ok' }, { role: 'user', content: QUESTIONS[1] }]), never());
    expect(r.usage.cachedTokens).toBe(0);
    expect(prefix.entriesOf('pc-f')).toBe(1); // that conversation
    // In flight while forgotten: its cache is not kept when it finishes.
    const it = engine.stream(turn('pc-f', [{ role: 'user', content: QUESTIONS[2] }], { maxTokens: 200 }), never())[Symbol.asyncIterator]();
    expect((await it.next()).done).toBe(false);
    expect(engine.forgetUser('pc-f')).toBe(1);
    for (let ev = await it.next(); !ev.done; ev = await it.next());
    expect(prefix.entriesOf('pc-f')).toBe(0);
    // Forgotten while its prompt is being read (between the queue and the batch): nothing kept either.
    const prefill = f.model.prefill.bind(f.model);
    let forgotten = 0;
    const spy = vi.spyOn(f.model, 'prefill').mockImplementation(async (...args) => {
      forgotten += 1;
      engine.forgetUser('pc-f');
      return prefill(...args);
    });
    try {
      await engine.generate(turn('pc-f', [{ role: 'user', content: QUESTIONS[1] }]), never());
    } finally {
      spy.mockRestore();
    }
    expect(forgotten).toBe(1);
    expect(prefix.entriesOf('pc-f')).toBe(0);
    // Others are untouched, and the user's next chat is cached again.
    await chat(engine, 'pc-f');
    expect(prefix.entriesOf('pc-f')).toBe(1);
  });
});
