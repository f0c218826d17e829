/**
 * The search's TrialStore over the `trials` table: one row per evaluated configuration of a job,
 * unique per (job, idx), written before the next trial starts. A job that a crash or a shutdown
 * interrupted resumes from these rows and never evaluates a stored trial again.
 *
 * Row layout (the columns are the schema's; the JSON shapes are this module's):
 *   config      the configuration, {layers, n, r}
 *   objectives  {loss, rougeL} (null when the trial failed), plus what the search recorded about the
 *               evaluation: phase, startedAt, acquisition, error, and adapterSha256 of a kept adapter
 *   cost        the evaluator's numbers (seconds, trainSeconds, steps) and durationMs
 *   status      'ok' | 'failed'
 *   adapter_path  the trained adapter in the job's trial-adapter store while it may still be chosen
 *               (Pareto-optimal); null otherwise, and for every trial once the job has ended
 */
import type { Db } from '../db/client.js';
import { createTrial, listTrialsForJob, updateTrial, type Trial as TrialRow } from '../db/queries/trials.js';
import type { JsonObject } from '../db/schema.js';
import type { LoraConfig, Trial, TrialPhase, TrialStore } from './search/index.js';

export const TRIAL_STATUS = { ok: 'ok', failed: 'failed' } as const;

export interface KeptAdapterRef {
  /** Relative to the trial-adapter store's root. */
  path: string;
  sha256: string;
}

/** A stored trial as the search sees it, with the job it belongs to and its kept adapter, if any. */
export interface StoredTrial extends Trial {
  jobId: string;
  adapter: KeptAdapterRef | null;
  createdAt: number;
}

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

/** A trials row back to the search's Trial (plus job id and kept adapter). */
export function rowToTrial(row: TrialRow): StoredTrial {
  const o = (row.objectives ?? {}) as Record<string, unknown>;
  const c = row.config as Record<string, unknown>;
  const config: LoraConfig = { layers: (c.layers as boolean[]) ?? [], n: Number(c.n), r: Number(c.r) as LoraConfig['r'] };
  const rawCost = (row.cost ?? {}) as Record<string, unknown>;
  const cost: Record<string, number> = {};
  let durationMs = 0;
  for (const [k, v] of Object.entries(rawCost)) {
    if (typeof v !== 'number') continue;
    if (k === 'durationMs') durationMs = v;
    else cost[k] = v;
  }
  const ok = row.status === TRIAL_STATUS.ok;
  const sha = str(o.adapterSha256);
  const t: StoredTrial = {
    index: row.idx,
    key: str(o.key) ?? '',
    config,
    phase: (str(o.phase) as TrialPhase | undefined) ?? 'initial',
    status: ok ? 'ok' : 'failed',
    loss: ok ? num(o.loss) : null,
    rougeL: ok ? num(o.rougeL) : null,
    startedAt: str(o.startedAt) ?? new Date(row.createdAt).toISOString(),
    durationMs,
    jobId: row.jobId,
    adapter: row.adapterPath && sha ? { path: row.adapterPath, sha256: sha } : null,
    createdAt: row.createdAt,
  };
  if (Object.keys(cost).length > 0) t.cost = cost;
  const err = str(o.error);
  if (err !== undefined) t.error = err;
  const acq = num(o.acquisition);
  if (acq !== null) t.acquisition = acq;
  return t;
}

function objectivesOf(t: Trial, adapter: KeptAdapterRef | undefined): JsonObject {
  const o: JsonObject = { loss: t.loss, rougeL: t.rougeL, key: t.key, phase: t.phase, startedAt: t.startedAt };
  if (t.acquisition !== undefined && Number.isFinite(t.acquisition)) o.acquisition = t.acquisition;
  if (t.error !== undefined) o.error = t.error;
  if (adapter) o.adapterSha256 = adapter.sha256;
  return o;
}

/** The configuration as stored: exactly the three searched parts. */
export function configJson(c: LoraConfig): JsonObject {
  return { layers: [...c.layers], n: c.n, r: c.r };
}

export class SqliteTrialStore implements TrialStore {
  /** Adapters written for trials the search has not saved yet (save() attaches them to the row). */
  private readonly pending = new Map<number, KeptAdapterRef>();

  constructor(
    readonly db: Db,
    readonly jobId: string,
    readonly userId: string,
  ) {}

  /** Remember the kept adapter of trial `index`; its row records it when the search saves the trial. */
  attachAdapter(index: number, ref: KeptAdapterRef): void {
    this.pending.set(index, ref);
  }

  /** Stored trials of this job, idx order, with their kept adapters. */
  stored(): StoredTrial[] {
    return listTrialsForJob(this.db, this.jobId)
      .filter((r) => r.status === TRIAL_STATUS.ok || r.status === TRIAL_STATUS.failed)
      .map(rowToTrial);
  }

  async load(): Promise<Trial[]> {
    return this.stored();
  }

  async save(trial: Trial): Promise<void> {
    const adapter = this.pending.get(trial.index);
    this.pending.delete(trial.index);
    const cost: JsonObject = { ...(trial.cost ?? {}), durationMs: trial.durationMs };
    createTrial(this.db, {
      jobId: this.jobId,
      userId: this.userId,
      idx: trial.index,
      config: configJson(trial.config),
      status: trial.status === 'ok' ? TRIAL_STATUS.ok : TRIAL_STATUS.failed,
      objectives: objectivesOf(trial, adapter),
      cost,
      adapterPath: adapter?.path ?? null,
    });
  }

  /** Forget a trial's kept adapter (its file is being removed: it left the front, or the job ended). */
  dropAdapter(index: number): void {
    updateTrial(this.db, this.jobId, index, { adapterPath: null });
  }
}
