import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { JobActiveError } from '../../../src/db/errors.js';
import { activeJobForUser, createJob, getJob, jobsInStates, listJobs, newJobId, updateJob } from '../../../src/db/queries/jobs.js';
import { createUser } from '../../../src/db/queries/users.js';
import { tempDb } from '../helpers.js';

let t: ReturnType<typeof tempDb>;
beforeEach(() => {
  t = tempDb();
  createUser(t.db, { id: 'alice' });
  createUser(t.db, { id: 'bob' });
});
afterEach(() => t.cleanup());

describe('jobs', () => {
  it('creates a queued job and refuses a second active one with the first id', () => {
    const job = createJob(t.db, { userId: 'alice', params: { budget: 4 } }, 1000);
    expect(job).toMatchObject({ userId: 'alice', state: 'queued', params: { budget: 4 }, createdAt: 1000, startedAt: null, finishedAt: null });
    expect(getJob(t.db, job.id)).toEqual(job);
    expect(activeJobForUser(t.db, 'alice')?.id).toBe(job.id);
    let err: unknown;
    try {
      createJob(t.db, { userId: 'alice', params: {} });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(JobActiveError);
    expect(err).toMatchObject({ code: 'job_active', jobId: job.id, state: 'queued' });
    // Another user is independent.
    expect(createJob(t.db, { userId: 'bob', params: {} }).state).toBe('queued');
    expect(() => createJob(t.db, { userId: 'nobody', params: {} })).toThrow(expect.objectContaining({ code: 'user_not_found' }));
  });

  it('updates with compare-and-set on the state', () => {
    const job = createJob(t.db, { userId: 'alice', params: {} }, 1000);
    const running = updateJob(t.db, job.id, { state: 'running', startedAt: 1100 }, { fromStates: ['queued'] }, 1100);
    expect(running).toMatchObject({ state: 'running', startedAt: 1100, updatedAt: 1100 });
    // A cancel that expects "queued" loses the race.
    expect(updateJob(t.db, job.id, { state: 'cancelled' }, { fromStates: ['queued'] })).toBeUndefined();
    const done = updateJob(t.db, job.id, { state: 'succeeded', finishedAt: 1200, result: { adapterVersion: 1 }, progress: { trial: 3 } }, { fromStates: ['running'] }, 1200);
    expect(done).toMatchObject({ state: 'succeeded', result: { adapterVersion: 1 }, progress: { trial: 3 }, finishedAt: 1200 });
    expect(activeJobForUser(t.db, 'alice')).toBeUndefined();
    expect(createJob(t.db, { userId: 'alice', params: {} }).state).toBe('queued');
    expect(updateJob(t.db, 'job_missing', { state: 'failed' })).toBeUndefined();
  });

  it('lists newest first with filters, each job once across pages', () => {
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) {
      const user = i % 2 ? 'alice' : 'bob';
      // Several jobs share a timestamp, so the cursor must break ties by id.
      const job = createJob(t.db, { userId: user, params: { i } }, 1000 + Math.floor(i / 3));
      updateJob(t.db, job.id, { state: i % 4 === 0 ? 'failed' : 'succeeded' });
      ids.push(job.id);
    }
    const seen: string[] = [];
    let cursor: string | undefined;
    do {
      const page = listJobs(t.db, { cursor, limit: 5 });
      seen.push(...page.items.map((j) => j.id));
      cursor = page.nextCursor ?? undefined;
    } while (cursor);
    expect(new Set(seen).size).toBe(12);
    const created = seen.map((id) => getJob(t.db, id)!.createdAt);
    expect([...created].sort((a, b) => b - a)).toEqual(created);
    expect(listJobs(t.db, { userId: 'alice', limit: 100 }).items.every((j) => j.userId === 'alice')).toBe(true);
    expect(listJobs(t.db, { state: 'failed', limit: 100 }).items).toHaveLength(3);
    expect(jobsInStates(t.db, ['queued', 'running'])).toEqual([]);
  });

  it('makes ids that sort by creation time', () => {
    expect(newJobId(1000) < newJobId(2000)).toBe(true);
    expect(newJobId()).toMatch(/^job_[a-z0-9]{26}$/);
  });
});
