/** /v1/users: idempotent create, read, list, delete (rows and adapter files). */
import type { Hono } from 'hono';
import { activeJobForUser } from '../../db/queries/jobs.js';
import { createUser, deleteUser, getUser, listUsers } from '../../db/queries/users.js';
import type { AppEnv, RouteDeps } from '../context.js';
import { ApiError } from '../errors.js';
import { listUsersQuery, putUserBody } from '../schemas.js';
import { userJson } from '../serialize.js';
import { parseQuery, readJson, userIdParam } from '../validate.js';

export function userNotFound(userId: string): ApiError {
  return new ApiError(404, 'user_not_found', `user ${JSON.stringify(userId)} not found`, { userId });
}

export function registerUserRoutes(app: Hono<AppEnv>, deps: RouteDeps): void {
  const { db, config, services, logger, background } = deps;

  app.put('/v1/users/:userId', async (c) => {
    const id = userIdParam(c);
    const body = await readJson(c, putUserBody, config.bodyLimitBytes, {});
    const { user, created } = createUser(db, { id, metadata: body.metadata });
    return c.json(userJson(user), created ? 201 : 200);
  });

  app.get('/v1/users/:userId', (c) => {
    const id = userIdParam(c);
    const user = getUser(db, id);
    if (!user) throw userNotFound(id);
    return c.json(userJson(user));
  });

  app.get('/v1/users', (c) => {
    const q = parseQuery(c, listUsersQuery);
    const page = listUsers(db, { cursor: q.cursor, limit: q.limit });
    return c.json({ items: page.items.map(userJson), nextCursor: page.nextCursor });
  });

  app.delete('/v1/users/:userId', async (c) => {
    const id = userIdParam(c);
    if (!getUser(db, id)) throw userNotFound(id);
    // Stop a running injection first so it does not write a new adapter for a user being erased.
    const active = activeJobForUser(db, id);
    if (active?.state === 'running' && services.jobs) {
      try {
        await services.jobs.cancel(active.id);
      } catch (err) {
        logger.warn('cancel before user delete failed', { userId: id, jobId: active.id, err: String(err) });
      }
    }
    // Their background responses stop, so none writes after the erasure.
    await background.cancelUser(id);
    // Their conversations' keys and values leave the prefix cache with them (and no request of
    // theirs still running keeps its own).
    services.generate?.forgetUser?.(id);
    const counts = deleteUser(db, id);
    if (!counts) throw userNotFound(id);
    const files = await services.adapterFiles.removeUserAdapters(id);
    return c.json({ userId: id, removed: { ...counts, adapterFiles: files.files, adapterBytes: files.bytes } });
  });
}
