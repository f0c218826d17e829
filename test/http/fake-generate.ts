/**
 * A test double for GenerateService: deterministic replies built from the request, recording every
 * request and signal it receives. It exists to test the HTTP mapping, not generation.
 */
import { dropPrefixCache, prefixCacheReport } from '../../src/serve/prefix-admin.js';
import { type GenerateRequest, type GenerateResult, type GenerateService, type ScoreRequest, ServiceError, type StreamEvent, type TokenizeRequest, type TokenLogprob } from '../../src/http/services.js';
import { type Harness, makeHarness } from './helpers.js';

export interface FakeGenerate extends GenerateService {
  calls: Array<{ req: GenerateRequest; signal: AbortSignal }>;
  /** The scoring requests received. */
  scoreCalls: ScoreRequest[];
  /** The tokenize requests received. */
  tokenizeCalls: TokenizeRequest[];
  /** The user id lists warm() received. */
  warmCalls: string[][];
  /** The cacheContents / cacheCurve / dropCached / prefixCache / dropPrefixCache / queue calls received. */
  cacheCalls: Array<{ op: 'contents'; limit: number } | { op: 'curve' } | { op: 'drop'; userId: string | undefined } | { op: 'prefix' } | { op: 'dropPrefix'; userId: string | undefined } | { op: 'queue'; limit: number }>;
  /** Throw this before producing anything. */
  failWith?: Error;
  /** Throw this after the first token (streams only). */
  failMidway?: Error;
  /** Reply this text (its words as tokens) instead of echoing the prompt. */
  replyText?: string;
  /** Block after the first token until the signal aborts, then end as the engine ends a cancelled request: a done event (a result), finish reason cancelled. */
  hangAfterFirst?: boolean;
  /** Called as stream() is called, before it yields anything: what happens while the engine takes the request. */
  onStream?: (req: GenerateRequest) => void;
  loaded: boolean;
  returned: number;
}

/** The fake tokenizer's text of token ids: id 1 is BOS (<s>), any other the UTF-16 unit of that code. */
const textOfIds = (ids: readonly number[]): string => ids.map((t) => (t === 1 ? '<s>' : String.fromCharCode(t))).join('');
const textOf = (p: string | number[]): string => (typeof p === 'string' ? p : textOfIds(p));

function reply(req: GenerateRequest, replyText: string | undefined): { words: string[]; finish: 'stop' | 'length' } {
  const source = req.prompt !== undefined ? textOf(req.prompt) : req.messages![req.messages!.length - 1].content;
  const words = (replyText ?? `echo ${source}`).split(/\s+/).filter(Boolean);
  const cut = words.slice(0, req.maxTokens);
  return { words: cut, finish: cut.length < words.length ? 'length' : 'stop' };
}

/** With logprobs, word i (its text as streamed) is "token" i, of log-probability -(i+1)/10 and rank i+2, with topLogprobs made-up alternatives. */
function wordLogprob(req: GenerateRequest, piece: string, i: number): TokenLogprob {
  const alt = (token: string, tokenId: number, logprob: number) => ({ token, tokenId, logprob, bytes: [...Buffer.from(token, 'utf8')] });
  const top = Array.from({ length: req.topLogprobs ?? 0 }, (_, k) => alt(`alt${k}`, 1000 + k, -(k + 1) / 100));
  return { ...alt(piece, i, -(i + 1) / 10), rank: i + 2, top };
}

const pieces = (words: string[]): string[] => words.map((w, i) => (i ? ' ' : '') + w);

/** With returnTokenIds, the prompt is ids 101-107 (its 7 tokens) and word i is token 500 + i. */
const FAKE_PROMPT_IDS = [101, 102, 103, 104, 105, 106, 107];

function result(req: GenerateRequest, text: string, n: number, finish: GenerateResult['finishReason']): GenerateResult {
  const words = text.split(' ').filter(Boolean);
  return {
    ...(req.logprobs ? { logprobs: pieces(words).map((p, i) => wordLogprob(req, p, i)) } : {}),
    ...(req.returnTokenIds ? { tokenIds: words.map((_, i) => 500 + i), promptTokenIds: FAKE_PROMPT_IDS } : {}),
    id: 'gen_test1',
    userId: req.userId,
    text,
    finishReason: finish,
    usage: { promptTokens: 7, completionTokens: n, cachedTokens: 0 },
    timings: { queueMs: 0.5, prefillMs: 1, decodeMs: 2, totalMs: 3.5 },
    personalization: req.mode === 'vanilla' ? { mode: 'vanilla', adapterVersion: null } : { mode: 'injected', adapterVersion: 3 },
  };
}

const EMPTY_CACHE = { bytes: 0, maxBytes: 0, entries: 0, leasedBytes: 0, leasedEntries: 0, loading: 0 };

export function fakeGenerate(): FakeGenerate {
  const fake: FakeGenerate = {
    calls: [],
    scoreCalls: [],
    tokenizeCalls: [],
    warmCalls: [],
    cacheCalls: [],
    loaded: true,
    returned: 0,
    ready: () => fake.loaded,
    // Word i of the text is "token" i, of log-probability -(i+1)/10; compare halves each.
    async score(req) {
      fake.scoreCalls.push(req);
      if (fake.failWith) throw fake.failWith;
      const text = textOf(req.text);
      const words = pieces(text.split(' ').filter(Boolean));
      const tokens = (words.length > 0 ? words : [text]).map((p, i) => wordLogprob({ ...req, logprobs: true } as unknown as GenerateRequest, p, i));
      const figures = (lps: number[]) => {
        const logprob = lps.reduce((a, b) => a + b, 0);
        return { logprob, meanLogprob: logprob / lps.length, perplexity: Math.exp(-logprob / lps.length) };
      };
      const baseLps = tokens.map((t) => t.logprob * 2);
      return {
        id: 'gen_score1',
        userId: req.userId,
        ...figures(tokens.map((t) => t.logprob)),
        tokens,
        usage: { contextTokens: req.prompt || req.messages ? 7 : 1, scoredTokens: tokens.length },
        personalization: req.mode === 'vanilla' ? { mode: 'vanilla', adapterVersion: null } : { mode: 'injected', adapterVersion: 3 },
        ...(req.compare ? { base: { ...figures(baseLps), logprobs: baseLps } } : {}),
        timings: { queueMs: 0.5, scoreMs: 1, totalMs: 1.5 },
      };
    },
    // A "tokenizer" of 2,048 ids: BOS 1, then one id per UTF-16 unit of the text (or of each message's content); ids as they are.
    // A window of 512 tokens: truncatePromptTokens keeps the last k (-1: 511), with truncationSide right the first k.
    tokenize(req) {
      fake.tokenizeCalls.push(req);
      const text = req.prompt ?? req.messages!.map((m) => m.content).join('');
      const whole = typeof text !== 'string' ? [...text] : [...(req.addSpecialTokens === false ? [] : [1]), ...Array.from(text, (ch) => ch.charCodeAt(0) % 2048)];
      const k = req.truncatePromptTokens === -1 ? 511 : req.truncatePromptTokens;
      const tokens = k !== undefined && whole.length > k ? (req.truncationSide === 'right' ? whole.slice(0, k) : whole.slice(-k)) : whole;
      return { tokens, count: tokens.length, maxModelLen: 512, tokenStrings: req.returnTokenStrings ? tokens.map((t) => textOfIds([t])) : null };
    },
    detokenize(tokens) {
      const bad = tokens.find((t) => t >= 2048);
      if (bad !== undefined) throw new ServiceError('token_out_of_range', `token ${bad} is not in the vocabulary`, { details: { tokenId: bad, vocabSize: 2048 } });
      return textOfIds(tokens);
    },
    // No adapters here: every distinct user is reported without one.
    async warm(userIds) {
      fake.warmCalls.push([...userIds]);
      if (fake.failWith) throw fake.failWith;
      const results = [...new Set(userIds)].map((userId) => ({ userId, outcome: 'no_adapter' as const, version: null, resident: false }));
      return { results, cache: EMPTY_CACHE };
    },
    cacheContents(limit) {
      fake.cacheCalls.push({ op: 'contents', limit });
      if (fake.failWith) throw fake.failWith;
      return { cache: EMPTY_CACHE, counters: { hits: 0, misses: 0, loads: 0, loadFailures: 0, evictions: 0, hitRate: null }, adapters: [], truncated: false };
    },
    cacheCurve() {
      fake.cacheCalls.push({ op: 'curve' });
      if (fake.failWith) throw fake.failWith;
      return { since: new Date(0).toISOString(), lookups: 0, coldLookups: 0, bestHitRate: null, maxBytes: 0, hitRateAtMaxBytes: null, sizeFor: [], points: [] };
    },
    dropCached(userId) {
      fake.cacheCalls.push({ op: 'drop', userId });
      if (fake.failWith) throw fake.failWith;
      return { dropped: { adapters: 0, bytes: 0, leased: 0 }, cache: EMPTY_CACHE };
    },
    // A server with the prefix cache switched off (MEMLORA_PREFIX_CACHE_BYTES=0).
    prefixCache() {
      fake.cacheCalls.push({ op: 'prefix' });
      if (fake.failWith) throw fake.failWith;
      return prefixCacheReport(null);
    },
    dropPrefixCache(userId) {
      fake.cacheCalls.push({ op: 'dropPrefix', userId });
      if (fake.failWith) throw fake.failWith;
      return dropPrefixCache(null, userId);
    },
    // An idle engine: no row taken, nobody waiting.
    queue(limit) {
      fake.cacheCalls.push({ op: 'queue', limit });
      if (fake.failWith) throw fake.failWith;
      return { scheduling: 'fair', maxBatch: 8, maxQueue: 256, maxQueuePerUser: 64, rows: [], waiting: 0, compiling: 0, users: [], usersTotal: 0 };
    },
    async generate(req, signal) {
      fake.calls.push({ req, signal });
      if (fake.failWith) throw fake.failWith;
      const { words, finish } = reply(req, fake.replyText);
      if (fake.hangAfterFirst) {
        await new Promise<void>((resolve) => (signal.aborted ? resolve() : signal.addEventListener('abort', () => resolve())));
        return result(req, words[0], 1, 'cancelled');
      }
      return result(req, words.join(' '), words.length, finish);
    },
    stream(req, signal): AsyncIterable<StreamEvent> {
      fake.calls.push({ req, signal });
      fake.onStream?.(req);
      return {
        [Symbol.asyncIterator]: () => {
          const { words, finish } = reply(req, fake.replyText);
          let i = 0;
          let done = false;
          return {
            async next(): Promise<IteratorResult<StreamEvent>> {
              if (fake.failWith) throw fake.failWith;
              if (done) return { done: true, value: undefined };
              if (i === 1 && fake.failMidway) throw fake.failMidway;
              if (i === 1 && fake.hangAfterFirst) {
                await new Promise<void>((resolve) => (signal.aborted ? resolve() : signal.addEventListener('abort', () => resolve())));
                done = true;
                return { done: false, value: { type: 'done', result: result(req, words[0], 1, 'cancelled') } };
              }
              if (i < words.length) {
                const text = pieces(words)[i];
                const value: StreamEvent = {
                  type: 'token',
                  text,
                  ...(req.logprobs ? { logprobs: [wordLogprob(req, text, i)] } : {}),
                  ...(req.returnTokenIds ? { tokenIds: [500 + i], ...(i === 0 ? { promptTokenIds: FAKE_PROMPT_IDS } : {}) } : {}),
                };
                i++;
                return { done: false, value };
              }
              done = true;
              return { done: false, value: { type: 'done', result: result(req, words.join(' '), words.length, finish) } };
            },
            async return(): Promise<IteratorResult<StreamEvent>> {
              fake.returned += 1;
              done = true;
              return { done: true, value: undefined };
            },
          };
        },
      };
    },
  };
  return fake;
}

export interface SseEvent {
  event: string | undefined;
  data: string;
}

export function parseSse(text: string): SseEvent[] {
  return text
    .split('\n\n')
    .filter((block) => block.trim().length > 0)
    .map((block) => {
      let event: string | undefined;
      const data: string[] = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      return { event, data: data.join('\n') };
    });
}

/** The app on a fresh SQLite file serving `fakeGenerate()` (or no generation service), with user alice created. */
export async function fakeGenerateApp(withService = true, env: Record<string, string> = {}): Promise<{ h: Harness; gen: FakeGenerate }> {
  const gen = fakeGenerate();
  const h = makeHarness({ services: withService ? { generate: gen } : {}, env });
  await h.req('PUT', '/v1/users/alice');
  return { h, gen };
}
