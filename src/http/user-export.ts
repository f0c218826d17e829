/**
 * Everything memlora holds of a user, as NDJSON lines (one JSON object a line, each with its `type`):
 * the user (metadata, own quota), then their history, history deletions, injection jobs and trials,
 * adapter versions (configuration, checksum, metrics; not the weights or the server's paths), usage
 * by day, stored responses, and conversations each followed by its items; last an `end` line with the
 * count of each type, so a cut export is told from a whole one. Read page by page
 * (queries/user-export.ts) and yielded a page at a time, so its reader (GET
 * /v1/admin/users/{userId}/export, `memlora export`) sets the pace and the database serves others
 * between pages. Undefined for a user that does not exist.
 */
import type { Db } from '../db/client.js';
import { getQuota } from '../db/queries/usage.js';
import { EXPORT_TABLES, conversationItemsPage, exportPage } from '../db/queries/user-export.js';
import { getUser } from '../db/queries/users.js';
import { userJson } from './serialize.js';

/** Rows read a page. */
export const EXPORT_PAGE = 256;
/** Columns that hold times (ms), written as ISO 8601 as the rest of the API writes them. */
const TIMES = ['createdAt', 'updatedAt', 'startedAt', 'finishedAt', 'deletedAt'];

const line = (type: string, row: Record<string, unknown>) => {
  const out: Record<string, unknown> = { type, ...row };
  for (const k of TIMES) if (typeof out[k] === 'number') out[k] = new Date(out[k] as number).toISOString();
  return `${JSON.stringify(out)}\n`;
};

export function userExport(db: Db, userId: string, pageRows = EXPORT_PAGE): AsyncGenerator<string> | undefined {
  const user = getUser(db, userId);
  if (!user) return undefined;
  return (async function* () {
    const counts: Record<string, number> = { user: 1, conversation_item: 0 };
    yield line('user', { ...userJson(user), quota: getQuota(db, userId), exportedAt: new Date().toISOString() });
    for (const t of EXPORT_TABLES) {
      counts[t.type] = 0;
      for (let after: number | null = 0; after !== null; ) {
        const page = exportPage(db, t, userId, after, pageRows);
        counts[t.type] += page.rows.length;
        if (t.type !== 'conversation') {
          if (page.rows.length > 0) yield page.rows.map((row) => line(t.type, row)).join('');
        } else {
          for (const conversation of page.rows) {
            yield line(t.type, conversation);
            for (let from: number | null = 0; from !== null; ) {
              const items = conversationItemsPage(db, conversation.id as string, from, pageRows);
              counts.conversation_item += items.rows.length;
              if (items.rows.length > 0) yield items.rows.map((item) => line('conversation_item', { conversationId: conversation.id, item })).join('');
              from = items.next;
            }
          }
        }
        after = page.next;
      }
    }
    yield line('end', { counts });
  })();
}
