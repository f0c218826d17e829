/**
 * The Responses API's stream of typed events for a reply, after its opening events (response.created
 * and response.in_progress, or response.queued for a background response): output items opened as
 * the reply writes them (function calls, then a message of the text), their deltas, and once the
 * reply is done each item's done events and response.completed or response.incomplete. The events
 * carry no sequence numbers: whoever sends them numbers them.
 */
import type { GenerateResult, StreamEvent, TokenLogprob } from './services.js';
import { openAiTokenLogprobs } from './openai.js';
import { type Asked, type ResponseObject, callIds, callItem, incomplete, messageId, messageItem } from './response-object.js';
import { type Call, type CallPiece, type ToolOffer, offerReader } from './tools.js';

export interface ResponseEvent {
  type: string;
  fields: Record<string, unknown>;
}

/**
 * The events of the reply `events` carries. `finish` turns its result into the response object (and
 * stores it): called once, before the done events. A reply cancelled by the engine (its requester
 * went away) is finished without done events; the stream just ends.
 */
export async function* replyEvents(a: Asked, offer: ToolOffer, events: AsyncIterable<StreamEvent>, finish: (r: GenerateResult) => ResponseObject): AsyncGenerator<ResponseEvent> {
  const event = (type: string, fields: Record<string, unknown>): ResponseEvent => ({ type, fields });
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
  const openMessage = (): ResponseEvent[] => {
    message = { outputIndex: items++, text: '' };
    return [
      event('response.output_item.added', { output_index: message.outputIndex, item: { ...messageItem(a, '', 'in_progress'), content: [] } }),
      event('response.content_part.added', { item_id: messageId(a), output_index: message.outputIndex, content_index: 0, part: { type: 'output_text', text: '', annotations: [], logprobs: [] } }),
    ];
  };
  const text = (piece: string): ResponseEvent[] => {
    if (calls.length > 0) {
      afterCalls += piece;
      if (afterCalls.trim() === '') return [];
      piece = afterCalls;
      afterCalls = '';
    }
    if (piece === '') return [];
    const opened = message === null ? openMessage() : [];
    const open = message!;
    open.text += piece;
    const logprobs = calls.length > 0 ? [] : openAiTokenLogprobs(pending);
    pending = [];
    return [...opened, event('response.output_text.delta', { item_id: messageId(a), output_index: open.outputIndex, content_index: 0, delta: piece, logprobs })];
  };
  const callPiece = (p: CallPiece): ResponseEvent[] => {
    const out: ResponseEvent[] = [];
    if (p.name !== undefined) {
      calls[p.index] = { outputIndex: items++, call: { name: p.name, arguments: '' } };
      out.push(event('response.output_item.added', { output_index: calls[p.index].outputIndex, item: callItem(a, p.index, calls[p.index].call, 'in_progress') }));
    }
    if (p.arguments === '') return out;
    calls[p.index].call.arguments += p.arguments;
    out.push(event('response.function_call_arguments.delta', { item_id: callIds(a, p.index).id, output_index: calls[p.index].outputIndex, delta: p.arguments }));
    return out;
  };

  let result: GenerateResult | null = null;
  for await (const ev of events) {
    if (ev.type === 'token') {
      if (ev.logprobs) pending.push(...ev.logprobs);
      const { content, calls: pieces } = reader ? reader.push(ev.text) : { content: ev.text, calls: [] };
      for (const p of pieces) yield* callPiece(p);
      yield* text(content);
    } else result = ev.result;
  }
  if (result === null) throw new Error('generation stream ended without a done event');
  if (result.finishReason === 'cancelled') {
    finish(result);
    return;
  }
  yield* text(reader?.end() ?? '');
  const done = finish(result);
  const item = (index: number) => done.output[index];
  for (const [i, { outputIndex, call }] of calls.entries()) {
    yield event('response.function_call_arguments.done', { item_id: callIds(a, i).id, output_index: outputIndex, name: call.name, arguments: call.arguments });
    yield event('response.output_item.done', { output_index: outputIndex, item: item(outputIndex) });
  }
  // Every response has an output item: an empty reply is an empty message.
  if (message === null && calls.length === 0) yield* openMessage();
  const last = message as { outputIndex: number; text: string } | null;
  if (last !== null) {
    const at = { item_id: messageId(a), output_index: last.outputIndex, content_index: 0 };
    const part = (item(last.outputIndex) as ReturnType<typeof messageItem>).content[0];
    yield event('response.output_text.done', { ...at, text: last.text, logprobs: part.logprobs });
    yield event('response.content_part.done', { ...at, part });
    yield event('response.output_item.done', { output_index: last.outputIndex, item: item(last.outputIndex) });
  }
  yield event(incomplete(result) ? 'response.incomplete' : 'response.completed', { response: done });
}
