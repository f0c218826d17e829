/**
 * The guide-compile thread: compiles a request's guide (its JSON schema, pattern, grammar or tools'
 * calls, as guideOf does on arrival) and posts back what it took from the compile caches, so that the
 * serving thread keeps it and its guideOf finds everything compiled. A large grammar takes hundreds of
 * milliseconds to compile; here it holds up no decode step.
 */
import { parentPort } from 'node:worker_threads';
import { type Used, recordUsed } from '../util/text-cache.js';
import { ServeError } from './errors.js';
import { type GuideRequest, guideOf } from './reply-guide.js';

export interface CompileRequest {
  id: number;
  req: GuideRequest;
}

export type CompileReply =
  /** Compiled: what the guide took from the caches (made or kept here), and the compile's time. */
  | { id: number; ok: true; used: Used[]; ms: number }
  /** Refused as guideOf refuses it on arrival (unsupported_schema, unsupported_regex, unsupported_grammar), with the refusals taken from the caches. */
  | { id: number; ok: false; refused: { code: ServeError['code']; message: string; details: unknown }; used: Used[] }
  /** Anything else went wrong: the serving thread compiles it itself. */
  | { id: number; ok: false; failed: string };

/** What the thread posts once, first: its modules are imported. */
export interface CompileReady {
  ready: true;
}

parentPort!.on('message', ({ id, req }: CompileRequest) => {
  const t0 = performance.now();
  const used: Used[] = [];
  let reply: CompileReply;
  try {
    recordUsed(() => guideOf(req), used);
    reply = { id, ok: true, used, ms: performance.now() - t0 };
  } catch (e) {
    reply =
      e instanceof ServeError
        ? { id, ok: false, refused: { code: e.code, message: e.message, details: e.details }, used }
        : { id, ok: false, failed: e instanceof Error ? e.message : String(e) };
  }
  try {
    parentPort!.postMessage(reply);
  } catch (e) {
    parentPort!.postMessage({ id, ok: false, failed: `the compiled guide cannot be posted: ${e instanceof Error ? e.message : String(e)}` } satisfies CompileReply);
  }
});

parentPort!.postMessage({ ready: true } satisfies CompileReady);
