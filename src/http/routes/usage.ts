/**
 * Metering and quotas for operators: GET /v1/admin/users/{userId}/usage, a user's tokens per UTC day
 * over a range (as JSON, or `?format=svg` as a bar chart of the days); GET /v1/admin/usage/users, the
 * users' sums over a range of days (today by default; a month for billing), most tokens first; and GET / PUT /v1/admin/users/{userId}/quota, the
 * user's daily token quota and where they stand today. The engine records every request that ran and
 * refuses a user's requests past their quota (src/db/queries/usage.ts).
 */
import type { Hono } from 'hono';
import { dayPlus, daysBetween, effectiveQuota, getQuota, setQuota, tokensUsed, usageDay, usageDayEnd, userUsage, usersUsage } from '../../db/queries/usage.js';
import { userExists } from '../../db/queries/users.js';
import { barChart } from '../../plot/svg.js';
import type { AppEnv, RouteDeps } from '../context.js';
import { quotaBody, userUsageQuery, usersUsageQuery } from '../schemas.js';
import { parseQuery, readJson, userIdParam } from '../validate.js';
import { userNotFound } from './users.js';

/** Every day from `from` to `to`, both included. */
const daysOf = (from: string, to: string): string[] => Array.from({ length: daysBetween(from, to) }, (_, i) => dayPlus(from, i));

export function registerUsageRoutes(app: Hono<AppEnv>, deps: RouteDeps): void {
  const { db } = deps;

  app.get('/v1/admin/users/:userId/usage', (c) => {
    const userId = userIdParam(c);
    const q = parseQuery(c, userUsageQuery);
    if (!userExists(db, userId)) throw userNotFound(userId);
    const { from, to } = q;
    const usage = userUsage(db, userId, from, to);
    if (q.format === 'svg') {
      const byDay = new Map(usage.days.map((d) => [d.day, d.promptTokens + d.completionTokens + d.scoredTokens]));
      const svg = barChart({
        title: `Tokens served to ${userId} per day (UTC), ${from} to ${to}: ${usage.total.requests} requests`,
        y: { label: 'tokens (prompt + completion + scored)' },
        bars: daysOf(from, to).map((day) => ({ label: day.slice(5), value: byDay.get(day) ?? 0 })),
      });
      return c.body(svg, 200, { 'content-type': 'image/svg+xml; charset=utf-8' });
    }
    return c.json({ userId, from, to, ...usage });
  });

  /** The user's quota and today's standing. */
  const quotaReport = (userId: string) => {
    const now = Date.now();
    const serverDaily = deps.config.userDailyTokens;
    const effective = effectiveQuota(db, userId, serverDaily);
    const used = tokensUsed(db, userId, usageDay(now));
    const held = deps.services.generate?.heldTokens?.(userId) ?? 0;
    return {
      userId,
      dailyTokens: getQuota(db, userId),
      serverDailyTokens: serverDaily > 0 ? serverDaily : null,
      effectiveDailyTokens: effective,
      usedToday: used,
      remainingToday: effective === null ? null : Math.max(0, effective - used),
      heldTokens: held,
      resetsAt: new Date(usageDayEnd(now)).toISOString(),
    };
  };

  app.get('/v1/admin/users/:userId/quota', (c) => {
    const userId = userIdParam(c);
    if (!userExists(db, userId)) throw userNotFound(userId);
    return c.json(quotaReport(userId));
  });

  app.put('/v1/admin/users/:userId/quota', async (c) => {
    const userId = userIdParam(c);
    const body = await readJson(c, quotaBody, deps.config.bodyLimitBytes);
    if (!userExists(db, userId)) throw userNotFound(userId);
    setQuota(db, userId, body.dailyTokens);
    return c.json(quotaReport(userId));
  });

  app.get('/v1/admin/usage/users', (c) => {
    const q = parseQuery(c, usersUsageQuery);
    return c.json({ from: q.from, to: q.to, ...usersUsage(db, q.from, q.to, q.limit ?? 100) });
  });
}
