/** POST /v1/generate: one personalised reply, as JSON or as Server-Sent Events (token..., done). */
import type { Context, Hono } from 'hono';
import { streamSSE } from 'hono/streaming';
import { userExists } from '../../db/queries/users.js';
import type { AppEnv, RouteDeps } from '../context.js';
import { ApiError, errorBody, toApiError } from '../errors.js';
import { generateRequestSchema } from '../schemas.js';
import type { GenerateRequest, GenerateService, Logger, StreamEvent } from '../services.js';
import { readJson } from '../validate.js';
import { userNotFound } from './users.js';

/** The service, or 503 `model_unavailable` when no engine is wired in (or the server is draining). */
export function requireGenerate(deps: RouteDeps): GenerateService {
  if (deps.lifecycle.draining) throw new ApiError(503, 'shutting_down', 'the server is shutting down', null, { 'retry-after': '5' });
  const gen = deps.services.generate;
  if (!gen) throw new ApiError(503, 'model_unavailable', 'no model is loaded in this server', null, { 'retry-after': '30' });
  // The reason stays with the operator (/readyz, the log): it may name the server's paths.
  if ((gen.loadError?.() ?? null) !== null) throw new ApiError(503, 'model_unavailable', 'the model failed to load; the reason is in GET /readyz', null, { 'retry-after': '30' });
  if (gen.ready && !gen.ready()) {
    throw new ApiError(503, 'model_unavailable', 'the model is still loading', null, { 'retry-after': '5' });
  }
  return gen;
}

/** An AbortSignal that fires when the client goes away (the adapter aborts the request's signal). */
export function clientSignal(c: Context): AbortController {
  const ac = new AbortController();
  const reqSignal = c.req.raw.signal;
  if (reqSignal.aborted) ac.abort(reqSignal.reason);
  else reqSignal.addEventListener('abort', () => ac.abort(reqSignal.reason), { once: true });
  return ac;
}

/**
 * Starts a stream and waits for its first event before any byte is sent, so errors the engine
 * raises up front (queue full, prompt too long) still become ordinary HTTP error responses.
 */
export async function firstEvent(
  gen: GenerateService,
  req: GenerateRequest,
  signal: AbortSignal,
): Promise<{ iterator: AsyncIterator<StreamEvent>; first: IteratorResult<StreamEvent> }> {
  const iterator = gen.stream(req, signal)[Symbol.asyncIterator]();
  const first = await iterator.next();
  return { iterator, first };
}

/**
 * Starts a stream and returns it once the engine has taken the request, without waiting for its
 * first token (a background response answers at once): errors raised on arrival (queue full, prompt
 * too long, no model) are thrown here, as the engine raises them before the stream's first step yields.
 */
export async function admitted(gen: GenerateService, req: GenerateRequest, signal: AbortSignal): Promise<AsyncGenerator<StreamEvent>> {
  const iterator = gen.stream(req, signal)[Symbol.asyncIterator]();
  const first = iterator.next();
  await Promise.race([first, new Promise<void>((resolve) => setImmediate(resolve))]);
  return streamOf(iterator, first);
}

/** A started stream as a generator again: its first result (had or to come), then the rest; ending the generator ends the stream. */
export async function* streamOf<T>(iterator: AsyncIterator<T>, first: IteratorResult<T> | Promise<IteratorResult<T>>): AsyncGenerator<T> {
  try {
    for (let r = await first; !r.done; r = await iterator.next()) yield r.value;
  } finally {
    await iterator.return?.();
  }
}

export function logStreamError(logger: Logger, requestId: string, err: unknown): ReturnType<typeof errorBody> {
  const { apiError, known } = toApiError(err);
  if (!known) logger.error('stream failed', { requestId, err: err instanceof Error ? err.stack : String(err) });
  return errorBody(apiError.code, apiError.message, apiError.details);
}

export function registerGenerateRoutes(app: Hono<AppEnv>, deps: RouteDeps): void {
  const { db, config, logger } = deps;

  app.post('/v1/generate', async (c) => {
    const req = await readJson(c, generateRequestSchema, config.bodyLimitBytes);
    if (!userExists(db, req.userId)) throw userNotFound(req.userId);
    const gen = requireGenerate(deps);
    const ac = clientSignal(c);
    if (!req.stream) return c.json(await gen.generate(req, ac.signal));

    const { iterator, first } = await firstEvent(gen, req, ac.signal);
    return streamSSE(c, async (sse) => {
      sse.onAbort(() => ac.abort(new Error('client disconnected')));
      let next = first;
      try {
        while (!next.done && !ac.signal.aborted) {
          const ev = next.value;
          if (ev.type === 'token') {
            const { type: _, ...data } = ev;
            await sse.writeSSE({ event: 'token', data: JSON.stringify(data) });
          } else {
            await sse.writeSSE({ event: 'done', data: JSON.stringify({ result: ev.result }) });
            return;
          }
          next = await iterator.next();
        }
        if (!ac.signal.aborted) {
          throw new Error('generation stream ended without a done event');
        }
      } catch (err) {
        if (ac.signal.aborted) return;
        await sse.writeSSE({ event: 'error', data: JSON.stringify(logStreamError(logger, c.get('requestId'), err)) });
      } finally {
        await iterator.return?.();
      }
    });
  });
}
