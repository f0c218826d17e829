/**
 * What finishing a Responses API response writes (its store, its conversation's items) and the
 * background runs: a background response taken by the engine, stored queued, run apart from any
 * request, stored again when done. A server that stops before a run is done puts it back in the
 * queue (stored queued, its request kept); the next start runs it again (resumeBackgroundResponses),
 * from the conversation it had read.
 */
import { getStoredResponse, storeResponse, unfinishedBackgroundResponses, updateStoredResponse, type StoredResponse } from '../db/queries/responses.js';
import { appendConversationItems } from '../db/queries/conversations.js';
import { Run } from './background-responses.js';
import type { ConversationHold } from './conversation-locks.js';
import type { RouteDeps } from './context.js';
import { type Asked, type ResponseObject, failedResponse, responseOf } from './response-object.js';
import { replyEvents } from './response-events.js';
import { type Item, type ResponsesRequest, itemsOf, keptSince, outputItems, purgeCounters, turnOf } from './responses-conversation.js';
import { responsesRequestSchema } from './schemas.js';
import type { GenerateRequest, GenerateResult, StreamEvent } from './services.js';
import { type ToolOffer, toolOffer } from './tools.js';
import { admitted, logStreamError } from './routes/generate.js';
import { SERVED_MODEL_ID } from './routes/models.js';
import { toApiError } from './errors.js';

/** One response: what its writes and its run need. */
export interface ResponseJob {
  a: Asked;
  userId: string;
  /** For the logs: the request's id (or, for a run resumed at start, the response's). */
  requestId: string;
  offer: ToolOffer;
  req: GenerateRequest;
  /** The items its model reads, stored with it. */
  items: Item[];
  /** Its input items, added to its conversation with its output. */
  input: Item[];
  conversationId: string | null;
  /** The request, kept with a background response until it is done. */
  request: ResponsesRequest;
}

export type ResponseWrites = ReturnType<typeof responseWrites>;

/** A background run started: the response as first stored (queued), and the run. */
export interface BackgroundStart {
  queued: ResponseObject;
  run: Run;
}

/** A response's writes, and the counters they keep. */
export function responseWrites(deps: RouteDeps) {
  const { db, config, logger, metrics } = deps;
  const stored = metrics.counter('memlora_responses_stored_total', 'Responses of the Responses API stored (store, true unless false).', []);
  const storeFailures = metrics.counter('memlora_responses_store_failures_total', 'Responses that could not be stored (answered with store: false; the reason is logged).', []);
  const purged = purgeCounters(metrics).responses;
  const conversationFailures = metrics.counter('memlora_responses_conversation_failures_total', 'Responses whose input and output could not be added to their conversation (deleted meanwhile, or taken by another user).', []);
  const backgroundRuns = metrics.counter('memlora_responses_background_total', 'Background responses by how they ended (completed, incomplete, cancelled, failed; queued: put back by a stopping server).', ['status']);
  const storeFailed = (job: ResponseJob, response: ResponseObject, err: unknown) => {
    storeFailures.inc();
    logger.error('response not stored', { requestId: job.requestId, responseId: response.id, err: (err as Error).message });
  };
  return {
    stored,
    backgroundRuns,
    storeFailed,
    /** The response's input and output added to its conversation (a failure is logged and counted, never the response's). */
    addToConversation(job: ResponseJob, response: ResponseObject): void {
      if (job.conversationId === null) return;
      let why = "the conversation was deleted meanwhile, or another user's response took it";
      try {
        if (appendConversationItems(db, job.conversationId, [...job.input, ...outputItems(response.output)], keptSince(config), job.userId)) return;
      } catch (err) {
        why = (err as Error).message;
      }
      conversationFailures.inc();
      logger.error('conversation items not added', { requestId: job.requestId, conversationId: job.conversationId, err: why });
    },
    /** The response stored with the items its model read (and, for a background one not done, its request); throws what the write throws. */
    insert(job: ResponseJob, response: ResponseObject): void {
      const request = job.a.background ? job.request : null;
      const done = storeResponse(db, { id: response.id, userId: job.userId, createdAt: Date.now(), previousResponseId: response.previous_response_id, response, items: job.items, request }, keptSince(config));
      if (done.purged > 0) purged.inc(undefined, done.purged);
      stored.inc();
    },
    /** A background response's new state stored: done (its request dropped) or back in the queue (kept); a failure is logged. */
    save(job: ResponseJob, response: ResponseObject, request: 'drop' | 'keep'): void {
      try {
        if (!updateStoredResponse(db, response.id, response, request)) logger.warn('background response deleted before it finished', { requestId: job.requestId, responseId: response.id });
      } catch (err) {
        storeFailed(job, response, err);
      }
    },
  };
}

/**
 * Runs a background response: taken by the engine (errors on arrival are thrown, before anything is
 * stored), stored queued (a resumed one is stored already), then run apart from any request in the
 * registry. It is stored again when done and added to its conversation unless it was cancelled or
 * failed; cancelled by the engine without a client asking (the server stopping), it goes back in the
 * queue for the next start. The conversation's hold passes to the run. Answers the queued response.
 *
 * A resumed run (`stillQueued` given) is stored already. It runs only if `stillQueued` still holds
 * once the engine has taken it, checked with no wait before the run is registered: a cancel that
 * came while the engine took it is not overwritten by the run's end. Otherwise it answers null.
 */
export async function runInBackground(deps: RouteDeps, w: ResponseWrites, job: ResponseJob, hold: ConversationHold): Promise<BackgroundStart>;
export async function runInBackground(deps: RouteDeps, w: ResponseWrites, job: ResponseJob, hold: ConversationHold, stillQueued: () => boolean): Promise<BackgroundStart | null>;
export async function runInBackground(deps: RouteDeps, w: ResponseWrites, job: ResponseJob, hold: ConversationHold, stillQueued?: () => boolean): Promise<BackgroundStart | null> {
  const { logger, background } = deps;
  const { a, offer } = job;
  const controller = new AbortController();
  const stream = await admitted(deps.services.generate!, job.req, controller.signal);
  const queued = responseOf(a, 'queued', offer);
  if (stillQueued !== undefined && !stillQueued()) {
    controller.abort(new Error('cancelled before it ran'));
    return null;
  }
  if (stillQueued === undefined) {
    try {
      w.insert(job, queued);
    } catch (err) {
      controller.abort(new Error('not stored'));
      throw err;
    }
  }
  hold.passed = true;
  const requeued = () => responseOf(a, 'queued', offer);
  const run = background.start(new Run(queued.id, job.userId, queued, controller), async (run) => {
    run.push('response.created', { response: queued });
    run.push('response.queued', { response: queued });
    // In progress from its first token (one cancelled while queued goes from queued to cancelled).
    const announced = async function* (): AsyncGenerator<StreamEvent> {
      for await (const ev of stream) {
        if (ev.type === 'token' && run.response.status === 'queued') {
          run.response = responseOf(a, 'in_progress', offer);
          run.push('response.in_progress', { response: run.response });
        }
        yield ev;
      }
    };
    const settle = (r: GenerateResult) => {
      // Cancelled but not by a client: the server is stopping. Back in the queue for its next start.
      const stopping = r.finishReason === 'cancelled' && !run.cancelRequested;
      const response = stopping ? requeued() : responseOf(a, r, offer);
      if (response.status !== 'cancelled' && response.status !== 'queued') w.addToConversation(job, response);
      w.save(job, response, stopping ? 'keep' : 'drop');
      run.response = response;
      return response;
    };
    try {
      for await (const ev of replyEvents(a, offer, announced(), settle)) run.push(ev.type, ev.fields);
    } catch (err) {
      if (toApiError(err).apiError.code === 'shutting_down') {
        run.response = requeued();
        w.save(job, run.response, 'keep');
      } else {
        const { error } = logStreamError(logger, job.requestId, err);
        run.response = failedResponse(responseOf(a, 'in_progress', offer), { code: error.code, message: error.message });
        w.save(job, run.response, 'drop');
        run.push('response.failed', { response: run.response });
      }
    }
    hold.release();
    w.backgroundRuns.inc({ status: run.response.status });
    run.finish(run.response);
  });
  return { queued, run };
}

/** The job of a stored background response not done, as its request made it; throws where the request no longer passes. */
function storedJob(stored: StoredResponse): ResponseJob {
  const request = responsesRequestSchema.parse(stored.request);
  const key = stored.id.slice('resp_'.length);
  const turn = turnOf(request, stored.items as Item[]);
  const conversation = request.conversation;
  return {
    a: {
      id: key,
      created: stored.response.created_at as number,
      model: request.model ?? SERVED_MODEL_ID,
      body: request,
      maxTokens: turn.req.maxTokens,
      temperature: turn.req.temperature,
      topP: turn.req.topP,
      store: true,
      background: true,
    },
    userId: stored.userId,
    requestId: stored.id,
    offer: toolOffer(turn.chat),
    req: turn.req,
    items: turn.items,
    input: itemsOf(request.input, key),
    conversationId: conversation == null ? null : typeof conversation === 'string' ? conversation : conversation.id,
    request,
  };
}

/**
 * Runs again the background responses an earlier run of the server did not finish (stored with their
 * request), oldest first, once the model is ready: each from the conversation it had read, its events
 * from the start. One the engine cannot take (no room in the queue) waits and is tried again; one whose
 * request no longer passes, or that the engine refuses, is stored failed. Stops when the server drains.
 * Called once, as the server starts: the responses it reads are those stored before.
 */
export async function resumeBackgroundResponses(deps: RouteDeps): Promise<number> {
  const { db, config, logger, lifecycle } = deps;
  // Read before anything waits: the ones this server takes from now on are its own runs.
  const unfinished = unfinishedBackgroundResponses(db, keptSince(config)).filter((stored) => deps.background.get(stored.id) === undefined);
  if (unfinished.length === 0) return 0;
  const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms).unref());
  const gen = () => deps.services.generate;
  for (;;) {
    if (lifecycle.draining) return 0;
    const g = gen();
    if (g === undefined || (g.loadError?.() ?? null) !== null) return 0;
    if (!g.ready || g.ready()) break;
    await pause(50);
  }
  const w = responseWrites(deps);
  let resumed = 0;
  for (const stored of unfinished) {
    let job: ResponseJob;
    try {
      job = storedJob(stored);
    } catch (err) {
      const response = failedResponse({ ...stored.response, background: true }, { code: 'server_error', message: 'the server stopped before this background response finished, and its request no longer passes; create it again' });
      if (!updateStoredResponse(db, stored.id, response, 'drop')) continue;
      logger.error('background response not resumed', { responseId: stored.id, err: err instanceof Error ? err.message : String(err) });
      continue;
    }
    // Cancelled, deleted or erased meanwhile: not run.
    const stillQueued = () => getStoredResponse(db, stored.id, keptSince(config))?.request != null;
    for (;;) {
      if (lifecycle.draining) return resumed;
      if (!stillQueued()) break;
      try {
        const hold = deps.conversationLocks.hold(job.conversationId);
        try {
          if ((await runInBackground(deps, w, job, hold, stillQueued)) !== null) resumed++;
        } finally {
          if (!hold.passed) hold.release();
        }
        break;
      } catch (err) {
        const { apiError } = toApiError(err);
        const retry = apiError.code === 'queue_full' || apiError.code === 'user_queue_full' || apiError.code === 'conversation_locked';
        if (retry) {
          await pause(Number(apiError.headers?.['retry-after'] ?? 1) * 1000);
          continue;
        }
        w.save(job, failedResponse(responseOf(job.a, 'queued', job.offer), { code: apiError.code, message: apiError.message }), 'drop');
        logger.error('background response not resumed', { responseId: stored.id, err: apiError.message });
        break;
      }
    }
  }
  if (resumed > 0) logger.info('background responses resumed', { resumed });
  return resumed;
}
