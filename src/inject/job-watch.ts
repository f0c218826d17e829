/**
 * A job's progress as a stream of events, read from the database: the job row (state and progress,
 * which the runner writes as it goes) and its trial rows. Reading the rows rather than listening to
 * the runner means a watcher sees the same thing whichever thread or process runs the job, and
 * replaying the current state first is the same code as following it.
 *
 * Events: `state` (the job, first as it is now, then at each state change), `trial` (each trial
 * row, the stored ones first), `progress` (the job whenever its progress changed without a state
 * change: training steps, best objectives, ETA), and last `done`: the job when it finished, or as it
 * is when the watcher stops following (the caller's `follow()` turned false, or the job was deleted).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { and, asc, eq, gt } from 'drizzle-orm';
import type { Db } from '../db/client.js';
import { getJob, type Job } from '../db/queries/jobs.js';
import { FINISHED_JOB_STATES, trials } from '../db/schema.js';
import { type StoredTrial, rowToTrial } from './trial-store.js';

export type JobWatchEvent =
  | { type: 'state'; job: Job }
  | { type: 'progress'; job: Job }
  | { type: 'trial'; trial: StoredTrial }
  | { type: 'done'; job: Job; reason: 'finished' | 'not_following' | 'deleted' };

export interface WatchOptions {
  /** How often the rows are read while following (default 250 ms). */
  intervalMs?: number;
  signal?: AbortSignal;
  /** Keep following an unfinished job? Checked before each wait (e.g. false while shutting down). */
  follow?: () => boolean;
}

const finished = (j: Job): boolean => (FINISHED_JOB_STATES as readonly string[]).includes(j.state);

function newTrials(db: Db, jobId: string, afterId: number): Array<{ id: number; trial: StoredTrial }> {
  return db.orm
    .select()
    .from(trials)
    .where(and(eq(trials.jobId, jobId), gt(trials.id, afterId)))
    .orderBy(asc(trials.id))
    .all()
    .map((r) => ({ id: r.id, trial: rowToTrial(r) }));
}

/** Yields nothing when the job does not exist (callers check first and answer 404). */
export async function* watchJob(db: Db, jobId: string, opts: WatchOptions = {}): AsyncGenerator<JobWatchEvent> {
  const intervalMs = opts.intervalMs ?? 250;
  let job = getJob(db, jobId);
  if (!job) return;
  yield { type: 'state', job };
  let lastTrial = 0;
  for (const t of newTrials(db, jobId, lastTrial)) {
    lastTrial = t.id;
    yield { type: 'trial', trial: t.trial };
  }
  while (!finished(job)) {
    if (opts.signal?.aborted) return;
    if (opts.follow && !opts.follow()) {
      yield { type: 'done', job, reason: 'not_following' };
      return;
    }
    try {
      await sleep(intervalMs, undefined, { signal: opts.signal });
    } catch {
      return; // the client went away
    }
    const now = getJob(db, jobId);
    if (!now) {
      yield { type: 'done', job, reason: 'deleted' };
      return;
    }
    for (const t of newTrials(db, jobId, lastTrial)) {
      lastTrial = t.id;
      yield { type: 'trial', trial: t.trial };
    }
    if (now.state !== job.state) yield { type: 'state', job: now };
    else if (now.updatedAt !== job.updatedAt) yield { type: 'progress', job: now };
    job = now;
  }
  yield { type: 'done', job, reason: 'finished' };
}
