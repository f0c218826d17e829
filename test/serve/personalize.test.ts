import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { getAdapterVersion, setAdapterStatus } from '../../src/db/queries/adapters.js';
import { adapterKey } from '../../src/lora/cache.js';
import { AdapterStore } from '../../src/lora/store.js';
import { AdapterLeaser, planRequest } from '../../src/serve/personalize.js';
import { makeServeFixture, randomStoredAdapter } from './fixtures.js';

const f = makeServeFixture();
afterAll(() => f.cleanup());
const adapters = { store: f.store, cache: f.cache };

describe('planRequest', () => {
  it('follows the mode table from the database', async () => {
    await f.giveAdapter('p-has', randomStoredAdapter(f.cfg, [0], 1, 1));
    const has = planRequest(f.db, adapters, 'p-has', 'auto');
    expect(has.kind === 'injected' && has.row).toMatchObject({ userId: 'p-has', version: 1 });
    expect(planRequest(f.db, adapters, 'p-has', 'injected').kind).toBe('injected');
    expect(planRequest(f.db, adapters, 'p-has', 'memory')).toEqual({ kind: 'memory' });
    expect(planRequest(f.db, adapters, 'p-has', 'vanilla')).toEqual({ kind: 'vanilla' });
    expect(planRequest(f.db, adapters, 'p-none', 'auto')).toEqual({ kind: 'memory', fallback: undefined });
    expect(planRequest(f.db, adapters, 'p-none', 'injected')).toEqual({ kind: 'memory', fallback: { from: 'injected', reason: 'no_adapter' } });
    // adapters switched off (the bench's baseline), or a version not ready: as if there were none
    expect(planRequest(f.db, null, 'p-has', 'auto').kind).toBe('memory');
    setAdapterStatus(f.db, 'p-has', 1, 'missing');
    expect(planRequest(f.db, adapters, 'p-has', 'auto').kind).toBe('memory');
    setAdapterStatus(f.db, 'p-has', 1, 'ready');
  });
});

describe('AdapterLeaser', () => {
  it('leases the request user\'s own version and refuses a row of anyone else', async () => {
    const leaser = new AdapterLeaser(f.db, adapters, f.logger);
    await f.giveAdapter('l-a', randomStoredAdapter(f.cfg, [0, 1], 1, 2));
    const row = getAdapterVersion(f.db, 'l-a', 1)!;
    const got = await leaser.acquire('l-a', row);
    expect('lease' in got && got.lease.key).toBe(adapterKey('l-a', 1));
    if ('lease' in got) got.lease.release();
    await expect(leaser.acquire('l-b', row)).rejects.toMatchObject({ code: 'isolation_violation' });
    // a row naming user l-b but pointing into l-a's directory: the store refuses the path
    const forged = { ...row, userId: 'l-b' };
    const res = await leaser.acquire('l-b', forged);
    expect(res).toEqual({ fallback: { from: 'injected', reason: 'adapter_missing' }, code: 'bad_adapter_path' });
    expect(getAdapterVersion(f.db, 'l-a', 1)!.status).toBe('ready'); // l-a's own version untouched
  });

  it('a hot swap drops the previous version from the cache once nobody uses it', async () => {
    const leaser = new AdapterLeaser(f.db, adapters, f.logger);
    await f.giveAdapter('swap', randomStoredAdapter(f.cfg, [0], 1, 3));
    const v1 = await leaser.acquire('swap', getAdapterVersion(f.db, 'swap', 1)!);
    await f.giveAdapter('swap', randomStoredAdapter(f.cfg, [1], 1, 4));
    const v2 = await leaser.acquire('swap', getAdapterVersion(f.db, 'swap', 2)!);
    expect(f.cache.has(adapterKey('swap', 1))).toBe(false); // stale: new requests would load afresh
    expect('lease' in v1 && v1.lease.adapter.pairs.length).toBeGreaterThan(0); // the running request keeps it
    for (const l of [v1, v2]) if ('lease' in l) l.lease.release();
    expect(f.cache.has(adapterKey('swap', 1))).toBe(false);
    expect(f.cache.has(adapterKey('swap', 2))).toBe(true);
  });

  it('missing files: the version is marked missing and deactivated; another base model: left alone', async () => {
    const leaser = new AdapterLeaser(f.db, adapters, f.logger);
    const gone = await f.giveAdapter('gone', randomStoredAdapter(f.cfg, [0], 1, 5));
    rmSync(join(f.store.root, gone.path), { recursive: true });
    expect(await leaser.acquire('gone', getAdapterVersion(f.db, 'gone', 1)!)).toEqual({ fallback: { from: 'injected', reason: 'adapter_missing' }, code: 'adapter_missing' });
    expect(getAdapterVersion(f.db, 'gone', 1)).toMatchObject({ status: 'missing', active: 0 });

    await f.giveAdapter('other', randomStoredAdapter(f.cfg, [0], 1, 6));
    const foreign = new AdapterStore(f.store.root, { config: { ...f.cfg, dFf: 48 }, name: 'another-model' });
    const leaser2 = new AdapterLeaser(f.db, { store: foreign, cache: f.cache }, f.logger);
    expect(await leaser2.acquire('other', getAdapterVersion(f.db, 'other', 1)!)).toEqual({ fallback: { from: 'injected', reason: 'adapter_unavailable' }, code: 'adapter_model_mismatch' });
    expect(getAdapterVersion(f.db, 'other', 1)).toMatchObject({ status: 'ready', active: 1 });
  });
});
