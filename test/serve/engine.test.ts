/**
 * The engine end to end on a tiny random model, real SQLite, a real adapter store and cache:
 * mixed-user batches against each user alone, isolation with adapters that force a user-specific
 * token, eviction under pressure, single-flight loads, cancellation freeing rows, hot swap mid-stream,
 * a corrupt adapter, the bounded queue and the context limit, cache warming and dropping.
 */
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { getAdapterVersion, markAdapterVersionDeleted } from '../../src/db/queries/adapters.js';
import { setQuota, tokensUsed, usageDay, usageDayEnd, userUsage } from '../../src/db/queries/usage.js';
import { createUser } from '../../src/db/queries/users.js';
import { type Adapter, adapterBytes } from '../../src/lora/adapter.js';
import { AdapterCache, adapterKey } from '../../src/lora/cache.js';
import { type Counter, type Histogram, Registry } from '../../src/metrics.js';
import type { Engine } from '../../src/serve/engine.js';
import { ServeError } from '../../src/serve/errors.js';
import type { AdapterReader } from '../../src/serve/loader.js';
import { SPECIAL_TOKENS } from '../../src/model/chat-format.js';
import { guideVocabulary } from '../../src/model/guide.js';
import { SchemaGuide } from '../../src/model/schema-guide.js';
import { encodeRequest } from '../../src/serve/prompt.js';
import { badWordIds } from '../../src/serve/sampling.js';
import type { ScoreRequest, ScoreResult, ServeEvent, ServeRequest, ServeResult, TokenLogprob } from '../../src/serve/types.js';
import { forcingAdapter, makeServeFixture, never, randomStoredAdapter, req, tokenOf, type ServeFixture } from './fixtures.js';

let f: ServeFixture;
let q: number;
let z: number;
beforeAll(() => {
  f = makeServeFixture({ maxPositions: 512 });
  q = tokenOf(f.tokenizer, 'q');
  z = tokenOf(f.tokenizer, 'z');
});
afterAll(() => f.cleanup());

const counter = (name: string, labels?: Record<string, string>): number => f.counter(name, labels);
const stepsWithMoreThan = (rows: number): number => f.stepsWithMoreThan(rows);

async function collect(stream: AsyncIterable<ServeEvent>): Promise<{ tokens: string[]; result: ServeResult }> {
  const tokens: string[] = [];
  for await (const ev of stream) {
    if (ev.type === 'token') tokens.push(ev.text);
    else return { tokens, result: ev.result };
  }
  throw new Error('stream ended without done');
}

/** Guided requests in one batch with a free one: their results, once the free row's reply is checked to be the one it gets alone. */
async function besideFree(e: Engine, free: ServeRequest, guided: readonly ServeRequest[]): Promise<ServeResult[]> {
  const alone = await e.generate(free, never());
  const rs = await Promise.all([...guided.map((g) => e.generate(g, never())), e.generate(free, never())]);
  expect(rs.at(-1)!.text).toBe(alone.text);
  return rs.slice(0, -1);
}

async function until(cond: () => boolean, maxMs = 10_000): Promise<void> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > maxMs) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 1));
  }
}

describe('mixed-user batches', () => {
  it('users with different adapters in one batch get exactly what they get alone (greedy and seeded sampling)', async () => {
    const e = f.engine();
    await f.giveAdapter('mix-a', randomStoredAdapter(f.cfg, [0, 1], 1, 11)); // rank 8, both layers
    await f.giveAdapter('mix-b', randomStoredAdapter(f.cfg, [1], 3, 12)); // rank 24, last layer only
    const users = ['mix-a', 'mix-b', 'mix-none'];
    const reqs = [
      ...users.map((u) => req(u, { maxTokens: 14 })),
      ...users.map((u) => req(u, { maxTokens: 14, temperature: 0.9, topP: 0.9, seed: 5, prompt: 'Thank you, doctor.' })),
    ];
    // Alone, an injected request is a lone joiner, prefilled through its adapter as served; together
    // (adapters cached by then), joiners that share a prefill are read through the row pool's units.
    const alone: ServeResult[] = [];
    for (const r of reqs) alone.push(await e.generate(r, never()));
    const before = stepsWithMoreThan(2);
    const prefills = () => (f.registry.get('memlora_generate_prefill_seconds') as Histogram).snapshot().count;
    const prefillsBefore = prefills();
    const together = await Promise.all(reqs.map((r) => e.generate(r, never())));
    expect(stepsWithMoreThan(2)).toBeGreaterThan(before); // they really shared steps
    // At most four prefills for six requests, two of them vanilla: some injected request shared one.
    expect(prefills() - prefillsBefore).toBeLessThanOrEqual(reqs.length - 2);
    expect(together.map((r) => r.text)).toEqual(alone.map((r) => r.text));
    expect(together.map((r) => r.usage)).toEqual(alone.map((r) => r.usage));
    expect(together.map((r) => r.personalization)).toEqual([
      { mode: 'injected', adapterVersion: 1 },
      { mode: 'injected', adapterVersion: 1 },
      { mode: 'vanilla', adapterVersion: null },
      { mode: 'injected', adapterVersion: 1 },
      { mode: 'injected', adapterVersion: 1 },
      { mode: 'vanilla', adapterVersion: null },
    ]);
    // The adapters change the outputs, so equality above is not vacuous.
    expect(new Set(alone.slice(0, 3).map((r) => r.text)).size).toBe(3);
  });

  it('min-p through the engine: at 1 a sampled reply is the greedy one; below it, sampling with a seed reproduces', async () => {
    const e = f.engine();
    const ask = (more: Partial<ServeRequest>) => e.generate(req('mix-none', { maxTokens: 24, prompt: 'Once upon a time', mode: 'vanilla', ...more }), never());
    const greedy = await ask({});
    expect((await ask({ temperature: 1.5, seed: 3, minP: 1 })).text).toBe(greedy.text);
    // Not vacuous: the same draw without min-p leaves the greedy reply.
    expect((await ask({ temperature: 1.5, seed: 3 })).text).not.toBe(greedy.text);
    const some = await ask({ temperature: 1.5, seed: 4, minP: 0.2 });
    expect((await ask({ temperature: 1.5, seed: 4, minP: 0.2 })).text).toBe(some.text);
  });

  it('includeStopStrInOutput: the request\'s stop string that ends the reply stays at its end, streamed as written', async () => {
    const e = f.engine();
    const ask = (more: Partial<ServeRequest>) => req('mix-none', { maxTokens: 32, prompt: 'Once upon a time', mode: 'vanilla', ...more });
    const whole = (await e.generate(ask({}), never())).text;
    const stop = whole.slice(6, 9);
    const at = whole.indexOf(stop);
    expect(stop.length).toBe(3);
    const cut = await e.generate(ask({ stop: [stop] }), never());
    expect(cut).toMatchObject({ text: whole.slice(0, at), finishReason: 'stop' });
    const kept = await collect(e.stream(ask({ stop: [stop], includeStopStrInOutput: true }), never()));
    expect(kept.result).toMatchObject({ text: whole.slice(0, at + 3), finishReason: 'stop' });
    expect(kept.tokens.join('')).toBe(kept.result.text);
  });

  it('a user never receives another user\'s adapter, also while adapters are evicted and reloaded', async () => {
    await f.giveAdapter('iso-q', forcingAdapter(f.cfg, f.weights, q));
    await f.giveAdapter('iso-z', forcingAdapter(f.cfg, f.weights, z));
    const e = f.engine();
    const order = ['iso-q', 'iso-z', 'iso-z', 'iso-q', 'iso-plain', 'iso-q', 'iso-z', 'iso-q'];
    for (let round = 0; round < 2; round++) {
      const results = await Promise.all(order.map((u) => e.generate(req(u, { maxTokens: 8, mode: u === 'iso-plain' ? 'vanilla' : 'auto' }), never())));
      results.forEach((r, i) => {
        expect(r.userId).toBe(order[i]);
        if (order[i] === 'iso-q') expect(r.text).toBe('q'.repeat(8));
        if (order[i] === 'iso-z') expect(r.text).toBe('z'.repeat(8));
        if (order[i] === 'iso-plain') expect(r.text).not.toMatch(/^[qz]+$/);
      });
    }
  });

  it('keeps results correct when the cache is smaller than the adapters in use (eviction under pressure)', async () => {
    const users = ['ev-0', 'ev-1', 'ev-2', 'ev-3'];
    for (const [i, u] of users.entries()) await f.giveAdapter(u, randomStoredAdapter(f.cfg, i % 2 ? [1] : [0, 1], 1 + (i % 3), 20 + i));
    const roomy = f.engine();
    const expected = new Map<string, string>();
    for (const u of users) expected.set(u, (await roomy.generate(req(u, { maxTokens: 10 }), never())).text);

    // The same adapters read through a cache that holds about one of them.
    const reg = new Registry();
    const tight = f.engine({ adapters: { store: f.store, cache: new AdapterCache({ maxBytes: 20_000, registry: reg }) }, registry: reg });
    for (let round = 0; round < 3; round++) {
      const batch = [...users, ...users.slice().reverse()];
      const got = await Promise.all(batch.map((u) => tight.generate(req(u, { maxTokens: 10 }), never())));
      got.forEach((r, i) => expect(r.text, `${batch[i]} round ${round}`).toBe(expected.get(batch[i])));
    }
    expect((reg.get('memlora_adapter_cache_evictions_total') as Counter).get()).toBeGreaterThan(0);
    expect((reg.get('memlora_adapter_cache_loads_total') as Counter).get()).toBeGreaterThan(users.length);
  });

  it('concurrent first requests for one user cause exactly one disk load', async () => {
    await f.giveAdapter('flight', randomStoredAdapter(f.cfg, [0], 2, 30));
    const e = f.engine();
    const reads = vi.spyOn(f.store, 'read');
    try {
      const got = await Promise.all(Array.from({ length: 6 }, () => e.generate(req('flight', { maxTokens: 4 }), never())));
      expect(reads.mock.calls.filter((c) => c[2]?.userId === 'flight')).toHaveLength(1);
      expect(new Set(got.map((r) => r.text)).size).toBe(1);
      expect(got.every((r) => r.personalization.mode === 'injected')).toBe(true);
      // The cached adapter was turned into the served form (B^T) in place, once, at its first use.
      const lease = await f.cache.acquire(adapterKey('flight', 1), () => Promise.reject(new Error('not cached')));
      expect(lease.adapter.pairs.every((p) => 'Bt' in p && !('B' in p))).toBe(true);
      lease.release();
      const again = await e.generate(req('flight', { maxTokens: 4 }), never());
      expect(again.text).toBe(got[0].text);
    } finally {
      reads.mockRestore();
    }
  });
});

describe('cache warming and dropping', () => {
  it('loads active adapters as served, once, reports what stayed resident in a cache smaller than the set, and the warmed users are served from memory', async () => {
    const users = ['warm-0', 'warm-1', 'warm-2'];
    const adapters = users.map((_, i) => randomStoredAdapter(f.cfg, [0, 1], 2, 40 + i));
    for (const [i, u] of users.entries()) await f.giveAdapter(u, adapters[i]);
    const maxBytes = Math.floor(1.5 * adapterBytes(adapters[0])); // all three are the same size
    const roomy = f.engine();
    const expected = new Map<string, string>();
    for (const u of users) expected.set(u, (await roomy.generate(req(u, { maxTokens: 6 }), never())).text);

    // A cache that holds one of these adapters: warming all three keeps only the last.
    const reg = new Registry();
    const cache = new AdapterCache({ maxBytes, registry: reg });
    const tight = f.engine({ adapters: { store: f.store, cache }, registry: reg });
    const reads = vi.spyOn(f.store, 'read');
    try {
      const report = await tight.warm([...users, 'warm-0', 'warm-nobody']);
      expect(report.results.map((r) => [r.userId, r.outcome, r.resident])).toEqual([
        ['warm-0', 'loaded', false],
        ['warm-1', 'loaded', false],
        ['warm-2', 'loaded', true],
        ['warm-nobody', 'unknown_user', false],
      ]);
      expect(reads).toHaveBeenCalledTimes(3);
      expect(report.cache).toMatchObject({ entries: 1, maxBytes });
      expect(cache.curve.lookups).toBe(0); // warming is not traffic: the hit curve does not count it
      const lease = await cache.acquire(adapterKey('warm-2', 1), () => Promise.reject(new Error('not cached')));
      expect(lease.adapter.pairs.every((p) => 'Bt' in p && !('B' in p))).toBe(true); // held as served
      lease.release();
      // Warming again: the resident one is not read again.
      expect((await tight.warm(['warm-2'])).results[0]).toMatchObject({ outcome: 'cached', resident: true });
      expect(reads).toHaveBeenCalledTimes(3);
      // Served from the warmed cache with the same outputs; the evicted ones load on demand.
      for (const u of [...users].reverse()) expect((await tight.generate(req(u, { maxTokens: 6 }), never())).text).toBe(expected.get(u));
      expect(reads).toHaveBeenCalledTimes(5);
      // The curve saw this test's own lookup of warm-2 and the three requests, none cold: each adapter
      // was warmed (moved up) before.
      expect([cache.curve.lookups, cache.curve.coldLookups]).toEqual([4, 0]);
    } finally {
      reads.mockRestore();
    }
  });

  it('dropping the cache while requests run: each finishes on its adapter unchanged, and the next requests read them again', async () => {
    const users = ['drop-0', 'drop-1', 'drop-2'];
    for (const [i, u] of users.entries()) await f.giveAdapter(u, randomStoredAdapter(f.cfg, i === 1 ? [1] : [0, 1], 1 + i, 60 + i));
    const reg = new Registry();
    const cache = new AdapterCache({ maxBytes: 64 * 1024 * 1024, registry: reg });
    const e = f.engine({ adapters: { store: f.store, cache }, registry: reg });
    const expected = new Map<string, string>();
    for (const u of users) expected.set(u, (await e.generate(req(u, { maxTokens: 12 }), never())).text);
    expect(new Set(expected.values()).size).toBe(users.length); // the adapters make a difference
    const reads = vi.spyOn(f.store, 'read');
    try {
      // Dropped mid-flight: the rows hold leases on adapters the cache no longer knows.
      const running = Promise.all(users.map((u) => e.generate(req(u, { maxTokens: 12 }), never())));
      await until(() => cache.stats().pinnedEntries === users.length);
      const dropped = cache.drop();
      expect(dropped).toMatchObject({ adapters: users.length, leased: users.length, bytes: 0 });
      const got = await running;
      expect(got.map((r) => r.text)).toEqual(users.map((u) => expected.get(u)));
      expect(reads).not.toHaveBeenCalled();
      expect(cache.stats()).toMatchObject({ entries: 0, bytes: 0 }); // freed as the requests finished
      // One user dropped from a full cache: only that one is read again.
      for (const u of users) expect((await e.generate(req(u, { maxTokens: 12 }), never())).text).toBe(expected.get(u));
      expect(reads).toHaveBeenCalledTimes(users.length);
      expect(cache.drop('drop-1')).toMatchObject({ adapters: 1, leased: 0 });
      for (const u of users) expect((await e.generate(req(u, { maxTokens: 12 }), never())).text).toBe(expected.get(u));
      expect(reads).toHaveBeenCalledTimes(users.length + 1);
      expect(reads.mock.calls.at(-1)?.[2]?.userId).toBe('drop-1');
    } finally {
      reads.mockRestore();
    }
  });

  it('an engine without adapters refuses to warm', async () => {
    const plain = f.engine({ adapters: null });
    await expect(plain.warm(['anyone'])).rejects.toMatchObject({ code: 'adapters_disabled' });
  });
});

describe('cancellation', () => {
  it('a client that disconnects frees its row: the batch shrinks and the queue advances', async () => {
    const e = f.engine({ maxBatch: 2 });
    for (const u of ['cancel-a', 'cancel-b', 'cancel-c']) await f.giveAdapter(u, forcingAdapter(f.cfg, f.weights, q)); // no early EOS
    const long = new AbortController();
    const s1 = e.stream(req('cancel-a', { maxTokens: 400 }), long.signal)[Symbol.asyncIterator]();
    const s2 = e.stream(req('cancel-b', { maxTokens: 400 }), never())[Symbol.asyncIterator]();
    // A stream is submitted by its first next(): both take the rows, the third request waits.
    const firsts = [s1.next(), s2.next()];
    const waiting = e.generate(req('cancel-c', { maxTokens: 5 }), never());
    await Promise.all(firsts);
    expect(e.occupancy).toEqual({ active: 2, waiting: 1 });
    const cancelledBefore = counter('memlora_generate_requests_total', { mode: 'injected', finish: 'cancelled' });
    long.abort();
    const third = await waiting; // admitted into the freed row while cancel-b still runs
    expect(third.finishReason).toBe('length');
    expect(e.occupancy.active).toBeGreaterThanOrEqual(1);
    let last: IteratorResult<ServeEvent>;
    do last = await s1.next();
    while (!last.done && last.value.type === 'token');
    expect(!last.done && last.value.type === 'done' && last.value.result.finishReason).toBe('cancelled');
    expect(counter('memlora_generate_requests_total', { mode: 'injected', finish: 'cancelled' })).toBe(cancelledBefore + 1);
    await s2.return!(undefined); // a consumer that stops reading cancels too
    await until(() => e.occupancy.active === 0);
  });

  it('a request cancelled while queued never runs', async () => {
    const e = f.engine({ maxBatch: 1 });
    await f.giveAdapter('cq-a', forcingAdapter(f.cfg, f.weights, q));
    const ac = new AbortController();
    const first = e.generate(req('cq-a', { maxTokens: 30 }), never());
    const queued = e.generate(req('cq-b', { maxTokens: 30 }), ac.signal);
    ac.abort();
    const r = await queued;
    expect(r.finishReason).toBe('cancelled');
    expect(r.usage.completionTokens).toBe(0);
    expect((await first).finishReason).toBe('length');
  });
});

describe('hot swap', () => {
  it('a new active version serves the next request while the one in flight finishes on its own, without a restart', async () => {
    const e = f.engine();
    await f.giveAdapter('swap', forcingAdapter(f.cfg, f.weights, q));
    const s1 = e.stream(req('swap', { maxTokens: 300 }), never())[Symbol.asyncIterator]();
    const first = await s1.next();
    expect(!first.done && first.value).toEqual({ type: 'token', text: 'q' });
    const v2 = await f.giveAdapter('swap', forcingAdapter(f.cfg, f.weights, z));
    expect(v2.version).toBe(2);
    const next = await e.generate(req('swap', { maxTokens: 6 }), never());
    expect(next).toMatchObject({ text: 'zzzzzz', personalization: { mode: 'injected', adapterVersion: 2 } });
    expect(e.occupancy.active).toBe(1); // the first request is still decoding
    const rest = await collect({ [Symbol.asyncIterator]: () => s1 });
    expect(rest.result.text).toBe('q'.repeat(300));
    expect(rest.result.personalization).toEqual({ mode: 'injected', adapterVersion: 1 });
  });

  it('a request whose planned version was swapped out and deleted before its load is served with the version active since, not a fallback', async () => {
    const v1 = await f.giveAdapter('swap-del', forcingAdapter(f.cfg, f.weights, q));
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let held = 0;
    const reader: AdapterReader = {
      read: async (path, sha256, options) => {
        if (held++ === 0) await gate; // the first load (version 1) waits while the operator acts
        return f.store.read(path, sha256, options);
      },
    };
    const e = f.engine({ adapters: { store: f.store, cache: new AdapterCache({ maxBytes: 64 * 1024 * 1024 }), reader } });
    const fallbacks0 = counter('memlora_generate_fallbacks_total', { reason: 'adapter_missing' });
    const pending = e.generate(req('swap-del', { maxTokens: 4 }), never());
    await until(() => held === 1); // planned on version 1, its load started
    await f.giveAdapter('swap-del', forcingAdapter(f.cfg, f.weights, z)); // version 2 serves now
    markAdapterVersionDeleted(f.db, 'swap-del', 1, 'deleted');
    await f.store.remove(v1.path, 'swap-del');
    release();
    expect(await pending).toMatchObject({ text: 'zzzz', personalization: { mode: 'injected', adapterVersion: 2 } });
    expect((await pending).personalization.fallback).toBeUndefined();
    expect(counter('memlora_generate_fallbacks_total', { reason: 'adapter_missing' })).toBe(fallbacks0);
    expect(getAdapterVersion(f.db, 'swap-del', 1)!.status).toBe('deleted');
  });
});

describe('faults', () => {
  it('a corrupt adapter file: fallback for that user, the file quarantined, the version deactivated, others unaffected', async () => {
    const e = f.engine();
    const bad = await f.giveAdapter('corrupt', forcingAdapter(f.cfg, f.weights, q));
    f.addHistory('corrupt', ['I help people today with their headache']);
    await f.giveAdapter('healthy', forcingAdapter(f.cfg, f.weights, z));
    const file = join(f.store.root, bad.path, 'adapter_model.safetensors');
    const bytes = readFileSync(file);
    bytes[bytes.length - 5] ^= 0xff;
    writeFileSync(file, bytes);
    const [broken, fine] = await Promise.all([e.generate(req('corrupt', { maxTokens: 6 }), never()), e.generate(req('healthy', { maxTokens: 6 }), never())]);
    expect(broken.personalization).toEqual({ mode: 'memory', adapterVersion: null, memoryItems: 1, fallback: { from: 'injected', reason: 'adapter_corrupt' } });
    expect(broken.text).not.toBe('qqqqqq');
    expect(fine).toMatchObject({ text: 'zzzzzz', personalization: { mode: 'injected', adapterVersion: 1 } });
    const row = getAdapterVersion(f.db, 'corrupt', bad.version)!;
    expect(row).toMatchObject({ status: 'quarantined', active: 0 });
    expect(existsSync(join(f.store.root, bad.path))).toBe(false);
    expect(existsSync(join(f.store.root, bad.path.replace('/', '/quarantine/')))).toBe(true);
    expect(f.logger.lines.some((l) => l.level === 'error' && l.msg.includes('quarantined') && l.fields.userId === 'corrupt')).toBe(true);
    // The next request does not try the bad file again.
    const again = await e.generate(req('corrupt', { maxTokens: 3, mode: 'injected' }), never());
    expect(again.personalization.fallback).toEqual({ from: 'injected', reason: 'no_adapter' });
  });

  it('refuses past the queue bound with queue_full and a Retry-After hint', async () => {
    const e = f.engine({ maxQueue: 2, maxBatch: 1 });
    await f.giveAdapter('qf', forcingAdapter(f.cfg, f.weights, q));
    const a = e.generate(req('qf', { maxTokens: 3 }), never());
    const b = e.generate(req('qf', { maxTokens: 3 }), never());
    const err = await e.generate(req('qf', { maxTokens: 3 }), never()).catch((x: unknown) => x);
    expect(err).toBeInstanceOf(ServeError);
    expect(err).toMatchObject({ code: 'queue_full', details: { queued: 2, maxQueue: 2 } });
    expect((err as ServeError).retryAfterS).toBeGreaterThanOrEqual(1);
    await Promise.all([a, b]);
    expect((await e.generate(req('qf', { maxTokens: 3 }), never())).finishReason).toBe('length');
  });

  it('bounds each user\'s share of the queue: past maxQueuePerUser that user gets user_queue_full, others are still queued', async () => {
    const e = f.engine({ maxQueue: 8, maxQueuePerUser: 2, maxBatch: 1 });
    const rejected = () => counter('memlora_generate_rejected_total', { code: 'user_queue_full' });
    const before = rejected();
    // Submitted in one turn of the event loop: all of them wait (the loop starts on the next turn).
    const a = [e.generate(req('uq-a', { maxTokens: 3, mode: 'vanilla' }), never()), e.generate(req('uq-a', { maxTokens: 3, mode: 'vanilla' }), never())];
    const err = await e.generate(req('uq-a', { maxTokens: 3, mode: 'vanilla' }), never()).catch((x: unknown) => x);
    expect(err).toBeInstanceOf(ServeError);
    expect(err).toMatchObject({ code: 'user_queue_full', details: { userId: 'uq-a', queued: 2, maxQueuePerUser: 2 } });
    expect((err as ServeError).retryAfterS).toBeGreaterThanOrEqual(1);
    expect(rejected()).toBe(before + 1);
    const b = e.generate(req('uq-b', { maxTokens: 3, mode: 'vanilla' }), never());
    expect(e.occupancy.waiting).toBe(3);
    const done = await Promise.all([...a, b]);
    expect(done.map((r) => r.finishReason)).toEqual(['length', 'length', 'length']);
    // Places come back as requests leave the queue.
    expect((await e.generate(req('uq-a', { maxTokens: 3, mode: 'vanilla' }), never())).finishReason).toBe('length');
  });

  it('queue(): the rows, and per user the rows held and requests waiting, most waiting first', async () => {
    const e = f.engine({ maxBatch: 1 });
    await f.giveAdapter('qr-long', forcingAdapter(f.cfg, f.weights, q)); // no early EOS
    const ac = new AbortController();
    const long = e.stream(req('qr-long', { maxTokens: 400 }), ac.signal)[Symbol.asyncIterator]();
    await long.next(); // its first token arrived: it is decoding
    const send = (user: string) => e.generate(req(user, { maxTokens: 2, mode: 'vanilla' }), never());
    const waiters = [send('qr-a'), send('qr-b'), send('qr-a'), send('qr-a')];
    const r = e.queue(10);
    expect(r).toMatchObject({ scheduling: 'fair', maxBatch: 1, maxQueue: 64, maxQueuePerUser: 64, waiting: 4, usersTotal: 3 });
    expect(r.rows).toEqual([
      { id: expect.stringMatching(/^gen_/), userId: 'qr-long', state: 'decode', mode: 'injected', adapterVersion: 1, promptTokens: expect.any(Number), promptTokensRead: expect.any(Number), generatedTokens: expect.any(Number), runningMs: expect.any(Number) },
    ]);
    expect(r.rows[0].generatedTokens).toBeGreaterThanOrEqual(1);
    expect(r.rows[0].promptTokensRead).toBe(r.rows[0].promptTokens); // decoding: its prompt is read
    expect(r.users.map((u) => [u.userId, u.rows, u.waiting])).toEqual([['qr-a', 0, 3], ['qr-b', 0, 1], ['qr-long', 1, 0]]);
    expect(r.users[0].oldestWaitMs).toBeGreaterThanOrEqual(r.users[1].oldestWaitMs!); // qr-a's first arrived before qr-b's
    expect(r.users[2].oldestWaitMs).toBeNull();
    expect(e.queue(1)).toMatchObject({ users: [{ userId: 'qr-a' }], usersTotal: 3 });
    ac.abort();
    let last: IteratorResult<ServeEvent>;
    do last = await long.next();
    while (!last.done && last.value.type === 'token');
    expect(!last.done && last.value.type === 'done' && last.value.result.id).toBe(r.rows[0].id); // the row's id is the result's
    await Promise.all(waiters);
    await until(() => e.occupancy.active === 0);
    expect(e.queue(10)).toMatchObject({ rows: [], waiting: 0, users: [], usersTotal: 0 });
  });

  it('fair scheduling: one user\'s burst does not hold back others; fifo serves in arrival order', async () => {
    for (const [scheduling, expected] of [
      ['fair', ['a1', 'b1', 'c1', 'a2', 'b2', 'a3', 'a4']],
      ['fifo', ['a1', 'a2', 'a3', 'a4', 'b1', 'b2', 'c1']],
    ] as const) {
      // One row: requests finish in the order they are admitted.
      const e = f.engine({ maxBatch: 1, scheduling });
      const order: string[] = [];
      const send = (user: string, name: string) =>
        e.generate(req(`fs-${user}`, { maxTokens: 2, mode: 'vanilla' }), never()).then((r) => {
          order.push(name);
          return r;
        });
      const all = [send('a', 'a1'), send('a', 'a2'), send('a', 'a3'), send('a', 'a4'), send('b', 'b1'), send('b', 'b2'), send('c', 'c1')];
      await Promise.all(all);
      expect(order, scheduling).toEqual(expected);
      await e.close();
    }
  });

  it('one user\'s burst waiting on a slow adapter read does not hold back another user\'s load and row', async () => {
    await f.giveAdapter('fsl-a', forcingAdapter(f.cfg, f.weights, q));
    await f.giveAdapter('fsl-b', forcingAdapter(f.cfg, f.weights, z));
    // fsl-a's adapter read is held until we let it go; every other read goes straight to the store.
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const reader: AdapterReader = {
      read: async (path, sha256, options) => {
        if (options?.userId === 'fsl-a') await gate;
        return f.store.read(path, sha256, options);
      },
    };
    const e = f.engine({ maxBatch: 2, adapters: { store: f.store, cache: new AdapterCache({ maxBytes: 64 * 1024 * 1024 }), reader } });
    // More of fsl-a's requests than the batch has rows (each used to count as a load of its own).
    const burst = Array.from({ length: 6 }, () => e.generate(req('fsl-a', { maxTokens: 2 }), never()));
    let b: ServeResult | null;
    try {
      b = await Promise.race([e.generate(req('fsl-b', { maxTokens: 2 }), never()), new Promise<null>((r) => setTimeout(() => r(null), 5_000))]);
    } finally {
      release();
    }
    expect(b, 'fsl-b was held back behind the burst').not.toBeNull();
    expect(b!.personalization).toEqual({ mode: 'injected', adapterVersion: 1 });
    const done = await Promise.all(burst);
    expect(done.map((r) => r.personalization.mode)).toEqual(Array(6).fill('injected'));
  });

  it('refuses a prompt with no room in the context window (422 details), and caps maxTokens at the room left', async () => {
    const e = f.engine();
    const ctx = { tokenizer: f.tokenizer, template: 'memlora' as const, contextTokens: f.cfg.maxPositions };
    const long = 'walking for thirty minutes a day '.repeat(80);
    const n = encodeRequest(ctx, { prompt: long, maxTokens: 1 }).length;
    expect(n).toBeGreaterThanOrEqual(512);
    await expect(e.generate(req('ctx', { prompt: long }), never())).rejects.toMatchObject({ code: 'prompt_too_long', details: { promptTokens: n, contextTokens: 512 } });
    let reps = 60;
    while (encodeRequest(ctx, { prompt: 'walking for thirty minutes a day '.repeat(reps), maxTokens: 1 }).length >= 480) reps -= 5;
    const fits = 'walking for thirty minutes a day '.repeat(reps);
    const m = encodeRequest(ctx, { prompt: fits, maxTokens: 1 }).length;
    await f.giveAdapter('ctx', forcingAdapter(f.cfg, f.weights, q)); // never stops early
    const r = await e.generate(req('ctx', { prompt: fits, maxTokens: 2048 }), never());
    expect(r).toMatchObject({ finishReason: 'length', usage: { promptTokens: m, completionTokens: 512 - m } });
  });

  it('truncatePromptTokens: a prompt past the window is read as its last k tokens, exactly as those tokens sent alone (through an adapter); memory only as it fits within them', async () => {
    const e = f.engine();
    const ctx = { tokenizer: f.tokenizer, template: 'memlora' as const, contextTokens: f.cfg.maxPositions };
    const long = 'walking for thirty minutes a day '.repeat(80);
    await f.giveAdapter('cut-a', randomStoredAdapter(f.cfg, [0, 1], 2, 45));
    const cut = await e.generate(req('cut-a', { prompt: long, maxTokens: 12, truncatePromptTokens: 100 }), never());
    const last = encodeRequest(ctx, { prompt: long, maxTokens: 1 }).slice(-100);
    const alone = await e.generate(req('cut-a', { prompt: last, maxTokens: 12 }), never());
    expect(cut).toMatchObject({ text: alone.text, usage: { promptTokens: 100 }, personalization: { mode: 'injected' } });
    // truncationSide right (vLLM's truncation_side): the first k tokens, as they are sent alone.
    const first = encodeRequest(ctx, { prompt: long, maxTokens: 1 }).slice(0, 100);
    const head = await e.generate(req('cut-a', { prompt: long, maxTokens: 12, truncatePromptTokens: 100, truncationSide: 'right', returnTokenIds: true }), never());
    const headAlone = await e.generate(req('cut-a', { prompt: first, maxTokens: 12 }), never());
    expect(head).toMatchObject({ text: headAlone.text, usage: { promptTokens: 100 }, promptTokenIds: first });
    expect(head.text).not.toBe(cut.text);
    expect(e.tokenize({ prompt: long, truncatePromptTokens: 100, truncationSide: 'right' }).tokens).toEqual(first);
    // -1: the window less one token, so one token is written.
    expect(await e.generate(req('cut-a', { prompt: long, maxTokens: 12, truncatePromptTokens: -1 }), never())).toMatchObject({ finishReason: 'length', usage: { promptTokens: 511, completionTokens: 1 } });
    // Memory is added only while the prompt with it stays within the bound.
    f.addHistory('cut-m', ['my headache is worse in the morning', 'coffee makes my headache worse']);
    const question = { prompt: 'what about my headache in the morning?', mode: 'memory' as const, maxTokens: 4 };
    const withOne = encodeRequest(ctx, question, ['my headache is worse in the morning']).length;
    const bounded = await e.generate(req('cut-m', { ...question, truncatePromptTokens: withOne }), never());
    expect(bounded).toMatchObject({ personalization: { mode: 'memory', memoryItems: 1 }, usage: { promptTokens: withOne } });
  });
});

describe('personalisation modes', () => {
  it('memory: the user\'s own best history items are prepended, counted, and another user\'s never are', async () => {
    const e = f.engine();
    f.addHistory('mem-a', ['my headache is worse in the morning', 'Dogs need daily walks', 'coffee makes my headache worse']);
    f.addHistory('mem-b', ['headache headache morning headache coffee', 'bob secret headache note']);
    const r = await e.generate(req('mem-a', { prompt: 'what about my headache in the morning?', mode: 'memory', maxTokens: 4 }), never());
    expect(r.personalization).toEqual({ mode: 'memory', adapterVersion: null, memoryItems: 2 });
    const ctx = { tokenizer: f.tokenizer, template: 'memlora' as const, contextTokens: f.cfg.maxPositions };
    const own = encodeRequest(ctx, { prompt: 'what about my headache in the morning?', maxTokens: 4 }, ['my headache is worse in the morning', 'coffee makes my headache worse']);
    expect(r.usage.promptTokens).toBe(own.length);
    // auto without an adapter uses memory too; without history it is vanilla
    expect((await e.generate(req('mem-a', { prompt: 'headache', maxTokens: 2 }), never())).personalization.mode).toBe('memory');
    expect((await e.generate(req('mem-none', { prompt: 'headache', maxTokens: 2 }), never())).personalization).toEqual({ mode: 'vanilla', adapterVersion: null });
    expect((await e.generate(req('mem-none', { prompt: 'headache', maxTokens: 2, mode: 'memory' }), never())).personalization).toEqual({
      mode: 'vanilla',
      adapterVersion: null,
      fallback: { from: 'memory', reason: 'no_memory' },
    });
  });

  it('injected without an adapter falls back and says so; vanilla and memory never load an adapter', async () => {
    const e = f.engine();
    f.addHistory('fb', ['my dog likes long walks']);
    const r = await e.generate(req('fb', { prompt: 'walks with my dog', mode: 'injected', maxTokens: 2 }), never());
    expect(r.personalization).toEqual({ mode: 'memory', adapterVersion: null, memoryItems: 1, fallback: { from: 'injected', reason: 'no_adapter' } });
    await f.giveAdapter('fb', forcingAdapter(f.cfg, f.weights, q));
    const reads = vi.spyOn(f.store, 'read');
    try {
      expect((await e.generate(req('fb', { mode: 'vanilla', maxTokens: 3 }), never())).personalization).toEqual({ mode: 'vanilla', adapterVersion: null });
      expect((await e.generate(req('fb', { prompt: 'my dog', mode: 'memory', maxTokens: 3 }), never())).personalization.mode).toBe('memory');
      expect(reads).not.toHaveBeenCalled();
    } finally {
      reads.mockRestore();
    }
    expect((await e.generate(req('fb', { maxTokens: 3 }), never())).text).toBe('qqq');
  });

  it('streams the reply as token events whose text adds up to the result, with timings', async () => {
    const e = f.engine();
    const { tokens, result } = await collect(e.stream(req('streamer', { maxTokens: 12, messages: [{ role: 'user', content: 'Hello!' }], prompt: undefined }), never()));
    expect(tokens.join('')).toBe(result.text);
    expect(result.usage.completionTokens).toBeGreaterThan(0);
    const t = result.timings;
    expect(t.totalMs).toBeGreaterThanOrEqual(t.queueMs + t.prefillMs - 0.02);
    expect(result.id).toMatch(/^gen_[0-9a-f]{16}$/);
  });

  it('close() fails queued requests with shutting_down and refuses new ones', async () => {
    const e = f.engine({ maxBatch: 1 });
    await f.giveAdapter('closer', forcingAdapter(f.cfg, f.weights, q));
    const running = e.generate(req('closer', { maxTokens: 200 }), never());
    const queued = e.generate(req('closer', { maxTokens: 5 }), never());
    const queuedError = queued.catch((x: unknown) => x);
    await until(() => e.occupancy.active === 1);
    await e.close();
    expect(await queuedError).toMatchObject({ code: 'shutting_down' });
    expect((await running).finishReason).toBe('cancelled');
    await expect(e.generate(req('closer'), never())).rejects.toMatchObject({ code: 'shutting_down' });
  });
});

describe('log-probabilities', () => {
  const ctx = () => ({ tokenizer: f.tokenizer, template: 'memlora' as const, contextTokens: f.cfg.maxPositions });

  /** log-softmax of the full forward pass over the prompt and the reply, through the user's adapter (an independent computation: no KV cache, no row pool). */
  async function reference(r: ServeRequest, ids: number[], adapter?: Adapter): Promise<number[][]> {
    const prompt = encodeRequest(ctx(), r);
    const all = (await f.model.forwardLogits([[...prompt, ...ids]], adapter && { adapter }))[0];
    const v = f.cfg.vocabSize;
    return ids.map((_, s) => {
      const row = Array.from(all.subarray((prompt.length - 1 + s) * v, (prompt.length + s) * v));
      const m = Math.max(...row);
      const lse = m + Math.log(row.reduce((a, x) => a + Math.exp(x - m), 0));
      return row.map((x) => x - lse);
    });
  }

  function expectMatches(lps: TokenLogprob[], ref: number[][], top: number): void {
    lps.forEach((lp, s) => {
      expect(lp.logprob).toBeCloseTo(ref[s][lp.tokenId], 3);
      expect(lp.top).toHaveLength(top);
      lp.top.forEach((a, k) => {
        expect(a.logprob).toBeCloseTo(ref[s][a.tokenId], 3);
        if (k > 0) expect(a.logprob).toBeLessThanOrEqual(lp.top[k - 1].logprob);
      });
      // Nothing outside the list is more likely than its last entry.
      if (top > 0) expect(Math.max(...ref[s].filter((_, id) => !lp.top.some((a) => a.tokenId === id)))).toBeLessThanOrEqual(lp.top[top - 1].logprob + 1e-3);
    });
  }

  it('are each user\'s own model\'s (adapter included), one per completion token, the same alone and in a mixed batch', async () => {
    const e = f.engine();
    const a = randomStoredAdapter(f.cfg, [0, 1], 1, 31);
    const b = randomStoredAdapter(f.cfg, [1], 2, 32);
    await f.giveAdapter('lp-a', a);
    await f.giveAdapter('lp-b', b);
    const reqs = [
      req('lp-a', { maxTokens: 9, logprobs: true, topLogprobs: 4 }),
      req('lp-b', { maxTokens: 9, logprobs: true, topLogprobs: 4, temperature: 0.8, seed: 3 }),
      req('lp-b', { maxTokens: 9, logprobs: true, mode: 'vanilla' }),
    ];
    const alone: ServeResult[] = [];
    for (const r of reqs) alone.push(await e.generate(r, never()));
    const together = await Promise.all(reqs.map((r) => e.generate(r, never())));
    const adapters = [a, b, undefined];
    for (const [i, r] of alone.entries()) {
      const lps = r.logprobs!;
      expect(lps).toHaveLength(r.usage.completionTokens);
      expectMatches(lps, await reference(reqs[i], lps.map((lp) => lp.tokenId), adapters[i]), reqs[i].topLogprobs ?? 0);
      // Each token's text is its bytes; joined they make the reply (the end token, if any, is not in it).
      const joined = Buffer.concat(lps.map((lp) => Buffer.from(lp.bytes!))).toString('utf8');
      expect(joined.startsWith(r.text)).toBe(true);
      expect(together[i].logprobs!.map((lp) => lp.tokenId)).toEqual(lps.map((lp) => lp.tokenId));
      together[i].logprobs!.forEach((lp, s) => expect(lp.logprob).toBeCloseTo(lps[s].logprob, 4));
    }
    // The adapter changes the distribution: not the vanilla model's figures.
    const vanilla = await reference(reqs[0], alone[0].logprobs!.map((lp) => lp.tokenId));
    expect(Math.abs(vanilla[0][alone[0].logprobs![0].tokenId] - alone[0].logprobs![0].logprob)).toBeGreaterThan(1e-2);
    // Greedy: the chosen token is the most likely one.
    for (const lp of alone[0].logprobs!) expect(lp.tokenId).toBe(lp.top[0].tokenId);
    expect((await e.generate(req('lp-a', { maxTokens: 3 }), never())).logprobs).toBeUndefined();
  });

  it('stream with every token, also while its text is held back by a stop string', async () => {
    const e = f.engine();
    const free = await e.generate(req('lp-stream', { maxTokens: 12, mode: 'vanilla' }), never());
    // A stop string made of the reply's middle: tokens before it are held back while it may be starting.
    const stop = free.text.slice(3, 7);
    const events: ServeEvent[] = [];
    for await (const ev of e.stream(req('lp-stream', { maxTokens: 12, mode: 'vanilla', stop: [stop], logprobs: true, stream: true }), never())) events.push(ev);
    const tokenEvents = events.filter((ev): ev is Extract<ServeEvent, { type: 'token' }> => ev.type === 'token');
    const done = events[events.length - 1];
    if (done.type !== 'done') throw new Error('no done event');
    const result = done.result;
    expect(tokenEvents.map((ev) => ev.text).join('')).toBe(result.text);
    expect(result.text).toBe(free.text.slice(0, 3));
    expect(result.finishReason).toBe('stop');
    expect(tokenEvents.every((ev) => ev.logprobs?.length === 1)).toBe(true);
    expect(tokenEvents.some((ev) => ev.text === '')).toBe(true);
    expect(tokenEvents.flatMap((ev) => ev.logprobs!)).toEqual(result.logprobs);
    expect(result.logprobs).toHaveLength(result.usage.completionTokens);
  });
});

describe('skipSpecialTokens (vLLM\'s skip_special_tokens)', () => {
  it('a control token drawn mid-reply leaves no text, the text around it as if it were not there; the same tokens either way', async () => {
    const e = f.engine();
    const user = f.tokenizer.specialIds['<|user|>'];
    expect(user).toBeDefined();
    // Greedy with the bias: a control token first (not one that ends the reply), then the model's own words.
    const ask = (skipSpecialTokens?: boolean) => e.generate(req('skip-a', { prompt: 'walking for thirty minutes a day', maxTokens: 8, mode: 'vanilla', ignoreEos: true, minTokens: 8, logitBias: { [user]: 12 }, frequencyPenalty: 2, returnTokenIds: true, skipSpecialTokens }), never());
    const [kept, skipped] = [await ask(), await ask(true)];
    expect(skipped.tokenIds).toEqual(kept.tokenIds);
    const ids = kept.tokenIds!;
    expect(ids.filter((id) => id === user).length).toBeGreaterThan(0);
    expect(ids.some((id) => id !== user)).toBe(true);
    expect(kept.text).toBe(f.tokenizer.decode(ids));
    expect(kept.text).toContain('<|user|>');
    // Skipped: the text of the other tokens, decoded together.
    expect(skipped.text).toBe(f.tokenizer.decode(ids.filter((id) => id !== user)));
    expect(skipped.text).not.toContain('<|user|>');
  });
});

describe('token ids (returnTokenIds, vLLM\'s return_token_ids)', () => {
  it('the prompt\'s ids as the model read them, memory included, and every reply token, in the result and one per token event (also while the text is held back), the first with the prompt\'s', async () => {
    const e = f.engine();
    f.addHistory('tid-m', ['my headache is worse in the morning', 'coffee makes my headache worse']);
    const question = { prompt: 'what about my headache in the morning?', maxTokens: 12, ignoreEos: true };
    const free = await e.generate(req('tid-m', { ...question, mode: 'memory', logprobs: true }), never());
    const plain = await e.generate(req('tid-m', { ...question, mode: 'memory', returnTokenIds: true }), never());
    // The reply's tokens are those its logprobs name; the prompt is the question after the memory, as encodeRequest writes it.
    expect(plain.tokenIds).toEqual(free.logprobs!.map((lp) => lp.tokenId));
    const ctx = { tokenizer: f.tokenizer, template: 'memlora' as const, contextTokens: f.cfg.maxPositions };
    expect(plain.promptTokenIds).toEqual(encodeRequest(ctx, question, ['my headache is worse in the morning', 'coffee makes my headache worse']));
    expect([plain.tokenIds!.length, plain.promptTokenIds!.length]).toEqual([plain.usage.completionTokens, plain.usage.promptTokens]);
    expect(f.tokenizer.decode(plain.tokenIds!)).toBe(plain.text);
    // Streamed with a stop string from the reply's middle: text held back, ids still one per step.
    const stop = free.text.slice(3, 7);
    const events: ServeEvent[] = [];
    for await (const ev of e.stream(req('tid-m', { ...question, mode: 'memory', stop: [stop], returnTokenIds: true, stream: true }), never())) events.push(ev);
    const tokenEvents = events.filter((ev): ev is Extract<ServeEvent, { type: 'token' }> => ev.type === 'token');
    const done = events[events.length - 1];
    if (done.type !== 'done') throw new Error('no done event');
    expect(tokenEvents.every((ev) => ev.tokenIds?.length === 1)).toBe(true);
    expect(tokenEvents.some((ev) => ev.text === '')).toBe(true);
    expect(tokenEvents.flatMap((ev) => ev.tokenIds!)).toEqual(done.result.tokenIds);
    expect(done.result.tokenIds).toEqual(plain.tokenIds!.slice(0, done.result.usage.completionTokens));
    expect(tokenEvents[0].promptTokenIds).toEqual(plain.promptTokenIds);
    expect(tokenEvents.slice(1).every((ev) => ev.promptTokenIds === undefined)).toBe(true);
    // Not asked: none.
    const none = await e.generate(req('tid-m', { ...question, mode: 'memory' }), never());
    expect([none.tokenIds, none.promptTokenIds]).toEqual([undefined, undefined]);
  });
});

describe('sampling settings', () => {
  it('logit bias and frequency/presence penalties steer each row by its own settings, the same alone and in a mixed batch', async () => {
    const e = f.engine();
    await f.giveAdapter('samp-a', randomStoredAdapter(f.cfg, [0, 1], 1, 41));
    // +100 on "q": greedy takes nothing else; with a frequency penalty of 2 still "q" (100 - 2·6 wins).
    const forced = await e.generate(req('samp-a', { maxTokens: 6, logitBias: { [q]: 100 }, frequencyPenalty: 2 }), never());
    expect(forced.text).toBe('qqqqqq');
    const plain = await e.generate(req('samp-a', { maxTokens: 12 }), never());
    const reqs = [
      req('samp-a', { maxTokens: 12, presencePenalty: 2, frequencyPenalty: 2 }),
      req('samp-a', { maxTokens: 12, logitBias: { [z]: 3, [q]: -100 }, temperature: 0.9, seed: 4 }),
      req('samp-b', { maxTokens: 12, mode: 'vanilla', frequencyPenalty: -2 }),
      req('samp-a', { maxTokens: 12 }),
    ];
    const alone: ServeResult[] = [];
    for (const r of reqs) alone.push(await e.generate(r, never()));
    const together = await Promise.all(reqs.map((r) => e.generate(r, never())));
    expect(together.map((r) => r.text)).toEqual(alone.map((r) => r.text));
    // The penalties changed the greedy reply (not vacuous), and a reply with q banned has none.
    expect(alone[0].text).not.toBe(plain.text);
    expect(alone[3].text).toBe(plain.text);
    expect(alone[1].text).not.toContain('q');
  });

  it('minTokens holds the end token back that long; ignoreEos runs every reply to maxTokens (fixed-length load tests)', async () => {
    const e = f.engine();
    await f.giveAdapter('samp-c', randomStoredAdapter(f.cfg, [1], 2, 42));
    const eosFirst = { logitBias: { [f.cfg.eosId]: 100 } }; // the end token is every step's greedy choice
    const ended = await e.generate(req('samp-a', { maxTokens: 10, mode: 'vanilla', ...eosFirst }), never());
    expect(ended).toMatchObject({ text: '', finishReason: 'stop', usage: { completionTokens: 1 } });
    const held = await e.generate(req('samp-a', { maxTokens: 10, minTokens: 4, mode: 'vanilla', ...eosFirst }), never());
    expect(held).toMatchObject({ finishReason: 'stop', usage: { completionTokens: 5 } });
    const [fixed, fixedInjected] = await Promise.all([
      e.generate(req('samp-a', { maxTokens: 10, ignoreEos: true, mode: 'vanilla', ...eosFirst }), never()),
      e.generate(req('samp-c', { maxTokens: 12, ignoreEos: true, temperature: 1, seed: 2 }), never()),
    ]);
    expect(fixed).toMatchObject({ finishReason: 'length', usage: { completionTokens: 10 } });
    expect(fixedInjected).toMatchObject({ finishReason: 'length', usage: { completionTokens: 12 }, personalization: { mode: 'injected' } });
    // The chat template's end token is the model's too: ignoreEos holds it back as it does EOS.
    const end = f.tokenizer.tokenToId(SPECIAL_TOKENS.end)!;
    const endFirst = { logitBias: { [end]: 100 } };
    expect(await e.generate(req('samp-a', { maxTokens: 6, mode: 'vanilla', ...endFirst }), never())).toMatchObject({ finishReason: 'stop', usage: { completionTokens: 1 } });
    expect(await e.generate(req('samp-a', { maxTokens: 6, mode: 'vanilla', ignoreEos: true, ...endFirst }), never())).toMatchObject({ finishReason: 'length', usage: { completionTokens: 6 } });
  });

  it('stopTokenIds end the reply at the first such token (kept out of the text), not before minTokens; an id past the vocabulary is refused', async () => {
    const e = f.engine();
    const free = await e.generate(req('samp-a', { maxTokens: 12, mode: 'vanilla', ignoreEos: true, logprobs: true }), never());
    const ids = free.logprobs!.map((lp) => lp.tokenId);
    // A token first generated at position k >= 2.
    const k = ids.findIndex((t, i) => i >= 2 && ids.indexOf(t) === i);
    const stopped = await e.generate(req('samp-a', { maxTokens: 12, mode: 'vanilla', ignoreEos: true, stopTokenIds: [ids[k]] }), never());
    // ignoreEos holds the model's end token back, not the request's (vLLM's ignore_eos with stop_token_ids).
    expect(stopped).toMatchObject({ finishReason: 'stop', usage: { completionTokens: k + 1 } });
    const ended = await e.generate(req('samp-a', { maxTokens: 12, mode: 'vanilla', stopTokenIds: [ids[k]], logitBias: { [f.cfg.eosId]: -100 } }), never());
    expect(ended).toMatchObject({ finishReason: 'stop', usage: { completionTokens: k + 1 } });
    expect(ended.text).toBe(f.tokenizer.decode(ids.slice(0, k)));
    const held = await e.generate(req('samp-a', { maxTokens: 12, mode: 'vanilla', stopTokenIds: [ids[k]], minTokens: k + 2, logitBias: { [f.cfg.eosId]: -100 } }), never());
    expect(held.usage.completionTokens).toBeGreaterThan(k + 1);
    await expect(e.generate(req('samp-a', { stopTokenIds: [f.cfg.vocabSize] }), never())).rejects.toMatchObject({ code: 'token_out_of_range' });
  });

  it('allowedTokenIds: only those tokens are drawn (through an adapter too, greedy and sampled); end tokens only if listed, and listed alone they end the reply at once; an id past the vocabulary is refused', async () => {
    const e = f.engine();
    await f.giveAdapter('samp-d', randomStoredAdapter(f.cfg, [0, 1], 2, 43));
    const only = [q, z];
    const replies = await Promise.all([
      e.generate(req('samp-a', { maxTokens: 12, mode: 'vanilla', allowedTokenIds: only }), never()),
      e.generate(req('samp-d', { maxTokens: 12, allowedTokenIds: only, temperature: 1, seed: 5, logprobs: true }), never()),
      // The end token favoured, but not listed: never drawn.
      e.generate(req('samp-a', { maxTokens: 12, mode: 'vanilla', allowedTokenIds: only, logitBias: { [f.cfg.eosId]: 100 } }), never()),
    ]);
    for (const r of replies) {
      expect(r, r.text).toMatchObject({ finishReason: 'length', usage: { completionTokens: 12 } });
      expect(r.text).toMatch(/^[qz]+$/);
    }
    expect(replies[1].personalization.mode).toBe('injected');
    for (const lp of replies[1].logprobs!) expect(only).toContain(lp.tokenId);
    // Listed alone, the end token ends the reply at its first step, minTokens notwithstanding.
    expect(await e.generate(req('samp-a', { maxTokens: 12, mode: 'vanilla', minTokens: 4, allowedTokenIds: [f.cfg.eosId] }), never())).toMatchObject({ text: '', finishReason: 'stop', usage: { completionTokens: 1 } });
    await expect(e.generate(req('samp-a', { allowedTokenIds: [q, f.cfg.vocabSize] }), never())).rejects.toMatchObject({ code: 'token_out_of_range' });
  });

  it('badWords: no reply (greedy or sampled, through an adapter too) holds a bad word\'s token sequence, as written or after a space', async () => {
    const e = f.engine();
    await f.giveAdapter('samp-e', randomStoredAdapter(f.cfg, [0, 1], 2, 44));
    const ask = (more: Partial<ServeRequest>) => e.generate(req('samp-e', { maxTokens: 24, prompt: 'Once upon a time', ignoreEos: true, logprobs: true, ...more }), never());
    const free = await ask({});
    const freeIds = free.logprobs!.map((lp) => lp.tokenId);
    const holds = (ids: number[], seq: readonly number[]) => ids.some((_, i) => seq.every((t, k) => ids[i + k] === t));
    // Words the free reply writes as their own tokens (one token, or two in a row), the first three found.
    const written = (w: string) => w !== '' && badWordIds(f.tokenizer, [w]).some((seq) => holds(freeIds, seq));
    const spans = [1, 2].flatMap((n) => freeIds.map((_, i) => f.tokenizer.decode(freeIds.slice(i, i + n)).trim()));
    const words = [...new Set(spans.filter(written))].slice(0, 3);
    expect(words.length).toBeGreaterThan(0);
    const sequences = badWordIds(f.tokenizer, words);
    for (const more of [{}, { temperature: 1, seed: 9 }, { temperature: 1.3, seed: 10 }]) {
      const r = await ask({ badWords: words, ...more });
      const ids = r.logprobs!.map((lp) => lp.tokenId);
      expect(r).toMatchObject({ usage: { completionTokens: 24 }, personalization: { mode: 'injected' } });
      for (const seq of sequences) expect(holds(ids, seq), `${JSON.stringify(r.text)} holds ${seq}`).toBe(false);
    }
    // Bad words that leave none of the allowed tokens: the end token ends the reply at once.
    expect(badWordIds(f.tokenizer, ['q'])[0]).toEqual([q]);
    expect(await e.generate(req('samp-e', { maxTokens: 8, allowedTokenIds: [q], badWords: ['q'] }), never())).toMatchObject({ text: '', finishReason: 'stop', usage: { completionTokens: 1 } });
  });

  it('responseFormat json_object: each reply (through its adapter too) is a JSON object or, cut by maxTokens, a prefix of one; free rows beside them unchanged', async () => {
    const e = f.engine();
    await f.giveAdapter('json-a', randomStoredAdapter(f.cfg, [0, 1], 2, 71));
    const json = { type: 'json_object' as const };
    const rs = await besideFree(e, req('json-b', { maxTokens: 16, mode: 'vanilla' }), [
      req('json-a', { maxTokens: 48, responseFormat: json }),
      req('json-a', { maxTokens: 48, responseFormat: json, temperature: 1, seed: 3 }),
      req('json-b', { maxTokens: 48, responseFormat: json, temperature: 1, seed: 4, mode: 'vanilla' }),
      // '}' favoured: the object closes as soon as the grammar lets it, and the reply ends there.
      req('json-b', { maxTokens: 48, responseFormat: json, mode: 'vanilla', logitBias: { [tokenOf(f.tokenizer, '}')]: 100 } }),
    ]);
    expect(rs[0].personalization.mode).toBe('injected');
    const vocab = guideVocabulary(f.tokenizer, f.cfg.vocabSize);
    for (const r of rs) {
      expect(SchemaGuide.jsonObject(vocab).accepts(new TextEncoder().encode(r.text)), r.text).toBe(true);
      if (r.finishReason === 'stop') expect(JSON.parse(r.text)).toBeTypeOf('object');
      else expect(r).toMatchObject({ finishReason: 'length', usage: { completionTokens: 48 } });
    }
    expect(rs[3]).toMatchObject({ finishReason: 'stop' });
    expect(rs[3].text.trim()).toBe('{}');
  });

  it('responseFormat json_schema: each reply (through its adapter too) is a whole document of the schema; free rows beside them unchanged; a schema it cannot enforce is refused', async () => {
    const e = f.engine();
    await f.giveAdapter('schema-a', randomStoredAdapter(f.cfg, [0, 1], 2, 72));
    // Every value bounded (an enum, short strings, at most two of them, a boolean, a digit) and
    // whitespace runs bounded too: every document is finite, and these seeded replies close well
    // within maxTokens 256 (the test is deterministic: greedy or fixed seeds).
    const schema = {
      type: 'object',
      properties: {
        mood: { enum: ['happy', 'sad'] },
        likes: { type: 'array', items: { type: 'string', minLength: 1, maxLength: 6 }, maxItems: 2 },
        ok: { type: 'boolean' },
        stars: { type: 'integer', minimum: 1, maximum: 5 },
      },
      required: ['mood', 'ok', 'stars'],
      additionalProperties: false,
    };
    const format = { type: 'json_schema' as const, jsonSchema: { name: 'mood', schema } };
    const rs = await besideFree(e, req('schema-b', { maxTokens: 16, mode: 'vanilla' }), [
      req('schema-a', { maxTokens: 256, responseFormat: format }),
      req('schema-a', { maxTokens: 256, responseFormat: format, temperature: 1, seed: 5 }),
      req('schema-b', { maxTokens: 256, responseFormat: format, temperature: 1.5, seed: 6, mode: 'vanilla' }),
      req('schema-b', { maxTokens: 256, responseFormat: format, temperature: 1.5, seed: 7, mode: 'vanilla' }),
    ]);
    expect(rs[0].personalization.mode).toBe('injected');
    for (const r of rs) {
      expect(r.finishReason, r.text).toBe('stop');
      const doc = JSON.parse(r.text) as Record<string, unknown>;
      expect(Object.keys(doc).every((k) => ['mood', 'likes', 'ok', 'stars'].includes(k)), r.text).toBe(true);
      expect([1, 2, 3, 4, 5]).toContain(doc.stars);
      expect(['happy', 'sad']).toContain(doc.mood);
      expect(doc.ok).toBeTypeOf('boolean');
      if ('likes' in doc) {
        const likes = doc.likes as unknown[];
        expect(likes.length).toBeLessThanOrEqual(2);
        for (const l of likes) expect(typeof l === 'string' && [...l].length >= 1 && [...l].length <= 6, r.text).toBe(true);
      }
    }
    const before = counter('memlora_generate_rejected_total', { code: 'unsupported_schema' });
    const negation = { type: 'json_schema' as const, jsonSchema: { name: 'p', schema: { type: 'object', properties: { a: { type: 'integer', not: { const: 2 } } } } } };
    await expect(e.generate(req('schema-b', { responseFormat: negation }), never())).rejects.toMatchObject({ code: 'unsupported_schema', details: { path: '/properties/a', keyword: 'not' } });
    expect(counter('memlora_generate_rejected_total', { code: 'unsupported_schema' })).toBe(before + 1);
  });

  it('guidedRegex: every reply (through adapters, sampled or greedy) matches the pattern whole; a pattern it cannot run is refused', async () => {
    const e = f.engine();
    await f.giveAdapter('regex-a', randomStoredAdapter(f.cfg, [0, 1], 2, 83));
    const pattern = '(yes|no), [a-z]{2,8} [0-9]{1,3}';
    const rs = await Promise.all([0, 1, 2, 3, 4, 5].map((seed) => e.generate(req(seed % 2 ? 'regex-a' : 'regex-b', { maxTokens: 64, guidedRegex: pattern, ...(seed > 0 ? { temperature: 1, seed } : {}) }), never())));
    for (const r of rs) {
      expect(r.text, r.text).toMatch(new RegExp(`^(?:${pattern})$`));
      expect(r.finishReason).toBe('stop');
    }
    expect(rs[1].personalization.mode).toBe('injected');
    await expect(e.generate(req('regex-b', { guidedRegex: '(a)\\1' }), never())).rejects.toMatchObject({ code: 'unsupported_regex' });
  });

  it('guidedGrammar: every reply (through adapters, sampled or greedy) is a string of the grammar, nested as the model writes it; free rows beside them unchanged; a grammar it cannot run is refused', async () => {
    const e = f.engine();
    await f.giveAdapter('grammar-a', randomStoredAdapter(f.cfg, [0, 1], 2, 87));
    const grammar = 'root ::= expr\nexpr ::= term (op term){0,2}\nop ::= " + " | " * "\nterm ::= [0-9]{1,2} | "(" expr ")"';
    /** An independent recogniser of the grammar: the rest of the text after an expression, or null. */
    const expr = (s: string): string | null => {
      let rest = term(s);
      for (let k = 0; k < 2 && rest !== null && /^ [+*] /.test(rest); k++) {
        const next = term(rest.slice(3));
        if (next === null) break;
        rest = next;
      }
      return rest;
    };
    const term = (s: string): string | null => {
      const digits = /^[0-9]{1,2}/.exec(s);
      if (digits) return s.slice(digits[0].length);
      if (!s.startsWith('(')) return null;
      const rest = expr(s.slice(1));
      return rest !== null && rest.startsWith(')') ? rest.slice(1) : null;
    };
    // The last two lean towards opening a bracket, so that replies nest.
    const open = String(tokenOf(f.tokenizer, '('));
    const guided = [0, 1, 2, 3, 4, 5, 6, 7].map((seed) => req(seed % 2 ? 'grammar-a' : 'grammar-b', { maxTokens: 96, guidedGrammar: grammar, ...(seed > 0 ? { temperature: 1, seed } : {}), ...(seed > 5 ? { logitBias: { [open]: 3 } } : {}) }));
    const rs = await besideFree(e, req('grammar-b', { maxTokens: 16, mode: 'vanilla' }), guided);
    for (const r of rs) {
      expect(r.finishReason, r.text).toBe('stop');
      expect(expr(r.text), r.text).toBe('');
    }
    expect(rs.some((r) => r.text.includes('((')), rs.map((r) => r.text).join(' | ')).toBe(true);
    expect(rs[1].personalization.mode).toBe('injected');
    await expect(e.generate(req('grammar-b', { guidedGrammar: 'root ::= root "a" | "a"' }), never())).rejects.toMatchObject({ code: 'unsupported_grammar', details: { reason: expect.stringMatching(/left-recursive/) } });
    // The same language in Lark's syntax (told apart from GBNF, translated): the same guarantee.
    const larkGrammar = 'start: expr\nexpr: term (OP term) ~ 0..2\nOP: " + " | " * "\nterm: /[0-9]{1,2}/ | "(" expr ")"';
    const larkReplies = await Promise.all([0, 1, 2, 3].map((seed) => e.generate(req(seed % 2 ? 'grammar-a' : 'grammar-b', { maxTokens: 96, guidedGrammar: larkGrammar, ...(seed > 0 ? { temperature: 1, seed } : {}) }), never())));
    for (const r of larkReplies) {
      expect(r.finishReason, r.text).toBe('stop');
      expect(expr(r.text), r.text).toBe('');
    }
    await expect(e.generate(req('grammar-b', { guidedGrammar: 'start: a\na: b "x" | "y"\nb: a "z"' }), never())).rejects.toMatchObject({ code: 'unsupported_grammar', details: { reason: expect.stringMatching(/left-recursive.*Lark/) } });
    await expect(e.generate(req('grammar-b', { guidedGrammar: 'start: missing' }), never())).rejects.toMatchObject({ code: 'unsupported_grammar', details: { reason: expect.stringMatching(/"missing" is not defined at line 1, column 8 \(Lark\)/) } });
  });

  it('guidedChoice: every reply (through adapters, sampled or greedy) is one of the choices, whole; free rows beside them unchanged', async () => {
    const e = f.engine();
    await f.giveAdapter('choice-a', randomStoredAdapter(f.cfg, [0, 1], 2, 81));
    const choices = ['yes', 'no', 'yes, gladly', 'not sure'];
    const guided = [0, 1, 2, 3, 4, 5].map((seed) => req(seed % 2 ? 'choice-a' : 'choice-b', { maxTokens: 12, guidedChoice: choices, ...(seed > 0 ? { temperature: 1, seed } : {}) }));
    const rs = await besideFree(e, req('choice-b', { maxTokens: 16, mode: 'vanilla' }), guided);
    for (const r of rs) {
      expect(choices).toContain(r.text);
      expect(r.finishReason).toBe('stop');
    }
    expect(rs[1].personalization.mode).toBe('injected');
    // A bias towards 'n' picks the choices that start with it.
    const n = await e.generate(req('choice-b', { maxTokens: 12, guidedChoice: choices, logitBias: { [tokenOf(f.tokenizer, 'n')]: 50 } }), never());
    expect(['no', 'not sure']).toContain(n.text);
  });

  it('continueFinalMessage: the reply continues the assistant\'s prefilled message, as a raw prompt of those very ids does', async () => {
    const e = f.engine();
    await f.giveAdapter('cont-a', randomStoredAdapter(f.cfg, [1], 2, 91));
    const messages = [
      { role: 'user' as const, content: 'What do I like to eat?' },
      { role: 'assistant' as const, content: 'You like' },
    ];
    const ids = e.tokenize({ messages, continueFinalMessage: true }).tokens;
    // The ids: the conversation with a generation prompt, then the prefilled words, no closing token.
    const opened = e.tokenize({ messages: messages.slice(0, 1) }).tokens;
    expect(ids.slice(0, opened.length)).toEqual(opened);
    expect(f.tokenizer.decode(ids.slice(opened.length))).toBe('You like');
    for (const extra of [{}, { temperature: 1, seed: 5 }]) {
      const continued = await e.generate(req('cont-a', { messages, continueFinalMessage: true, maxTokens: 8, ...extra }), never());
      const asIds = await e.generate(req('cont-a', { prompt: ids, maxTokens: 8, ...extra }), never());
      expect(continued.text).toBe(asIds.text);
      expect(continued.usage.promptTokens).toBe(ids.length);
      expect(continued.personalization.mode).toBe('injected');
    }
  });

  it('a logit bias on a token id past the vocabulary is refused before it is queued (token_out_of_range)', async () => {
    const e = f.engine();
    const rejected = () => counter('memlora_generate_rejected_total', { code: 'token_out_of_range' });
    const before = rejected();
    const v = f.cfg.vocabSize;
    const err = await e.generate(req('samp-a', { logitBias: { '3': 1, [v]: -1 } }), never()).catch((x: unknown) => x);
    expect(err).toBeInstanceOf(ServeError);
    expect(err).toMatchObject({ code: 'token_out_of_range', details: { tokenId: String(v), vocabSize: v } });
    expect(rejected()).toBe(before + 1);
    expect(e.queue(10).waiting).toBe(0);
    // The last id of the vocabulary is fine.
    await expect(e.generate(req('samp-a', { maxTokens: 2, logitBias: { [v - 1]: 1 } }), never())).resolves.toMatchObject({ usage: { completionTokens: 2 } });
  });
});

describe('scoring', () => {
  const ctx = () => ({ tokenizer: f.tokenizer, template: 'memlora' as const, contextTokens: f.cfg.maxPositions });
  const score = (userId: string, extra: Partial<ScoreRequest> = {}): ScoreRequest => ({ userId, prompt: 'Hello, how are you?', text: ' Fine, thank you.', mode: 'auto', ...extra });

  /** Log-softmax of a full forward pass over context + text at the text's positions (an independent computation). */
  async function reference(context: number[], text: number[], adapter?: Adapter): Promise<number[][]> {
    const all = (await f.model.forwardLogits([[...context, ...text]], adapter && { adapter }))[0];
    const v = f.cfg.vocabSize;
    return text.map((_, i) => {
      const row = Array.from(all.subarray((context.length + i - 1) * v, (context.length + i) * v));
      const m = Math.max(...row);
      const lse = m + Math.log(row.reduce((a, x) => a + Math.exp(x - m), 0));
      return row.map((x) => x - lse);
    });
  }

  it('each token of the text under the user\'s own model (adapter included), with the base model beside it', async () => {
    const e = f.engine();
    const a = randomStoredAdapter(f.cfg, [0, 1], 2, 51);
    await f.giveAdapter('score-a', a);
    const r = await e.score(score('score-a', { topLogprobs: 3, compare: true }), never());
    const context = encodeRequest(ctx(), { prompt: 'Hello, how are you?', maxTokens: 1 });
    const text = f.tokenizer.encode(' Fine, thank you.', { parseSpecial: false });
    // The base model's pass read the same context (no memory here) before the same text.
    expect(r.usage).toEqual({ contextTokens: context.length, scoredTokens: text.length, baseContextTokens: context.length });
    expect(r.personalization).toEqual({ mode: 'injected', adapterVersion: 1 });
    expect(r.tokens.map((t) => t.tokenId)).toEqual(text);
    expect(r.tokens.map((t) => t.token).join('')).toBe(' Fine, thank you.');
    const mine = await reference(context, text, a);
    const base = await reference(context, text);
    r.tokens.forEach((t, i) => {
      expect(t.logprob).toBeCloseTo(mine[i][t.tokenId], 4);
      expect(t.top).toHaveLength(3);
      t.top.forEach((alt) => expect(alt.logprob).toBeCloseTo(mine[i][alt.tokenId], 4));
      expect(r.base!.logprobs[i]).toBeCloseTo(base[i][t.tokenId], 4);
    });
    const sum = r.tokens.reduce((acc, t) => acc + t.logprob, 0);
    expect(r.logprob).toBeCloseTo(sum, 6);
    expect(r.meanLogprob).toBeCloseTo(sum / text.length, 6);
    expect(r.perplexity).toBeCloseTo(Math.exp(-sum / text.length), 6);
    expect(r.base!.logprob).toBeCloseTo(r.base!.logprobs.reduce((x, y) => x + y, 0), 6);
    // The adapter moved the figures (the comparison is not vacuous).
    expect(Math.abs(r.logprob - r.base!.logprob)).toBeGreaterThan(1e-2);
    const vanilla = await e.score(score('score-a', { mode: 'vanilla', compare: true }), never());
    expect(vanilla.personalization.mode).toBe('vanilla');
    // Served by the base model itself, there is no second pass.
    expect(vanilla.usage.baseContextTokens).toBeUndefined();
    expect(vanilla.tokens.map((t) => t.logprob)).toEqual(vanilla.base!.logprobs);
    vanilla.tokens.forEach((t, i) => expect(t.logprob).toBeCloseTo(base[i][t.tokenId], 4));
  });

  it('a user\'s adapter makes their own kind of text likelier: a "q"-forcing adapter scores "qqqq" far above the base model', async () => {
    const e = f.engine();
    await f.giveAdapter('score-q', forcingAdapter(f.cfg, f.weights, q));
    const r = await e.score(score('score-q', { text: 'qqqq', compare: true }), never());
    expect(r.meanLogprob).toBeGreaterThan(Math.log(0.5));
    expect(r.perplexity).toBeLessThan(2);
    expect(r.base!.meanLogprob).toBeLessThan(r.meanLogprob - 1);
    // Messages as context, and no context at all (the text from the start: its first token scored after BOS).
    const chat = await e.score({ userId: 'score-q', messages: [{ role: 'user', content: 'Say q.' }], text: 'qq', mode: 'auto' }, never());
    expect(chat.usage.contextTokens).toBe(encodeRequest(ctx(), { messages: [{ role: 'user', content: 'Say q.' }], maxTokens: 1 }).length);
    const bare = await e.score({ userId: 'score-q', text: 'qq', mode: 'auto' }, never());
    expect(bare.usage).toEqual({ contextTokens: 1, scoredTokens: 2 });
  });

  it('runs beside generation: rows decoding with other users\' adapters are unchanged, the scores equal those alone', async () => {
    const e = f.engine();
    await f.giveAdapter('score-b', randomStoredAdapter(f.cfg, [1], 1, 52));
    await f.giveAdapter('score-c', randomStoredAdapter(f.cfg, [0], 3, 53));
    const gens = [req('score-b', { maxTokens: 12 }), req('score-c', { maxTokens: 12, temperature: 0.9, seed: 8 })];
    // Rows of different lengths without an adapter (vanilla, and a comparison's base row) share one batched pass.
    const scores = [score('score-b'), score('score-c', { text: ' Not so well.', compare: true }), score('score-b', { mode: 'vanilla' }), score('score-c', { mode: 'vanilla', prompt: 'A much longer question, asked with many more words than the others?' })];
    const genAlone: ServeResult[] = [];
    for (const g of gens) genAlone.push(await e.generate(g, never()));
    const scoreAlone: ScoreResult[] = [];
    for (const s of scores) scoreAlone.push(await e.score(s, never()));
    const spy = vi.spyOn(f.model, 'forwardLogits');
    const [genTogether, scoreTogether] = await Promise.all([Promise.all(gens.map((g) => e.generate(g, never()))), Promise.all(scores.map((s) => e.score(s, never())))]);
    expect(genTogether.map((r) => r.text)).toEqual(genAlone.map((r) => r.text));
    scoreTogether.forEach((r, i) => {
      expect(r.personalization).toEqual(scoreAlone[i].personalization);
      r.tokens.forEach((t, k) => expect(t.logprob).toBeCloseTo(scoreAlone[i].tokens[k].logprob, 4));
      r.base?.logprobs.forEach((lp, k) => expect(lp).toBeCloseTo(scoreAlone[i].base!.logprobs[k], 4));
    });
    expect(scoreTogether[1].base).toBeDefined();
    expect(Math.max(...spy.mock.calls.map(([rows]) => rows.length))).toBeGreaterThan(1); // some pass was batched
    spy.mockRestore();
    expect(counter('memlora_generate_requests_total', { mode: 'injected', finish: 'scored' })).toBeGreaterThanOrEqual(4);
    expect(counter('memlora_generate_scored_tokens_total', { mode: 'vanilla' })).toBeGreaterThan(0);
  });

  it('refuses a context and text past the window (prompt_too_long); a request cancelled while queued never runs', async () => {
    const e = f.engine();
    const long = 'q'.repeat(f.cfg.maxPositions);
    await expect(e.score(score('score-a', { text: long }), never())).rejects.toMatchObject({ code: 'prompt_too_long', details: { contextTokens: f.cfg.maxPositions } });
    const ac = new AbortController();
    ac.abort();
    await expect(e.score(score('score-a'), ac.signal)).rejects.toMatchObject({ code: 'cancelled' });
    // Queued behind a long generation, then cancelled: rejected, and the engine goes on.
    const e1 = f.engine({ maxBatch: 1 });
    const busy = e1.generate(req('score-a', { maxTokens: 40, mode: 'vanilla', ignoreEos: true }), never());
    const ac2 = new AbortController();
    const queued = e1.score(score('score-a'), ac2.signal);
    ac2.abort();
    await expect(queued).rejects.toMatchObject({ code: 'cancelled' });
    await expect(busy).resolves.toMatchObject({ usage: { completionTokens: 40 } });
    await expect(e1.score(score('score-a', { mode: 'vanilla' }), never())).resolves.toMatchObject({ usage: { scoredTokens: expect.any(Number) } });
  });

  it('memory mode: the user\'s history is in the context the text is scored after; compare scores it without', async () => {
    const e = f.engine();
    f.addHistory('score-m', ['I adore quiet mornings by the sea', 'my cat is named Pepper']);
    const r = await e.score(score('score-m', { prompt: 'Tell me about my cat', text: ' Pepper', mode: 'memory', compare: true }), never());
    expect(r.personalization).toMatchObject({ mode: 'memory', memoryItems: expect.any(Number) });
    const plain = encodeRequest(ctx(), { prompt: 'Tell me about my cat', maxTokens: 1 });
    expect(r.usage.contextTokens).toBeGreaterThan(plain.length);
    const text = f.tokenizer.encode(' Pepper', { parseSpecial: false });
    const base = await reference(plain, text);
    r.base!.logprobs.forEach((lp, i) => expect(lp).toBeCloseTo(base[i][text[i]], 4));
    // With no context, memory is retrieved by the text itself (as the legacy completions' echo scores a prompt).
    const bare = await e.score({ userId: 'score-m', text: 'my cat Pepper', mode: 'memory' }, never());
    expect(bare.personalization).toMatchObject({ mode: 'memory', memoryItems: expect.any(Number) });
    // A context of token ids is searched with the text after it: the prompt split after BOS still finds the cat.
    const ids = e.tokenize({ prompt: 'Tell me about my cat Pepper' }).tokens;
    const split = await e.score({ userId: 'score-m', prompt: ids.slice(0, 1), text: ids.slice(1), mode: 'memory' }, never());
    expect(split.personalization).toMatchObject({ mode: 'memory', memoryItems: expect.any(Number) });
    const none = await e.score({ userId: 'score-m', text: 'zebra xylophone', mode: 'memory' }, never());
    expect(none.personalization).toMatchObject({ mode: 'vanilla', fallback: { from: 'memory', reason: 'no_memory' } });
  });

  it('token ids score as text does: a text of ids, and a context of ids (a prompt split anywhere), against a full forward pass', async () => {
    const e = f.engine();
    const a = randomStoredAdapter(f.cfg, [0, 1], 2, 62);
    await f.giveAdapter('ids-s', a);
    const text = f.tokenizer.encode(' Fine, thank you.', { parseSpecial: false });
    const asText = await e.score(score('ids-s', { topLogprobs: 2 }), never());
    const asIds = await e.score(score('ids-s', { text, topLogprobs: 2 }), never());
    expect(asIds.tokens).toEqual(asText.tokens);
    expect(asIds.usage).toEqual(asText.usage);
    // The whole prompt as ids, split after its first token: the rest is scored after it.
    const all = [...encodeRequest(ctx(), { prompt: 'Hello, how are you?', maxTokens: 1 }), ...text];
    const split = await e.score({ userId: 'ids-s', prompt: all.slice(0, 1), text: all.slice(1), mode: 'injected' }, never());
    expect(split.usage).toEqual({ contextTokens: 1, scoredTokens: all.length - 1 });
    const mine = await reference(all.slice(0, 1), all.slice(1), a);
    split.tokens.forEach((t, i) => expect(t.logprob).toBeCloseTo(mine[i][all[i + 1]], 4));
    await expect(e.score(score('ids-s', { text: [3, f.cfg.vocabSize + 5] }), never())).rejects.toMatchObject({ code: 'token_out_of_range' });
  });
});

describe('tokenizing for clients (POST /tokenize, /detokenize)', () => {
  it('a prompt as the request feeds it, messages as the chat template renders them, and ids back to text', () => {
    const e = f.engine();
    const tok = f.tokenizer;
    const prompt = 'Hello <|user|> there';
    const t = e.tokenize({ prompt, returnTokenStrings: true });
    // BOS, then the prompt as plain text: a control token typed into a prompt stays characters.
    expect(t.tokens).toEqual([tok.bosId, ...tok.encode(prompt, { parseSpecial: false })]);
    expect(t).toMatchObject({ count: t.tokens.length, maxModelLen: f.cfg.maxPositions });
    expect(t.tokenStrings!.slice(1).join('')).toBe(prompt);
    expect(e.tokenize({ prompt, addSpecialTokens: false }).tokens).toEqual(t.tokens.slice(1));
    expect(e.tokenize({ prompt: '' }).tokens).toEqual([tok.bosId]);
    const messages = [{ role: 'user' as const, content: 'Hi' }];
    const chat = e.tokenize({ messages });
    const open = e.tokenize({ messages, addGenerationPrompt: false });
    expect(chat.tokens).toEqual(encodeRequest({ tokenizer: tok, template: 'memlora', contextTokens: f.cfg.maxPositions }, { messages, maxTokens: 1 }));
    expect(open.count).toBeLessThan(chat.count);
    expect(chat.tokens.slice(0, open.count)).toEqual(open.tokens);
    expect(chat.tokenStrings).toBeNull();
    expect(e.detokenize(t.tokens.slice(1))).toBe(prompt);
    expect(e.detokenize([])).toBe('');
    for (const bad of [f.cfg.vocabSize, -1, 2.5]) {
      expect(() => e.detokenize([5, bad])).toThrow(expect.objectContaining({ code: 'token_out_of_range', details: { tokenId: bad, vocabSize: f.cfg.vocabSize } }));
    }
  });
});

describe('prompts of token ids', () => {
  const ctx = () => ({ tokenizer: f.tokenizer, template: 'memlora' as const, contextTokens: f.cfg.maxPositions });

  it('are fed as they are: the ids /tokenize gives a text generate what the text does, through an adapter too', async () => {
    const e = f.engine();
    await f.giveAdapter('ids-a', randomStoredAdapter(f.cfg, [0, 1], 2, 61));
    const text = 'Hello, how can I help you today?';
    const ids = e.tokenize({ prompt: text }).tokens;
    for (const extra of [{ mode: 'vanilla' as const }, { mode: 'injected' as const }, { mode: 'injected' as const, temperature: 0.9, seed: 4 }]) {
      const [fromText, fromIds] = await Promise.all([e.generate(req('ids-a', { prompt: text, maxTokens: 12, ...extra }), never()), e.generate(req('ids-a', { prompt: ids, maxTokens: 12, ...extra }), never())]);
      expect(fromIds.text).toBe(fromText.text);
      expect(fromIds.usage).toEqual(fromText.usage);
      expect(fromIds.personalization).toEqual(fromText.personalization);
    }
    // Without BOS the model reads something else: the ids are not touched.
    const bare = await e.generate(req('ids-a', { prompt: ids.slice(1), maxTokens: 4, mode: 'vanilla' }), never());
    expect(bare.usage.promptTokens).toBe(ids.length - 1);
  });

  it('memory goes before them after its own BOS, searched with their text; an id outside the vocabulary is refused before queueing', async () => {
    const e = f.engine();
    f.addHistory('ids-m', ['my headache is worse in the morning', 'Dogs need daily walks', 'coffee makes my headache worse']);
    const text = 'what about my headache in the morning?';
    const ids = e.tokenize({ prompt: text }).tokens;
    const r = await e.generate(req('ids-m', { prompt: ids, mode: 'memory', maxTokens: 4 }), never());
    expect(r.personalization).toEqual({ mode: 'memory', adapterVersion: null, memoryItems: 2 });
    const head = encodeRequest(ctx(), { prompt: '', maxTokens: 0 }, ['my headache is worse in the morning', 'coffee makes my headache worse']);
    expect(r.usage.promptTokens).toBe(head.length + ids.length - 1);
    const before = counter('memlora_generate_rejected_total', { code: 'token_out_of_range' });
    const err = await e.generate(req('ids-m', { prompt: [ids[0], f.cfg.vocabSize] }), never()).catch((x: unknown) => x);
    expect(err).toMatchObject({ code: 'token_out_of_range', details: { tokenId: f.cfg.vocabSize, vocabSize: f.cfg.vocabSize } });
    expect(counter('memlora_generate_rejected_total', { code: 'token_out_of_range' })).toBe(before + 1);
    expect(e.queue(10).waiting).toBe(0);
  });
});

describe('metering', () => {
  it('adds every request that ran to its user\'s usage of the day: generations as their usage says, scoring by the scored tokens; a request cancelled while queued costs nothing', async () => {
    const e = f.engine();
    await f.giveAdapter('meter-a', randomStoredAdapter(f.cfg, [0], 2, 95));
    const today = usageDay(Date.now());
    const before = userUsage(f.db, 'meter-a', today, today).total;
    const [g1, g2] = await Promise.all([e.generate(req('meter-a', { maxTokens: 6 }), never()), e.generate(req('meter-a', { maxTokens: 3, mode: 'vanilla' }), never())]);
    const s = await e.score({ userId: 'meter-a', prompt: 'Hi', text: ' there, friend', mode: 'auto' }, never());
    // A comparison through the adapter is two passes: the base model's context and the text again.
    const c = await e.score({ userId: 'meter-a', prompt: 'Hi', text: ' there', mode: 'auto', compare: true }, never());
    expect(c.usage.baseContextTokens).toBe(c.usage.contextTokens);
    const ac = new AbortController();
    ac.abort();
    await expect(e.generate(req('meter-a'), ac.signal)).rejects.toMatchObject({ code: 'cancelled' });
    const after = userUsage(f.db, 'meter-a', today, today).total;
    expect(after).toEqual({
      requests: before.requests + 4,
      promptTokens: before.promptTokens + g1.usage.promptTokens + g2.usage.promptTokens + s.usage.contextTokens + c.usage.contextTokens + c.usage.baseContextTokens!,
      cachedTokens: before.cachedTokens + g1.usage.cachedTokens + g2.usage.cachedTokens,
      completionTokens: before.completionTokens + g1.usage.completionTokens + g2.usage.completionTokens,
      scoredTokens: before.scoredTokens + s.usage.scoredTokens + 2 * c.usage.scoredTokens,
    });
  });
});

describe('daily token quotas', () => {
  it('refuses a user served their quota with quota_exceeded until midnight UTC; their own quota overrides the server\'s, 0 blocks, null restores it', async () => {
    const e = f.engine({ userDailyTokens: 40 });
    for (const id of ['quota-a', 'quota-b']) createUser(f.db, { id });
    const quota = () => e.generate(req('quota-a', { maxTokens: 8, mode: 'vanilla' }), never());
    const before = counter('memlora_generate_rejected_total', { code: 'quota_exceeded' });
    // Requests run until the day's tokens reach 40; the one that crosses it is served whole.
    let served = 0;
    let err: unknown;
    for (let i = 0; i < 10 && !err; i++) {
      try {
        await quota();
        served++;
      } catch (x) {
        err = x;
      }
    }
    const today = usageDay(Date.now());
    const used = tokensUsed(f.db, 'quota-a', today);
    expect(served).toBeGreaterThan(0);
    expect(used).toBeGreaterThanOrEqual(40);
    expect(err).toBeInstanceOf(ServeError);
    const q = err as ServeError;
    expect(q.code).toBe('quota_exceeded');
    expect(q.details).toEqual({ userId: 'quota-a', dailyTokens: 40, usedTokens: used, heldTokens: 0, resetsAt: new Date(usageDayEnd(Date.now())).toISOString() });
    expect(q.retryAfterS).toBeGreaterThan(0);
    expect(q.retryAfterS).toBeLessThanOrEqual(86_400);
    expect(Math.abs(Date.now() + q.retryAfterS! * 1000 - usageDayEnd(Date.now()))).toBeLessThan(2000);
    expect(counter('memlora_generate_rejected_total', { code: 'quota_exceeded' })).toBe(before + 1);
    // Scoring counts against it too; other users are not affected.
    await expect(e.score({ userId: 'quota-a', text: 'hello', mode: 'vanilla' }, never())).rejects.toMatchObject({ code: 'quota_exceeded' });
    await expect(e.generate(req('quota-b', { maxTokens: 2, mode: 'vanilla' }), never())).resolves.toBeDefined();
    // The user's own quota overrides the server's: raised, they are served again; 0 blocks them; null restores the server's.
    setQuota(f.db, 'quota-a', used + 1000);
    await expect(quota()).resolves.toBeDefined();
    setQuota(f.db, 'quota-b', 0);
    await expect(e.generate(req('quota-b', { maxTokens: 2, mode: 'vanilla' }), never())).rejects.toMatchObject({ code: 'quota_exceeded', details: { dailyTokens: 0 } });
    setQuota(f.db, 'quota-a', null);
    await expect(quota()).rejects.toMatchObject({ code: 'quota_exceeded', details: { dailyTokens: 40 } });
    // Without a server quota and no own quota, nobody is limited.
    await expect(f.engine().generate(req('quota-a', { maxTokens: 2, mode: 'vanilla' }), never())).resolves.toBeDefined();
  });

  it('a burst cannot overrun the quota: unfinished requests hold their prompt and reply budget, those past it are refused with a short Retry-After, and the holds are given back', async () => {
    const e = f.engine({ userDailyTokens: 40 });
    createUser(f.db, { id: 'quota-burst' });
    const burst = (n: number) => Promise.allSettled(Array.from({ length: n }, () => e.generate(req('quota-burst', { maxTokens: 8, mode: 'vanilla', ignoreEos: true }), never())));
    const running = burst(10);
    // While they run, the admitted requests hold their tokens (what GET .../quota reports).
    const heldWhileRunning = e.heldTokens('quota-burst');
    const first = await running;
    const served = first.filter((r) => r.status === 'fulfilled').map((r) => (r as PromiseFulfilledResult<ServeResult>).value);
    const refused = first.filter((r) => r.status === 'rejected').map((r) => (r as PromiseRejectedResult).reason as ServeError);
    const hold = served[0].usage.promptTokens + 8;
    // 40 tokens hold for the requests that took them, the last crossing it; the rest were refused while those ran.
    expect(served).toHaveLength(Math.ceil(40 / hold));
    expect(refused).toHaveLength(10 - served.length);
    for (const r of refused) {
      expect(r.code).toBe('quota_exceeded');
      expect(r.details).toMatchObject({ dailyTokens: 40, usedTokens: 0, heldTokens: served.length * hold });
      expect(r.retryAfterS).toBeLessThanOrEqual(60);
    }
    const used = tokensUsed(f.db, 'quota-burst', usageDay(Date.now()));
    expect(used).toBe(served.length * hold);
    expect(heldWhileRunning).toBe(served.length * hold);
    expect(e.heldTokens('quota-burst')).toBe(0);
    expect(used - 40).toBeLessThan(hold);
    // Their holds were given back with their usage metered: now the quota itself refuses, until midnight.
    const [after] = await burst(1);
    expect((after as PromiseRejectedResult).reason).toMatchObject({ code: 'quota_exceeded', details: { usedTokens: used, heldTokens: 0 } });
    expect(Math.abs(Date.now() + (after as PromiseRejectedResult).reason.retryAfterS * 1000 - usageDayEnd(Date.now()))).toBeLessThan(2000);
  });
});
