/**
 * One injection job, start to end, on whatever thread holds the InjectContext (a job worker, or the
 * caller in inline mode). The state machine, with who moves it:
 *
 *   queued ──claim──▶ running ──▶ succeeded   new version written and activated (one transaction)
 *     ▲                 │    ├──▶ rejected    the gate kept the current serving mode
 *     └──── pause ──────┘    ├──▶ failed      an error (code + message in `error`)
 *   (SIGTERM: trials kept)   └──▶ cancelled   cancel request (trials kept)
 *   queued ──cancel (HTTP)──▶ cancelled
 *
 * Every transition out of `running` is a compare-and-set from `running`, so a runner that lost its
 * job (cancelled by someone else, user deleted) changes nothing. A job found `running` at start-up
 * was interrupted by a crash and is claimed again.
 *
 * Crash safety: each trial is a row (SqliteTrialStore) written before the next trial starts, and the
 * adapters of Pareto-optimal trials are kept on disk (job-trial-adapters.ts), so a resumed job
 * re-evaluates nothing and never retrains the chosen configuration. The history is frozen at the
 * first start (`progress.data.historyUpTo`), so a resumed job sees the split its stored trials were
 * scored on. The final adapter file is written atomically first; the version row and the job's
 * `succeeded` state are then committed in one transaction, so a crash leaves either an orphan file
 * (removed by the start-up store check; the job resumes and commits once) or a finished job.
 */
import type { InjectContext } from './context.js';
import { userHistory } from './context.js';
import { inTransaction, type Db } from '../db/client.js';
import { activateAdapterVersion, createAdapterVersion, getActiveAdapter, type AdapterVersion } from '../db/queries/adapters.js';
import { deletedSince, versionsTrainedOnDeleted } from '../db/queries/forgetting.js';
import { getJob, updateJob } from '../db/queries/jobs.js';
import { listTrialsForUser } from '../db/queries/trials.js';
import type { JobState, JsonObject } from '../db/schema.js';
import { type Adapter, initAdapter } from '../lora/adapter.js';
import type { AdapterStore } from '../lora/store.js';
import { loraTargets } from '../model/weights.js';
import type { TrainProgress } from '../train/trainer.js';
import { DEFAULT_GATE, type GateDecision, type GateOptions, gateDecision } from './job-gate.js';
import { JobError, adapterWriteError, errorJson } from './job-errors.js';
import { type InjectTrainOptions, sameShape } from './injector.js';
import { type LoraConfig, type OkTrial, type SearchSpace, SearchError, createSpace, dominates, isOk, paretoTrials, runSearch, toMinimization } from './search/index.js';
import { specOf, trialSeed } from './search-user.js';
import { SqliteTrialStore, type StoredTrial, configJson, rowToTrial } from './trial-store.js';
import { prepareUserData } from './user-data.js';

/** How jobs run when the request leaves something out; the service's configuration. */
export interface JobRunSettings {
  /** Trials when the request gives no budget. */
  budget: number;
  /** Trials before Bayesian optimisation starts (capped by the budget). */
  initialPoints: number;
  fit: 'map' | 'nuts';
  /** Largest n of the search space (default: the space's 32). */
  nMax?: number;
  /** Training options of every trial (epochs, lr, ...). */
  train: Partial<Omit<InjectTrainOptions, 'signal' | 'onProgress' | 'initFrom' | 'seed'>>;
  gate: GateOptions;
  /** Least time between two progress writes to the job row during training. */
  progressIntervalMs: number;
  /** Most configurations of the previous search's front tried first (default: half the initial points). */
  warmStartMax?: number;
}

export const DEFAULT_JOB_SETTINGS: JobRunSettings = {
  budget: 12,
  initialPoints: 6,
  fit: 'map',
  train: {},
  gate: DEFAULT_GATE,
  progressIntervalMs: 500,
};

/** Why a running job is asked to stop: `cancel` ends it, `pause` puts it back in the queue. */
export type StopReason = 'cancel' | 'pause';

export type JobEvent =
  | { type: 'state'; state: JobState }
  | { type: 'trial-start'; trial: number; key: string; config: LoraConfig; warmWeights: boolean }
  | { type: 'training'; trial: number; step: number; totalSteps: number; loss: number }
  | { type: 'trial'; trial: number; key: string; status: 'ok' | 'failed'; loss: number | null; rougeL: number | null; done: number; budget: number }
  | { type: 'gate'; decision: GateDecision; candidate: Figures; current: Figures & { mode: string; adapterVersion: number | null } };

interface Figures {
  valLoss: number;
  valRougeL: number;
}

export interface RunJobOptions {
  /** Abort with reason `cancel` or `pause` (a string); training stops within one step. */
  signal?: AbortSignal;
  settings?: Partial<JobRunSettings>;
  /** The trial-adapter store (job-trial-adapters.ts). */
  trialStore: AdapterStore;
  onEvent?: (e: JobEvent) => void;
}

export interface JobOutcome {
  jobId: string;
  /** The job's state when the runner let go of it; `skipped` when it was not claimable. */
  state: JobState | 'skipped';
}

export interface JobParams {
  budget: number;
  initialPoints: number;
  seed: number;
  force: boolean;
}

export function jobParams(raw: JsonObject, s: Pick<JobRunSettings, 'budget' | 'initialPoints'>): JobParams {
  const int = (v: unknown): number | undefined => (typeof v === 'number' && Number.isInteger(v) ? v : undefined);
  const budget = Math.max(1, int(raw.budget) ?? s.budget);
  return {
    budget,
    initialPoints: Math.max(1, Math.min(budget, int(raw.initialPoints) ?? s.initialPoints)),
    seed: int(raw.seed) ?? 1,
    force: raw.force === true,
  };
}

class Stopped extends Error {
  constructor(readonly reason: StopReason) {
    super(`job ${reason === 'pause' ? 'paused' : 'cancelled'}`);
  }
}

const stopReasonOf = (signal: AbortSignal | undefined): StopReason => (signal?.reason === 'pause' ? 'pause' : 'cancel');

/** The job row's progress: merged patches, written at most every `intervalMs` while training. */
class Progress {
  private last = 0;
  constructor(
    private readonly db: Db,
    private readonly jobId: string,
    readonly value: JsonObject,
    private readonly intervalMs: number,
  ) {}

  set(patch: JsonObject, force = true): void {
    Object.assign(this.value, patch);
    const now = Date.now();
    if (!force && now - this.last < this.intervalMs) return;
    this.last = now;
    updateJob(this.db, this.jobId, { progress: this.value }, { fromStates: ['running'] });
  }
}

/** The configurations a re-injection tries first: the serving adapter's, then the previous search's front. */
function warmStartConfigs(ctx: InjectContext, userId: string, jobId: string, space: SearchSpace, previous: Adapter | null, max: number): LoraConfig[] {
  const out: LoraConfig[] = [];
  const seen = new Set<string>();
  const add = (c: LoraConfig) => {
    try {
      const k = space.key(c);
      if (!seen.has(k)) {
        seen.add(k);
        out.push(space.canonical(c));
      }
    } catch {
      // A configuration of another space (the model or nMax changed): not a warm start.
    }
  };
  if (previous) add({ layers: previous.spec.layers, n: previous.spec.n, r: previous.spec.r });
  const before = listTrialsForUser(ctx.db, userId)
    .filter((r) => r.jobId !== jobId)
    .map(rowToTrial);
  const lastJob = before.filter(isOk).at(-1)?.jobId;
  if (lastJob) for (const t of paretoTrials(before.filter((t) => t.jobId === lastJob))) add(t.config);
  return out.slice(0, Math.max(1, max));
}

/** Would a trial with these objectives be on the front of `ok` (not dominated, not a repeat)? */
function onFront(ok: readonly OkTrial[], loss: number, rougeL: number): boolean {
  const p = toMinimization({ loss, rougeL });
  return !ok.some((t) => {
    const q = toMinimization(t);
    return dominates(q, p) || (q[0] === p[0] && q[1] === p[1]);
  });
}

async function loadPrevious(ctx: InjectContext, userId: string): Promise<{ row: AdapterVersion | null; adapter: Adapter | null; note: string | null }> {
  const row = getActiveAdapter(ctx.db, userId) ?? null;
  if (!row) return { row: null, adapter: null, note: null };
  try {
    return { row, adapter: await ctx.store.read(row.filePath, row.sha256, { userId }), note: null };
  } catch (e) {
    // Serving falls back to the base model for an unreadable adapter, so that is what the gate compares with.
    return { row, adapter: null, note: `active version ${row.version} is unreadable (${(e as Error).message}); compared with the base model` };
  }
}

export async function runJob(ctx: InjectContext, jobId: string, opts: RunJobOptions): Promise<JobOutcome> {
  const s: JobRunSettings = { ...DEFAULT_JOB_SETTINGS, ...opts.settings, gate: { ...DEFAULT_GATE, ...opts.settings?.gate } };
  const { db, injector } = ctx;
  const emit = (e: JobEvent) => opts.onEvent?.(e);
  const signal = opts.signal;

  const before = getJob(db, jobId);
  if (!before || (before.state !== 'queued' && before.state !== 'running')) return { jobId, state: 'skipped' };
  const base: JsonObject = { ...(before.progress ?? {}), phase: 'starting', training: null };
  delete base.paused;
  const job = updateJob(db, jobId, { state: 'running', startedAt: before.startedAt ?? Date.now(), progress: base }, { fromStates: ['queued', 'running'] });
  if (!job) return { jobId, state: 'skipped' };
  emit({ type: 'state', state: 'running' });

  const userId = job.userId;
  const params = jobParams(job.params, s);
  const trials = new SqliteTrialStore(db, jobId, userId);
  const progress = new Progress(db, jobId, base, s.progressIntervalMs);

  /** Drop the files of kept trial adapters: those off the front, or all of them once the job ends. */
  const dropKept = async (keep: ReadonlySet<number>): Promise<void> => {
    for (const t of trials.stored()) {
      if (!t.adapter || keep.has(t.index)) continue;
      trials.dropAdapter(t.index);
      await opts.trialStore.remove(t.adapter.path).catch(() => undefined);
    }
  };
  const finish = async (state: 'succeeded' | 'rejected' | 'failed' | 'cancelled', patch: { result?: JsonObject; error?: JsonObject }): Promise<JobOutcome> => {
    const done = updateJob(db, jobId, { state, finishedAt: Date.now(), progress: { ...progress.value, phase: state, training: null }, ...patch }, { fromStates: ['running'] });
    await dropKept(new Set());
    if (done) emit({ type: 'state', state });
    return { jobId, state: done ? state : 'skipped' };
  };
  const checkStop = () => {
    if (signal?.aborted) throw new Stopped(stopReasonOf(signal));
  };

  try {
    checkStop();
    const serving = await loadPrevious(ctx, userId);
    // An active version trained on history the user deleted since must not carry it on: it is neither
    // the trials' starting point nor what the gate compares with, and it stops serving whatever the
    // gate says, or if the job fails (with the history left too short to train on, say).
    const forgetting = serving.row !== null && versionsTrainedOnDeleted(db, userId).some((v) => v.active && v.version === serving.row!.version);
    const previous = forgetting ? { row: serving.row, adapter: null, note: `active version ${serving.row!.version} was trained on deleted history: compared with the base model instead, and not kept` } : serving;
    const prior = (before.progress?.data ?? null) as JsonObject | null;
    const all = userHistory(db, userId);
    const historyUpTo = typeof prior?.historyUpTo === 'number' ? prior.historyUpTo : all.reduce((m, i) => Math.max(m, i.id), 0);
    const data = prepareUserData(injector, all.filter((i) => i.id <= historyUpTo));
    const startedAt = job.startedAt ?? Date.now();
    const space = createSpace({ layers: injector.model.config.nLayers, nMax: s.nMax });
    const warm = warmStartConfigs(ctx, userId, jobId, space, previous.adapter, s.warmStartMax ?? Math.floor(params.initialPoints / 2));
    progress.set({
      phase: 'search',
      trial: trials.stored().length,
      trials: params.budget,
      data: { historyUpTo, train: data.train.length, val: data.val.length, test: data.test.length },
      warmStart: { configs: warm.length, weightsFromVersion: previous.adapter ? (previous.row?.version ?? null) : null },
    });

    const inner = new AbortController();
    const onAbort = () => inner.abort(signal?.reason);
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort, { once: true });
    let fatal: unknown = null;
    let pruning: Promise<void> = Promise.resolve();
    const durations: number[] = [];

    const result = await runSearch({
      space,
      budget: params.budget,
      initialPoints: params.initialPoints,
      fit: s.fit,
      seed: params.seed,
      store: trials,
      warmStart: warm,
      signal: inner.signal,
      onProgress: (e) => {
        if (e.type !== 'trial') return;
        durations.push(e.trial.durationMs);
        const mean = durations.reduce((a, b) => a + b, 0) / durations.length;
        progress.set({
          trial: e.done,
          best: e.best ? { valLoss: e.best.loss, valRougeL: e.best.rougeL } : null,
          etaS: Math.round((mean * Math.max(0, params.budget - e.done)) / 1000),
          training: null,
        });
        emit({ type: 'trial', trial: e.trial.index, key: e.trial.key, status: e.trial.status, loss: e.trial.loss, rougeL: e.trial.rougeL, done: e.done, budget: params.budget });
        const front = new Set(paretoTrials(trials.stored()).map((t) => t.index));
        pruning = pruning.then(() => dropKept(front));
      },
      evaluate: async (config, tctx) => {
        await pruning;
        const spec = specOf(config);
        const initFrom = previous.adapter && sameShape(previous.adapter.spec, spec) ? previous.adapter : undefined;
        emit({ type: 'trial-start', trial: tctx.trialIndex, key: space.key(config), config, warmWeights: initFrom !== undefined });
        const onProgress = (p: TrainProgress) => {
          progress.set({ training: { trial: tctx.trialIndex, step: p.step, totalSteps: p.totalSteps, loss: p.smoothLoss } }, false);
          emit({ type: 'training', trial: tctx.trialIndex, step: p.step, totalSteps: p.totalSteps, loss: p.smoothLoss });
        };
        const trained = await injector.train(spec, data.train, data.val, { ...s.train, seed: trialSeed(params.seed, tctx.trialIndex), signal: tctx.signal, initFrom, onProgress });
        if (tctx.signal.aborted) throw new Stopped(stopReasonOf(tctx.signal));
        const valRougeL = await injector.rougeL(data.split.val, trained.adapter, tctx.signal);
        if (tctx.signal.aborted) throw new Stopped(stopReasonOf(tctx.signal));
        const finite = Number.isFinite(trained.valLoss) && Number.isFinite(valRougeL);
        if (finite && !space.isVanilla(config) && onFront(trials.stored().filter((t): t is StoredTrial & OkTrial => isOk(t)), trained.valLoss, valRougeL)) {
          try {
            const w = await opts.trialStore.write(userId, trained.adapter);
            trials.attachAdapter(tctx.trialIndex, { path: w.path, sha256: w.sha256 });
          } catch (e) {
            fatal = new JobError('trial_adapter_write_failed', `cannot keep trial ${tctx.trialIndex}'s adapter under ${opts.trialStore.root}: ${(e as Error).message}`, { trial: tctx.trialIndex, root: opts.trialStore.root }, { cause: e });
            inner.abort('fatal');
            throw e;
          }
        }
        return { loss: trained.valLoss, rougeL: valRougeL, cost: { trainSeconds: trained.seconds, steps: trained.result.steps } };
      },
    });
    signal?.removeEventListener('abort', onAbort);
    await pruning;
    if (fatal) throw fatal;
    checkStop();
    const chosen = result.chosen;
    if (!chosen) throw new JobError('no_successful_trial', `no trial of ${result.trials.length} succeeded`, { trials: result.trials.length, stopReason: result.stopReason });

    // The gate: the chosen adapter against what serves the user now, on the same validation split.
    progress.set({ phase: 'gate', training: null });
    const spec = specOf(chosen.config);
    const vanilla = space.isVanilla(chosen.config);
    const kept = trials.stored().find((t) => t.index === chosen.index)?.adapter ?? null;
    let adapter: Adapter;
    let retrained = false;
    if (vanilla) adapter = initAdapter(spec, loraTargets(injector.model.config), 0);
    else if (kept) adapter = await opts.trialStore.read(kept.path, kept.sha256, { userId });
    else {
      // Only when the kept file was lost: training is deterministic under the trial's seed and start.
      const initFrom = previous.adapter && sameShape(previous.adapter.spec, spec) ? previous.adapter : undefined;
      adapter = (await injector.train(spec, data.train, data.val, { ...s.train, seed: trialSeed(params.seed, chosen.index), signal, initFrom })).adapter;
      retrained = true;
    }
    checkStop();
    const cur = previous.adapter ?? undefined;
    const current = { mode: cur ? 'injected' : 'vanilla', adapterVersion: cur ? (previous.row?.version ?? null) : null, valLoss: await injector.loss(data.val, cur, 8, signal) } as Figures & {
      mode: string;
      adapterVersion: number | null;
    };
    checkStop();
    current.valRougeL = await injector.rougeL(data.split.val, cur, signal);
    checkStop();
    const candidate: Figures = { valLoss: chosen.loss, valRougeL: chosen.rougeL };
    const decision = gateDecision(candidate, current, { force: params.force, gate: s.gate });
    emit({ type: 'gate', decision, candidate, current });
    const summary: JsonObject = {
      config: configJson(chosen.config),
      trial: chosen.index,
      trials: result.trials.length,
      stopReason: result.stopReason,
      searchRule: result.rule,
      front: result.front.map((t) => ({ trial: t.index, config: configJson(t.config), valLoss: t.loss, valRougeL: t.rougeL })),
      gate: {
        accepted: decision.accepted,
        forced: decision.forced,
        reason: decision.reason,
        rule: decision.rule,
        candidate: { ...candidate },
        current: { ...current, ...(previous.note ? { note: previous.note } : {}) },
      },
      ...(retrained ? { retrained: true } : {}),
    };
    if (!decision.accepted) {
      // Not better than the base model: a version trained on deleted history stops serving all the same.
      if (forgetting) inTransaction(db, () => activateAdapterVersion(db, userId, null));
      const result: JsonObject = { ...summary, adapterVersion: previous.adapter ? (previous.row?.version ?? null) : null, activated: false };
      if (forgetting) result.deactivated = previous.row!.version;
      return await finish('rejected', { result });
    }

    progress.set({ phase: 'saving' });
    checkStop();
    // History this job read and the user deleted while it ran is in its trials' weights: nothing of them may serve.
    const deletedWhileRunning = deletedSince(db, userId, startedAt, historyUpTo);
    if (deletedWhileRunning > 0) {
      throw new JobError('history_deleted', `${deletedWhileRunning} history item(s) this job read were deleted while it ran; inject the user again to train without them`, { items: deletedWhileRunning });
    }
    if (vanilla) {
      // The base model beats the serving adapter: serving it means no active version.
      const done = inTransaction(db, () => {
        activateAdapterVersion(db, userId, null);
        const j = updateJob(db, jobId, { state: 'succeeded', finishedAt: Date.now(), result: { ...summary, adapterVersion: null, activated: true, mode: 'vanilla' }, progress: { ...progress.value, phase: 'succeeded' } }, { fromStates: ['running'] });
        if (!j) throw new JobError('job_state_changed', `job ${jobId} is no longer running`, { jobId });
        return j;
      });
      await dropKept(new Set());
      emit({ type: 'state', state: done.state });
      return { jobId, state: 'succeeded' };
    }
    let written;
    try {
      written = await ctx.store.write(userId, adapter);
    } catch (e) {
      throw adapterWriteError(e, ctx.store.root);
    }
    try {
      inTransaction(db, () => {
        const version = createAdapterVersion(db, {
          userId,
          config: { ...configJson(chosen.config), ...(spec.alpha !== undefined ? { alpha: spec.alpha } : {}) },
          filePath: written.path,
          sha256: written.sha256,
          metrics: { valLoss: chosen.loss, valRougeL: chosen.rougeL, jobId, trial: chosen.index, trials: result.trials.length, steps: chosen.cost?.steps ?? 0 },
          status: 'ready',
          activate: true,
        });
        const j = updateJob(
          db,
          jobId,
          { state: 'succeeded', finishedAt: Date.now(), result: { ...summary, adapterVersion: version.version, activated: true, mode: 'injected' }, progress: { ...progress.value, phase: 'succeeded' } },
          { fromStates: ['running'] },
        );
        if (!j) throw new JobError('job_state_changed', `job ${jobId} is no longer running`, { jobId });
      });
    } catch (e) {
      await ctx.store.remove(written.path).catch(() => undefined);
      throw e;
    }
    await dropKept(new Set());
    emit({ type: 'state', state: 'succeeded' });
    return { jobId, state: 'succeeded' };
  } catch (e) {
    if (signal?.aborted || e instanceof Stopped) {
      const reason = e instanceof Stopped ? e.reason : stopReasonOf(signal);
      if (reason === 'pause') {
        // Durable pause: back in the queue with its trials and kept adapters; the next start resumes it.
        const paused = updateJob(db, jobId, { state: 'queued', progress: { ...progress.value, phase: 'paused', paused: true, training: null } }, { fromStates: ['running'] });
        if (paused) emit({ type: 'state', state: 'queued' });
        return { jobId, state: paused ? 'queued' : 'skipped' };
      }
      return await finish('cancelled', {});
    }
    const err = e instanceof SearchError && e.code === 'evaluation_failed' ? new JobError('evaluation_failed', e.message, {}, { cause: e }) : e;
    // Failed or not, an active version trained on deleted history stops serving.
    const tainted = versionsTrainedOnDeleted(db, userId).find((v) => v.active);
    if (!tainted) return await finish('failed', { error: errorJson(err) });
    inTransaction(db, () => activateAdapterVersion(db, userId, null));
    return await finish('failed', { error: errorJson(err), result: { deactivated: tainted.version } });
  }
}
