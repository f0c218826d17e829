/**
 * Which users' adapters lag behind their history: the history items each user has added since the
 * last injection that saw their history (a job that succeeded, or whose adapter the quality gate
 * rejected: either way that history was tried; a job records the last item it read as
 * `progress.data.historyUpTo`), all of them for a user never injected. Operators re-inject the users
 * with the most new history first, rather than every user on a timer.
 *
 * A user whose active adapter was trained on history items they deleted since (forgetting.ts) is
 * stale too, whatever their new history: re-injecting them trains an adapter without those items.
 *
 * Each user also carries the jobs that failed since that injection (their count and the newest), so
 * that a bulk re-injection run nightly can leave a user whose jobs keep failing for an operator to
 * look at, instead of queueing the same failing job every night.
 */
import type { Db } from '../client.js';
import { statement } from '../statements.js';
import { TRAINED_ON_DELETED } from './forgetting.js';

export interface StaleUser {
  userId: string;
  /** History items newer than the last injection that saw the user's history (all, if none did). */
  newItems: number;
  historyItems: number;
  /** That injection: its job, how it ended, when, and the last history item it read. */
  lastInjection: { jobId: string; state: 'succeeded' | 'rejected'; finishedAt: number; historyUpTo: number } | null;
  /** The user's queued or running injection job, if any (a new one would be refused). */
  activeJobId: string | null;
  /** Deleted history items the active adapter was trained on: it still carries them until the user is re-injected. */
  forgottenItems: number;
  /** Jobs that failed after that injection (after any, for a user never injected), and the newest. */
  failures: { count: number; lastJobId: string; lastFinishedAt: number; lastError: { code: string; message: string } } | null;
}

// The last finished injection per user that read the history, then every user's items past it.
const STALE_SQL = `
WITH seen AS (
  SELECT user_id, id AS job_id, state, finished_at, json_extract(progress, '$.data.historyUpTo') AS up_to,
         row_number() OVER (PARTITION BY user_id ORDER BY finished_at DESC, id DESC) AS n
  FROM injection_jobs
  WHERE state IN ('succeeded', 'rejected') AND json_extract(progress, '$.data.historyUpTo') IS NOT NULL
),
counted AS (
  SELECT u.id AS user_id, s.job_id, s.state, s.finished_at, s.up_to,
         (SELECT count(*) FROM history_items h WHERE h.user_id = u.id AND h.id > coalesce(s.up_to, 0)) AS new_items,
         (SELECT count(*) FROM history_items h WHERE h.user_id = u.id) AS history_items,
         (SELECT j.id FROM injection_jobs j WHERE j.user_id = u.id AND j.state IN ('queued', 'running')) AS active_job_id,
         (SELECT count(*) FROM injection_jobs f
           WHERE f.user_id = u.id AND f.state = 'failed' AND f.finished_at > coalesce(s.finished_at, -1)) AS failures,
         (SELECT json_object('jobId', f.id, 'finishedAt', f.finished_at,
                             'code', coalesce(json_extract(f.error, '$.code'), 'internal'), 'message', coalesce(json_extract(f.error, '$.message'), ''))
            FROM injection_jobs f
           WHERE f.user_id = u.id AND f.state = 'failed' AND f.finished_at > coalesce(s.finished_at, -1)
           ORDER BY f.finished_at DESC, f.id DESC LIMIT 1) AS last_failure,
         (SELECT count(*) FROM adapter_versions v
            LEFT JOIN injection_jobs j ON j.id = json_extract(v.metrics, '$.jobId') AND j.user_id = v.user_id
            JOIN history_deletions d ON d.user_id = v.user_id AND ${TRAINED_ON_DELETED}
           WHERE v.user_id = u.id AND v.active = 1) AS forgotten_items
  FROM users u LEFT JOIN seen s ON s.user_id = u.id AND s.n = 1
)
SELECT *, count(*) OVER () AS total FROM counted
WHERE new_items >= ? OR forgotten_items > 0
ORDER BY forgotten_items > 0 DESC, new_items DESC, user_id
LIMIT ?`;

interface Row {
  user_id: string;
  job_id: string | null;
  state: 'succeeded' | 'rejected' | null;
  finished_at: number | null;
  up_to: number | null;
  new_items: number;
  history_items: number;
  active_job_id: string | null;
  failures: number;
  forgotten_items: number;
  /** JSON: {jobId, finishedAt, code, message} of the newest failure, when there is one. */
  last_failure: string | null;
  total: number;
}

function failuresOf(r: Row): StaleUser['failures'] {
  if (r.failures === 0 || r.last_failure === null) return null;
  const f = JSON.parse(r.last_failure) as { jobId: string; finishedAt: number; code: string; message: string };
  return { count: r.failures, lastJobId: f.jobId, lastFinishedAt: f.finishedAt, lastError: { code: f.code, message: f.message } };
}

/**
 * Users with at least `minNewItems` (>= 1) new history items, or whose active adapter was trained on
 * deleted ones (those first), most new items first (then by id), at most `limit`; `total` counts them all.
 */
export function staleUsers(db: Db, opts: { minNewItems: number; limit: number }): { items: StaleUser[]; total: number } {
  const rows = statement(db, STALE_SQL).all(Math.max(1, opts.minNewItems), opts.limit) as Row[];
  return {
    total: rows[0]?.total ?? 0,
    items: rows.map((r) => ({
      userId: r.user_id,
      newItems: r.new_items,
      historyItems: r.history_items,
      lastInjection: r.job_id === null ? null : { jobId: r.job_id, state: r.state!, finishedAt: r.finished_at!, historyUpTo: r.up_to! },
      activeJobId: r.active_job_id,
      forgottenItems: r.forgotten_items,
      failures: failuresOf(r),
    })),
  };
}
