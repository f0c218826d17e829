/**
 * The bounded wait queue in front of the decode batch. Order is arrival order; the engine takes
 * requests out of it in that order among those ready to run (a request whose adapter is still
 * loading does not hold back the ones behind it).
 */
export class BoundedQueue<T> {
  private items: T[] = [];

  constructor(readonly max: number) {
    if (!Number.isInteger(max) || max < 1) throw Object.assign(new Error(`queue bound must be a positive integer, got ${max}`), { code: 'invalid_queue_size', value: max });
  }

  get length(): number {
    return this.items.length;
  }

  get full(): boolean {
    return this.items.length >= this.max;
  }

  /** Appends; false (and nothing added) when the queue is full. */
  push(item: T): boolean {
    if (this.full) return false;
    this.items.push(item);
    return true;
  }

  /** Removes one item wherever it is; false if it was not queued. */
  remove(item: T): boolean {
    const i = this.items.indexOf(item);
    if (i < 0) return false;
    this.items.splice(i, 1);
    return true;
  }

  /** Removes and returns every item, in order. */
  drain(): T[] {
    const out = this.items;
    this.items = [];
    return out;
  }

  [Symbol.iterator](): Iterator<T> {
    return [...this.items][Symbol.iterator]();
  }
}
