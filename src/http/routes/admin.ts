/** /v1/admin: inject (create a job), list and read jobs, cancel. The runner itself is a JobService. */
import type { Hono } from 'hono';
import { createJob, getJob, listJobs, updateJob, type Job } from '../../db/queries/jobs.js';
import { userExists } from '../../db/queries/users.js';
import type { AppEnv, RouteDeps } from '../context.js';
import { ApiError } from '../errors.js';
import { injectBody, listJobsQuery } from '../schemas.js';
import { jobJson } from '../serialize.js';
import { parseQuery, readJson, userIdParam } from '../validate.js';
import { userNotFound } from './users.js';

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
    const job = createJob(db, { userId, params: body });
    if (services.jobs) {
      try {
        await services.jobs.enqueue(job);
      } catch (err) {
        // The row is durable and queued; a runner picks it up on its next start.
        logger.error('job enqueue failed', { jobId: job.id, err: String(err) });
      }
    }
    c.header('location', `/v1/admin/jobs/${job.id}`);
    return c.json(jobJson(job), 202);
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
}
