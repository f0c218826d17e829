/**
 * The adapter cache as operators see it (GET and DELETE /v1/admin/cache, GET /v1/admin/cache/curve,
 * and the cache figures of cache warming): what it holds, its lookups since start, the hit rate it
 * would have at every size (its hit curve, as data and as a plot), and dropping adapters from it, e.g.
 * to start a load test from a cold cache without restarting the server. Dropping is the cache's
 * invalidate(): new requests load afresh, running requests finish on the adapter they hold.
 */
import type { AdapterCache } from '../lora/cache.js';
import { CURVE_TARGETS } from '../lora/hit-curve.js';
import { lineChart } from '../plot/svg.js';

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

export interface CacheCurve {
  /** When the recorded lookups start: the server's start, or the last DELETE /v1/admin/cache of everything. */
  since: string;
  lookups: number;
  /** Lookups no cache size could serve: each adapter version's first (or first since it was dropped). */
  coldLookups: number;
  /** The hit rate of the largest cache: every lookup but the cold ones. */
  bestHitRate: number | null;
  maxBytes: number;
  /** The curve at MEMLORA_CACHE_BYTES (an ideal LRU of that size). */
  hitRateAtMaxBytes: number | null;
  /** The smallest cache reaching each hit rate (null: no size does). */
  sizeFor: Array<{ hitRate: number; bytes: number | null }>;
  /** Where the curve rises, smallest size first: an LRU of `bytes` serves `hitRate` of the lookups. */
  points: Array<{ bytes: number; hitRate: number }>;
}

export function cacheCurve(cache: AdapterCache): CacheCurve {
  const c = cache.curve;
  const any = c.lookups > 0;
  const points = c.points();
  const sizes = c.sizesFor(CURVE_TARGETS, points);
  return {
    since: cache.curveSince.toISOString(),
    lookups: c.lookups,
    coldLookups: c.coldLookups,
    bestHitRate: any ? 1 - c.coldLookups / c.lookups : null,
    maxBytes: cache.maxBytes,
    hitRateAtMaxBytes: any ? c.hitRateAt(cache.maxBytes) : null,
    sizeFor: CURVE_TARGETS.map((hitRate, i) => ({ hitRate, bytes: sizes[i] })),
    points,
  };
}

const MIB = 2 ** 20;

/** The curve as a plot: hit rate against cache size (MiB, log scale), the configured size marked. */
export function cacheCurveSvg(curve: CacheCurve): string {
  const pts = curve.points.map((p) => [p.bytes / MIB, p.hitRate] as [number, number]);
  const at = curve.maxBytes / MIB;
  return lineChart({
    title: curve.lookups > 0 ? `Adapter cache hit rate by size: ${curve.lookups} lookups since ${curve.since.slice(0, 19)}Z` : 'Adapter cache hit rate by size: no lookups yet',
    x: { label: 'cache size, MiB (log scale)', log: true },
    y: { label: 'hit rate (ideal LRU)', min: 0, max: 1 },
    series: [
      // A step at every bucket edge where the curve rises.
      { name: 'hit rate', points: pts.flatMap((p, i) => (i === 0 ? [p] : [[p[0], pts[i - 1][1]] as [number, number], p])) },
      ...(at > 0 ? [{ name: `configured, ${at < 10 ? at.toFixed(2) : at.toFixed(0)} MiB`, points: [[at, 0], [at, 1]] as Array<[number, number]> }] : []),
    ],
  });
}
