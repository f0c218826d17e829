/** Errors of injection jobs: a stable code, a message for operators, the offending values. */
import type { JsonObject } from '../db/schema.js';

export type JobErrorCode =
  /** The user's history yields too few pairs to train and validate on. */
  | 'not_enough_history'
  /** The new adapter could not be written to the adapter directory (unwritable, disk full...). */
  | 'adapter_write_failed'
  /** A trial's adapter could not be kept in the trial-adapter store. */
  | 'trial_adapter_write_failed'
  /** Every trial failed, or the search stopped before any succeeded. */
  | 'no_successful_trial'
  /** Trials failed one after another (the search's evaluation_failed). */
  | 'evaluation_failed'
  /** The base model could not be loaded by the job worker. */
  | 'model_unavailable'
  /** The job's row changed under the runner (deleted, or finished by someone else). */
  | 'job_state_changed'
  /** The worker thread died without reporting. */
  | 'worker_crashed'
  /** History the job read was deleted while it ran: its adapter would carry it. */
  | 'history_deleted'
  | 'internal';

export class JobError extends Error {
  constructor(
    readonly code: JobErrorCode,
    message: string,
    readonly details: JsonObject = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'JobError';
  }
}

const errno = (e: unknown): string | undefined => {
  for (let cur: unknown = e, depth = 0; cur && depth < 5; cur = (cur as { cause?: unknown }).cause, depth++) {
    const c = (cur as { code?: unknown; details?: { errno?: unknown } }).details?.errno ?? (cur as { code?: unknown }).code;
    if (typeof c === 'string' && /^E[A-Z]+$/.test(c)) return c;
  }
  return undefined;
};

const ERRNO_WORDS: Record<string, string> = {
  ENOSPC: 'no space left on the device',
  EDQUOT: 'disk quota exceeded',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EROFS: 'read-only file system',
  EIO: 'I/O error',
};

/** A failure to write the final adapter, said plainly: what, why (errno), and that nothing changed. */
export function adapterWriteError(e: unknown, root: string): JobError {
  const code = errno(e);
  const why = code ? `${ERRNO_WORDS[code] ?? code} (${code})` : e instanceof Error ? e.message : String(e);
  return new JobError(
    'adapter_write_failed',
    `cannot write the new adapter under ${root}: ${why}; nothing was written and the previous adapter stays active`,
    { errno: code ?? null, root, cause: e instanceof Error ? e.message : String(e) },
    { cause: e },
  );
}

/** Any error as the job row's `error` JSON. */
export function errorJson(e: unknown): JsonObject {
  if (e instanceof JobError) return { code: e.code, message: e.message, details: e.details };
  const err = e as { code?: unknown; message?: unknown; details?: unknown };
  const code = typeof err?.code === 'string' ? err.code : 'internal';
  const message = typeof err?.message === 'string' ? err.message : String(e);
  let details: JsonObject = {};
  if (err?.details && typeof err.details === 'object') {
    try {
      details = JSON.parse(JSON.stringify(err.details)) as JsonObject;
    } catch {
      details = {};
    }
  }
  return { code, message, details };
}
