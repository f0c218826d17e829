/**
 * The adapter cache, for operators and load testers:
 * - POST /v1/admin/cache/warm: load users' active adapters into the cache ahead of their requests
 *   (after a restart, before a peak or a load test), so their first requests neither wait for the disk
 *   nor pay the adapter's first-use preparation. The engine does the work (serve/warm.ts).
 * - GET /v1/admin/cache: what it holds (leased by running requests, then most recently used first),
 *   its occupancy, and its lookups since start with the hit rate (serve/cache-admin.ts).
 * - GET /v1/admin/cache/curve[?format=svg]: the hit rate an LRU of every size would have had on the
 *   lookups served (lora/hit-curve.ts): what MEMLORA_CACHE_BYTES buys.
 * - DELETE /v1/admin/cache[?userId=]: drop one user's adapters or all of them (a cold cache for the
 *   next load test, without a restart; the curve starts afresh); running requests finish on the
 *   adapter they hold.
 * - GET /v1/admin/prefix-cache: the prefix cache's occupancy, hit rate and prompt tokens saved
 *   (serve/prefix-admin.ts).
 * - DELETE /v1/admin/prefix-cache[?userId=]: drop one user's conversations or all of them (the next
 *   turns run their whole prompt: a cold start for a load test of multi-turn chats).
 * - GET /v1/admin/queue[?limit=]: the generation queue and batch now: each row's request, and per
 *   user the rows held and the requests waiting (who fills the queue; serve/fair-share.ts).
 */
import type { Hono } from 'hono';
import type { AppEnv, RouteDeps } from '../context.js';
import { ApiError } from '../errors.js';
import { userExists } from '../../db/queries/users.js';
import { cacheCurveSvg } from '../../serve/cache-admin.js';
import { WARM_OUTCOMES, cacheContentsQuery, cacheCurveQuery, cacheDropQuery, prefixCacheDropQuery, queueQuery, warmBody } from '../schemas.js';
import type { WarmResult } from '../services.js';
import { parseQuery, readJson } from '../validate.js';
import { clientSignal, requireGenerate } from './generate.js';
import { userNotFound } from './users.js';

/** Adapters listed by GET /v1/admin/cache, and users by GET /v1/admin/queue, without `limit`. */
const DEFAULT_LIST_LIMIT = 100;

const unavailable = (what = 'adapter cache'): ApiError => new ApiError(503, 'model_unavailable', `this server has no ${what}`, null, { 'retry-after': '30' });

export function registerCacheRoutes(app: Hono<AppEnv>, deps: RouteDeps): void {
  app.post('/v1/admin/cache/warm', async (c) => {
    const { userIds } = await readJson(c, warmBody, deps.config.bodyLimitBytes);
    const gen = requireGenerate(deps);
    if (!gen.warm) throw unavailable();
    const report = await gen.warm(userIds, clientSignal(c).signal);
    const counts = Object.fromEntries(WARM_OUTCOMES.map((o) => [o, 0])) as WarmResult['counts'];
    for (const r of report.results) counts[r.outcome] += 1;
    deps.logger.info('adapter cache warmed', { users: report.results.length, ...counts, cacheBytes: report.cache.bytes });
    return c.json({ ...report, counts } satisfies WarmResult);
  });

  app.get('/v1/admin/cache', (c) => {
    const { limit } = parseQuery(c, cacheContentsQuery);
    const gen = requireGenerate(deps);
    if (!gen.cacheContents) throw unavailable();
    return c.json(gen.cacheContents(limit ?? DEFAULT_LIST_LIMIT));
  });

  app.get('/v1/admin/cache/curve', (c) => {
    const { format } = parseQuery(c, cacheCurveQuery);
    const gen = requireGenerate(deps);
    if (!gen.cacheCurve) throw unavailable();
    const curve = gen.cacheCurve();
    if (format === 'svg') return c.body(cacheCurveSvg(curve), 200, { 'content-type': 'image/svg+xml; charset=utf-8' });
    return c.json(curve);
  });

  app.delete('/v1/admin/cache', (c) => {
    const { userId } = parseQuery(c, cacheDropQuery);
    const gen = requireGenerate(deps);
    if (!gen.dropCached) throw unavailable();
    if (userId !== undefined && !userExists(deps.db, userId)) throw userNotFound(userId);
    return c.json(gen.dropCached(userId));
  });

  app.get('/v1/admin/queue', (c) => {
    const { limit } = parseQuery(c, queueQuery);
    const gen = requireGenerate(deps);
    if (!gen.queue) throw unavailable('generation queue');
    return c.json(gen.queue(limit ?? DEFAULT_LIST_LIMIT));
  });

  app.get('/v1/admin/prefix-cache', (c) => {
    const gen = requireGenerate(deps);
    if (!gen.prefixCache) throw unavailable('prefix cache');
    return c.json(gen.prefixCache());
  });

  app.delete('/v1/admin/prefix-cache', (c) => {
    const { userId } = parseQuery(c, prefixCacheDropQuery);
    const gen = requireGenerate(deps);
    if (!gen.dropPrefixCache) throw unavailable('prefix cache');
    if (userId !== undefined && !userExists(deps.db, userId)) throw userNotFound(userId);
    return c.json(gen.dropPrefixCache(userId));
  });
}
