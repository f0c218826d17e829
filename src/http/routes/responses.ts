/**
 * POST /v1/responses: OpenAI's Responses API mapped onto GenerateService, for OpenAI's newer clients
 * and agents. The instructions (a system message) and the input (a text, or messages) are the
 * conversation, text.format guides the reply as response_format does, and the answer is a response
 * object with one output message, or the Responses API's stream of typed events. `user` names the
 * memlora user (or the model, memlora:<user id>); responses carry the `memlora` field as chat
 * completions do. Stateless: responses are not stored, so previous_response_id is refused.
 */
import type { Hono } from 'hono';
import { streamSSE } from 'hono/streaming';
import type { z } from 'zod';
import { userExists } from '../../db/queries/users.js';
import type { AppEnv, RouteDeps } from '../context.js';
import { toGenerate } from '../openai.js';
import { responsesRequestSchema, userOfModel } from '../schemas.js';
import type { ChatMessage, GenerateRequest, GenerateResult } from '../services.js';
import { mergeStreams } from '../stream-merge.js';
import { readJson } from '../validate.js';
import { clientSignal, firstEvent, logStreamError, requireGenerate } from './generate.js';
import { SERVED_MODEL_ID } from './models.js';
import { userNotFound } from './users.js';

type ResponsesRequest = z.output<typeof responsesRequestSchema>;

/** The body as a GenerateRequest: instructions first, then the input's messages; memlora's defaults where fields are absent. */
export function toGenerateRequest(body: ResponsesRequest): GenerateRequest {
  const input: ChatMessage[] =
    typeof body.input === 'string'
      ? [{ role: 'user', content: body.input }]
      : body.input.map((m) => ({ role: m.role === 'developer' ? 'system' : m.role, content: typeof m.content === 'string' ? m.content : m.content.map((p) => p.text).join('') }));
  const format = body.text?.format;
  return toGenerate({
    userId: body.user ?? userOfModel(body.model),
    messages: body.instructions ? [{ role: 'system', content: body.instructions }, ...input] : input,
    maxTokens: body.max_output_tokens ?? undefined,
    temperature: body.temperature ?? undefined,
    topP: body.top_p ?? undefined,
    stream: body.stream ?? false,
    mode: body.mode,
    responseFormat: format?.type === 'json_schema' ? { type: 'json_schema', jsonSchema: { name: format.name, description: format.description, schema: format.schema, strict: format.strict } } : format,
  });
}

/** A reply cut by its token budget (or the context window) is incomplete. */
const incomplete = (r: GenerateResult) => r.finishReason === 'length';

/** The output message of a finished reply. */
function messageOf(id: string, r: GenerateResult) {
  return { type: 'message', id, status: incomplete(r) ? 'incomplete' : 'completed', role: 'assistant', content: [{ type: 'output_text', text: r.text, annotations: [] }] };
}

/** What a response object says of its request, whatever its state. */
interface Asked {
  id: string;
  messageId: string;
  created: number;
  model: string;
  body: ResponsesRequest;
  req: GenerateRequest;
}

/** The response object: in progress (no result yet), or done with its result. */
function responseOf(a: Asked, r: GenerateResult | null) {
  return {
    id: a.id,
    object: 'response',
    created_at: a.created,
    status: r === null ? 'in_progress' : incomplete(r) ? 'incomplete' : 'completed',
    error: null,
    incomplete_details: r !== null && incomplete(r) ? { reason: 'max_output_tokens' } : null,
    instructions: a.body.instructions ?? null,
    max_output_tokens: a.req.maxTokens,
    model: a.model,
    output: r === null ? [] : [messageOf(a.messageId, r)],
    parallel_tool_calls: true,
    temperature: a.req.temperature,
    top_p: a.req.topP,
    tool_choice: a.body.tool_choice ?? 'auto',
    tools: [],
    text: { format: a.body.text?.format ?? { type: 'text' } },
    store: false,
    usage:
      r === null
        ? null
        : {
            input_tokens: r.usage.promptTokens,
            input_tokens_details: { cached_tokens: r.usage.cachedTokens },
            output_tokens: r.usage.completionTokens,
            output_tokens_details: { reasoning_tokens: 0 },
            total_tokens: r.usage.promptTokens + r.usage.completionTokens,
          },
    memlora: r === null ? null : { personalization: r.personalization, timings: r.timings },
  };
}

export function registerResponsesRoutes(app: Hono<AppEnv>, deps: RouteDeps): void {
  const { db, config, logger } = deps;

  app.post('/v1/responses', async (c) => {
    const body = await readJson(c, responsesRequestSchema, config.bodyLimitBytes);
    const req = toGenerateRequest(body);
    if (!userExists(db, req.userId)) throw userNotFound(req.userId);
    const gen = requireGenerate(deps);
    const ac = clientSignal(c);
    const asked = (id: string): Asked => ({ id: `resp_${id}`, messageId: `msg_${id}`, created: Math.floor(Date.now() / 1000), model: body.model ?? SERVED_MODEL_ID, body, req });

    if (!req.stream) {
      const r = await gen.generate(req, ac.signal);
      return c.json(responseOf(asked(r.id.replace(/^gen_/, '')), r));
    }

    const started = await firstEvent(gen, req, ac.signal);
    // The stream's ids are known before the engine's result: the request's.
    const a = asked(c.get('requestId'));
    return streamSSE(c, async (sse) => {
      sse.onAbort(() => ac.abort(new Error('client disconnected')));
      let sequence = 0;
      const emit = (type: string, fields: Record<string, unknown>) => sse.writeSSE({ event: type, data: JSON.stringify({ type, sequence_number: sequence++, ...fields }) });
      const at = { item_id: a.messageId, output_index: 0, content_index: 0 };
      const merged = mergeStreams([started]);
      try {
        await emit('response.created', { response: responseOf(a, null) });
        await emit('response.in_progress', { response: responseOf(a, null) });
        await emit('response.output_item.added', { output_index: 0, item: { type: 'message', id: a.messageId, status: 'in_progress', role: 'assistant', content: [] } });
        await emit('response.content_part.added', { ...at, part: { type: 'output_text', text: '', annotations: [] } });
        let result: GenerateResult | null = null;
        for await (const { value: ev } of merged) {
          if (ac.signal.aborted) return;
          if (ev.type === 'token') {
            if (ev.text !== '') await emit('response.output_text.delta', { ...at, delta: ev.text, logprobs: [] });
          } else result = ev.result;
        }
        if (ac.signal.aborted) return;
        if (result === null) throw new Error('generation stream ended without a done event');
        await emit('response.output_text.done', { ...at, text: result.text, logprobs: [] });
        await emit('response.content_part.done', { ...at, part: { type: 'output_text', text: result.text, annotations: [] } });
        await emit('response.output_item.done', { output_index: 0, item: messageOf(a.messageId, result) });
        await emit(incomplete(result) ? 'response.incomplete' : 'response.completed', { response: responseOf(a, result) });
      } catch (err) {
        if (ac.signal.aborted) return;
        const { error } = logStreamError(logger, c.get('requestId'), err);
        await emit('error', { code: error.code, message: error.message, param: null });
      } finally {
        await merged.return(undefined);
      }
    });
  });
}
