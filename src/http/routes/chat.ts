/**
 * POST /v1/chat/completions: the OpenAI chat API mapped onto GenerateService, so existing chat
 * clients work unchanged; `user` names the memlora user. Responses carry an extra `memlora` field
 * saying how the reply was personalised.
 */
import { randomBytes } from 'node:crypto';
import type { Hono } from 'hono';
import { streamSSE } from 'hono/streaming';
import type { z } from 'zod';
import { userExists } from '../../db/queries/users.js';
import type { AppEnv, RouteDeps } from '../context.js';
import { chatCompletionRequestSchema } from '../schemas.js';
import type { GenerateRequest, GenerateResult, TokenLogprob } from '../services.js';
import { allChoices, choiceRequests, continuousUsage, firstPromptIds, openAiFinish, openAiTokenLogprobs, openAiUsage, samplingFields, toGenerate, usageSoFar } from '../openai.js';
import { type CallPiece, type ToolOffer, autoCallGuide, offerReader, readOffered, serveMessages, textOf, toolCallFormat, toolOffer, toolsPrompt, withToolsPrompt } from '../tools.js';
import { promptLogprobs } from '../prompt-logprobs.js';
import { mergeStreams } from '../stream-merge.js';
import { readJson } from '../validate.js';
import { clientSignal, firstEvent, logStreamError, requireGenerate } from './generate.js';
import { SERVED_MODEL_ID } from './models.js';
import { userNotFound } from './users.js';

type ChatRequest = z.output<typeof chatCompletionRequestSchema>;

/** Maps the OpenAI body to a GenerateRequest; memlora's defaults apply where OpenAI fields are absent. */
export function toGenerateRequest(body: ChatRequest): GenerateRequest {
  const calling = toolCallFormat(body);
  const req = toGenerate({
    ...samplingFields(body),
    ...(calling ? { responseFormat: calling } : {}),
    messages: withToolsPrompt(serveMessages(body.messages), toolsPrompt(body)),
    continueFinalMessage: body.continue_final_message ?? undefined,
    maxTokens: body.max_completion_tokens ?? body.max_tokens ?? undefined,
    logprobs: body.logprobs ?? undefined,
    topLogprobs: body.top_logprobs ?? undefined,
  });
  const toolCalls = autoCallGuide(body, req);
  return toolCalls ? { ...req, toolCalls } : req;
}

const finishReason = openAiFinish;
/** Usage of a request's choices: the prompt once (OpenAI counts it once), every choice's completion. */
const usageOf = (rs: readonly GenerateResult[]) =>
  openAiUsage(rs[0].usage.promptTokens, rs.reduce((n, r) => n + r.usage.completionTokens, 0), rs[0].usage.cachedTokens);

/** OpenAI's `logprobs` of a choice from memlora's (the memlora-only field names left out; tokens as "token_id:<id>" with `asIds`). */
const logprobsOf = (lps: readonly TokenLogprob[] | undefined, asIds: boolean) => (lps === undefined ? null : { content: openAiTokenLogprobs(lps, asIds) });

const memloraOf = (r: GenerateResult) => ({ personalization: r.personalization, timings: r.timings });

/**
 * The finish of a reply that began calls: tool_calls when their arguments are whole, else what cut
 * them (length: max_tokens; stop: a stop string), so that a client never runs a call cut short.
 */
const callsFinish = (r: GenerateResult, cut: boolean): string => (r.finishReason === 'length' ? 'length' : cut ? finishReason(r.finishReason) : 'tool_calls');

/** A streamed call's delta: its first has the call's id (numbered within an array of calls), type and name. */
function callDelta(p: CallPiece, id: string, array: boolean) {
  if (p.name === undefined) return { index: p.index, function: { arguments: p.arguments } };
  return { index: p.index, id: array ? `${id}_${p.index}` : id, type: 'function', function: { name: p.name, arguments: p.arguments } };
}

/**
 * A non-streamed choice: the reply's text, or the calls it began (ids from the generation's, numbered
 * within an array of calls) with any text after them, read as a stream would read it.
 */
function choiceOf(r: GenerateResult, index: number, offer: ToolOffer, asIds: boolean, echoed: string) {
  const read = readOffered(r.text, offer);
  // With return_token_ids (vLLM's): the reply's token ids.
  const ids = r.tokenIds ? { token_ids: r.tokenIds } : {};
  if (read && read.calls.length > 0) {
    const id = `call_${r.id.replace(/^gen_/, '')}`;
    const toolCalls = read.calls.map((call, i) => ({ id: read.array ? `${id}_${i}` : id, type: 'function', function: call }));
    const content = echoed === '' ? read.content : echoed + (read.content ?? '');
    return { index, message: { role: 'assistant', content, tool_calls: toolCalls }, logprobs: logprobsOf(r.logprobs, asIds), finish_reason: callsFinish(r, read.cut), ...ids };
  }
  return { index, message: { role: 'assistant', content: echoed + r.text }, logprobs: logprobsOf(r.logprobs, asIds), finish_reason: finishReason(r.finishReason), ...ids };
}

/**
 * vLLM's chat echo: the text of the last message where it is the assistant's (the reply's own role,
 * a message the reply continues with continue_final_message), put before each choice's content; else nothing.
 */
function echoedOf(body: ChatRequest): string {
  const last = body.messages[body.messages.length - 1];
  return body.echo && last.role === 'assistant' ? textOf(last.content) : '';
}

export function registerChatRoutes(app: Hono<AppEnv>, deps: RouteDeps): void {
  const { db, config, logger } = deps;

  app.post('/v1/chat/completions', async (c) => {
    const body = await readJson(c, chatCompletionRequestSchema, config.bodyLimitBytes);
    const req = toGenerateRequest(body);
    if (!userExists(db, req.userId)) throw userNotFound(req.userId);
    const gen = requireGenerate(deps);
    const ac = clientSignal(c);
    const model = body.model ?? SERVED_MODEL_ID;
    const created = Math.floor(Date.now() / 1000);

    const reqs = choiceRequests(req, body.n ?? 1);
    const offer = toolOffer(body);
    const asIds = body.return_tokens_as_token_ids === true;
    const echoed = echoedOf(body);

    if (!req.stream) {
      // vLLM's prompt_logprobs: the prompt as the generation reads it, scored first.
      const ofPrompt =
        body.prompt_logprobs != null
          ? { prompt_logprobs: await promptLogprobs(gen, { userId: req.userId, mode: req.mode, adapterVersion: req.adapterVersion, prompt: { messages: req.messages!, continueFinalMessage: req.continueFinalMessage }, truncatePromptTokens: req.truncatePromptTokens, truncationSide: req.truncationSide, top: body.prompt_logprobs }, ac.signal) }
          : {};
      const results = await allChoices(ac, reqs.map((r) => gen.generate(r, ac.signal)));
      const r = results[0];
      return c.json({
        id: `chatcmpl-${r.id}`,
        object: 'chat.completion',
        created,
        model,
        choices: results.map((x, index) => choiceOf(x, index, offer, asIds, echoed)),
        usage: usageOf(results),
        ...(r.promptTokenIds ? { prompt_token_ids: r.promptTokenIds } : {}),
        ...ofPrompt,
        memlora: { ...memloraOf(r), ...(results.length > 1 ? { choices: results.map(memloraOf) } : {}) },
      });
    }

    const streams = await allChoices(ac, reqs.map((r) => firstEvent(gen, r, ac.signal)));
    const includeUsage = body.stream_options?.include_usage === true;
    const continuous = continuousUsage(body);
    return streamSSE(c, async (sse) => {
      sse.onAbort(() => ac.abort(new Error('client disconnected')));
      // One id for every chunk of the stream, as OpenAI does; the engine's result id arrives only at the end.
      const id = `chatcmpl-${c.get('requestId')}`;
      const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
        sse.writeSSE({ data: JSON.stringify({ id, object: 'chat.completion.chunk', created, model, choices, ...extra }) });
      const results: GenerateResult[] = [];
      // With tools offered, each choice's reply is read as it comes (ReplyCalls): held back while it
      // may still begin a call; calls stream as OpenAI's do (a tool_calls delta with id, type and name,
      // then the arguments' text), text as content. The logprobs and ids (return_token_ids) of tokens
      // held back ride with the next chunk.
      const readers = reqs.map(() => offerReader(offer));
      const callIds = reqs.map(() => `call_${randomBytes(8).toString('hex')}`);
      const pending: TokenLogprob[][] = reqs.map(() => []);
      const pendingIds: number[][] = reqs.map(() => []);
      const withPending = (index: number) => {
        const [lps, ids] = [pending[index], pendingIds[index]];
        pending[index] = [];
        pendingIds[index] = [];
        return { ...(lps.length > 0 ? { logprobs: logprobsOf(lps, asIds) } : {}), ...(ids.length > 0 ? { token_ids: ids } : {}) };
      };
      const hasPending = (index: number) => pending[index].length > 0 || pendingIds[index].length > 0;
      // The prompt's ids (asked for, or read for continuous usage stats: every chunk with the usage so far).
      const wantIds = body.return_token_ids === true;
      const promptIds = firstPromptIds(streams[0].first) ?? [];
      const generated = reqs.map(() => 0);
      const usageNow = (index: number) => (continuous ? usageSoFar(promptIds.length, generated[index]) : {});
      const send = (index: number, delta: Record<string, unknown>) => chunk([{ index, ...delta, finish_reason: null }], usageNow(index));
      const merged = mergeStreams(streams);
      try {
        for (const index of reqs.keys()) {
          await chunk([{ index, delta: { role: 'assistant', content: '' }, finish_reason: null }], { ...(index === 0 && wantIds ? { prompt_token_ids: promptIds } : {}), ...usageNow(index) });
        }
        if (echoed !== '') for (const index of reqs.keys()) await send(index, { delta: { content: echoed } });
        for await (const { index, value: ev } of merged) {
          if (ac.signal.aborted) return;
          const reader = readers[index];
          if (ev.type === 'token') {
            if (ev.logprobs) pending[index].push(...ev.logprobs);
            generated[index] += ev.tokenIds?.length ?? 0;
            if (wantIds && ev.tokenIds) pendingIds[index].push(...ev.tokenIds);
            const { content, calls } = reader ? reader.push(ev.text) : { content: ev.text, calls: [] };
            if (calls.length > 0) await send(index, { delta: { tool_calls: calls.map((p) => callDelta(p, callIds[index], reader!.array)) }, ...withPending(index) });
            if (content !== '') await send(index, { delta: { content }, ...withPending(index) });
          } else {
            results[index] = ev.result;
            generated[index] = ev.result.usage.completionTokens;
            // Text held back to the end: it never began a call.
            const rest = reader?.end() ?? '';
            if (rest !== '') await send(index, { delta: { content: rest }, ...withPending(index) });
            if (hasPending(index)) await send(index, { delta: {}, ...withPending(index) });
            const finish = reader && reader.calls > 0 ? callsFinish(ev.result, reader.cut) : finishReason(ev.result.finishReason);
            await chunk([{ index, delta: {}, finish_reason: finish }], { memlora: memloraOf(ev.result), ...usageNow(index) });
          }
        }
        if (ac.signal.aborted) return;
        if (results.filter(Boolean).length < reqs.length) throw new Error('generation stream ended without a done event');
        if (includeUsage) await chunk([], { usage: usageOf(results) });
        await sse.writeSSE({ data: '[DONE]' });
      } catch (err) {
        if (ac.signal.aborted) return;
        await sse.writeSSE({ data: JSON.stringify(logStreamError(logger, c.get('requestId'), err)) });
      } finally {
        await merged.return(undefined);
      }
    });
  });
}
