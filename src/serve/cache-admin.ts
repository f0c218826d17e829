/**
 * The adapter cache as operators see it (GET and DELETE /v1/admin/cache, and the cache figures of
 * cache warming): what it holds, its lookups since start, and dropping adapters from it, e.g. to start
 * a load test from a cold cache without restarting the server. Dropping is the cache's invalidate():
 * new requests load afresh, running requests finish on the adapter they hold.
 */
import type { AdapterCache } from '../lora/cache.js';

export interface CacheStats {
  /** Bytes of adapters held, cached plus leased (the bound is maxBytes; leased ones alone may exceed it). */
  bytes: number;
  /** MEMLORA_CACHE_BYTES. */
  maxBytes: number;
  entries: number;
  /** Held by running requests (or warming) now, so not evictable. */
  leasedBytes: number;
  leasedEntries: number;
  /** Adapters being read from the store now. */
  loading: number;
}

export interface CacheCounters {
  hits: number;
  misses: number;
  loads: number;
  loadFailures: number;
  evictions: number;
  /** hits / (hits + misses); null before the first lookup. */
  hitRate: number | null;
}

export interface CacheContents {
  cache: CacheStats;
  counters: CacheCounters;
  /** Leased adapters first (most leases first), then cached ones, most recently used first; at most `limit`. */
  adapters: Array<{ userId: string; version: number; bytes: number; leases: number }>;
  /** More adapters are held than listed. */
  truncated: boolean;
}

export interface CacheDrop {
  /** Versions dropped; bytes freed at once (cached ones); how many were leased or loading (freed as they finish). */
  dropped: { adapters: number; bytes: number; leased: number };
  cache: CacheStats;
}

export function cacheStats(cache: AdapterCache): CacheStats {
  const s = cache.stats();
  return { bytes: s.bytes, maxBytes: cache.maxBytes, entries: s.entries, leasedBytes: s.pinnedBytes, leasedEntries: s.pinnedEntries, loading: s.loading };
}

export function cacheContents(cache: AdapterCache, limit: number): CacheContents {
  const held = cache.contents();
  const c = cache.counters();
  const lookups = c.hits + c.misses;
  return {
    cache: cacheStats(cache),
    counters: { ...c, hitRate: lookups > 0 ? c.hits / lookups : null },
    adapters: held.slice(0, limit).map(({ userId, version, bytes, leases }) => ({ userId, version, bytes, leases })),
    truncated: held.length > limit,
  };
}

/** Drop the adapters of `userId`, or all of them. */
export function dropCached(cache: AdapterCache, userId?: string): CacheDrop {
  const dropped = cache.drop(userId);
  return { dropped, cache: cacheStats(cache) };
}
