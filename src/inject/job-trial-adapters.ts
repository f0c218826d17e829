/**
 * Where a job keeps the adapters of its Pareto-optimal trials while it runs, so the chosen one is
 * never trained twice (not even after a crash): a second AdapterStore rooted at
 * `<dataDir>/trial-adapters`, with the same atomic write. It lives outside the adapter directory on
 * purpose: the start-up check of that directory removes every adapter no version row names, and a
 * trial's adapter is named by a trials row instead.
 *
 * Start-up cleanup (cleanTrialAdapters) applies the same repairs for this store: `.tmp-*` leftovers
 * are removed, and so is every adapter that no trials row of a queued or running job names (a crash
 * between the write and the row, or a job that ended before removing its files).
 */
import { join } from 'node:path';
import { inArray, isNotNull, and, eq } from 'drizzle-orm';
import type { Config } from '../config.js';
import type { Db } from '../db/client.js';
import { ACTIVE_JOB_STATES, injectionJobs, trials } from '../db/schema.js';
import type { AdapterModel } from '../lora/format.js';
import { AdapterStore } from '../lora/store.js';

export const TRIAL_ADAPTER_DIR = 'trial-adapters';

export function trialAdapterRoot(config: Pick<Config, 'dataDir'>): string {
  return join(config.dataDir, TRIAL_ADAPTER_DIR);
}

export function openTrialAdapterStore(config: Pick<Config, 'dataDir'>, model: AdapterModel): AdapterStore {
  return new AdapterStore(trialAdapterRoot(config), model);
}

export interface TrialCleanup {
  temps: string[];
  removed: string[];
  /** Rows of finished jobs whose adapter_path was cleared. */
  cleared: number;
  errors: Array<{ path: string; error: string }>;
}

/** Kept trial adapters of active jobs survive; everything else in the store goes. */
export async function cleanTrialAdapters(db: Db, store: AdapterStore): Promise<TrialCleanup> {
  const out: TrialCleanup = { temps: [], removed: [], cleared: 0, errors: [] };
  const live = new Set(
    db.orm
      .select({ path: trials.adapterPath })
      .from(trials)
      .innerJoin(injectionJobs, eq(trials.jobId, injectionJobs.id))
      .where(and(isNotNull(trials.adapterPath), inArray(injectionJobs.state, [...ACTIVE_JOB_STATES])))
      .all()
      .map((r) => r.path as string),
  );
  const stale = db.orm
    .select({ id: trials.id })
    .from(trials)
    .innerJoin(injectionJobs, eq(trials.jobId, injectionJobs.id))
    .where(and(isNotNull(trials.adapterPath), inArray(injectionJobs.state, ['succeeded', 'rejected', 'failed', 'cancelled'])))
    .all()
    .map((r) => r.id);
  if (stale.length > 0) {
    db.orm.update(trials).set({ adapterPath: null }).where(inArray(trials.id, stale)).run();
    out.cleared = stale.length;
  }
  const scan = await store.scan();
  for (const t of scan.temps) {
    out.temps.push(t.path);
    await store.removeTemp(t.path).catch((e) => out.errors.push({ path: t.path, error: String(e) }));
  }
  for (const a of scan.adapters) {
    if (live.has(a.path)) continue;
    out.removed.push(a.path);
    await store.remove(a.path).catch((e) => out.errors.push({ path: a.path, error: String(e) }));
  }
  for (const u of scan.userDirs) await store.pruneUserDir(u);
  return out;
}
