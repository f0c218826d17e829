/**
 * A request as the token ids the model is fed. `messages` are rendered with the model's chat template
 * and end with the assistant's opening (the reply follows); a raw `prompt` is BOS (when the template
 * uses one) plus the prompt as text, or a prompt of token ids as they are (memory goes before them,
 * after its own BOS: a BOS the ids start with is not repeated). Request text is always encoded as
 * text: a control token typed into a message or prompt stays characters.
 *
 * Length rules: a prompt with no room left for one generated token in the context window is refused
 * (`prompt_too_long`, 422, details promptTokens and contextTokens); otherwise maxTokens is capped at the
 * room left and a reply that fills the window ends with finishReason `length`. Memory never makes a
 * request fail: items are dropped, lowest-ranked first, until prompt + memory + maxTokens fits.
 */
import { type ChatTemplateName, encodeChat, getChatTemplate, stopTokenIds } from '../model/chat-format.js';
import type { Tokenizer } from '../model/tokenizer.js';
import { ServeError } from './errors.js';
import { messagesWithMemory, promptWithMemory } from './memory.js';
import type { ServeRequest } from './types.js';

export interface PromptContext {
  tokenizer: Tokenizer;
  template: ChatTemplateName;
  /** The model's context window (maxPositions). */
  contextTokens: number;
}

type PromptFields = Pick<ServeRequest, 'messages' | 'prompt' | 'maxTokens' | 'continueFinalMessage' | 'truncatePromptTokens' | 'truncationSide'>;

/** Token ids of the request with `memory` items prepended (none: the request as sent). */
export function encodeRequest(ctx: PromptContext, req: PromptFields, memory: readonly string[] = []): number[] {
  if (req.messages !== undefined) {
    const continued = req.continueFinalMessage === true;
    return encodeChat(ctx.tokenizer, messagesWithMemory(req.messages, memory), { addGenerationPrompt: !continued, continueFinalMessage: continued, template: ctx.template });
  }
  if (Array.isArray(req.prompt) && req.prompt.length > 0) {
    if (memory.length === 0) return [...req.prompt];
    const head = encodeRequest(ctx, { prompt: '', maxTokens: 0 }, memory);
    const bos = ctx.tokenizer.bosId;
    return [...head, ...(head[0] === bos && req.prompt[0] === bos ? req.prompt.slice(1) : req.prompt)];
  }
  const text = promptWithMemory(typeof req.prompt === 'string' ? req.prompt : '', memory);
  const ids = getChatTemplate(ctx.template).addBos ? [ctx.tokenizer.bosId] : [];
  if (text.length > 0) ids.push(...ctx.tokenizer.encode(text, { parseSpecial: false }));
  if (ids.length === 0) ids.push(ctx.tokenizer.bosId); // an empty raw prompt under a template without BOS
  return ids;
}

/** The most prompt tokens the request reads (vLLM's truncate_prompt_tokens; -1: the window less one token for the reply); none: no bound. */
function promptBound(ctx: PromptContext, req: Pick<PromptFields, 'truncatePromptTokens'>): number {
  const k = req.truncatePromptTokens;
  return k === undefined ? Infinity : k === -1 ? ctx.contextTokens - 1 : k;
}

/**
 * A prompt's ids cut to truncatePromptTokens (vLLM's truncate_prompt_tokens), as the model reads them:
 * the last k, or with truncationSide right the first k.
 */
export function truncatePrompt(ctx: PromptContext, ids: number[], cut: Pick<PromptFields, 'truncatePromptTokens' | 'truncationSide'>): number[] {
  const bound = promptBound(ctx, cut);
  if (ids.length <= bound) return ids;
  return cut.truncationSide === 'right' ? ids.slice(0, bound) : ids.slice(-bound);
}

/** The request's own ids (cut to truncatePromptTokens), or prompt_too_long when the window has no room for a reply. */
export function promptIds(ctx: PromptContext, req: PromptFields): number[] {
  const ids = truncatePrompt(ctx, encodeRequest(ctx, req), req);
  if (ids.length >= ctx.contextTokens) {
    throw new ServeError('prompt_too_long', `the prompt has ${ids.length} tokens; the context window holds ${ctx.contextTokens}, with room for at least one generated token`, {
      details: { promptTokens: ids.length, contextTokens: ctx.contextTokens },
    });
  }
  return ids;
}

/**
 * Prompt ids with as many of `items` (best first) as fit with maxTokens to spare, and within
 * truncatePromptTokens (memory is never cut: an item fits whole or is left out); `used` says how many.
 */
export function fitMemory(ctx: PromptContext, req: PromptFields, items: readonly string[]): { ids: number[]; used: number } {
  const bound = promptBound(ctx, req);
  for (let n = items.length; n > 0; n--) {
    const ids = encodeRequest(ctx, req, items.slice(0, n));
    if (ids.length + req.maxTokens <= ctx.contextTokens && ids.length <= bound) return { ids, used: n };
  }
  return { ids: promptIds(ctx, req), used: 0 };
}

/** Most tokens a reply may have: maxTokens, capped by the room the prompt leaves. */
export function replyBudget(ctx: PromptContext, promptTokens: number, maxTokens: number): number {
  return Math.max(1, Math.min(maxTokens, ctx.contextTokens - promptTokens));
}

/** The model's end tokens: its EOS, the tokenizer's and the chat template's stop tokens (what ignoreEos holds back). */
export function endIdsOf(ctx: PromptContext, modelEos: number): number[] {
  return [...new Set([modelEos, ctx.tokenizer.eosId, ...stopTokenIds(ctx.tokenizer, ctx.template)])];
}

/** What else ends a reply: the request's stop token ids, and the template's stop strings with the request's. */
export function stopsOf(ctx: PromptContext, req: Pick<ServeRequest, 'stop' | 'stopTokenIds'>): { stopTokenIds: number[]; stop: string[] } {
  const t = getChatTemplate(ctx.template);
  return { stopTokenIds: [...new Set(req.stopTokenIds ?? [])], stop: [...new Set([...t.stopStrings, ...req.stop])] };
}
