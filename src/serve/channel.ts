/**
 * A one-consumer async channel: the engine pushes a request's events as the decode loop produces
 * them, the HTTP layer pulls them with for-await. Nothing is dropped; an error ends the stream.
 */
export class Channel<T> implements AsyncIterable<T> {
  private readonly buffered: T[] = [];
  private ended = false;
  private error: unknown = undefined;
  private waiter: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void } | undefined;

  push(value: T): void {
    if (this.ended) return;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w.resolve({ done: false, value });
    } else this.buffered.push(value);
  }

  end(): void {
    this.ended = true;
    this.settleWaiter();
  }

  fail(err: unknown): void {
    if (this.ended) return;
    this.error = err ?? new Error('stream failed');
    this.ended = true;
    this.settleWaiter();
  }

  private settleWaiter(): void {
    if (!this.waiter || this.buffered.length > 0) return;
    const w = this.waiter;
    this.waiter = undefined;
    if (this.error !== undefined) w.reject(this.error);
    else w.resolve({ done: true, value: undefined });
  }

  next(): Promise<IteratorResult<T>> {
    if (this.buffered.length > 0) return Promise.resolve({ done: false, value: this.buffered.shift()! });
    if (this.ended) {
      if (this.error !== undefined) {
        const e = this.error;
        this.error = undefined; // reported once; later calls see the end
        return Promise.reject(e);
      }
      return Promise.resolve({ done: true, value: undefined });
    }
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return { next: () => this.next() };
  }
}
