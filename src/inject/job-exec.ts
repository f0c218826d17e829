/**
 * Runs one job with a context of its own: open the database connection and the model, run the job,
 * close both. The same code serves the worker thread and the inline mode (tests, tools), so the
 * only difference between them is the thread it runs on.
 */
import type { Config } from '../config.js';
import { openDb } from '../db/client.js';
import { updateJob } from '../db/queries/jobs.js';
import { type InjectContext, openInjectContext } from './context.js';
import { JobError, errorJson } from './job-errors.js';
import { type JobEvent, type JobOutcome, type JobRunSettings, runJob } from './job-runner.js';
import { openTrialAdapterStore } from './job-trial-adapters.js';
import { Injector, type InjectorOptions } from './injector.js';

/** Everything a job needs, as plain data (it crosses into a worker thread). */
export interface JobExecInput {
  config: Config;
  jobId: string;
  settings: Partial<JobRunSettings>;
  injector: Partial<InjectorOptions>;
}

export interface JobExecHooks {
  signal?: AbortSignal;
  onEvent?: (e: JobEvent) => void;
  /** Replaces openInjectContext (inline mode: tests inject a failing store). Must use `db` when given. */
  openContext?: (config: Config, db: InjectContext['db']) => InjectContext;
}

/** Training rows must fit the model's positions (the default 384 is for the default model). */
function fitInjector(ctx: InjectContext): InjectContext {
  const room = ctx.model.config.maxPositions;
  const o = ctx.injector.opts;
  if (o.maxLen <= room) return ctx;
  const maxLen = room;
  return { ...ctx, injector: new Injector(ctx.model, ctx.tokenizer, { ...o, maxLen, maxNewTokens: Math.min(o.maxNewTokens, Math.floor(maxLen / 2)) }) };
}

export async function executeJob(input: JobExecInput, hooks: JobExecHooks = {}): Promise<JobOutcome> {
  const { config, jobId } = input;
  const db = openDb(config.dbFile, { migrate: false });
  try {
    let ctx: InjectContext;
    try {
      ctx = hooks.openContext ? hooks.openContext(config, db) : openInjectContext(config, { db, injector: input.injector });
    } catch (e) {
      // Without a model nothing can run: fail the job rather than leave it queued forever.
      const err = new JobError('model_unavailable', `cannot load the base model from ${config.modelPath}: ${(e as Error).message}`, { modelPath: config.modelPath }, { cause: e });
      const failed = updateJob(db, jobId, { state: 'failed', error: errorJson(err), finishedAt: Date.now() }, { fromStates: ['queued', 'running'] });
      if (failed) hooks.onEvent?.({ type: 'state', state: 'failed' });
      return { jobId, state: failed ? 'failed' : 'skipped' };
    }
    ctx = fitInjector(ctx);
    try {
      const trialStore = openTrialAdapterStore(config, { config: ctx.model.config, name: ctx.modelName });
      return await runJob(ctx, jobId, { signal: hooks.signal, settings: input.settings, trialStore, onEvent: hooks.onEvent });
    } finally {
      await ctx.close();
    }
  } finally {
    db.close();
  }
}
