/**
 * What the HTTP layer needs from the rest of memlora, as interfaces. The app is built from a Config,
 * a Db and these services; the lead wires the real engine, job runner and adapter store in
 * src/server.ts. Services report failures by throwing errors with a `code` property (see
 * SERVICE_ERROR_STATUS in errors.ts for the codes and the statuses they become), e.g. a full queue:
 * `throw new ServiceError('queue_full', 'generation queue is full', { retryAfterS: 1 })`.
 */
import type { z } from 'zod';
import type { Job } from '../db/queries/jobs.js';
import type { VersionFilesCheck } from '../lora/consistency.js';
import type { EncodedAdapter } from '../lora/format.js';
import type { UploadBody, UploadedAdapter } from '../serve/adapter-upload.js';
import type { TokenizeRequest, TokenizeResult, ToolCallGuide } from '../serve/types.js';
import type { cacheContentsSchema, cacheCurveSchema, cacheDropSchema, generateRequestSchema, generateResultSchema, prefixCacheDropSchema, prefixCacheSchema, queueReportSchema, scoreRequestSchema, scoreResultSchema, warmResultSchema } from './schemas.js';

/** A validated /v1/generate request; defaults filled in, `stop` normalised to an array; toolCalls only from the chat route (not in the body's schema). */
export type GenerateRequest = z.output<typeof generateRequestSchema> & { toolCalls?: ToolCallGuide };
export type GenerateResult = z.output<typeof generateResultSchema>;
export type ScoreRequest = z.output<typeof scoreRequestSchema>;
export type ScoreResult = z.output<typeof scoreResultSchema>;
export type WarmResult = z.output<typeof warmResultSchema>;
export type CacheContents = z.output<typeof cacheContentsSchema>;
export type CacheDrop = z.output<typeof cacheDropSchema>;
export type CacheCurve = z.output<typeof cacheCurveSchema>;
export type PrefixCacheReport = z.output<typeof prefixCacheSchema>;
export type PrefixCacheDrop = z.output<typeof prefixCacheDropSchema>;
export type QueueReport = z.output<typeof queueReportSchema>;
export type ChatMessage = NonNullable<GenerateRequest['messages']>[number];
export type GenerateMode = GenerateRequest['mode'];
export type Personalization = GenerateResult['personalization'];

/** Events of a streamed generation: any number of tokens, then exactly one done. */
export type TokenLogprob = NonNullable<GenerateResult['logprobs']>[number];
export type StreamEvent = { type: 'token'; text: string; logprobs?: TokenLogprob[]; tokenIds?: number[]; promptTokenIds?: number[] } | { type: 'done'; result: GenerateResult };

/** POST /tokenize's service request and result: the engine's own (serve/types.ts), one definition for both layers. */
export type { TokenizeRequest, TokenizeResult };

export interface GenerateService {
  /** Generates the whole reply. `signal` aborts when the client disconnects: free the batch row. */
  generate(req: GenerateRequest, signal: AbortSignal): Promise<GenerateResult>;
  /** Streams the reply; the last event must be `done`. Errors thrown before the first event become HTTP errors. */
  stream(req: GenerateRequest, signal: AbortSignal): AsyncIterable<StreamEvent>;
  /** A raw prompt or messages as the token ids the model is fed, memory aside (POST /tokenize). Absent: 503 model_unavailable. */
  tokenize?(req: TokenizeRequest): TokenizeResult;
  /** Token ids as text; an id outside the vocabulary throws token_out_of_range (POST /detokenize). */
  detokenize?(tokens: readonly number[]): string;
  /** Scores a text after a context under the user's model (POST /v1/score). Absent: the route answers 503 model_unavailable. */
  score?(req: ScoreRequest, signal: AbortSignal): Promise<ScoreResult>;
  /**
   * Loads the users' active adapters into the adapter cache ahead of their requests; stops early when
   * `signal` aborts. Absent: the route answers 503 model_unavailable.
   */
  warm?(userIds: readonly string[], signal: AbortSignal): Promise<Omit<WarmResult, 'counts'>>;
  /** What the adapter cache holds, at most `limit` adapters listed. Absent: the route answers 503 model_unavailable. */
  cacheContents?(limit: number): CacheContents;
  /** Drops one user's adapters, or every one, from the adapter cache (running requests keep theirs). */
  dropCached?(userId?: string): CacheDrop;
  /** The adapter cache's hit rate at every size, from the lookups served since start or the last full drop. */
  cacheCurve?(): CacheCurve;
  /** What the prefix cache holds and saved since start. Absent: the route answers 503 model_unavailable. */
  prefixCache?(): PrefixCacheReport;
  /** Drops one user's conversations, or every one, from the prefix cache. */
  dropPrefixCache?(userId?: string): PrefixCacheDrop;
  /** The generation queue and batch now: each row's request, per user the rows held and requests waiting (at most `limit` users). */
  queue?(limit: number): QueueReport;
  /** Tokens the user's unfinished requests hold against their daily quota now. */
  heldTokens?(userId: string): number;
  /** Forgets a user's conversations kept for prefix caching (the user is being erased). */
  forgetUser?(userId: string): void;
  /** True once the base model is loaded and requests can be served (drives /readyz). */
  ready?(): boolean;
  /** Why the model failed to load, once it has (null while loading or loaded): /readyz reports it. */
  loadError?(): string | null;
  /** Finish or abort in-flight work at shutdown; called before the database closes. */
  close?(): Promise<void>;
}

/**
 * The injection job runner. The HTTP layer creates the job row itself (state `queued`, with the
 * one-active-job-per-user rule) and then tells the runner about it.
 */
export interface JobService {
  /** A new queued job exists in the db; start it when capacity allows. Must not throw for a busy runner. */
  enqueue(job: Job): void | Promise<void>;
  /**
   * Cancel a running job (queued jobs are cancelled by the HTTP layer directly). Returns the job as it
   * is now: `cancelled` if it stopped already, still `running` if cancellation is under way.
   */
  cancel(jobId: string): Promise<Job>;
  /** Pause running jobs durably at shutdown; called before the database closes. */
  close?(): Promise<void>;
}

/** The adapter store as the HTTP layer uses it. */
export interface AdapterFiles {
  /** Removes a user's adapter files from the store; returns what it removed. */
  removeUserAdapters(userId: string): Promise<{ files: number; bytes: number }>;
  /**
   * Reads a version's files (checksum verified, validated against the base model) and takes the
   * version out of service if they are bad. Absent where no base model is configured: activation then
   * checks the version's recorded status only.
   */
  checkVersion?(row: { userId: string; version: number; filePath: string; sha256: string; active: number }): Promise<VersionFilesCheck>;
  /** Removes one version's files (none there: nothing removed) and forgets it in the cache; returns what it removed. */
  removeVersion?(row: { userId: string; version: number; filePath: string }): Promise<{ files: number; bytes: number }>;
  /**
   * One file of a version as stored (the weights checked against the row's checksum). Throws the
   * store's AdapterStoreError (adapter_corrupt, adapter_missing, bad_adapter_path, adapter_io, ...).
   * Absent without a base model.
   */
  readFile?(row: { userId: string; filePath: string; sha256: string }, file: AdapterFileKey): Promise<Uint8Array>;
  /**
   * Reads an upload's files from its body (memlora's weights file, or multipart with PEFT's weights
   * and adapter_config.json), checks the adapter against the base model and writes it to the store as
   * a new version's files (the caller records the row), PEFT's converted. UploadBodyError where the
   * body holds no files; invalid_adapter or adapter_model_mismatch where the adapter cannot serve on
   * this model. The body's buffer may be handed to another thread. Absent without a base model.
   */
  importAdapter?(userId: string, upload: UploadBody): Promise<UploadedAdapter>;
  /** The largest weights file an adapter of the base model can have (an upload may add 1 MiB for PEFT's config and the multipart framing). */
  maxImportBytes?: number;
}

/** The three files of a stored adapter version. */
export type AdapterFileKey = keyof EncodedAdapter;

export interface Services {
  generate?: GenerateService;
  jobs?: JobService;
  adapterFiles: AdapterFiles;
}

/** Structured log lines; the server writes JSON to stderr, tests pass a silent or capturing logger. */
export interface Logger {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export type ServiceErrorCode =
  | 'queue_full'
  | 'user_queue_full'
  | 'quota_exceeded'
  | 'model_unavailable'
  | 'adapter_unavailable'
  | 'prompt_too_long'
  | 'token_out_of_range'
  | 'unsupported_schema'
  | 'unsupported_regex'
  | 'unsupported_grammar'
  | 'invalid_request'
  | 'cancelled'
  | 'shutting_down'
  | 'user_not_found'
  | 'job_not_found'
  | 'job_finished'
  | 'adapters_disabled';

/** Convenience error for service implementations; any Error with a known `code` works the same. */
export class ServiceError extends Error {
  readonly details: unknown;
  readonly retryAfterS: number | undefined;
  constructor(
    readonly code: ServiceErrorCode,
    message: string,
    opts: { details?: unknown; retryAfterS?: number; cause?: unknown } = {},
  ) {
    super(message, { cause: opts.cause });
    this.name = 'ServiceError';
    this.details = opts.details ?? null;
    this.retryAfterS = opts.retryAfterS;
  }
}
