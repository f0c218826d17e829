/**
 * What OpenAI's chat and legacy completions APIs share on memlora: the user (`user`, or the model
 * `memlora:<user id>`), their sampling fields (with vLLM's extensions) mapped onto /v1/generate's
 * (memlora's defaults where absent or null: greedy), the `n` choices as generation requests, and
 * the usage object.
 */
import type { z } from 'zod';
import { type chatCompletionRequestSchema, type completionRequestSchema, generateRequestSchema, modelRef, userOfModel } from './schemas.js';
import type { GenerateRequest, GenerateResult, StreamEvent, TokenLogprob } from './services.js';
import { validationFailed } from './validate.js';

type OpenAiBody = z.output<typeof chatCompletionRequestSchema> | z.output<typeof completionRequestSchema>;

/** The memlora user of a validated OpenAI body: `user`, or the user its model names (memlora:<user id>). */
export function openAiUserId(body: Pick<OpenAiBody, 'user' | 'model'>): string {
  return body.user ?? userOfModel(body.model)!;
}

/** The adapter version a validated OpenAI body names (adapter_version, or its model's `@<version>`), or undefined: the one that serves the user. */
export function openAiAdapterVersion(body: Pick<OpenAiBody, 'adapter_version' | 'model'>): number | undefined {
  return body.adapter_version ?? modelRef(body.model)?.version ?? undefined;
}

/** An OpenAI body's fields mapped onto /v1/generate's, validated as /v1/generate validates them (422 validation_failed). */
export function toGenerate(candidate: Record<string, unknown>): GenerateRequest {
  const parsed = generateRequestSchema.safeParse(candidate);
  if (!parsed.success) throw validationFailed(parsed.error, 'body');
  return parsed.data;
}

/**
 * /v1/generate's responseFormat of an OpenAI body's response_format, or of vLLM's JSON guides:
 * structured_outputs' json_object (JSON mode) or json, or guided_json (a schema, or its JSON text).
 * A response_format of type text (which clients send by default) leaves them the reply.
 */
function responseFormatOf(body: OpenAiBody): GenerateRequest['responseFormat'] {
  const f = body.response_format;
  if (f?.type === 'json_schema') return { type: 'json_schema', jsonSchema: f.json_schema };
  if (f && f.type !== 'text') return { type: f.type };
  const so = body.structured_outputs;
  if (so?.json_object) return { type: 'json_object' };
  const [name, guided] = so?.json != null ? ['structured_outputs', so.json] : ['guided_json', body.guided_json];
  if (guided == null) return f ? { type: 'text' } : undefined;
  return { type: 'json_schema', jsonSchema: { name, schema: typeof guided === 'string' ? (JSON.parse(guided) as Record<string, unknown>) : guided } };
}

/** The /v1/generate fields (before validation) of an OpenAI body's sampling settings. */
export function samplingFields(body: OpenAiBody) {
  return {
    userId: openAiUserId(body),
    temperature: body.temperature ?? undefined,
    topP: body.top_p ?? undefined,
    // vLLM's top_k: -1 (or 0) means all tokens, as memlora's absent topK.
    topK: body.top_k != null && body.top_k > 0 ? body.top_k : undefined,
    // vLLM's min_p: 0 means all tokens, as memlora's absent minP.
    minP: body.min_p != null && body.min_p > 0 ? body.min_p : undefined,
    repetitionPenalty: body.repetition_penalty ?? undefined,
    minTokens: body.min_tokens ?? undefined,
    ignoreEos: body.ignore_eos ?? undefined,
    frequencyPenalty: body.frequency_penalty ?? undefined,
    presencePenalty: body.presence_penalty ?? undefined,
    logitBias: body.logit_bias ?? undefined,
    stop: body.stop ?? undefined,
    stopTokenIds: body.stop_token_ids ?? undefined,
    includeStopStrInOutput: body.include_stop_str_in_output ?? undefined,
    allowedTokenIds: body.allowed_token_ids ?? undefined,
    badWords: body.bad_words ?? undefined,
    truncatePromptTokens: body.truncate_prompt_tokens ?? undefined,
    truncationSide: body.truncation_side ?? undefined,
    // Continuous usage counts the stream's tokens by their ids.
    returnTokenIds: body.return_token_ids === true || continuousUsage(body) ? true : undefined,
    // vLLM's default: control tokens leave no text in an OpenAI reply.
    skipSpecialTokens: body.skip_special_tokens ?? true,
    responseFormat: responseFormatOf(body),
    guidedChoice: body.structured_outputs?.choice ?? body.guided_choice ?? undefined,
    guidedRegex: body.structured_outputs?.regex ?? body.guided_regex ?? undefined,
    guidedGrammar: body.structured_outputs?.grammar ?? body.guided_grammar ?? undefined,
    seed: body.seed ?? undefined,
    stream: body.stream ?? false,
    mode: body.mode,
    adapterVersion: openAiAdapterVersion(body),
  };
}

/**
 * The generation requests of an OpenAI request's `n` choices: the same request, its seed (when
 * given) advanced by the choice's index so that choices differ yet reproduce; without a seed each
 * draws its own.
 */
export function choiceRequests(req: GenerateRequest, n: number): GenerateRequest[] {
  return Array.from({ length: n }, (_, j) => (j === 0 || req.seed === undefined ? req : { ...req, seed: req.seed + j }));
}

/** Every choice's result; the first failure aborts the others (their rows are freed) and is thrown. */
export async function allChoices<T>(ac: AbortController, work: ReadonlyArray<Promise<T>>): Promise<T[]> {
  try {
    return await Promise.all(work);
  } catch (e) {
    ac.abort(e);
    throw e;
  }
}

/** vLLM's continuous usage stats: in a stream with include_usage, every chunk carries the usage so far. */
export const continuousUsage = (body: OpenAiBody): boolean => body.stream === true && body.stream_options?.include_usage === true && body.stream_options.continuous_usage_stats === true;

/** The usage so far of a streamed choice (continuous usage stats): its prompt, and its tokens generated so far. */
export const usageSoFar = (promptTokens: number, completionTokens: number) => ({ usage: { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens } });

/** The prompt's token ids of a stream's first event (the first token's, or the result's when it ends at once), with return_token_ids. */
export function firstPromptIds(first: IteratorResult<StreamEvent>): number[] | undefined {
  if (first.done) return undefined;
  return first.value.type === 'token' ? first.value.promptTokenIds : first.value.result.promptTokenIds;
}

/** OpenAI's finish reason: memlora's `stop` (an end token or a stop string) and `length`; a cancelled request answers nobody. */
export const openAiFinish = (r: GenerateResult['finishReason']): 'stop' | 'length' => (r === 'length' ? 'length' : 'stop');

/** A token as the logprobs name it: its text, or with vLLM's return_tokens_as_token_ids "token_id:<id>". */
export const tokenName = (t: { token: string; tokenId: number }, asIds: boolean): string => (asIds ? `token_id:${t.tokenId}` : t.token);

/**
 * OpenAI's log-probabilities of tokens (chat's logprobs.content, the Responses API's output_text.logprobs):
 * memlora's, token ids left out, or (`asIds`) standing for the tokens' text.
 */
export const openAiTokenLogprobs = (lps: readonly TokenLogprob[], asIds = false) =>
  lps.map((lp) => ({
    token: tokenName(lp, asIds),
    logprob: lp.logprob,
    bytes: lp.bytes,
    top_logprobs: lp.top.map((a) => ({ token: tokenName(a, asIds), logprob: a.logprob, bytes: a.bytes })),
  }));

export function openAiUsage(promptTokens: number, completionTokens: number, cachedTokens: number) {
  return {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: promptTokens + completionTokens,
    prompt_tokens_details: { cached_tokens: cachedTokens },
  };
}
