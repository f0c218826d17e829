/**
 * /v1/admin: inject (create a job), list and read jobs, cancel, follow a job's events (SSE), a
 * user's trials with their Pareto front, and the users whose history has outgrown their adapter
 * (listed, or re-injected in bulk, stalest first). The runner itself is a JobService.
 */
import type { Hono } from 'hono';
import { streamSSE } from 'hono/streaming';
import type { z } from 'zod';
import { JobActiveError, NotFoundError } from '../../db/errors.js';
import { createJob, getJob, listJobs, updateJob, type Job } from '../../db/queries/jobs.js';
import { type StaleUser, staleUsers } from '../../db/queries/staleness.js';
import type { JsonObject } from '../../db/schema.js';
import { listTrialsForUser } from '../../db/queries/trials.js';
import { userExists } from '../../db/queries/users.js';
import { frontSvg } from '../../inject/front-plot.js';
import { type JobWatchEvent, watchJob } from '../../inject/job-watch.js';
import { chosenRule, isOk, paretoTrials } from '../../inject/search/index.js';
import { type StoredTrial, rowToTrial } from '../../inject/trial-store.js';
import type { AppEnv, RouteDeps } from '../context.js';
import { ApiError } from '../errors.js';
import { DEFAULT_MAX_FAILURES, injectBody, listJobsQuery, staleInjectBody, staleInjectResultSchema, staleUsersQuery, trialsQuery } from '../schemas.js';
import { iso, jobJson } from '../serialize.js';
import { parseQuery, readJson, userIdParam } from '../validate.js';
import { clientSignal } from './generate.js';
import { userNotFound } from './users.js';

/** How often an event stream re-reads the job while following it. */
const EVENTS_POLL_MS = 250;

function trialJson(t: StoredTrial) {
  return {
    jobId: t.jobId,
    index: t.index,
    config: { layers: t.config.layers, n: t.config.n, r: t.config.r },
    key: t.key,
    phase: t.phase,
    status: t.status,
    valLoss: t.loss,
    valRougeL: t.rougeL,
    cost: t.cost ?? {},
    durationMs: t.durationMs,
    error: t.error ?? null,
    adapterKept: t.adapter !== null,
    startedAt: t.startedAt,
  };
}

function eventData(e: JobWatchEvent): unknown {
  switch (e.type) {
    case 'state':
      return { job: jobJson(e.job) };
    case 'progress':
      return { jobId: e.job.id, state: e.job.state, progress: e.job.progress ?? null, updatedAt: iso(e.job.updatedAt) };
    case 'trial':
      return { trial: trialJson(e.trial) };
    case 'done':
      return { job: jobJson(e.job), reason: e.reason };
  }
}

function staleJson(u: StaleUser) {
  return {
    ...u,
    lastInjection: u.lastInjection && { ...u.lastInjection, finishedAt: iso(u.lastInjection.finishedAt) },
    failures: u.failures && { ...u.failures, lastFinishedAt: iso(u.failures.lastFinishedAt) },
  };
}

function jobNotFound(jobId: string): ApiError {
  return new ApiError(404, 'job_not_found', `job ${JSON.stringify(jobId.slice(0, 200))} not found`, { jobId: jobId.slice(0, 200) });
}

export function registerAdminRoutes(app: Hono<AppEnv>, deps: RouteDeps): void {
  const { db, config, services, logger } = deps;

  app.post('/v1/admin/users/:userId/inject', async (c) => {
    const userId = userIdParam(c);
    const body = await readJson(c, injectBody, config.bodyLimitBytes, {});
    if (!userExists(db, userId)) throw userNotFound(userId);
    // createJob throws JobActiveError (-> 409 job_active with the active job's id) when one is queued/running.
    const job = await startJob(userId, body);
    c.header('location', `/v1/admin/jobs/${job.id}`);
    return c.json(jobJson(job), 202);
  });

  /** A queued injection job of the user, handed to the runner (if any). */
  const startJob = async (userId: string, params: JsonObject): Promise<Job> => {
    const job = createJob(db, { userId, params });
    if (services.jobs) {
      try {
        await services.jobs.enqueue(job);
      } catch (err) {
        // The row is durable and queued; a runner picks it up on its next start.
        logger.error('job enqueue failed', { jobId: job.id, err: String(err) });
      }
    }
    return job;
  };

  app.get('/v1/admin/stale-users', (c) => {
    const q = parseQuery(c, staleUsersQuery);
    const minNewItems = q.minNewItems ?? 1;
    const stale = staleUsers(db, { minNewItems, limit: q.limit ?? 100 });
    return c.json({ minNewItems, total: stale.total, items: stale.items.map(staleJson) });
  });

  app.post('/v1/admin/stale-users/inject', async (c) => {
    const body = await readJson(c, staleInjectBody, config.bodyLimitBytes, {});
    const minNewItems = body.minNewItems ?? 1;
    const maxFailures = body.maxFailures ?? DEFAULT_MAX_FAILURES;
    const stale = staleUsers(db, { minNewItems, limit: body.limit ?? 100 });
    const queued: Array<{ userId: string; newItems: number; jobId: string }> = [];
    const skipped: z.infer<typeof staleInjectResultSchema>['skipped'] = [];
    for (const { userId, newItems, activeJobId, failures } of stale.items) {
      if (activeJobId !== null) {
        skipped.push({ userId, newItems, reason: 'active', activeJobId });
        continue;
      }
      if (failures && failures.count >= maxFailures) {
        skipped.push({ userId, newItems, reason: 'failing', failures: failures.count, lastJobId: failures.lastJobId });
        continue;
      }
      try {
        queued.push({ userId, newItems, jobId: (await startJob(userId, body.params ?? {})).id });
      } catch (e) {
        // A job started (or the user was erased) since the list was read.
        if (e instanceof JobActiveError) skipped.push({ userId, newItems, reason: 'active', activeJobId: e.jobId });
        else if (!(e instanceof NotFoundError)) throw e;
      }
    }
    return c.json({ minNewItems, maxFailures, total: stale.total, queued, skipped }, 202);
  });

  app.get('/v1/admin/jobs', (c) => {
    const q = parseQuery(c, listJobsQuery);
    const page = listJobs(db, q);
    return c.json({ items: page.items.map(jobJson), nextCursor: page.nextCursor });
  });

  app.get('/v1/admin/jobs/:jobId', (c) => {
    const jobId = c.req.param('jobId');
    const job = getJob(db, jobId);
    if (!job) throw jobNotFound(jobId);
    return c.json(jobJson(job));
  });

  app.post('/v1/admin/jobs/:jobId/cancel', async (c) => {
    const jobId = c.req.param('jobId');
    // Two rounds at most: a queued job may start running between the read and the compare-and-set.
    for (let round = 0; round < 2; round++) {
      const job = getJob(db, jobId);
      if (!job) throw jobNotFound(jobId);
      let done: Job | undefined;
      if (job.state === 'queued') {
        done = updateJob(db, jobId, { state: 'cancelled', finishedAt: Date.now() }, { fromStates: ['queued'] });
      } else if (job.state === 'running') {
        if (services.jobs) {
          const now = await services.jobs.cancel(jobId);
          return c.json(jobJson(now), now.state === 'running' ? 202 : 200);
        }
        // No runner in this process: nothing is executing the job, so it can be closed here.
        done = updateJob(db, jobId, { state: 'cancelled', finishedAt: Date.now() }, { fromStates: ['running'] });
      } else {
        throw new ApiError(409, 'job_finished', `job ${jobId} already finished (${job.state})`, { jobId, state: job.state });
      }
      if (done) return c.json(jobJson(done), 200);
    }
    throw new ApiError(409, 'job_active', `job ${jobId} changed state while cancelling; retry`, { jobId });
  });

  app.get('/v1/admin/jobs/:jobId/events', (c) => {
    const jobId = c.req.param('jobId');
    if (!getJob(db, jobId)) throw jobNotFound(jobId);
    const ac = clientSignal(c);
    // Without a runner in this process (or while shutting down) nothing here would move the job on:
    // the stream replays the job as it is and ends.
    const follow = () => services.jobs !== undefined && !deps.lifecycle.draining;
    return streamSSE(c, async (sse) => {
      sse.onAbort(() => ac.abort(new Error('client disconnected')));
      for await (const e of watchJob(db, jobId, { intervalMs: EVENTS_POLL_MS, signal: ac.signal, follow })) {
        await sse.writeSSE({ event: e.type, data: JSON.stringify(eventData(e)) });
      }
    });
  });

  app.get('/v1/admin/users/:userId/trials', (c) => {
    const userId = userIdParam(c);
    const q = parseQuery(c, trialsQuery);
    if (!userExists(db, userId)) throw userNotFound(userId);
    if (q.jobId !== undefined) {
      const job = getJob(db, q.jobId);
      if (!job || job.userId !== userId) throw jobNotFound(q.jobId);
    }
    const all = listTrialsForUser(db, userId).map(rowToTrial);
    const listed = q.jobId === undefined ? all : all.filter((t) => t.jobId === q.jobId);
    // Trials of different jobs were scored on different validation splits: one job's front at a time.
    const frontJobId = q.jobId ?? listed.filter(isOk).at(-1)?.jobId ?? null;
    const ofFront = listed.filter((t) => t.jobId === frontJobId);
    const front = paretoTrials(ofFront) as StoredTrial[];
    if (q.format === 'svg') {
      const title = frontJobId ? `MiLP search of ${userId}, job ${frontJobId}` : `MiLP search of ${userId}: no trials yet`;
      return c.body(frontSvg(ofFront, title), 200, { 'content-type': 'image/svg+xml; charset=utf-8' });
    }
    return c.json({ userId, frontJobId, trials: listed.map(trialJson), front: front.map(trialJson), chosenRule: chosenRule() });
  });
}
