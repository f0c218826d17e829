/** GET /v1/admin/stale-users and POST /v1/admin/stale-users/inject through the real app and a real SQLite file. */
import { afterEach, describe, expect, it } from 'vitest';
import { getJob, updateJob, type Job } from '../../src/db/queries/jobs.js';
import { staleInjectResultSchema, staleUsersSchema } from '../../src/http/schemas.js';
import type { JobService } from '../../src/http/services.js';
import { expectError, json, makeHarness, type Harness } from './helpers.js';

let h: Harness;
afterEach(() => h?.cleanup());

/** A user with `n` posts, through the API; the ids of the items. */
async function userWith(id: string, n: number): Promise<number[]> {
  await h.req('PUT', `/v1/users/${id}`);
  const items = Array.from({ length: n }, (_, i) => ({ kind: 'post', text: `${id} says ${i}` }));
  return ((await json(await h.req('POST', `/v1/users/${id}/history`, { items }))) as { ids: number[] }).ids;
}

describe('stale users', () => {
  it('lists the users whose history outgrew their adapter, stalest first, and re-injects them in bulk (jobs queued with the given params, users with an active job skipped)', async () => {
    const enqueued: Job[] = [];
    const jobs: JobService = { enqueue: (job) => void enqueued.push(job), cancel: async (id) => getJob(h.db, id)! };
    h = makeHarness({ services: { jobs } });
    await userWith('alice', 3); // never injected
    const bob = await userWith('bob', 5);
    // bob's last job read his first two items and succeeded.
    const bobJob = await json(await h.admin('POST', '/v1/admin/users/bob/inject'));
    updateJob(h.db, bobJob.id, { state: 'succeeded', finishedAt: Date.parse('2026-12-01T02:00:00Z'), progress: { phase: 'succeeded', data: { historyUpTo: bob[1] } } });
    await userWith('carol', 8);
    const carolJob = await json(await h.admin('POST', '/v1/admin/users/carol/inject')); // queued
    await userWith('dave', 1);

    const list = staleUsersSchema.parse(await json(await h.admin('GET', '/v1/admin/stale-users?minNewItems=2')));
    expect(list).toEqual({
      minNewItems: 2,
      total: 3,
      items: [
        { userId: 'carol', newItems: 8, historyItems: 8, lastInjection: null, activeJobId: carolJob.id, forgottenItems: 0, failures: null },
        { userId: 'alice', newItems: 3, historyItems: 3, lastInjection: null, activeJobId: null, forgottenItems: 0, failures: null },
        { userId: 'bob', newItems: 3, historyItems: 5, lastInjection: { jobId: bobJob.id, state: 'succeeded', finishedAt: '2026-12-01T02:00:00.000Z', historyUpTo: bob[1] }, activeJobId: null, forgottenItems: 0, failures: null },
      ],
    });
    expect((await json(await h.admin('GET', '/v1/admin/stale-users?limit=1'))).items.map((u: { userId: string }) => u.userId)).toEqual(['carol']);

    enqueued.length = 0;
    const res = await h.admin('POST', '/v1/admin/stale-users/inject', { minNewItems: 2, params: { budget: 6 } });
    expect(res.status).toBe(202);
    const done = staleInjectResultSchema.parse(await json(res));
    expect(done.skipped).toEqual([{ userId: 'carol', newItems: 8, reason: 'active', activeJobId: carolJob.id }]);
    expect(done.maxFailures).toBe(3);
    expect(done.queued.map((q) => [q.userId, q.newItems])).toEqual([['alice', 3], ['bob', 3]]);
    expect(done.total).toBe(3);
    // The jobs are real rows, queued with the params, and handed to the runner.
    for (const q of done.queued) expect(getJob(h.db, q.jobId)).toMatchObject({ userId: q.userId, state: 'queued', params: { budget: 6 } });
    expect(enqueued.map((j) => j.id)).toEqual(done.queued.map((q) => q.jobId));
    // dave (1 new item) was below the threshold; a second call finds every stale user busy.
    const again = staleInjectResultSchema.parse(await json(await h.admin('POST', '/v1/admin/stale-users/inject', { minNewItems: 2 })));
    expect(again.queued).toEqual([]);
    expect(again.skipped.map((s) => s.userId)).toEqual(['carol', 'alice', 'bob']);
    expect(h.db.sqlite.prepare("SELECT count(*) AS n FROM injection_jobs WHERE user_id = 'dave'").get()).toEqual({ n: 0 });
  });

  it('counts the jobs that failed since the last injection and leaves users with maxFailures of them out of bulk re-injection, until a job succeeds', async () => {
    h = makeHarness({ services: { jobs: { enqueue: () => undefined, cancel: async (id) => getJob(h.db, id)! } } });
    const erin = await userWith('erin', 4);
    let clock = Date.parse('2026-12-01T00:00:00Z');
    /** Start a job for erin through the API and end it in `state` (a success reads her first `upTo` items). */
    const endJob = async (state: 'failed' | 'cancelled' | 'succeeded', upTo?: number): Promise<string> => {
      const job = await json(await h.admin('POST', '/v1/admin/users/erin/inject'));
      clock += 60_000;
      if (state === 'failed') updateJob(h.db, job.id, { state, finishedAt: clock, error: { code: 'trial_failed', message: `every trial of ${job.id} failed`, details: {} } });
      else if (state === 'cancelled') updateJob(h.db, job.id, { state, finishedAt: clock });
      else updateJob(h.db, job.id, { state, finishedAt: clock, progress: { phase: 'succeeded', data: { historyUpTo: erin[upTo! - 1] } } });
      return job.id;
    };
    const erinListed = async () => staleUsersSchema.parse(await json(await h.admin('GET', '/v1/admin/stale-users'))).items.find((u) => u.userId === 'erin')!;
    const bulk = async (body: object = {}) => staleInjectResultSchema.parse(await json(await h.admin('POST', '/v1/admin/stale-users/inject', body)));

    await endJob('failed');
    await endJob('cancelled'); // an operator's cancel is not a failure
    const second = await endJob('failed');
    expect((await erinListed()).failures).toEqual({ count: 2, lastJobId: second, lastFinishedAt: new Date(clock).toISOString(), lastError: { code: 'trial_failed', message: `every trial of ${second} failed` } });
    // Two failures are below the default of 3: the bulk call queues erin again.
    const third = await bulk();
    expect(third.queued.map((q) => q.userId)).toEqual(['erin']);
    clock += 60_000;
    updateJob(h.db, third.queued[0].jobId, { state: 'failed', finishedAt: clock, error: { code: 'worker_crashed', message: 'the job worker died', details: {} } });
    expect((await erinListed()).failures).toMatchObject({ count: 3, lastJobId: third.queued[0].jobId, lastError: { code: 'worker_crashed' } });
    // Three are not: she is named as failing, and no job is made.
    const jobsBefore = h.db.sqlite.prepare('SELECT count(*) AS n FROM injection_jobs').get();
    expect(await bulk()).toEqual({ minNewItems: 1, maxFailures: 3, total: 1, queued: [], skipped: [{ userId: 'erin', newItems: 4, reason: 'failing', failures: 3, lastJobId: third.queued[0].jobId }] });
    expect(h.db.sqlite.prepare('SELECT count(*) AS n FROM injection_jobs').get()).toEqual(jobsBefore);
    // An operator who wants her retried says so.
    const retried = await bulk({ maxFailures: 4 });
    expect(retried.queued.map((q) => q.userId)).toEqual(['erin']);
    h.db.sqlite.prepare("UPDATE injection_jobs SET state = 'cancelled', finished_at = ? WHERE id = ?").run((clock += 60_000), retried.queued[0].jobId);
    // A success that read her first 3 items starts the count again: earlier failures no longer count.
    await endJob('succeeded', 3);
    expect(await erinListed()).toMatchObject({ newItems: 1, failures: null });
    await endJob('failed');
    expect((await erinListed()).failures?.count).toBe(1);
    expect((await bulk()).queued.map((q) => q.userId)).toEqual(['erin']);
  });

  it('refuses bad queries and bodies with 422, and callers without the admin token with 401, creating nothing', async () => {
    h = makeHarness();
    await userWith('alice', 2);
    for (const q of ['minNewItems=0', 'limit=1001', 'minNewItems=x', 'since=1']) await expectError(await h.admin('GET', `/v1/admin/stale-users?${q}`), 422, 'validation_failed');
    for (const body of [{ minNewItems: 0 }, { limit: 0 }, { params: { budget: 0 } }, { params: { budget: 2, initialPoints: 3 } }, { maxFailures: 0 }, { maxFailures: 1.5 }, { other: 1 }]) {
      await expectError(await h.admin('POST', '/v1/admin/stale-users/inject', body), 422, 'validation_failed');
    }
    await expectError(await h.req('POST', '/v1/admin/stale-users/inject', {}), 401, 'unauthorized');
    await expectError(await h.req('GET', '/v1/admin/stale-users'), 401, 'unauthorized');
    expect(h.db.sqlite.prepare('SELECT count(*) AS n FROM injection_jobs').get()).toEqual({ n: 0 });
    // With no body at all, every user with new history is queued.
    expect((await json(await h.admin('POST', '/v1/admin/stale-users/inject'))).queued).toHaveLength(1);
  });
});
