/**
 * The one error shape of the API, `{"error": {"code", "message", "details"}}`, and the single place
 * where errors from lower layers (db, services) become HTTP statuses.
 */
import type { Context } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';

export interface ErrorBody {
  error: { code: string; message: string; details: unknown };
}

/** An error that already knows its HTTP status; handlers throw it, the app's onError renders it. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: unknown = null,
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export function errorBody(code: string, message: string, details: unknown = null): ErrorBody {
  return { error: { code, message, details } };
}

export function errorResponse(c: Context, err: ApiError): Response {
  for (const [k, v] of Object.entries(err.headers)) c.header(k, v);
  return c.json(errorBody(err.code, err.message, err.details), err.status as ContentfulStatusCode);
}

/**
 * Status for each error code that lower layers (db query modules, services) may throw. Errors are
 * recognised by their `code` property, so modules below http need not import anything from here.
 */
export const SERVICE_ERROR_STATUS: Readonly<Record<string, number>> = {
  user_not_found: 404,
  job_not_found: 404,
  adapter_not_found: 404,
  job_active: 409,
  job_finished: 409,
  adapters_disabled: 409,
  adapter_active: 409,
  adapter_unusable: 409,
  invalid_cursor: 422,
  invalid_adapter: 422,
  adapter_model_mismatch: 422,
  invalid_request: 422,
  prompt_too_long: 422,
  token_out_of_range: 422,
  unsupported_schema: 422,
  unsupported_regex: 422,
  unsupported_grammar: 422,
  queue_full: 429,
  user_queue_full: 429,
  quota_exceeded: 429,
  // The client went away; nobody reads this, but logs and metrics should not count it as a 5xx.
  cancelled: 499,
  model_unavailable: 503,
  adapter_unavailable: 503,
  shutting_down: 503,
  SQLITE_BUSY: 503,
};

function errorDetails(err: Error & Record<string, unknown>): unknown {
  if (err.details !== undefined) return err.details;
  if (err.code === 'job_active' && typeof err.jobId === 'string') return { jobId: err.jobId, state: err.state };
  if (typeof err.id === 'string') return { id: err.id };
  return null;
}

/** Maps anything thrown to an ApiError; unknown errors become 500 `internal` (and `known` is false). */
export function toApiError(err: unknown): { apiError: ApiError; known: boolean } {
  if (err instanceof ApiError) return { apiError: err, known: true };
  if (err instanceof Error) {
    const e = err as Error & Record<string, unknown>;
    const code = typeof e.code === 'string' ? e.code : undefined;
    const status = code === undefined ? undefined : SERVICE_ERROR_STATUS[code];
    if (code !== undefined && status !== undefined) {
      const headers: Record<string, string> = {};
      if (status === 429 || status === 503) {
        const retry = typeof e.retryAfterS === 'number' && e.retryAfterS > 0 ? Math.ceil(e.retryAfterS) : 1;
        headers['retry-after'] = String(retry);
      }
      const apiCode = code === 'SQLITE_BUSY' ? 'busy' : code;
      const message = code === 'SQLITE_BUSY' ? 'the database is busy, retry shortly' : err.message;
      return { apiError: new ApiError(status, apiCode, message, errorDetails(e), headers), known: true };
    }
  }
  return { apiError: new ApiError(500, 'internal', 'internal server error'), known: false };
}
