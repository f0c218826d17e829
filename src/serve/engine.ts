/**
 * The generation engine: a bounded request queue in front of one continuous-batching decode loop in
 * which every row may carry a different user's adapter.
 *
 * A request is planned when it arrives (personalize.ts: injected, memory or vanilla; its prompt is
 * encoded and checked against the context window), queued, and its adapter lease is taken while it
 * waits (at most `maxBatch` loads ahead, so a full queue does not pin the cache; the server reads
 * cache misses on a worker thread, loader.ts, since this thread is inside ONNX Runtime most of the
 * time and a load here would only advance between steps). Between decode steps the loop
 *   1. frees the rows and queue places of cancelled requests (client gone),
 *   2. admits ready requests into free rows (up to maxBatch, and within the pool's byte budget; in
 *      the order fair-share.ts chooses: shared between users, a user's own in arrival order) with
 *      one batched prefill of their prompts (through the row pool's units; a lone
 *      joiner with an adapter, the common case, through its adapter as served: fewer, larger ops);
 *      joiners whose prompt starts with a conversation the prefix cache holds (prefix-cache.ts: the
 *      same user, the same adapter version) run only the tokens after it, in one batched extend call;
 *      a joiner with more new tokens than `prefillChunk` is set aside and read a chunk at a time, one
 *      chunk here per turn of the loop, joining the batch after its last (chunked prefill; so is
 *      a long scoring request, reported after its last),
 *   3. runs one decode step of every row and streams each row's token to its request,
 *   4. removes finished rows, releasing their adapter leases and keeping their caches (prompt and
 *      reply) in the prefix cache for the conversation's next turn.
 *
 * Adapters reach the graphs through a RowPool (src/model/row-pool.ts): each row's adapter is cut per
 * layer into rank units that one batched matmul per layer serves, whatever the batch's mix of ranks;
 * a row's adapter is written once when it joins, so a step copies no adapter, and a row pays only for
 * its own rank on its own layers (nothing without an adapter). Hot swap: a request holds a lease
 * on the adapter version it started with until it
 * finishes; a newly activated version is planned for the next request, and in-flight ones finish on
 * theirs. ONNX Runtime runs on this thread, so the loop yields to the event loop after every step.
 */
import { randomBytes } from 'node:crypto';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import type { Db } from '../db/client.js';
import { type RequestUsage, effectiveQuota, recordUsage, tokensUsed, usageDay, usageDayEnd } from '../db/queries/usage.js';
import { toServed } from '../lora/adapter.js';
import type { AdapterLease } from '../lora/cache.js';
import { Registry } from '../metrics.js';
import type { ChatTemplateName } from '../model/chat-format.js';
import type { GuideSpec } from '../model/guide.js';
import { concatRowKv, KvBatch, type KvShape, type PastRow, type RowKv, sliceRowKv } from '../model/kv.js';
import type { LoraInput } from '../model/lora-feeds.js';
import type { Model } from '../model/model.js';
import { RowPool } from '../model/row-pool.js';
import { type SamplingOptions, tokenLogprobs } from '../model/sampling.js';
import { type FinishReason, Sequence } from '../model/sequence.js';
import type { Tokenizer } from '../model/tokenizer.js';
import { ServeError } from './errors.js';
import { GuideCompiler } from './guide-compiler.js';
import { guideOf } from './reply-guide.js';
import { memoryQuery, retrieveMemory } from './memory.js';
import { type EngineMetrics, engineMetrics } from './metrics.js';
import { type Adapters, AdapterLeaser, type Plan, pinnedFailure, planRequest } from './personalize.js';
import { type PromptContext, endIdsOf, fitMemory, promptIds, replyBudget, stopsOf } from './prompt.js';
import { checkTokenIds, detokenize, textOfIds, tokenize } from './tokenize.js';
import { BoundedQueue } from './queue.js';
import { samplingOf } from './sampling.js';
import { FairShare, type Scheduling } from './fair-share.js';
import { Channel } from './channel.js';
import { TokenTexts } from './logprobs.js';
import type { Fallback, FallbackReason, Likelihood, Personalization, QueueReport, ScoreRequest, ScoreResult, ServeEvent, ServeFinishReason, ServeLogger, ServeRequest, ServeResult, TokenizeRequest, TokenizeResult, TokenLogprob } from './types.js';
import { type WarmReport, warmAdapters } from './warm.js';
import type { PrefixCache, PrefixHit } from './prefix-cache.js';
import { lengthGroups } from './prefill-groups.js';

export interface EngineOptions {
  model: Model;
  tokenizer: Tokenizer;
  db: Db;
  /** The adapter store and cache; null serves every request without adapters. */
  adapters: Adapters | null;
  /** Requests waiting for a row before new ones are refused with queue_full (429). */
  maxQueue: number;
  /** Requests of one user waiting for a row before their new ones are refused with user_queue_full (429). Default: maxQueue. */
  maxQueuePerUser?: number;
  /**
   * Tokens (prompt + completion + scored, as metered) one user may be served per UTC day unless their
   * own quota (user_quotas) says otherwise; past it, counting what their unfinished requests may
   * still use, their requests are refused with quota_exceeded (429). 0 or absent: no limit.
   */
  userDailyTokens?: number;
  /** How free rows are shared between users' ready requests (fair-share.ts). Default fair. */
  scheduling?: Scheduling;
  /** Rows in one decode batch. */
  maxBatch: number;
  /** History items retrieved for the memory mode (default 5). */
  memoryItems?: number;
  /** Chat template for `messages` (default: the model's, else memlora). */
  template?: ChatTemplateName;
  /**
   * Bytes the rows' adapters may occupy in the row pool (each layer's rank rounded up to the pool unit). A request
   * whose adapter would push the batch past it waits until rows leave; alone in the batch it is
   * always admitted. Default 256 MiB.
   */
  poolBudgetBytes?: number;
  /** Users' last conversations, to run a next turn's new tokens only; none: every prompt is prefilled whole. */
  prefixCache?: PrefixCache | null;
  /**
   * Chunked prefill: a joiner with more new prompt tokens than this is read this many at a time, one
   * chunk before each decode step of the batch, and joins the batch after its last chunk. A long
   * prompt then holds the other rows up for one chunk at a time, not for all of it, and the short
   * joiners admitted with it are not padded to its length. A scoring request's context and text
   * longer than this are read the same way (each pass: its own model's, the base model's for a
   * comparison). 0 (the default): every prompt is read in one call. The server sets
   * MEMLORA_PREFILL_CHUNK's.
   */
  prefillChunk?: number;
  /**
   * Compile requests' guides (JSON schemas, patterns, grammars, tools' calls) on a thread of their
   * own (guide-compiler.ts), so that a large one holds up no decode step; off (the default), they
   * compile on the serving thread as requests arrive. The server turns it on.
   */
  guideThread?: boolean;
  registry?: Registry;
  logger?: ServeLogger;
}

type JobState = 'planned' | 'loading' | 'ready' | 'active' | 'done';

/** What a scoring request scores: the text's own tokens after the context, and what to report. */
interface ScoreJob {
  textIds: number[];
  top: number;
  compare: boolean;
  /** What memory is retrieved by: the context's, or with no context the text itself. */
  query: string;
}

/** One pass of a scoring request read a chunk at a time: its tokens, every position's logits so far, and their cache. */
interface ScorePass {
  ids: number[];
  lora: LoraInput | undefined;
  done: number;
  past: RowKv | null;
  logits: Float32Array;
}

/** What a job reports: generation events, or a scoring request's result. */
type JobEvent = ServeEvent | { type: 'scored'; result: ScoreResult };

/** One request inside the engine. */
interface Job {
  id: string;
  row: number;
  req: ServeRequest;
  signal: AbortSignal;
  sink: (ev: JobEvent | Error) => void;
  state: JobState;
  plan: Plan;
  /** Its planned version failed to load and it was planned again on the version active since. */
  replanned?: boolean;
  /** The request's own prompt ids (without memory). */
  baseIds: number[];
  /** What is fed: baseIds, or with memory prepended. */
  ids: number[];
  personalization: Personalization;
  lease: AdapterLease | null;
  /** Bytes the adapter takes in the row pool (its budget). */
  poolBytes: number;
  aborted: boolean;
  seq: Sequence | null;
  t: { arrived: number; admitted: number; prefilled: number; firstToken: number };
  /** The scheduler's turn when the request was queued (fair-share.ts). */
  turn: number;
  prefillMs: number;
  /** Prompt tokens whose keys and values came from the prefix cache. */
  cachedTokens: number;
  /** A long prompt read a chunk at a time (prefillChunk): the tokens read so far, and their cache. */
  chunked: { done: number; past: PastRow | null } | null;
  /** A scoring request with a long context read a chunk at a time: its passes (its own model's, then the base model's for a comparison). */
  scoring: ScorePass[] | null;
  /** Keep the row's cache in the prefix cache when it leaves (false once its user is forgotten or its adapter version retired). */
  remember: boolean;
  /** The generated tokens' log-probabilities as reported, when the request asked for them. */
  logprobs: TokenLogprob[] | null;
  /** With returnTokenIds: whether a token event carried the prompt's ids yet (the first does). */
  sentPromptIds: boolean;
  /** The request's sampling settings, checked against the vocabulary when it arrived. */
  sampling: SamplingOptions;
  /** What guides the reply (JSON, a schema's documents, a pattern, a choice), compiled when the request arrived. */
  guide: GuideSpec | undefined;
  /** Tokens the request may still be metered for, held against its user's quota until it ends (prompt + reply budget, or + text). */
  heldTokens: number;
  /** A scoring request (POST /v1/score): one forward pass over its context and text, no decoding. */
  score: ScoreJob | null;
}

const now = (): number => performance.now();
const round = (ms: number): number => Math.round(ms * 100) / 100;

const FINISH: Readonly<Record<FinishReason, ServeFinishReason>> = { stop: 'stop', eos: 'stop', length: 'length', cancelled: 'cancelled' };

const noLogger: ServeLogger = { info() {}, warn() {}, error() {} };

/** One cache from its parts (a joiner finished at its first token: rare, and only when kept). */
const joinParts = (shape: KvShape, parts: readonly PastRow[]): RowKv =>
  parts.map((p) => sliceRowKv(shape, p.kv, p.length ?? p.kv.length)).reduce((a, b) => concatRowKv(shape, a, b));

/** A job's adapter as served, on every layer (rank 0 where it has none): one graph for every adapter; none without a lease. */
const asServed = (job: Job): LoraInput | undefined => (job.lease ? { adapter: job.lease.adapter, everyLayer: true } : undefined);

/** Which weights computed a request's keys and values: its adapter version, or the base model. */
const scopeOf = (job: Job): string => (job.personalization.mode === 'injected' ? versionScope(job.personalization.adapterVersion!) : 'base');
const versionScope = (version: number): string => `v${version}`;
const userOf = (job: Job): string => job.req.userId;

export class Engine {
  private readonly model: Model;
  private readonly db: Db;
  private readonly adapters: Adapters | null;
  private readonly ctx: PromptContext;
  private readonly leaser: AdapterLeaser | null;
  private readonly logger: ServeLogger;
  private readonly m: EngineMetrics;
  private readonly waiting: BoundedQueue<Job>;
  private readonly maxQueuePerUser: number;
  private readonly fair: FairShare<Job>;
  private readonly active = new Map<number, Job>();
  /** Per user, the unfinished requests and the tokens they hold against the user's daily quota. */
  private readonly held = new Map<string, { requests: number; tokens: number }>();
  /** Joiners between admission and the batch (inside prefill()). */
  private joining: readonly Job[] = [];
  /** Admitted long prompts being read a chunk at a time, oldest first (not in the batch yet). */
  private readonly chunking: Job[] = [];
  /** Chunked prefill's chunk, in tokens; 0: prompts are read whole. */
  private readonly chunk: number;
  private readonly kv: KvBatch;
  private readonly pool: RowPool;
  private readonly maxBatch: number;
  private readonly memoryK: number;
  private readonly poolBudget: number;
  private readonly eosIds: number[];
  private readonly prefix: PrefixCache | null;
  private readonly texts: TokenTexts;
  private nextRow = 1;
  private running: Promise<void> | null = null;
  private wakeUp: (() => void) | null = null;
  private closed = false;
  /** Smoothed seconds per finished request, for Retry-After. */
  private serviceSeconds = 0.5;
  private poolStats = { unitWrites: 0, unitMoves: 0 };
  private readonly guides: GuideCompiler | null;

  constructor(private readonly opts: EngineOptions) {
    this.model = opts.model;
    this.db = opts.db;
    this.adapters = opts.adapters;
    this.logger = opts.logger ?? noLogger;
    this.m = engineMetrics(opts.registry ?? new Registry());
    if (!Number.isInteger(opts.maxBatch) || opts.maxBatch < 1) throw new RangeError(`maxBatch must be a positive integer, got ${opts.maxBatch}`);
    this.maxBatch = opts.maxBatch;
    this.chunk = opts.prefillChunk ?? 0;
    if (!Number.isInteger(this.chunk) || this.chunk < 0) throw new RangeError(`prefillChunk must be a non-negative integer, got ${opts.prefillChunk}`);
    this.waiting = new BoundedQueue(opts.maxQueue, userOf);
    this.maxQueuePerUser = opts.maxQueuePerUser ?? opts.maxQueue;
    if (!Number.isInteger(this.maxQueuePerUser) || this.maxQueuePerUser < 1) throw new RangeError(`maxQueuePerUser must be a positive integer, got ${this.maxQueuePerUser}`);
    this.fair = new FairShare(opts.scheduling ?? 'fair', userOf, (job) => job.turn);
    this.memoryK = opts.memoryItems ?? 5;
    this.poolBudget = opts.poolBudgetBytes ?? 256 * 1024 * 1024;
    this.prefix = opts.prefixCache ?? null;
    const cfg = this.model.config;
    this.ctx = {
      tokenizer: opts.tokenizer,
      template: opts.template ?? ((cfg.chatTemplate as ChatTemplateName | undefined) ?? 'memlora'),
      contextTokens: cfg.maxPositions,
    };
    this.kv = new KvBatch(this.model.kvShape, { maxLength: cfg.maxPositions });
    this.pool = new RowPool(cfg, { maxRows: this.maxBatch });
    this.eosIds = endIdsOf(this.ctx, cfg.eosId);
    this.texts = new TokenTexts(opts.tokenizer);
    this.leaser = opts.adapters
      ? new AdapterLeaser(this.db, opts.adapters, this.logger, (userId, from) => this.retireVersion(userId, from))
      : null;
    this.guides = opts.guideThread
      ? new GuideCompiler({
          compiled: (ms) => this.m.guideCompileSeconds.observe(undefined, ms / 1000),
          fellBack: (why) => {
            this.m.guideCompileFallbacks.inc();
            this.logger.warn('a guide compiles on the serving thread: the compile thread could not', { why });
          },
        }, opts.maxQueue)
      : null;
  }

  /**
   * Boots the guide-compile thread (with `guideThread`), so that the first request with a new guide
   * does not wait for its module imports; resolves once it answers. Should it fail, the first guide
   * that needs the thread starts it again, and meanwhile guides compile on the serving thread.
   */
  startGuideThread(): Promise<void> {
    return this.guides ? this.guides.start() : Promise.resolve();
  }

  /** Null where `req` can be queued now; else a promise settling once its guide is compiled off the serving thread (rejected where the guide is refused). */
  private guideReady(req: ServeRequest): Promise<void> | null {
    const ready = this.guides?.prepare(req) ?? null;
    return ready?.catch((e: unknown) => {
      if (e instanceof ServeError) this.m.rejected.inc({ code: e.code });
      throw e;
    }) ?? null;
  }

  /** Requests can be served (the server flips readiness on this). */
  ready(): boolean {
    return !this.closed;
  }

  /**
   * The queue and the batch now, for operators: each row's request, and per user the rows held and
   * the requests waiting (at most `limit` users, most waiting first): who is filling the queue.
   */
  queue(limit: number): QueueReport {
    const t = now();
    // A joiner enters `active` at the end of its prefill, before `joining` is emptied; a long one
    // set aside to be read a chunk at a time is in `chunking` too.
    const prefilling = [...new Set([...this.joining.filter((job) => !this.active.has(job.row)), ...this.chunking])];
    const rows = [...prefilling.map((job) => ({ job, state: 'prefill' as const })), ...[...this.active.values()].map((job) => ({ job, state: 'decode' as const }))]
      .filter(({ job }) => job.state !== 'done')
      .sort((a, b) => a.job.t.admitted - b.job.t.admitted)
      .map(({ job, state }) => ({
        id: job.id,
        userId: job.req.userId,
        state,
        mode: job.personalization.mode,
        adapterVersion: job.personalization.adapterVersion,
        ...(job.personalization.pinned ? { pinned: true as const } : {}),
        promptTokens: job.ids.length,
        promptTokensRead: state === 'decode' ? job.ids.length : (job.chunked?.done ?? Math.min(job.scoring?.[0].done ?? job.cachedTokens, job.ids.length)),
        generatedTokens: job.seq?.tokens.length ?? 0,
        runningMs: round(t - job.t.admitted),
      }));
    const users = new Map<string, { userId: string; rows: number; waiting: number; oldestWaitMs: number | null }>();
    const entry = (userId: string) => {
      let u = users.get(userId);
      if (!u) users.set(userId, (u = { userId, rows: 0, waiting: 0, oldestWaitMs: null }));
      return u;
    };
    for (const r of rows) entry(r.userId).rows += 1;
    let waiting = 0;
    for (const job of this.waiting) {
      if (job.state === 'done') continue;
      waiting += 1;
      const u = entry(job.req.userId);
      u.waiting += 1;
      u.oldestWaitMs = Math.max(u.oldestWaitMs ?? 0, round(t - job.t.arrived));
    }
    const listed = [...users.values()].sort((a, b) => b.waiting - a.waiting || b.rows - a.rows || (b.oldestWaitMs ?? 0) - (a.oldestWaitMs ?? 0) || (a.userId < b.userId ? -1 : 1));
    return {
      scheduling: this.fair.mode,
      maxBatch: this.maxBatch,
      maxQueue: this.waiting.max,
      maxQueuePerUser: this.maxQueuePerUser,
      rows,
      waiting,
      compiling: this.guides?.compiling ?? 0,
      users: listed.slice(0, limit),
      usersTotal: listed.length,
    };
  }

  /** Rows decoding now and requests waiting (tests, metrics). */
  get occupancy(): { active: number; waiting: number } {
    return { active: this.active.size, waiting: this.waiting.length };
  }

  /** Generate the whole reply. Resolves with finishReason `cancelled` when `signal` aborts. */
  generate(req: ServeRequest, signal: AbortSignal): Promise<ServeResult> {
    const ready = this.guideReady(req);
    return ready ? ready.then(() => this.generateNow(req, signal)) : this.generateNow(req, signal);
  }

  private generateNow(req: ServeRequest, signal: AbortSignal): Promise<ServeResult> {
    return new Promise((resolve, reject) => {
      try {
        this.submit(req, signal, (ev) => {
          if (ev instanceof Error) reject(ev);
          else if (ev.type === 'done') resolve(ev.result);
        });
      } catch (e) {
        reject(e);
      }
    });
  }

  /**
   * Stream the reply: token events as the loop produces them, then one done event. Errors found on
   * arrival (queue full, prompt too long) are thrown by the first next(); a consumer that stops early
   * cancels the request.
   */
  async *stream(req: ServeRequest, signal: AbortSignal): AsyncGenerator<ServeEvent> {
    const ready = this.guideReady(req);
    if (ready) await ready;
    const ch = new Channel<ServeEvent>();
    const job = this.submit(req, signal, (ev) => {
      if (ev instanceof Error) ch.fail(ev);
      else if (ev.type !== 'scored') {
        ch.push(ev);
        if (ev.type === 'done') ch.end();
      }
    });
    try {
      for await (const ev of ch) yield ev;
    } finally {
      if (job.state !== 'done') this.cancel(job);
    }
  }

  /**
   * Score a text as the continuation of a context under the user's model (see ScoreRequest): queued,
   * scheduled and personalised as a generation request is (its adapter leased from the cache, or
   * memory, or vanilla), then one forward pass over the context and the text between decode steps.
   * A context and text that do not fit the model's window are refused (prompt_too_long).
   */
  score(req: ScoreRequest, signal: AbortSignal): Promise<ScoreResult> {
    return new Promise((resolve, reject) => {
      try {
        const textIds = typeof req.text === 'string' ? this.ctx.tokenizer.encode(req.text, { parseSpecial: false }) : [...req.text];
        if (textIds.length === 0) throw new ServeError('prompt_too_long', 'the text to score has no tokens', { details: { scoredTokens: 0 } });
        const asServed: ServeRequest = {
          userId: req.userId,
          ...(req.messages !== undefined ? { messages: req.messages } : { prompt: req.prompt ?? '' }),
          // Memory is fitted so that the text still fits the window after it.
          maxTokens: textIds.length,
          temperature: 0,
          topP: 1,
          stop: [],
          stream: false,
          mode: req.mode,
          ...(req.adapterVersion !== undefined ? { adapterVersion: req.adapterVersion } : {}),
        };
        const score: ScoreJob = { textIds, top: req.topLogprobs ?? 0, compare: req.compare ?? false, query: this.scoreQuery(req, asServed, textIds) };
        this.submit(asServed, signal, (ev) => {
          if (ev instanceof Error) reject(ev);
          else if (ev.type === 'scored') resolve(ev.result);
        }, score);
      } catch (e) {
        reject(e);
      }
    });
  }

  /**
   * What a scoring request's memory is searched with: its context's query (the last user message, or
   * the prompt), or with no context the text itself. A context of token ids is searched with the text
   * after it: ids are one prompt split anywhere (the legacy completions' echo), and generating from
   * that prompt would search with all of it.
   */
  private scoreQuery(req: ScoreRequest, asServed: ServeRequest, textIds: readonly number[]): string {
    if (Array.isArray(req.prompt) && req.prompt.length > 0) return this.queryText([...req.prompt, ...textIds]);
    if (req.messages !== undefined || (req.prompt ?? '') !== '') return memoryQuery(asServed, this.queryText);
    return typeof req.text === 'string' ? req.text : this.queryText(textIds);
  }

  /** Token ids as the text a memory search reads (control tokens left out). */
  private readonly queryText = (ids: readonly number[]): string => textOfIds(this.ctx.tokenizer, ids, true);

  /** A raw prompt or messages as the token ids the model is fed, without memory (POST /tokenize). */
  tokenize(req: TokenizeRequest): TokenizeResult {
    return tokenize(this.ctx, this.texts, req);
  }

  /** Token ids as text (POST /detokenize); an id outside the model's vocabulary is token_out_of_range. */
  detokenize(tokens: readonly number[]): string {
    return detokenize(this.ctx, this.model.config.vocabSize, tokens);
  }

  /**
   * Load users' active adapters into the cache ahead of their requests (warm.ts), checked against the
   * model and held as served, as a request's first use would. Throws adapters_disabled on an engine
   * that serves without adapters.
   */
  async warm(userIds: readonly string[], signal?: AbortSignal): Promise<WarmReport> {
    if (this.closed) throw new ServeError('shutting_down', 'the server is shutting down');
    if (!this.adapters || !this.leaser) throw new ServeError('adapters_disabled', 'this server serves without adapters');
    return warmAdapters(
      {
        db: this.db,
        adapters: this.adapters,
        leaser: this.leaser,
        fit: (adapter) => void this.pool.rowBytes(toServed(adapter)),
        onMisfit: (userId, version, err) => this.logger.error('adapter does not fit the model; not warmed', { userId, version, err: String(err) }),
      },
      userIds,
      signal,
    );
  }

  /**
   * Forget a user's conversations (a user being erased): their prefix-cache entries go, and none of
   * their requests still queued or running keeps its cache when it finishes. Returns the entries dropped.
   */
  forgetUser(userId: string): number {
    for (const job of this.inFlight(userId)) job.remember = false;
    return this.prefix?.drop(userId).entries ?? 0;
  }

  /** A user's requests queued, being prefilled or decoding. */
  private inFlight(userId: string): Job[] {
    return [...this.waiting, ...this.joining, ...this.chunking, ...this.active.values()].filter((job) => job.req.userId === userId);
  }

  /**
   * A user's adapter version `from` is no longer served (a newer or rolled-back version was just
   * loaded for them): its conversations leave the prefix cache, and requests still running on it
   * keep nothing when they finish (their turns would only be matched by that version). Those
   * requests themselves finish on `from`, as a hot swap promises.
   */
  private retireVersion(userId: string, from: number): void {
    if (!this.prefix) return;
    for (const job of this.inFlight(userId)) if (job.plan.kind === 'injected' && job.plan.row.version === from) job.remember = false;
    this.prefix.retire(userId, versionScope(from));
  }

  /** Stop: refuse new requests, fail queued ones (shutting_down), cancel running ones, wait for the loop. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const job of this.waiting.drain()) this.fail(job, new ServeError('shutting_down', 'the server is shutting down'));
    for (const job of [...this.active.values(), ...this.chunking]) job.aborted = true;
    this.wake();
    await this.running;
    await this.guides?.close();
  }

  // -------------------------------------------------------------------------------------------
  // Arrival

  private submit(req: ServeRequest, signal: AbortSignal, sink: Job['sink'], score: ScoreJob | null = null): Job {
    if (this.closed) throw new ServeError('shutting_down', 'the server is shutting down');
    if (signal.aborted) throw new ServeError('cancelled', 'the client went away before the request was queued');
    if (this.waiting.full) {
      this.m.rejected.inc({ code: 'queue_full' });
      const retryAfterS = this.retryAfter(this.waiting.length);
      throw new ServeError('queue_full', `the generation queue is full (${this.waiting.max} waiting); retry in ${retryAfterS} s`, {
        retryAfterS,
        details: { queued: this.waiting.length, maxQueue: this.waiting.max, retryAfterS },
      });
    }
    const mine = this.waiting.countOf(req.userId);
    if (mine >= this.maxQueuePerUser) {
      this.m.rejected.inc({ code: 'user_queue_full' });
      const retryAfterS = this.retryAfter(mine);
      throw new ServeError('user_queue_full', `user "${req.userId}" has ${mine} requests waiting, the most one user may queue; retry in ${retryAfterS} s`, {
        retryAfterS,
        details: { userId: req.userId, queued: mine, maxQueuePerUser: this.maxQueuePerUser, retryAfterS },
      });
    }
    this.checkQuota(req.userId);
    let baseIds: number[];
    let sampling: SamplingOptions;
    let guide: GuideSpec | undefined;
    let plan: Plan;
    try {
      sampling = samplingOf(req, this.model.config.vocabSize, this.ctx.tokenizer);
      guide = guideOf(req);
      if (Array.isArray(req.prompt)) checkTokenIds(req.prompt, this.model.config.vocabSize);
      if (req.stopTokenIds) checkTokenIds(req.stopTokenIds, this.model.config.vocabSize);
      if (req.allowedTokenIds) checkTokenIds(req.allowedTokenIds, this.model.config.vocabSize);
      if (score) checkTokenIds(score.textIds, this.model.config.vocabSize);
      baseIds = promptIds(this.ctx, req);
      if (score && baseIds.length + score.textIds.length > this.ctx.contextTokens) {
        const promptTokens = baseIds.length + score.textIds.length;
        throw new ServeError('prompt_too_long', `the context and the text have ${promptTokens} tokens; the context window holds ${this.ctx.contextTokens}`, {
          details: { promptTokens, contextTokens: this.ctx.contextTokens },
        });
      }
      plan = planRequest(this.db, this.adapters, req.userId, req.mode, req.adapterVersion);
    } catch (e) {
      if (e instanceof ServeError) this.m.rejected.inc({ code: e.code });
      throw e;
    }
    const job: Job = {
      id: `gen_${randomBytes(8).toString('hex')}`,
      row: this.nextRow++,
      req,
      signal,
      sink,
      state: 'planned',
      plan,
      baseIds,
      ids: baseIds,
      personalization: { mode: 'vanilla', adapterVersion: null },
      lease: null,
      poolBytes: 0,
      aborted: false,
      seq: null,
      t: { arrived: now(), admitted: 0, prefilled: 0, firstToken: 0 },
      turn: this.fair.now,
      prefillMs: 0,
      cachedTokens: 0,
      chunked: null,
      scoring: null,
      remember: true,
      logprobs: req.logprobs ? [] : null,
      sentPromptIds: false,
      sampling,
      guide,
      heldTokens: 0,
      score,
    };
    if (plan.kind !== 'injected') this.withoutAdapter(job, plan.kind, plan.fallback);
    // A comparison through an adapter or memory runs the base model's pass too: held as well.
    const basePass = score?.compare && (plan.kind === 'injected' || job.personalization.mode !== 'vanilla') ? baseIds.length + score.textIds.length : 0;
    job.heldTokens = job.ids.length + (score ? score.textIds.length + basePass : replyBudget(this.ctx, job.ids.length, req.maxTokens));
    this.hold(req.userId, 1, job.heldTokens);
    this.waiting.push(job);
    this.m.queueDepth.set(undefined, this.waiting.length);
    signal.addEventListener('abort', () => this.cancel(job), { once: true });
    this.kick();
    return job;
  }

  /** Settle a request served without an adapter: memory (when it retrieves anything that fits) or vanilla. */
  private withoutAdapter(job: Job, kind: 'memory' | 'vanilla', fallback: Fallback | undefined): void {
    job.state = 'ready';
    job.ids = job.baseIds;
    job.poolBytes = 0;
    if (kind === 'memory') {
      const items = retrieveMemory(this.db, job.req.userId, job.score?.query ?? memoryQuery(job.req, this.queryText), this.memoryK);
      const fit = items.length > 0 ? fitMemory(this.ctx, job.req, items) : { ids: job.baseIds, used: 0 };
      if (fit.used > 0) {
        job.ids = fit.ids;
        job.personalization = { mode: 'memory', adapterVersion: null, memoryItems: fit.used, ...(fallback ? { fallback } : {}) };
        return;
      }
      fallback ??= job.req.mode === 'memory' ? { from: 'memory', reason: 'no_memory' } : undefined;
    }
    job.personalization = { mode: 'vanilla', adapterVersion: null, ...(fallback ? { fallback } : {}) };
    if (fallback?.reason === 'no_memory' || fallback?.reason === 'no_adapter') this.m.fallbacks.inc({ reason: fallback.reason });
  }

  private cancel(job: Job): void {
    if (job.state === 'done' || job.aborted) return;
    job.aborted = true;
    this.wake();
  }

  /** Seconds until `queued` requests ahead would be through the batch at the recent pace (1-60). */
  private retryAfter(queued: number): number {
    const perRow = this.serviceSeconds / this.maxBatch;
    return Math.min(60, Math.max(1, Math.ceil(queued * perRow)));
  }

  // -------------------------------------------------------------------------------------------
  // The loop

  private kick(): void {
    if (this.running) {
      this.wake();
      return;
    }
    // Start on the next turn of the event loop: requests arriving together are prefilled together.
    this.running = yieldToLoop()
      .then(() => this.loop())
      .catch((e) => {
        // A bug in the loop itself: fail everything rather than hang every request.
        this.logger.error('generation loop failed', { err: e instanceof Error ? e.stack : String(e) });
        const err = new ServeError('generation_failed', 'the generation loop failed', { cause: e });
        for (const job of [...this.active.values()]) this.dropRow(job, err);
        for (const job of this.chunking.splice(0)) this.fail(job, err);
        for (const job of this.waiting.drain()) this.fail(job, err);
      })
      .finally(() => {
        this.running = null;
        if (!this.closed && this.waiting.length > 0) this.kick();
      });
  }

  private wake(): void {
    const w = this.wakeUp;
    this.wakeUp = null;
    w?.();
  }

  private sleep(): Promise<void> {
    return new Promise((resolve) => (this.wakeUp = resolve));
  }

  private async loop(): Promise<void> {
    for (;;) {
      this.reap();
      this.startLoads();
      const admitted = this.admit();
      const scorers = admitted.filter((job) => job.score);
      const joiners = scorers.length > 0 ? admitted.filter((job) => !job.score) : admitted;
      if (scorers.length > 0) await this.scoreAll(scorers);
      if (joiners.length > 0) await this.prefill(joiners);
      // A chunk read is work done: the loop goes round again rather than sleep, as requests that
      // arrived meanwhile (their wake-up found it awake) were not in this turn's admission.
      const read = this.chunking.length > 0;
      if (read) await this.readChunk();
      if (this.kv.size > 0) await this.step();
      else if (admitted.length === 0 && !read) {
        if (this.waiting.length === 0) return;
        await this.sleep();
        continue;
      }
      this.m.queueDepth.set(undefined, this.waiting.length);
      this.m.activeRows.set(undefined, this.active.size);
      // ORT ran on this thread: let sockets, timers and adapter reads move before the next step.
      await yieldToLoop();
    }
  }

  /** Free everything cancelled: queue places (and leases) and batch rows. */
  private reap(): void {
    for (const job of this.waiting) {
      if (!job.aborted) continue;
      this.waiting.remove(job);
      this.finish(job, 'cancelled');
    }
    for (const job of [...this.active.values()]) {
      if (job.aborted) {
        job.seq!.finish('cancelled');
        this.leaveBatch(job);
        this.finish(job, 'cancelled');
      }
    }
    for (const job of this.chunking.filter((j) => j.aborted)) {
      this.chunking.splice(this.chunking.indexOf(job), 1);
      this.finish(job, 'cancelled');
    }
  }

  /**
   * Start adapter loads for the requests in line, for at most maxBatch users at a time (one user's
   * requests share one load, so a burst of one user does not hold back the loads of others).
   */
  private startLoads(): void {
    if (!this.leaser) return;
    const loading = new Set<string>();
    for (const job of this.waiting) {
      if (job.state === 'loading') loading.add(job.req.userId);
      else if (job.state === 'planned' && job.plan.kind === 'injected' && (loading.size < this.maxBatch || loading.has(job.req.userId))) {
        job.state = 'loading';
        loading.add(job.req.userId);
        this.load(job, job.plan);
      }
    }
  }

  private load(job: Job, plan: Extract<Plan, { kind: 'injected' }>): void {
    const { row, pinned } = plan;
    this.leaser!.acquire(job.req.userId, row, { pinned }).then(
      (got) => {
        if ('lease' in got) {
          if (job.state === 'done') {
            got.lease.release(); // cancelled while loading
            return;
          }
          let poolBytes: number;
          try {
            // Once per cached adapter version, at its first use: B transposed in place, so that this
            // and every later join copies the row's units in blocks (lora/adapter.ts toServed).
            poolBytes = this.pool.rowBytes(toServed(got.lease.adapter));
          } catch (e) {
            // Loaded and valid for the store, yet not for this model's graphs: serve without it.
            got.lease.release();
            this.logger.error(pinned ? 'adapter does not fit the model; refusing the request that named it' : 'adapter does not fit the model; serving the fallback', {
              userId: job.req.userId,
              version: row.version,
              err: String(e),
            });
            this.unserved(job, { reason: 'adapter_unavailable', code: 'adapter_model_mismatch', message: 'it does not fit the serving graphs of this model' });
            this.wake();
            return;
          }
          job.lease = got.lease;
          job.poolBytes = poolBytes;
          job.personalization = { mode: 'injected', adapterVersion: row.version, ...(pinned ? { pinned } : {}) };
          job.state = 'ready';
        } else if (job.state !== 'done') {
          // Another version made active since the request was planned (an operator swapped versions
          // and deleted the old one): the request, not yet started, is served with it, not a fallback.
          const now = pinned ? null : this.activeSince(job, row.version);
          if (now) {
            job.plan = now;
            this.load(job, now);
            return;
          }
          this.unserved(job, { reason: got.fallback.reason, code: got.code, message: `its files failed to load (${got.code})` });
        }
        this.wake();
      },
      (e) => {
        if (job.state === 'done') return;
        this.waiting.remove(job);
        this.fail(job, e instanceof Error ? e : new Error(String(e)));
        this.wake();
      },
    );
  }

  /** The user's active version now, when it is another than `version` that failed (at most once a request). */
  private activeSince(job: Job, version: number): Extract<Plan, { kind: 'injected' }> | null {
    if (job.replanned) return null;
    const plan = planRequest(this.db, this.adapters, job.req.userId, 'injected');
    if (plan.kind !== 'injected' || plan.row.version === version) return null;
    job.replanned = true;
    return plan;
  }

  /**
   * A request whose adapter could not serve it: the fallback (memory or the base model, with the
   * reason); or, where the request named the version, refused as the failure's code says.
   */
  private unserved(job: Job, failure: { reason: FallbackReason; code: string; message: string }): void {
    const { reason, code, message } = failure;
    if (job.plan.kind === 'injected' && job.plan.pinned) {
      const err = pinnedFailure(this.db, job.req.userId, job.plan.row.version, code, message);
      this.m.rejected.inc({ code: err.code });
      this.waiting.remove(job);
      this.fail(job, err);
    } else {
      this.m.fallbacks.inc({ reason });
      this.withoutAdapter(job, 'memory', { from: 'injected', reason });
    }
  }

  /**
   * Ready requests for the free rows, in the scheduler's order (fair-share.ts), within the pool's
   * byte budget: the first that does not fit stops admission, so a large adapter is not passed over
   * for ever by smaller ones.
   */
  private admit(): Job[] {
    // Long prompts being read hold the rows they will join.
    const free = this.maxBatch - this.active.size - this.chunking.length;
    if (free <= 0 || this.waiting.length === 0) return [];
    const ready = [...this.waiting].filter((job) => job.state === 'ready' && !job.aborted);
    if (ready.length === 0) return [];
    const held = new Map<string, number>();
    for (const job of [...this.active.values(), ...this.chunking]) held.set(job.req.userId, (held.get(job.req.userId) ?? 0) + 1);
    const joiners: Job[] = [];
    let bytes = this.chunking.reduce((sum, job) => sum + job.poolBytes, this.pool.liveBytes);
    for (const job of this.fair.order(ready, held, free)) {
      const more = job.poolBytes;
      if (this.active.size + this.chunking.length + joiners.length > 0 && bytes + more > this.poolBudget) break;
      joiners.push(job);
      bytes += more;
    }
    for (const job of joiners) {
      this.waiting.remove(job);
      this.fair.admitted(job.req.userId);
      held.set(job.req.userId, (held.get(job.req.userId) ?? 0) + 1);
    }
    if (joiners.length > 0) this.fair.prune((user) => held.has(user) || this.waiting.countOf(user) > 0);
    return joiners;
  }

  /** Admit the joiners (join), known as joining meanwhile: forgetUser reaches them too. */
  private async prefill(joiners: Job[]): Promise<void> {
    this.joining = joiners;
    try {
      await this.join(joiners);
    } finally {
      this.joining = [];
    }
  }

  /**
   * One batched prefill of the joiners (and one extend call for those whose prompt continues a cached
   * conversation); each gets its first token, and the unfinished join the batch. Joiners with more
   * new tokens than the prefill chunk are set aside, to be read a chunk at a time (readChunk).
   */
  private async join(joiners: Job[]): Promise<void> {
    const t0 = now();
    const start = this.pool.size;
    const hits = new Map<Job, PrefixHit>();
    if (this.prefix) {
      for (const job of joiners) {
        const hit = this.prefix.match(job.req.userId, scopeOf(job), job.ids);
        if (hit) hits.set(job, hit);
      }
    }
    if (this.chunk > 0) {
      const long = joiners.filter((job) => job.ids.length - (hits.get(job)?.tokens ?? 0) > this.chunk);
      for (const job of long) this.startChunks(job, t0, hits.get(job));
      if (long.length > 0) joiners = joiners.filter((job) => !long.includes(job));
      if (joiners.length === 0) return;
    }
    // The pool holds each call's rows together: the whole prompts first, in groups of like length
    // (prefill-groups.ts: a batched call pads every row to its longest), then the continued ones.
    const groups = lengthGroups(joiners.filter((j) => !hits.has(j)), (j) => j.ids.length);
    const continued = joiners.filter((j) => hits.has(j));
    joiners = [...groups.flat(), ...continued];
    for (const job of joiners) {
      job.cachedTokens = hits.get(job)?.tokens ?? 0;
      job.t.admitted = t0;
      job.state = 'active';
      this.m.queueSeconds.observe({ mode: job.personalization.mode }, (t0 - job.t.arrived) / 1000);
      this.pool.add(job.row, job.lease?.adapter ?? null);
    }
    // A lone joiner with an adapter (the common case) is read through its adapter as served: one
    // matmul pair per map at its own rank, none of the unit pool's gather and per-row sums.
    const loraOf = (group: Job[], from: number) =>
      group.length === 1 && group[0].lease ? asServed(group[0]) : this.pool.input(from, from + group.length);
    // Per joiner (in `joiners` order): its first logits, and its cache as parts for KvBatch.add (a
    // cached prefix is copied into the batch once, straight from the prefix cache).
    const logits: Float32Array[] = [];
    const caches: PastRow[][] = [];
    try {
      let from = start;
      for (const group of groups) {
        const pre = await this.model.prefill(group.map((j) => j.ids), loraOf(group, from));
        logits.push(...pre.logits);
        caches.push(...pre.kv.map((kv) => [{ kv }]));
        from += group.length;
      }
      if (continued.length > 0) {
        const rows = continued.map((j) => {
          const hit = hits.get(j)!;
          return { past: hit.kv, pastLength: hit.tokens, ids: j.ids.slice(hit.tokens) };
        });
        const ext = await this.model.extend(rows, loraOf(continued, from));
        logits.push(...ext.logits);
        caches.push(...rows.map((r, i) => [{ kv: r.past, length: r.pastLength }, { kv: ext.added[i] }]));
      }
    } catch (e) {
      this.logger.error('prefill failed', { rows: joiners.length, continued: continued.length, err: e instanceof Error ? e.stack : String(e) });
      const err = new ServeError('generation_failed', 'the model failed while reading the prompt', { cause: e });
      for (const job of joiners) {
        this.pool.remove(job.row);
        this.fail(job, err);
      }
      return;
    }
    this.syncPoolMetrics();
    const t1 = now();
    this.m.prefillSeconds.observe(undefined, (t1 - t0) / 1000);
    const joining = new Map<number, PastRow[]>();
    joiners.forEach((job, i) => {
      if (this.begin(job, logits[i], caches[i], t1)) joining.set(job.row, caches[i]);
    });
    // Rows join the KV batch in the pool's order (finished joiners left holes the pool refilled).
    for (const id of this.pool.rows.slice(this.kv.size)) this.kv.add(id, joining.get(id as number)!);
  }

  /** A joiner whose prompt is read a chunk at a time: admitted now, it joins the batch after its last chunk. */
  private startChunks(job: Job, admitted: number, hit: PrefixHit | undefined): void {
    job.t.admitted = admitted;
    job.state = 'active';
    this.m.queueSeconds.observe({ mode: job.personalization.mode }, (admitted - job.t.arrived) / 1000);
    job.cachedTokens = hit?.tokens ?? 0;
    job.chunked = { done: job.cachedTokens, past: hit ? { kv: hit.kv, length: hit.tokens } : null };
    this.chunking.push(job);
  }

  /**
   * Read the next chunk of the oldest long prompt (a prefill for its first, an extend after the
   * tokens read so far, through its adapter as served); after its last, it gets its first token and
   * joins the batch.
   */
  private async readChunk(): Promise<void> {
    const job = this.chunking[0];
    if (job.score) return this.readScoreChunk(job);
    const c = job.chunked!;
    const to = Math.min(job.ids.length, c.done + this.chunk);
    const ids = job.ids.slice(c.done, to);
    const lora = asServed(job);
    const t0 = now();
    let logits: Float32Array;
    let part: RowKv;
    try {
      if (c.past) {
        const ext = await this.model.extend([{ past: c.past.kv, pastLength: c.past.length, ids }], lora);
        [logits, part] = [ext.logits[0], ext.added[0]];
      } else {
        const pre = await this.model.prefill([ids], lora);
        [logits, part] = [pre.logits[0], pre.kv[0]];
      }
    } catch (e) {
      this.logger.error('prefill failed', { rows: 1, chunk: { from: c.done, to }, err: e instanceof Error ? e.stack : String(e) });
      this.chunking.shift();
      this.fail(job, new ServeError('generation_failed', 'the model failed while reading the prompt', { cause: e }));
      return;
    }
    const t1 = now();
    this.m.prefillChunks.inc();
    this.m.prefillSeconds.observe(undefined, (t1 - t0) / 1000);
    const parts: PastRow[] = c.past ? [c.past, { kv: part }] : [{ kv: part }];
    c.done = to;
    if (to < job.ids.length) {
      c.past = parts.length === 1 ? parts[0] : { kv: joinParts(this.model.kvShape, parts) };
      return;
    }
    this.chunking.shift();
    this.pool.add(job.row, job.lease?.adapter ?? null);
    this.syncPoolMetrics();
    if (this.begin(job, logits, parts, t1)) this.kv.add(job.row, parts);
  }

  /**
   * A joiner's prompt is read (its cache in `cache`, its row in the pool): it gets its first token;
   * true when it goes on in the batch (the caller adds its cache there), false when it ended at once.
   */
  private begin(job: Job, logits: Float32Array, cache: readonly PastRow[], t1: number): boolean {
    this.m.promptTokens.inc({ source: 'cached' }, job.cachedTokens);
    this.m.promptTokens.inc({ source: 'computed' }, job.ids.length - job.cachedTokens);
    job.t.prefilled = t1;
    job.prefillMs = t1 - job.t.admitted;
    const stops = stopsOf(this.ctx, job.req);
    const maxTokens = replyBudget(this.ctx, job.ids.length, job.req.maxTokens);
    job.seq = new Sequence(
      job.row,
      {
        prompt: job.ids,
        maxTokens,
        minTokens: job.req.minTokens,
        ignoreEos: job.req.ignoreEos,
        guide: job.guide,
        sampling: job.sampling,
        seed: job.req.seed,
        stop: stops.stop,
        keepStops: job.req.includeStopStrInOutput ? job.req.stop : undefined,
        allowedTokenIds: job.req.allowedTokenIds,
        stopTokenIds: stops.stopTokenIds,
        logprobs: job.req.logprobs ? (job.req.topLogprobs ?? 0) : undefined,
        skipSpecialTokens: job.req.skipSpecialTokens,
      },
      { tokenizer: this.ctx.tokenizer, eosIds: this.eosIds, vocabSize: this.model.config.vocabSize },
    );
    this.token(job, logits);
    if (job.seq.finished || job.aborted) {
      if (!job.seq.finished) job.seq.finish('cancelled');
      this.pool.remove(job.row);
      this.remember(job, job.ids.length, () => joinParts(this.model.kvShape, cache));
      this.finish(job, job.seq.finishReason!);
      return false;
    }
    this.active.set(job.row, job);
    return true;
  }

  /**
   * Score the admitted scoring requests (known as joining meanwhile, as prefills are): the rows
   * without an adapter (vanilla, memory) and the base model's rows of comparisons in one batched
   * forward pass, each injected request's row through its own adapter in one pass of its own.
   */
  private async scoreAll(jobs: Job[]): Promise<void> {
    this.joining = jobs;
    try {
      const live: Job[] = [];
      for (const job of jobs) {
        if (job.aborted) this.finish(job, 'cancelled');
        else live.push(job);
      }
      const t0 = now();
      const plain: number[][] = [];
      const at = new Map<Job, { own?: number; base?: number }>();
      const v = this.model.config.vocabSize;
      for (const job of live) {
        job.t.admitted = t0;
        job.state = 'active';
        this.m.queueSeconds.observe({ mode: job.personalization.mode }, (t0 - job.t.arrived) / 1000);
        const s = job.score!;
        // Vanilla already is the base model on the request's own context.
        const compares = s.compare && job.personalization.mode !== 'vanilla';
        if (this.chunk > 0 && job.ids.length + s.textIds.length > this.chunk) {
          // A long context: read a chunk at a time between decode steps (readScoreChunk), as long prompts are.
          const pass = (ids: number[], lora: LoraInput | undefined): ScorePass => ({ ids, lora, done: 0, past: null, logits: new Float32Array(ids.length * v) });
          job.scoring = [pass([...job.ids, ...s.textIds], asServed(job))];
          if (compares) job.scoring.push(pass([...job.baseIds, ...s.textIds], undefined));
          this.chunking.push(job);
          continue;
        }
        const rows: { own?: number; base?: number } = {};
        if (!job.lease) rows.own = plain.push([...job.ids, ...s.textIds]) - 1;
        if (compares) rows.base = plain.push([...job.baseIds, ...s.textIds]) - 1;
        at.set(job, rows);
      }
      const whole = live.filter((job) => at.has(job));
      const plainLogits: Float32Array[] = [];
      try {
        // In calls of like length, as joiners are read (prefill-groups.ts): each pads to its longest.
        for (const group of lengthGroups([...plain.keys()], (i) => plain[i].length)) {
          const logits = await this.model.forwardLogits(group.map((i) => plain[i]));
          group.forEach((i, k) => (plainLogits[i] = logits[k]));
        }
      } catch (e) {
        this.logger.error('scoring failed', { rows: plain.length, err: e instanceof Error ? e.stack : String(e) });
        for (const job of whole) this.fail(job, new ServeError('generation_failed', 'the model failed while scoring', { cause: e }));
        return;
      }
      for (const job of whole) {
        const rows = at.get(job)!;
        let own: Float32Array;
        try {
          own = rows.own !== undefined ? plainLogits[rows.own] : (await this.model.forwardLogits([[...job.ids, ...job.score!.textIds]], asServed(job)))[0];
        } catch (e) {
          this.logger.error('scoring failed', { userId: job.req.userId, tokens: job.ids.length + job.score!.textIds.length, err: e instanceof Error ? e.stack : String(e) });
          this.fail(job, new ServeError('generation_failed', 'the model failed while scoring', { cause: e }));
          continue;
        }
        this.scored(job, own, rows.base !== undefined ? plainLogits[rows.base] : null, t0);
      }
    } finally {
      this.joining = [];
    }
  }

  /**
   * Read the next chunk of a scoring request's long context: of its first pass not read yet, every
   * position's logits kept; after the last chunk of its last pass it is reported.
   */
  private async readScoreChunk(job: Job): Promise<void> {
    const pass = job.scoring!.find((p) => p.done < p.ids.length)!;
    const to = Math.min(pass.ids.length, pass.done + this.chunk);
    const t0 = now();
    try {
      const read = await this.model.readLogits({ past: pass.past ?? undefined, ids: pass.ids.slice(pass.done, to) }, pass.lora);
      pass.logits.set(read.logits, pass.done * this.model.config.vocabSize);
      pass.past = pass.past ? concatRowKv(this.model.kvShape, pass.past, read.kv) : read.kv;
      pass.done = to;
    } catch (e) {
      this.logger.error('scoring failed', { userId: job.req.userId, chunk: { from: pass.done, to }, err: e instanceof Error ? e.stack : String(e) });
      this.chunking.shift();
      this.fail(job, new ServeError('generation_failed', 'the model failed while scoring', { cause: e }));
      return;
    }
    this.m.prefillChunks.inc();
    this.m.prefillSeconds.observe(undefined, (now() - t0) / 1000);
    if (job.scoring!.some((p) => p.done < p.ids.length)) return;
    this.chunking.shift();
    const [own, base] = job.scoring!;
    this.scored(job, own.logits, base?.logits ?? null, job.t.admitted);
  }

  /** Report a scoring request from its pass's logits (and the base model's, for a comparison). */
  private scored(job: Job, own: Float32Array, base: Float32Array | null, t0: number): void {
    const s = job.score!;
    const v = this.model.config.vocabSize;
    const mode = job.personalization.mode;
    /** The text's tokens' log-probabilities from the logits of a pass over `context` tokens then the text. */
    const textLogprobs = (all: Float32Array, context: number, top: number) =>
      s.textIds.map((id, i) => tokenLogprobs(all.subarray((context + i - 1) * v, (context + i) * v), id, top));
    const tokens = textLogprobs(own, job.ids.length, s.top).map((lp) => this.texts.describe(lp));
    let compared: ScoreResult['base'];
    if (s.compare) {
      const lps = base ? textLogprobs(base, job.baseIds.length, 0).map((lp) => lp.logprob) : tokens.map((t) => t.logprob);
      compared = { ...likelihood(lps), logprobs: lps };
    }
    const end = now();
    const result: ScoreResult = {
      id: job.id,
      userId: job.req.userId,
      ...likelihood(tokens.map((t) => t.logprob)),
      tokens,
      usage: { contextTokens: job.ids.length, scoredTokens: s.textIds.length, ...(base ? { baseContextTokens: job.baseIds.length } : {}) },
      personalization: job.personalization,
      ...(compared ? { base: compared } : {}),
      timings: { queueMs: round(t0 - job.t.arrived), scoreMs: round(end - t0), totalMs: round(end - job.t.arrived) },
    };
    if (!this.settle(job)) return;
    this.m.scoredTokens.inc({ mode }, s.textIds.length);
    // The base model's pass of a comparison is a second pass: its context and the text again.
    const passes = base ? 2 : 1;
    this.meter(job.req.userId, { promptTokens: job.ids.length + (base ? job.baseIds.length : 0), cachedTokens: 0, completionTokens: 0, scoredTokens: passes * s.textIds.length });
    this.m.requests.inc({ mode, finish: 'scored' });
    job.sink(job.aborted ? new ServeError('cancelled', 'the request was cancelled') : { type: 'scored', result });
  }

  /** One decode step of every row. */
  private async step(): Promise<void> {
    const limit = this.model.config.maxPositions;
    for (const id of [...this.kv.rows]) {
      if (this.kv.length(id) < limit) continue;
      const job = this.active.get(id as number)!;
      this.emit(job, job.seq!.finish('length'));
      this.leaveBatch(job);
      this.finish(job, 'length');
    }
    if (this.kv.size === 0) return;
    const rows = this.kv.rows.map((id) => this.active.get(id as number)!);
    const tokens = rows.map((j) => j.seq!.tokens[j.seq!.tokens.length - 1]);
    this.m.batchRows.observe(undefined, rows.length);
    const t0 = now();
    let logits: Float32Array[];
    try {
      logits = await this.model.decodeStep(this.kv, tokens, this.pool.input());
    } catch (e) {
      this.logger.error('decode step failed', { rows: rows.length, err: e instanceof Error ? e.stack : String(e) });
      const err = new ServeError('generation_failed', 'the model failed while generating', { cause: e });
      for (const job of rows) this.dropRow(job, err);
      return;
    }
    this.m.stepSeconds.observe(undefined, (now() - t0) / 1000);
    this.m.poolRankLayers.observe(undefined, this.pool.rankLayers);
    this.syncPoolMetrics();
    const done: Job[] = [];
    rows.forEach((job, i) => {
      this.token(job, logits[i]);
      if (job.seq!.finished) done.push(job);
    });
    for (const job of done) {
      this.leaveBatch(job);
      this.finish(job, job.seq!.finishReason!);
    }
  }

  /** Choose a row's next token and stream whatever text it releases. */
  private token(job: Job, logits: Float32Array): void {
    const ev = job.seq!.next(logits);
    if (job.t.firstToken === 0) {
      job.t.firstToken = now();
      this.m.ttftSeconds.observe({ mode: job.personalization.mode }, (job.t.firstToken - job.t.arrived) / 1000);
    }
    this.m.tokens.inc({ mode: job.personalization.mode });
    const lp = ev.logprobs && job.logprobs ? this.texts.describe(ev.logprobs) : undefined;
    if (lp) job.logprobs!.push(lp);
    this.emit(job, ev.text, lp && [lp], job.req.returnTokenIds && ev.token !== null ? [ev.token] : undefined);
  }

  /** A token event, when it releases text or (with logprobs or returnTokenIds) carries the step's token; the first with ids carries the prompt's too. */
  private emit(job: Job, text: string, logprobs?: TokenLogprob[], tokenIds?: number[]): void {
    if (job.aborted || (text === '' && !logprobs && !tokenIds)) return;
    const ev: Extract<ServeEvent, { type: 'token' }> = { type: 'token', text };
    if (logprobs) ev.logprobs = logprobs;
    if (tokenIds) {
      ev.tokenIds = tokenIds;
      if (!job.sentPromptIds) ev.promptTokenIds = [...job.ids];
      job.sentPromptIds = true;
    }
    job.sink(ev);
  }

  private leaveBatch(job: Job): void {
    this.remember(job, this.kv.length(job.row), () => this.kv.extract(job.row));
    this.kv.remove(job.row);
    this.pool.remove(job.row);
    this.active.delete(job.row);
  }

  /**
   * Keep a row's cache of `length` positions (its prompt and the reply tokens fed so far) for the
   * conversation's next turn; `cache` copies it out, only where the prefix cache would keep it.
   */
  private remember(job: Job, length: number, cache: () => RowKv): void {
    if (!this.prefix || !job.remember || length < this.prefix.minTokens) return;
    this.prefix.store(job.req.userId, scopeOf(job), [...job.ids, ...job.seq!.tokens], cache(), job.ids.length);
  }

  /** A running row fails: free it and report the error. */
  private dropRow(job: Job, err: Error): void {
    if (this.kv.has(job.row)) this.kv.remove(job.row);
    if (this.pool.indexOf(job.row) >= 0) this.pool.remove(job.row);
    this.active.delete(job.row);
    this.fail(job, err);
  }

  private fail(job: Job, err: Error): void {
    if (this.settle(job)) job.sink(err);
  }

  /** A job ends (failed, finished, scored): done, its adapter released; false when it already was. */
  private settle(job: Job): boolean {
    if (job.state === 'done') return false;
    job.state = 'done';
    job.lease?.release();
    job.lease = null;
    this.hold(job.req.userId, -1, -job.heldTokens);
    return true;
  }

  /** The request is over: release its adapter, report the result and the metrics. */
  private finish(job: Job, reason: FinishReason): void {
    if (!this.settle(job)) return;
    if (job.score) {
      // A scoring request ends here only when cancelled (scored() reports the others).
      this.m.requests.inc({ mode: job.personalization.mode, finish: 'cancelled' });
      job.sink(new ServeError('cancelled', 'the request was cancelled'));
      return;
    }
    const end = now();
    const t = job.t;
    const admitted = t.admitted || end;
    const prefilled = t.prefilled || admitted;
    const r = job.seq?.result();
    const finishReason = FINISH[reason];
    const mode = job.personalization.mode;
    const result: ServeResult = {
      id: job.id,
      userId: job.req.userId,
      text: r?.text ?? '',
      finishReason,
      usage: { promptTokens: job.ids.length, completionTokens: r?.completionTokens ?? 0, cachedTokens: job.cachedTokens },
      timings: {
        queueMs: round(admitted - t.arrived),
        prefillMs: round(job.prefillMs),
        decodeMs: round(Math.max(0, end - prefilled)),
        totalMs: round(end - t.arrived),
      },
      personalization: job.personalization,
      ...(job.logprobs ? { logprobs: job.logprobs } : {}),
      ...(job.req.returnTokenIds ? { tokenIds: r?.tokens ?? [], promptTokenIds: [...job.ids] } : {}),
    };
    this.m.requests.inc({ mode, finish: finishReason });
    // Metering counts what ran: a request cancelled before its prefill cost nothing.
    if (t.prefilled > 0) this.meter(job.req.userId, { ...result.usage, scoredTokens: 0 });
    if (finishReason !== 'cancelled') {
      this.m.requestSeconds.observe({ mode }, (end - t.arrived) / 1000);
      this.serviceSeconds = 0.9 * this.serviceSeconds + 0.1 * ((end - admitted) / 1000);
    }
    job.sink({ type: 'done', result });
  }

  /**
   * Refuse a request of a user whose daily tokens (their own quota, else the server's; neither: no
   * limit) are spent with quota_exceeded, Retry-After until midnight UTC; or are all held by their
   * unfinished requests, each holding its prompt and reply budget until it ends, with Retry-After
   * when those would be through. So a burst cannot overrun the quota: only the request that crosses
   * it is served whole.
   */
  private checkQuota(userId: string): void {
    const limit = effectiveQuota(this.db, userId, this.opts.userDailyTokens ?? 0);
    if (limit === null) return;
    const now = Date.now();
    const used = tokensUsed(this.db, userId, usageDay(now));
    const held = this.held.get(userId) ?? { requests: 0, tokens: 0 };
    if (used + held.tokens < limit) return;
    const resets = usageDayEnd(now);
    const resetsAt = new Date(resets).toISOString();
    this.m.rejected.inc({ code: 'quota_exceeded' });
    if (used < limit) {
      const retryAfterS = this.retryAfter(held.requests);
      throw new ServeError('quota_exceeded', `user "${userId}" has been served ${used} tokens today and ${held.requests} unfinished requests hold ${held.tokens} more, their daily quota is ${limit}; retry in ${retryAfterS} s`, {
        retryAfterS,
        details: { userId, dailyTokens: limit, usedTokens: used, heldTokens: held.tokens, resetsAt },
      });
    }
    throw new ServeError('quota_exceeded', `user "${userId}" has been served ${used} tokens today, their daily quota is ${limit}; it renews at ${resetsAt}`, {
      retryAfterS: Math.max(1, Math.ceil((resets - now) / 1000)),
      details: { userId, dailyTokens: limit, usedTokens: used, heldTokens: held.tokens, resetsAt },
    });
  }

  /** Tokens a user's unfinished requests hold against their daily quota now. */
  heldTokens(userId: string): number {
    return this.held.get(userId)?.tokens ?? 0;
  }

  /** Count a user's request in (+1, its tokens) or out (-1, minus them) of what holds their quota. */
  private hold(userId: string, requests: number, tokens: number): void {
    const h = this.held.get(userId) ?? { requests: 0, tokens: 0 };
    h.requests += requests;
    h.tokens += tokens;
    if (h.requests > 0) this.held.set(userId, h);
    else this.held.delete(userId);
  }

  /** Add a request's tokens to the user's usage of the day; a failed write is logged, never the request's failure. */
  private meter(userId: string, usage: RequestUsage): void {
    try {
      recordUsage(this.db, userId, usage);
    } catch (e) {
      this.logger.warn('usage not recorded', { userId, err: e instanceof Error ? e.message : String(e) });
    }
  }

  private syncPoolMetrics(): void {
    const s = this.pool.stats;
    if (s.unitWrites > this.poolStats.unitWrites) this.m.poolUnitWrites.inc(undefined, s.unitWrites - this.poolStats.unitWrites);
    if (s.unitMoves > this.poolStats.unitMoves) this.m.poolUnitMoves.inc(undefined, s.unitMoves - this.poolStats.unitMoves);
    this.poolStats = { ...s };
    this.m.poolBytes.set(undefined, this.pool.bytes);
  }
}

/** Sum, mean and perplexity of per-token log-probabilities (natural log). */
function likelihood(lps: readonly number[]): Likelihood {
  const logprob = lps.reduce((a, b) => a + b, 0);
  const meanLogprob = lps.length > 0 ? logprob / lps.length : 0;
  // Capped so that JSON never meets Infinity (a mean below -709 nats per token, with floored log-probabilities).
  return { logprob, meanLogprob, perplexity: Math.min(Math.exp(-meanLogprob), Number.MAX_VALUE) };
}
