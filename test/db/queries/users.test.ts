import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createAdapterVersion } from '../../../src/db/queries/adapters.js';
import { appendHistory } from '../../../src/db/queries/history.js';
import { createJob } from '../../../src/db/queries/jobs.js';
import { createTrial } from '../../../src/db/queries/trials.js';
import { createUser, deleteUser, getUser, listUsers, userExists } from '../../../src/db/queries/users.js';
import { tempDb } from '../helpers.js';

let t: ReturnType<typeof tempDb>;
beforeEach(() => (t = tempDb()));
afterEach(() => t.cleanup());

describe('users', () => {
  it('creates once, then keeps or replaces metadata', () => {
    const a = createUser(t.db, { id: 'alice', metadata: { plan: 'pro' } }, 1000);
    expect(a).toEqual({ created: true, user: { id: 'alice', metadata: { plan: 'pro' }, createdAt: 1000, updatedAt: 1000 } });
    const again = createUser(t.db, { id: 'alice' }, 2000);
    expect(again).toEqual({ created: false, user: a.user });
    const replaced = createUser(t.db, { id: 'alice', metadata: { plan: 'free' } }, 3000);
    expect(replaced.user).toEqual({ id: 'alice', metadata: { plan: 'free' }, createdAt: 1000, updatedAt: 3000 });
    expect(createUser(t.db, { id: 'alice', metadata: null }, 4000).user.metadata).toBeNull();
    expect(getUser(t.db, 'alice')?.updatedAt).toBe(4000);
    expect(getUser(t.db, 'bob')).toBeUndefined();
    expect(userExists(t.db, 'alice')).toBe(true);
  });

  it('lists every user exactly once across pages, in id order', () => {
    const ids = Array.from({ length: 53 }, (_, i) => `u${String(i).padStart(3, '0')}`).reverse();
    for (const id of ids) createUser(t.db, { id });
    const seen: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = listUsers(t.db, { cursor, limit: 10 });
      seen.push(...page.items.map((u) => u.id));
      cursor = page.nextCursor ?? undefined;
      pages += 1;
    } while (cursor);
    expect(pages).toBe(6);
    expect(seen).toEqual([...ids].sort());
  });

  it('deletes a user with counts of everything removed, leaving other users alone', () => {
    createUser(t.db, { id: 'alice' });
    createUser(t.db, { id: 'bob' });
    appendHistory(t.db, 'alice', [{ kind: 'post', text: 'a' }, { kind: 'qa', text: 'b' }]);
    appendHistory(t.db, 'bob', [{ kind: 'post', text: 'c' }]);
    const job = createJob(t.db, { userId: 'alice', params: {} });
    createTrial(t.db, { jobId: job.id, userId: 'alice', idx: 0, config: {}, status: 'completed' });
    createTrial(t.db, { jobId: job.id, userId: 'alice', idx: 1, config: {}, status: 'completed' });
    createAdapterVersion(t.db, { userId: 'alice', config: {}, filePath: 'x', sha256: 'y', metrics: {}, status: 'ready', activate: true });
    expect(deleteUser(t.db, 'alice')).toEqual({ historyItems: 2, jobs: 1, trials: 2, adapterVersions: 1, usageDays: 0, responses: 0, conversations: 0 });
    expect(getUser(t.db, 'alice')).toBeUndefined();
    expect(deleteUser(t.db, 'alice')).toBeUndefined();
    expect(t.db.sqlite.prepare('SELECT count(*) AS n FROM history_items').get()).toEqual({ n: 1 });
  });
});
