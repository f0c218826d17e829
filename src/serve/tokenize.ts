/**
 * Tokenizing for clients (POST /tokenize and /detokenize, as vLLM has them): a request's text as the
 * token ids the model is fed (a raw prompt as /v1/generate encodes it, messages rendered with the chat
 * template), so clients can count tokens against the context window, truncate exactly, or send token
 * ids to /v1/completions; and token ids back as text. The user's memory is not part of it (what
 * memory prepends depends on the request and the user's history).
 */
import { encodeChat } from '../model/chat-format.js';
import type { Tokenizer } from '../model/tokenizer.js';
import { ServeError } from './errors.js';
import type { TokenTexts } from './logprobs.js';
import { type PromptContext, encodeRequest, truncatePrompt } from './prompt.js';
import type { TokenizeRequest, TokenizeResult } from './types.js';

export function tokenize(ctx: PromptContext, texts: TokenTexts, req: TokenizeRequest): TokenizeResult {
  let tokens: number[];
  if (Array.isArray(req.prompt)) {
    tokens = [...req.prompt];
  } else if (req.messages !== undefined) {
    const continued = req.continueFinalMessage === true;
    tokens = encodeChat(ctx.tokenizer, req.messages, { addGenerationPrompt: req.addGenerationPrompt ?? !continued, continueFinalMessage: continued, template: ctx.template });
  } else if (req.addSpecialTokens ?? true) {
    tokens = encodeRequest(ctx, { prompt: req.prompt ?? '', maxTokens: 1 });
  } else {
    tokens = ctx.tokenizer.encode(req.prompt ?? '', { parseSpecial: false });
  }
  tokens = truncatePrompt(ctx, tokens, req);
  return {
    tokens,
    count: tokens.length,
    maxModelLen: ctx.contextTokens,
    tokenStrings: req.returnTokenStrings ? tokens.map((id) => texts.of(id).token) : null,
  };
}

/** Token ids, each checked against the model's vocabulary (token_out_of_range names the first outside it). */
export function checkTokenIds(ids: readonly number[], vocabSize: number): void {
  for (const id of ids) {
    if (!(Number.isSafeInteger(id) && id >= 0 && id < vocabSize)) {
      throw new ServeError('token_out_of_range', `token ${id} is not in the model's vocabulary (ids 0-${vocabSize - 1})`, { details: { tokenId: id, vocabSize } });
    }
  }
}

/** The text of token ids, special tokens included; ids past the tokenizer's vocabulary (a padded embedding table) have none. */
export function detokenize(ctx: PromptContext, vocabSize: number, ids: readonly number[]): string {
  checkTokenIds(ids, vocabSize);
  return textOfIds(ctx.tokenizer, ids);
}

/** The text of checked token ids (ids past the tokenizer's vocabulary read as nothing); `skipSpecial` leaves control tokens out. */
export function textOfIds(tokenizer: Tokenizer, ids: readonly number[], skipSpecial = false): string {
  return tokenizer.decode(ids.filter((id) => id < tokenizer.vocabSize), { skipSpecial });
}
