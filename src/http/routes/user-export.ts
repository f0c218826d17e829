/**
 * GET /v1/admin/users/{userId}/export: everything memlora holds of a user (user-export.ts), for an
 * access or portability request, streamed as NDJSON while the server serves other requests (what
 * they write meanwhile may or may not be in it). The erasure routes (DELETE /v1/users/{userId},
 * DELETE /v1/admin/users/{userId}/responses) remove it.
 */
import type { Hono } from 'hono';
import { stream } from 'hono/streaming';
import type { AppEnv, RouteDeps } from '../context.js';
import { noQuery } from '../schemas.js';
import { userExport } from '../user-export.js';
import { parseQuery, userIdParam } from '../validate.js';
import { userNotFound } from './users.js';

export function registerUserExportRoutes(app: Hono<AppEnv>, deps: RouteDeps): void {
  const { db, logger } = deps;

  app.get('/v1/admin/users/:userId/export', (c) => {
    const userId = userIdParam(c);
    parseQuery(c, noQuery);
    const lines = userExport(db, userId);
    if (!lines) throw userNotFound(userId);
    c.header('content-type', 'application/x-ndjson; charset=utf-8');
    return stream(
      c,
      async (s) => {
        for await (const chunk of lines) {
          if (s.aborted) return;
          await s.write(chunk);
        }
      },
      async (err) => {
        // The export ends without its end line: the client can tell it is not whole.
        logger.error('user export failed', { requestId: c.get('requestId'), userId, err: err.message });
      },
    );
  });
}
