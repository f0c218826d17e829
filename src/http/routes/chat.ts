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
import { allChoices, choiceRequests, openAiFinish, openAiUsage, samplingFields, toGenerate } from '../openai.js';
import { allowsSeveral, type Calling, CallSplitter, type CallPiece, callingOf, callsOf, mayBeCall, offeredTools, serveMessages, toolCallFormat, toolsPrompt, withToolsPrompt } from '../tools.js';
import { mergeStreams } from '../stream-merge.js';
import { readJson } from '../validate.js';
import { clientSignal, firstEvent, logStreamError, requireGenerate } from './generate.js';
import { SERVED_MODEL_ID } from './models.js';
import { userNotFound } from './users.js';

type ChatRequest = z.output<typeof chatCompletionRequestSchema>;

/** Maps the OpenAI body to a GenerateRequest; memlora's defaults apply where OpenAI fields are absent. */
export function toGenerateRequest(body: ChatRequest): GenerateRequest {
  const calling = toolCallFormat(body);
  return toGenerate({
    ...samplingFields(body),
    ...(calling ? { responseFormat: calling } : {}),
    messages: withToolsPrompt(serveMessages(body.messages), toolsPrompt(body)),
    continueFinalMessage: body.continue_final_message ?? undefined,
    maxTokens: body.max_completion_tokens ?? body.max_tokens ?? undefined,
    logprobs: body.logprobs ?? undefined,
    topLogprobs: body.top_logprobs ?? undefined,
  });
}

const finishReason = openAiFinish;
/** Usage of a request's choices: the prompt once (OpenAI counts it once), every choice's completion. */
const usageOf = (rs: readonly GenerateResult[]) =>
  openAiUsage(rs[0].usage.promptTokens, rs.reduce((n, r) => n + r.usage.completionTokens, 0), rs[0].usage.cachedTokens);

/** OpenAI's `logprobs` of a choice from memlora's (token ids and the memlora-only field names left out). */
const logprobsOf = (lps: readonly TokenLogprob[] | undefined) =>
  lps === undefined
    ? null
    : {
        content: lps.map((lp) => ({
          token: lp.token,
          logprob: lp.logprob,
          bytes: lp.bytes,
          top_logprobs: lp.top.map((a) => ({ token: a.token, logprob: a.logprob, bytes: a.bytes })),
        })),
      };

const memloraOf = (r: GenerateResult) => ({ personalization: r.personalization, timings: r.timings });

/** How a request's replies may call its tools: guided or parsed (or not at all), the functions offered, and whether several at once. */
interface Offer {
  calling: Calling;
  names: readonly string[];
  several: boolean;
}

/**
 * A reply's calls as OpenAI's tool_calls (ids from the generation's, numbered when there are several):
 * a guided reply's, or a free reply that is wholly calls of offered functions; null when there are
 * none (a guided call cut by max_tokens, free text, or no tools offered).
 */
function toolCallsOf(r: GenerateResult, offer: Offer): Array<{ id: string; type: 'function'; function: { name: string; arguments: string } }> | null {
  if (offer.calling === null || r.finishReason !== 'stop') return null;
  const calls = callsOf(r.text, offer.calling === 'parsed' ? offer.names : undefined, offer.several);
  const id = `call_${r.id.replace(/^gen_/, '')}`;
  return calls && calls.map((call, i) => ({ id: calls.length > 1 ? `${id}_${i}` : id, type: 'function', function: call }));
}

/** A streamed call's delta: its first has the call's id (numbered within an array of calls), type and name. */
function callDelta(p: CallPiece, id: string, array: boolean) {
  if (p.name === undefined) return { index: p.index, function: { arguments: p.arguments } };
  return { index: p.index, id: array ? `${id}_${p.index}` : id, type: 'function', function: { name: p.name, arguments: p.arguments } };
}

/** A non-streamed choice: the reply's text, or its tool calls when it made some. */
function choiceOf(r: GenerateResult, index: number, offer: Offer) {
  const calls = toolCallsOf(r, offer);
  if (calls) return { index, message: { role: 'assistant', content: null, tool_calls: calls }, logprobs: logprobsOf(r.logprobs), finish_reason: 'tool_calls' };
  return { index, message: { role: 'assistant', content: r.text }, logprobs: logprobsOf(r.logprobs), finish_reason: finishReason(r.finishReason) };
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
    const calling = callingOf(body);
    const offer: Offer = { calling, names: offeredTools(body).map((t) => t.function.name), several: allowsSeveral(body) };

    if (!req.stream) {
      const results = await allChoices(ac, reqs.map((r) => gen.generate(r, ac.signal)));
      const r = results[0];
      return c.json({
        id: `chatcmpl-${r.id}`,
        object: 'chat.completion',
        created,
        model,
        choices: results.map((x, index) => choiceOf(x, index, offer)),
        usage: usageOf(results),
        memlora: { ...memloraOf(r), ...(results.length > 1 ? { choices: results.map(memloraOf) } : {}) },
      });
    }

    const streams = await allChoices(ac, reqs.map((r) => firstEvent(gen, r, ac.signal)));
    const includeUsage = body.stream_options?.include_usage === true;
    return streamSSE(c, async (sse) => {
      sse.onAbort(() => ac.abort(new Error('client disconnected')));
      // One id for every chunk of the stream, as OpenAI does; the engine's result id arrives only at the end.
      const id = `chatcmpl-${c.get('requestId')}`;
      const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
        sse.writeSSE({ data: JSON.stringify({ id, object: 'chat.completion.chunk', created, model, choices, ...extra }) });
      const results: GenerateResult[] = [];
      // A free reply that may still be a call is held back (its token chunks, per choice) until it is
      // not one, or ends. A guided reply is calls: each streams as it is written (OpenAI's tool_calls
      // deltas: id and name, then the arguments' text), its chunks held only until its first call's
      // name is whole; the logprobs of tokens that add nothing to a call ride with the next chunk.
      const held: Array<{ deltas: Array<Record<string, unknown>>; text: string } | null> = reqs.map(() => (calling === null ? null : { deltas: [], text: '' }));
      const splitters = reqs.map(() => (calling === 'guided' ? new CallSplitter(offer.several) : null));
      const callIds = reqs.map(() => `call_${randomBytes(8).toString('hex')}`);
      const pending: TokenLogprob[][] = reqs.map(() => []);
      const withPending = (index: number) => {
        const lps = pending[index];
        pending[index] = [];
        return lps.length > 0 ? { logprobs: logprobsOf(lps) } : {};
      };
      const send = (index: number, delta: Record<string, unknown>) => chunk([{ index, ...delta, finish_reason: null }]);
      const merged = mergeStreams(streams);
      try {
        for (const index of reqs.keys()) await chunk([{ index, delta: { role: 'assistant', content: '' }, finish_reason: null }]);
        for await (const { index, value: ev } of merged) {
          if (ac.signal.aborted) return;
          if (ev.type === 'token') {
            const delta = { delta: { content: ev.text }, ...(ev.logprobs ? { logprobs: logprobsOf(ev.logprobs) } : {}) };
            const wait = held[index];
            const split = splitters[index];
            // Logprobs of tokens held back or of a call, for the chunk that carries them.
            if (ev.logprobs && (split || wait)) pending[index].push(...ev.logprobs);
            if (split) {
              const pieces = split.push(ev.text);
              if (pieces.length === 0) {
                wait?.deltas.push(delta);
                continue;
              }
              held[index] = null;
              await send(index, { delta: { tool_calls: pieces.map((p) => callDelta(p, callIds[index], split.array)) }, ...withPending(index) });
              continue;
            }
            if (wait === null) {
              await send(index, delta);
              continue;
            }
            // A free reply's call is sent whole when it is (OpenAI's clients join tool-call deltas either way).
            wait.deltas.push(delta);
            wait.text += ev.text;
            if (mayBeCall(wait.text, offer.several)) continue;
            held[index] = null;
            pending[index] = [];
            for (const d of wait.deltas) await send(index, d);
          } else {
            results[index] = ev.result;
            const calls = toolCallsOf(ev.result, offer);
            const wait = held[index];
            // Calls not streamed yet (a free reply's) go whole; a held reply that is no call goes as text.
            if (calls && wait) await send(index, { delta: { tool_calls: calls.map((call, i) => ({ index: i, ...call })) }, ...withPending(index) });
            else if (wait) for (const d of wait.deltas) await send(index, d);
            else if (pending[index].length > 0) await send(index, { delta: {}, ...withPending(index) });
            await chunk([{ index, delta: {}, finish_reason: calls ? 'tool_calls' : finishReason(ev.result.finishReason) }], { memlora: memloraOf(ev.result) });
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
