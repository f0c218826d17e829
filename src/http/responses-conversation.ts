/**
 * The conversation a Responses API request gives the model: what it continues (previous_response_id:
 * the items that stored response's model read, then its output; or a conversation's items), its own input as
 * items with ids (the form they are stored and listed in), past 256 messages refused or, with
 * truncation auto, cut, and as a chat completion's body, validated and mapped as
 * /v1/chat/completions maps it (function calls as tool_calls, their outputs as tool messages, tools
 * in chat's form, text.format as response_format). truncation auto also cuts it to the context window.
 */
import type { z } from 'zod';
import type { Config } from '../config.js';
import type { Db } from '../db/client.js';
import type { Registry } from '../metrics.js';
import { type Conversation, countConversationItems, getConversation, lastConversationItems } from '../db/queries/conversations.js';
import { type StoredResponse, getStoredResponse } from '../db/queries/responses.js';
import { type BackgroundResponses, isPending } from './background-responses.js';
import { ApiError } from './errors.js';
import { chatCompletionRequestSchema, type responsesRequestSchema, type responsesStoredItemSchema } from './schemas.js';
import { textOf } from './tools.js';
import { validationFailed } from './validate.js';
import { toGenerateRequest } from './routes/chat.js';

export type ResponsesRequest = z.output<typeof responsesRequestSchema>;
/** An item the model read, as stored and listed (GET /v1/responses/{id}/input_items, a conversation's items). */
export type Item = z.output<typeof responsesStoredItemSchema>;
/** A response's output item, as far as the next turn reads it. */
type OutputItem =
  | { type: 'message'; id: string; status: string; content: ReadonlyArray<{ text: string }> }
  | { type: 'function_call'; id: string; call_id: string; name: string; arguments: string; status: string };

/** The most messages a chat body holds: a conversation's items (its continued responses' included) and the instructions. */
const MAX_CHAT_MESSAGES = 256;

/** The most items a conversation (POST /v1/conversations) holds before a response or a client adds to it. */
export const MAX_CONVERSATION_ITEMS = 10_000;

const DAY_MS = 86_400_000;

/**
 * Stored responses created, and conversations last changed, before this time (ms) are past the
 * retention: gone. With a retention of 0 nothing is kept, so no time is late enough.
 */
export const keptSince = (config: Config, now = Date.now()): number => (config.responsesRetentionDays === 0 ? Number.MAX_SAFE_INTEGER : now - config.responsesRetentionDays * DAY_MS);

/** What the retention purged, by the writes and by the server's sweep (src/retention.ts). */
export const purgeCounters = (metrics: Registry) => ({
  responses: metrics.counter('memlora_responses_purged_total', 'Stored responses purged past MEMLORA_RESPONSES_RETENTION_DAYS.', []),
  conversations: metrics.counter('memlora_conversations_purged_total', 'Conversations (with their items) purged past MEMLORA_RESPONSES_RETENTION_DAYS after their last change.', []),
});

export function responseNotFound(id: string, config: Config): ApiError {
  const why = config.responsesRetentionDays === 0 ? ': responses are not stored on this server (MEMLORA_RESPONSES_RETENTION_DAYS=0)' : '';
  return new ApiError(404, 'response_not_found', `response ${JSON.stringify(id)} not found${why}`, { id });
}

export function conversationNotFound(id: string, config: Config): ApiError {
  const why = config.responsesRetentionDays === 0 ? ': conversations are not stored on this server (MEMLORA_RESPONSES_RETENTION_DAYS=0)' : '';
  return new ApiError(404, 'conversation_not_found', `conversation ${JSON.stringify(id)} not found${why}`, { id });
}

/** The stored response `id` within the retention, or 404 response_not_found. */
export function storedResponse(db: Db, config: Config, id: string): StoredResponse {
  const stored = getStoredResponse(db, id, keptSince(config));
  if (stored === undefined) throw responseNotFound(id, config);
  return stored;
}

/** The conversation `id` within the retention, or 404 conversation_not_found. */
export function liveConversation(db: Db, config: Config, id: string): Conversation {
  const conversation = getConversation(db, id, keptSince(config));
  if (conversation === undefined) throw conversationNotFound(id, config);
  return conversation;
}

/** 422 where `adding` items would take a conversation of `holding` past MAX_CONVERSATION_ITEMS. */
export function checkConversationRoom(holding: number, adding: number, path: string): void {
  if (holding + adding <= MAX_CONVERSATION_ITEMS) return;
  const message = `the conversation holds ${holding} items: ${adding} more would pass ${MAX_CONVERSATION_ITEMS}`;
  throw new ApiError(422, 'validation_failed', `invalid body: ${path} (${message})`, { issues: [{ path, message, code: 'too_big' }] });
}

/** A page of items as the API lists them (a response's input items, a conversation's items). */
export const itemList = (data: ReadonlyArray<{ id: string }>, hasMore: boolean) => ({ object: 'list' as const, data, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null, has_more: hasMore });

/** Input items (a text is a user message) with ids made from `key`, in the form they are stored. */
export function itemsOf(input: ResponsesRequest['input'], key: string): Item[] {
  const list = typeof input === 'string' ? [{ type: 'message' as const, role: 'user' as const, content: input }] : input;
  return list.map((item, i): Item => {
    if (item.type === 'function_call') return { type: 'function_call', id: `fc_${key}_in${i}`, call_id: item.call_id, name: item.name, arguments: item.arguments, status: 'completed' };
    if (item.type === 'function_call_output') return { type: 'function_call_output', id: `fco_${key}_in${i}`, call_id: item.call_id, output: textOf(item.output), status: 'completed' };
    const type = item.role === 'assistant' ? ('output_text' as const) : ('input_text' as const);
    const content = typeof item.content === 'string' ? [{ type, text: item.content }] : item.content.map((p) => ({ type: p.type, text: p.text }));
    return { type: 'message', id: `msg_${key}_in${i}`, status: 'completed', role: item.role, content };
  });
}

/** The output items of a response as the next one reads them (log-probabilities and annotations left). */
export function outputItems(output: readonly OutputItem[]): Item[] {
  return output.map((item): Item =>
    item.type === 'message'
      ? { type: 'message', id: item.id, status: item.status as Item['status'], role: 'assistant', content: item.content.map((p) => ({ type: 'output_text' as const, text: p.text })) }
      : { type: 'function_call', id: item.id, call_id: item.call_id, name: item.name, arguments: item.arguments, status: item.status as Item['status'] },
  );
}

/**
 * The conversation a request continues: the items the model read for the stored response `id` and
 * that response's output. Another user's response, one past the retention, or none: 404; a background
 * response not yet done: 409.
 */
function continued(db: Db, config: Config, id: string, userId: string, background: BackgroundResponses): Item[] {
  const stored = storedResponse(db, config, id);
  if (stored.userId !== userId) throw responseNotFound(id, config);
  const response = background.current(stored) as { status: string; output: OutputItem[] };
  if (isPending(response)) throw new ApiError(409, 'response_in_progress', `response ${JSON.stringify(id)} is ${response.status}: continue it once it is done (GET /v1/responses/${id} reads its status)`, { id, status: response.status });
  return [...(stored.items as Item[]), ...outputItems(response.output)];
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
    seed: body.seed,
    mode: body.mode,
    adapter_version: body.adapter_version,
    response_format: format?.type === 'json_schema' ? { type: 'json_schema', json_schema: { name: format.name, description: format.description, schema: format.schema, strict: format.strict } } : format,
    tools: body.tools?.map((t) => ({ type: 'function', function: { name: t.name, description: t.description ?? undefined, parameters: t.parameters ?? undefined, strict: t.strict } })),
    tool_choice: chatToolChoice(body.tool_choice),
    parallel_tool_calls: body.parallel_tool_calls,
    logprobs: logprobs || undefined,
    top_logprobs: logprobs ? (body.top_logprobs ?? undefined) : undefined,
  };
}

/** A conversation as chat completions read it: the chat body, validated, and the generation request it maps to. */
export interface Turn {
  items: Item[];
  chat: z.output<typeof chatCompletionRequestSchema>;
  req: ReturnType<typeof toGenerateRequest>;
}

/** The turn of a conversation's items (a stored background response's, when a server runs it again). */
export function turnOf(body: ResponsesRequest, items: Item[]): Turn {
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
export function truncated(body: ResponsesRequest, whole: Turn, count: (req: Turn['req']) => { tokens: number; window: number }): Turn {
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

/**
 * The conversation a request names: how many items it holds and the last MAX_CHAT_MESSAGES of them
 * (no request reads more). One unchanged past the retention, none, or another user's is 404 (an
 * unowned one becomes the user's when the response adds to it).
 */
function conversationContext(db: Db, config: Config, id: string, userId: string, adding: number): { items: Item[]; total: number } {
  const conversation = liveConversation(db, config, id);
  if (conversation.userId !== null && conversation.userId !== userId) throw conversationNotFound(id, config);
  const total = countConversationItems(db, id);
  checkConversationRoom(total, adding, 'input');
  return { items: lastConversationItems(db, id, MAX_CHAT_MESSAGES) as Item[], total };
}

/**
 * The request's conversation: what it continues (a stored response's, or a conversation's items),
 * then its input (its items' ids made from `key`). Past 256 messages with the instructions, the
 * oldest items are dropped under truncation auto, otherwise it is refused (422). With the input as
 * items and the conversation's id, to add them to it when the response is done.
 */
export function requestTurn(db: Db, config: Config, body: ResponsesRequest, userId: string, key: string, background: BackgroundResponses): { turn: Turn; input: Item[]; conversationId: string | null } {
  const input = itemsOf(body.input, key);
  const conversationId = body.conversation == null ? null : typeof body.conversation === 'string' ? body.conversation : body.conversation.id;
  const before = (items: Item[]) => ({ items, total: items.length });
  const context = body.previous_response_id
    ? before(continued(db, config, body.previous_response_id, userId, background))
    : conversationId !== null
      ? conversationContext(db, config, conversationId, userId, input.length)
      : before([]);
  const items = [...context.items, ...input];
  const cap = MAX_CHAT_MESSAGES - (body.instructions ? 1 : 0);
  if (context.total + input.length <= cap) return { turn: turnOf(body, items), input, conversationId };
  const from = body.truncation === 'auto' ? cutPoints(items).find((i) => i >= items.length - cap) : undefined;
  if (from === undefined) {
    const message = `the conversation (${context.total} items before the input, ${input.length} of the input) exceeds ${cap} items${body.instructions ? ' beside the instructions' : ''}`;
    throw new ApiError(422, 'validation_failed', `invalid body: input (${message})`, { issues: [{ path: 'input', message, code: 'too_big' }] });
  }
  return { turn: turnOf(body, items.slice(from)), input, conversationId };
}
