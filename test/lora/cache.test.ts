import { describe, expect, it } from 'vitest';
import type { Adapter } from '../../src/lora/adapter.js';
import { AdapterCache, adapterKey, userOfKey, type AdapterLease } from '../../src/lora/cache.js';
import { edgeAtOrAbove } from '../../src/lora/hit-curve.js';
import { Registry } from '../../src/metrics.js';

const KB = 1024;

/** An adapter whose tensors occupy exactly `bytes` (a multiple of 8). */
function fakeAdapter(bytes: number, tag = 0): Adapter {
  const half = bytes / 8;
  return {
    spec: { layers: [true], n: 1, r: 8 },
    scaling: 1,
    pairs: [{ target: { layer: 0, map: 'mlp.c_fc', inFeatures: 1, outFeatures: 1 }, rank: 8, A: new Float32Array(half).fill(tag), B: new Float32Array(half) }],
  };
}

function deferred<T>(): { promise: Promise<T>; resolve(v: T): void; reject(e: unknown): void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

function setup(maxBytes: number) {
  const registry = new Registry();
  const cache = new AdapterCache({ maxBytes, registry });
  const loads: string[] = [];
  const loader = (key: string, bytes = 10 * KB) => async (): Promise<Adapter> => {
    loads.push(key);
    return fakeAdapter(bytes);
  };
  const metric = (name: string): number => (registry.get(`memlora_adapter_cache_${name}`) as { get(): number }).get();
  /** Acquire and release at once (a request that used the adapter). */
  const touch = async (key: string, bytes = 10 * KB): Promise<void> => (await cache.acquire(key, loader(key, bytes))).release();
  return { registry, cache, loads, loader, metric, touch };
}

describe('AdapterCache single flight', () => {
  it('N concurrent acquires of one key cause one load and share the adapter', async () => {
    const { cache, metric } = setup(1024 * KB);
    const d = deferred<Adapter>();
    let calls = 0;
    const loader = (): Promise<Adapter> => {
      calls += 1;
      return d.promise;
    };
    const pending = Array.from({ length: 20 }, () => cache.acquire('alice#1', loader));
    expect(calls).toBe(1);
    expect(cache.stats().loading).toBe(1);
    const adapter = fakeAdapter(8 * KB);
    d.resolve(adapter);
    const leases = await Promise.all(pending);
    expect(calls).toBe(1);
    expect(leases.every((l) => l.adapter === adapter)).toBe(true);
    expect([metric('misses_total'), metric('loads_total'), metric('hits_total')]).toEqual([20, 1, 0]);
    expect(cache.stats()).toMatchObject({ pinnedEntries: 1, pinnedBytes: 8 * KB, entries: 1, loading: 0 });
    leases.slice(1).forEach((l) => l.release());
    expect(cache.stats().pinnedBytes).toBe(8 * KB); // one lease still out
    leases[0].release();
    leases[0].release(); // idempotent: must not unpin twice
    expect(cache.stats()).toMatchObject({ pinnedEntries: 0, pinnedBytes: 0, entries: 1, bytes: 8 * KB });
    const again = await cache.acquire('alice#1', loader);
    expect(again.adapter).toBe(adapter);
    expect(calls).toBe(1);
    expect(metric('hits_total')).toBe(1);
    again.release();
  });

  it('a failed load rejects every waiter, counts once, and caches nothing', async () => {
    const { cache, metric } = setup(1024 * KB);
    const d = deferred<Adapter>();
    let calls = 0;
    const pending = Array.from({ length: 5 }, () =>
      cache.acquire('bob#2', () => {
        calls += 1;
        return d.promise;
      }),
    );
    const boom = Object.assign(new Error('checksum mismatch'), { code: 'adapter_corrupt' });
    d.reject(boom);
    const results = await Promise.allSettled(pending);
    expect(results.every((r) => r.status === 'rejected' && r.reason === boom)).toBe(true);
    expect([calls, metric('load_failures_total'), metric('loads_total')]).toEqual([1, 1, 1]);
    expect(cache.has('bob#2')).toBe(false);
    expect(cache.stats()).toMatchObject({ entries: 0, loading: 0 });
    // a loader that throws synchronously is a failed load too, and the key is free again afterwards
    await expect(
      cache.acquire('bob#2', () => {
        throw boom;
      }),
    ).rejects.toBe(boom);
    const ok = await cache.acquire('bob#2', async () => fakeAdapter(KB));
    expect(metric('loads_total')).toBe(3);
    ok.release();
  });
});

describe('AdapterCache LRU', () => {
  it('evicts least recently used entries to stay within maxBytes', async () => {
    const { cache, loads, metric, touch } = setup(30 * KB);
    await touch('a#1');
    await touch('b#1');
    await touch('c#1');
    await touch('a#1'); // a is now the most recent
    expect(loads).toEqual(['a#1', 'b#1', 'c#1']);
    await touch('d#1'); // 40 KB > 30 KB: b goes
    expect(cache.cachedKeys()).toEqual(['d#1', 'a#1', 'c#1']);
    expect(metric('evictions_total')).toBe(1);
    expect(metric('bytes')).toBe(30 * KB);
    expect(metric('entries')).toBe(3);
    await touch('e#1', 20 * KB); // needs two slots: c and a go
    expect(cache.cachedKeys()).toEqual(['e#1', 'd#1']);
    expect(metric('evictions_total')).toBe(3);
    await touch('b#1');
    expect(loads.filter((k) => k === 'b#1')).toHaveLength(2); // evicted, so loaded again
    expect(cache.stats().bytes).toBeLessThanOrEqual(30 * KB);
  });

  it('pinned entries survive any pressure and count against the bound; released, they are evictable again', async () => {
    const { cache, loads, loader, metric, touch } = setup(30 * KB);
    const held: AdapterLease = await cache.acquire('hot#1', loader('hot#1'));
    for (const k of ['a', 'b', 'c', 'd', 'e', 'f']) await touch(`${k}#1`);
    expect(cache.has('hot#1')).toBe(true);
    expect(metric('pinned_bytes')).toBe(10 * KB);
    // cached + pinned stay within the bound: only 20 KB left for unpinned entries
    expect(cache.cachedKeys()).toEqual(['f#1', 'e#1']);
    expect(metric('bytes')).toBe(30 * KB);
    const second = await cache.acquire('hot#1', loader('hot#1'));
    expect(second.adapter).toBe(held.adapter);
    expect(loads.filter((k) => k === 'hot#1')).toHaveLength(1);
    held.release();
    expect(cache.has('hot#1')).toBe(true);
    second.release();
    expect(metric('pinned_bytes')).toBe(0);
    expect(cache.cachedKeys()[0]).toBe('hot#1'); // back in the LRU as the most recent
    for (const k of ['g', 'h', 'i']) await touch(`${k}#1`);
    expect(cache.has('hot#1')).toBe(false);
  });

  it('pinned bytes beyond the bound are allowed (a batch needs them) and the LRU empties to compensate', async () => {
    const { cache, loader, metric, touch } = setup(30 * KB);
    await touch('x#1');
    const leases = await Promise.all(['p#1', 'q#1', 'r#1', 's#1'].map((k) => cache.acquire(k, loader(k))));
    expect(metric('pinned_bytes')).toBe(40 * KB);
    expect(cache.cachedKeys()).toEqual([]);
    for (const l of leases) l.release();
    expect(cache.stats().bytes).toBeLessThanOrEqual(30 * KB);
    expect(cache.cachedKeys()).toEqual(['s#1', 'r#1', 'q#1']);
  });

  it('an adapter larger than the whole cache is served but not kept', async () => {
    const { cache, loads, metric, touch } = setup(30 * KB);
    await touch('big#1', 64 * KB);
    await touch('big#1', 64 * KB);
    expect(loads).toEqual(['big#1', 'big#1']);
    expect(metric('evictions_total')).toBe(2);
    expect(cache.stats()).toMatchObject({ bytes: 0, entries: 0 });
  });

  it('maxBytes 0 disables caching but still single-flights and pins', async () => {
    const { cache, loads, touch } = setup(0);
    await touch('a#1');
    await touch('a#1');
    expect(loads).toEqual(['a#1', 'a#1']);
    expect(() => new AdapterCache({ maxBytes: -1 })).toThrow(/maxBytes/);
  });
});

describe('AdapterCache invalidation', () => {
  it('invalidate drops a key for new callers while current leases keep their adapter', async () => {
    const { cache, loads, loader, metric } = setup(100 * KB);
    const old = await cache.acquire('alice#1', loader('alice#1'));
    expect(cache.invalidate('alice#1')).toBe(true);
    expect(cache.has('alice#1')).toBe(false);
    const fresh = await cache.acquire('alice#1', loader('alice#1'));
    expect(fresh.adapter).not.toBe(old.adapter);
    expect(loads).toEqual(['alice#1', 'alice#1']);
    expect(metric('pinned_bytes')).toBe(20 * KB);
    old.release();
    expect(metric('pinned_bytes')).toBe(10 * KB);
    fresh.release();
    expect(cache.cachedKeys()).toEqual(['alice#1']);
    const hit = await cache.acquire('alice#1', loader('alice#1'));
    expect(hit.adapter).toBe(fresh.adapter); // the stale one never came back
    hit.release();
  });

  it('invalidating a key during its load hands waiters the result but does not cache it', async () => {
    const { cache } = setup(100 * KB);
    const d = deferred<Adapter>();
    const p = cache.acquire('alice#3', () => d.promise);
    cache.invalidate('alice#3');
    d.resolve(fakeAdapter(KB));
    const lease = await p;
    lease.release();
    expect(cache.has('alice#3')).toBe(false);
    expect(cache.stats()).toMatchObject({ entries: 0, pinnedBytes: 0 });
  });

  it('invalidateUser drops every version of that user only (ids may contain #)', async () => {
    const { cache, touch } = setup(100 * KB);
    for (const k of [adapterKey('u', 1), adapterKey('u', 2), adapterKey('u#x', 3), adapterKey('v', 1)]) await touch(k);
    expect(userOfKey(adapterKey('u#x', 3))).toBe('u#x');
    expect(cache.invalidateUser('u')).toBe(2);
    expect(cache.cachedKeys().sort()).toEqual(['u#x#3', 'v#1']);
  });
});

describe('AdapterCache contents and drop', () => {
  it('lists leased adapters first, then cached ones most recent first, without touching recency', async () => {
    const { cache, touch, loader } = setup(100 * KB);
    await touch(adapterKey('a', 1));
    await touch(adapterKey('b', 2), 20 * KB);
    await touch(adapterKey('c', 1));
    const held1 = await cache.acquire(adapterKey('a', 1), loader('a#1'));
    const held2 = await cache.acquire(adapterKey('a', 1), loader('a#1'));
    const held3 = await cache.acquire(adapterKey('u#x', 4), loader('u#x#4', 8 * KB));
    expect(cache.contents()).toEqual([
      { key: 'a#1', userId: 'a', version: 1, bytes: 10 * KB, leases: 2 },
      { key: 'u#x#4', userId: 'u#x', version: 4, bytes: 8 * KB, leases: 1 },
      { key: 'c#1', userId: 'c', version: 1, bytes: 10 * KB, leases: 0 },
      { key: 'b#2', userId: 'b', version: 2, bytes: 20 * KB, leases: 0 },
    ]);
    expect(cache.cachedKeys()).toEqual(['c#1', 'b#2']); // listing did not make b the most recent
    for (const l of [held1, held2, held3]) l.release();
    expect(cache.contents().map((e) => [e.key, e.leases])).toEqual([['u#x#4', 0], ['a#1', 0], ['c#1', 0], ['b#2', 0]]);
  });

  it("drop(userId) drops that user's versions only; drop() every one, leased ones when released", async () => {
    const { cache, touch, loader, loads } = setup(100 * KB);
    for (const k of [adapterKey('u', 1), adapterKey('u', 2), adapterKey('u#x', 3), adapterKey('v', 1)]) await touch(k);
    const leased = await cache.acquire(adapterKey('v', 1), loader('v#1'));
    const slow = deferred<Adapter>();
    const loading = cache.acquire(adapterKey('w', 1), () => slow.promise);
    expect(cache.drop('u')).toEqual({ adapters: 2, bytes: 20 * KB, leased: 0 });
    expect(cache.cachedKeys()).toEqual(['u#x#3']);
    expect(cache.drop()).toEqual({ adapters: 3, bytes: 10 * KB, leased: 2 }); // u#x#3 freed; v#1 leased, w#1 loading
    expect(cache.stats()).toMatchObject({ entries: 1, bytes: 10 * KB, pinnedEntries: 1 }); // v#1 until released
    expect(leased.adapter.pairs).toHaveLength(1); // the running request keeps its adapter
    leased.release();
    slow.resolve(fakeAdapter(KB));
    (await loading).release();
    expect(cache.stats()).toMatchObject({ entries: 0, bytes: 0, pinnedEntries: 0, loading: 0 });
    expect(cache.drop()).toEqual({ adapters: 0, bytes: 0, leased: 0 });
    const before = loads.length;
    await touch(adapterKey('u', 1)); // dropped: loaded afresh
    expect(loads.length).toBe(before + 1);
  });
});

describe('AdapterCache metrics', () => {
  it('exposes counters, the load histogram and gauges in the registry, and the counters through counters()', async () => {
    const { cache, registry, touch } = setup(15 * KB);
    await touch('a#1');
    await touch('a#1');
    await touch('b#1');
    await cache.acquire('c#1', async () => Promise.reject(new Error('gone'))).catch(() => undefined);
    const text = registry.expose();
    for (const line of [
      'memlora_adapter_cache_hits_total 1',
      'memlora_adapter_cache_misses_total 3',
      'memlora_adapter_cache_loads_total 3',
      'memlora_adapter_cache_load_failures_total 1',
      'memlora_adapter_cache_evictions_total 1',
      'memlora_adapter_cache_load_seconds_count 2',
      `memlora_adapter_cache_bytes ${10 * KB}`,
      'memlora_adapter_cache_entries 1',
      'memlora_adapter_cache_pinned_bytes 0',
    ]) {
      expect(text).toContain(`${line}\n`);
    }
    expect(cache.counters()).toEqual({ hits: 1, misses: 3, loads: 3, loadFailures: 1, evictions: 1 });
    // The hit curve: a, a again (10 KiB back: a hit in any cache of 10 KiB or more), b; c never loaded.
    expect(text).toContain(`memlora_adapter_cache_curve_hit_rate ${1 / 3}\n`);
    expect(text).toContain('memlora_adapter_cache_curve_size_bytes{hit_rate="0.5"} NaN\n'); // unreachable: 2 of 3 were first lookups
    cache.curve.record('a#1', 10 * KB); // b and a since: 20 KiB back
    cache.curve.record('a#1', 10 * KB); // 10 KiB back: 3 of 5 hit within 20 KiB (the bucket edge at or above it)
    expect(registry.expose()).toContain(`memlora_adapter_cache_curve_size_bytes{hit_rate="0.5"} ${edgeAtOrAbove(20 * KB)}\n`);
  });
});
