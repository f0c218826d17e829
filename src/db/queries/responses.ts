/**
 * Stored responses of OpenAI's Responses API (stored_responses): written when a response is done
 * (a background response when it is taken, and again when it is done), read to continue a conversation (previous_response_id) or by clients, deleted by clients, and
 * purged once older than the retention. A response past the retention is gone for readers at once,
 * whether or not the purge has run; the purge runs on every write, at most PURGE_BATCH rows at a time
 * (a backlog, say after the server was down, is worked off over the next writes instead of holding
 * the thread: bench/response-store.ts), and by the server's retention sweep (src/retention.ts) when
 * writes are few.
 */
import type { Db } from '../client.js';
import { statement } from '../statements.js';

export interface StoredResponse {
  id: string;
  userId: string;
  createdAt: number;
  previousResponseId: string | null;
  /** The response object as answered. */
  response: Record<string, unknown>;
  /** The input items the model read, each with its id. */
  items: Array<Record<string, unknown>>;
  /** A background response's request while it is not done (to run it again after a stop of the server); null otherwise. */
  request?: Record<string, unknown> | null;
}

/** Expired rows one write purges at most: rows expire about as fast as they were written, so a few a write keep up. */
export const PURGE_BATCH = 64;

/** Deletes up to `limit` stored responses created before `keepSince` (ms), oldest first; how many. */
export function purgeExpiredResponses(db: Db, keepSince: number, limit = PURGE_BATCH): number {
  return statement(db, 'DELETE FROM stored_responses WHERE rowid IN (SELECT rowid FROM stored_responses WHERE created_at < ? ORDER BY created_at LIMIT ?)').run(keepSince, limit).changes;
}

/** Stores a response, first purging up to PURGE_BATCH of those created before `keepSince` (ms), oldest first; how many it purged. */
export function storeResponse(db: Db, r: StoredResponse, keepSince: number): { purged: number } {
  const tx = db.sqlite.transaction(() => {
    const purged = purgeExpiredResponses(db, keepSince);
    statement(db, 'INSERT INTO stored_responses (id, user_id, created_at, previous_response_id, response, items, request) VALUES (?, ?, ?, ?, ?, ?, ?)').run(
      r.id,
      r.userId,
      r.createdAt,
      r.previousResponseId,
      JSON.stringify(r.response),
      JSON.stringify(r.items),
      r.request == null ? null : JSON.stringify(r.request),
    );
    return { purged };
  });
  return tx.immediate();
}

interface Row {
  id: string;
  user_id: string;
  created_at: number;
  previous_response_id: string | null;
  response: string;
  items: string;
  request: string | null;
}

/** The stored response `id` if it was created at or after `keepSince` (ms); undefined otherwise. */
export function getStoredResponse(db: Db, id: string, keepSince: number): StoredResponse | undefined {
  const row = statement(db, 'SELECT * FROM stored_responses WHERE id = ? AND created_at >= ?').get(id, keepSince) as Row | undefined;
  return row && storedOf(row);
}

const storedOf = (row: Row): StoredResponse => ({
  id: row.id,
  userId: row.user_id,
  createdAt: row.created_at,
  previousResponseId: row.previous_response_id,
  response: JSON.parse(row.response) as Record<string, unknown>,
  items: JSON.parse(row.items) as Array<Record<string, unknown>>,
  request: row.request === null ? null : (JSON.parse(row.request) as Record<string, unknown>),
});

/** Background responses not done (their request kept) created at or after `keepSince`, oldest first: what a server starting runs again. */
export function unfinishedBackgroundResponses(db: Db, keepSince: number): StoredResponse[] {
  return (statement(db, 'SELECT * FROM stored_responses WHERE request IS NOT NULL AND created_at >= ? ORDER BY created_at').all(keepSince) as Row[]).map(storedOf);
}

/**
 * Replaces the response object of the stored response `id` (a background response once it is done,
 * its request then dropped; or put back in the queue by a stopping server, its request kept); whether
 * it was still there.
 */
export function updateStoredResponse(db: Db, id: string, response: Record<string, unknown>, request: 'drop' | 'keep' = 'drop'): boolean {
  const sql = request === 'drop' ? 'UPDATE stored_responses SET response = ?, request = NULL WHERE id = ?' : 'UPDATE stored_responses SET response = ? WHERE id = ?';
  return statement(db, sql).run(JSON.stringify(response), id).changes > 0;
}

/** Deletes the stored response `id` (one created before `keepSince` counts as gone); whether it was there. */
export function deleteStoredResponse(db: Db, id: string, keepSince: number): boolean {
  return statement(db, 'DELETE FROM stored_responses WHERE id = ? AND created_at >= ?').run(id, keepSince).changes > 0;
}

export interface StoredSummary {
  count: number;
  /** Bytes of their JSON (responses and the items they read). */
  bytes: number;
  oldest: number | null;
  newest: number | null;
}

/** What a user's stored responses hold (those past the retention not yet purged included). */
export function storedResponsesOf(db: Db, userId: string): StoredSummary {
  return statement(db, 'SELECT count(*) AS count, coalesce(sum(length(response) + length(items)), 0) AS bytes, min(created_at) AS oldest, max(created_at) AS newest FROM stored_responses WHERE user_id = ?').get(userId) as StoredSummary;
}

/** Deletes every stored response of the user; how many. */
export function deleteStoredResponsesOf(db: Db, userId: string): number {
  return statement(db, 'DELETE FROM stored_responses WHERE user_id = ?').run(userId).changes;
}
