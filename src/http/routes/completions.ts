/**
 * POST /v1/completions: OpenAI's legacy completions API, as evaluation tools and older clients call
 * it: raw prompts (a text or token ids, or up to 16 of either, one choice each), `user` = the
 * memlora user id. With `echo` the prompt is returned before the completion, and with `logprobs` its
 * own tokens come scored too (POST /v1/score's pass over the prompt under the user's model; a text
 * from the start after BOS, token ids after their first, whose log-probability is null as in OpenAI's
 * API): `max_tokens: 0, echo: true, logprobs: 0` is a log-likelihood query. The legacy logprobs
 * object lists tokens, token_logprobs, top_logprobs (token text to log-probability) and text_offset
 * (UTF-16 offsets in the returned text).
 */
import { TextDecoder } from 'node:util';
import type { Hono } from 'hono';
import { streamSSE } from 'hono/streaming';
import type { z } from 'zod';
import { userExists } from '../../db/queries/users.js';
import type { AppEnv, RouteDeps } from '../context.js';
import { ApiError } from '../errors.js';
import { allChoices, choiceRequests, continuousUsage, firstPromptIds, openAiAdapterVersion, openAiFinish, openAiUsage, openAiUserId, samplingFields, toGenerate, tokenName, usageSoFar } from '../openai.js';
import { type AskedPrompt, type PromptCut, type PromptLogprobsAsk, promptLogprobs, readPromptIds } from '../prompt-logprobs.js';
import { mergeStreams } from '../stream-merge.js';
import { completionPrompts, completionRequestSchema } from '../schemas.js';
import type { GenerateRequest, GenerateResult, GenerateService, ScoreResult, TokenLogprob } from '../services.js';
import { readJson } from '../validate.js';
import { clientSignal, firstEvent, logStreamError, requireGenerate } from './generate.js';
import { requireTokenizer } from './tokenize.js';
import { SERVED_MODEL_ID } from './models.js';
import { userNotFound } from './users.js';

type CompletionRequest = z.output<typeof completionRequestSchema>;

/** OpenAI's default max_tokens for completions. */
const DEFAULT_MAX_TOKENS = 16;

/** One prompt: a text, or token ids. */
type Prompt = string | number[];

function toGenerateRequest(body: CompletionRequest, prompt: Prompt, maxTokens: number, logprobs: number | null): GenerateRequest {
  return toGenerate({
    ...samplingFields(body),
    prompt,
    maxTokens,
    ...(logprobs !== null ? { logprobs: true, topLogprobs: logprobs } : {}),
  });
}

/** A token in the legacy logprobs: a scored one, or a prompt's first token, which nothing precedes (null). */
type LegacyEntry = Pick<TokenLogprob, 'token' | 'tokenId' | 'bytes'> & { logprob: number | null; top: TokenLogprob['top'] | null };

/**
 * Legacy log-probabilities of tokens, their text offsets counted on from `offset.at` (advanced past
 * them); with `asIds` (vLLM's return_tokens_as_token_ids) tokens named "token_id:<id>", offsets still into the text.
 */
function legacyLogprobs(entries: readonly LegacyEntry[], offset: { at: number; decoder: TextDecoder }, asIds: boolean) {
  const textOffset: number[] = [];
  for (const e of entries) {
    textOffset.push(offset.at);
    offset.at += offset.decoder.decode(Uint8Array.from(e.bytes ?? [...Buffer.from(e.token, 'utf8')]), { stream: true }).length;
  }
  return {
    tokens: entries.map((e) => tokenName(e, asIds)),
    token_logprobs: entries.map((e) => e.logprob),
    // The most likely first where two alternatives read the same.
    top_logprobs: entries.map((e) => {
      if (e.top === null) return null;
      const top: Record<string, number> = {};
      for (const a of e.top) {
        const name = tokenName(a, asIds);
        if (!(name in top)) top[name] = a.logprob;
      }
      return top;
    }),
    text_offset: textOffset,
  };
}

const newOffset = () => ({ at: 0, decoder: new TextDecoder('utf-8') });

interface Plan {
  prompt: Prompt;
  /** The prompt as returned with echo (token ids as their text). */
  echoText: string;
  echo: boolean;
  /** Alternatives per token; null: no logprobs. */
  top: number | null;
  /** Score the prompt: echoed with logprobs, or echoed alone (max_tokens 0) for its token count. */
  scorePrompt: boolean;
  gen: GenerateRequest | null;
}

/** The prompt's scoring pass, as POST /v1/score runs it: a text from the start (after BOS), token ids after their first. */
function scorePrompt(gen: GenerateService, body: CompletionRequest, plan: Plan, signal: AbortSignal): Promise<ScoreResult> {
  const req = { userId: openAiUserId(body), mode: body.mode ?? 'auto', adapterVersion: openAiAdapterVersion(body), topLogprobs: plan.top ?? 0, compare: false };
  const { prompt } = plan;
  return gen.score!(typeof prompt === 'string' ? { ...req, text: prompt } : { ...req, prompt: prompt.slice(0, 1), text: prompt.slice(1) }, signal);
}

/** A completions prompt as the prompt helpers take it, and how the body cuts it (truncate_prompt_tokens, truncation_side). */
const askedPrompt = (prompt: Prompt): AskedPrompt => (typeof prompt === 'string' ? { text: prompt } : { ids: prompt });
const cutOf = (body: CompletionRequest): PromptCut => ({ truncatePromptTokens: body.truncate_prompt_tokens ?? undefined, truncationSide: body.truncation_side ?? undefined });

/** What prompt_logprobs scores of a prompt: as the generation reads it (cut to truncate_prompt_tokens). */
const promptLogprobsAsk = (body: CompletionRequest, prompt: Prompt, top: number): PromptLogprobsAsk => ({
  userId: openAiUserId(body),
  mode: body.mode,
  adapterVersion: openAiAdapterVersion(body),
  prompt: askedPrompt(prompt),
  ...cutOf(body),
  top,
});

/** The echoed prompt's legacy entries: its scored tokens, after the unscored first of token ids. */
function echoEntries(gen: GenerateService, plan: Plan, scored: ScoreResult | null): LegacyEntry[] {
  const tokens = scored?.tokens ?? [];
  if (typeof plan.prompt === 'string') return tokens;
  return [{ token: gen.detokenize!(plan.prompt.slice(0, 1)), tokenId: plan.prompt[0], bytes: null, logprob: null, top: null }, ...tokens];
}

export function registerCompletionRoutes(app: Hono<AppEnv>, deps: RouteDeps): void {
  const { db, config, logger } = deps;

  app.post('/v1/completions', async (c) => {
    const body = await readJson(c, completionRequestSchema, config.bodyLimitBytes);
    const maxTokens = body.max_tokens ?? DEFAULT_MAX_TOKENS;
    const echo = body.echo ?? false;
    const top = body.logprobs ?? null;
    const asIds = body.return_tokens_as_token_ids === true;
    /**
     * vLLM's return_token_ids: a choice's prompt ids as the model read them and its reply's; with
     * nothing generated (max_tokens 0), the prompt as a generation would read it, memory aside.
     */
    const tokenIdsOf = (plan: Plan, r: GenerateResult | null) => {
      if (!body.return_token_ids) return {};
      if (r) return { prompt_token_ids: r.promptTokenIds ?? [], token_ids: r.tokenIds ?? [] };
      return { prompt_token_ids: readPromptIds(requireTokenizer(deps), askedPrompt(plan.prompt), cutOf(body)), token_ids: [] };
    };
    const plans: Plan[] = completionPrompts(body.prompt).map((prompt) => ({
      prompt,
      echoText: typeof prompt === 'string' ? prompt : '',
      echo,
      top,
      // A one-token prompt of ids has nothing to score: its only token is the first.
      scorePrompt: echo && (top !== null || maxTokens === 0) && (typeof prompt === 'string' || prompt.length > 1),
      gen: maxTokens > 0 ? toGenerateRequest(body, prompt, maxTokens, top) : null,
    }));
    const userId = openAiUserId(body);
    if (!userExists(db, userId)) throw userNotFound(userId);
    const gen = requireGenerate(deps);
    if (plans.some((p) => p.scorePrompt) && !gen.score) throw new ApiError(503, 'model_unavailable', 'this server does not score prompts', null, { 'retry-after': '30' });
    if (echo) {
      for (const plan of plans) {
        if (typeof plan.prompt === 'string') continue;
        if (!gen.detokenize) throw new ApiError(503, 'model_unavailable', 'this server does not read token ids back as text', null, { 'retry-after': '30' });
        plan.echoText = gen.detokenize(plan.prompt);
      }
    }
    const ac = clientSignal(c);
    const model = body.model ?? SERVED_MODEL_ID;
    const created = Math.floor(Date.now() / 1000);
    const id = `cmpl-${c.get('requestId')}`;

    const n = body.n ?? 1;
    /** The prompt's tokens as a generation counts them (BOS included), or from its scoring pass. */
    const promptTokensOf = (scored: ScoreResult | null, r: GenerateResult | null): number => r?.usage.promptTokens ?? scored!.usage.contextTokens + scored!.usage.scoredTokens;
    const completionTokensOf = (rs: ReadonlyArray<GenerateResult | null>): number => rs.reduce((sum, r) => sum + (r?.usage.completionTokens ?? 0), 0);

    if (!body.stream) {
      // Per prompt: its scoring passes (echo, prompt_logprobs), then its n generations; choice p·n + j, as OpenAI orders them.
      const perPrompt = async (plan: Plan, p: number) => {
        const scored = plan.scorePrompt ? await scorePrompt(gen, body, plan, ac.signal) : null;
        const ofPrompt = body.prompt_logprobs != null ? { prompt_logprobs: await promptLogprobs(gen, promptLogprobsAsk(body, plan.prompt, body.prompt_logprobs), ac.signal) } : {};
        const results: Array<GenerateResult | null> = plan.gen ? await Promise.all(choiceRequests(plan.gen, n).map((r) => gen.generate(r, ac.signal))) : Array.from({ length: n }, () => null);
        return {
          choices: results.map((r, j) => {
            // With logprobs and echo the prompt was scored: its tokens come first.
            const entries = [...(plan.echo ? echoEntries(gen, plan, scored) : []), ...(r?.logprobs ?? [])];
            return {
              index: p * n + j,
              text: (plan.echo ? plan.echoText : '') + (r?.text ?? ''),
              logprobs: plan.top === null ? null : legacyLogprobs(entries, newOffset(), asIds),
              finish_reason: r ? openAiFinish(r.finishReason) : ('length' as const),
              ...ofPrompt,
              ...tokenIdsOf(plan, r),
            };
          }),
          promptTokens: promptTokensOf(scored, results[0]),
          completionTokens: completionTokensOf(results),
          cachedTokens: results[0]?.usage.cachedTokens ?? 0,
          personalization: (results[0] ?? scored!).personalization,
        };
      };
      const done = await allChoices(ac, plans.map(perPrompt));
      const sum = (f: (d: (typeof done)[number]) => number) => done.reduce((total, d) => total + f(d), 0);
      return c.json({
        id,
        object: 'text_completion',
        created,
        model,
        choices: done.flatMap((d) => d.choices),
        usage: openAiUsage(sum((d) => d.promptTokens), sum((d) => d.completionTokens), sum((d) => d.cachedTokens)),
        memlora: { personalization: done[0].personalization },
      });
    }

    // A stream serves one prompt (the schema refuses more), its n choices merged: the echo first, then
    // each choice's pieces as they come.
    const plan = plans[0];
    const scored = plan.scorePrompt ? await scorePrompt(gen, body, plan, ac.signal) : null;
    const streams = plan.gen ? await allChoices(ac, choiceRequests(plan.gen, n).map((r) => firstEvent(gen, r, ac.signal))) : [];
    const includeUsage = body.stream_options?.include_usage === true;
    // Continuous usage stats (vLLM's): every chunk with its choice's usage so far, counted by token ids.
    const continuous = continuousUsage(body);
    const wantIds = body.return_token_ids === true;
    const promptTokens = streams.length > 0 ? (firstPromptIds(streams[0].first)?.length ?? 0) : promptTokensOf(scored, null);
    return streamSSE(c, async (sse) => {
      sse.onAbort(() => ac.abort(new Error('client disconnected')));
      const generated = Array.from({ length: n }, () => 0);
      const chunk = (choices: Array<{ index: number } & Record<string, unknown>>, extra: Record<string, unknown> = {}) =>
        sse.writeSSE({ data: JSON.stringify({ id, object: 'text_completion', created, model, choices, ...extra, ...(continuous && choices.length === 1 ? usageSoFar(promptTokens, generated[choices[0].index]) : {}) }) });
      const offsets = Array.from({ length: n }, newOffset);
      const results: GenerateResult[] = [];
      const merged = streams.length > 0 ? mergeStreams(streams) : null;
      const finish = (index: number, reason: 'stop' | 'length', r: GenerateResult | null) =>
        chunk([{ index, text: '', logprobs: null, finish_reason: reason, ...(r ? {} : tokenIdsOf(plan, null)) }], { memlora: { personalization: (r ?? scored!).personalization } });
      try {
        if (plan.echo) {
          for (const [index, offset] of offsets.entries()) {
            await chunk([{ index, text: plan.echoText, logprobs: plan.top === null ? null : legacyLogprobs(echoEntries(gen, plan, scored), offset, asIds), finish_reason: null }]);
          }
        }
        if (merged) {
          for await (const { index, value: ev } of merged) {
            if (ac.signal.aborted) return;
            if (ev.type === 'token') {
              generated[index] += ev.tokenIds?.length ?? 0;
              const ids = wantIds ? { ...(ev.promptTokenIds ? { prompt_token_ids: ev.promptTokenIds } : {}), ...(ev.tokenIds ? { token_ids: ev.tokenIds } : {}) } : {};
              await chunk([{ index, text: ev.text, logprobs: plan.top === null ? null : legacyLogprobs(ev.logprobs ?? [], offsets[index], asIds), finish_reason: null, ...ids }]);
            } else {
              results[index] = ev.result;
              generated[index] = ev.result.usage.completionTokens;
              await finish(index, openAiFinish(ev.result.finishReason), ev.result);
            }
          }
          if (ac.signal.aborted) return;
          if (results.filter(Boolean).length < n) throw new Error('generation stream ended without a done event');
        } else {
          for (const index of offsets.keys()) await finish(index, 'length', null);
        }
        if (includeUsage) await chunk([], { usage: openAiUsage(promptTokensOf(scored, results[0] ?? null), completionTokensOf(results), results[0]?.usage.cachedTokens ?? 0) });
        await sse.writeSSE({ data: '[DONE]' });
      } catch (err) {
        if (ac.signal.aborted) return;
        await sse.writeSSE({ data: JSON.stringify(logStreamError(logger, c.get('requestId'), err)) });
      } finally {
        await merged?.return(undefined);
      }
    });
  });
}
