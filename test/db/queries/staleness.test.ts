import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { JsonObject } from '../../../src/db/schema.js';
import { appendHistory } from '../../../src/db/queries/history.js';
import { createJob, updateJob } from '../../../src/db/queries/jobs.js';
import { staleUsers } from '../../../src/db/queries/staleness.js';
import { createUser } from '../../../src/db/queries/users.js';
import { tempDb } from '../helpers.js';

let t: ReturnType<typeof tempDb>;
beforeEach(() => (t = tempDb()));
afterEach(() => t.cleanup());

/** A user with `n` posts; their ids. */
function userWith(id: string, n: number): number[] {
  createUser(t.db, { id });
  return n === 0 ? [] : appendHistory(t.db, id, Array.from({ length: n }, (_, i) => ({ kind: 'post' as const, text: `${id} post ${i}` }))).map((h) => h.id);
}

/** A job of the user that ended in `state` at `finishedAt`, having read the history up to `upTo` (undefined: it never got that far). */
function jobOf(userId: string, state: 'succeeded' | 'rejected' | 'failed' | 'cancelled' | 'running', finishedAt: number, upTo?: number): string {
  const job = createJob(t.db, { userId, params: {} }, finishedAt - 10);
  const progress: JsonObject = upTo === undefined ? { phase: 'data' } : { phase: 'search', data: { historyUpTo: upTo, train: 3, val: 1, test: 1 } };
  updateJob(t.db, job.id, { state, progress, ...(state === 'running' ? {} : { finishedAt }) });
  return job.id;
}

describe('staleUsers', () => {
  it('counts each user\'s history past the last finished injection that read it (all of it if none did), most first', () => {
    userWith('alice', 5); // never injected
    const bob = userWith('bob', 6);
    const bobJob = jobOf('bob', 'succeeded', 2000, bob[3]); // saw 4 of 6
    const bobFailed = jobOf('bob', 'failed', 3000, bob[5]); // failed: what it read does not count, the failure does (it has no error recorded)
    const bobActive = jobOf('bob', 'running', 4000, bob[5]);
    const carol = userWith('carol', 3);
    const carolJob = jobOf('carol', 'rejected', 2500, carol[2]); // the gate rejected an adapter of all of it
    userWith('dave', 0);
    const erin = userWith('erin', 7);
    jobOf('erin', 'succeeded', 1000, erin[1]);
    const erinJob = jobOf('erin', 'succeeded', 5000, erin[3]); // the latest one counts: 3 new
    jobOf('erin', 'cancelled', 6000); // cancelled before reading anything
    userWith('frank', 2);
    jobOf('frank', 'succeeded', 1500); // no historyUpTo recorded: as if never injected

    const all = staleUsers(t.db, { minNewItems: 1, limit: 100 });
    expect(all.total).toBe(4);
    expect(all.items).toEqual([
      { userId: 'alice', newItems: 5, historyItems: 5, lastInjection: null, activeJobId: null, forgottenItems: 0, failures: null },
      { userId: 'erin', newItems: 3, historyItems: 7, lastInjection: { jobId: erinJob, state: 'succeeded', finishedAt: 5000, historyUpTo: erin[3] }, activeJobId: null, forgottenItems: 0, failures: null },
      {
        userId: 'bob',
        newItems: 2,
        historyItems: 6,
        lastInjection: { jobId: bobJob, state: 'succeeded', finishedAt: 2000, historyUpTo: bob[3] },
        activeJobId: bobActive,
        forgottenItems: 0,
        failures: { count: 1, lastJobId: bobFailed, lastFinishedAt: 3000, lastError: { code: 'internal', message: '' } },
      },
      { userId: 'frank', newItems: 2, historyItems: 2, lastInjection: null, activeJobId: null, forgottenItems: 0, failures: null },
    ]);
    // carol's history was all read (by a rejected job), dave has none.
    expect(all.items.map((u) => u.userId)).not.toContain('carol');
    // A threshold, and a limit (total still counts every stale user).
    expect(staleUsers(t.db, { minNewItems: 3, limit: 100 }).items.map((u) => u.userId)).toEqual(['alice', 'erin']);
    expect(staleUsers(t.db, { minNewItems: 1, limit: 2 })).toMatchObject({ total: 4, items: [{ userId: 'alice' }, { userId: 'erin' }] });
    // New history makes carol stale.
    appendHistory(t.db, 'carol', [{ kind: 'post', text: 'more' }]);
    expect(staleUsers(t.db, { minNewItems: 1, limit: 100 }).items.find((u) => u.userId === 'carol')).toMatchObject({ newItems: 1, historyItems: 4, lastInjection: { jobId: carolJob, state: 'rejected' } });
  });
});
