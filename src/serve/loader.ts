/**
 * Adapter loads off the serving thread: the same `read(path, sha256, {userId})` as AdapterStore,
 * answered by a worker thread (load-worker.ts) that owns its own store. Errors come back as
 * AdapterStoreError with their code, so callers handle them as they would the store's. An
 * operator's upload is checked and written by the same thread (`upload`, as uploadAdapter).
 */
import type { Worker } from 'node:worker_threads';
import type { Adapter } from '../lora/adapter.js';
import type { AdapterModel } from '../lora/format.js';
import { AdapterStoreError, type AdapterStoreErrorCode, type ReadOptions, type VerifyMode } from '../lora/store.js';
import { spawnModuleWorker } from '../util/module-worker.js';
import type { UploadedAdapter } from './adapter-upload.js';
import { ServeError, type ServeErrorCode } from './errors.js';
import type { LoadReady, LoadReply, LoadRequest, UploadRequest } from './load-worker.js';

export interface AdapterReader {
  read(path: string, sha256: string, options?: ReadOptions): Promise<Adapter>;
}

const isReady = (m: LoadReply | LoadReady): m is LoadReady => 'ready' in m;

export class WorkerAdapterLoader implements AdapterReader {
  private worker: Worker | null = null;
  /** Settles when the current thread has booted (its modules imported): rejected if it fails first. */
  private booted: Promise<void> | null = null;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: Adapter | UploadedAdapter) => void; reject: (e: Error) => void }>();
  private closed = false;

  constructor(
    private readonly root: string,
    private readonly model: AdapterModel,
    private readonly verify: VerifyMode = 'once',
  ) {}

  read(path: string, sha256: string, options: ReadOptions = {}): Promise<Adapter> {
    if (this.closed) return Promise.reject(new AdapterStoreError('adapter_io', 'the adapter loader is closed', { path }));
    if (options.userId === undefined) return Promise.reject(new AdapterStoreError('bad_adapter_path', 'a serving load names its user', { path }));
    const id = this.nextId++;
    const req: LoadRequest = { id, path, sha256, userId: options.userId };
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: Adapter | UploadedAdapter) => void, reject });
      this.ensure().postMessage(req);
    });
  }

  /**
   * An uploaded adapter checked and written as `userId`'s new version's files, as uploadAdapter does
   * it (its refusals come back as the same ServeErrors, a failed write as AdapterStoreError), on the
   * load thread. The buffers of `weights` and `peftConfig` are handed to the thread where they are
   * whole (no copy): the caller must not use them afterwards.
   */
  upload(userId: string, weights: Uint8Array, peftConfig?: Uint8Array): Promise<UploadedAdapter> {
    if (this.closed) return Promise.reject(new AdapterStoreError('adapter_io', 'the adapter loader is closed'));
    const id = this.nextId++;
    const msg: UploadRequest = { id, upload: { userId, weights, ...(peftConfig ? { peftConfig } : {}) } };
    const whole = [weights, peftConfig].filter((b): b is Uint8Array => b !== undefined && b.byteOffset === 0 && b.byteLength === b.buffer.byteLength).map((b) => b.buffer as ArrayBuffer);
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: Adapter | UploadedAdapter) => void, reject });
      this.ensure().postMessage(msg, [...new Set(whole)]);
    });
  }

  /**
   * Boots the load thread now and resolves once it answers reads: a server calls it while starting, so
   * that its first cache miss does not wait the ~150 ms a thread takes to import its modules. Reads
   * start the thread themselves when this was not called (or the thread has died since).
   */
  start(): Promise<void> {
    if (this.closed) return Promise.reject(new AdapterStoreError('adapter_io', 'the adapter loader is closed'));
    this.ensure();
    return this.booted!;
  }

  /** The load thread's id while one runs (null before the first start or read, after close, after it died). */
  get threadId(): number | null {
    return this.worker?.threadId ?? null;
  }

  private ensure(): Worker {
    if (this.worker) return this.worker;
    const w = spawnModuleWorker(import.meta.url, 'load-worker', { root: this.root, model: this.model, verify: this.verify });
    w.unref(); // idle loads never keep the process alive
    let boot!: { resolve: () => void; reject: (e: Error) => void };
    this.booted = new Promise<void>((resolve, reject) => (boot = { resolve, reject }));
    this.booted.catch(() => {}); // a read that started the thread learns of a failure from its own promise
    w.on('message', (reply: LoadReply | LoadReady) => {
      if (isReady(reply)) {
        boot.resolve();
        return;
      }
      const p = this.pending.get(reply.id);
      if (!p) return;
      this.pending.delete(reply.id);
      if (reply.ok) p.resolve('adapter' in reply ? reply.adapter : reply.uploaded);
      else if (reply.error.name === 'ServeError') p.reject(new ServeError(reply.error.code as ServeErrorCode, reply.error.message, { details: reply.error.details }));
      else p.reject(new AdapterStoreError((reply.error.code ?? 'adapter_io') as AdapterStoreErrorCode, reply.error.message, reply.error.details as Record<string, unknown> | undefined));
    });
    const fail = (why: string) => {
      boot.reject(new AdapterStoreError('adapter_io', `adapter load thread ${why}`)); // no-op once booted
      if (this.worker === w) this.worker = null; // the next read starts a fresh thread
      for (const [id, p] of this.pending) {
        this.pending.delete(id);
        p.reject(new AdapterStoreError('adapter_io', `adapter load thread ${why}`));
      }
    };
    w.on('error', (e) => fail(`failed: ${e.message}`));
    w.on('exit', (code) => fail(`exited (${code})`));
    this.worker = w;
    return w;
  }

  async close(): Promise<void> {
    this.closed = true;
    const w = this.worker;
    this.worker = null;
    this.booted = null;
    await w?.terminate();
  }
}
