/**
 * POST /v1/responses: OpenAI's Responses API, for OpenAI's newer clients and agents, served as a chat
 * completion: the request's conversation (responses-conversation.ts: the stored one it continues,
 * then its input; the instructions a system message) is mapped as /v1/chat/completions maps it, and
 * the reply comes back as output items (function calls, then a message) in a response object, or as
 * the Responses API's stream of typed events. `user` names the memlora user (or the model,
 * memlora:<user id>); responses carry the `memlora` field as chat completions do. A response is
 * stored (`store`, true unless false) with the items its model read, for a later request of the same
 * user to continue (previous_response_id); routes/stored-responses.ts reads and deletes them. With
 * background, the response runs apart from the request (background-responses.ts): stored queued,
 * answered at once, stored again when done.
 */
import { randomBytes } from 'node:crypto';
import type { Hono } from 'hono';
import { streamSSE } from 'hono/streaming';
import { storeResponse, updateStoredResponse } from '../../db/queries/responses.js';
import { userExists } from '../../db/queries/users.js';
import { Run } from '../background-responses.js';
import type { AppEnv, RouteDeps } from '../context.js';
import { appendConversationItems } from '../../db/queries/conversations.js';
import { ApiError } from '../errors.js';
import { type Asked, type ResponseObject, failedResponse, responseOf } from '../response-object.js';
import { type ResponseEvent, replyEvents } from '../response-events.js';
import { type Turn, keptSince, outputItems, purgeCounters, requestTurn, truncated } from '../responses-conversation.js';
import { responsesInputTokensSchema, responsesRequestSchema } from '../schemas.js';
import type { GenerateResult, StreamEvent } from '../services.js';
import { openAiUserId } from '../openai.js';
import { mergeStreams } from '../stream-merge.js';
import { toolOffer } from '../tools.js';
import { readJson } from '../validate.js';
import { requireTokenizer } from './tokenize.js';
import { admitted, clientSignal, firstEvent, logStreamError, requireGenerate } from './generate.js';
import { SERVED_MODEL_ID } from './models.js';
import { userNotFound } from './users.js';

export function registerResponsesRoutes(app: Hono<AppEnv>, deps: RouteDeps): void {
  const { db, config, logger, metrics, background, conversationLocks: locks } = deps;
  const stored = metrics.counter('memlora_responses_stored_total', 'Responses of the Responses API stored (store, true unless false).', []);
  const storeFailures = metrics.counter('memlora_responses_store_failures_total', 'Responses that could not be stored (answered with store: false; the reason is logged).', []);
  const purged = purgeCounters(metrics).responses;
  const conversationFailures = metrics.counter('memlora_responses_conversation_failures_total', 'Responses whose input and output could not be added to their conversation (deleted meanwhile, or taken by another user).', []);
  const backgroundRuns = metrics.counter('memlora_responses_background_total', 'Background responses by how they ended (completed, incomplete, cancelled, failed).', ['status']);
  const running = metrics.gauge('memlora_responses_background_running', 'Background responses queued or running now.', []);
  metrics.onCollect(() => running.set(undefined, background.running));

  // OpenAI's responses.inputTokens.count: the tokens the model would read for such a request (its
  // conversation continued and cut as POST /v1/responses would), without generating.
  app.post('/v1/responses/input_tokens', async (c) => {
    const body = await readJson(c, responsesInputTokensSchema, config.bodyLimitBytes);
    const userId = openAiUserId(body);
    if (!userExists(db, userId)) throw userNotFound(userId);
    const request = { ...body, input: body.input ?? [] };
    const asked = requestTurn(db, config, request, userId, randomBytes(12).toString('hex'), background);
    const count = promptTokens(deps);
    const turn = body.truncation === 'auto' ? truncated(request, asked.turn, count) : asked.turn;
    return c.json({ object: 'response.input_tokens', input_tokens: count(turn.req).tokens });
  });

  app.post('/v1/responses', async (c) => {
    const body = await readJson(c, responsesRequestSchema, config.bodyLimitBytes);
    const userId = openAiUserId(body);
    const requestId = c.get('requestId');
    // The response's key: its id and its items' ids are made from it (random, so unguessable: a
    // stored response is read by its id).
    const key = randomBytes(12).toString('hex');
    if (!userExists(db, userId)) throw userNotFound(userId);
    if (body.background === true && config.responsesRetentionDays === 0) {
      throw new ApiError(409, 'background_disabled', 'background responses are stored, and responses are not stored on this server (MEMLORA_RESPONSES_RETENTION_DAYS=0)');
    }
    const asked = requestTurn(db, config, body, userId, key, background);
    const gen = requireGenerate(deps);
    const turn = body.truncation === 'auto' ? truncated(body, asked.turn, promptTokens(deps)) : asked.turn;
    const { chat, req } = turn;
    const offer = toolOffer(chat);
    const a: Asked = {
      id: key,
      created: Math.floor(Date.now() / 1000),
      model: body.model ?? SERVED_MODEL_ID,
      body,
      maxTokens: req.maxTokens,
      temperature: req.temperature,
      topP: req.topP,
      store: body.store !== false && config.responsesRetentionDays > 0,
      background: body.background === true,
    };
    /** The response's input and output added to its conversation (a failure is logged and counted, never the response's). */
    const addToConversation = (response: ResponseObject) => {
      if (asked.conversationId === null) return;
      let why = "the conversation was deleted meanwhile, or another user's response took it";
      try {
        if (appendConversationItems(db, asked.conversationId, [...asked.input, ...outputItems(response.output)], keptSince(config), userId)) return;
      } catch (err) {
        why = (err as Error).message;
      }
      conversationFailures.inc();
      logger.error('conversation items not added', { requestId, conversationId: asked.conversationId, err: why });
    };
    /** The response stored, with the items its model read (and a few expired ones purged); throws what the write throws. */
    const insert = (response: ResponseObject) => {
      const done = storeResponse(db, { id: response.id, userId, createdAt: Date.now(), previousResponseId: response.previous_response_id, response, items: turn.items }, keptSince(config));
      if (done.purged > 0) purged.inc(undefined, done.purged);
    };
    const storeFailed = (response: ResponseObject, err: unknown) => {
      storeFailures.inc();
      logger.error('response not stored', { requestId, responseId: response.id, err: (err as Error).message });
    };

    // Its conversation takes no other response until this one is done: the hold passes to the stream
    // or the background run that finishes it, and is released here on any other way out.
    const hold = locks.hold(asked.conversationId);
    try {
      return await answer();
    } finally {
      if (!hold.passed) hold.release();
    }

    async function answer() {
      if (a.background) return runInBackground();

      const ac = clientSignal(c);
      /**
       * The finished response, added to its conversation and stored when asked (a failed write is
       * logged; the response then says store: false). One whose client went away is neither: nobody
       * learnt its id, and the conversation did not take place.
       */
      const finished = (r: GenerateResult) => {
        const response = responseOf(a, r, offer);
        if (r.finishReason === 'cancelled') return response;
        addToConversation(response);
        if (!a.store) return response;
        try {
          insert(response);
          stored.inc();
          return response;
        } catch (err) {
          storeFailed(response, err);
          return { ...response, store: false };
        }
      };

      if (!req.stream) return c.json(finished(await gen.generate(req, ac.signal)));

      const started = await firstEvent(gen, req, ac.signal);
      hold.passed = true;
      return streamSSE(c, async (sse) => {
        sse.onAbort(() => ac.abort(new Error('client disconnected')));
        let sequence = 0;
        const send = (ev: ResponseEvent) => sse.writeSSE({ event: ev.type, data: JSON.stringify({ type: ev.type, sequence_number: sequence++, ...ev.fields }) });
        const events = replyEvents(a, offer, valuesOf(mergeStreams([started])), finished);
        try {
          const begun = responseOf(a, 'in_progress', offer);
          await send({ type: 'response.created', fields: { response: begun } });
          await send({ type: 'response.in_progress', fields: { response: begun } });
          for await (const ev of events) {
            if (ac.signal.aborted) return;
            await send(ev);
          }
        } catch (err) {
          if (ac.signal.aborted) return;
          const { error } = logStreamError(logger, requestId, err);
          await send({ type: 'error', fields: { code: error.code, message: error.message, param: null } });
        } finally {
          hold.release();
          await events.return(undefined);
        }
      });
    }

    /**
     * A background response: taken by the engine (errors on arrival are this request's), stored as
     * queued, and run apart from this request, which answers the queued response (or streams the
     * run's events; its client going away does not stop the run). The run is stored again when it is
     * done, and added to its conversation unless it was cancelled or failed.
     */
    async function runInBackground() {
      const controller = new AbortController();
      const stream = await admitted(gen, req, controller.signal);
      const queued = responseOf(a, 'queued', offer);
      try {
        insert(queued);
      } catch (err) {
        controller.abort(new Error('not stored'));
        throw err;
      }
      stored.inc();
      const save = (response: ResponseObject) => {
        try {
          if (!updateStoredResponse(db, response.id, response)) logger.warn('background response deleted before it finished', { requestId, responseId: response.id });
        } catch (err) {
          storeFailed(response, err);
        }
      };
      hold.passed = true;
      const run = background.start(new Run(queued.id, userId, queued, controller), async (run) => {
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
          let response: ResponseObject = responseOf(a, r, offer);
          // Cancelled but not by a client: the server is shutting down.
          if (r.finishReason === 'cancelled' && !run.cancelRequested) response = failedResponse(response, { code: 'shutting_down', message: 'the server shut down before this response finished' });
          if (response.status !== 'cancelled' && response.status !== 'failed') addToConversation(response);
          save(response);
          run.response = response;
          return response;
        };
        try {
          for await (const ev of replyEvents(a, offer, announced(), settle)) run.push(ev.type, ev.fields);
          if (run.response.status === 'failed') run.push('response.failed', { response: run.response });
        } catch (err) {
          const { error } = logStreamError(logger, requestId, err);
          const response = failedResponse(responseOf(a, 'in_progress', offer), { code: error.code, message: error.message });
          save(response);
          run.push('response.failed', { response });
          run.response = response;
        }
        hold.release();
        backgroundRuns.inc({ status: run.response.status });
        run.finish(run.response);
      });
      if (!req.stream) return c.json(queued);
      const reader = clientSignal(c);
      return streamSSE(c, async (sse) => {
        sse.onAbort(() => reader.abort(new Error('client disconnected')));
        for await (const ev of run.from(-1, reader.signal)) await sse.writeSSE(ev);
      });
    }
  });
}

/** The prompt tokens of a turn's generation request, and the context window, by the engine's tokenizer (memory aside). */
function promptTokens(deps: RouteDeps) {
  const tokenizer = requireTokenizer(deps);
  return (req: Turn['req']) => {
    const t = tokenizer.tokenize({ messages: req.messages });
    return { tokens: t.count, window: t.maxModelLen };
  };
}

/** The values of a merged stream of one. */
async function* valuesOf<T>(merged: AsyncGenerator<{ value: T }>): AsyncGenerator<T> {
  try {
    for await (const { value } of merged) yield value;
  } finally {
    await merged.return(undefined);
  }
}
