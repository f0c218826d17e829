/** Injection job rows: creation guarded by "one active job per user", compare-and-set updates. */
import { randomBytes } from 'node:crypto';
import { and, asc, desc, eq, inArray, lt, or } from 'drizzle-orm';
import { inTransaction, type Db } from '../client.js';
import { clampLimit, decodeCursor, isSafeInt, isShortString, pageOf, type Page } from '../cursor.js';
import { JobActiveError, NotFoundError } from '../errors.js';
import { ACTIVE_JOB_STATES, injectionJobs, type JobRow, type JobState, type JsonObject } from '../schema.js';
import { userExists } from './users.js';

export type Job = JobRow;

/** `job_` + time (base36, fixed width, so ids sort by creation) + 64 random bits. */
export function newJobId(now: number = Date.now()): string {
  return `job_${now.toString(36).padStart(10, '0')}${randomBytes(8).toString('hex')}`;
}

export function getJob(db: Db, id: string): Job | undefined {
  return db.orm.select().from(injectionJobs).where(eq(injectionJobs.id, id)).get();
}

export function activeJobForUser(db: Db, userId: string): Job | undefined {
  return db.orm
    .select()
    .from(injectionJobs)
    .where(and(eq(injectionJobs.userId, userId), inArray(injectionJobs.state, [...ACTIVE_JOB_STATES])))
    .get();
}

/**
 * Creates a queued job. Throws JobActiveError (carrying the active job's id) when the user already
 * has a queued or running job, NotFoundError when the user does not exist. The partial unique index
 * makes this hold even against writers in other processes.
 */
export function createJob(
  db: Db,
  input: { userId: string; params: JsonObject; id?: string },
  now: number = Date.now(),
): Job {
  return inTransaction(db, () => {
    if (!userExists(db, input.userId)) throw new NotFoundError('user_not_found', input.userId);
    const active = activeJobForUser(db, input.userId);
    if (active) throw new JobActiveError(input.userId, active.id, active.state);
    return db.orm
      .insert(injectionJobs)
      .values({
        id: input.id ?? newJobId(now),
        userId: input.userId,
        state: 'queued',
        params: input.params,
        createdAt: now,
        updatedAt: now,
      })
      .returning()
      .get();
  });
}

type JobKey = [number, string];
const isJobKey = (v: unknown): v is JobKey => Array.isArray(v) && v.length === 2 && isSafeInt(v[0]) && isShortString(v[1]);

/** Jobs newest first, optionally filtered; the cursor is (createdAt, id) of the last job returned. */
export function listJobs(
  db: Db,
  opts: { state?: JobState; userId?: string; cursor?: string; limit?: number } = {},
): Page<Job> {
  const limit = clampLimit(opts.limit, 50, 500);
  const after = opts.cursor === undefined ? undefined : decodeCursor(opts.cursor, isJobKey);
  const rows = db.orm
    .select()
    .from(injectionJobs)
    .where(
      and(
        opts.state === undefined ? undefined : eq(injectionJobs.state, opts.state),
        opts.userId === undefined ? undefined : eq(injectionJobs.userId, opts.userId),
        after === undefined
          ? undefined
          : or(
              lt(injectionJobs.createdAt, after[0]),
              and(eq(injectionJobs.createdAt, after[0]), lt(injectionJobs.id, after[1])),
            ),
      ),
    )
    .orderBy(desc(injectionJobs.createdAt), desc(injectionJobs.id))
    .limit(limit + 1)
    .all();
  return pageOf(rows, limit, (j) => [j.createdAt, j.id] satisfies JobKey);
}

/** Jobs in the given states, oldest first: what a runner picks up at start (queued, or running before a crash). */
export function jobsInStates(db: Db, states: readonly JobState[]): Job[] {
  return db.orm
    .select()
    .from(injectionJobs)
    .where(inArray(injectionJobs.state, [...states]))
    .orderBy(asc(injectionJobs.createdAt), asc(injectionJobs.id))
    .all();
}

export interface JobPatch {
  state?: JobState;
  progress?: JsonObject | null;
  result?: JsonObject | null;
  error?: JsonObject | null;
  startedAt?: number | null;
  finishedAt?: number | null;
}

/**
 * Updates a job; with `fromStates` only if its current state is one of them (compare-and-set, so a
 * cancel and a worker's state change cannot both win). Returns the updated job, or undefined when
 * the job does not exist or was not in an allowed state.
 */
export function updateJob(
  db: Db,
  id: string,
  patch: JobPatch,
  opts: { fromStates?: readonly JobState[] } = {},
  now: number = Date.now(),
): Job | undefined {
  const where =
    opts.fromStates === undefined
      ? eq(injectionJobs.id, id)
      : and(eq(injectionJobs.id, id), inArray(injectionJobs.state, [...opts.fromStates]));
  return db.orm
    .update(injectionJobs)
    .set({ ...patch, updatedAt: now })
    .where(where)
    .returning()
    .get();
}
