/**
 * Everything the database holds of one user, read page by page for an export (GET
 * /v1/admin/users/{userId}/export): each table that holds the user's rows, keyed by rowid so a page
 * is one complete query (no statement stays open while the export waits on its client, and other
 * requests write meanwhile), its columns as an export line shows them (JSON columns parsed; adapter
 * file paths, which are the server's, left out).
 */
import type { Db } from '../client.js';
import { statement } from '../statements.js';

interface ExportTable {
  /** The `type` of its lines. */
  type: string;
  table: string;
  columns: string;
  /** Columns holding JSON text. */
  json: readonly string[];
}

/** The user's tables in export order: the user's own row and quota are read apart (getUser, the quota). */
export const EXPORT_TABLES: readonly ExportTable[] = [
  { type: 'history', table: 'history_items', columns: 'id, kind, role, text, conversation_id AS conversationId, created_at AS createdAt', json: [] },
  { type: 'history_deletion', table: 'history_deletions', columns: 'item_id AS itemId, deleted_at AS deletedAt', json: [] },
  { type: 'job', table: 'injection_jobs', columns: 'id, state, params, progress, result, error, created_at AS createdAt, started_at AS startedAt, finished_at AS finishedAt', json: ['params', 'progress', 'result', 'error'] },
  { type: 'trial', table: 'trials', columns: 'job_id AS jobId, idx, config, objectives, cost, status, created_at AS createdAt', json: ['config', 'objectives', 'cost'] },
  { type: 'adapter', table: 'adapter_versions', columns: 'version, config, sha256, metrics, status, active, created_at AS createdAt', json: ['config', 'metrics'] },
  { type: 'usage', table: 'usage_daily', columns: 'day, requests, prompt_tokens AS promptTokens, cached_tokens AS cachedTokens, completion_tokens AS completionTokens, scored_tokens AS scoredTokens', json: [] },
  { type: 'response', table: 'stored_responses', columns: 'id, created_at AS createdAt, previous_response_id AS previousResponseId, response, items', json: ['response', 'items'] },
  { type: 'conversation', table: 'conversations', columns: 'id, created_at AS createdAt, updated_at AS updatedAt, metadata', json: ['metadata'] },
];

export interface ExportPage {
  rows: Array<Record<string, unknown>>;
  /** The rowid to read after for the next page; null when this page was the last. */
  next: number | null;
}

const parsed = (row: Record<string, unknown>, json: readonly string[]) => {
  const { _rowid, ...rest } = row;
  for (const c of json) if (typeof rest[c] === 'string') rest[c] = JSON.parse(rest[c] as string);
  return rest;
};

/** Up to `limit` of the user's rows of `t` after rowid `after` (0: from the first). */
export function exportPage(db: Db, t: ExportTable, userId: string, after: number, limit: number): ExportPage {
  const rows = statement(db, `SELECT rowid AS _rowid, ${t.columns} FROM ${t.table} WHERE user_id = ? AND rowid > ? ORDER BY rowid LIMIT ?`).all(userId, after, limit) as Array<Record<string, unknown>>;
  return { rows: rows.map((r) => parsed(r, t.json)), next: rows.length === limit ? (rows.at(-1)!._rowid as number) : null };
}

/** Up to `limit` items of a conversation after seq `after`, in order (each the item as stored, with its id). */
export function conversationItemsPage(db: Db, conversationId: string, after: number, limit: number): ExportPage {
  const rows = statement(db, 'SELECT seq, item FROM conversation_items WHERE conversation_id = ? AND seq > ? ORDER BY seq LIMIT ?').all(conversationId, after, limit) as Array<{ seq: number; item: string }>;
  return { rows: rows.map((r) => JSON.parse(r.item) as Record<string, unknown>), next: rows.length === limit ? rows.at(-1)!.seq : null };
}
