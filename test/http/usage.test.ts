/** Metering through the real app and a real SQLite file: the admin routes over rows the engine would have recorded. */
import { afterEach, describe, expect, it } from 'vitest';
import { getQuota, recordUsage, usageDay, usageDayEnd } from '../../src/db/queries/usage.js';
import { quotaSchema, userUsageSchema, usersUsageSchema } from '../../src/http/schemas.js';
import { expectError, json, makeHarness, type Harness } from './helpers.js';
import { fakeGenerate } from './fake-generate.js';

let h: Harness;
afterEach(() => h?.cleanup());

const tokens = (promptTokens: number, completionTokens: number, scoredTokens = 0) => ({ promptTokens, completionTokens, cachedTokens: 0, scoredTokens });

describe('GET /v1/admin/users/{userId}/usage and /v1/admin/usage/users', () => {
  it('answers a user\'s days in a range (default: the last 30 days to today), and a day\'s users by tokens', async () => {
    h = makeHarness();
    for (const id of ['alice', 'bob']) await h.req('PUT', `/v1/users/${id}`);
    const now = Date.now();
    const today = usageDay(now);
    recordUsage(h.db, 'alice', tokens(10, 4), now);
    recordUsage(h.db, 'alice', tokens(6, 2, 3), now);
    recordUsage(h.db, 'alice', tokens(100, 100), now - 40 * 86_400_000); // outside the default range
    recordUsage(h.db, 'bob', tokens(50, 50), now);
    const res = await h.admin('GET', '/v1/admin/users/alice/usage');
    expect(res.status).toBe(200);
    const u = userUsageSchema.parse(await json(res));
    expect(u.to).toBe(today);
    expect(u.from).toBe(usageDay(now - 29 * 86_400_000));
    expect(u.days).toEqual([{ day: today, requests: 2, promptTokens: 16, cachedTokens: 0, completionTokens: 6, scoredTokens: 3 }]);
    const wide = userUsageSchema.parse(await json(await h.admin('GET', `/v1/admin/users/alice/usage?from=${usageDay(now - 60 * 86_400_000)}&to=${today}`)));
    expect(wide.total).toEqual({ requests: 3, promptTokens: 116, cachedTokens: 0, completionTokens: 106, scoredTokens: 3 });
    const svg = await h.admin('GET', '/v1/admin/users/alice/usage?format=svg');
    expect(svg.headers.get('content-type')).toMatch(/^image\/svg\+xml/);
    expect((await svg.text()).match(/<rect [^>]*><title>/g)).toHaveLength(30); // a bar per day of the range
    const day = usersUsageSchema.parse(await json(await h.admin('GET', '/v1/admin/usage/users?limit=1')));
    expect(day).toMatchObject({ from: today, to: today, usersTotal: 2, users: [{ userId: 'bob', requests: 1 }] });
    expect(day.total).toEqual({ requests: 3, promptTokens: 66, cachedTokens: 0, completionTokens: 56, scoredTokens: 3 });
    // A range (a month, for billing) sums each user's days: alice's older day joins in.
    const range = usersUsageSchema.parse(await json(await h.admin('GET', `/v1/admin/usage/users?from=${usageDay(now - 60 * 86_400_000)}&to=${today}`)));
    expect(range.users[0]).toMatchObject({ userId: 'alice', requests: 3, promptTokens: 116 });
    // Erasing a user erases their usage, and says how many days.
    expect((await json(await h.req('DELETE', '/v1/users/alice'))).removed.usageDays).toBe(2);
    expect(usersUsageSchema.parse(await json(await h.admin('GET', '/v1/admin/usage/users'))).usersTotal).toBe(1);
  });

  it('needs the admin token; refuses bad days and ranges with 422, unknown users with 404', async () => {
    h = makeHarness();
    await h.req('PUT', '/v1/users/alice');
    await expectError(await h.req('GET', '/v1/admin/users/alice/usage'), 401, 'unauthorized');
    await expectError(await h.req('GET', '/v1/admin/usage/users'), 401, 'unauthorized');
    for (const q of ['from=2026-02-30', 'to=2026-13-01', 'from=yesterday', 'from=2026-12-08&to=2026-12-07', 'from=2025-01-01&to=2026-12-07', 'format=png', 'extra=1']) {
      await expectError(await h.admin('GET', `/v1/admin/users/alice/usage?${q}`), 422, 'validation_failed');
    }
    for (const q of ['from=2026-1-1', 'day=2026-12-07', 'limit=0', 'limit=1001', 'from=2026-12-08&to=2026-12-07']) await expectError(await h.admin('GET', `/v1/admin/usage/users?${q}`), 422, 'validation_failed');
    await expectError(await h.admin('GET', '/v1/admin/users/nobody/usage'), 404, 'user_not_found');
    // A leap day exists in 2028.
    expect((await h.admin('GET', '/v1/admin/users/alice/usage?from=2028-02-29&to=2028-03-01')).status).toBe(200);
  });
});

describe('GET and PUT /v1/admin/users/{userId}/quota', () => {
  it('sets a user\'s own quota over the server\'s, reports today\'s standing, and removes it with null', async () => {
    // The engine's holds of alice's unfinished requests, as the service reports them.
    const held = new Map([['alice', 160]]);
    h = makeHarness({ env: { MEMLORA_USER_DAILY_TOKENS: '1000' }, services: { generate: { ...fakeGenerate(), heldTokens: (userId: string) => held.get(userId) ?? 0 } } });
    await h.req('PUT', '/v1/users/alice');
    recordUsage(h.db, 'alice', tokens(30, 12, 3));
    const get = async () => quotaSchema.parse(await json(await h.admin('GET', '/v1/admin/users/alice/quota')));
    expect(await get()).toMatchObject({ userId: 'alice', dailyTokens: null, serverDailyTokens: 1000, effectiveDailyTokens: 1000, usedToday: 45, remainingToday: 955, heldTokens: 160 });
    held.clear();
    expect(await get()).toMatchObject({ heldTokens: 0 });
    expect((await get()).resetsAt).toBe(new Date(usageDayEnd(Date.now())).toISOString());
    const set = quotaSchema.parse(await json(await h.admin('PUT', '/v1/admin/users/alice/quota', { dailyTokens: 40 })));
    expect(set).toMatchObject({ dailyTokens: 40, effectiveDailyTokens: 40, remainingToday: 0 });
    expect(getQuota(h.db, 'alice')).toBe(40);
    expect(quotaSchema.parse(await json(await h.admin('PUT', '/v1/admin/users/alice/quota', { dailyTokens: 0 })))).toMatchObject({ effectiveDailyTokens: 0 });
    expect(quotaSchema.parse(await json(await h.admin('PUT', '/v1/admin/users/alice/quota', { dailyTokens: null })))).toMatchObject({ dailyTokens: null, effectiveDailyTokens: 1000 });
    expect(getQuota(h.db, 'alice')).toBeNull();
  });

  it('without a server quota nobody is limited; bad bodies are 422 and change nothing, unknown users 404, no token 401', async () => {
    h = makeHarness();
    await h.req('PUT', '/v1/users/alice');
    expect(quotaSchema.parse(await json(await h.admin('GET', '/v1/admin/users/alice/quota')))).toMatchObject({ serverDailyTokens: null, effectiveDailyTokens: null, remainingToday: null });
    for (const body of [{}, { dailyTokens: -1 }, { dailyTokens: 1.5 }, { dailyTokens: '10' }, { dailyTokens: 5, extra: 1 }]) {
      await expectError(await h.admin('PUT', '/v1/admin/users/alice/quota', body), 422, 'validation_failed');
    }
    expect(getQuota(h.db, 'alice')).toBeNull();
    await expectError(await h.admin('PUT', '/v1/admin/users/nobody/quota', { dailyTokens: 5 }), 404, 'user_not_found');
    await expectError(await h.admin('GET', '/v1/admin/users/nobody/quota'), 404, 'user_not_found');
    await expectError(await h.req('PUT', '/v1/admin/users/alice/quota', { dailyTokens: 5 }), 401, 'unauthorized');
  });
});
