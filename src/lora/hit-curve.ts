/**
 * The adapter cache's hit rate at every cache size, from the lookups the server actually served:
 * how many bytes would an operator need for 90% hits? (Mattson's stack algorithm, by bytes.)
 *
 * An LRU bounded by bytes that evicts from its least recently used end holds, after every lookup, the
 * longest run of most recently used keys that fits. So a lookup of key k hits in such a cache of C
 * bytes exactly when k's bytes plus the bytes of the distinct keys used since k's previous lookup fit
 * in C: that sum is the lookup's *stack distance*. Each key sits in a Fenwick tree at the position of
 * its latest lookup, so the distance is one prefix sum, O(log n) per lookup; the distances go into a
 * histogram with eight buckets per doubling of bytes, so the curve is exact at the bucket edges and
 * costs constant memory. A key's first lookup (or its first after it was forgotten) hits in no cache.
 *
 * This is the curve of an ideal LRU of each size, exact for sizes at least the largest adapter's (the
 * served cache refuses an adapter larger than itself without evicting the others, where the stack
 * counts it). Under concurrency the served cache departs from it a little either way: adapters
 * leased by running requests cannot be evicted and become most recently used when released, not when
 * looked up, and requests that wait for one load count as misses there (in a bench run of 2,347
 * lookups at 150 MiB: 0.569 served against 0.558 on the curve).
 */

/** Histogram buckets per doubling of bytes: edges 2^(i/8), about 9% apart. */
const PER_DOUBLING = 8;

/** The upper edge of bucket i, in bytes (a whole number; the smallest edges repeat). */
export const bucketEdge = (i: number): number => Math.ceil(2 ** (i / PER_DOUBLING));

/** The bucket of a distance of d bytes, named by its edge: the smallest bucket edge >= d. */
export function edgeAtOrAbove(d: number): number {
  // A first guess whose edge is at most d, then up: edges never decrease.
  let i = Math.max(0, Math.floor(Math.log2(Math.max(1, d)) * PER_DOUBLING) - 1);
  while (bucketEdge(i) < d) i += 1;
  return bucketEdge(i);
}

export interface HitCurvePoint {
  /** Cache size in bytes. */
  bytes: number;
  /** Lookups that an LRU of this many bytes would have served from memory, as a share of all. */
  hitRate: number;
}

/** Hit rates whose smallest cache size the curve reports (the admin route, /metrics). */
export const CURVE_TARGETS = [0.5, 0.8, 0.9, 0.95, 0.99] as const;

/** Keys the curve follows by default: the most recently used; older ones are forgotten. */
export const DEFAULT_TRACKED_KEYS = 100_000;

export class HitCurve {
  /**
   * At most this many keys are followed (about 150 bytes each): past it the least recently used is
   * forgotten, so its next lookup counts as cold. The curve is then exact up to the bytes of the
   * `maxKeys` most recently used adapters, far beyond any cache a server holds.
   */
  constructor(private readonly maxKeys = DEFAULT_TRACKED_KEYS) {}

  /** Fenwick tree over lookup positions (1-based): the bytes of the key last looked up there. */
  private tree = new Float64Array(1 + 1024);
  private next = 1;
  private readonly keys = new Map<string, { pos: number; bytes: number }>();
  /** Lookups by the edge of their distance's bucket. */
  private readonly hist = new Map<number, number>();
  private cold = 0;
  private total = 0;

  /** Lookups recorded. */
  get lookups(): number {
    return this.total;
  }

  /** Lookups that no cache could have served (a key's first, or first since it was forgotten or left the followed keys). */
  get coldLookups(): number {
    return this.cold;
  }

  /**
   * Record a lookup of `key` holding `bytes`; returns its stack distance (the cache bytes that would
   * have served it), or null for a cold lookup. `counted` false (cache warming): the key becomes the
   * most recently used, as in the cache, but the lookup is not one of the curve's.
   */
  record(key: string, bytes: number, counted = true): number | null {
    const prev = this.keys.get(key);
    let distance: number | null = null;
    if (prev) {
      // Bytes of the distinct keys looked up since this one: every key counts at its latest position only.
      distance = this.prefix(this.next - 1) - this.prefix(prev.pos) + bytes;
      this.add(prev.pos, -prev.bytes);
      this.keys.delete(key); // out of the tree and the map before a compaction renumbers the map
    }
    if (counted) {
      this.total += 1;
      if (distance === null) this.cold += 1;
      else {
        const edge = edgeAtOrAbove(distance);
        this.hist.set(edge, (this.hist.get(edge) ?? 0) + 1);
      }
    }
    if (this.next >= this.tree.length) this.compact();
    const pos = this.next++;
    this.add(pos, bytes);
    this.keys.set(key, { pos, bytes });
    // The map is in lookup order (a key is deleted and set again at each lookup): its first is the oldest.
    if (this.keys.size > this.maxKeys) this.forget(this.keys.keys().next().value as string);
    return distance;
  }

  /** Forget a key (dropped from the cache, its version deleted): its next lookup is cold. */
  forget(key: string): void {
    const prev = this.keys.get(key);
    if (!prev) return;
    this.add(prev.pos, -prev.bytes);
    this.keys.delete(key);
  }

  /** Forget every key and every recorded lookup: a new measurement starts. */
  reset(): void {
    this.tree = new Float64Array(1 + 1024);
    this.next = 1;
    this.keys.clear();
    this.hist.clear();
    this.cold = 0;
    this.total = 0;
  }

  /** The hit rate of an LRU of `bytes` bytes (exact where `bytes` is a bucket edge; else the edge below). */
  hitRateAt(bytes: number): number {
    if (this.total === 0) return 0;
    let hits = 0;
    for (const [edge, n] of this.hist) if (edge <= bytes) hits += n;
    return hits / this.total;
  }

  /** The curve at the bucket edges where it rises, from the first to the last, smallest size first. */
  points(): HitCurvePoint[] {
    const edges = [...this.hist.keys()].sort((a, b) => a - b);
    const out: HitCurvePoint[] = [];
    let hits = 0;
    for (const edge of edges) {
      hits += this.hist.get(edge)!;
      out.push({ bytes: edge, hitRate: hits / this.total });
    }
    return out;
  }

  /** The smallest cache size reaching `hitRate`, or null when no size does (cold lookups cap it). */
  sizeFor(hitRate: number): number | null {
    return this.sizesFor([hitRate])[0];
  }

  /** sizeFor of each hit rate, from one pass over the curve (`points`: the curve, when already computed). */
  sizesFor(hitRates: readonly number[], points: readonly HitCurvePoint[] = this.points()): Array<number | null> {
    return hitRates.map((r) => points.find((p) => p.hitRate >= r)?.bytes ?? null);
  }

  private add(pos: number, v: number): void {
    for (let i = pos; i < this.tree.length; i += i & -i) this.tree[i] += v;
  }

  private prefix(pos: number): number {
    let s = 0;
    for (let i = pos; i > 0; i -= i & -i) s += this.tree[i];
    return s;
  }

  /** Renumber the live keys 1..n in lookup order into a tree twice their number (at least 1024). */
  private compact(): void {
    const live = [...this.keys.entries()].sort((a, b) => a[1].pos - b[1].pos);
    this.tree = new Float64Array(1 + Math.max(1024, 2 * live.length));
    this.next = 1;
    for (const [, v] of live) {
      v.pos = this.next++;
      this.add(v.pos, v.bytes);
    }
  }
}
