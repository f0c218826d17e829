/**
 * Metering and quotas: the tokens served to each user per UTC day (usage_daily), and the users' own
 * daily token quotas (user_quotas). The engine adds every request that ran and checks quotas when a
 * request arrives (with what its unfinished requests hold); operators read a user's days, or every user's sum over a range of days, and set
 * quotas through the admin API.
 */
import { and, asc, desc, eq, gte, lte, sql } from 'drizzle-orm';
import type { Db } from '../client.js';
import { usageDaily, userQuotas } from '../schema.js';
import { statement } from '../statements.js';

export interface UsageCounts {
  requests: number;
  promptTokens: number;
  cachedTokens: number;
  completionTokens: number;
  scoredTokens: number;
}

export type RequestUsage = Omit<UsageCounts, 'requests'>;

/** The UTC day of a time in milliseconds, YYYY-MM-DD. */
export const usageDay = (at: number): string => new Date(at).toISOString().slice(0, 10);

const DAY_MS = 86_400_000;
const dayStart = (day: string): number => Date.parse(`${day}T00:00:00Z`);

/** The UTC day `n` days after `day` (YYYY-MM-DD; n may be negative). */
export const dayPlus = (day: string, n: number): string => usageDay(dayStart(day) + n * DAY_MS);

/** Days from `from` to `to` (YYYY-MM-DD), both included: 0 or less when `from` is after `to`. */
export const daysBetween = (from: string, to: string): number => Math.round((dayStart(to) - dayStart(from)) / DAY_MS) + 1;

/** When the UTC day of `at` ends (the next midnight UTC, in milliseconds): quotas count afresh from it. */
export function usageDayEnd(at: number): number {
  const d = new Date(at);
  d.setUTCHours(24, 0, 0, 0);
  return d.getTime();
}

const COUNT_COLUMNS = ['prompt_tokens', 'cached_tokens', 'completion_tokens', 'scored_tokens'] as const;

/**
 * Adds one request's tokens to the user's row of the day (created at the day's first request).
 * False when the user no longer exists (erased while the request ran): nothing is written.
 */
export function recordUsage(db: Db, userId: string, usage: RequestUsage, at: number = Date.now()): boolean {
  const add = COUNT_COLUMNS.map((c) => `${c} = ${c} + excluded.${c}`).join(', ');
  const r = statement(
    db,
    `INSERT INTO usage_daily (user_id, day, requests, ${COUNT_COLUMNS.join(', ')})
     SELECT ?, ?, 1, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM users WHERE id = ?)
     ON CONFLICT (user_id, day) DO UPDATE SET requests = requests + 1, ${add}`,
  ).run(userId, usageDay(at), usage.promptTokens, usage.cachedTokens, usage.completionTokens, usage.scoredTokens, userId);
  return r.changes > 0;
}

const countsOf = {
  requests: usageDaily.requests,
  promptTokens: usageDaily.promptTokens,
  cachedTokens: usageDaily.cachedTokens,
  completionTokens: usageDaily.completionTokens,
  scoredTokens: usageDaily.scoredTokens,
};

const ZERO: UsageCounts = { requests: 0, promptTokens: 0, cachedTokens: 0, completionTokens: 0, scoredTokens: 0 };

function sumOf(rows: readonly UsageCounts[]): UsageCounts {
  const total = { ...ZERO };
  for (const r of rows) for (const k of Object.keys(total) as Array<keyof UsageCounts>) total[k] += r[k];
  return total;
}

/** A user's days from `from` to `to` (YYYY-MM-DD, both included) that had requests, oldest first, and their sum. */
export function userUsage(db: Db, userId: string, from: string, to: string): { days: Array<UsageCounts & { day: string }>; total: UsageCounts } {
  const days = db.orm
    .select({ day: usageDaily.day, ...countsOf })
    .from(usageDaily)
    .where(and(eq(usageDaily.userId, userId), gte(usageDaily.day, from), lte(usageDaily.day, to)))
    .orderBy(asc(usageDaily.day))
    .all();
  return { days, total: sumOf(days) };
}

/**
 * The users served from `from` to `to` (YYYY-MM-DD, both included), each with their sum over those
 * days, most tokens first (at most `limit`); how many there were; and the sum over all of them.
 */
export function usersUsage(db: Db, from: string, to: string, limit: number): { users: Array<UsageCounts & { userId: string }>; usersTotal: number; total: UsageCounts } {
  const inRange = and(gte(usageDaily.day, from), lte(usageDaily.day, to));
  const sums = {
    requests: sql<number>`coalesce(sum(${usageDaily.requests}), 0)`,
    promptTokens: sql<number>`coalesce(sum(${usageDaily.promptTokens}), 0)`,
    cachedTokens: sql<number>`coalesce(sum(${usageDaily.cachedTokens}), 0)`,
    completionTokens: sql<number>`coalesce(sum(${usageDaily.completionTokens}), 0)`,
    scoredTokens: sql<number>`coalesce(sum(${usageDaily.scoredTokens}), 0)`,
  };
  const tokens = sql`sum(${usageDaily.promptTokens} + ${usageDaily.completionTokens} + ${usageDaily.scoredTokens})`;
  const users = db.orm
    .select({ userId: usageDaily.userId, ...sums })
    .from(usageDaily)
    .where(inRange)
    .groupBy(usageDaily.userId)
    .orderBy(desc(tokens), asc(usageDaily.userId))
    .limit(limit)
    .all();
  const { usersTotal, ...total } = db.orm
    .select({ usersTotal: sql<number>`count(distinct ${usageDaily.userId})`, ...sums })
    .from(usageDaily)
    .where(inRange)
    .get()!;
  return { users, usersTotal, total };
}

/** Tokens served to the user on `day`: prompt + completion + scored, as metered (what quotas count). */
export function tokensUsed(db: Db, userId: string, day: string): number {
  const row = statement(db, 'SELECT prompt_tokens + completion_tokens + scored_tokens AS n FROM usage_daily WHERE user_id = ? AND day = ?').get(userId, day) as { n: number } | undefined;
  return row?.n ?? 0;
}

/** The user's own daily token quota, or null when the server's default applies. */
export function getQuota(db: Db, userId: string): number | null {
  const row = statement(db, 'SELECT daily_tokens AS n FROM user_quotas WHERE user_id = ?').get(userId) as { n: number } | undefined;
  return row?.n ?? null;
}

/** The quota that applies to the user: their own, else the server's `serverDaily` (0: none); null means no limit. */
export function effectiveQuota(db: Db, userId: string, serverDaily: number): number | null {
  return getQuota(db, userId) ?? (serverDaily > 0 ? serverDaily : null);
}

/** Sets the user's own daily token quota (0 blocks them), or with null removes it (the server's default applies). */
export function setQuota(db: Db, userId: string, dailyTokens: number | null, now: number = Date.now()): void {
  if (dailyTokens === null) db.orm.delete(userQuotas).where(eq(userQuotas.userId, userId)).run();
  else {
    db.orm
      .insert(userQuotas)
      .values({ userId, dailyTokens, updatedAt: now })
      .onConflictDoUpdate({ target: userQuotas.userId, set: { dailyTokens, updatedAt: now } })
      .run();
  }
}
