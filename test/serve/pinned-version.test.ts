/**
 * A request that names its adapter version (`adapterVersion`): served with that version whether or
 * not it is active, beside the active version's rows in one batch; the user's served version, its
 * cache entry and the hot-swap bookkeeping untouched; refused (never a fallback) where the version
 * is unknown, not ready, or its files fail, which takes the version out of service as any load does,
 * and where it is an inactive version trained on history the user deleted since.
 * On the engine with a tiny random model, real SQLite, a real adapter store and cache.
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getActiveAdapter, getAdapterVersion, setAdapterStatus } from '../../src/db/queries/adapters.js';
import { deleteHistoryItem } from '../../src/db/queries/forgetting.js';
import { allHistory } from '../../src/db/queries/history.js';
import { AdapterCache, adapterKey } from '../../src/lora/cache.js';
import { AdapterStore } from '../../src/lora/store.js';
import { Registry } from '../../src/metrics.js';
import type { AdapterReader } from '../../src/serve/loader.js';
import type { ServeResult } from '../../src/serve/types.js';
import { forcingAdapter, makeServeFixture, never, req, tokenOf, type ServeFixture } from './fixtures.js';

let f: ServeFixture;
let q: number;
let z: number;
beforeAll(() => {
  f = makeServeFixture({ maxPositions: 256 });
  q = tokenOf(f.tokenizer, 'q');
  z = tokenOf(f.tokenizer, 'z');
});
afterAll(() => f.cleanup());

const counter = (name: string, labels?: Record<string, string>): number => f.counter(name, labels);
/** Decode steps that ran with more than one row. */
const sharedSteps = (): number => f.stepsWithMoreThan(1);

describe('a request naming its adapter version', () => {
  it('is served with that version, active or not, in one batch with the active version\'s rows; the served version and its cache entry stay', async () => {
    const e = f.engine();
    await f.giveAdapter('ab', forcingAdapter(f.cfg, f.weights, q)); // version 1
    await f.giveAdapter('ab', forcingAdapter(f.cfg, f.weights, z)); // version 2, active
    const active = await e.generate(req('ab', { maxTokens: 6 }), never());
    expect(active).toMatchObject({ text: 'zzzzzz', personalization: { mode: 'injected', adapterVersion: 2 } });
    expect(active.personalization.pinned).toBeUndefined();

    const pinned = await e.generate(req('ab', { maxTokens: 6, adapterVersion: 1 }), never());
    expect(pinned).toMatchObject({ text: 'qqqqqq', personalization: { mode: 'injected', adapterVersion: 1, pinned: true } });
    // Not a hot swap: version 2 is still the user's, still cached, and serves the next request.
    expect(getActiveAdapter(f.db, 'ab')!.version).toBe(2);
    expect(f.cache.has(adapterKey('ab', 2))).toBe(true);
    expect(await e.generate(req('ab', { maxTokens: 6 }), never())).toMatchObject({ text: 'zzzzzz', personalization: { adapterVersion: 2 } });
    expect(f.cache.has(adapterKey('ab', 1))).toBe(true); // and the named one was not dropped as a swapped-out version

    // Both versions (and the active one named) side by side in one batch, each row on its own.
    const before = sharedSteps();
    const rs: ServeResult[] = await Promise.all([
      e.generate(req('ab', { maxTokens: 8, adapterVersion: 1 }), never()),
      e.generate(req('ab', { maxTokens: 8 }), never()),
      e.generate(req('ab', { maxTokens: 8, adapterVersion: 2, mode: 'injected' }), never()),
    ]);
    expect(rs.map((r) => r.text)).toEqual(['qqqqqqqq', 'zzzzzzzz', 'zzzzzzzz']);
    expect(rs.map((r) => r.personalization)).toEqual([
      { mode: 'injected', adapterVersion: 1, pinned: true },
      { mode: 'injected', adapterVersion: 2 },
      { mode: 'injected', adapterVersion: 2, pinned: true },
    ]);
    expect(sharedSteps()).toBeGreaterThan(before);
  });

  it('shows as pinned in the queue report while it runs, beside a row of the active version', async () => {
    const e = f.engine();
    await f.giveAdapter('qp', forcingAdapter(f.cfg, f.weights, q)); // version 1
    await f.giveAdapter('qp', forcingAdapter(f.cfg, f.weights, z)); // version 2, active
    const ac = new AbortController();
    const streams = [e.stream(req('qp', { maxTokens: 200, adapterVersion: 1 }), ac.signal), e.stream(req('qp', { maxTokens: 200 }), ac.signal)].map((s) => s[Symbol.asyncIterator]());
    for (const s of streams) await s.next(); // each has its first token: both rows are decoding
    const rows = e.queue(10).rows.map((r) => ({ adapterVersion: r.adapterVersion, pinned: r.pinned }));
    expect(rows).toEqual(expect.arrayContaining([{ adapterVersion: 1, pinned: true }, { adapterVersion: 2, pinned: undefined }]));
    expect(rows).toHaveLength(2);
    ac.abort();
    for (const s of streams) while (!(await s.next()).done);
    expect(e.occupancy).toEqual({ active: 0, waiting: 0 });
  });

  it('scores under the named version: "qqqq" far likelier under the q version than under the active z one', async () => {
    const e = f.engine();
    await f.giveAdapter('sc', forcingAdapter(f.cfg, f.weights, q));
    await f.giveAdapter('sc', forcingAdapter(f.cfg, f.weights, z));
    const ask = { userId: 'sc', prompt: 'Hello', text: 'qqqq', mode: 'auto' as const };
    const underActive = await e.score(ask, never());
    const underV1 = await e.score({ ...ask, adapterVersion: 1 }, never());
    expect(underActive.personalization).toEqual({ mode: 'injected', adapterVersion: 2 });
    expect(underV1.personalization).toEqual({ mode: 'injected', adapterVersion: 1, pinned: true });
    expect(underV1.logprob).toBeGreaterThan(underActive.logprob + 10);
  });

  it('is refused before it is queued where the version cannot serve: unknown, not ready, no adapters, a mode without adapter', async () => {
    const e = f.engine();
    await f.giveAdapter('rf', forcingAdapter(f.cfg, f.weights, q));
    const rejected = () => counter('memlora_generate_rejected_total', { code: 'adapter_not_found' });
    const r0 = rejected();
    await expect(e.generate(req('rf', { adapterVersion: 7 }), never())).rejects.toMatchObject({ code: 'adapter_not_found', details: { userId: 'rf', version: 7 } });
    await expect(e.generate(req('nobody', { adapterVersion: 1 }), never())).rejects.toMatchObject({ code: 'adapter_not_found' });
    expect(rejected()).toBe(r0 + 2);
    for (const status of ['quarantined', 'missing', 'deleted'] as const) {
      setAdapterStatus(f.db, 'rf', 1, status);
      await expect(e.generate(req('rf', { adapterVersion: 1 }), never())).rejects.toMatchObject({ code: 'adapter_unusable', details: { userId: 'rf', version: 1, reason: status } });
      await expect(e.score({ userId: 'rf', text: 'hi', mode: 'auto', adapterVersion: 1 }, never())).rejects.toMatchObject({ code: 'adapter_unusable' });
    }
    setAdapterStatus(f.db, 'rf', 1, 'ready');
    await expect(e.generate(req('rf', { adapterVersion: 1, mode: 'memory' }), never())).rejects.toMatchObject({ code: 'invalid_request' });
    await expect(e.generate(req('rf', { adapterVersion: 1, mode: 'vanilla' }), never())).rejects.toMatchObject({ code: 'invalid_request' });
    await expect(f.engine({ adapters: null }).generate(req('rf', { adapterVersion: 1 }), never())).rejects.toMatchObject({ code: 'adapters_disabled' });
    expect(e.occupancy).toEqual({ active: 0, waiting: 0 });
    expect((await e.generate(req('rf', { maxTokens: 4, adapterVersion: 1 }), never())).text).toBe('qqqq');
  });

  it('an inactive version trained on history the user deleted since is refused (forgetting stopped it serving); the active one, trained on it too, still serves as it does unnamed', async () => {
    const e = f.engine();
    await f.giveAdapter('fg', forcingAdapter(f.cfg, f.weights, q)); // version 1
    await f.giveAdapter('fg', forcingAdapter(f.cfg, f.weights, z)); // version 2, active
    f.addHistory('fg', ['a post the user will delete']);
    expect((await e.generate(req('fg', { maxTokens: 3, adapterVersion: 1 }), never())).text).toBe('qqq');
    const [item] = allHistory(f.db, 'fg');
    expect(deleteHistoryItem(f.db, 'fg', item.id, Date.now() + 1)).toBe(true); // after both versions were made: both were trained on it
    await expect(e.generate(req('fg', { adapterVersion: 1 }), never())).rejects.toMatchObject({
      code: 'adapter_unusable',
      details: { userId: 'fg', version: 1, reason: 'trained_on_deleted_history' },
    });
    await expect(e.score({ userId: 'fg', text: 'qq', mode: 'auto', adapterVersion: 1 }, never())).rejects.toMatchObject({ code: 'adapter_unusable' });
    expect(await e.generate(req('fg', { maxTokens: 3, adapterVersion: 2 }), never())).toMatchObject({ text: 'zzz', personalization: { adapterVersion: 2, pinned: true } });
    expect(e.occupancy).toEqual({ active: 0, waiting: 0 });
  });

  it('whose files are corrupt or missing: refused with adapter_unusable, no fallback, the version taken out of service; the active version serves on', async () => {
    const e = f.engine();
    const bad = await f.giveAdapter('bf', forcingAdapter(f.cfg, f.weights, q)); // version 1
    const gone = await f.giveAdapter('bf', forcingAdapter(f.cfg, f.weights, q)); // version 2
    await f.giveAdapter('bf', forcingAdapter(f.cfg, f.weights, z)); // version 3, active
    f.addHistory('bf', ['Hello there, a history item memory would find']);
    const file = join(f.store.root, bad.path, 'adapter_model.safetensors');
    const bytes = readFileSync(file);
    bytes[bytes.length - 5] ^= 0xff;
    writeFileSync(file, bytes);
    rmSync(join(f.store.root, gone.path), { recursive: true });
    const fallbacks = () => ['adapter_corrupt', 'adapter_missing'].reduce((n, reason) => n + counter('memlora_generate_fallbacks_total', { reason }), 0);
    const fb0 = fallbacks();
    const refused0 = counter('memlora_generate_rejected_total', { code: 'adapter_unusable' });

    const [corrupt, missing, active] = await Promise.allSettled([
      e.generate(req('bf', { maxTokens: 4, adapterVersion: 1 }), never()),
      e.generate(req('bf', { maxTokens: 4, adapterVersion: 2 }), never()),
      e.generate(req('bf', { maxTokens: 4 }), never()),
    ]);
    expect(corrupt).toMatchObject({ status: 'rejected', reason: { code: 'adapter_unusable', details: { userId: 'bf', version: 1, reason: 'adapter_corrupt' } } });
    expect(missing).toMatchObject({ status: 'rejected', reason: { code: 'adapter_unusable', details: { userId: 'bf', version: 2, reason: 'adapter_missing' } } });
    expect(active).toMatchObject({ status: 'fulfilled', value: { text: 'zzzz', personalization: { mode: 'injected', adapterVersion: 3 } } });
    expect(getAdapterVersion(f.db, 'bf', 1)).toMatchObject({ status: 'quarantined', active: 0 });
    expect(getAdapterVersion(f.db, 'bf', 2)).toMatchObject({ status: 'missing', active: 0 });
    expect(getActiveAdapter(f.db, 'bf')!.version).toBe(3);
    expect(fallbacks()).toBe(fb0); // refusals, not fallbacks
    expect(counter('memlora_generate_rejected_total', { code: 'adapter_unusable' })).toBe(refused0 + 2);
    expect(f.logger.lines.some((l) => l.level === 'error' && l.msg === 'adapter quarantined; refusing the request that named it' && l.fields.version === 1)).toBe(true);
    // Named again: refused at once from the row, without another read.
    await expect(e.generate(req('bf', { adapterVersion: 1 }), never())).rejects.toMatchObject({ code: 'adapter_unusable', details: { reason: 'quarantined' } });
    expect(e.occupancy).toEqual({ active: 0, waiting: 0 });
  });

  it('of another base model: adapter_unusable with that reason, the row left alone; a read that fails now: adapter_unavailable, retry', async () => {
    await f.giveAdapter('mm', forcingAdapter(f.cfg, f.weights, q));
    const foreign = new AdapterStore(f.store.root, { config: { ...f.cfg, dFf: 48 }, name: 'another-model' });
    const other = f.engine({ adapters: { store: foreign, cache: new AdapterCache({ maxBytes: 1 << 24, registry: new Registry() }) } });
    await expect(other.generate(req('mm', { adapterVersion: 1 }), never())).rejects.toMatchObject({ code: 'adapter_unusable', details: { userId: 'mm', version: 1, reason: 'adapter_model_mismatch' } });
    expect(getAdapterVersion(f.db, 'mm', 1)).toMatchObject({ status: 'ready', active: 1 });

    const failing: AdapterReader = { read: () => Promise.reject(new Error('the load thread died')) };
    const flaky = f.engine({ adapters: { store: f.store, cache: new AdapterCache({ maxBytes: 1 << 24, registry: new Registry() }), reader: failing } });
    const err = await flaky.generate(req('mm', { adapterVersion: 1 }), never()).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'adapter_unavailable', retryAfterS: 1, details: { userId: 'mm', version: 1 } });
    expect(getAdapterVersion(f.db, 'mm', 1)).toMatchObject({ status: 'ready', active: 1 });
    // Unnamed, the same failure is the fallback it always was.
    expect((await flaky.generate(req('mm', { maxTokens: 2 }), never())).personalization.fallback).toEqual({ from: 'injected', reason: 'adapter_unavailable' });
  });
});
