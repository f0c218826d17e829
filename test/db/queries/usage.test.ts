import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { getQuota, recordUsage, setQuota, tokensUsed, usageDay, usageDayEnd, userUsage, usersUsage } from '../../../src/db/queries/usage.js';
import { createUser, deleteUser } from '../../../src/db/queries/users.js';
import { tempDb } from '../helpers.js';

let t: ReturnType<typeof tempDb>;
beforeEach(() => (t = tempDb()));
afterEach(() => t.cleanup());

const at = (iso: string) => Date.parse(iso);
const req = (promptTokens: number, completionTokens: number, extra: { cachedTokens?: number; scoredTokens?: number } = {}) => ({ promptTokens, completionTokens, cachedTokens: 0, scoredTokens: 0, ...extra });

describe('usage', () => {
  it('adds each request to its user\'s row of the UTC day and sums a range', () => {
    createUser(t.db, { id: 'alice' });
    expect(recordUsage(t.db, 'alice', req(10, 5, { cachedTokens: 4 }), at('2026-12-06T23:59:59.999Z'))).toBe(true);
    expect(recordUsage(t.db, 'alice', req(7, 3), at('2026-12-06T00:00:00Z'))).toBe(true);
    expect(recordUsage(t.db, 'alice', req(20, 0, { scoredTokens: 9 }), at('2026-12-07T00:00:00Z'))).toBe(true);
    expect(usageDay(at('2026-12-06T23:59:59.999Z'))).toBe('2026-12-06');
    const u = userUsage(t.db, 'alice', '2026-12-01', '2026-12-31');
    expect(u.days).toEqual([
      { day: '2026-12-06', requests: 2, promptTokens: 17, cachedTokens: 4, completionTokens: 8, scoredTokens: 0 },
      { day: '2026-12-07', requests: 1, promptTokens: 20, cachedTokens: 0, completionTokens: 0, scoredTokens: 9 },
    ]);
    expect(u.total).toEqual({ requests: 3, promptTokens: 37, cachedTokens: 4, completionTokens: 8, scoredTokens: 9 });
    expect(userUsage(t.db, 'alice', '2026-12-07', '2026-12-07').total.requests).toBe(1);
    expect(userUsage(t.db, 'alice', '2026-11-01', '2026-11-30')).toEqual({ days: [], total: { requests: 0, promptTokens: 0, cachedTokens: 0, completionTokens: 0, scoredTokens: 0 } });
  });

  it('sums each user over a range of days, most tokens first, with the count and the sum; an erased user writes nothing and leaves no rows', () => {
    for (const id of ['ann', 'bob', 'cy']) createUser(t.db, { id });
    const day = at('2026-12-07T12:00:00Z');
    recordUsage(t.db, 'ann', req(5, 5), day);
    recordUsage(t.db, 'bob', req(50, 10), day);
    recordUsage(t.db, 'cy', req(1, 1, { scoredTokens: 30 }), day);
    recordUsage(t.db, 'cy', req(40, 1), at('2026-12-08T00:00:00Z'));
    const d = usersUsage(t.db, '2026-12-07', '2026-12-07', 2);
    expect(d.users.map((u) => u.userId)).toEqual(['bob', 'cy']);
    expect(d.usersTotal).toBe(3);
    expect(d.total).toEqual({ requests: 3, promptTokens: 56, cachedTokens: 0, completionTokens: 16, scoredTokens: 30 });
    // Over both days cy's two rows add up, and cy comes first.
    const both = usersUsage(t.db, '2026-12-01', '2026-12-31', 10);
    expect(both.users[0]).toEqual({ userId: 'cy', requests: 2, promptTokens: 41, cachedTokens: 0, completionTokens: 2, scoredTokens: 30 });
    expect(both).toMatchObject({ usersTotal: 3, total: { requests: 4 } });
    expect(usersUsage(t.db, '2026-01-01', '2026-01-31', 10)).toEqual({ users: [], usersTotal: 0, total: { requests: 0, promptTokens: 0, cachedTokens: 0, completionTokens: 0, scoredTokens: 0 } });
    expect(deleteUser(t.db, 'cy')?.usageDays).toBe(2);
    expect(usersUsage(t.db, '2026-12-08', '2026-12-08', 10).usersTotal).toBe(0);
    expect(recordUsage(t.db, 'cy', req(1, 1), day)).toBe(false);
    expect(recordUsage(t.db, 'nobody', req(1, 1), day)).toBe(false);
    expect(usersUsage(t.db, '2026-12-07', '2026-12-07', 10).usersTotal).toBe(2);
  });
});

describe('quotas', () => {
  it('keeps a user\'s own quota (0 included) until removed, counts the day\'s tokens, and knows when the day ends', () => {
    createUser(t.db, { id: 'alice' });
    expect(getQuota(t.db, 'alice')).toBeNull();
    setQuota(t.db, 'alice', 500);
    setQuota(t.db, 'alice', 0);
    expect(getQuota(t.db, 'alice')).toBe(0);
    setQuota(t.db, 'alice', null);
    expect(getQuota(t.db, 'alice')).toBeNull();
    recordUsage(t.db, 'alice', req(10, 5, { scoredTokens: 2, cachedTokens: 7 }), at('2026-12-07T10:00:00Z'));
    expect(tokensUsed(t.db, 'alice', '2026-12-07')).toBe(17); // cached tokens are part of the prompt's, not counted twice
    expect(tokensUsed(t.db, 'alice', '2026-12-08')).toBe(0);
    expect(usageDayEnd(at('2026-12-07T10:00:00Z'))).toBe(at('2026-12-08T00:00:00Z'));
    expect(usageDayEnd(at('2026-12-31T23:59:59.999Z'))).toBe(at('2027-01-01T00:00:00Z'));
    setQuota(t.db, 'alice', 9);
    deleteUser(t.db, 'alice');
    expect(getQuota(t.db, 'alice')).toBeNull();
  });
});
