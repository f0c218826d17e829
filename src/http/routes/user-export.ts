/**
 * GET /v1/admin/users/{userId}/export: everything memlora holds of a user, for an access or
 * portability request, as NDJSON (one JSON object a line, each with its `type`): the user (metadata,
 * own quota), then their history, history deletions, injection jobs and trials, adapter versions
 * (configuration, checksum, metrics; not the weights or the server's paths), usage by day, stored
 * responses, and conversations each followed by its items; last an `end` line with the count of
 * each type, so a cut export is told from a whole one. Streamed page by page (queries/user-export.ts):
 * the server serves other requests meanwhile, and what they write while the export runs may or may
 * not be in it. The erasure routes (DELETE /v1/users/{userId}, DELETE .../responses) remove it.
 */
import type { Hono } from 'hono';
import { stream } from 'hono/streaming';
import { getQuota } from '../../db/queries/usage.js';
import { EXPORT_TABLES, conversationItemsPage, exportPage } from '../../db/queries/user-export.js';
import { getUser } from '../../db/queries/users.js';
import type { AppEnv, RouteDeps } from '../context.js';
import { noQuery } from '../schemas.js';
import { userJson } from '../serialize.js';
import { parseQuery, userIdParam } from '../validate.js';
import { userNotFound } from './users.js';

/** Rows read a page. */
export const EXPORT_PAGE = 256;
/** Columns that hold times (ms), written as ISO 8601 as the rest of the API writes them. */
const TIMES = ['createdAt', 'updatedAt', 'startedAt', 'finishedAt', 'deletedAt'];

const line = (type: string, row: Record<string, unknown>) => {
  const out: Record<string, unknown> = { type, ...row };
  for (const k of TIMES) if (typeof out[k] === 'number') out[k] = new Date(out[k] as number).toISOString();
  return `${JSON.stringify(out)}\n`;
};

export function registerUserExportRoutes(app: Hono<AppEnv>, deps: RouteDeps): void {
  const { db, logger } = deps;

  app.get('/v1/admin/users/:userId/export', (c) => {
    const userId = userIdParam(c);
    parseQuery(c, noQuery);
    const user = getUser(db, userId);
    if (!user) throw userNotFound(userId);
    c.header('content-type', 'application/x-ndjson; charset=utf-8');
    return stream(c, async (s) => {
      const counts: Record<string, number> = { user: 1, conversation_item: 0 };
      const count = (type: string, n: number) => (counts[type] = (counts[type] ?? 0) + n);
      await s.write(line('user', { ...userJson(user), quota: getQuota(db, userId), exportedAt: new Date().toISOString() }));
      for (const t of EXPORT_TABLES) {
        count(t.type, 0);
        for (let after: number | null = 0; after !== null; ) {
          if (s.aborted) return;
          const page = exportPage(db, t, userId, after, EXPORT_PAGE);
          count(t.type, page.rows.length);
          if (t.type !== 'conversation') {
            if (page.rows.length > 0) await s.write(page.rows.map((row) => line(t.type, row)).join(''));
          } else {
            for (const conversation of page.rows) {
              await s.write(line(t.type, conversation));
              for (let from: number | null = 0; from !== null; ) {
                if (s.aborted) return;
                const items = conversationItemsPage(db, conversation.id as string, from, EXPORT_PAGE);
                count('conversation_item', items.rows.length);
                if (items.rows.length > 0) await s.write(items.rows.map((item) => line('conversation_item', { conversationId: conversation.id, item })).join(''));
                from = items.next;
              }
            }
          }
          after = page.next;
        }
      }
      await s.write(line('end', { counts }));
    }, async (err) => {
      // The export ends without its end line: the client can tell it is not whole.
      logger.error('user export failed', { requestId: c.get('requestId'), userId, err: err.message });
    });
  });
}
