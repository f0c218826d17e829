/** /v1/users/{userId}/history: batch append (all-or-nothing), cursor listing, FTS5 search. */
import type { Hono } from 'hono';
import { appendHistory, listHistory, searchHistory } from '../../db/queries/history.js';
import { userExists } from '../../db/queries/users.js';
import type { AppEnv, RouteDeps } from '../context.js';
import { historyAppendBody, historyQuery } from '../schemas.js';
import { historyJson, searchHitJson } from '../serialize.js';
import { parseQuery, readJson, userIdParam } from '../validate.js';
import { userNotFound } from './users.js';

export function registerHistoryRoutes(app: Hono<AppEnv>, deps: RouteDeps): void {
  const { db, config } = deps;

  app.post('/v1/users/:userId/history', async (c) => {
    const userId = userIdParam(c);
    const body = await readJson(c, historyAppendBody, config.bodyLimitBytes);
    if (!userExists(db, userId)) throw userNotFound(userId);
    const rows = appendHistory(
      db,
      userId,
      body.items.map((it) => ({
        kind: it.kind,
        role: it.role ?? null,
        text: it.text,
        conversationId: it.conversationId ?? null,
        createdAt: it.createdAt === undefined ? undefined : Date.parse(it.createdAt),
      })),
    );
    return c.json({ userId, inserted: rows.length, ids: rows.map((r) => r.id) }, 201);
  });

  app.get('/v1/users/:userId/history', (c) => {
    const userId = userIdParam(c);
    const q = parseQuery(c, historyQuery);
    if (!userExists(db, userId)) throw userNotFound(userId);
    if (q.q !== undefined) {
      const hits = searchHistory(db, userId, q.q, { limit: q.limit ?? 20, match: q.match });
      return c.json({ items: hits.map(searchHitJson), nextCursor: null });
    }
    const page = listHistory(db, userId, { cursor: q.cursor, limit: q.limit, kind: q.kind });
    return c.json({ items: page.items.map(historyJson), nextCursor: page.nextCursor });
  });
}
