/**
 * The real server (startServer with its default services) over a tiny model directory named by
 * MEMLORA_MODEL_PATH, a real SQLite file and adapter store: readiness, /v1/generate as JSON and SSE,
 * /v1/chat/completions with `user`, 429 with Retry-After past the queue bound, a client disconnect
 * freeing its row, a corrupt adapter, user deletion through the store and cache, an operator's
 * rollback to an older adapter version (and a refused one whose file went bad), cache warming, reading
 * and emptying the cache, and /metrics;
 * then the official OpenAI client, unmodified, against the same server.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import Database from 'better-sqlite3';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { createAdapterVersion } from '../../src/db/queries/adapters.js';
import { memoryLogger } from '../../src/http/logger.js';
import { adapterActivationSchema, adapterDeletionSchema, adapterListSchema, cacheContentsSchema, cacheCurveSchema, cacheDropSchema, chatCompletionChunkSchema, chatCompletionResponseSchema, completionResponseSchema, detokenizeResponseSchema, generateResultSchema, prefixCacheDropSchema, prefixCacheSchema, scoreResultSchema, tokenizeResponseSchema, userUsageSchema, warmResultSchema } from '../../src/http/schemas.js';
import type { Adapter } from '../../src/lora/adapter.js';
import { edgeAtOrAbove } from '../../src/lora/hit-curve.js';
import { AdapterStore } from '../../src/lora/store.js';
import { guideVocabulary } from '../../src/model/guide.js';
import { SchemaGuide } from '../../src/model/schema-guide.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { parseSse } from '../http/fake-generate.js';
import { ADMIN_TOKEN, expectError } from '../http/helpers.js';
import { forcingAdapter, type ModelDir, tokenOf, writeModelDir } from './fixtures.js';

let root: string;
let md: ModelDir;
let server: RunningServer;
let store: AdapterStore;
const logger = memoryLogger();

const post = (path: string, body: unknown, signal?: AbortSignal) =>
  fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal });

async function giveAdapter(userId: string, adapter: Adapter): Promise<string> {
  await fetch(`${server.url}/v1/users/${userId}`, { method: 'PUT' });
  const w = await store.write(userId, adapter);
  createAdapterVersion(server.db, { userId, config: { ...adapter.spec }, filePath: w.path, sha256: w.sha256, metrics: {}, status: 'ready', activate: true });
  return w.path;
}

async function metric(line: string): Promise<number> {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const found = text.split('\n').find((l) => l.startsWith(`${line} `));
  return found ? Number(found.slice(line.length + 1)) : 0;
}

/** Polls /metrics until the sample `line` reaches `atLeast`; `what` names the wait in the failure. */
async function untilMetric(line: string, atLeast: number, what: string): Promise<void> {
  for (let i = 0; (await metric(line)) < atLeast; i++) {
    if (i > 2000) throw new Error(what);
    await new Promise((r) => setTimeout(r, 1));
  }
}

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'memlora-serve-http-'));
  md = writeModelDir(root, 512);
  const config = loadConfig({
    MEMLORA_PORT: '0',
    MEMLORA_DATA_DIR: join(root, 'data'),
    MEMLORA_ADAPTER_DIR: join(root, 'adapters'),
    MEMLORA_MODEL_PATH: md.dir,
    MEMLORA_ADMIN_TOKEN: ADMIN_TOKEN,
    MEMLORA_MAX_QUEUE: '1',
    MEMLORA_MAX_BATCH: '1',
  });
  server = await startServer(config, { handleSignals: false, logger });
  store = new AdapterStore(config.adapterDir, { config: md.cfg, name: basename(md.dir) });
  for (let i = 0; ; i++) {
    const ready = await fetch(`${server.url}/readyz`);
    if (ready.status === 200) break;
    expect(((await ready.json()) as { checks: { model: string } }).checks.model).toBe('loading');
    if (i > 500) throw new Error('model never became ready');
    await new Promise((r) => setTimeout(r, 10));
  }
  await giveAdapter('alice', forcingAdapter(md.cfg, md.weights, tokenOf(md.tokenizer, 'q')));
  await giveAdapter('bob', forcingAdapter(md.cfg, md.weights, tokenOf(md.tokenizer, 'z')));
});

afterAll(async () => {
  await server?.close();
  rmSync(root, { recursive: true, force: true });
});

describe('the real engine behind the HTTP API', () => {
  it('POST /v1/generate answers with the user\'s adapter, as JSON', async () => {
    const res = await post('/v1/generate', { userId: 'alice', prompt: 'Hello', maxTokens: 5 });
    expect(res.status).toBe(200);
    const body = generateResultSchema.parse(await res.json());
    expect(body).toMatchObject({ userId: 'alice', text: 'qqqqq', finishReason: 'length', usage: { completionTokens: 5 }, personalization: { mode: 'injected', adapterVersion: 1 } });
  });

  it('POST /v1/generate streams Server-Sent Events: tokens, then done', async () => {
    const res = await post('/v1/generate', { userId: 'bob', prompt: 'Hello', maxTokens: 6, stream: true });
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const events = parseSse(await res.text());
    expect(events.map((e) => e.event)).toEqual([...Array(6).fill('token'), 'done']);
    expect(events.slice(0, 6).map((e) => JSON.parse(e.data).text).join('')).toBe('zzzzzz');
    const done = generateResultSchema.parse(JSON.parse(events[6].data).result);
    expect(done).toMatchObject({ text: 'zzzzzz', personalization: { mode: 'injected', adapterVersion: 1 } });
  });

  it('POST /v1/chat/completions with `user`, plain and streamed', async () => {
    const res = await post('/v1/chat/completions', { user: 'alice', messages: [{ role: 'user', content: 'Hi there' }], max_tokens: 4 });
    const body = chatCompletionResponseSchema.parse(await res.json());
    expect(body.choices[0].message.content).toBe('qqqq');
    expect(body.usage.completion_tokens).toBe(4);
    expect(body.memlora.personalization).toEqual({ mode: 'injected', adapterVersion: 1 });

    const streamed = await post('/v1/chat/completions', { user: 'bob', messages: [{ role: 'user', content: 'Hi there' }], max_tokens: 3, stream: true });
    const events = parseSse(await streamed.text());
    expect(events[events.length - 1].data).toBe('[DONE]');
    const chunks = events.slice(0, -1).map((e) => chatCompletionChunkSchema.parse(JSON.parse(e.data)));
    expect(chunks.map((c) => c.choices[0]?.delta.content ?? '').join('')).toBe('zzz');
    expect(chunks[chunks.length - 1].memlora?.personalization).toEqual({ mode: 'injected', adapterVersion: 1 });
  });

  it('past MEMLORA_MAX_QUEUE: 429 queue_full with Retry-After; a disconnect frees the row and the queue advances', async () => {
    const cancelled = await metric('memlora_generate_requests_total{mode="injected",finish="cancelled"}');
    const ac = new AbortController();
    // One row (MEMLORA_MAX_BATCH=1): a long stream holds it.
    const long = await post('/v1/generate', { userId: 'alice', prompt: 'Hello', maxTokens: 480, stream: true }, ac.signal);
    const reader = long.body!.getReader();
    await reader.read(); // its first token arrived: it is decoding
    const queued = post('/v1/generate', { userId: 'bob', prompt: 'Hello', maxTokens: 3 });
    // Wait until the second request is queued (MEMLORA_MAX_QUEUE=1), then a third is refused.
    await untilMetric('memlora_generate_queue_depth', 1, 'second request never queued');
    const refused = await post('/v1/generate', { userId: 'bob', prompt: 'Hello', maxTokens: 3 });
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('queue_full');
    ac.abort(); // the client of the long stream goes away
    const second = await queued;
    expect(second.status).toBe(200);
    expect(((await second.json()) as { text: string }).text).toBe('zzz');
    expect(await metric('memlora_generate_requests_total{mode="injected",finish="cancelled"}')).toBe(cancelled + 1);
  });

  it('a corrupt adapter: served by the fallback, quarantined, logged; other users unaffected', async () => {
    const path = await giveAdapter('carol', forcingAdapter(md.cfg, md.weights, tokenOf(md.tokenizer, 'x')));
    const file = join(root, 'adapters', path, 'adapter_model.safetensors');
    const bytes = readFileSync(file);
    bytes[bytes.length - 1] ^= 0x55;
    writeFileSync(file, bytes);
    const carol = (await (await post('/v1/generate', { userId: 'carol', prompt: 'Hello', maxTokens: 3 })).json()) as Record<string, any>;
    expect(carol.personalization).toEqual({ mode: 'vanilla', adapterVersion: null, fallback: { from: 'injected', reason: 'adapter_corrupt' } });
    expect(existsSync(join(root, 'adapters', path))).toBe(false);
    expect(logger.lines.some((l) => l.level === 'error' && l.fields.userId === 'carol')).toBe(true);
    const adapter = (await fetch(`${server.url}/v1/users/carol/adapter`)).status;
    expect(adapter).toBe(404); // no active version any more
    const bob = (await (await post('/v1/generate', { userId: 'bob', prompt: 'Hello', maxTokens: 3 })).json()) as Record<string, any>;
    expect(bob.text).toBe('zzz');
  });

  it('deleting a user removes their adapter files through the store and forgets them in the cache', async () => {
    const path = await giveAdapter('dave', forcingAdapter(md.cfg, md.weights, tokenOf(md.tokenizer, 'k')));
    expect(((await (await post('/v1/generate', { userId: 'dave', prompt: 'Hello', maxTokens: 2 })).json()) as { text: string }).text).toBe('kk');
    const del = await fetch(`${server.url}/v1/users/dave`, { method: 'DELETE' });
    expect(del.status).toBe(200);
    const removed = ((await del.json()) as { removed: { adapterFiles: number; adapterBytes: number } }).removed;
    expect(removed.adapterFiles).toBe(3);
    expect(removed.adapterBytes).toBeGreaterThan(0);
    expect(existsSync(join(root, 'adapters', path.split('/')[0]))).toBe(false);
    await fetch(`${server.url}/v1/users/dave`, { method: 'PUT' });
    const again = (await (await post('/v1/generate', { userId: 'dave', prompt: 'Hello', maxTokens: 2 })).json()) as Record<string, any>;
    expect(again.personalization).toEqual({ mode: 'vanilla', adapterVersion: null });
  });

  it('an operator rolls a user back to an older version, then to none; a version whose file went bad is refused and quarantined; an old version is deleted', async () => {
    const activate = (userId: string, version: number | null) =>
      fetch(`${server.url}/v1/admin/users/${userId}/adapter`, { method: 'PUT', headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_TOKEN}` }, body: JSON.stringify({ version }) });
    const reply = async (maxTokens = 3) => (await (await post('/v1/generate', { userId: 'erin', prompt: 'Hello', maxTokens })).json()) as Record<string, any>;
    const versions = async () => adapterListSchema.parse(await (await fetch(`${server.url}/v1/users/erin/adapters`)).json()).items.map((a) => [a.version, a.status, a.active]);
    const v1Path = await giveAdapter('erin', forcingAdapter(md.cfg, md.weights, tokenOf(md.tokenizer, 'q')));
    const v2 = await giveAdapter('erin', forcingAdapter(md.cfg, md.weights, tokenOf(md.tokenizer, 'z')));
    expect(await reply()).toMatchObject({ text: 'zzz', personalization: { mode: 'injected', adapterVersion: 2 } });
    expect(await versions()).toEqual([[2, 'ready', true], [1, 'ready', false]]);

    // Roll back: the next request is served by version 1, without a restart.
    const back = await activate('erin', 1);
    expect(back.status).toBe(200);
    expect(adapterActivationSchema.parse(await back.json())).toMatchObject({ userId: 'erin', active: { version: 1, active: true }, previousVersion: 2 });
    expect(await reply()).toMatchObject({ text: 'qqq', personalization: { mode: 'injected', adapterVersion: 1 } });
    // None: served without an adapter; asked for injected, the fallback says why.
    expect(adapterActivationSchema.parse(await (await activate('erin', null)).json())).toMatchObject({ active: null, previousVersion: 1 });
    const plain = (await (await post('/v1/generate', { userId: 'erin', prompt: 'Hello', maxTokens: 3, mode: 'injected' })).json()) as Record<string, any>;
    expect(plain.personalization).toEqual({ mode: 'vanilla', adapterVersion: null, fallback: { from: 'injected', reason: 'no_adapter' } });

    // Version 2 was loaded and verified when it served; its file goes bad on disk since. Activation
    // reads it again, checksum and all: refused, quarantined, and the user stays without an adapter.
    const file = join(root, 'adapters', v2, 'adapter_model.safetensors');
    const bytes = readFileSync(file);
    bytes[bytes.length - 1] ^= 0x55;
    writeFileSync(file, bytes);
    const refused = await activate('erin', 2);
    expect(refused.status).toBe(409);
    expect(((await refused.json()) as { error: { code: string; details: { reason: string } } }).error).toMatchObject({ code: 'adapter_unusable', details: { reason: 'adapter_corrupt' } });
    expect(existsSync(join(root, 'adapters', v2))).toBe(false);
    expect(await versions()).toEqual([[2, 'quarantined', false], [1, 'ready', false]]);
    expect((await fetch(`${server.url}/v1/users/erin/adapter`)).status).toBe(404);
    const again = await activate('erin', 2);
    expect(((await again.json()) as { error: { code: string; details: { reason: string } } }).error).toMatchObject({ code: 'adapter_unusable', details: { reason: 'quarantined' } });

    // Forward again to a good version: served at once.
    expect((await activate('erin', 1)).status).toBe(200);
    expect(await reply(2)).toMatchObject({ text: 'qq', personalization: { mode: 'injected', adapterVersion: 1 } });

    // Pruning: the serving version is refused; once switched off, its files leave the store and the
    // cache, and the user is served without it.
    const del = (version: number) => fetch(`${server.url}/v1/admin/users/erin/adapters/${version}`, { method: 'DELETE', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect((await del(1)).status).toBe(409);
    expect((await activate('erin', null)).status).toBe(200);
    const v1 = (await versions()).find(([v]) => v === 1);
    expect(v1).toEqual([1, 'ready', false]);
    const pruned = adapterDeletionSchema.parse(await (await del(1)).json());
    expect(pruned.removed.files).toBe(3);
    expect(existsSync(join(root, 'adapters', v1Path))).toBe(false);
    expect(await versions()).toEqual([[2, 'quarantined', false], [1, 'deleted', false]]);
    expect((await activate('erin', 1)).status).toBe(409);
    // The quarantined version: its files were moved aside already, so nothing is removed here.
    const quarantined = adapterDeletionSchema.parse(await (await del(2)).json());
    expect(quarantined).toMatchObject({ adapter: { version: 2, status: 'deleted' }, removed: { files: 0, bytes: 0 } });
  });

  it('POST /v1/admin/cache/warm loads adapters ahead of requests: the first request is a cache hit', async () => {
    await giveAdapter('gus', forcingAdapter(md.cfg, md.weights, tokenOf(md.tokenizer, 'k')));
    const bad = await giveAdapter('hal', forcingAdapter(md.cfg, md.weights, tokenOf(md.tokenizer, 'x')));
    const file = join(root, 'adapters', bad, 'adapter_model.safetensors');
    const bytes = readFileSync(file);
    bytes[bytes.length - 1] ^= 0x55;
    writeFileSync(file, bytes);
    const loads = await metric('memlora_adapter_cache_loads_total');
    const res = await fetch(`${server.url}/v1/admin/cache/warm`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_TOKEN}` },
      body: JSON.stringify({ userIds: ['gus', 'alice', 'dave', 'nobody', 'hal', 'gus'] }),
    });
    expect(res.status).toBe(200);
    const body = warmResultSchema.parse(await res.json());
    expect(body.results).toEqual([
      { userId: 'gus', outcome: 'loaded', version: 1, resident: true },
      { userId: 'alice', outcome: 'cached', version: 1, resident: true },
      { userId: 'dave', outcome: 'no_adapter', version: null, resident: false },
      { userId: 'nobody', outcome: 'unknown_user', version: null, resident: false },
      { userId: 'hal', outcome: 'failed', version: 1, reason: 'adapter_corrupt', resident: false },
    ]);
    expect(body.counts).toEqual({ loaded: 1, cached: 1, no_adapter: 1, unknown_user: 1, failed: 1 });
    expect(body.cache.entries).toBeGreaterThanOrEqual(2);
    expect(body.cache.bytes).toBeLessThanOrEqual(body.cache.maxBytes);
    expect(await metric('memlora_adapter_cache_loads_total')).toBe(loads + 2); // gus, and hal's failed load
    expect((await fetch(`${server.url}/v1/users/hal/adapter`)).status).toBe(404); // quarantined, as a request's load would
    // gus's first request: served by the warmed adapter, nothing read from disk.
    const hits = await metric('memlora_adapter_cache_hits_total');
    const gus = (await (await post('/v1/generate', { userId: 'gus', prompt: 'Hello', maxTokens: 2 })).json()) as Record<string, any>;
    expect(gus).toMatchObject({ text: 'kk', personalization: { mode: 'injected', adapterVersion: 1 } });
    expect(await metric('memlora_adapter_cache_loads_total')).toBe(loads + 2);
    expect(await metric('memlora_adapter_cache_hits_total')).toBe(hits + 1);
  });

  it('GET and DELETE /v1/admin/cache, GET /v1/admin/cache/curve: an operator reads the cache, empties it without a restart, and reads its hit rate by size', async () => {
    const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };
    const cacheReq = (query = '', method = 'GET') => fetch(`${server.url}/v1/admin/cache${query}`, { method, headers: admin });
    await post('/v1/generate', { userId: 'alice', prompt: 'Hello', maxTokens: 1 }); // alice most recently used
    const read = cacheContentsSchema.parse(await (await cacheReq()).json());
    expect(read.adapters[0]).toMatchObject({ userId: 'alice', version: 1, leases: 0 });
    expect(read.adapters.map((a) => a.userId)).toContain('gus');
    expect(read.cache.entries).toBe(read.adapters.length);
    expect(read.cache.bytes).toBe(read.adapters.reduce((n, a) => n + a.bytes, 0));
    expect(read.counters.hits).toBe(await metric('memlora_adapter_cache_hits_total'));
    expect(read.counters.loads).toBe(await metric('memlora_adapter_cache_loads_total'));
    expect(read.counters.hitRate).toBeCloseTo(read.counters.hits / (read.counters.hits + read.counters.misses), 12);
    const one = cacheContentsSchema.parse(await (await cacheReq('?limit=1')).json());
    expect(one.adapters).toEqual(read.adapters.slice(0, 1));
    expect(one.truncated).toBe(read.adapters.length > 1);
    expect((await cacheReq('?limit=0')).status).toBe(422);
    expect((await fetch(`${server.url}/v1/admin/cache`)).status).toBe(401);

    // One user dropped: the others stay, and that user's next request reads the disk once more.
    const gusBytes = read.adapters.find((a) => a.userId === 'gus')!.bytes;
    const dropGus = cacheDropSchema.parse(await (await cacheReq('?userId=gus', 'DELETE')).json());
    expect(dropGus.dropped).toEqual({ adapters: 1, bytes: gusBytes, leased: 0 });
    expect(dropGus.cache.entries).toBe(read.cache.entries - 1);
    expect((await cacheReq('?userId=nobody', 'DELETE')).status).toBe(404);
    expect((await cacheReq('?userId=a%20b', 'DELETE')).status).toBe(422);
    const loads = await metric('memlora_adapter_cache_loads_total');
    const gus = (await (await post('/v1/generate', { userId: 'gus', prompt: 'Hello', maxTokens: 2 })).json()) as Record<string, any>;
    expect(gus).toMatchObject({ text: 'kk', personalization: { mode: 'injected', adapterVersion: 1 } });
    expect(await metric('memlora_adapter_cache_loads_total')).toBe(loads + 1);

    // Everything dropped: a cold cache, and replies unchanged once reloaded.
    const all = cacheDropSchema.parse(await (await cacheReq('', 'DELETE')).json());
    expect(all.dropped.adapters).toBe(read.cache.entries);
    expect(all.cache).toMatchObject({ bytes: 0, entries: 0, leasedEntries: 0 });
    expect(cacheContentsSchema.parse(await (await cacheReq()).json()).adapters).toEqual([]);
    const alice = (await (await post('/v1/generate', { userId: 'alice', prompt: 'Hello', maxTokens: 2 })).json()) as Record<string, any>;
    expect(alice).toMatchObject({ text: 'qq', personalization: { mode: 'injected', adapterVersion: 1 } });
    expect(await metric('memlora_adapter_cache_loads_total')).toBe(loads + 2);

    // The hit curve restarted with the drop: alice's lookup was cold; bob's too; alice again hits in
    // any LRU holding both adapters.
    await post('/v1/generate', { userId: 'bob', prompt: 'Hello', maxTokens: 1 });
    await post('/v1/generate', { userId: 'alice', prompt: 'Hello', maxTokens: 1 });
    const sizes = new Map(cacheContentsSchema.parse(await (await cacheReq()).json()).adapters.map((a) => [a.userId, a.bytes]));
    const curveRes = await cacheReq('/curve');
    expect(curveRes.status).toBe(200);
    const curve = cacheCurveSchema.parse(await curveRes.json());
    expect(Date.parse(curve.since)).toBeGreaterThan(Date.now() - 60_000);
    expect(curve).toMatchObject({ lookups: 3, coldLookups: 2, maxBytes: read.cache.maxBytes });
    expect(curve.points).toEqual([{ bytes: edgeAtOrAbove(sizes.get('alice')! + sizes.get('bob')!), hitRate: 1 / 3 }]);
    expect(curve.bestHitRate).toBeCloseTo(1 / 3, 12);
    expect(curve.hitRateAtMaxBytes).toBeCloseTo(1 / 3, 12); // the configured cache holds both
    expect(curve.sizeFor.find((t) => t.hitRate === 0.5)!.bytes).toBeNull();
    const svg = await cacheReq('/curve?format=svg');
    expect(svg.headers.get('content-type')).toMatch(/^image\/svg\+xml/);
    expect(await svg.text()).toMatch(/^<\?xml[\s\S]*<svg[\s\S]*configured, [\d.]+ MiB[\s\S]*<\/svg>\s*$/);
    expect((await cacheReq('/curve?format=png')).status).toBe(422);
  });

  it('POST /v1/score: a text under the user\'s model and the base model beside it; bad bodies are 422, unknown users 404', async () => {
    const res = await post('/v1/score', { userId: 'alice', messages: [{ role: 'user', content: 'Hello' }], text: 'qqqq', compare: true, topLogprobs: 1 });
    expect(res.status).toBe(200);
    const r = scoreResultSchema.parse(await res.json());
    expect(r.personalization).toEqual({ mode: 'injected', adapterVersion: 1 });
    expect(r.tokens.map((t) => t.token)).toEqual(['q', 'q', 'q', 'q']);
    // alice's adapter forces 'q': her model finds the text likely, the base model does not.
    expect(r.meanLogprob).toBeGreaterThan(Math.log(0.5));
    expect(r.tokens.every((t) => t.top[0].token === 'q')).toBe(true);
    expect(r.base!.meanLogprob).toBeLessThan(r.meanLogprob - 1);
    expect(r.usage.scoredTokens).toBe(4);
    const bob = scoreResultSchema.parse(await (await post('/v1/score', { userId: 'bob', text: 'qqqq' })).json());
    expect(bob.logprob).toBeLessThan(r.logprob);
    expect(bob.base).toBeUndefined();
    await expectError(await post('/v1/score', { userId: 'alice', prompt: 'a', messages: [{ role: 'user', content: 'b' }], text: 'q' }), 422, 'validation_failed');
    await expectError(await post('/v1/score', { userId: 'alice', text: '' }), 422, 'validation_failed');
    await expectError(await post('/v1/score', { userId: 'alice', text: 'q'.repeat(600) }), 422, 'prompt_too_long');
    await expectError(await post('/v1/score', { userId: 'nobody', text: 'q' }), 404, 'user_not_found');
  });

  it('POST /tokenize counts a prompt as /v1/generate does; POST /detokenize reads its tokens back', async () => {
    const prompt = 'Hello, how are you today?';
    const t = tokenizeResponseSchema.parse(await (await post('/tokenize', { prompt, return_token_strs: true })).json());
    const served = generateResultSchema.parse(await (await post('/v1/generate', { userId: 'bob', prompt, maxTokens: 2, mode: 'vanilla' })).json());
    expect(t.count).toBe(served.usage.promptTokens);
    expect(t.tokens).toHaveLength(t.count);
    expect(t.max_model_len).toBe(md.cfg.maxPositions);
    expect(t.token_strs!.slice(1).join('')).toBe(prompt); // BOS first, then the prompt's pieces
    const chat = [{ role: 'user', content: 'Hello' }];
    const m = tokenizeResponseSchema.parse(await (await post('/tokenize', { messages: chat })).json());
    const chatServed = generateResultSchema.parse(await (await post('/v1/generate', { userId: 'bob', messages: chat, maxTokens: 2, mode: 'vanilla' })).json());
    expect(m.count).toBe(chatServed.usage.promptTokens);
    // A prefilled reply: /tokenize counts it as the chat completion that continues it does.
    const prefilled = [...chat, { role: 'assistant', content: 'qq' }];
    const open = tokenizeResponseSchema.parse(await (await post('/tokenize', { messages: prefilled, continue_final_message: true })).json());
    const continued = chatCompletionResponseSchema.parse(await (await post('/v1/chat/completions', { user: 'alice', messages: prefilled, continue_final_message: true, add_generation_prompt: false, max_tokens: 3 })).json());
    expect(continued.usage.prompt_tokens).toBe(open.count);
    expect(continued.choices[0].message.content).toBe('qqq'); // alice's adapter goes on with q
    // vLLM's echo: the whole message, the prefilled part and its continuation.
    const whole = chatCompletionResponseSchema.parse(await (await post('/v1/chat/completions', { user: 'alice', messages: prefilled, continue_final_message: true, add_generation_prompt: false, max_tokens: 3, echo: true })).json());
    expect(whole.choices[0].message.content).toBe('qqqqq');
    expect(whole.usage).toEqual(continued.usage);
    const back = detokenizeResponseSchema.parse(await (await post('/detokenize', { tokens: t.tokens.slice(1) })).json());
    expect(back.prompt).toBe(prompt);
    const err = await expectError(await post('/detokenize', { tokens: [1, md.cfg.vocabSize] }), 422, 'token_out_of_range');
    expect(err.details).toEqual({ tokenId: md.cfg.vocabSize, vocabSize: md.cfg.vocabSize });
  });

  it('GET /v1/admin/users/{userId}/usage meters what the engine served the user today', async () => {
    const usage = async () => userUsageSchema.parse(await (await fetch(`${server.url}/v1/admin/users/bob/usage`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).json()).total;
    const before = await usage();
    const r = generateResultSchema.parse(await (await post('/v1/generate', { userId: 'bob', prompt: 'Hello there', maxTokens: 5 })).json());
    const c = chatCompletionResponseSchema.parse(await (await post('/v1/chat/completions', { user: 'bob', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 4 })).json());
    expect(await usage()).toEqual({
      requests: before.requests + 2,
      promptTokens: before.promptTokens + r.usage.promptTokens + c.usage.prompt_tokens,
      cachedTokens: before.cachedTokens + r.usage.cachedTokens + c.usage.prompt_tokens_details.cached_tokens,
      completionTokens: before.completionTokens + r.usage.completionTokens + c.usage.completion_tokens,
      scoredTokens: before.scoredTokens,
    });
  });

  it('/metrics carries the engine and the adapter cache', async () => {
    const text = await (await fetch(`${server.url}/metrics`)).text();
    for (const name of ['memlora_generate_tokens_total', 'memlora_generate_batch_rows_bucket', 'memlora_generate_ttft_seconds_bucket', 'memlora_generate_request_seconds_bucket', 'memlora_adapter_cache_hits_total', 'memlora_adapter_cache_load_seconds_bucket', 'memlora_adapter_cache_curve_hit_rate', 'memlora_adapter_cache_curve_size_bytes{hit_rate="0.9"}']) {
      expect(text).toContain(name);
    }
    expect(await metric('memlora_adapter_cache_loads_total')).toBeGreaterThanOrEqual(2);
  });

  it('a prompt or a scoring request longer than MEMLORA_PREFILL_CHUNK (default 128 tokens) is read a chunk at a time, through the user\'s adapter', async () => {
    const before = await metric('memlora_generate_prefill_chunks_total');
    const prompt = Array.from({ length: 40 }, (_, i) => `Line ${i} of a long letter about the harbour.`).join(' ');
    const res = await post('/v1/generate', { userId: 'alice', prompt, maxTokens: 4, truncatePromptTokens: 400 });
    expect(res.status).toBe(200);
    const body = generateResultSchema.parse(await res.json());
    expect(body).toMatchObject({ text: 'qqqq', personalization: { mode: 'injected' } });
    expect(body.usage.promptTokens).toBe(400);
    expect((await metric('memlora_generate_prefill_chunks_total')) - before).toBe(Math.ceil(400 / 128));

    // A scoring request past the chunk: each pass read a chunk at a time; alice's model finds her q's likely, the base model does not.
    const scoredBefore = await metric('memlora_generate_prefill_chunks_total');
    const long = Array.from({ length: 12 }, (_, i) => `Line ${i} of a long letter about the harbour.`).join(' ');
    const res2 = await post('/v1/score', { userId: 'alice', prompt: long, text: 'qqqq', compare: true });
    expect(res2.status).toBe(200);
    const r = scoreResultSchema.parse(await res2.json());
    const n = r.usage.contextTokens + r.usage.scoredTokens;
    expect(n).toBeGreaterThan(128);
    expect((await metric('memlora_generate_prefill_chunks_total')) - scoredBefore).toBe(2 * Math.ceil(n / 128));
    expect(r.tokens.map((t) => t.token)).toEqual(['q', 'q', 'q', 'q']);
    expect(r.base!.meanLogprob).toBeLessThan(r.meanLogprob - 1);
  });
});

/** The one call of a completion that called quote, its arguments a text within quote's 8 characters; finish tool_calls, no content. */
function quoteCall(r: OpenAI.ChatCompletion): OpenAI.ChatCompletionMessageFunctionToolCall {
  expect(r.choices[0].finish_reason).toBe('tool_calls');
  expect(r.choices[0].message.content).toBeNull();
  const call = r.choices[0].message.tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall;
  expect(call.function.name).toBe('quote');
  const args = JSON.parse(call.function.arguments) as { text: string };
  expect(Object.keys(args)).toEqual(['text']);
  expect([...args.text].length).toBeLessThanOrEqual(8);
  return call;
}

/** Two tools: zoom (a level 1-3) and quote (a text of at most 8 characters); alice's adapter favours q, bob's z. */
const ZOOM_AND_QUOTE: OpenAI.ChatCompletionTool[] = [
  { type: 'function', function: { name: 'zoom', parameters: { type: 'object', properties: { level: { type: 'integer', minimum: 1, maximum: 3 } }, required: ['level'] } } },
  { type: 'function', function: { name: 'quote', parameters: { type: 'object', properties: { text: { type: 'string', maxLength: 8 } }, required: ['text'] } } },
];

describe('the official OpenAI client, unmodified, against the real server', () => {
  let openai: OpenAI;
  beforeAll(() => {
    openai = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'not-checked', maxRetries: 0 });
  });
  const hello = [{ role: 'user' as const, content: 'Hello' }];

  it('models.list() and models.retrieve() find the served model', async () => {
    const ids: string[] = [];
    for await (const m of openai.models.list()) ids.push(m.id);
    expect(ids).toEqual(['memlora']);
    expect((await openai.models.retrieve('memlora')).id).toBe('memlora');
  });

  it('chat.completions.create answers each `user` through their own adapter', async () => {
    for (const [user, ch] of [['alice', 'q'], ['bob', 'z']] as const) {
      const r = await openai.chat.completions.create({ model: 'memlora', user, messages: hello, max_tokens: 5 });
      expect(r.choices[0].message.content).toBe(ch.repeat(5));
      expect(r.choices[0].finish_reason).toBe('length');
      expect(r.usage?.completion_tokens).toBe(5);
      expect((r as unknown as { memlora: { personalization: unknown } }).memlora.personalization).toEqual({ mode: 'injected', adapterVersion: 1 });
    }
  });

  it('streams with stream_options.include_usage: the deltas make the reply, the last chunk carries usage', async () => {
    const stream = await openai.chat.completions.create({ model: 'memlora', user: 'alice', messages: hello, max_tokens: 4, stream: true, stream_options: { include_usage: true } });
    let text = '';
    const finish: Array<string | null> = [];
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) {
      for (const c of chunk.choices) {
        text += c.delta.content ?? '';
        finish.push(c.finish_reason);
      }
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toBe('qqqq');
    expect(finish.filter((f) => f !== null)).toEqual(['length']);
    expect(usage).toMatchObject({ completion_tokens: 4 });
  });

  it('responses.create (the Responses API): each user through their own adapter, plain and streamed as typed events; text.format json_schema guides the answer', async () => {
    for (const [user, ch] of [['alice', 'q'], ['bob', 'z']] as const) {
      const r = await openai.responses.create({ model: `memlora:${user}`, instructions: 'Be brief.', input: 'Hello', max_output_tokens: 5 });
      expect(r.output_text).toBe(ch.repeat(5));
      expect(r.status).toBe('incomplete');
      expect(r.incomplete_details?.reason).toBe('max_output_tokens');
      expect(r.usage?.output_tokens).toBe(5);
      expect((r as unknown as { memlora: { personalization: unknown } }).memlora.personalization).toEqual({ mode: 'injected', adapterVersion: 1 });
    }
    const stream = await openai.responses.create({ model: 'memlora', user: 'alice', input: [{ role: 'user', content: 'Hello' }], max_output_tokens: 4, stream: true });
    const types: string[] = [];
    let text = '';
    let last: OpenAI.Responses.Response | undefined;
    for await (const ev of stream) {
      types.push(ev.type);
      if (ev.type === 'response.output_text.delta') text += ev.delta;
      if (ev.type === 'response.incomplete' || ev.type === 'response.completed') last = ev.response;
    }
    expect(text).toBe('qqqq');
    expect(types[0]).toBe('response.created');
    expect(types.at(-1)).toBe('response.incomplete');
    expect(last?.output_text ?? (last?.output[0] as { content: Array<{ text: string }> } | undefined)?.content[0].text).toBe('qqqq');
    const schema = { type: 'object', properties: { word: { enum: ['zebra', 'quiet', 'hello'] } }, required: ['word'], additionalProperties: false };
    const picked = await openai.responses.create({ model: 'memlora:bob', input: 'Pick one.', max_output_tokens: 100, text: { format: { type: 'json_schema', name: 'pick', schema, strict: true } } });
    expect(picked.status).toBe('completed');
    expect(JSON.parse(picked.output_text)).toEqual({ word: 'zebra' });
    // Log-probabilities of the output text: each token with its two likeliest alternatives, the greedy pick first among them.
    const scored = await openai.responses.create({ model: 'memlora:alice', input: 'Hello', max_output_tokens: 3, include: ['message.output_text.logprobs'], top_logprobs: 2 });
    const part = (scored.output[0] as OpenAI.Responses.ResponseOutputMessage).content[0] as OpenAI.Responses.ResponseOutputText;
    expect(part.logprobs!.map((l) => l.token)).toEqual(['q', 'q', 'q']);
    for (const l of part.logprobs!) {
      expect(l.logprob).toBeLessThanOrEqual(0);
      expect(l.top_logprobs.map((t) => t.token)[0]).toBe('q');
      expect(l.top_logprobs).toHaveLength(2);
    }
    // Function tools, in the Responses API's flat form: each user calls the tool of their letter, with arguments of its parameters.
    const tools: OpenAI.Responses.FunctionTool[] = ZOOM_AND_QUOTE.map((t) => ({ type: 'function', name: (t as OpenAI.ChatCompletionFunctionTool).function.name, parameters: (t as OpenAI.ChatCompletionFunctionTool).function.parameters ?? null, strict: false }));
    for (const [user, name] of [['alice', 'quote'], ['bob', 'zoom']] as const) {
      const called = await openai.responses.create({ model: `memlora:${user}`, input: 'Hello', max_output_tokens: 200, tools, tool_choice: 'required' });
      expect(called.status).toBe('completed');
      const calls = called.output.filter((o): o is OpenAI.Responses.ResponseFunctionToolCall => o.type === 'function_call');
      expect(calls.length).toBeGreaterThan(0);
      expect(calls[0].name).toBe(name);
      const args = JSON.parse(calls[0].arguments) as Record<string, unknown>;
      if (name === 'quote') expect([...(args.text as string)].length).toBeLessThanOrEqual(8);
      else expect([1, 2, 3]).toContain(args.level);
      // The call's output sent back: the next turn reads it and answers in text.
      const next = await openai.responses.create({
        model: `memlora:${user}`,
        max_output_tokens: 4,
        tools,
        tool_choice: 'none',
        input: [{ role: 'user', content: 'Hello' }, { type: 'function_call', call_id: calls[0].call_id, name, arguments: calls[0].arguments }, { type: 'function_call_output', call_id: calls[0].call_id, output: 'done' }],
      });
      expect(next.output_text).toBe((user === 'alice' ? 'q' : 'z').repeat(4));
    }
  });

  it('stored responses through OpenAI\'s client: previous_response_id continues a conversation exactly as sending it whole; retrieve, inputItems.list and delete', async () => {
    // The base model (mode vanilla), whose reply depends on the whole conversation.
    const vanilla = { mode: 'vanilla' } as Record<string, unknown>;
    const first = await openai.responses.create({ model: 'memlora:alice', instructions: 'Be brief.', input: 'Once upon a time', max_output_tokens: 6, ...vanilla });
    const stored = (r: OpenAI.Responses.Response) => (r as unknown as { store: boolean }).store;
    expect(stored(first)).toBe(true);
    const next = await openai.responses.create({ model: 'memlora:alice', previous_response_id: first.id, input: 'Then', max_output_tokens: 6, ...vanilla });
    const whole = await openai.responses.create({
      model: 'memlora:alice',
      input: [{ role: 'user', content: 'Once upon a time' }, { role: 'assistant', content: first.output_text }, { role: 'user', content: 'Then' }],
      max_output_tokens: 6,
      store: false,
      ...vanilla,
    });
    expect(next.previous_response_id).toBe(first.id);
    expect(next.output_text).toBe(whole.output_text);
    // Counted ahead (responses.inputTokens.count): what the response then read.
    const counted = await openai.responses.inputTokens.count({ model: 'memlora:alice', previous_response_id: first.id, input: 'Then', ...vanilla });
    expect(counted).toEqual({ object: 'response.input_tokens', input_tokens: next.usage?.input_tokens });
    expect(next.usage?.input_tokens).toBe(whole.usage?.input_tokens);
    expect(stored(whole)).toBe(false);
    // Read back as answered; the conversation as items, oldest first with order asc.
    const read = await openai.responses.retrieve(next.id);
    expect(read.output_text).toBe(next.output_text);
    const items = [];
    for await (const item of openai.responses.inputItems.list(next.id, { order: 'asc', limit: 2 })) items.push(item);
    expect(items.map((i) => (i.type === 'message' ? [i.role, (i.content[0] as { text: string }).text] : i.type))).toEqual([
      ['user', 'Once upon a time'],
      ['assistant', first.output_text],
      ['user', 'Then'],
    ]);
    expect(await openai.responses.delete(first.id)).toMatchObject({ id: first.id, object: 'response', deleted: true });
    await expect(openai.responses.retrieve(first.id)).rejects.toMatchObject({ status: 404 });
    // Another user cannot continue alice's conversation.
    await expect(openai.responses.create({ model: 'memlora:bob', previous_response_id: next.id, input: 'x', max_output_tokens: 2 })).rejects.toMatchObject({ status: 404 });
    // A conversation past the context window: 422 prompt_too_long as sent, served with truncation auto (its oldest items dropped, the reply's budget kept).
    const window = ((await (await post('/tokenize', { prompt: 'x' })).json()) as { max_model_len: number }).max_model_len;
    const longInput = Array.from({ length: 60 }, (_, i) => ({ role: 'user' as const, content: `line ${i} `.repeat(12) }));
    await expect(openai.responses.create({ model: 'memlora:alice', input: longInput, max_output_tokens: 4 })).rejects.toMatchObject({ status: 422, code: 'prompt_too_long' });
    const cut = await openai.responses.create({ model: 'memlora:alice', input: longInput, max_output_tokens: 4, truncation: 'auto' });
    expect(cut.usage!.input_tokens + 4).toBeLessThanOrEqual(window);
    const kept = [];
    for await (const item of openai.responses.inputItems.list(cut.id, { order: 'asc' })) kept.push(item);
    expect(kept.length).toBeGreaterThan(0);
    expect(kept.length).toBeLessThan(60);
    // No more dropped than needed: with one more of the oldest items the prompt and the reply would not fit.
    const count = async (messages: unknown[]) => ((await (await post('/tokenize', { messages })).json()) as { count: number }).count;
    expect(await count(longInput.slice(60 - kept.length))).toBe(cut.usage!.input_tokens);
    expect((await count(longInput.slice(60 - kept.length - 1))) + 4).toBeGreaterThan(window);
    expect(((kept.at(-1) as { content: Array<{ text: string }> }).content[0]).text).toBe(longInput[59].content);
  });

  it('background responses through OpenAI\'s client: polled to the reply the foreground gives; streamed, resumed from a sequence number after the reader left, and cancelled mid-run', async () => {
    const foreground = await openai.responses.create({ model: 'memlora:bob', input: 'Hello', max_output_tokens: 5 });
    const queued = await openai.responses.create({ model: 'memlora:bob', input: 'Hello', max_output_tokens: 5, background: true });
    expect(queued.status).toBe('queued');
    let polled = queued;
    for (let i = 0; polled.status === 'queued' || polled.status === 'in_progress'; i++) {
      if (i > 2000) throw new Error('the background response never finished');
      await new Promise((r) => setTimeout(r, 2));
      polled = await openai.responses.retrieve(queued.id);
    }
    expect(polled.status).toBe('incomplete');
    expect(polled.output_text).toBe(foreground.output_text);
    expect(polled.output_text).toBe('zzzzz');

    // A long one, streamed: the reader leaves after its first delta (the run goes on), and a new reader resumes after the last event it saw.
    const stream = await openai.responses.create({ model: 'memlora:alice', input: 'Hello', max_output_tokens: 480, background: true, stream: true });
    let id = '';
    let seen = -1;
    for await (const ev of stream) {
      seen = ev.sequence_number;
      if (ev.type === 'response.created') id = ev.response.id;
      if (ev.type === 'response.output_text.delta') break;
    }
    // As OpenAI's client sends them: include[]=…, include_obfuscation=false.
    const resumed = await openai.responses.retrieve(id, { stream: true, starting_after: seen, include: ['message.output_text.logprobs'], include_obfuscation: false });
    let next: OpenAI.Responses.ResponseStreamEvent | undefined;
    for await (const ev of resumed) {
      next = ev;
      break;
    }
    expect(next?.sequence_number).toBe(seen + 1);
    const cancelled = await openai.responses.cancel(id);
    expect(cancelled.status).toBe('cancelled');
    // What it wrote before the cancel (the SDK adds output_text to created and retrieved responses only).
    const wrote = ((cancelled.output[0] as OpenAI.Responses.ResponseOutputMessage).content[0] as OpenAI.Responses.ResponseOutputText).text;
    expect(wrote).toMatch(/^q+$/);
    expect(wrote.length).toBeLessThan(480);
    expect((await openai.responses.retrieve(id, { include: ['message.output_text.logprobs'] })).status).toBe('cancelled');
    // Its row is free: the next request is served.
    expect((await openai.responses.create({ model: 'memlora:bob', input: 'Hello', max_output_tokens: 3 })).output_text).toBe('zzz');
  });

  it('conversations through OpenAI\'s client: a response in a conversation reads it and adds to it, as sending the conversation whole', async () => {
    const vanilla = { mode: 'vanilla' } as Record<string, unknown>;
    const conv = await openai.conversations.create({ items: [{ type: 'message', role: 'user', content: 'Once upon a time' }] });
    const first = await openai.responses.create({ model: 'memlora:alice', conversation: conv.id, input: 'there was', max_output_tokens: 6, ...vanilla });
    const next = await openai.responses.create({ model: 'memlora:alice', conversation: { id: conv.id }, input: 'Then', max_output_tokens: 6, ...vanilla });
    const whole = await openai.responses.create({
      model: 'memlora:alice',
      input: [{ role: 'user', content: 'Once upon a time' }, { role: 'user', content: 'there was' }, { role: 'assistant', content: first.output_text }, { role: 'user', content: 'Then' }],
      max_output_tokens: 6,
      store: false,
      ...vanilla,
    });
    expect(next.output_text).toBe(whole.output_text);
    expect(next.usage?.input_tokens).toBe(whole.usage?.input_tokens);
    const items = [];
    for await (const item of openai.conversations.items.list(conv.id, { order: 'asc' })) items.push(item);
    expect(items.map((i) => (i.type === 'message' ? (i.content[0] as { text: string }).text : i.type))).toEqual(['Once upon a time', 'there was', first.output_text, 'Then', next.output_text]);
    expect((await openai.conversations.retrieve(conv.id)).id).toBe(conv.id);
    await openai.conversations.delete(conv.id);
    await expect(openai.conversations.retrieve(conv.id)).rejects.toMatchObject({ status: 404 });
  });

  it('response_format json_object: the reply is JSON, through the user\'s adapter (whose favourite token the grammar holds back)', async () => {
    const r = await openai.chat.completions.create({ model: 'memlora', user: 'alice', messages: hello, max_tokens: 24, response_format: { type: 'json_object' } });
    const text = r.choices[0].message.content ?? '';
    expect(text).not.toBe('q'.repeat(24)); // alice's adapter forces 'q'; a JSON document cannot start with it
    expect(SchemaGuide.jsonObject(guideVocabulary(md.tokenizer, md.cfg.vocabSize)).accepts(new TextEncoder().encode(text)), text).toBe(true);
    if (r.choices[0].finish_reason === 'stop') expect(JSON.parse(text)).toBeTypeOf('object');
    else expect(r.usage?.completion_tokens).toBe(24);
    // vLLM's guided_choice: the reply is one of the strings; alice's adapter forces 'q', so she picks the one with q.
    const choice = chatCompletionResponseSchema.parse(await (await post('/v1/chat/completions', { user: 'alice', messages: hello, guided_choice: ['zebra', 'quiet', 'hello'] })).json());
    expect(choice.choices[0]).toMatchObject({ message: { content: 'quiet' }, finish_reason: 'stop' });
  });

  it('response_format json_schema (and vLLM\'s guided_json): the reply is a document of the schema, picked by the user\'s adapter; a schema that cannot be enforced is 422 unsupported_schema', async () => {
    // Every document has under 200 bytes (whitespace runs are bounded too), so none is cut by max_tokens 200.
    const schema = { type: 'object', properties: { word: { enum: ['zebra', 'quiet', 'hello'] }, sure: { type: 'boolean' } }, required: ['word', 'sure'], additionalProperties: false };
    const r = await openai.chat.completions.create({ model: 'memlora', user: 'alice', messages: hello, max_tokens: 200, response_format: { type: 'json_schema', json_schema: { name: 'pick', schema, strict: true } } });
    expect(r.choices[0].finish_reason).toBe('stop');
    const doc = JSON.parse(r.choices[0].message.content ?? '') as Record<string, unknown>;
    // alice's adapter forces 'q': of the enum she writes the word with q.
    expect(doc.word).toBe('quiet');
    expect(doc.sure).toBeTypeOf('boolean');
    expect(Object.keys(doc)).toEqual(['word', 'sure']);
    // vLLM's guided_json, as JSON text, through /v1/completions: bob's adapter forces 'z'.
    const c = completionResponseSchema.parse(await (await post('/v1/completions', { user: 'bob', prompt: 'Pick one:', max_tokens: 200, guided_json: JSON.stringify(schema) })).json());
    expect(JSON.parse(c.choices[0].text)).toMatchObject({ word: 'zebra' });
    // A union of two objects that start alike: each user's adapter takes the branch of its letter.
    const union = {
      anyOf: [
        { type: 'object', properties: { animal: { const: 'quail' }, flies: { type: 'boolean' } }, required: ['animal', 'flies'], additionalProperties: false },
        { type: 'object', properties: { animal: { const: 'zebu' }, horns: { type: 'integer', minimum: 0, maximum: 2 } }, required: ['animal', 'horns'], additionalProperties: false },
      ],
    };
    const picked = async (user: string) => {
      const res = chatCompletionResponseSchema.parse(await (await post('/v1/chat/completions', { user, messages: hello, max_tokens: 200, guided_json: union })).json());
      expect(res.choices[0].finish_reason).toBe('stop');
      return JSON.parse(res.choices[0].message.content ?? '') as Record<string, unknown>;
    };
    const [quail, zebu] = [await picked('alice'), await picked('bob')];
    expect(Object.keys(quail)).toEqual(['animal', 'flies']);
    expect(quail.animal).toBe('quail');
    expect(quail.flies).toBeTypeOf('boolean');
    expect(Object.keys(zebu)).toEqual(['animal', 'horns']);
    expect(zebu.animal).toBe('zebu');
    expect([0, 1, 2]).toContain(zebu.horns);
    const unsupported = await post('/v1/chat/completions', { user: 'alice', messages: hello, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object', properties: { d: { type: 'string', format: 'iri' } } } } } });
    const err = await expectError(unsupported, 422, 'unsupported_schema');
    expect(err.details).toEqual({ path: '/properties/d', keyword: 'format' });
    await expectError(await post('/v1/chat/completions', { user: 'alice', messages: hello, guided_json: schema, guided_choice: ['a'] }), 422, 'validation_failed');
    await expectError(await post('/v1/chat/completions', { user: 'alice', messages: hello, guided_json: '{"type": "object"' }), 422, 'validation_failed');
    await expectError(await post('/v1/generate', { userId: 'alice', prompt: 'x', responseFormat: { type: 'json_schema', jsonSchema: { name: 'x', schema: { type: 'string' } } } }), 422, 'unsupported_schema');
    // vLLM's guided_regex: the reply matches the pattern; bob's adapter forces 'z'.
    const regex = chatCompletionResponseSchema.parse(await (await post('/v1/chat/completions', { user: 'bob', messages: hello, max_tokens: 32, guided_regex: '(zebra|quiet|hello) [0-9]{2}' })).json());
    expect(regex.choices[0].message.content).toMatch(/^zebra [0-9]{2}$/);
    await expectError(await post('/v1/chat/completions', { user: 'bob', messages: hello, guided_regex: '(?=z)zebra' }), 422, 'unsupported_regex');
    // Groups nested 2,000 deep overflowed the parser's stack (a 500); now refused as the other limits are.
    await expectError(await post('/v1/chat/completions', { user: 'bob', messages: hello, guided_regex: `${'('.repeat(2000)}z${')'.repeat(2000)}` }), 422, 'unsupported_regex');
    // vLLM's guided_grammar (GBNF): a word, maybe bracketed; bob's adapter picks the word with a z.
    const grammar = 'root ::= word | "[" root "]"\nword ::= "zebra" | "quiet" | "hello"';
    const bracketed = chatCompletionResponseSchema.parse(await (await post('/v1/chat/completions', { user: 'bob', messages: hello, max_tokens: 32, guided_grammar: grammar })).json());
    const [, opened, word, closed] = /^(\[*)(zebra|quiet|hello)(\]*)$/.exec(bracketed.choices[0].message.content ?? '') ?? [];
    expect(word, bracketed.choices[0].message.content!).toBe('zebra');
    expect(closed.length).toBe(opened.length);
    expect(bracketed.choices[0].finish_reason).toBe('stop');
    const generated = (await (await post('/v1/generate', { userId: 'bob', prompt: 'x', maxTokens: 32, guidedGrammar: grammar })).json()) as { text: string };
    expect(generated.text).toMatch(/^\[*zebra\]*$/);
    const refused = await expectError(await post('/v1/chat/completions', { user: 'bob', messages: hello, guided_grammar: 'root ::= root "z" | "z"' }), 422, 'unsupported_grammar');
    expect((refused.details as { reason: string }).reason).toMatch(/left-recursive/);
    await expectError(await post('/v1/completions', { user: 'bob', prompt: 'x', guided_grammar: 'root ::= z' }), 422, 'unsupported_grammar');
    // vLLM's structured_outputs, as vLLM 0.12 on takes these guides.
    const so = chatCompletionResponseSchema.parse(await (await post('/v1/chat/completions', { user: 'bob', messages: hello, max_tokens: 32, structured_outputs: { grammar } })).json());
    expect(so.choices[0].message.content).toMatch(/^\[*zebra\]*$/);
    const chosen = (await (await post('/v1/completions', { user: 'alice', prompt: 'x', structured_outputs: { choice: ['zebra', 'quiet'] } })).json()) as { choices: Array<{ text: string }> };
    expect(chosen.choices[0].text).toBe('quiet');
    const tag = await expectError(await post('/v1/chat/completions', { user: 'bob', messages: hello, structured_outputs: { structural_tag: '{}' } }), 422, 'validation_failed');
    expect(tag.message).toContain('structured_outputs.structural_tag');
  });

  it('tools with tool_choice required, a named function or allowed_tools: the reply is a call of a tool allowed, with arguments of its parameters, plain and streamed', async () => {
    const tools = ZOOM_AND_QUOTE;
    // alice's adapter forces 'q': of the two functions she calls quote.
    const r = await openai.chat.completions.create({ model: 'memlora', user: 'alice', messages: hello, max_tokens: 200, tools, tool_choice: 'required' });
    const call = quoteCall(r);
    // allowed_tools in mode required, zoom alone allowed: alice calls zoom, whatever her adapter prefers.
    const allowed = await openai.chat.completions.create({ model: 'memlora', user: 'alice', messages: hello, max_tokens: 200, tools, tool_choice: { type: 'allowed_tools', allowed_tools: { mode: 'required', tools: [{ type: 'function', function: { name: 'zoom' } }] } } });
    expect((allowed.choices[0].message.tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall).function.name).toBe('zoom');
    // Named: zoom, whatever the adapter prefers; streamed, the call arrives in the deltas.
    const stream = await openai.chat.completions.create({ model: 'memlora', user: 'alice', messages: hello, max_tokens: 200, tools, tool_choice: { type: 'function', function: { name: 'zoom' } }, stream: true });
    let name = '';
    let argText = '';
    let pieces = 0;
    const finish: Array<string | null> = [];
    for await (const chunk of stream) {
      for (const c of chunk.choices) {
        for (const t of c.delta.tool_calls ?? []) {
          pieces++;
          name += t.function?.name ?? '';
          argText += t.function?.arguments ?? '';
        }
        finish.push(c.finish_reason);
      }
    }
    expect(name).toBe('zoom');
    expect([1, 2, 3]).toContain((JSON.parse(argText) as { level: number }).level);
    expect(finish.filter((f) => f !== null)).toEqual(['tool_calls']);
    // The call came in pieces (its name, then its arguments), and the SDK's own stream helper joins them into the call.
    expect(pieces).toBeGreaterThan(1);
    const joined = await openai.chat.completions
      .stream({ model: 'memlora', user: 'alice', messages: hello, max_tokens: 200, tools, tool_choice: { type: 'function', function: { name: 'zoom' } } })
      .finalChatCompletion();
    const joinedCall = joined.choices[0].message.tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall;
    expect(joinedCall.function.name).toBe('zoom');
    expect(joinedCall.id).toMatch(/^call_[0-9a-f]{16}$/);
    expect([1, 2, 3]).toContain((JSON.parse(joinedCall.function.arguments) as { level: number }).level);
    expect(joined.choices[0].finish_reason).toBe('tool_calls');
    // The call and its result go back into the conversation.
    const next = await openai.chat.completions.create({
      model: 'memlora',
      user: 'alice',
      max_tokens: 4,
      messages: [...hello, { role: 'assistant', content: null, tool_calls: [call] }, { role: 'tool', tool_call_id: call.id, content: 'done' }],
    });
    expect(next.choices[0].message.content).toBe('qqqq');
  });

  it('tools with tool_choice auto: a reply the model opens with a brace is a call of a tool, with arguments of its parameters; any other is free text; beside a JSON schema response format, a call or a document of it', async () => {
    const tools = ZOOM_AND_QUOTE;
    // alice's adapter forces 'q': her reply is words, free under auto.
    const words = await openai.chat.completions.create({ model: 'memlora', user: 'alice', messages: hello, max_tokens: 4, tools });
    expect(words.choices[0].message).toMatchObject({ content: 'qqqq' });
    expect(words.choices[0].message.tool_calls ?? []).toEqual([]);
    // A bias on "{" makes every token she writes a brace if it may be: unguided, "{{{{..."; guided,
    // the reply opens a call and the rest is the call the schema allows (of the two functions, quote).
    const braces = { [tokenOf(md.tokenizer, '{')]: 100 };
    const opened = await openai.chat.completions.create({ model: 'memlora', user: 'alice', messages: hello, max_tokens: 200, tools, logit_bias: braces });
    const call = quoteCall(opened);
    // Streamed, the same call arrives in pieces that the SDK joins.
    const joined = await openai.chat.completions.stream({ model: 'memlora', user: 'alice', messages: hello, max_tokens: 200, tools, logit_bias: braces }).finalChatCompletion();
    expect((joined.choices[0].message.tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall).function).toEqual(call.function);
    expect(joined.choices[0].finish_reason).toBe('tool_calls');
    // A stop string inside the call cuts its arguments: the call as far as written, finish stop (not tool_calls: nothing to run).
    const stopped = await openai.chat.completions.create({ model: 'memlora', user: 'alice', messages: hello, max_tokens: 200, tools, logit_bias: braces, stop: ['}'] });
    expect(stopped.choices[0].finish_reason).toBe('stop');
    const cut = (stopped.choices[0].message.tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall).function;
    expect(cut.name).toBe('quote');
    expect(call.function.arguments.startsWith(cut.arguments) && cut.arguments.length < call.function.arguments.length).toBe(true);
    // Parameters that cannot guide a call: refused when the tool is strict, else the reply is unguided and read as written.
    const iri = (strict: boolean): OpenAI.ChatCompletionTool => ({ type: 'function', function: { name: 'link', strict, parameters: { type: 'object', properties: { d: { type: 'string', format: 'iri' } } } } });
    const refused = await expectError(await post('/v1/chat/completions', { user: 'alice', messages: hello, max_tokens: 8, tools: [iri(true)], logit_bias: braces }), 422, 'unsupported_schema');
    expect(refused.details).toMatchObject({ keyword: 'format' });
    const loose = await openai.chat.completions.create({ model: 'memlora', user: 'alice', messages: hello, max_tokens: 8, tools: [iri(false)], logit_bias: braces });
    expect(loose.choices[0].message.content).toBe('{'.repeat(8));
    expect(loose.choices[0].message.tool_calls ?? []).toEqual([]);
    // Beside a JSON schema response format (OpenAI's agents send both), the reply is one document: a
    // call, or a document of the format. bob's adapter (z) opens a call of zoom, alice's (q) the answer.
    const quip = { type: 'json_schema' as const, json_schema: { name: 'quip', schema: { type: 'object', properties: { quip: { type: 'string', maxLength: 4 } }, required: ['quip'], additionalProperties: false } } };
    const bobs = await openai.chat.completions.create({ model: 'memlora', user: 'bob', messages: hello, max_tokens: 100, tools: [tools[0]], response_format: quip });
    expect(bobs.choices[0].finish_reason).toBe('tool_calls');
    const zoomed = (bobs.choices[0].message.tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall).function;
    expect(zoomed.name).toBe('zoom');
    expect([1, 2, 3]).toContain((JSON.parse(zoomed.arguments) as { level: number }).level);
    const alices = await openai.chat.completions.create({ model: 'memlora', user: 'alice', messages: hello, max_tokens: 100, tools: [tools[0]], response_format: quip });
    expect(alices.choices[0].finish_reason).toBe('stop');
    expect(alices.choices[0].message.tool_calls ?? []).toEqual([]);
    expect(JSON.parse(alices.choices[0].message.content!)).toEqual({ quip: 'qqqq' });
    // Another guide given (JSON mode) rules the reply instead: an object whose key is alice's q's, not a function's name, read as text.
    const json = await openai.chat.completions.create({ model: 'memlora', user: 'alice', messages: hello, max_tokens: 8, tools, response_format: { type: 'json_object' } });
    expect(json.choices[0].message.content).toMatch(/^\{\s*"qq/);
    expect(json.choices[0].message.tool_calls ?? []).toEqual([]);
  });

  it('logprobs and top_logprobs: each token of the reply with its log-probability under the user\'s model, plain and streamed', async () => {
    const r = await openai.chat.completions.create({ model: 'memlora', user: 'alice', messages: hello, max_tokens: 4, logprobs: true, top_logprobs: 2 });
    const content = r.choices[0].logprobs?.content ?? [];
    expect(content.map((t) => t.token).join('')).toBe('qqqq');
    expect(content).toHaveLength(r.usage!.completion_tokens);
    for (const t of content) {
      // alice's adapter forces 'q': more likely than all other tokens together, and the most likely one.
      expect(t.logprob).toBeGreaterThan(Math.log(0.5));
      expect(t.bytes).toEqual([0x71]);
      expect(t.top_logprobs.map((a) => a.token)[0]).toBe('q');
      expect(t.top_logprobs).toHaveLength(2);
      expect(t.top_logprobs[1].logprob).toBeLessThan(t.top_logprobs[0].logprob);
    }
    const stream = await openai.chat.completions.create({ model: 'memlora', user: 'bob', messages: hello, max_tokens: 3, stream: true, logprobs: true });
    const streamed: string[] = [];
    for await (const chunk of stream) for (const c of chunk.choices) for (const t of c.logprobs?.content ?? []) streamed.push(t.token);
    expect(streamed).toEqual(['z', 'z', 'z']);
    const plain = await openai.chat.completions.create({ model: 'memlora', user: 'alice', messages: hello, max_tokens: 2 });
    expect(plain.choices[0].logprobs).toBeNull();
    const json = generateResultSchema.parse(await (await post('/v1/generate', { userId: 'bob', prompt: 'Hello', maxTokens: 2, logprobs: true })).json());
    expect(json.logprobs?.map((lp) => [lp.token, lp.tokenId, lp.top])).toEqual([['z', tokenOf(md.tokenizer, 'z'), []], ['z', tokenOf(md.tokenizer, 'z'), []]]);
    // vLLM's return_tokens_as_token_ids names each token by id, in chat and legacy completions.
    const z = `token_id:${tokenOf(md.tokenizer, 'z')}`;
    const chat = chatCompletionResponseSchema.parse(await (await post('/v1/chat/completions', { user: 'bob', messages: hello, max_tokens: 2, logprobs: true, top_logprobs: 1, return_tokens_as_token_ids: true })).json());
    expect(chat.choices[0].logprobs!.content.map((t) => [t.token, t.bytes, t.top_logprobs[0].token])).toEqual([[z, [0x7a], z], [z, [0x7a], z]]);
    const legacy = completionResponseSchema.parse(await (await post('/v1/completions', { user: 'bob', prompt: 'Hello', max_tokens: 2, logprobs: 1, return_tokens_as_token_ids: true })).json());
    expect(legacy.choices[0].logprobs).toMatchObject({ tokens: [z, z], top_logprobs: [{ [z]: expect.any(Number) }, { [z]: expect.any(Number) }], text_offset: [0, 1] });
  });

  it('prompt_logprobs (vLLM\'s): each prompt token as a generation from the tokens before it reports its first token (log-probability, rank, the most likely); chat scores its prompt as rendered', async () => {
    const { tokens: ids } = tokenizeResponseSchema.parse(await (await post('/tokenize', { prompt: 'qqzq' })).json());
    const res = await post('/v1/completions', { user: 'alice', prompt: ids, max_tokens: 1, prompt_logprobs: 3 });
    const pl = completionResponseSchema.parse(await res.json()).choices[0].prompt_logprobs!;
    expect(pl).toHaveLength(ids.length);
    expect(pl[0]).toBeNull();
    // With 0, each entry is the prompt's token alone, with its own rank.
    const own = completionResponseSchema.parse(await (await post('/v1/completions', { user: 'alice', prompt: ids, max_tokens: 1, prompt_logprobs: 0 })).json()).choices[0].prompt_logprobs!;
    const ranks: number[] = [];
    for (let i = 1; i < ids.length; i++) {
      // An independent path: the prefill of a generation from the first i tokens, and its first token's top 20.
      const g = generateResultSchema.parse(await (await post('/v1/generate', { userId: 'alice', prompt: ids.slice(0, i), maxTokens: 1, logprobs: true, topLogprobs: 20 })).json());
      const top = g.logprobs![0].top;
      const entry = pl[i]!;
      top.slice(0, 3).forEach((a, k) => expect(entry[a.tokenId]).toMatchObject({ rank: k + 1, decoded_token: a.token }));
      for (const [id, e] of Object.entries(entry)) {
        const k = top.findIndex((a) => a.tokenId === Number(id));
        if (k >= 0) expect(e.logprob).toBeCloseTo(top[k].logprob, 4);
        if (k >= 0) expect(e.rank).toBe(k + 1);
        else expect(e.rank).toBeGreaterThan(20);
      }
      expect(Object.keys(entry)).toHaveLength(top.slice(0, 3).some((a) => a.tokenId === ids[i]) ? 3 : 4);
      const k = top.findIndex((a) => a.tokenId === ids[i]);
      expect(Object.keys(own[i]!)).toEqual([String(ids[i])]);
      expect(own[i]![ids[i]]).toMatchObject({ logprob: entry[ids[i]].logprob, decoded_token: md.tokenizer.decode([ids[i]]) });
      if (k >= 0) expect(own[i]![ids[i]].rank).toBe(k + 1);
      else expect(own[i]![ids[i]].rank).toBeGreaterThan(20);
      ranks.push(own[i]![ids[i]].rank);
    }
    // alice's adapter makes q the most likely token everywhere; z is not.
    expect(ids.slice(1).map((id) => md.tokenizer.decode([id]))).toEqual(['q', 'q', 'z', 'q']);
    expect(ranks.map((r) => r === 1)).toEqual([true, true, false, true]);
    // Chat: its prompt rendered as /tokenize renders it, scored as the same ids would be.
    const messages = [{ role: 'user', content: 'qz' }];
    const chat = chatCompletionResponseSchema.parse(await (await post('/v1/chat/completions', { user: 'alice', messages, max_tokens: 1, prompt_logprobs: 1 })).json());
    const rendered = tokenizeResponseSchema.parse(await (await post('/tokenize', { messages })).json()).tokens;
    expect(chat.prompt_logprobs).toHaveLength(rendered.length);
    expect(chat.usage.prompt_tokens).toBe(rendered.length);
    const asIds = completionResponseSchema.parse(await (await post('/v1/completions', { user: 'alice', prompt: rendered, max_tokens: 1, prompt_logprobs: 1 })).json());
    chat.prompt_logprobs!.forEach((e, i) => {
      const same = asIds.choices[0].prompt_logprobs![i];
      if (e === null) return expect(same).toBeNull();
      expect(Object.keys(e)).toEqual(Object.keys(same!));
      for (const id of Object.keys(e)) expect(e[id].logprob).toBeCloseTo(same![id].logprob, 5);
    });
    // In a stream, 422 as vLLM answers.
    await expectError(await post('/v1/chat/completions', { user: 'alice', messages, prompt_logprobs: 1, stream: true }), 422, 'validation_failed');
  });

  it('return_token_ids (vLLM\'s): the prompt as /tokenize renders it and the reply\'s ids, which decode to its text; streamed, the same ids; continuous usage stats count them chunk by chunk', async () => {
    const messages = [{ role: 'user', content: 'Hello' }];
    const rendered = tokenizeResponseSchema.parse(await (await post('/tokenize', { messages })).json()).tokens;
    const chat = chatCompletionResponseSchema.parse(await (await post('/v1/chat/completions', { user: 'alice', messages, max_tokens: 4, return_token_ids: true })).json());
    expect(chat.prompt_token_ids).toEqual(rendered);
    expect(chat.choices[0].token_ids).toEqual(Array(4).fill(tokenOf(md.tokenizer, 'q')));
    expect(md.tokenizer.decode(chat.choices[0].token_ids!)).toBe(chat.choices[0].message.content);
    const res = await post('/v1/chat/completions', { user: 'alice', messages, max_tokens: 4, return_token_ids: true, stream: true });
    const chunks = parseSse(await res.text()).slice(0, -1).map((e) => chatCompletionChunkSchema.parse(JSON.parse(e.data)));
    expect(chunks[0].prompt_token_ids).toEqual(rendered);
    expect(chunks.flatMap((c) => c.choices.flatMap((x) => x.token_ids ?? []))).toEqual(chat.choices[0].token_ids);
    // Continuous usage stats: each chunk with the usage so far, up to the last chunk's.
    const counted = await post('/v1/chat/completions', { user: 'alice', messages, max_tokens: 4, stream: true, stream_options: { include_usage: true, continuous_usage_stats: true } });
    const usages = parseSse(await counted.text()).slice(0, -1).map((e) => chatCompletionChunkSchema.parse(JSON.parse(e.data)).usage!);
    const final = usages.pop()!;
    expect(final).toMatchObject({ prompt_tokens: rendered.length, completion_tokens: 4 });
    expect(usages.map((u) => u.completion_tokens)).toEqual([0, 1, 2, 3, 4, 4]);
    expect(usages.every((u) => u.prompt_tokens === rendered.length && u.total_tokens === u.prompt_tokens + u.completion_tokens)).toBe(true);
    // Legacy completions: a prompt of ids comes back as sent.
    const legacy = completionResponseSchema.parse(await (await post('/v1/completions', { user: 'bob', prompt: rendered, max_tokens: 2, return_token_ids: true })).json());
    expect(legacy.choices[0]).toMatchObject({ prompt_token_ids: rendered, token_ids: [tokenOf(md.tokenizer, 'z'), tokenOf(md.tokenizer, 'z')] });
  });

  it('logit_bias, frequency_penalty and presence_penalty steer the reply; a bias on a token the model lacks is a 422 token_out_of_range', async () => {
    const q = tokenOf(md.tokenizer, 'q');
    const z = tokenOf(md.tokenizer, 'z');
    const ask = (extra: Partial<OpenAI.ChatCompletionCreateParamsNonStreaming>) =>
      openai.chat.completions.create({ model: 'memlora', user: 'alice', messages: hello, max_tokens: 4, ...extra });
    // alice's adapter forces 'q'; a bias of +100 on 'z' outweighs it, -100 on 'q' bans it.
    expect((await ask({ logit_bias: { [z]: 100 } })).choices[0].message.content).toBe('zzzz');
    // A control token forced by a bias leaves no text in an OpenAI reply (vLLM's skip_special_tokens, true by
    // default); with false, or through /v1/generate, its text is kept.
    const user = md.tokenizer.specialIds['<|user|>'];
    const control = { user: 'alice', messages: hello, max_tokens: 2, logit_bias: { [user]: 100 }, return_token_ids: true };
    const skipped = chatCompletionResponseSchema.parse(await (await post('/v1/chat/completions', control)).json()).choices[0];
    expect(skipped).toMatchObject({ message: { content: '' }, token_ids: [user, user] });
    const kept = chatCompletionResponseSchema.parse(await (await post('/v1/chat/completions', { ...control, skip_special_tokens: false })).json()).choices[0];
    expect(kept.message.content).toBe('<|user|><|user|>');
    expect(generateResultSchema.parse(await (await post('/v1/generate', { userId: 'alice', prompt: 'Hello', maxTokens: 1, logitBias: { [user]: 100 } })).json()).text).toBe('<|user|>');
    const banned = (await ask({ logit_bias: { [q]: -100 }, frequency_penalty: 1.5, presence_penalty: 1 })).choices[0].message.content ?? '';
    expect(banned).not.toContain('q');
    expect(banned.length).toBeGreaterThan(0);
    // The same through /v1/generate, camel-cased; vLLM's top_k and repetition_penalty are taken too.
    const json = generateResultSchema.parse(await (await post('/v1/generate', { userId: 'alice', prompt: 'Hello', maxTokens: 3, logitBias: { [z]: 100 }, presencePenalty: 2 })).json());
    expect(json.text).toBe('zzz');
    const vllm = await ask({ logit_bias: { [z]: 100 }, top_k: 1, repetition_penalty: 1.2 } as Partial<OpenAI.ChatCompletionCreateParamsNonStreaming>);
    expect(vllm.choices[0].message.content).toBe('zzzz');
    // vLLM's min_tokens and ignore_eos: the end token (made every step's first choice) is held back.
    const eos = { [md.cfg.eosId]: 100 };
    const ended = await ask({ logit_bias: eos });
    expect(ended.usage?.completion_tokens).toBe(1);
    const held = await ask({ logit_bias: eos, min_tokens: 2 } as Partial<OpenAI.ChatCompletionCreateParamsNonStreaming>);
    expect(held.usage?.completion_tokens).toBe(3);
    const fixed = await ask({ logit_bias: eos, ignore_eos: true } as Partial<OpenAI.ChatCompletionCreateParamsNonStreaming>);
    expect(fixed.usage?.completion_tokens).toBe(4);
    expect(fixed.choices[0].finish_reason).toBe('length');
    const far = ask({ logit_bias: { [md.cfg.vocabSize]: 5 } });
    await expect(far).rejects.toBeInstanceOf(OpenAI.UnprocessableEntityError);
    await expect(far).rejects.toMatchObject({ status: 422, code: 'token_out_of_range' });
    await expect(ask({ frequency_penalty: 2.5 })).rejects.toMatchObject({ status: 422, code: 'validation_failed' });
    await expect(ask({ logit_bias: { abc: 1 } })).rejects.toMatchObject({ status: 422, code: 'validation_failed' });
  });

  it('completions.create (legacy): a user\'s completion; echo with logprobs scores the prompt as POST /v1/score does (a log-likelihood query)', async () => {
    const r = await openai.completions.create({ model: 'memlora', user: 'alice', prompt: 'Hello', max_tokens: 3 });
    expect(r.choices[0].text).toBe('qqq');
    // The log-likelihood of texts under alice's model, nothing generated (one prompt a request: this
    // server queues one request at most, and each prompt is a request).
    const ll = (prompt: string) => openai.completions.create({ model: 'memlora', user: 'alice', prompt, max_tokens: 0, echo: true, logprobs: 0 });
    const [q4, z4] = [await ll('qqqq'), await ll('zzzz')];
    expect([q4.choices[0].text, z4.choices[0].text]).toEqual(['qqqq', 'zzzz']);
    const scored = scoreResultSchema.parse(await (await post('/v1/score', { userId: 'alice', text: 'qqqq' })).json());
    q4.choices[0].logprobs!.token_logprobs!.forEach((lp, i) => expect(lp).toBeCloseTo(scored.tokens[i].logprob, 5));
    const sum = (r: typeof q4) => r.choices[0].logprobs!.token_logprobs!.reduce((a, b) => a + b, 0);
    expect(sum(q4)).toBeGreaterThan(sum(z4) + 2); // her adapter prefers q
    expect(q4.usage).toMatchObject({ prompt_tokens: scored.usage.contextTokens + scored.usage.scoredTokens, completion_tokens: 0 });
    // Echo, logprobs and a completion: the prompt's tokens, then the completion's; offsets into the text.
    const both = await openai.completions.create({ model: 'memlora', user: 'bob', prompt: 'Hi there', max_tokens: 2, echo: true, logprobs: 2 });
    const c = both.choices[0];
    expect(c.text).toBe('Hi therezz');
    const lp = c.logprobs!;
    expect(lp.tokens!.join('')).toBe('Hi therezz');
    lp.tokens!.forEach((t, i) => expect(c.text.slice(lp.text_offset![i], lp.text_offset![i] + t.length)).toBe(t));
    expect(Object.keys(lp.top_logprobs![lp.tokens!.length - 1])).toContain('z');
    // A tool that cannot send user names alice's own model.
    expect((await openai.models.retrieve('memlora:alice')).id).toBe('memlora:alice');
    const named = await openai.completions.create({ model: 'memlora:alice', prompt: 'Hello', max_tokens: 3 });
    expect(named.choices[0].text).toBe('qqq');
    // Streamed: the pieces make the completion.
    const stream = await openai.completions.create({ model: 'memlora', user: 'alice', prompt: 'Hello', max_tokens: 4, stream: true });
    let text = '';
    for await (const chunk of stream) for (const ch of chunk.choices) text += ch.text;
    expect(text).toBe('qqqq');
  });

  it('completions.create with token-id prompts (from POST /tokenize): the same completion and log-likelihood as the text, the first token unscored', async () => {
    const { tokens: ids } = tokenizeResponseSchema.parse(await (await post('/tokenize', { prompt: 'qqqq' })).json());
    const fromIds = await openai.completions.create({ model: 'memlora', user: 'alice', prompt: ids, max_tokens: 3 });
    expect(fromIds.choices[0].text).toBe('qqq');
    expect(fromIds.usage?.prompt_tokens).toBe(ids.length);
    const ll = (prompt: string | number[]) => openai.completions.create({ model: 'memlora', user: 'alice', prompt, max_tokens: 0, echo: true, logprobs: 1 });
    const [asIds, asText] = [await ll(ids), await ll('qqqq')];
    const lp = asIds.choices[0].logprobs!;
    // The echo is the ids' text, BOS included; the first token has no log-probability (nothing precedes it).
    expect(asIds.choices[0].text).toBe(md.tokenizer.decode(ids));
    expect(lp.tokens![0]).toBe(md.tokenizer.decode([ids[0]]));
    expect(lp.token_logprobs![0]).toBeNull();
    expect(lp.top_logprobs![0]).toBeNull();
    // After BOS the ids score exactly as the text does (a text prompt is scored after BOS).
    expect(lp.tokens!.slice(1)).toEqual(asText.choices[0].logprobs!.tokens);
    lp.token_logprobs!.slice(1).forEach((x, i) => expect(x).toBeCloseTo(asText.choices[0].logprobs!.token_logprobs![i], 5));
    expect(asIds.usage?.prompt_tokens).toBe(ids.length);
    lp.tokens!.forEach((t, i) => expect(asIds.choices[0].text.slice(lp.text_offset![i], lp.text_offset![i] + t.length)).toBe(t));
    // An id outside the vocabulary: 422 token_out_of_range.
    await expectError(await post('/v1/completions', { user: 'alice', prompt: [ids[0], md.cfg.vocabSize], max_tokens: 1 }), 422, 'token_out_of_range');
  });

  it('a chat\'s next turn reads the conversation so far from the prefix cache (usage.prompt_tokens_details.cached_tokens); deleting the user forgets it', async () => {
    await fetch(`${server.url}/v1/users/erin`, { method: 'PUT' });
    const first = [{ role: 'user' as const, content: 'I walk my dog every morning before work, and I like hiking on weekends.' }];
    const t1 = await openai.chat.completions.create({ model: 'memlora', user: 'erin', messages: first, max_tokens: 6 });
    expect(t1.usage?.prompt_tokens_details?.cached_tokens).toBe(0);
    const second = [...first, { role: 'assistant' as const, content: t1.choices[0].message.content ?? '' }, { role: 'user' as const, content: 'What should I do tomorrow?' }];
    const hitsBefore = await metric('memlora_prefix_cache_lookups_total{result="hit"}');
    const t2 = await openai.chat.completions.create({ model: 'memlora', user: 'erin', messages: second, max_tokens: 6 });
    expect(t2.usage!.prompt_tokens_details!.cached_tokens).toBeGreaterThanOrEqual(t1.usage!.prompt_tokens);
    expect(t2.usage!.prompt_tokens_details!.cached_tokens).toBeLessThan(t2.usage!.prompt_tokens);
    expect(await metric('memlora_prefix_cache_lookups_total{result="hit"}')).toBe(hitsBefore + 1);
    expect(await metric('memlora_generate_prompt_tokens_total{source="cached"}')).toBeGreaterThanOrEqual(t2.usage!.prompt_tokens_details!.cached_tokens!);
    expect(await metric('memlora_prefix_cache_entries')).toBeGreaterThan(0);
    // The same turn again, as /v1/generate reports it.
    const g = (await (await post('/v1/generate', { userId: 'erin', messages: second, maxTokens: 6 })).json()) as { text: string; usage: { cachedTokens: number } };
    expect(g.usage.cachedTokens).toBeGreaterThanOrEqual(t1.usage!.prompt_tokens);
    expect(g.text).toBe(t2.choices[0].message.content);
    // Erased and created again: nothing of the old conversation is reused.
    expect((await fetch(`${server.url}/v1/users/erin`, { method: 'DELETE' })).status).toBe(200);
    expect(logger.lines.some((l) => l.msg === 'prefix cache: user forgotten' && l.fields.userId === 'erin')).toBe(true);
    await fetch(`${server.url}/v1/users/erin`, { method: 'PUT' });
    const after = await openai.chat.completions.create({ model: 'memlora', user: 'erin', messages: second, max_tokens: 6 });
    expect(after.usage?.prompt_tokens_details?.cached_tokens).toBe(0);
    expect(after.choices[0].message.content).toBe(t2.choices[0].message.content);
  });

  it('GET and DELETE /v1/admin/prefix-cache: an operator reads what the prefix cache saved, and drops one user\'s conversations or all of them', async () => {
    const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };
    const prefixReq = (query = '', method = 'GET') => fetch(`${server.url}/v1/admin/prefix-cache${query}`, { method, headers: admin });
    const first = [{ role: 'user' as const, content: 'My sister plays the violin in an orchestra, and I go to every concert.' }];
    for (const user of ['fay', 'gil']) {
      await fetch(`${server.url}/v1/users/${user}`, { method: 'PUT' });
      await openai.chat.completions.create({ model: 'memlora', user, messages: first, max_tokens: 6 });
    }
    const before = prefixCacheSchema.parse(await (await prefixReq()).json());
    expect(before).toMatchObject({ enabled: true, minTokens: expect.any(Number), perScope: expect.any(Number) });
    expect(before.entries).toBeGreaterThanOrEqual(2);
    expect(before.users).toBeGreaterThanOrEqual(2);
    expect(before.bytes).toBe(await metric('memlora_prefix_cache_bytes'));
    // A token's keys and values in every layer, float32, and its id: what the budget is sized by.
    const perToken = 2 * md.cfg.nLayers * md.cfg.nKvHeads * md.cfg.headDim * 4 + 4;
    expect(before).toMatchObject({ bytesPerToken: perToken, tokens: before.bytes / perToken, capacityTokens: Math.floor(before.maxBytes / perToken) });
    expect(Number.isInteger(before.tokens) && before.tokens > 0).toBe(true);
    expect(before.entries).toBe(await metric('memlora_prefix_cache_entries'));
    expect(before.counters.hits).toBe(await metric('memlora_prefix_cache_lookups_total{result="hit"}'));
    expect(before.counters.lookups).toBe(before.counters.hits + (await metric('memlora_prefix_cache_lookups_total{result="miss"}')));
    expect(before.counters.hitRate).toBeCloseTo(before.counters.hits / before.counters.lookups, 12);
    expect(before.counters.reusedTokens).toBe(await metric('memlora_generate_prompt_tokens_total{source="cached"}'));
    expect((await fetch(`${server.url}/v1/admin/prefix-cache`)).status).toBe(401);

    // The next turn of each reuses the first; fay's conversations dropped, hers runs the whole prompt.
    const next = (reply: string) => [...first, { role: 'assistant' as const, content: reply }, { role: 'user' as const, content: 'Which piece should I ask her to play?' }];
    const turn = async (user: string) => {
      const t1 = await openai.chat.completions.create({ model: 'memlora', user, messages: first, max_tokens: 6 });
      return openai.chat.completions.create({ model: 'memlora', user, messages: next(t1.choices[0].message.content ?? ''), max_tokens: 6 });
    };
    const fayCached = (await turn('fay')).usage!.prompt_tokens_details!.cached_tokens!;
    expect(fayCached).toBeGreaterThan(0);
    const held = prefixCacheSchema.parse(await (await prefixReq()).json());
    // fay's kept conversation covers at least the tokens her turn reused.
    expect(held.tokens).toBeGreaterThanOrEqual(fayCached);
    const dropFay = prefixCacheDropSchema.parse(await (await prefixReq('?userId=fay', 'DELETE')).json());
    expect(dropFay.dropped.entries).toBeGreaterThanOrEqual(1);
    expect(dropFay.dropped.bytes).toBeGreaterThan(0);
    expect(dropFay.prefixCache).toMatchObject({ entries: held.entries - dropFay.dropped.entries, bytes: held.bytes - dropFay.dropped.bytes, tokens: held.tokens - dropFay.dropped.bytes / perToken, users: held.users - 1 });
    expect(prefixCacheDropSchema.parse(await (await prefixReq('?userId=fay', 'DELETE')).json()).dropped).toEqual({ entries: 0, bytes: 0 });
    expect((await prefixReq('?userId=nobody', 'DELETE')).status).toBe(404);
    expect((await prefixReq('?userId=a%20b', 'DELETE')).status).toBe(422);
    const t1 = await openai.chat.completions.create({ model: 'memlora', user: 'fay', messages: first, max_tokens: 6 });
    expect(t1.usage?.prompt_tokens_details?.cached_tokens).toBe(0);
    // gil kept his: his next turn still reuses the first.
    expect((await turn('gil')).usage!.prompt_tokens_details!.cached_tokens).toBeGreaterThan(0);

    // Everything dropped: nothing held, and the counters since start are kept.
    const all = prefixCacheDropSchema.parse(await (await prefixReq('', 'DELETE')).json());
    expect(all.dropped.entries).toBeGreaterThanOrEqual(2);
    expect(all.prefixCache).toMatchObject({ entries: 0, users: 0, tokens: 0, bytes: 0 });
    expect(all.prefixCache.counters.hits).toBeGreaterThan(before.counters.hits);
    expect(all.prefixCache.counters.evictions).toBe(before.counters.evictions);
    expect(await metric('memlora_prefix_cache_entries')).toBe(0);
    const g = await openai.chat.completions.create({ model: 'memlora', user: 'gil', messages: first, max_tokens: 6 });
    expect(g.usage?.prompt_tokens_details?.cached_tokens).toBe(0);
  });

  it('an operator\'s rollback retires the replaced version\'s conversations: the next chat starts afresh, GET /v1/admin/prefix-cache and /metrics count them', async () => {
    const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };
    const report = async () => prefixCacheSchema.parse(await (await fetch(`${server.url}/v1/admin/prefix-cache`, { headers: admin })).json());
    await giveAdapter('hap', forcingAdapter(md.cfg, md.weights, tokenOf(md.tokenizer, 'q')));
    await giveAdapter('hap', forcingAdapter(md.cfg, md.weights, tokenOf(md.tokenizer, 'z')));
    const first = [{ role: 'user' as const, content: 'My sister plays the violin in an orchestra, and I go to every concert.' }];
    const chat = async () => {
      const t1 = await openai.chat.completions.create({ model: 'memlora', user: 'hap', messages: first, max_tokens: 6 });
      const t2 = await openai.chat.completions.create({ model: 'memlora', user: 'hap', messages: [...first, { role: 'assistant', content: t1.choices[0].message.content ?? '' }, { role: 'user', content: 'Which piece should I ask her to play?' }], max_tokens: 6 });
      return [t1, t2];
    };
    const [, z2] = await chat();
    expect(z2.choices[0].message.content).toBe('zzzzzz');
    expect(z2.usage!.prompt_tokens_details!.cached_tokens).toBeGreaterThan(0);
    const before = await report();
    const put = await fetch(`${server.url}/v1/admin/users/hap/adapter`, { method: 'PUT', headers: { ...admin, 'content-type': 'application/json' }, body: JSON.stringify({ version: 1 }) });
    expect(put.status).toBe(200);
    const [q1, q2] = await chat();
    expect(q1.choices[0].message.content).toBe('qqqqqq');
    expect(q1.usage!.prompt_tokens_details!.cached_tokens).toBe(0);
    expect(q2.usage!.prompt_tokens_details!.cached_tokens).toBeGreaterThan(0);
    const after = await report();
    // Version 2's conversation left when version 1 was loaded; version 1's took its place.
    expect(after.counters.retired).toBe(before.counters.retired + 1);
    expect(after.counters.evictions).toBe(before.counters.evictions);
    expect(after.entries).toBe(before.entries);
    expect(await metric('memlora_prefix_cache_retired_total')).toBe(after.counters.retired);
  });

  it('aborting a stream from the client frees its row: the next request is served at once', async () => {
    const cancelled = await metric('memlora_generate_requests_total{mode="injected",finish="cancelled"}');
    const stream = await openai.chat.completions.create({ model: 'memlora', user: 'alice', messages: hello, max_tokens: 480, stream: true });
    for await (const chunk of stream) {
      if (chunk.choices[0]?.delta.content) break; // leaving the loop aborts the request, as the SDK documents
    }
    await untilMetric('memlora_generate_requests_total{mode="injected",finish="cancelled"}', cancelled + 1, 'the aborted stream was never cancelled in the engine');
    const r = await openai.chat.completions.create({ model: 'memlora', user: 'bob', messages: hello, max_tokens: 3 });
    expect(r.choices[0].message.content).toBe('zzz');
  });

  it('errors arrive as the SDK\'s typed errors, with memlora\'s machine-readable code', async () => {
    const nobody = openai.chat.completions.create({ model: 'memlora', user: 'nobody', messages: hello });
    await expect(nobody).rejects.toBeInstanceOf(OpenAI.NotFoundError);
    await expect(nobody).rejects.toMatchObject({ status: 404, code: 'user_not_found' });
    const two = openai.chat.completions.create({ model: 'memlora', user: 'alice', messages: hello, n: 17 });
    await expect(two).rejects.toBeInstanceOf(OpenAI.UnprocessableEntityError);
    await expect(two).rejects.toMatchObject({ status: 422, code: 'validation_failed' });
    await expect(openai.models.retrieve('gpt-4o')).rejects.toMatchObject({ status: 404, code: 'model_not_found' });
  });

  it('a user past their daily token quota gets 429 quota_exceeded with Retry-After until midnight UTC (the SDK\'s RateLimitError), others are served', async () => {
    await fetch(`${server.url}/v1/users/quinn`, { method: 'PUT' });
    const admin = { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_TOKEN}` };
    await fetch(`${server.url}/v1/admin/users/quinn/quota`, { method: 'PUT', headers: admin, body: JSON.stringify({ dailyTokens: 10 }) });
    const first = await openai.chat.completions.create({ model: 'memlora', user: 'quinn', messages: hello, max_tokens: 8 });
    expect(first.usage!.total_tokens).toBeGreaterThanOrEqual(10); // the request that crosses the quota is served whole
    const res = await post('/v1/chat/completions', { user: 'quinn', messages: hello, max_tokens: 8 });
    const err = await expectError(res, 429, 'quota_exceeded');
    const retryAfter = Number(res.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThan(0);
    expect(retryAfter).toBeLessThanOrEqual(86_400);
    expect(err.details).toMatchObject({ userId: 'quinn', dailyTokens: 10, usedTokens: first.usage!.total_tokens });
    await expect(openai.chat.completions.create({ model: 'memlora', user: 'quinn', messages: hello })).rejects.toMatchObject({ status: 429, code: 'quota_exceeded' });
    await expect(openai.chat.completions.create({ model: 'memlora', user: 'bob', messages: hello, max_tokens: 2 })).resolves.toBeDefined();
  });
});

describe('background responses across a shutdown of the real server', () => {
  /** A server of its own on the model directory: one batch row, the given drain deadline; alice exists. */
  async function own(name: string, shutdownTimeoutMs: number): Promise<{ running: RunningServer; dbFile: string }> {
    const config = loadConfig({
      MEMLORA_PORT: '0',
      MEMLORA_DATA_DIR: join(root, name),
      MEMLORA_ADAPTER_DIR: join(root, name, 'adapters'),
      MEMLORA_MODEL_PATH: md.dir,
      MEMLORA_ADMIN_TOKEN: ADMIN_TOKEN,
      MEMLORA_MAX_BATCH: '1',
    });
    const running = await startServer(config, { handleSignals: false, logger: memoryLogger(), shutdownTimeoutMs });
    for (let i = 0; (await fetch(`${running.url}/readyz`)).status !== 200; i++) {
      if (i > 500) throw new Error('model never became ready');
      await new Promise((r) => setTimeout(r, 10));
    }
    await fetch(`${running.url}/v1/users/alice`, { method: 'PUT' });
    return { running, dbFile: config.dbFile };
  }
  const begin = async (running: RunningServer, maxTokens: number, more: Record<string, unknown> = {}) => {
    const res = await fetch(`${running.url}/v1/responses`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user: 'alice', input: 'Hello', max_output_tokens: maxTokens, background: true, mode: 'vanilla', ...more }) });
    expect(res.status).toBe(200);
    return ((await res.json()) as { id: string }).id;
  };
  /** The stored responses after the server stopped, read from its database file. */
  const storedAfter = (dbFile: string, ids: string[]) => {
    const db = new Database(dbFile, { readonly: true });
    try {
      return ids.map((id) => JSON.parse((db.prepare('SELECT response FROM stored_responses WHERE id = ?').get(id) as { response: string }).response) as { status: string; error: { code: string } | null });
    } finally {
      db.close();
    }
  };

  /** A background response's stream on `running`, from after `after`: its events' sequence numbers and text deltas, until `enough` deltas (then the reader leaves) or its end. */
  const follow = async (running: RunningServer, id: string, after: number, enough = Infinity) => {
    // Its retries on 409 with Retry-After, as the SDK's by default: a response waiting to run again after a start is not streamed yet.
    const client = new OpenAI({ baseURL: `${running.url}/v1`, apiKey: 'not-checked', maxRetries: 20 });
    const seen = { last: after, text: '', deltas: 0 };
    for await (const ev of await client.responses.retrieve(id, { stream: true, ...(after >= 0 ? { starting_after: after } : {}) })) {
      expect(ev.sequence_number).toBe(seen.last + 1);
      seen.last = ev.sequence_number;
      if (ev.type === 'response.output_text.delta') {
        seen.text += ev.delta;
        if (++seen.deltas >= enough) break;
      }
    }
    return seen;
  };

  it('the drain lets a running background response finish; past the deadline the engine ends them, they go back in the queue, and the next start runs them', async () => {
    const patient = await own('patient', 10_000);
    const done = await begin(patient.running, 24);
    await patient.running.close();
    expect(storedAfter(patient.dbFile, [done])).toEqual([expect.objectContaining({ status: 'incomplete', error: null })]);

    // Sampled, with the seed the server gave it: a reply that draws an end token before the server
    // stops ends on its own and shows nothing of the drain, so such a try starts over on new data.
    let attempt = 0;
    let tried: { name: string; running: string; waiting: string; before: Awaited<ReturnType<typeof follow>> };
    for (;;) {
      const name = `hasty${attempt}`;
      const hasty = await own(name, 1);
      const running = await begin(hasty.running, 480, { temperature: 1 });
      const waiting = await begin(hasty.running, 480);
      // A reader sees its first deltas before the server stops.
      const before = await follow(hasty.running, running, -1, 8);
      await hasty.running.close();
      const statuses = storedAfter(hasty.dbFile, [running, waiting]).map((r) => r.status);
      if (statuses[0] === 'completed' && attempt < 4) {
        attempt++;
        continue;
      }
      expect(statuses).toEqual(['queued', 'queued']);
      tried = { name, running, waiting, before };
      break;
    }
    const { running, waiting, before } = tried;
    // The next start on the same data runs both to their end.
    const again = await own(tried.name, 10_000);
    // The reader comes back and resumes after the last event it saw: the run, sampling again with
    // its seed, writes the same reply, so the events it had and those it reads now make the whole.
    const after = await follow(again.running, running, before.last);
    const whole = (await (await fetch(`${again.running.url}/v1/responses/${running}`)).json()) as { output: Array<{ content: Array<{ text: string }> }> };
    expect(before.text.length).toBeGreaterThan(0);
    expect(before.text + after.text).toBe(whole.output[0].content[0].text);
    for (const id of [running, waiting]) {
      for (let i = 0; ; i++) {
        const r = (await (await fetch(`${again.running.url}/v1/responses/${id}`)).json()) as { status: string; usage: { output_tokens: number } | null };
        if (r.status !== 'queued' && r.status !== 'in_progress') {
          expect(r).toMatchObject({ status: expect.stringMatching(/completed|incomplete/), error: null });
          expect(r.usage!.output_tokens).toBeGreaterThan(0);
          break;
        }
        if (i > 5000) throw new Error(`response ${id} was never run again`);
        await new Promise((res) => setTimeout(res, 2));
      }
    }
    await again.running.close();
  });
});
