/**
 * POST /v1/responses: OpenAI's Responses API, for OpenAI's newer clients and agents, served as a chat
 * completion: the instructions (a system message) and the input items (messages, the function calls
 * the model made and their outputs) become a chat body, validated and mapped as
 * /v1/chat/completions maps it (function tools offered, text.format as response_format), and the
 * reply comes back as output items (function calls, then a message) in a response object, or as
 * the Responses API's stream of typed events. `user` names the memlora user (or the model,
 * memlora:<user id>); responses carry the `memlora` field as chat completions do. A response is
 * stored (`store`, true unless false) with the items its model read, so that a later request of the
 * same user may continue it (previous_response_id: its items and output come before the input);
 * routes/stored-responses.ts reads and deletes them.
 */
import { randomBytes } from 'node:crypto';
import type { Hono } from 'hono';
import { streamSSE } from 'hono/streaming';
import type { z } from 'zod';
import { getStoredResponse, storeResponse } from '../../db/queries/responses.js';
import { userExists } from '../../db/queries/users.js';
import type { Config } from '../../config.js';
import type { Db } from '../../db/client.js';
import type { AppEnv, RouteDeps } from '../context.js';
import { ApiError } from '../errors.js';
import { chatCompletionRequestSchema, responsesRequestSchema, type responsesStoredItemSchema } from '../schemas.js';
import type { GenerateResult, TokenLogprob } from '../services.js';
import { openAiTokenLogprobs, openAiUserId } from '../openai.js';
import { mergeStreams } from '../stream-merge.js';
import { type Call, type CallPiece, type ToolOffer, offerReader, readOffered, textOf, toolOffer } from '../tools.js';
import { readJson, validationFailed } from '../validate.js';
import { toGenerateRequest } from './chat.js';
import { requireTokenizer } from './tokenize.js';
import { clientSignal, firstEvent, logStreamError, requireGenerate } from './generate.js';
import { SERVED_MODEL_ID } from './models.js';
import { userNotFound } from './users.js';

type ResponsesRequest = z.output<typeof responsesRequestSchema>;
/** An item the model read, as stored and listed (GET /v1/responses/{id}/input_items). */
type Item = z.output<typeof responsesStoredItemSchema>;

/** The most messages a chat body holds: a conversation's items (its continued responses' included) and the instructions. */
const MAX_CHAT_MESSAGES = 256;

const DAY_MS = 86_400_000;

/** Stored responses created before this time (ms) are past the retention: gone. */
export const keptSince = (config: Config, now = Date.now()): number => now - config.responsesRetentionDays * DAY_MS;

export function responseNotFound(id: string, config: Config): ApiError {
  const why = config.responsesRetentionDays === 0 ? ': responses are not stored on this server (MEMLORA_RESPONSES_RETENTION_DAYS=0)' : '';
  return new ApiError(404, 'response_not_found', `response ${JSON.stringify(id)} not found${why}`, { id });
}

/** The request's input as items with ids (made from the response's key), in the form they are stored. */
function inputItems(body: ResponsesRequest, key: string): Item[] {
  const input = typeof body.input === 'string' ? [{ type: 'message' as const, role: 'user' as const, content: body.input }] : body.input;
  return input.map((item, i): Item => {
    if (item.type === 'function_call') return { type: 'function_call', id: `fc_${key}_in${i}`, call_id: item.call_id, name: item.name, arguments: item.arguments, status: 'completed' };
    if (item.type === 'function_call_output') return { type: 'function_call_output', id: `fco_${key}_in${i}`, call_id: item.call_id, output: textOf(item.output), status: 'completed' };
    const type = item.role === 'assistant' ? ('output_text' as const) : ('input_text' as const);
    const content = typeof item.content === 'string' ? [{ type, text: item.content }] : item.content.map((p) => ({ type: p.type, text: p.text }));
    return { type: 'message', id: `msg_${key}_in${i}`, status: 'completed', role: item.role, content };
  });
}

/** The output items of a response as the next one reads them (log-probabilities and annotations left). */
function outputItems(output: ReturnType<typeof outputOf>): Item[] {
  return output.map((item): Item =>
    item.type === 'message'
      ? { type: 'message', id: item.id, status: item.status as Item['status'], role: 'assistant', content: item.content.map((p) => ({ type: 'output_text', text: p.text })) }
      : { type: 'function_call', id: item.id, call_id: item.call_id, name: item.name, arguments: item.arguments, status: item.status as Item['status'] },
  );
}

/**
 * The conversation a request continues: the items the model read for the stored response `id` and
 * that response's output. Another user's response, one past the retention, or none: 404.
 */
function continued(db: Db, config: Config, id: string, userId: string): Item[] {
  const stored = config.responsesRetentionDays > 0 ? getStoredResponse(db, id, keptSince(config)) : undefined;
  if (stored === undefined || stored.userId !== userId) throw responseNotFound(id, config);
  return [...(stored.items as Item[]), ...outputItems((stored.response as { output: ReturnType<typeof outputOf> }).output)];
}

/** The Responses API's tool_choice in chat's form. */
function chatToolChoice(choice: ResponsesRequest['tool_choice']) {
  if (choice == null || typeof choice === 'string') return choice;
  if (choice.type === 'function') return { type: 'function', function: { name: choice.name } };
  return { type: 'allowed_tools', allowed_tools: { mode: choice.mode, tools: choice.tools.map((t) => ({ type: 'function', function: { name: t.name } })) } };
}

/**
 * The body as a chat completion's: instructions first, then the conversation's items as messages
 * (function calls in a row as one assistant turn of tool_calls, their outputs as tool messages), the
 * tools in chat's nested form, text.format as response_format.
 */
function asChatBody(body: ResponsesRequest, items: readonly Item[]): Record<string, unknown> {
  type Message = { role: string; content: string | null; tool_calls?: unknown[]; tool_call_id?: string };
  const messages: Message[] = body.instructions ? [{ role: 'system', content: body.instructions }] : [];
  for (const item of items) {
    if (item.type === 'function_call') {
      const call = { id: item.call_id, type: 'function', function: { name: item.name, arguments: item.arguments } };
      const last = messages.at(-1);
      if (last?.role === 'assistant' && last.tool_calls && last.content === null) last.tool_calls.push(call);
      else messages.push({ role: 'assistant', content: null, tool_calls: [call] });
    } else if (item.type === 'function_call_output') messages.push({ role: 'tool', tool_call_id: item.call_id, content: item.output });
    else messages.push({ role: item.role, content: textOf(item.content) });
  }
  const format = body.text?.format;
  const logprobs = (body.include ?? []).includes('message.output_text.logprobs') || body.top_logprobs != null;
  return {
    model: body.model,
    user: body.user,
    messages,
    max_completion_tokens: body.max_output_tokens,
    temperature: body.temperature,
    top_p: body.top_p,
    stream: body.stream,
    mode: body.mode,
    response_format: format?.type === 'json_schema' ? { type: 'json_schema', json_schema: { name: format.name, description: format.description, schema: format.schema, strict: format.strict } } : format,
    tools: body.tools?.map((t) => ({ type: 'function', function: { name: t.name, description: t.description ?? undefined, parameters: t.parameters ?? undefined, strict: t.strict } })),
    tool_choice: chatToolChoice(body.tool_choice),
    parallel_tool_calls: body.parallel_tool_calls,
    logprobs: logprobs || undefined,
    top_logprobs: logprobs ? (body.top_logprobs ?? undefined) : undefined,
  };
}

/** A conversation as chat completions read it: the chat body, validated, and the generation request it maps to. */
interface Turn {
  items: Item[];
  chat: z.output<typeof chatCompletionRequestSchema>;
  req: ReturnType<typeof toGenerateRequest>;
}

function turnOf(body: ResponsesRequest, items: Item[]): Turn {
  const parsed = chatCompletionRequestSchema.safeParse(asChatBody(body, items));
  if (!parsed.success) throw validationFailed(parsed.error, 'body');
  return { items, chat: parsed.data, req: toGenerateRequest(parsed.data) };
}

/** Where a conversation may be cut: before any item but a function call's output (which needs its call). */
const cutPoints = (items: readonly Item[]): number[] => items.flatMap((item, i) => (i === 0 || item.type !== 'function_call_output' ? [i] : []));

/**
 * truncation auto: the conversation less as few of its oldest items as let the prompt and the reply's
 * budget fit the context window or, where no cut does, the prompt alone (the reply is then cut by the
 * window); never its last item. Found by bisection over the cut points (dropping items never lengthens
 * the prompt), each measured by the tokenizer; one that fits whole is measured once.
 */
function truncated(body: ResponsesRequest, whole: Turn, count: (req: Turn['req']) => { tokens: number; window: number }): Turn {
  const cuts = cutPoints(whole.items);
  const measured = new Map<number, Turn & { tokens: number; window: number }>();
  const measure = (k: number) => {
    let m = measured.get(k);
    if (m === undefined) {
      const turn = k === 0 ? whole : turnOf(body, whole.items.slice(cuts[k]));
      measured.set(k, (m = { ...turn, ...count(turn.req) }));
    }
    return m;
  };
  const first = (fits: (m: ReturnType<typeof measure>) => boolean) => {
    if (fits(measure(0))) return 0;
    let [lo, hi] = [1, cuts.length];
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (fits(measure(mid))) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  };
  let k = first((m) => m.tokens + m.req.maxTokens <= m.window);
  if (k === cuts.length) k = first((m) => m.tokens < m.window);
  // Nothing fits: the last cut, which the engine refuses as prompt_too_long.
  return measure(Math.min(k, cuts.length - 1));
}

/** A reply cut by its token budget (or the context window) is incomplete. */
const incomplete = (r: GenerateResult) => r.finishReason === 'length';

/** What a response object says of its request, whatever its state; item ids are made from `id`. */
interface Asked {
  id: string;
  created: number;
  model: string;
  body: ResponsesRequest;
  maxTokens: number;
  temperature: number;
  topP: number;
  store: boolean;
}

const messageId = (a: Asked) => `msg_${a.id}`;
const callIds = (a: Asked, i: number) => ({ id: `fc_${a.id}_${i}`, call_id: `call_${a.id}_${i}` });

function messageItem(a: Asked, text: string, status: string, logprobs: readonly TokenLogprob[] = []) {
  return { type: 'message' as const, id: messageId(a), status, role: 'assistant' as const, content: [{ type: 'output_text', text, annotations: [], logprobs: openAiTokenLogprobs(logprobs) }] };
}

function callItem(a: Asked, i: number, call: Call, status: string) {
  return { type: 'function_call' as const, ...callIds(a, i), name: call.name, arguments: call.arguments, status };
}

/**
 * The output items of a finished reply, read as a stream reads it: the calls it began (the last
 * incomplete where its arguments were cut), then a message of any text after them; or one message,
 * with the reply's log-probabilities where they were asked for (a reply that made calls has none).
 */
function outputOf(a: Asked, r: GenerateResult, offer: ToolOffer) {
  const status = incomplete(r) ? 'incomplete' : 'completed';
  const read = readOffered(r.text, offer);
  if (!read || read.calls.length === 0) return [messageItem(a, r.text, status, r.logprobs)];
  const calls = read.calls.map((c, i) => callItem(a, i, c, read.cut && i === read.calls.length - 1 ? 'incomplete' : 'completed'));
  return read.content === null ? calls : [...calls, messageItem(a, read.content, status)];
}

/** The response object: in progress (no result yet), or done with its result. */
function responseOf(a: Asked, r: GenerateResult | null, offer: ToolOffer) {
  return {
    id: `resp_${a.id}`,
    object: 'response',
    created_at: a.created,
    status: r === null ? 'in_progress' : incomplete(r) ? 'incomplete' : 'completed',
    error: null,
    incomplete_details: r !== null && incomplete(r) ? { reason: 'max_output_tokens' } : null,
    instructions: a.body.instructions ?? null,
    max_output_tokens: a.maxTokens,
    model: a.model,
    output: r === null ? [] : outputOf(a, r, offer),
    parallel_tool_calls: a.body.parallel_tool_calls ?? true,
    temperature: a.temperature,
    top_p: a.topP,
    tool_choice: a.body.tool_choice ?? 'auto',
    tools: a.body.tools ?? [],
    text: { format: a.body.text?.format ?? { type: 'text' } },
    store: a.store,
    previous_response_id: a.body.previous_response_id ?? null,
    truncation: a.body.truncation ?? 'disabled',
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
    const userId = openAiUserId(body);
    // The response's key: its id and its items' ids are made from it (random, so unguessable: a
    // stored response is read by its id).
    const key = randomBytes(12).toString('hex');
    const context = body.previous_response_id ? continued(db, config, body.previous_response_id, userId) : [];
    const input = inputItems(body, key);
    let items = [...context, ...input];
    const cap = MAX_CHAT_MESSAGES - (body.instructions ? 1 : 0);
    if (items.length > cap) {
      // truncation auto drops the oldest items; otherwise the conversation is refused.
      const from = body.truncation === 'auto' ? cutPoints(items).find((i) => i >= items.length - cap) : undefined;
      if (from === undefined) {
        const message = `the conversation (${context.length} items of previous_response_id's, ${input.length} of the input) exceeds ${cap} items${body.instructions ? ' beside the instructions' : ''}`;
        throw new ApiError(422, 'validation_failed', `invalid body: input (${message})`, { issues: [{ path: 'input', message, code: 'too_big' }] });
      }
      items = items.slice(from);
    }
    let turn = turnOf(body, items);
    if (!userExists(db, userId)) throw userNotFound(userId);
    const gen = requireGenerate(deps);
    if (body.truncation === 'auto') {
      const tokenizer = requireTokenizer(deps);
      turn = truncated(body, turn, (r) => {
        const t = tokenizer.tokenize({ messages: r.messages });
        return { tokens: t.count, window: t.maxModelLen };
      });
    }
    const { chat, req } = turn;
    const ac = clientSignal(c);
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
    };
    /** The finished response, stored when asked (a failed write is logged and the response says store: false). */
    const finished = (r: GenerateResult) => {
      const response = responseOf(a, r, offer);
      if (!a.store) return response;
      try {
        storeResponse(db, { id: response.id, userId, createdAt: Date.now(), previousResponseId: response.previous_response_id, response, items: turn.items }, keptSince(config));
        return response;
      } catch (err) {
        logger.error('response not stored', { requestId: c.get('requestId'), responseId: response.id, err: (err as Error).message });
        return { ...response, store: false };
      }
    };

    if (!req.stream) return c.json(finished(await gen.generate(req, ac.signal)));

    const started = await firstEvent(gen, req, ac.signal);
    return streamSSE(c, async (sse) => {
      sse.onAbort(() => ac.abort(new Error('client disconnected')));
      let sequence = 0;
      const emit = (type: string, fields: Record<string, unknown>) => sse.writeSSE({ event: type, data: JSON.stringify({ type, sequence_number: sequence++, ...fields }) });
      // Output items open as the reply writes them: calls (with tools offered, text is held back while
      // it may still begin one), then a message of the text; output indices in that order.
      let items = 0;
      let message: { outputIndex: number; text: string } | null = null;
      const calls: Array<{ outputIndex: number; call: Call }> = [];
      const reader = offerReader(offer);
      // Text after calls waits until it is more than white space (a whole reply reads it as none).
      let afterCalls = '';
      // The log-probabilities of tokens whose text is held back ride with the next delta; a call's are dropped.
      let pending: TokenLogprob[] = [];
      const openMessage = async () => {
        const opened = { outputIndex: items++, text: '' };
        message = opened;
        await emit('response.output_item.added', { output_index: opened.outputIndex, item: { ...messageItem(a, '', 'in_progress'), content: [] } });
        await emit('response.content_part.added', { item_id: messageId(a), output_index: opened.outputIndex, content_index: 0, part: { type: 'output_text', text: '', annotations: [], logprobs: [] } });
        return opened;
      };
      const text = async (piece: string) => {
        if (calls.length > 0) {
          afterCalls += piece;
          if (afterCalls.trim() === '') return;
          piece = afterCalls;
          afterCalls = '';
        }
        if (piece === '') return;
        const open = message ?? (await openMessage());
        open.text += piece;
        const logprobs = calls.length > 0 ? [] : openAiTokenLogprobs(pending);
        pending = [];
        await emit('response.output_text.delta', { item_id: messageId(a), output_index: open.outputIndex, content_index: 0, delta: piece, logprobs });
      };
      const callPiece = async (p: CallPiece) => {
        if (p.name !== undefined) {
          calls[p.index] = { outputIndex: items++, call: { name: p.name, arguments: '' } };
          await emit('response.output_item.added', { output_index: calls[p.index].outputIndex, item: callItem(a, p.index, calls[p.index].call, 'in_progress') });
        }
        if (p.arguments === '') return;
        calls[p.index].call.arguments += p.arguments;
        await emit('response.function_call_arguments.delta', { item_id: callIds(a, p.index).id, output_index: calls[p.index].outputIndex, delta: p.arguments });
      };
      const merged = mergeStreams([started]);
      try {
        const begun = responseOf(a, null, offer);
        await emit('response.created', { response: begun });
        await emit('response.in_progress', { response: begun });
        let result: GenerateResult | null = null;
        for await (const { value: ev } of merged) {
          if (ac.signal.aborted) return;
          if (ev.type === 'token') {
            if (ev.logprobs) pending.push(...ev.logprobs);
            const { content, calls: pieces } = reader ? reader.push(ev.text) : { content: ev.text, calls: [] };
            for (const p of pieces) await callPiece(p);
            await text(content);
          } else result = ev.result;
        }
        if (ac.signal.aborted) return;
        if (result === null) throw new Error('generation stream ended without a done event');
        await text(reader?.end() ?? '');
        const done = finished(result);
        const item = (index: number) => done.output[index];
        for (const [i, { outputIndex, call }] of calls.entries()) {
          await emit('response.function_call_arguments.done', { item_id: callIds(a, i).id, output_index: outputIndex, name: call.name, arguments: call.arguments });
          await emit('response.output_item.done', { output_index: outputIndex, item: item(outputIndex) });
        }
        // Every response has an output item: an empty reply is an empty message.
        const last = message ?? (calls.length === 0 ? await openMessage() : null);
        if (last !== null) {
          const at = { item_id: messageId(a), output_index: last.outputIndex, content_index: 0 };
          const part = (item(last.outputIndex) as ReturnType<typeof messageItem>).content[0];
          await emit('response.output_text.done', { ...at, text: last.text, logprobs: part.logprobs });
          await emit('response.content_part.done', { ...at, part });
          await emit('response.output_item.done', { output_index: last.outputIndex, item: item(last.outputIndex) });
        }
        await emit(incomplete(result) ? 'response.incomplete' : 'response.completed', { response: done });
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
