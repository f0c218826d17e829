/**
 * POST /v1/responses: OpenAI's Responses API, for OpenAI's newer clients and agents, served as a chat
 * completion: the request's conversation (responses-conversation.ts: the stored one it continues,
 * then its input; the instructions a system message) is mapped as /v1/chat/completions maps it, and
 * the reply comes back as output items (function calls, then a message) in a response object, or as
 * the Responses API's stream of typed events. `user` names the memlora user (or the model,
 * memlora:<user id>); responses carry the `memlora` field as chat completions do. A response is
 * stored (`store`, true unless false) with the items its model read, for a later request of the same
 * user to continue (previous_response_id); routes/stored-responses.ts reads and deletes them. With
 * background, the response runs apart from the request (response-runs.ts): stored queued, answered
 * at once, stored again when done.
 */
import { randomBytes, randomInt } from 'node:crypto';
import type { Hono } from 'hono';
import { streamSSE } from 'hono/streaming';
import { userExists } from '../../db/queries/users.js';
import type { AppEnv, RouteDeps } from '../context.js';
import { ApiError } from '../errors.js';
import { type Asked, responseOf } from '../response-object.js';
import { type ResponseEvent, replyEvents } from '../response-events.js';
import { type ResponseJob, responseWrites, runInBackground } from '../response-runs.js';
import { type Turn, requestTurn, truncated } from '../responses-conversation.js';
import { responsesInputTokensSchema, responsesRequestSchema } from '../schemas.js';
import type { GenerateResult } from '../services.js';
import { openAiUserId } from '../openai.js';
import { toolOffer } from '../tools.js';
import { readJson } from '../validate.js';
import { requireTokenizer } from './tokenize.js';
import { clientSignal, firstEvent, logStreamError, requireGenerate, streamOf } from './generate.js';
import { SERVED_MODEL_ID } from './models.js';
import { userNotFound } from './users.js';

export function registerResponsesRoutes(app: Hono<AppEnv>, deps: RouteDeps): void {
  const { db, config, logger, metrics, background, conversationLocks: locks } = deps;
  const w = responseWrites(deps);
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
    const parsed = await readJson(c, responsesRequestSchema, config.bodyLimitBytes);
    // A background response samples with a seed kept with its request: run again after a restart, it
    // writes the same reply, so the events its readers saw keep their sequence numbers.
    const body = parsed.background === true && parsed.seed == null ? { ...parsed, seed: randomInt(2 ** 31) } : parsed;
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
    const job: ResponseJob = { a, userId, requestId, offer, req, items: turn.items, input: asked.input, conversationId: asked.conversationId, request: body };

    // Its conversation takes no other response until this one is done: the hold passes to the stream
    // or the background run that finishes it, and is released here on any other way out.
    const hold = locks.hold(asked.conversationId);
    try {
      return await answer();
    } finally {
      if (!hold.passed) hold.release();
    }

    async function answer() {
      if (a.background) {
        // Run apart from this request, which answers the queued response, or streams the run's
        // events (its client going away does not stop the run).
        const { queued, run } = await runInBackground(deps, w, job, hold);
        if (!req.stream) return c.json(queued);
        const reader = clientSignal(c);
        return streamSSE(c, async (sse) => {
          sse.onAbort(() => reader.abort(new Error('client disconnected')));
          for await (const ev of run.from(-1, reader.signal)) await sse.writeSSE(ev);
        });
      }

      const ac = clientSignal(c);
      /**
       * The finished response, added to its conversation and stored when asked (a failed write is
       * logged; the response then says store: false). One whose client went away is neither: nobody
       * learnt its id, and the conversation did not take place.
       */
      const finished = (r: GenerateResult) => {
        const response = responseOf(a, r, offer);
        if (r.finishReason === 'cancelled') return response;
        w.addToConversation(job, response);
        if (!a.store) return response;
        try {
          w.insert(job, response);
          return response;
        } catch (err) {
          w.storeFailed(job, response, err);
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
        const events = replyEvents(a, offer, streamOf(started.iterator, started.first), finished);
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
