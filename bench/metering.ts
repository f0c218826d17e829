/**
 * What metering and quotas cost a request: the engine's one upsert into usage_daily (recordUsage) per
 * request that ran, and its quota check on arrival (the user's own quota, then today's tokens when a
 * quota applies: every user has one here), on a database of `users` users (WAL, synchronous NORMAL, as the server opens it), timed
 * over `calls` requests spread over the users, next to the serving time a request takes (from
 * bench/results/sampling-options.json: microseconds per token at 16 connections, times the bench's
 * reply length).
 *
 *   npx tsx bench/metering.ts [--users 1000] [--calls 20000]
 *
 * Writes bench/results/metering.json.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openDb } from '../src/db/client.js';
import { getQuota, recordUsage, setQuota, tokensUsed, usageDay } from '../src/db/queries/usage.js';
import { createUser } from '../src/db/queries/users.js';
import { numberArg } from './args.js';
import { servingTimePerRequest } from './serving-time.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const USERS = numberArg('users', 1000);
const CALLS = numberArg('calls', 20_000);

const dir = mkdtempSync(join(tmpdir(), 'memlora-bench-metering-'));
const db = openDb(join(dir, 'memlora.db'));
for (let i = 0; i < USERS; i++) createUser(db, { id: `u${i}` });
const usage = { promptTokens: 20, cachedTokens: 0, completionTokens: 32, scoredTokens: 0 };
const run = (n: number): number => {
  const t0 = performance.now();
  for (let i = 0; i < n; i++) recordUsage(db, `u${i % USERS}`, usage);
  return ((performance.now() - t0) * 1000) / n;
};
run(Math.min(2000, CALLS)); // each user's row of the day exists: the steady state is an update
const usPerRequest = run(CALLS);
for (let i = 0; i < USERS; i++) setQuota(db, `u${i}`, 1_000_000);
const today = usageDay(Date.now());
let sink = 0;
const t0 = performance.now();
for (let i = 0; i < CALLS; i++) {
  const id = `u${i % USERS}`;
  if ((getQuota(db, id) ?? 0) > 0) sink += tokensUsed(db, id, today);
}
const usPerQuotaCheck = ((performance.now() - t0) * 1000) / CALLS;
if (sink <= 0) throw new Error('no usage read');
db.close();
rmSync(dir, { recursive: true, force: true });

const { usServing, maxTokens } = servingTimePerRequest();
const share = (usPerRequest + usPerQuotaCheck) / usServing;
process.stderr.write(
  `recordUsage ${usPerRequest.toFixed(1)} us and the quota check ${usPerQuotaCheck.toFixed(1)} us per request (${USERS} users); a ${maxTokens}-token request's serving time ${(usServing / 1000).toFixed(1)} ms: ${(100 * share).toFixed(2)}%\n`,
);
mkdirSync(join(root, 'bench', 'results'), { recursive: true });
writeFileSync(
  join(root, 'bench', 'results', 'metering.json'),
  `${JSON.stringify({ date: new Date().toISOString(), users: USERS, calls: CALLS, usPerRequest: Math.round(usPerRequest * 10) / 10, usPerQuotaCheck: Math.round(usPerQuotaCheck * 10) / 10, usServingPerRequest: Math.round(usServing), share: Math.round(share * 1e5) / 1e5 }, null, 2)}\n`,
);
