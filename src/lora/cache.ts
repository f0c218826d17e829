/**
 * The serving cache of decoded adapters: a bytes-bounded LRU (lru-cache with maxSize and
 * sizeCalculation) keyed by adapter version, so a hot swap is simply a new key.
 *
 * Leases: a running batch holds a lease on each adapter it feeds. A leased entry leaves the LRU for a
 * side map of pinned entries, so no eviction can drop it; its bytes still count against the bound
 * (the LRU is trimmed to maxBytes - pinned bytes), and on its last release it returns to the LRU as
 * the most recently used entry. Only pinned bytes alone can exceed the bound.
 *
 * Misses: one load per key however many callers wait (single flight). The loader is the caller's
 * (normally store.read), async, so other requests go on meanwhile. A failed load reaches every
 * waiter and caches nothing. invalidate() drops a key at once for new callers; leases already
 * handed out keep their adapter until released (in-flight requests finish on their version).
 */
import { LRUCache } from 'lru-cache';
import type { Counter, Gauge, Histogram } from '../metrics.js';
import { Registry } from '../metrics.js';
import { type AnyAdapter, adapterBytes } from './adapter.js';
import { CURVE_TARGETS, HitCurve } from './hit-curve.js';

export interface AdapterLease {
  readonly key: string;
  readonly adapter: AnyAdapter;
  readonly bytes: number;
  /** Idempotent. The adapter must not be used after it. */
  release(): void;
}

export interface AdapterCacheOptions {
  /** Upper bound on the bytes of cached plus pinned adapters (pinned ones alone may exceed it). */
  maxBytes: number;
  /** Where the cache's metrics go; a private registry if absent. */
  registry?: Registry;
  /** Metric name prefix (default memlora_adapter_cache). */
  metricPrefix?: string;
  sizeOf?: (a: AnyAdapter) => number;
}

export interface AcquireOptions {
  /**
   * Cache warming, not a request: the hit curve moves the key up as the cache does but does not count
   * the lookup (the hit and miss counters do, like any other).
   */
  warming?: boolean;
}

/** The cache key of one adapter version. */
export const adapterKey = (userId: string, version: number): string => `${userId}#${version}`;

/** The user id of a key made by adapterKey (split at the last '#': user ids may contain '#'). */
export function userOfKey(key: string): string | undefined {
  const i = key.lastIndexOf('#');
  return i < 0 ? undefined : key.slice(0, i);
}

/** The version of a key made by adapterKey (NaN for a key it did not make). */
export function versionOfKey(key: string): number {
  const i = key.lastIndexOf('#');
  return i < 0 ? Number.NaN : Number(key.slice(i + 1));
}

/** One adapter the cache holds, as contents() lists it. */
export interface HeldAdapter {
  key: string;
  userId: string;
  version: number;
  bytes: number;
  /** Running requests (or warming) holding it now: it cannot be evicted while > 0. */
  leases: number;
}

interface Entry {
  key: string;
  adapter: AnyAdapter;
  bytes: number;
  refs: number;
  /** Invalidated while leased: dropped, not cached, on the last release. */
  stale: boolean;
}

interface Inflight {
  promise: Promise<Entry>;
  waiters: number;
  invalidated: boolean;
}

interface CacheMetrics {
  hits: Counter;
  misses: Counter;
  loads: Counter;
  loadFailures: Counter;
  evictions: Counter;
  loadSeconds: Histogram;
  bytes: Gauge;
  entries: Gauge;
  pinnedBytes: Gauge;
  pinnedEntries: Gauge;
}

/** Adapter loads take from a fraction of a millisecond (warm, small) to seconds (cold, huge). */
const LOAD_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export class AdapterCache {
  readonly maxBytes: number;
  private readonly lru: LRUCache<string, Entry> | undefined;
  /** Leased entries by key (current versions only; stale ones live on in their leases). */
  private readonly pinned = new Map<string, Entry>();
  private readonly inflight = new Map<string, Inflight>();
  private pinnedBytes = 0;
  private pinnedCount = 0;
  private readonly sizeOf: (a: AnyAdapter) => number;
  private readonly m: CacheMetrics;
  /**
   * Every lookup's stack distance: the hit rate this cache would have at any size (hit-curve.ts),
   * since it was made or last emptied with drop().
   */
  readonly curve = new HitCurve();
  private curveStart = new Date();

  constructor(options: AdapterCacheOptions) {
    if (!(options.maxBytes >= 0) || !Number.isFinite(options.maxBytes)) {
      throw Object.assign(new Error(`maxBytes must be a finite number >= 0, got ${options.maxBytes}`), { code: 'invalid_cache_size', value: options.maxBytes });
    }
    this.maxBytes = Math.floor(options.maxBytes);
    this.sizeOf = options.sizeOf ?? adapterBytes;
    const reg = options.registry ?? new Registry();
    const p = options.metricPrefix ?? 'memlora_adapter_cache';
    this.m = {
      hits: reg.counter(`${p}_hits_total`, 'Adapter cache lookups served from memory.'),
      misses: reg.counter(`${p}_misses_total`, 'Adapter cache lookups that had to wait for a load (started or joined).'),
      loads: reg.counter(`${p}_loads_total`, 'Adapter loads started (one per key however many requests wait).'),
      loadFailures: reg.counter(`${p}_load_failures_total`, 'Adapter loads that failed (nothing cached).'),
      evictions: reg.counter(`${p}_evictions_total`, 'Adapters dropped from the cache to respect its byte bound.'),
      loadSeconds: reg.histogram(`${p}_load_seconds`, 'Time to load one adapter on a miss, seconds.', [], LOAD_BUCKETS),
      bytes: reg.gauge(`${p}_bytes`, 'Bytes of adapters held: cached plus pinned.'),
      entries: reg.gauge(`${p}_entries`, 'Adapters held: cached plus pinned.'),
      pinnedBytes: reg.gauge(`${p}_pinned_bytes`, 'Bytes of adapters leased by running requests (never evicted).'),
      pinnedEntries: reg.gauge(`${p}_pinned_entries`, 'Adapters leased by running requests.'),
    };
    this.lru =
      this.maxBytes > 0
        ? new LRUCache<string, Entry>({
            maxSize: this.maxBytes,
            // lru-cache needs a positive size; a zero-byte adapter still takes a slot.
            sizeCalculation: (e) => Math.max(1, e.bytes),
            dispose: (_e, _k, reason) => {
              if (reason === 'evict') this.m.evictions.inc();
            },
          })
        : undefined;
    this.updateGauges();
    // The hit curve, for dashboards and alerts (e.g. the size for 90% hits above MEMLORA_CACHE_BYTES),
    // computed at each scrape: the curve's histogram holds a few hundred buckets at most.
    const curveRate = reg.gauge(`${p}_curve_hit_rate`, 'Hit rate an LRU of MEMLORA_CACHE_BYTES would have had on the lookups since start or the last full drop (NaN before the first lookup).');
    const curveSize = reg.gauge(`${p}_curve_size_bytes`, 'Smallest cache that would have reached the hit rate, from the same lookups (NaN: no size does, or no lookups yet).', ['hit_rate']);
    reg.onCollect(() => {
      curveRate.set(undefined, this.curve.lookups > 0 ? this.curve.hitRateAt(this.maxBytes) : Number.NaN);
      // No lookups: no points, so every size is null.
      const sizes = this.curve.sizesFor(CURVE_TARGETS);
      CURVE_TARGETS.forEach((t, i) => curveSize.set({ hit_rate: String(t) }, sizes[i] ?? Number.NaN));
    });
  }

  /**
   * The adapter of `key`, leased until release(). On a miss, `loader` runs once for all concurrent
   * callers of the key; its failure rejects every one of them and is not cached.
   */
  async acquire(key: string, loader: () => Promise<AnyAdapter>, opts: AcquireOptions = {}): Promise<AdapterLease> {
    const counted = !opts.warming;
    const pinned = this.pinned.get(key);
    if (pinned) {
      pinned.refs += 1;
      this.m.hits.inc();
      return this.lease(pinned, counted);
    }
    const cached = this.lru?.get(key);
    if (cached) {
      this.m.hits.inc();
      this.lru!.delete(key); // reason 'delete': moving to the pinned map is not an eviction
      cached.refs = 1;
      this.pin(cached);
      return this.lease(cached, counted);
    }
    this.m.misses.inc();
    let flight = this.inflight.get(key);
    if (!flight) flight = this.startLoad(key, loader);
    flight.waiters += 1;
    return this.lease(await flight.promise, counted);
  }

  private startLoad(key: string, loader: () => Promise<AnyAdapter>): Inflight {
    this.m.loads.inc();
    const stop = this.m.loadSeconds.startTimer();
    const flight: Inflight = { waiters: 0, invalidated: false, promise: undefined as unknown as Promise<Entry> };
    // Registered before the loader runs: a loader that throws synchronously must still unregister.
    this.inflight.set(key, flight);
    // The entry is pinned here, before any waiter resumes, with one reference per waiter.
    flight.promise = (async () => {
      let adapter: AnyAdapter;
      try {
        adapter = await loader();
      } catch (e) {
        this.m.loadFailures.inc();
        throw e;
      } finally {
        if (this.inflight.get(key) === flight) this.inflight.delete(key);
      }
      stop();
      const entry: Entry = { key, adapter, bytes: this.sizeOf(adapter), refs: flight.waiters, stale: flight.invalidated };
      this.pin(entry);
      return entry;
    })();
    return flight;
  }

  private pin(e: Entry): void {
    if (!e.stale) this.pinned.set(e.key, e);
    this.pinnedBytes += e.bytes;
    this.pinnedCount += 1;
    this.trim();
    this.updateGauges();
  }

  /** A lease on `e` for a lookup, which the hit curve records (a miss once its load is done; warming moves the key up uncounted). */
  private lease(e: Entry, counted: boolean): AdapterLease {
    this.curve.record(e.key, e.bytes, counted);
    let released = false;
    return {
      key: e.key,
      adapter: e.adapter,
      bytes: e.bytes,
      release: () => {
        if (released) return;
        released = true;
        this.release(e);
      },
    };
  }

  private release(e: Entry): void {
    e.refs -= 1;
    if (e.refs > 0) return;
    this.pinnedBytes -= e.bytes;
    this.pinnedCount -= 1;
    if (this.pinned.get(e.key) === e) this.pinned.delete(e.key);
    if (!e.stale) {
      if (this.lru) {
        this.lru.set(e.key, e);
        if (!this.lru.has(e.key)) this.m.evictions.inc(); // larger than the whole cache
      } else this.m.evictions.inc();
    }
    this.trim();
    this.updateGauges();
  }

  /** Evict least recently used entries until cached + pinned bytes fit the bound. */
  private trim(): void {
    if (!this.lru) return;
    while (this.lru.size > 0 && this.lru.calculatedSize + this.pinnedBytes > this.maxBytes) this.lru.pop();
  }

  /** Drop a key: new callers load afresh; current leases keep their adapter. Returns whether anything was held. */
  invalidate(key: string): boolean {
    this.curve.forget(key);
    let held = false;
    if (this.lru?.delete(key)) held = true;
    const p = this.pinned.get(key);
    if (p) {
      p.stale = true;
      this.pinned.delete(key);
      held = true;
    }
    const f = this.inflight.get(key);
    if (f) {
      f.invalidated = true;
      this.inflight.delete(key);
      held = true;
    }
    this.updateGauges();
    return held;
  }

  /** Drop every version of a user (user deletion, adapter quarantine). Returns how many keys were dropped. */
  invalidateUser(userId: string): number {
    return this.drop(userId).adapters;
  }

  /**
   * Drop the held adapters of `userId`, or of every user: invalidate() for each key, so new callers
   * load afresh and running requests finish on theirs. Says how many keys were dropped, the bytes of
   * the cached ones (freed now) and how many were leased or loading (their bytes leave as they finish).
   * Dropping everything also starts the hit curve afresh.
   */
  drop(userId?: string): { adapters: number; bytes: number; leased: number } {
    const keys = new Set<string>([...(this.lru?.keys() ?? []), ...this.pinned.keys(), ...this.inflight.keys()]);
    const out = { adapters: 0, bytes: 0, leased: 0 };
    if (userId === undefined) {
      // Emptied: the hit curve starts a new measurement.
      this.curve.reset();
      this.curveStart = new Date();
    }
    for (const k of keys) {
      if (userId !== undefined && userOfKey(k) !== userId) continue;
      const cached = this.lru?.peek(k);
      if (!this.invalidate(k)) continue;
      out.adapters += 1;
      if (cached) out.bytes += cached.bytes;
      else out.leased += 1;
    }
    return out;
  }

  /**
   * What the cache holds: leased adapters first (most leases first), then the cached ones, most
   * recently used first; recency is not touched. Adapters still loading are only counted in stats().
   */
  contents(): HeldAdapter[] {
    const held = (e: Entry, leases: number): HeldAdapter => ({ key: e.key, userId: userOfKey(e.key) ?? e.key, version: versionOfKey(e.key), bytes: e.bytes, leases });
    const leased = [...this.pinned.values()].map((e) => held(e, e.refs)).sort((a, b) => b.leases - a.leases);
    const cached = [...(this.lru?.entries() ?? [])].map(([, e]) => held(e, 0));
    return [...leased, ...cached];
  }

  /** When the hit curve's lookups start: the cache's creation, or the last drop() of everything. */
  get curveSince(): Date {
    return this.curveStart;
  }

  /** Lookups and loads since the cache was made (what /metrics exposes as counters). */
  counters(): { hits: number; misses: number; loads: number; loadFailures: number; evictions: number } {
    const { hits, misses, loads, loadFailures, evictions } = this.m;
    return { hits: hits.get(), misses: misses.get(), loads: loads.get(), loadFailures: loadFailures.get(), evictions: evictions.get() };
  }

  /** Whether a key is held (cached or leased) without touching its recency. */
  has(key: string): boolean {
    return this.pinned.has(key) || (this.lru?.has(key) ?? false);
  }

  /** Cached (not leased) keys, most recently used first. */
  cachedKeys(): string[] {
    return [...(this.lru?.keys() ?? [])];
  }

  stats(): { bytes: number; entries: number; pinnedBytes: number; pinnedEntries: number; loading: number } {
    return {
      // calculatedSize counts a zero-byte adapter as 1 (lru-cache sizes must be positive).
      bytes: (this.lru?.calculatedSize ?? 0) + this.pinnedBytes,
      entries: (this.lru?.size ?? 0) + this.pinnedCount,
      pinnedBytes: this.pinnedBytes,
      pinnedEntries: this.pinnedCount,
      loading: this.inflight.size,
    };
  }

  private updateGauges(): void {
    const s = this.stats();
    this.m.bytes.set(undefined, s.bytes);
    this.m.entries.set(undefined, s.entries);
    this.m.pinnedBytes.set(undefined, s.pinnedBytes);
    this.m.pinnedEntries.set(undefined, s.pinnedEntries);
  }
}
