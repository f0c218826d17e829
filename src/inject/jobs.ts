/**
 * The injection job service: a durable queue over the `injection_jobs` table, run by worker threads
 * (MEMLORA_JOB_CONCURRENCY at a time), so training never blocks the HTTP event loop or the decode
 * loop. The HTTP layer creates job rows (one active job per user, enforced by the database) and
 * calls enqueue(); this service starts, cancels and pauses them. Job semantics (state machine,
 * crash safety, gate) are job-runner.ts's.
 *
 * Start-up (start()): the adapter store is checked against the version rows (checkAdapterStore:
 * leftovers and orphans of a crash removed, bad rows deactivated), stale trial adapters are removed,
 * then every `queued` job and every `running` one (a crash interrupted it) is queued again, oldest
 * first; each resumes from its stored trials.
 *
 * Shutdown (close()): running jobs are asked to pause; each stops within one training step and goes
 * back to `queued` with its trials, to be resumed at the next start. A worker that does not stop in
 * time is terminated; its job stays `running` and is resumed the same way. That is a last resort:
 * every phase (training, validation loss, validation replies, the gate) stops within one batch or
 * decode step, and terminating a worker inside an ONNX Runtime run can abort the whole process
 * (seen once in bench/soak.ts before the evaluations were made stoppable).
 */
import { EventEmitter } from 'node:events';
import { basename } from 'node:path';
import type { Worker } from 'node:worker_threads';
import type { Config } from '../config.js';
import type { Db } from '../db/client.js';
import { NotFoundError } from '../db/errors.js';
import { getJob, jobsInStates, updateJob, type Job } from '../db/queries/jobs.js';
import { checkAdapterStore, type ConsistencyReport } from '../lora/consistency.js';
import { AdapterStore } from '../lora/store.js';
import type { Counter, Gauge, Registry } from '../metrics.js';
import { readHfConfig } from '../model/import.js';
import type { InjectContext } from './context.js';
import { JobError, errorJson } from './job-errors.js';
import { type JobExecInput, executeJob } from './job-exec.js';
import type { JobEvent, JobOutcome, JobRunSettings, StopReason } from './job-runner.js';
import { type TrialCleanup, cleanTrialAdapters, openTrialAdapterStore } from './job-trial-adapters.js';
import type { InjectorOptions } from './injector.js';
import type { FromWorker, ToWorker, WorkerInput } from './worker.js';
import { type InjectionRecipe, loadInjectionRecipe } from './recipe.js';
import { spawnModuleWorker } from '../util/module-worker.js';

/** The log methods the service uses (the HTTP layer's Logger fits). */
export interface JobLogger {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export interface JobServiceOptions {
  config: Config;
  /** The caller's connection: start-up pick-up, and cancelling jobs no worker holds. */
  db: Db;
  logger?: JobLogger;
  /** Jobs at once (default config.jobConcurrency). */
  concurrency?: number;
  /** `thread` (default): one worker thread per running job. `inline`: on this thread (tests, tools). */
  mode?: 'thread' | 'inline';
  settings?: Partial<JobRunSettings>;
  injector?: Partial<InjectorOptions>;
  /** ORT intra-op threads of job sessions (default 1: a job must not take the cores /generate needs). */
  intraOpThreads?: number;
  /**
   * OS niceness of job worker threads (default 19; null leaves the priority alone). Measured with
   * bench/serve-during-inject.ts on 2 shared cores: /generate p99 with two jobs training was 1.12x
   * idle at nice 19 and 3.25x at nice 0, while the jobs still finished a third as many trials.
   */
  niceness?: number | null;
  /** Inline mode only: build the context (e.g. with a failing adapter store). */
  openContext?: (config: Config, db: Db) => InjectContext;
  /** Check the adapter store against the db at start (default true). */
  checkStore?: boolean;
  /** How long close() waits for running jobs to pause before terminating their workers (default 15 s). */
  pauseTimeoutMs?: number;
  /** How long cancel() waits for the job to stop before answering with it still running (default 3 s). */
  cancelWaitMs?: number;
  /** Where the service's metrics go (jobs running, finished by state, trials by status). */
  metrics?: Registry;
}

export interface StartReport {
  store: ConsistencyReport | null;
  trialAdapters: TrialCleanup | null;
  resumed: string[];
}

interface Running {
  jobId: string;
  stop(reason: StopReason): void;
  /** Resolves when the job has let go (worker exited, or the inline run returned). */
  exited: Promise<void>;
  outcome: JobOutcome | null;
  terminate?: () => Promise<unknown>;
}

const silent: JobLogger = { info() {}, warn() {}, error() {} };

/** Job threads yield the CPU to serving (see JobServiceOptions.niceness). */
export const DEFAULT_NICENESS = 19;

const delay = (ms: number) => new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), ms).unref());

/** The job's worker thread (worker.ts). */
function spawnWorker(input: WorkerInput): Worker {
  return spawnModuleWorker(import.meta.url, 'worker', input);
}

export class JobService extends EventEmitter<{ event: [jobId: string, event: JobEvent]; finished: [outcome: JobOutcome] }> {
  readonly concurrency: number;
  readonly mode: 'thread' | 'inline';
  private readonly logger: JobLogger;
  private readonly queue: string[] = [];
  private readonly active = new Map<string, Running>();
  private closing = false;
  private idleWaiters: Array<() => void> = [];
  private readonly gauges: { running?: Gauge; finished?: Counter; trials?: Counter } = {};

  /** The service's settings over the base model's injection recipe (explicit settings win). */
  private readonly settings: Partial<JobRunSettings>;

  constructor(readonly opts: JobServiceOptions) {
    super();
    this.settings = withRecipe(loadInjectionRecipe(opts.config.modelPath), opts.settings ?? {});
    this.concurrency = Math.max(1, opts.concurrency ?? opts.config.jobConcurrency);
    this.mode = opts.mode ?? 'thread';
    this.logger = opts.logger ?? silent;
    const m = opts.metrics;
    if (m) {
      this.gauges.running = m.gauge('memlora_injection_jobs_running', 'Injection jobs running in this process.');
      this.gauges.finished = m.counter('memlora_injection_jobs_finished_total', 'Injection jobs this process let go of, by the state they were left in.', ['state']);
      this.gauges.trials = m.counter('memlora_injection_trials_total', 'Search trials finished, by status.', ['status']);
      this.on('finished', (o) => this.gauges.finished?.inc({ state: o.state }));
      this.on('event', (_id, e) => {
        if (e.type === 'trial') this.gauges.trials?.inc({ status: e.status });
      });
    }
  }

  /** Check the stores, then queue every queued or interrupted job. */
  async start(): Promise<StartReport> {
    const { config, db } = this.opts;
    const report: StartReport = { store: null, trialAdapters: null, resumed: [] };
    let model;
    try {
      model = { config: readHfConfig(config.modelPath), name: basename(config.modelPath) };
    } catch (e) {
      this.logger.warn('job service: no base model config; adapter store check skipped', { modelPath: config.modelPath, err: String(e) });
    }
    if (model && (this.opts.checkStore ?? true)) {
      // Quick mode (no checksums: reads verify on first load). No grace period: nothing writes
      // adapters before this service starts its jobs, so every temp and orphan is a crash's leftover.
      report.store = await checkAdapterStore(db, new AdapterStore(config.adapterDir, model), { checksums: false });
      const r = report.store;
      if (r.temps.length || r.orphans.length || r.missing.length || r.corrupt.length || r.deactivated.length || r.errors.length) {
        this.logger.warn('adapter store repaired at start', { temps: r.temps.length, orphans: r.orphans.length, missing: r.missing.length, corrupt: r.corrupt.length, deactivated: r.deactivated, errors: r.errors });
      }
      report.trialAdapters = await cleanTrialAdapters(db, openTrialAdapterStore(config, model));
    }
    for (const job of jobsInStates(db, ['queued', 'running'])) {
      report.resumed.push(job.id);
      this.enqueue(job);
    }
    if (report.resumed.length > 0) this.logger.info('job service: resuming jobs', { jobs: report.resumed });
    return report;
  }

  /** A queued job exists in the db: run it when a slot is free. Never throws. */
  enqueue(job: Pick<Job, 'id'>): void {
    if (this.closing || this.active.has(job.id) || this.queue.includes(job.id)) return;
    this.queue.push(job.id);
    this.pump();
  }

  /** Ids of the jobs running now. */
  runningJobs(): string[] {
    return [...this.active.keys()];
  }

  /**
   * Cancel a job: a running one is asked to stop (within one training step) and this waits up to
   * cancelWaitMs for it; a job no runner holds is cancelled in the db directly.
   */
  async cancel(jobId: string): Promise<Job> {
    const run = this.active.get(jobId);
    if (run) {
      run.stop('cancel');
      await Promise.race([run.exited, delay(this.opts.cancelWaitMs ?? 3000)]);
    } else {
      const at = this.queue.indexOf(jobId);
      if (at >= 0) this.queue.splice(at, 1);
      const job = getJob(this.opts.db, jobId);
      if (job && (job.state === 'queued' || job.state === 'running')) {
        updateJob(this.opts.db, jobId, { state: 'cancelled', finishedAt: Date.now() }, { fromStates: [job.state] });
      }
    }
    const now = getJob(this.opts.db, jobId);
    if (!now) throw new NotFoundError('job_not_found', jobId);
    return now;
  }

  /** Resolves when nothing runs and nothing waits (tests, tools). */
  idle(): Promise<void> {
    if (this.active.size === 0 && this.queue.length === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  /** Pause every running job durably (back to `queued`, trials kept) and stop taking new ones. */
  async close(): Promise<void> {
    this.closing = true;
    this.queue.length = 0;
    const runs = [...this.active.values()];
    for (const r of runs) r.stop('pause');
    const all = Promise.all(runs.map((r) => r.exited));
    if ((await Promise.race([all, delay(this.opts.pauseTimeoutMs ?? 15_000)])) === 'timeout') {
      const late = runs.filter((r) => this.active.has(r.jobId));
      this.logger.warn('jobs did not pause in time; terminating their workers (they resume at next start)', { jobs: late.map((r) => r.jobId) });
      await Promise.all(late.map((r) => r.terminate?.()));
    }
  }

  private pump(): void {
    while (!this.closing && this.active.size < this.concurrency && this.queue.length > 0) {
      const id = this.queue.shift()!;
      const job = getJob(this.opts.db, id);
      if (!job || (job.state !== 'queued' && job.state !== 'running')) continue;
      this.launch(id);
    }
    if (this.active.size === 0 && this.queue.length === 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  private input(jobId: string): JobExecInput {
    const { config } = this.opts;
    return {
      config: { ...config, intraOpThreads: this.opts.intraOpThreads ?? 1 },
      jobId,
      settings: this.settings,
      injector: this.opts.injector ?? {},
    };
  }

  private settle(run: Running): void {
    this.active.delete(run.jobId);
    this.gauges.running?.set(undefined, this.active.size);
    if (run.outcome) this.emit('finished', run.outcome);
    this.pump();
  }

  private launch(jobId: string): void {
    const onEvent = (e: JobEvent) => this.emit('event', jobId, e);
    if (this.mode === 'inline') {
      const stop = new AbortController();
      const run: Running = { jobId, stop: (reason) => stop.abort(reason), exited: Promise.resolve(), outcome: null };
      run.exited = executeJob(this.input(jobId), { signal: stop.signal, onEvent, openContext: this.opts.openContext }).then(
        (o) => {
          run.outcome = o;
        },
        (e) => this.crashed(jobId, e),
      );
      this.active.set(jobId, run);
      this.gauges.running?.set(undefined, this.active.size);
      void run.exited.finally(() => this.settle(run));
      return;
    }
    const worker = spawnWorker({ ...this.input(jobId), niceness: this.opts.niceness === undefined ? DEFAULT_NICENESS : this.opts.niceness });
    let exitedResolve!: () => void;
    const run: Running = {
      jobId,
      stop: (reason) => worker.postMessage({ type: 'stop', reason } satisfies ToWorker),
      exited: new Promise<void>((r) => (exitedResolve = r)),
      outcome: null,
      terminate: () => worker.terminate(),
    };
    let failure: unknown = null;
    worker.on('message', (m: FromWorker) => {
      if (m.type === 'event') onEvent(m.event);
      else if (m.type === 'done') run.outcome = m.outcome;
      else if (m.type === 'error') failure = Object.assign(new Error(m.message), { stack: m.stack });
    });
    worker.on('error', (e) => (failure = e));
    worker.on('exit', () => {
      if (!run.outcome && !this.closing) this.crashed(jobId, failure ?? new Error('the job worker exited without a result'));
      exitedResolve();
      this.settle(run);
    });
    this.active.set(jobId, run);
    this.gauges.running?.set(undefined, this.active.size);
  }

  /** The runner died without settling the job: fail it, so it is not retried forever. */
  private crashed(jobId: string, e: unknown): void {
    this.logger.error('injection job worker crashed', { jobId, err: e instanceof Error ? (e.stack ?? e.message) : String(e) });
    const err = e instanceof JobError ? e : new JobError('worker_crashed', `the job worker died: ${e instanceof Error ? e.message : String(e)}`, {}, { cause: e });
    const failed = updateJob(this.opts.db, jobId, { state: 'failed', error: errorJson(err), finishedAt: Date.now() }, { fromStates: ['queued', 'running'] });
    if (failed) this.emit('event', jobId, { type: 'state', state: 'failed' });
  }
}

/** Build and start the service (what the server's service factory calls). */
export async function startJobService(opts: JobServiceOptions): Promise<JobService> {
  const svc = new JobService(opts);
  await svc.start();
  return svc;
}

/** Job settings with the model's recipe filling what the settings leave out. */
export function withRecipe(recipe: InjectionRecipe, settings: Partial<JobRunSettings>): Partial<JobRunSettings> {
  const train = { ...(recipe.lr !== undefined ? { lr: recipe.lr } : {}), ...(recipe.epochs !== undefined ? { epochs: recipe.epochs } : {}), ...settings.train };
  return { ...(recipe.nMax !== undefined ? { nMax: recipe.nMax } : {}), ...settings, train };
}
