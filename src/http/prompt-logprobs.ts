/**
 * vLLM's prompt_logprobs on the OpenAI routes (chat completions: the response's `prompt_logprobs`;
 * legacy completions: each choice's): per token of the prompt as the model reads it (the chat
 * rendered with its template, a text with BOS first where the template has one, token ids as they
 * are, each cut to truncate_prompt_tokens as the generation cuts it), its log-probability under the user's model given
 * the tokens before it, its rank, and the `k` most likely tokens at its place with theirs. The first
 * token, which nothing precedes, is null. An entry maps token ids to { logprob, rank, decoded_token },
 * as vLLM's does: the prompt's own token, and the k most likely (which may include it).
 *
 * The figures come from a scoring pass (POST /v1/score's) over the prompt's tokens after its first,
 * run before the generation: queued and personalised as the generation is (the user's adapter, or in
 * memory mode the retrieved memory before the prompt as its context, as /v1/score reads token ids).
 */
import { ApiError } from './errors.js';
import type { ChatMessage, GenerateMode, GenerateRequest, GenerateService, ScoreResult } from './services.js';

/** One prompt token's entry: token id to its figures. */
export type PromptLogprobEntry = Record<string, { logprob: number; rank: number; decoded_token: string }>;
export type PromptLogprobs = Array<PromptLogprobEntry | null>;

/** A prompt: a text (read with BOS first, where the template has one), token ids (as they are), or messages (rendered with the chat template). */
export type AskedPrompt = { text: string } | { ids: number[] } | { messages: ChatMessage[]; continueFinalMessage?: boolean };

/** How a request cuts its prompt (truncate_prompt_tokens, truncation_side). */
export type PromptCut = Pick<GenerateRequest, 'truncatePromptTokens' | 'truncationSide'>;

export interface PromptLogprobsAsk extends PromptCut {
  userId: string;
  mode: GenerateMode | undefined;
  /** The adapter version the generation names (its own scoring pass uses the same). */
  adapterVersion?: number;
  prompt: AskedPrompt;
  /** Most likely tokens per entry, besides the prompt's own (0-20). */
  top: number;
}

/** The service, or 503 `model_unavailable` where it cannot tokenize or score. */
function scorer(gen: GenerateService): Required<Pick<GenerateService, 'tokenize' | 'score'>> {
  if (!gen.tokenize || !gen.score) throw new ApiError(503, 'model_unavailable', 'this server does not score prompts', null, { 'retry-after': '30' });
  return gen as Required<Pick<GenerateService, 'tokenize' | 'score'>>;
}

/** A prompt's token ids as the generation reads them (memory aside), cut as the request cuts it. */
export function readPromptIds(gen: Required<Pick<GenerateService, 'tokenize'>>, p: AskedPrompt, cut: PromptCut): number[] {
  const shape = 'messages' in p ? { messages: p.messages, continueFinalMessage: p.continueFinalMessage } : { prompt: 'ids' in p ? p.ids : p.text };
  return gen.tokenize({ ...shape, truncatePromptTokens: cut.truncatePromptTokens, truncationSide: cut.truncationSide }).tokens;
}

/** One scored token as vLLM's entry: the token itself, then the most likely `top` (ranks 1..top). */
function entryOf(t: ScoreResult['tokens'][number], top: number): PromptLogprobEntry {
  const entry: PromptLogprobEntry = { [t.tokenId]: { logprob: t.logprob, rank: t.rank, decoded_token: t.token } };
  t.top.slice(0, top).forEach((a, k) => {
    entry[a.tokenId] = { logprob: a.logprob, rank: k + 1, decoded_token: a.token };
  });
  return entry;
}

/** The prompt's log-probabilities: null for its first token, an entry for each after it. */
export async function promptLogprobs(service: GenerateService, ask: PromptLogprobsAsk, signal: AbortSignal): Promise<PromptLogprobs> {
  const gen = scorer(service);
  const ids = readPromptIds(gen, ask.prompt, ask);
  if (ids.length < 2) return ids.map(() => null);
  const scored = await gen.score({ userId: ask.userId, mode: ask.mode ?? 'auto', adapterVersion: ask.adapterVersion, prompt: ids.slice(0, 1), text: ids.slice(1), topLogprobs: ask.top, compare: false }, signal);
  return [null, ...scored.tokens.map((t) => entryOf(t, ask.top))];
}
