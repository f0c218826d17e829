/**
 * Guides compiled off the serving thread. A request's JSON schema, pattern, grammar or tools' calls
 * compile once per text (then kept), and a large one takes hundreds of milliseconds (a grammar of
 * 200 long rules: about 300 ms): on the serving thread that time would stop every user's decode
 * steps. `prepare` sends such a request's guide to a compile thread (guide-worker.ts) and keeps what
 * it compiled in this thread's caches, so that the request's arrival (the engine's guideOf) finds it
 * compiled. A request whose guide is compiled already, or that has none, does not wait for the thread.
 * Should the thread fail, the arrival compiles the guide itself, as it always could.
 */
import { RequestThread } from '../util/request-thread.js';
import { adoptUsed, peekKept } from '../util/text-cache.js';
import { ServeError } from './errors.js';
import type { CompileReply, CompileRequest } from './guide-worker.js';
import { guideCompiles, guideOf, guideRequestOf } from './reply-guide.js';
import type { ServeRequest } from './types.js';

/** What the compile thread reports (metrics, tests). */
export interface GuideCompileEvents {
  /** The thread compiled a request's guide in `ms` (its own time, not the wait for the thread). */
  compiled?: (ms: number) => void;
  /** The thread could not compile it (`why`): the arrival compiles it on the serving thread. */
  fellBack?: (why: string) => void;
}

/** Whether the guide of `req` is kept here whole: compiled, or refused (its arrival throws the kept refusal at once). */
function keptHere(req: ServeRequest): boolean {
  try {
    return peekKept(() => guideOf(req)).kept;
  } catch {
    return true;
  }
}

export class GuideCompiler extends RequestThread<CompileReply> {
  /**
   * @param maxWaiting most requests waiting for the thread at once; past it a request is refused with
   *   queue_full (429), as a full generation queue refuses it: guides waiting to compile hold their
   *   requests outside that queue, and without a bound a client could pile up any number of them
   */
  constructor(
    private readonly events: GuideCompileEvents = {},
    private readonly maxWaiting = 256,
  ) {
    super({
      from: import.meta.url,
      module: 'guide-worker',
      settle: (reply, waiting) => {
        if (reply.ok) {
          adoptUsed(reply.used);
          events.compiled?.(reply.ms);
          waiting.resolve(undefined);
        } else if ('refused' in reply) {
          adoptUsed(reply.used); // the refusal is kept here too: the text's next request is refused at once
          waiting.reject(new ServeError(reply.refused.code, reply.refused.message, { details: reply.refused.details }));
        } else {
          events.fellBack?.(reply.failed);
          waiting.resolve(undefined);
        }
      },
      // The arrival compiles it (or, closed, refuses the request as the server shuts down).
      orphaned: (waiting, why) => {
        if (why !== 'closed') events.fellBack?.(`guide compile thread ${why}`);
        waiting.resolve(undefined);
      },
      bootError: (why) => new Error(`guide compile thread ${why}`),
      closedError: () => new Error('the guide compiler is closed'),
    });
  }

  /**
   * Null where the request's arrival compiles nothing: no guide that compiles, all of it kept
   * already (compiled, or refused), or the compiler closed. Else a promise that settles once the
   * compile thread has compiled the guide and its parts are kept here: rejected with the refusal its
   * arrival would throw (unsupported_schema, unsupported_regex, unsupported_grammar), or with
   * queue_full where `maxWaiting` requests wait for the thread already; resolved also where the
   * thread failed, leaving the compile to the arrival. The thread is started by the first guide that
   * needs it, which waits for its module imports (about 100 ms, once), unless `start` booted it.
   */
  /** Requests waiting for the thread to compile their guides. */
  get compiling(): number {
    return this.waiting;
  }

  prepare(req: ServeRequest): Promise<void> | null {
    if (this.closed || !guideCompiles(req) || keptHere(req)) return null;
    const compiling = this.waiting;
    if (compiling >= this.maxWaiting) {
      const retryAfterS = 1;
      return Promise.reject(
        new ServeError('queue_full', `${compiling} requests are waiting for their guides to compile, the most allowed; retry in ${retryAfterS} s`, {
          retryAfterS,
          details: { compiling, maxCompiling: this.maxWaiting, retryAfterS },
        }),
      );
    }
    return this.request<void>((id) => ({ id, req: guideRequestOf(req) }) satisfies CompileRequest).catch((e: unknown) => {
      if (e instanceof ServeError) throw e; // refused
      // Not posted (the thread cannot be started, the request cannot be sent): the arrival compiles it.
      this.events.fellBack?.(`the guide cannot be sent to the compile thread: ${e instanceof Error ? e.message : String(e)}`);
    });
  }
}
