/**
 * The Responses API's response object and its output items, made from what a request asked and,
 * once it is done, the reply: what POST /v1/responses answers, streams and stores, and what a
 * background response reads as while it is queued or running.
 */
import type { ResponsesRequest } from './responses-conversation.js';
import type { GenerateResult, TokenLogprob } from './services.js';
import { openAiTokenLogprobs } from './openai.js';
import { type Call, type ToolOffer, readOffered } from './tools.js';

/** A reply cut by its token budget (or the context window) is incomplete. */
export const incomplete = (r: GenerateResult) => r.finishReason === 'length';

/** What a response object says of its request, whatever its state; item ids are made from `id`. */
export interface Asked {
  id: string;
  created: number;
  model: string;
  body: ResponsesRequest;
  maxTokens: number;
  temperature: number;
  topP: number;
  store: boolean;
  background: boolean;
}

export type ResponseObject = ReturnType<typeof responseOf>;

export const messageId = (a: Asked) => `msg_${a.id}`;
export const callIds = (a: Asked, i: number) => ({ id: `fc_${a.id}_${i}`, call_id: `call_${a.id}_${i}` });

export function messageItem(a: Asked, text: string, status: string, logprobs: readonly TokenLogprob[] = []) {
  return { type: 'message' as const, id: messageId(a), status, role: 'assistant' as const, content: [{ type: 'output_text', text, annotations: [], logprobs: openAiTokenLogprobs(logprobs) }] };
}

export function callItem(a: Asked, i: number, call: Call, status: string) {
  return { type: 'function_call' as const, ...callIds(a, i), name: call.name, arguments: call.arguments, status };
}

/**
 * The output items of a finished reply, read as a stream reads it: the calls it began (the last
 * incomplete where its arguments were cut), then a message of any text after them; or one message,
 * with the reply's log-probabilities where they were asked for (a reply that made calls has none).
 * A cancelled reply's items are incomplete.
 */
function outputOf(a: Asked, r: GenerateResult, offer: ToolOffer) {
  const status = r.finishReason === 'stop' ? 'completed' : 'incomplete';
  const read = readOffered(r.text, offer);
  if (!read || read.calls.length === 0) return [messageItem(a, r.text, status, r.logprobs)];
  const calls = read.calls.map((c, i) => callItem(a, i, c, read.cut && i === read.calls.length - 1 ? 'incomplete' : 'completed'));
  return read.content === null ? calls : [...calls, messageItem(a, read.content, status)];
}

/** Where a response is before its reply: waiting for a batch row (a background response), or running. */
export type Pending = 'queued' | 'in_progress';

/** The response object: pending (no result yet), or done with its result (a cancelled one with what it wrote). */
export function responseOf(a: Asked, r: GenerateResult | Pending, offer: ToolOffer) {
  const done = typeof r === 'string' ? null : r;
  return {
    id: `resp_${a.id}`,
    object: 'response',
    created_at: a.created,
    status: done === null ? (r as Pending) : done.finishReason === 'cancelled' ? 'cancelled' : incomplete(done) ? 'incomplete' : 'completed',
    background: a.background,
    error: null as { code: string; message: string } | null,
    incomplete_details: done !== null && incomplete(done) ? { reason: 'max_output_tokens' } : null,
    instructions: a.body.instructions ?? null,
    max_output_tokens: a.maxTokens,
    model: a.model,
    output: done === null ? [] : outputOf(a, done, offer),
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
      done === null
        ? null
        : {
            input_tokens: done.usage.promptTokens,
            input_tokens_details: { cached_tokens: done.usage.cachedTokens },
            output_tokens: done.usage.completionTokens,
            output_tokens_details: { reasoning_tokens: 0 },
            total_tokens: done.usage.promptTokens + done.usage.completionTokens,
          },
    memlora: done === null ? null : { personalization: done.personalization, timings: done.timings },
  };
}

/** A response that failed (a background one: its generation failed, or the server stopped first). */
export function failedResponse<T extends object>(response: T, error: { code: string; message: string }): T & { status: 'failed'; error: typeof error } {
  return { ...response, status: 'failed', error };
}
