/**
 * Errors the engine throws to its callers. The HTTP layer recognises them by `code` (queue_full ->
 * 429 with Retry-After from `retryAfterS`, prompt_too_long -> 422 with `details`, ...); codes it
 * does not know become 500.
 */
export type ServeErrorCode =
  | 'queue_full'
  /** One user's requests fill their share of the queue (maxQueuePerUser). */
  | 'user_queue_full'
  /** The user has been served their daily tokens (their quota, or the server's). */
  | 'quota_exceeded'
  | 'prompt_too_long'
  /** A logit bias names a token id past the model's vocabulary. */
  | 'token_out_of_range'
  /** A response format's JSON schema uses what guided decoding cannot enforce (details: path, keyword). */
  | 'unsupported_schema'
  /** A guided_regex pattern uses what guided decoding cannot run (details: reason). */
  | 'unsupported_regex'
  /** A guided_grammar cannot be parsed or run (details: reason). */
  | 'unsupported_grammar'
  | 'model_unavailable'
  | 'cancelled'
  | 'shutting_down'
  /** An adapter or history of another user reached a request: a bug, never served. */
  | 'isolation_violation'
  /** The model failed while running a batch. */
  | 'generation_failed'
  /** An adapter operation (cache warming) on a server started without adapters. */
  | 'adapters_disabled'
  /** An uploaded adapter is not one memlora can serve (details: reason, the format check's code). */
  | 'invalid_adapter'
  /** An uploaded adapter was made for another base model. */
  | 'adapter_model_mismatch'
  /** A request names an adapter version the user does not have (details: userId, version). */
  | 'adapter_not_found'
  /** A request names an adapter version that cannot serve: not ready, or its files failed (details: userId, version, reason). */
  | 'adapter_unusable'
  /** A request names an adapter version that could not be read now (I/O): retry. */
  | 'adapter_unavailable'
  /** Fields that contradict each other (the HTTP schemas refuse them first): adapterVersion with mode memory or vanilla. */
  | 'invalid_request';

export class ServeError extends Error {
  readonly details: unknown;
  readonly retryAfterS: number | undefined;
  constructor(
    readonly code: ServeErrorCode,
    message: string,
    opts: { details?: unknown; retryAfterS?: number; cause?: unknown } = {},
  ) {
    super(message, { cause: opts.cause });
    this.name = 'ServeError';
    this.details = opts.details ?? null;
    this.retryAfterS = opts.retryAfterS;
  }
}

// ---------------------------------------------------------------------------------------------
// How a user's adapter version is refused, wherever it is named: by a request (adapterVersion), or by
// an operator activating or downloading it. One wording and one status per case.

/** The user has no such version (404 adapter_not_found). */
export function adapterVersionNotFound(userId: string, version: number): ServeError {
  return new ServeError('adapter_not_found', `user ${JSON.stringify(userId)} has no adapter version ${version}`, { details: { userId, version } });
}

/** The version cannot serve (409 adapter_unusable): `reason` is its status, the store's code for files that failed, or another cause. */
export function adapterVersionUnusable(userId: string, version: number, reason: string, message: string): ServeError {
  return new ServeError('adapter_unusable', `adapter version ${version} of ${JSON.stringify(userId)} cannot serve: ${message}`, { details: { userId, version, reason } });
}

/** The version's row says its files are not there to serve (quarantined, missing, deleted). */
export function adapterVersionNotReady(userId: string, version: number, status: string): ServeError {
  return adapterVersionUnusable(userId, version, status, `its files are ${status}`);
}

/**
 * Reading or checking the version's files failed, by the store's error code: I/O (or an error that is
 * not the store's, `unknown`) could pass, 503 adapter_unavailable with a retry; anything else is the
 * version's, 409 adapter_unusable with the code as the reason.
 */
export function adapterFilesFailure(userId: string, version: number, code: string, message: string): ServeError {
  if (code === 'adapter_io' || code === 'unknown') {
    return new ServeError('adapter_unavailable', `adapter version ${version} of ${JSON.stringify(userId)} could not be read now: ${message}`, { details: { userId, version }, retryAfterS: 1 });
  }
  return adapterVersionUnusable(userId, version, code, message);
}
