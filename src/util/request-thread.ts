/**
 * A thread of this project's modules that answers requests: each request posted with an id, each
 * reply carrying it back. The thread's module posts `{ ready: true }` once its imports are done. It
 * is started by the first request (or `start`), never keeps the process alive when idle, and after
 * it dies (or fails to boot) the next request starts a fresh one; what was waiting on the dead one is
 * handed to `orphaned`. After `close`, requests and starts are refused with `closedError`.
 * The adapter-load thread (serve/loader.ts) and the guide-compile thread (serve/guide-compiler.ts)
 * are such threads.
 */
import type { Worker } from 'node:worker_threads';
import { spawnModuleWorker } from './module-worker.js';

/** A request waiting for its reply. */
export interface Waiting {
  resolve(value: unknown): void;
  reject(e: Error): void;
}

export interface RequestThreadOptions<Reply> {
  /** The module's place: the caller's import.meta.url, and the module's name beside it (no extension). */
  from: string;
  module: string;
  workerData?: unknown;
  /** Settles a request with its reply. */
  settle(reply: Reply, waiting: Waiting): void;
  /** The thread died or failed to boot (`why`), with this request waiting on it. */
  orphaned(waiting: Waiting, why: string): void;
  /** What a failed boot rejects `start()` with. */
  bootError(why: string): Error;
  /** What a request or start after `close` is refused with. */
  closedError(): Error;
}

export class RequestThread<Reply extends { id: number }> {
  private worker: Worker | null = null;
  /** Settles when the current thread has booted (its modules imported): rejected if it fails first. */
  private booted: Promise<void> | null = null;
  private nextId = 1;
  private readonly pending = new Map<number, Waiting>();
  private ended = false;

  constructor(private readonly opts: RequestThreadOptions<Reply>) {}

  /** Whether `close` was called. */
  get closed(): boolean {
    return this.ended;
  }

  /**
   * Posts `message` with a fresh id (its `id` field), the buffers in `transfer` handed over; the
   * promise settles as `settle` or `orphaned` settle it. A message that cannot be posted rejects.
   */
  protected request<T>(message: (id: number) => object, transfer: ArrayBuffer[] = []): Promise<T> {
    if (this.ended) return Promise.reject(this.opts.closedError());
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const waiting: Waiting = { resolve: resolve as (v: unknown) => void, reject };
      this.pending.set(id, waiting);
      try {
        this.ensure().postMessage(message(id), transfer);
      } catch (e) {
        this.pending.delete(id);
        reject(e instanceof Error ? e : new Error(String(e)));
      }
    });
  }

  /** Boots the thread now; resolves once it answers (rejected with `bootError` where it fails first). */
  start(): Promise<void> {
    if (this.ended) return Promise.reject(this.opts.closedError());
    this.ensure();
    return this.booted!;
  }

  /** The thread's id while one runs (null before the first start or request, after close, after it died). */
  get threadId(): number | null {
    return this.worker?.threadId ?? null;
  }

  /** Requests waiting for a reply. */
  protected get waiting(): number {
    return this.pending.size;
  }

  /** Ends the thread; what waits on it is orphaned (`closed`). */
  async close(): Promise<void> {
    this.ended = true;
    const w = this.worker;
    this.worker = null;
    this.booted = null;
    this.orphanAll('closed');
    await w?.terminate();
  }

  private orphanAll(why: string): void {
    for (const [id, waiting] of this.pending) {
      this.pending.delete(id);
      this.opts.orphaned(waiting, why);
    }
  }

  private ensure(): Worker {
    if (this.worker) return this.worker;
    const w = spawnModuleWorker(this.opts.from, this.opts.module, this.opts.workerData ?? null);
    w.unref(); // an idle thread never keeps the process alive
    let boot!: { resolve: () => void; reject: (e: Error) => void };
    this.booted = new Promise<void>((resolve, reject) => (boot = { resolve, reject }));
    this.booted.catch(() => {}); // a request that started the thread learns of a failure from its own promise
    w.on('message', (reply: Reply | { ready: true }) => {
      if ('ready' in reply) {
        boot.resolve();
        return;
      }
      const waiting = this.pending.get(reply.id);
      if (!waiting) return;
      this.pending.delete(reply.id);
      this.opts.settle(reply, waiting);
    });
    const fail = (why: string) => {
      boot.reject(this.opts.bootError(why)); // no-op once booted
      if (this.worker !== w) return; // closed, or replaced already: its requests were handed on then
      this.worker = null; // the next request starts a fresh thread
      this.orphanAll(why);
    };
    w.on('error', (e) => fail(`failed: ${e.message}`));
    w.on('exit', (code) => fail(`exited (${code})`));
    this.worker = w;
    return w;
  }
}
