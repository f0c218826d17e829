/**
 * The bounded wait queue in front of the decode batch. Items are kept in arrival order, and counted
 * per key (the engine's key is the user id) so that one key's share of the queue can be bounded.
 * Which ready item takes a free row is the scheduler's choice (fair-share.ts), not the queue's.
 */
export class BoundedQueue<T> {
  private items: T[] = [];
  private readonly counts = new Map<string, number>();

  constructor(
    readonly max: number,
    private readonly keyOf: (item: T) => string = () => '',
  ) {
    if (!Number.isInteger(max) || max < 1) throw Object.assign(new Error(`queue bound must be a positive integer, got ${max}`), { code: 'invalid_queue_size', value: max });
  }

  get length(): number {
    return this.items.length;
  }

  get full(): boolean {
    return this.items.length >= this.max;
  }

  /** Items queued under `key`. */
  countOf(key: string): number {
    return this.counts.get(key) ?? 0;
  }

  /** Appends; false (and nothing added) when the queue is full. */
  push(item: T): boolean {
    if (this.full) return false;
    this.items.push(item);
    const key = this.keyOf(item);
    this.counts.set(key, this.countOf(key) + 1);
    return true;
  }

  /** Removes one item wherever it is; false if it was not queued. */
  remove(item: T): boolean {
    const i = this.items.indexOf(item);
    if (i < 0) return false;
    this.items.splice(i, 1);
    const key = this.keyOf(item);
    const n = this.countOf(key) - 1;
    if (n > 0) this.counts.set(key, n);
    else this.counts.delete(key);
    return true;
  }

  /** Removes and returns every item, in order. */
  drain(): T[] {
    const out = this.items;
    this.items = [];
    this.counts.clear();
    return out;
  }

  [Symbol.iterator](): Iterator<T> {
    return [...this.items][Symbol.iterator]();
  }
}
