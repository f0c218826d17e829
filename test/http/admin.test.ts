import { afterEach, describe, expect, it } from 'vitest';
import { getJob, updateJob, type Job } from '../../src/db/queries/jobs.js';
import { tokenMatches } from '../../src/http/auth.js';
import { createApp } from '../../src/http/app.js';
import { jobPageSchema, jobSchema } from '../../src/http/schemas.js';
import type { JobService } from '../../src/http/services.js';
import { ADMIN_TOKEN, expectError, json, makeHarness, type Harness } from './helpers.js';

let h: Harness;
afterEach(() => h?.cleanup());

describe('admin auth', () => {
  it('refuses missing, malformed and wrong tokens with 401 unauthorized', async () => {
    h = makeHarness();
    await h.req('PUT', '/v1/users/alice');
    const attempts: Array<Record<string, string>> = [
      {},
      { authorization: ADMIN_TOKEN },
      { authorization: `Basic ${ADMIN_TOKEN}` },
      { authorization: 'Bearer ' },
      { authorization: `Bearer ${ADMIN_TOKEN}x` },
      { authorization: `Bearer ${ADMIN_TOKEN.slice(0, -1)}` },
      { authorization: `Bearer ${ADMIN_TOKEN.toUpperCase()}` },
      { authorization: `Bearer ${ADMIN_TOKEN} extra` },
    ];
    for (const headers of attempts) {
      const res = await h.req('GET', '/v1/admin/jobs', undefined, headers);
      expect(res.headers.get('www-authenticate')).toMatch(/^Bearer/);
      await expectError(res, 401, 'unauthorized');
      await expectError(await h.req('POST', '/v1/admin/users/alice/inject', {}, headers), 401, 'unauthorized');
    }
    // Unknown admin paths do not reveal whether they exist.
    await expectError(await h.req('GET', '/v1/admin/secret'), 401, 'unauthorized');
    expect((await h.admin('GET', '/v1/admin/jobs')).status).toBe(200);
    expect((await h.req('GET', '/v1/admin/jobs', undefined, { authorization: `bearer ${ADMIN_TOKEN}` })).status).toBe(200);
    expect(h.db.sqlite.prepare('SELECT count(*) AS n FROM injection_jobs').get()).toEqual({ n: 0 });
  });

  it('refuses every token when none is configured', async () => {
    h = makeHarness();
    const app = createApp({ config: { ...h.config, adminToken: null }, db: h.db, services: { adapterFiles: { removeUserAdapters: async () => ({ files: 0, bytes: 0 }) } }, logger: h.logger });
    for (const auth of ['', 'Bearer ', 'Bearer null', 'Bearer undefined', `Bearer ${ADMIN_TOKEN}`]) {
      await expectError(await app.request('/v1/admin/jobs', { headers: auth ? { authorization: auth } : {} }), 401, 'unauthorized');
    }
  });

  it('compares tokens exactly', () => {
    expect(tokenMatches('abc', 'abc')).toBe(true);
    expect(tokenMatches('abc', 'abd')).toBe(false);
    expect(tokenMatches('abc', 'abcd')).toBe(false);
    expect(tokenMatches('', 'abc')).toBe(false);
  });
});

describe('POST /v1/admin/users/{userId}/inject', () => {
  it('creates a queued job (202, Location), then 409 job_active with its id', async () => {
    h = makeHarness();
    await h.req('PUT', '/v1/users/alice');
    const res = await h.admin('POST', '/v1/admin/users/alice/inject', { budget: 12, initialPoints: 4, seed: 3, force: true });
    expect(res.status).toBe(202);
    const job = jobSchema.parse(await json(res));
    expect(job).toMatchObject({ userId: 'alice', state: 'queued', params: { budget: 12, initialPoints: 4, seed: 3, force: true }, startedAt: null });
    expect(res.headers.get('location')).toBe(`/v1/admin/jobs/${job.id}`);

    const second = await expectError(await h.admin('POST', '/v1/admin/users/alice/inject', {}), 409, 'job_active');
    expect(second.details).toEqual({ jobId: job.id, state: 'queued' });
    updateJob(h.db, job.id, { state: 'running' });
    expect((await expectError(await h.admin('POST', '/v1/admin/users/alice/inject'), 409, 'job_active')).details.jobId).toBe(job.id);
    updateJob(h.db, job.id, { state: 'succeeded' });
    expect((await h.admin('POST', '/v1/admin/users/alice/inject')).status).toBe(202);
  });

  it('lets only one of many concurrent requests create a job', async () => {
    h = makeHarness();
    await h.req('PUT', '/v1/users/alice');
    const statuses = (await Promise.all(Array.from({ length: 8 }, () => h.admin('POST', '/v1/admin/users/alice/inject')))).map((r) => r.status);
    expect(statuses.filter((s) => s === 202)).toHaveLength(1);
    expect(statuses.filter((s) => s === 409)).toHaveLength(7);
  });

  it('validates the body, the user id and the user', async () => {
    h = makeHarness();
    await h.req('PUT', '/v1/users/alice');
    for (const body of [{ budget: 0 }, { budget: 2.5 }, { budget: 4, initialPoints: 5 }, { seed: 'x' }, { force: 1 }, { extra: true }, []]) {
      await expectError(await h.admin('POST', '/v1/admin/users/alice/inject', body), 422, 'validation_failed');
    }
    await expectError(await h.admin('POST', '/v1/admin/users/alice/inject', '{bad'), 400, 'invalid_json');
    await expectError(await h.admin('POST', '/v1/admin/users/bob/inject', {}), 404, 'user_not_found');
    await expectError(await h.admin('POST', '/v1/admin/users/b%2Fob/inject', {}), 422, 'invalid_user_id');
    expect(h.db.sqlite.prepare('SELECT count(*) AS n FROM injection_jobs').get()).toEqual({ n: 0 });
  });

  it('hands the new job to the JobService, and still answers 202 if enqueue fails', async () => {
    const enqueued: Job[] = [];
    let fail = false;
    const jobs: JobService = {
      enqueue: (job) => {
        if (fail) throw new Error('runner offline');
        enqueued.push(job);
      },
      cancel: async (id) => getJob(h.db, id)!,
    };
    h = makeHarness({ services: { jobs } });
    await h.req('PUT', '/v1/users/alice');
    await h.req('PUT', '/v1/users/bob');
    const job = await json(await h.admin('POST', '/v1/admin/users/alice/inject'));
    expect(enqueued.map((j) => j.id)).toEqual([job.id]);
    fail = true;
    expect((await h.admin('POST', '/v1/admin/users/bob/inject')).status).toBe(202);
    expect(h.logger.lines.some((l) => l.level === 'error' && l.msg === 'job enqueue failed')).toBe(true);
  });
});

describe('GET /v1/admin/jobs and /v1/admin/jobs/{jobId}', () => {
  it('lists newest first with filters and covers every job once across pages', async () => {
    h = makeHarness();
    const ids: string[] = [];
    for (let i = 0; i < 9; i++) {
      await h.req('PUT', `/v1/users/u${i}`);
      const job = await json(await h.admin('POST', `/v1/admin/users/u${i}/inject`));
      if (i % 3 === 0) updateJob(h.db, job.id, { state: 'failed' });
      ids.push(job.id);
    }
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page = jobPageSchema.parse(await json(await h.admin('GET', `/v1/admin/jobs?limit=4${cursor ? `&cursor=${cursor}` : ''}`)));
      seen.push(...page.items.map((j) => j.id));
      cursor = page.nextCursor;
    } while (cursor);
    expect([...seen].sort()).toEqual([...ids].sort());
    expect(new Set(seen).size).toBe(9);
    const failed = jobPageSchema.parse(await json(await h.admin('GET', '/v1/admin/jobs?state=failed')));
    expect(failed.items.map((j) => j.id).sort()).toEqual([ids[0], ids[3], ids[6]].sort());
    const mine = jobPageSchema.parse(await json(await h.admin('GET', '/v1/admin/jobs?userId=u4')));
    expect(mine.items.map((j) => j.id)).toEqual([ids[4]]);
    await expectError(await h.admin('GET', '/v1/admin/jobs?state=paused'), 422, 'validation_failed');
    await expectError(await h.admin('GET', '/v1/admin/jobs?limit=501'), 422, 'validation_failed');
    await expectError(await h.admin('GET', '/v1/admin/jobs?cursor=MTAx'), 422, 'invalid_cursor');
  });

  it('gets one job, 404 job_not_found otherwise', async () => {
    h = makeHarness();
    await h.req('PUT', '/v1/users/alice');
    const job = await json(await h.admin('POST', '/v1/admin/users/alice/inject'));
    expect(jobSchema.parse(await json(await h.admin('GET', `/v1/admin/jobs/${job.id}`)))).toEqual(job);
    await expectError(await h.admin('GET', '/v1/admin/jobs/job_missing'), 404, 'job_not_found');
    await expectError(await h.admin('GET', `/v1/admin/jobs/${'x'.repeat(5000)}`), 404, 'job_not_found');
  });
});

describe('POST /v1/admin/jobs/{jobId}/cancel', () => {
  it('cancels a queued job directly and refuses finished ones with 409 job_finished', async () => {
    h = makeHarness();
    await h.req('PUT', '/v1/users/alice');
    const job = await json(await h.admin('POST', '/v1/admin/users/alice/inject'));
    const res = await h.admin('POST', `/v1/admin/jobs/${job.id}/cancel`);
    expect(res.status).toBe(200);
    const cancelled = jobSchema.parse(await json(res));
    expect(cancelled.state).toBe('cancelled');
    expect(cancelled.finishedAt).not.toBeNull();
    const err = await expectError(await h.admin('POST', `/v1/admin/jobs/${job.id}/cancel`), 409, 'job_finished');
    expect(err.details).toEqual({ jobId: job.id, state: 'cancelled' });
    // The user may inject again.
    expect((await h.admin('POST', '/v1/admin/users/alice/inject')).status).toBe(202);
    await expectError(await h.admin('POST', '/v1/admin/jobs/job_missing/cancel'), 404, 'job_not_found');
  });

  it('closes a running job itself when no runner is wired in', async () => {
    h = makeHarness();
    await h.req('PUT', '/v1/users/alice');
    const job = await json(await h.admin('POST', '/v1/admin/users/alice/inject'));
    updateJob(h.db, job.id, { state: 'running', startedAt: Date.now() });
    const res = await h.admin('POST', `/v1/admin/jobs/${job.id}/cancel`);
    expect(res.status).toBe(200);
    expect((await json(res)).state).toBe('cancelled');
  });

  it('delegates a running job to JobService.cancel: 202 while stopping, 200 once stopped', async () => {
    const asked: string[] = [];
    let stopNow = false;
    const jobs: JobService = {
      enqueue: () => {},
      cancel: async (id) => {
        asked.push(id);
        if (stopNow) return updateJob(h.db, id, { state: 'cancelled', finishedAt: Date.now() })!;
        return updateJob(h.db, id, { progress: { cancelRequested: true } })!;
      },
    };
    h = makeHarness({ services: { jobs } });
    await h.req('PUT', '/v1/users/alice');
    const job = await json(await h.admin('POST', '/v1/admin/users/alice/inject'));
    updateJob(h.db, job.id, { state: 'running' });
    const stopping = await h.admin('POST', `/v1/admin/jobs/${job.id}/cancel`);
    expect(stopping.status).toBe(202);
    expect((await json(stopping)).progress).toEqual({ cancelRequested: true });
    stopNow = true;
    const stopped = await h.admin('POST', `/v1/admin/jobs/${job.id}/cancel`);
    expect(stopped.status).toBe(200);
    expect((await json(stopped)).state).toBe('cancelled');
    expect(asked).toEqual([job.id, job.id]);
  });
});
