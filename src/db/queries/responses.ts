/**
 * Stored responses of OpenAI's Responses API (stored_responses): written when a response is done,
 * read to continue a conversation (previous_response_id) or by clients, deleted by clients, and
 * purged once older than the retention. A response past the retention is gone for readers at once,
 * whether or not the purge has run; the purge runs on every write (one indexed delete).
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
}

/** Stores a response, first purging those created before `keepSince` (ms). */
export function storeResponse(db: Db, r: StoredResponse, keepSince: number): void {
  const tx = db.sqlite.transaction(() => {
    statement(db, 'DELETE FROM stored_responses WHERE created_at < ?').run(keepSince);
    statement(db, 'INSERT INTO stored_responses (id, user_id, created_at, previous_response_id, response, items) VALUES (?, ?, ?, ?, ?, ?)').run(
      r.id,
      r.userId,
      r.createdAt,
      r.previousResponseId,
      JSON.stringify(r.response),
      JSON.stringify(r.items),
    );
  });
  tx.immediate();
}

interface Row {
  id: string;
  user_id: string;
  created_at: number;
  previous_response_id: string | null;
  response: string;
  items: string;
}

/** The stored response `id` if it was created at or after `keepSince` (ms); undefined otherwise. */
export function getStoredResponse(db: Db, id: string, keepSince: number): StoredResponse | undefined {
  const row = statement(db, 'SELECT * FROM stored_responses WHERE id = ? AND created_at >= ?').get(id, keepSince) as Row | undefined;
  if (row === undefined) return undefined;
  return {
    id: row.id,
    userId: row.user_id,
    createdAt: row.created_at,
    previousResponseId: row.previous_response_id,
    response: JSON.parse(row.response) as Record<string, unknown>,
    items: JSON.parse(row.items) as Array<Record<string, unknown>>,
  };
}

/** Deletes the stored response `id` (one created before `keepSince` counts as gone); whether it was there. */
export function deleteStoredResponse(db: Db, id: string, keepSince: number): boolean {
  return statement(db, 'DELETE FROM stored_responses WHERE id = ? AND created_at >= ?').run(id, keepSince).changes > 0;
}
