/**
 * Forgetting a history item. Deleting it removes the row (and its text from the FTS5 index, by the
 * index's triggers: memory mode no longer retrieves it) and records the deletion, because an adapter
 * whose training read the item still carries it in its weights. A version was trained on an item when
 * the job that made it read the history up to that item (its `progress.data.historyUpTo`) before the
 * item was deleted (the job started first); a version no job made (the CLI's) is taken to be trained
 * on every item deleted after it was made.
 */
import { inTransaction, type Db } from '../client.js';
import { statement } from '../statements.js';

/** Deletes one item of the user's history and records the deletion; false when the user has no such item. */
export function deleteHistoryItem(db: Db, userId: string, itemId: number, now: number = Date.now()): boolean {
  return inTransaction(db, () => {
    const gone = statement(db, 'DELETE FROM history_items WHERE id = ? AND user_id = ?').run(itemId, userId).changes > 0;
    if (gone) statement(db, 'INSERT INTO history_deletions (user_id, item_id, deleted_at) VALUES (?, ?, ?)').run(userId, itemId, now);
    return gone;
  });
}

/** Which of a user's items a bulk deletion takes: those of one conversation, those written before a time (ms), or all; every condition given holds. */
export interface HistoryFilter {
  conversationId?: string;
  before?: number;
}

/** Deletes the user's items the filter takes (all of them for an empty one) and records each deletion; their ids, oldest first. */
export function deleteHistoryItems(db: Db, userId: string, filter: HistoryFilter, now: number = Date.now()): number[] {
  return inTransaction(db, () => {
    const where = ['user_id = ?'];
    const args: Array<string | number> = [userId];
    if (filter.conversationId !== undefined) {
      where.push('conversation_id = ?');
      args.push(filter.conversationId);
    }
    if (filter.before !== undefined) {
      where.push('created_at < ?');
      args.push(filter.before);
    }
    const ids = (db.sqlite.prepare(`SELECT id FROM history_items WHERE ${where.join(' AND ')} ORDER BY id`).all(...args) as Array<{ id: number }>).map((r) => r.id);
    const drop = statement(db, 'DELETE FROM history_items WHERE id = ?');
    const record = statement(db, 'INSERT INTO history_deletions (user_id, item_id, deleted_at) VALUES (?, ?, ?)');
    for (const id of ids) {
      drop.run(id);
      record.run(userId, id, now);
    }
    return ids;
  });
}

/** Whether deletion `d` is of an item the adapter version `v` (made by job `j`, if any) was trained on. */
export const TRAINED_ON_DELETED = `(
  (j.id IS NOT NULL AND d.item_id <= json_extract(j.progress, '$.data.historyUpTo') AND d.deleted_at >= j.started_at)
  OR (j.id IS NULL AND d.deleted_at >= v.created_at))`;

const VERSIONS_SQL = `
SELECT v.version AS version, v.active AS active, count(d.id) AS items
FROM adapter_versions v
LEFT JOIN injection_jobs j ON j.id = json_extract(v.metrics, '$.jobId') AND j.user_id = v.user_id
JOIN history_deletions d ON d.user_id = v.user_id AND ${TRAINED_ON_DELETED}
WHERE v.user_id = ? AND v.status != 'deleted'
GROUP BY v.id
ORDER BY v.version`;

export interface VersionTrainedOnDeleted {
  version: number;
  active: boolean;
  /** Deleted items it was trained on. */
  deletedItems: number;
}

/** The user's adapter versions (those with files) trained on history items deleted since. */
export function versionsTrainedOnDeleted(db: Db, userId: string): VersionTrainedOnDeleted[] {
  const rows = statement(db, VERSIONS_SQL).all(userId) as Array<{ version: number; active: number; items: number }>;
  return rows.map((r) => ({ version: r.version, active: r.active === 1, deletedItems: r.items }));
}

/** Items up to `upTo` the user deleted at `since` or later: history a job that read up to `upTo` from `since` on had seen. */
export function deletedSince(db: Db, userId: string, since: number, upTo: number): number {
  const row = statement(db, 'SELECT count(*) AS n FROM history_deletions WHERE user_id = ? AND deleted_at >= ? AND item_id <= ?').get(userId, since, upTo) as { n: number };
  return row.n;
}
