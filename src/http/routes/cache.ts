/**
 * POST /v1/admin/cache/warm: load users' active adapters into the adapter cache ahead of their
 * requests (after a restart, before a peak or a load test), so their first requests neither wait for
 * the disk nor pay the adapter's first-use preparation. The engine does the work (serve/warm.ts).
 */
import type { Hono } from 'hono';
import type { AppEnv, RouteDeps } from '../context.js';
import { ApiError } from '../errors.js';
import { WARM_OUTCOMES, warmBody } from '../schemas.js';
import type { WarmResult } from '../services.js';
import { readJson } from '../validate.js';
import { clientSignal, requireGenerate } from './generate.js';

export function registerCacheRoutes(app: Hono<AppEnv>, deps: RouteDeps): void {
  app.post('/v1/admin/cache/warm', async (c) => {
    const { userIds } = await readJson(c, warmBody, deps.config.bodyLimitBytes);
    const gen = requireGenerate(deps);
    if (!gen.warm) throw new ApiError(503, 'model_unavailable', 'this server has no adapter cache to warm', null, { 'retry-after': '30' });
    const report = await gen.warm(userIds, clientSignal(c).signal);
    const counts = Object.fromEntries(WARM_OUTCOMES.map((o) => [o, 0])) as WarmResult['counts'];
    for (const r of report.results) counts[r.outcome] += 1;
    deps.logger.info('adapter cache warmed', { users: report.results.length, ...counts, cacheBytes: report.cache.bytes });
    return c.json({ ...report, counts } satisfies WarmResult);
  });
}
