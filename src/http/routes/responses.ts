/**
 * POST /v1/responses: OpenAI's Responses API, for OpenAI's newer clients and agents, served as a chat
 * completion: the request's conversation (responses-conversation.ts: the stored one it continues,
 * then its input; the instructions a system message) is mapped as /v1/chat/completions maps it, and
 * the reply comes back as output items (function calls, then a message) in a response object, or as
 * the Responses API's stream of typed events. `user` names the memlora user (or the model,
 * memlora:<user id>); responses carry the `memlora` field as chat completions do. A response is
 * stored (`store`, true unless false) with the items its model read, for a later request of the same
 * user to continue (previous_response_id); routes/stored-responses.ts reads and deletes them.
 */
import { randomBytes } from 'node:crypto';
import type { Hono } from 'hono';
import { streamSSE } from 'hono/streaming';
import { storeResponse } from '../../db/queries/responses.js';
import { userExists } from '../../db/queries/users.js';
import type { AppEnv, RouteDeps } from '../context.js';
import { appendConversationItems } from '../../db/queries/conversations.js';
import { type ResponsesRequest, keptSince, outputItems, requestTurn, truncated } from '../responses-conversation.js';
import { responsesRequestSchema } from '../schemas.js';
import type { GenerateResult, TokenLogprob } from '../services.js';
import { openAiTokenLogprobs, openAiUserId } from '../openai.js';
import { mergeStreams } from '../stream-merge.js';
import { type Call, type CallPiece, type ToolOffer, offerReader, readOffered, toolOffer } from '../tools.js';
import { readJson } from '../validate.js';
import { requireTokenizer } from './tokenize.js';
import { clientSignal, firstEvent, logStreamError, requireGenerate } from './generate.js';
import { SERVED_MODEL_ID } from './models.js';
import { userNotFound } from './users.js';

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
    metadata: a.body.metadata ?? {},
    conversation: a.body.conversation == null ? null : { id: typeof a.body.conversation === 'string' ? a.body.conversation : a.body.conversation.id },
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
  const { db, config, logger, metrics } = deps;
  const stored = metrics.counter('memlora_responses_stored_total', 'Responses of the Responses API stored (store, true unless false).', []);
  const storeFailures = metrics.counter('memlora_responses_store_failures_total', 'Responses that could not be stored (answered with store: false; the reason is logged).', []);
  const purged = metrics.counter('memlora_responses_purged_total', 'Stored responses purged past MEMLORA_RESPONSES_RETENTION_DAYS.', []);
  const conversationFailures = metrics.counter('memlora_responses_conversation_failures_total', 'Responses whose input and output could not be added to their conversation (deleted meanwhile, or taken by another user).', []);

  app.post('/v1/responses', async (c) => {
    const body = await readJson(c, responsesRequestSchema, config.bodyLimitBytes);
    const userId = openAiUserId(body);
    // The response's key: its id and its items' ids are made from it (random, so unguessable: a
    // stored response is read by its id).
    const key = randomBytes(12).toString('hex');
    if (!userExists(db, userId)) throw userNotFound(userId);
    const asked = requestTurn(db, config, body, userId, key);
    let turn = asked.turn;
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
    /** The response's input and output added to its conversation (a failure is logged and counted, never the response's). */
    const addToConversation = (response: ReturnType<typeof responseOf>) => {
      if (asked.conversationId === null) return;
      let why = "the conversation was deleted meanwhile, or another user's response took it";
      try {
        if (appendConversationItems(db, asked.conversationId, [...asked.input, ...outputItems(response.output)], keptSince(config), userId)) return;
      } catch (err) {
        why = (err as Error).message;
      }
      conversationFailures.inc();
      logger.error('conversation items not added', { requestId: c.get('requestId'), conversationId: asked.conversationId, err: why });
    };
    /** The finished response, added to its conversation and stored when asked (a failed write is logged; the response then says store: false). */
    const finished = (r: GenerateResult) => {
      const response = responseOf(a, r, offer);
      addToConversation(response);
      if (!a.store) return response;
      try {
        const done = storeResponse(db, { id: response.id, userId, createdAt: Date.now(), previousResponseId: response.previous_response_id, response, items: turn.items }, keptSince(config));
        stored.inc();
        if (done.purged > 0) purged.inc(undefined, done.purged);
        return response;
      } catch (err) {
        storeFailures.inc();
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
