/** GET /v1/users/{userId}/adapter: the user's active adapter version. */
import type { Hono } from 'hono';
import { getActiveAdapter } from '../../db/queries/adapters.js';
import { userExists } from '../../db/queries/users.js';
import type { AppEnv, RouteDeps } from '../context.js';
import { ApiError } from '../errors.js';
import { adapterJson } from '../serialize.js';
import { userIdParam } from '../validate.js';
import { userNotFound } from './users.js';

export function registerAdapterRoutes(app: Hono<AppEnv>, deps: RouteDeps): void {
  const { db } = deps;
  app.get('/v1/users/:userId/adapter', (c) => {
    const userId = userIdParam(c);
    if (!userExists(db, userId)) throw userNotFound(userId);
    const active = getActiveAdapter(db, userId);
    if (!active) {
      throw new ApiError(404, 'adapter_not_found', `user ${JSON.stringify(userId)} has no active adapter`, { userId });
    }
    return c.json(adapterJson(active));
  });
}
