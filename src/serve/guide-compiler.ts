/**
 * Guides compiled off the serving thread. A request's JSON schema, pattern, grammar or tools' calls
 * compile once per text (then kept), and a large one takes hundreds of milliseconds (a grammar of
 * 200 long rules: about 300 ms): on the serving thread that time would stop every user's decode
 * steps. `prepare` sends such a request's guide to a compile thread (guide-worker.ts) and keeps what
 * it compiled in this thread's caches, so that the request's arrival (the engine's guideOf) finds it
 * compiled. A request whose guide is compiled already, or that has none, does not wait for the thread.
 * Should the thread fail, the arrival compiles the guide itself, as it always could.
 */
import type { Worker } from 'node:worker_threads';
import { spawnModuleWorker } from '../util/module-worker.js';
import { adoptUsed, peekKept } from '../util/text-cache.js';
import { ServeError } from './errors.js';
import type { CompileReady, CompileReply, CompileRequest } from './guide-worker.js';
import { guideCompiles, guideOf, guideRequestOf } from './reply-guide.js';
import type { ServeRequest } from './types.js';

/** What the compile thread reports (metrics, tests). */
export interface GuideCompileEvents {
  /** The thread compiled a request's guide in `ms` (its own time, not the wait for the thread). */
  compiled?: (ms: number) => void;
  /** The thread could not compile it (`why`): the arrival compiles it on the serving thread. */
  fellBack?: (why: string) => void;
}

const isReady = (m: CompileReply | CompileReady): m is CompileReady => 'ready' in m;

export class GuideCompiler {
  private worker: Worker | null = null;
  private booted: Promise<void> | null = null;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  private closed = false;

  /**
   * @param maxWaiting most requests waiting for the thread at once; past it a request is refused with
   *   queue_full (429), as a full generation queue refuses it: guides waiting to compile hold their
   *   requests outside that queue, and without a bound a client could pile up any number of them
   */
  constructor(
    private readonly events: GuideCompileEvents = {},
    private readonly maxWaiting = 256,
  ) {}

  /**
   * Null where the request's arrival compiles nothing: no guide that compiles, or all of it kept
   * already. Else a promise that settles once the compile thread has compiled the guide and its
   * parts are kept here: rejected with the refusal its arrival would throw (unsupported_schema,
   * unsupported_regex, unsupported_grammar), or with queue_full where `maxWaiting` requests wait for
   * the thread already; resolved also where the thread failed, leaving the compile to the arrival.
   */
  prepare(req: ServeRequest): Promise<void> | null {
    if (this.closed || !guideCompiles(req) || peekKept(() => guideOf(req)).kept) return null;
    if (this.pending.size >= this.maxWaiting) {
      const retryAfterS = 1;
      return Promise.reject(
        new ServeError('queue_full', `${this.pending.size} requests are waiting for their guides to compile, the most allowed; retry in ${retryAfterS} s`, {
          retryAfterS,
          details: { compiling: this.pending.size, maxCompiling: this.maxWaiting, retryAfterS },
        }),
      );
    }
    const id = this.nextId++;
    const msg: CompileRequest = { id, req: guideRequestOf(req) };
    return new Promise<void>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      try {
        this.ensure().postMessage(msg);
      } catch (e) {
        this.pending.delete(id);
        this.fellBack(`the guide cannot be sent to the compile thread: ${e instanceof Error ? e.message : String(e)}`);
        resolve();
      }
    });
  }

  /**
   * Boots the compile thread now; resolves once it answers. Else the first guide that needs the
   * thread starts it and waits for its module imports (about 150 ms, once).
   */
  start(): Promise<void> {
    if (this.closed) return Promise.reject(new Error('the guide compiler is closed'));
    this.ensure();
    return this.booted!;
  }

  /** The compile thread's id while one runs (tests). */
  get threadId(): number | null {
    return this.worker?.threadId ?? null;
  }

  async close(): Promise<void> {
    this.closed = true;
    const w = this.worker;
    this.worker = null;
    this.booted = null;
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      p.resolve(); // the arrival compiles it, or refuses the request as the server shuts down
    }
    await w?.terminate();
  }

  private fellBack(why: string): void {
    this.events.fellBack?.(why);
  }

  private ensure(): Worker {
    if (this.worker) return this.worker;
    const w = spawnModuleWorker(import.meta.url, 'guide-worker', null);
    w.unref(); // an idle compile thread never keeps the process alive
    let boot!: { resolve: () => void; reject: (e: Error) => void };
    this.booted = new Promise<void>((resolve, reject) => (boot = { resolve, reject }));
    this.booted.catch(() => {});
    w.on('message', (reply: CompileReply | CompileReady) => {
      if (isReady(reply)) {
        boot.resolve();
        return;
      }
      const p = this.pending.get(reply.id);
      if (!p) return;
      this.pending.delete(reply.id);
      if (reply.ok) {
        adoptUsed(reply.used);
        this.events.compiled?.(reply.ms);
        p.resolve();
      } else if ('refused' in reply) {
        p.reject(new ServeError(reply.refused.code, reply.refused.message, { details: reply.refused.details }));
      } else {
        this.fellBack(reply.failed);
        p.resolve();
      }
    });
    const fail = (why: string) => {
      boot.reject(new Error(`guide compile thread ${why}`));
      if (this.worker === w) this.worker = null; // the next guide starts a fresh thread
      for (const [id, p] of this.pending) {
        this.pending.delete(id);
        this.fellBack(`guide compile thread ${why}`);
        p.resolve();
      }
    };
    w.on('error', (e) => fail(`failed: ${e.message}`));
    w.on('exit', (code) => fail(`exited (${code})`));
    this.worker = w;
    return w;
  }
}
