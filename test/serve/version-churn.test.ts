/**
 * Adapter versions changing under load: users with three versions each (every version forcing its own
 * letter, so a reply says which weights wrote it), a cache with room for two adapters (versions are
 * evicted and read again), requests that name a version or take the active one, while versions are
 * activated, deactivated and deleted (row first, then files and cache, as DELETE .../adapters/{version}
 * does) and the cache is emptied and warmed at random moments (CHURN_SEED picks another run). Every reply must have been written by the
 * version its personalization names, a named version never falls back, refusals carry their codes,
 * a deleted version stays deleted whatever a load found, and nothing is left behind. With prefix
 * caching, chats that go on across swaps (through named versions and the active one) reply exactly
 * as their version does without the cache: no turn reuses another version's keys and values.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { activateAdapterVersion, getActiveAdapter, getAdapterVersion, markAdapterVersionDeleted } from '../../src/db/queries/adapters.js';
import { adapterBytes } from '../../src/lora/adapter.js';
import { adapterKey } from '../../src/lora/cache.js';
import { dropCached } from '../../src/serve/cache-admin.js';
import { ServeError } from '../../src/serve/errors.js';
import { PrefixCache } from '../../src/serve/prefix-cache.js';
import type { ServeRequest, ServeResult } from '../../src/serve/types.js';
import { Rng } from '../../src/util/rng.js';
import { forcingAdapter, makeServeFixture, never, randomStoredAdapter, req, serveConfig, tokenOf, type ServeFixture } from './fixtures.js';

let f: ServeFixture;
const USERS = ['ch-a', 'ch-b', 'ch-c'];
const LETTERS = ['qrs', 'tuv', 'wxy'];
const VERSIONS = [1, 2, 3];
const letterOf = (user: string, version: number): string => LETTERS[USERS.indexOf(user)][version - 1];

beforeAll(async () => {
  // A forcing adapter's size: rank 8 on the last layer, as this one (sizes do not depend on the weights).
  const cfg = serveConfig(256);
  const size = adapterBytes(randomStoredAdapter(cfg, [cfg.nLayers - 1], 1, 1));
  f = makeServeFixture({ maxPositions: 256, cacheBytes: 2 * size + 1024 });
  for (const [i, u] of USERS.entries()) for (const ch of LETTERS[i]) await f.giveAdapter(u, forcingAdapter(f.cfg, f.weights, tokenOf(f.tokenizer, ch)));
  expect(adapterBytes(forcingAdapter(f.cfg, f.weights, tokenOf(f.tokenizer, 'q')))).toBe(size);
  for (const u of USERS) f.addHistory(u, ['Hello there, a history item memory would find']);
});
afterAll(() => f?.cleanup());

type Sent = { user: string; named: number | undefined; result: Promise<ServeResult> };

describe('adapter versions changing under load', () => {
  it('every reply is written by the version its personalization names; named versions never fall back; deleted stays deleted; nothing is left behind', async () => {
    const e = f.engine({ maxBatch: 4, maxQueue: 256 });
    const rng = new Rng(Number(process.env.CHURN_SEED ?? 7));
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rng.uniform() * xs.length)];
    const deleted = new Set<string>();
    const sent: Sent[] = [];
    const warms: Array<Promise<unknown>> = [];
    const tokens = 3;
    for (let step = 0; step < 120; step++) {
      const u = pick(USERS);
      const x = rng.uniform();
      if (x < 0.6) {
        // A request: a named version (sometimes one the user never had) or the active one.
        const named = rng.uniform() < 0.5 ? (rng.uniform() < 0.1 ? 4 : pick(VERSIONS)) : undefined;
        const result = e.generate(req(u, { maxTokens: tokens, mode: named === undefined ? 'injected' : 'auto', adapterVersion: named }), never());
        result.catch(() => {}); // judged below
        sent.push({ user: u, named, result });
      } else if (x < 0.65) {
        // An operator empties the cache (all of it, or one user's; DELETE /v1/admin/cache) or warms users' active versions.
        const y = rng.uniform();
        if (y < 0.3) dropCached(f.cache);
        else if (y < 0.6) dropCached(f.cache, u);
        else warms.push(e.warm([u, pick(USERS)]));
      } else if (x < 0.8) {
        // An operator makes another version serve, or none (a PUT .../adapter).
        const ready = VERSIONS.filter((v) => !deleted.has(`${u}@${v}`) && getAdapterVersion(f.db, u, v)!.status === 'ready');
        activateAdapterVersion(f.db, u, rng.uniform() < 0.15 || ready.length === 0 ? null : pick(ready));
      } else {
        // An operator deletes a version that does not serve: the row first, then its files and cache entry.
        const active = getActiveAdapter(f.db, u)?.version;
        const candidates = VERSIONS.filter((v) => v !== active && !deleted.has(`${u}@${v}`));
        if (candidates.length > 0 && deleted.size < 5) {
          const v = pick(candidates);
          const { row } = markAdapterVersionDeleted(f.db, u, v, 'deleted');
          deleted.add(`${u}@${v}`);
          f.cache.invalidate(adapterKey(u, v));
          await f.store.remove(row.filePath, u);
        }
      }
      if (rng.uniform() < 0.5) await new Promise((r) => setTimeout(r, Math.floor(rng.uniform() * 3)));
    }

    const settled = await Promise.allSettled(sent.map((s) => s.result));
    await Promise.all(warms); // a warm reports what it could not load; it never throws for it
    let named = 0;
    let refused = 0;
    for (const [i, s] of settled.entries()) {
      const { user, named: asked } = sent[i];
      const what = JSON.stringify({ user, asked, s: s.status === 'fulfilled' ? s.value.personalization : String(s.reason) });
      if (s.status === 'rejected') {
        // Only a named version is refused, and only for what its row or files say.
        expect(asked, what).toBeDefined();
        expect(s.reason, what).toBeInstanceOf(ServeError);
        expect(['adapter_not_found', 'adapter_unusable'], what).toContain((s.reason as ServeError).code);
        if (asked === 4) expect((s.reason as ServeError).code, what).toBe('adapter_not_found');
        // A version deleted while the request waited is refused as deleted, not as missing files.
        if (deleted.has(`${user}@${asked}`) && (s.reason as ServeError).code === 'adapter_unusable') {
          expect((s.reason as ServeError).details, what).toMatchObject({ reason: 'deleted' });
        }
        refused++;
        continue;
      }
      const p = s.value.personalization;
      if (asked !== undefined) {
        named++;
        expect(p, what).toEqual({ mode: 'injected', adapterVersion: asked, pinned: true });
      } else {
        expect(p.pinned, what).toBeUndefined();
      }
      if (p.mode === 'injected') expect(s.value.text, what).toBe(letterOf(user, p.adapterVersion!).repeat(tokens));
    }
    // The mix did what it is for: named replies and refusals both happened, and the cache turned over.
    expect(named).toBeGreaterThan(5);
    expect(refused).toBeGreaterThan(0);
    expect(f.cache.counters().evictions).toBeGreaterThan(0);
    // A deleted version stays deleted, whatever a request that had planned it found when loading it.
    for (const key of deleted) {
      const [u, v] = key.split('@');
      expect(getAdapterVersion(f.db, u, Number(v))!.status, key).toBe('deleted');
    }
    expect(e.occupancy).toEqual({ active: 0, waiting: 0 });
    expect(f.cache.stats()).toMatchObject({ pinnedEntries: 0, pinnedBytes: 0, loading: 0 });
    for (const u of USERS) expect(e.heldTokens(u), u).toBe(0);
  });

  it('with prefix caching, chats that go on while versions change reply exactly as the version they name does without the cache', async () => {
    // Random adapters (no forcing): a reply that reused another version's keys and values would differ.
    const users = ['pc-a', 'pc-b'];
    for (const [i, u] of users.entries()) for (const v of VERSIONS) await f.giveAdapter(u, randomStoredAdapter(f.cfg, [i, 1], 1, 300 + 10 * i + v));
    const prefix = new PrefixCache({ maxBytes: 16 * 1024 * 1024, shape: f.model.kvShape, minTokens: 4 });
    const e = f.engine({ maxBatch: 4, maxQueue: 256, prefixCache: prefix });
    const plain = f.engine({ maxBatch: 1 });
    const rng = new Rng(Number(process.env.CHURN_SEED ?? 7));
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rng.uniform() * xs.length)];
    const chats = new Map(users.map((u) => [u, [] as Array<{ role: 'user' | 'assistant'; content: string }>]));
    const QUESTIONS = ['Hello, how are you today?', 'Tell me more about that.', 'What should I do tomorrow?', 'And after that?'];
    const ran: Array<{ r: ServeRequest; result: ServeResult }> = [];
    for (let step = 0; step < 40; step++) {
      const u = pick(users);
      const x = rng.uniform();
      if (x < 0.7) {
        // The user's chat goes on (a new one after four turns), through a named version or the active one.
        const chat = chats.get(u)!;
        if (chat.length >= 8) chat.length = 0;
        chat.push({ role: 'user', content: QUESTIONS[chat.length / 2] });
        const named = rng.uniform() < 0.4 ? pick(VERSIONS) : undefined;
        const r = req(u, { prompt: undefined, messages: [...chat], maxTokens: 6, adapterVersion: named });
        const result = await e.generate(r, never());
        ran.push({ r, result });
        chat.push({ role: 'assistant', content: result.text });
      } else {
        activateAdapterVersion(f.db, u, pick(VERSIONS));
      }
    }
    let reused = 0;
    for (const { r, result } of ran) {
      const p = result.personalization;
      expect(p.mode, JSON.stringify(p)).toBe('injected');
      if (result.usage.cachedTokens > 0) reused++;
      // The same turn without the cache, on the version it was served with.
      const alone = await plain.generate({ ...r, adapterVersion: p.adapterVersion! }, never());
      expect(result.text, JSON.stringify({ user: r.userId, p, cached: result.usage.cachedTokens })).toBe(alone.text);
    }
    expect(reused).toBeGreaterThan(3);
    expect(prefix.stats().retired).toBeGreaterThan(0); // swaps retired conversations on the way
  });
});
