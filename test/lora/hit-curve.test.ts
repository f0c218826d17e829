/**
 * The hit curve against two independent references: the stack distance of every lookup computed by
 * scanning a recency list, and the served AdapterCache itself (lru-cache underneath) replaying the same
 * lookups at several sizes, whose hits must be exactly the curve's at those sizes.
 */
import { describe, expect, it } from 'vitest';
import type { Adapter } from '../../src/lora/adapter.js';
import { AdapterCache } from '../../src/lora/cache.js';
import { HitCurve, bucketEdge, edgeAtOrAbove } from '../../src/lora/hit-curve.js';
import { Rng } from '../../src/util/rng.js';

/** Lookups of `keys` keys with Zipf-like popularity; each key has a fixed size. */
function workload(seed: number, keys: number, lookups: number): { key: string; bytes: number }[] {
  const rng = new Rng(seed);
  const size = Array.from({ length: keys }, () => 1000 + rng.int(20_000));
  const weights = Array.from({ length: keys }, (_, k) => 1 / (k + 1));
  const sum = weights.reduce((a, b) => a + b, 0);
  return Array.from({ length: lookups }, () => {
    let u = rng.next() * sum;
    let k = 0;
    while ((u -= weights[k]) > 0 && k < keys - 1) k += 1;
    return { key: `u${k}#1`, bytes: size[k] };
  });
}

describe('HitCurve', () => {
  it('bucket edges: the smallest edge at or above a distance, about 9% apart', () => {
    for (const d of [1, 2, 3, 17, 1000, 123_456, 1.5 * 2 ** 30]) {
      const e = edgeAtOrAbove(d);
      expect(e).toBeGreaterThanOrEqual(d);
      expect(e).toBeLessThanOrEqual(Math.max(d + 1, d * 1.1));
    }
    expect(bucketEdge(80)).toBe(1024);
    expect(edgeAtOrAbove(1024)).toBe(1024);
    expect(edgeAtOrAbove(1025)).toBe(bucketEdge(81));
  });

  it('every lookup gets the stack distance a scan of the recency list gives (through compactions and forgetting)', () => {
    const curve = new HitCurve();
    const recency: { key: string; bytes: number }[] = []; // most recent first
    const rng = new Rng(3);
    const lookups = workload(1, 300, 6000); // > 1024 positions: the tree is compacted several times
    for (const [i, l] of lookups.entries()) {
      if (i % 500 === 499) {
        const victim = recency[rng.int(recency.length)].key;
        curve.forget(victim);
        recency.splice(recency.findIndex((r) => r.key === victim), 1);
      }
      const at = recency.findIndex((r) => r.key === l.key);
      const expected = at < 0 ? null : recency.slice(0, at).reduce((n, r) => n + r.bytes, 0) + l.bytes;
      expect(curve.record(l.key, l.bytes)).toBe(expected);
      if (at >= 0) recency.splice(at, 1);
      recency.unshift(l);
    }
    expect(curve.lookups).toBe(lookups.length);
    expect(curve.coldLookups).toBeGreaterThan(300);
  });

  it('predicts exactly the hits of the served cache at every size (edges at or above the largest adapter)', async () => {
    const lookups = workload(2, 200, 3000);
    const curve = new HitCurve();
    for (const l of lookups) curve.record(l.key, l.bytes);
    const points = curve.points();
    expect(points.length).toBeGreaterThan(10);
    for (let i = 1; i < points.length; i++) expect(points[i].hitRate).toBeGreaterThan(points[i - 1].hitRate);
    const largest = Math.max(...lookups.map((l) => l.bytes));
    const sizes = [edgeAtOrAbove(largest), edgeAtOrAbove(largest * 3), edgeAtOrAbove(300_000), edgeAtOrAbove(1_000_000), points.at(-1)!.bytes];
    for (const maxBytes of sizes) {
      const bytesOf = new Map<Adapter, number>();
      const cache = new AdapterCache({ maxBytes, sizeOf: (a) => bytesOf.get(a as Adapter)! });
      let hits = 0;
      for (const l of lookups) {
        let loaded = false;
        const lease = await cache.acquire(l.key, async () => {
          loaded = true;
          const a = { spec: { layers: [true], n: 1, r: 8 }, scaling: 1, pairs: [] } as unknown as Adapter;
          bytesOf.set(a, l.bytes);
          return a;
        });
        if (!loaded) hits += 1;
        lease.release();
      }
      expect(curve.hitRateAt(maxBytes) * lookups.length, `cache of ${maxBytes} bytes`).toBeCloseTo(hits, 9);
      expect(cache.curve.points()).toEqual(points); // the cache records its own lookups, whatever its size
    }
    // Every key fits at the last point: only the cold lookups miss.
    expect(points.at(-1)!.hitRate).toBeCloseTo(1 - curve.coldLookups / lookups.length, 12);
    expect(curve.sizeFor(0.5)).toBe(points.find((p) => p.hitRate >= 0.5)!.bytes);
    expect(curve.sizeFor(1)).toBeNull();
  });

  it('an uncounted lookup (cache warming) moves the key up without being one of the curve\'s lookups', () => {
    const curve = new HitCurve();
    expect(curve.record('a#1', 10, false)).toBeNull();
    expect(curve.record('b#1', 20, false)).toBeNull();
    expect(curve.lookups).toBe(0);
    expect(curve.record('a#1', 10)).toBe(30); // warmed: found with b above it
    expect(curve.record('b#1', 20, false)).toBe(30);
    expect(curve.record('a#1', 10)).toBe(30);
    expect([curve.lookups, curve.coldLookups]).toEqual([2, 0]);
    expect(curve.points()).toEqual([{ bytes: 30, hitRate: 1 }]);
  });

  it('follows at most maxKeys keys: the least recently used is forgotten, exact for caches within them', () => {
    const bounded = new HitCurve(50);
    const full = new HitCurve();
    const lookups = workload(4, 200, 3000);
    let beyond = 0;
    for (const l of lookups) {
      const d = full.record(l.key, l.bytes);
      const b = bounded.record(l.key, l.bytes);
      if (b !== null) expect(b).toBe(d);
      else if (d !== null) beyond += 1; // it had left the 50 followed keys
    }
    expect(beyond).toBeGreaterThan(0);
    expect(bounded.coldLookups).toBe(full.coldLookups + beyond);
    // A cache smaller than the 50 smallest adapters holds fewer than 50 keys: the curves agree there.
    const small = 50 * 1000;
    expect(bounded.hitRateAt(small)).toBe(full.hitRateAt(small));
    expect(bounded.hitRateAt(1e9)).toBeLessThan(full.hitRateAt(1e9));
  });

  it('reset starts a new measurement', () => {
    const curve = new HitCurve();
    curve.record('a#1', 10);
    curve.record('a#1', 10);
    expect(curve.points()).toEqual([{ bytes: 10, hitRate: 0.5 }]);
    curve.reset();
    expect(curve.record('a#1', 10)).toBeNull();
    expect(curve.points()).toEqual([]);
    expect(curve.hitRateAt(100)).toBe(0);
  });
});
