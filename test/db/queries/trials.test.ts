import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createJob, type Job } from '../../../src/db/queries/jobs.js';
import { createTrial, getTrial, listTrialsForJob, listTrialsForUser, updateTrial } from '../../../src/db/queries/trials.js';
import { createUser } from '../../../src/db/queries/users.js';
import { tempDb } from '../helpers.js';

let t: ReturnType<typeof tempDb>;
let job: Job;
beforeEach(() => {
  t = tempDb();
  createUser(t.db, { id: 'alice' });
  job = createJob(t.db, { userId: 'alice', params: {} });
});
afterEach(() => t.cleanup());

describe('trials', () => {
  it('stores one row per (job, idx) and updates it', () => {
    const tr = createTrial(t.db, { jobId: job.id, userId: 'alice', idx: 0, config: { n: 2, rank: 8 }, status: 'running' }, 10);
    expect(tr).toMatchObject({ idx: 0, config: { n: 2, rank: 8 }, status: 'running', objectives: null, cost: null, adapterPath: null, createdAt: 10 });
    expect(() => createTrial(t.db, { jobId: job.id, userId: 'alice', idx: 0, config: {}, status: 'running' })).toThrow(/UNIQUE/);
    const done = updateTrial(t.db, job.id, 0, { status: 'completed', objectives: { valLoss: 2.5 }, cost: { seconds: 3 }, adapterPath: 'trials/0' });
    expect(done).toMatchObject({ status: 'completed', objectives: { valLoss: 2.5 }, cost: { seconds: 3 }, adapterPath: 'trials/0' });
    expect(getTrial(t.db, job.id, 0)).toEqual(done);
    expect(updateTrial(t.db, job.id, 9, { status: 'x' })).toBeUndefined();
  });

  it('lists by job in idx order and by user', () => {
    for (const idx of [2, 0, 1]) createTrial(t.db, { jobId: job.id, userId: 'alice', idx, config: { idx }, status: 'completed' });
    expect(listTrialsForJob(t.db, job.id).map((r) => r.idx)).toEqual([0, 1, 2]);
    expect(listTrialsForUser(t.db, 'alice').map((r) => r.idx)).toEqual([2, 0, 1]);
  });
});
