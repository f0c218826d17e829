/** Trials of the MiLP search: one row per evaluated adapter configuration, unique per (job, idx). */
import { and, asc, eq } from 'drizzle-orm';
import type { Db } from '../client.js';
import { trials, type JsonObject, type TrialRow } from '../schema.js';

export type Trial = TrialRow;

export interface NewTrial {
  jobId: string;
  userId: string;
  idx: number;
  config: JsonObject;
  status: string;
  objectives?: JsonObject | null;
  cost?: JsonObject | null;
  adapterPath?: string | null;
}

/** Inserts a trial; a second insert of the same (jobId, idx) throws (SQLITE_CONSTRAINT_UNIQUE). */
export function createTrial(db: Db, t: NewTrial, now: number = Date.now()): Trial {
  return db.orm
    .insert(trials)
    .values({
      jobId: t.jobId,
      userId: t.userId,
      idx: t.idx,
      config: t.config,
      status: t.status,
      objectives: t.objectives ?? null,
      cost: t.cost ?? null,
      adapterPath: t.adapterPath ?? null,
      createdAt: now,
    })
    .returning()
    .get();
}

export interface TrialPatch {
  status?: string;
  objectives?: JsonObject | null;
  cost?: JsonObject | null;
  adapterPath?: string | null;
}

export function updateTrial(db: Db, jobId: string, idx: number, patch: TrialPatch): Trial | undefined {
  return db.orm
    .update(trials)
    .set(patch)
    .where(and(eq(trials.jobId, jobId), eq(trials.idx, idx)))
    .returning()
    .get();
}

export function getTrial(db: Db, jobId: string, idx: number): Trial | undefined {
  return db.orm
    .select()
    .from(trials)
    .where(and(eq(trials.jobId, jobId), eq(trials.idx, idx)))
    .get();
}

/** A job's trials in idx order. */
export function listTrialsForJob(db: Db, jobId: string): Trial[] {
  return db.orm.select().from(trials).where(eq(trials.jobId, jobId)).orderBy(asc(trials.idx)).all();
}

/** Every trial of a user across jobs, oldest first (warm-starting a new search). */
export function listTrialsForUser(db: Db, userId: string): Trial[] {
  return db.orm.select().from(trials).where(eq(trials.userId, userId)).orderBy(asc(trials.id)).all();
}
