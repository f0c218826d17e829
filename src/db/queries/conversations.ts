/**
 * Conversations of OpenAI's Conversations API (conversations, conversation_items): created, read,
 * their metadata replaced, deleted; items appended in order, listed in pages, read and deleted one by
 * one. A conversation unchanged for longer than the retention is gone for readers at once, and purged
 * (with its items, by cascade) at most PURGE_BATCH at a time by the writes that create conversations
 * and by the server's retention sweep (src/retention.ts).
 * An unowned conversation becomes the user's whose response first adds to it.
 */
import type { Db } from '../client.js';
import { statement } from '../statements.js';
import { PURGE_BATCH } from './responses.js';

export interface Conversation {
  id: string;
  /** Null until a user uses it (or was named at its creation). */
  userId: string | null;
  createdAt: number;
  updatedAt: number;
  metadata: Record<string, string>;
}

/** An item of a conversation, as stored: its JSON object with its id. */
export type ConversationItem = Record<string, unknown> & { id: string };

interface Row {
  id: string;
  user_id: string | null;
  created_at: number;
  updated_at: number;
  metadata: string;
}

const conversationOf = (r: Row): Conversation => ({ id: r.id, userId: r.user_id, createdAt: r.created_at, updatedAt: r.updated_at, metadata: JSON.parse(r.metadata) as Record<string, string> });

function append(db: Db, conversationId: string, items: readonly ConversationItem[]): void {
  const insert = statement(db, 'INSERT INTO conversation_items (id, conversation_id, item) VALUES (?, ?, ?)');
  for (const item of items) insert.run(item.id, conversationId, JSON.stringify(item));
}

/** Deletes up to `limit` conversations unchanged since before `keepSince` (ms), with their items, oldest first; how many. */
export function purgeExpiredConversations(db: Db, keepSince: number, limit = PURGE_BATCH): number {
  return statement(db, 'DELETE FROM conversations WHERE rowid IN (SELECT rowid FROM conversations WHERE updated_at < ? ORDER BY updated_at LIMIT ?)').run(keepSince, limit).changes;
}

/** Creates a conversation with its first items, first purging up to PURGE_BATCH conversations unchanged since before `keepSince`; how many it purged. */
export function createConversation(db: Db, c: Conversation, items: readonly ConversationItem[], keepSince: number): number {
  return db.sqlite
    .transaction(() => {
      const purged = purgeExpiredConversations(db, keepSince);
      statement(db, 'INSERT INTO conversations (id, user_id, created_at, updated_at, metadata) VALUES (?, ?, ?, ?, ?)').run(c.id, c.userId, c.createdAt, c.updatedAt, JSON.stringify(c.metadata));
      append(db, c.id, items);
      return purged;
    })
    .immediate();
}

/** The conversation `id` if it changed at or after `keepSince` (ms). */
export function getConversation(db: Db, id: string, keepSince: number): Conversation | undefined {
  const row = statement(db, 'SELECT * FROM conversations WHERE id = ? AND updated_at >= ?').get(id, keepSince) as Row | undefined;
  return row && conversationOf(row);
}

/** Replaces the metadata; the conversation as it is now, or undefined if there is none. */
export function updateConversationMetadata(db: Db, id: string, metadata: Record<string, string>, keepSince: number, now = Date.now()): Conversation | undefined {
  const changed = statement(db, 'UPDATE conversations SET metadata = ?, updated_at = ? WHERE id = ? AND updated_at >= ?').run(JSON.stringify(metadata), now, id, keepSince).changes;
  return changed > 0 ? getConversation(db, id, keepSince) : undefined;
}

/** Deletes the conversation and its items; whether it was there. */
export function deleteConversation(db: Db, id: string, keepSince: number): boolean {
  return statement(db, 'DELETE FROM conversations WHERE id = ? AND updated_at >= ?').run(id, keepSince).changes > 0;
}

/**
 * Appends items to a conversation (which counts as a change); with `owner`, a user's response adding
 * them, only to an unowned conversation (which becomes theirs) or one of theirs. False if the
 * conversation is gone (or another user's).
 */
export function appendConversationItems(db: Db, id: string, items: readonly ConversationItem[], keepSince: number, owner?: string, now = Date.now()): boolean {
  return db.sqlite
    .transaction(() => {
      const touched =
        owner === undefined
          ? statement(db, 'UPDATE conversations SET updated_at = ? WHERE id = ? AND updated_at >= ?').run(now, id, keepSince)
          : statement(db, 'UPDATE conversations SET updated_at = ?, user_id = ? WHERE id = ? AND updated_at >= ? AND (user_id IS NULL OR user_id = ?)').run(now, owner, id, keepSince, owner);
      if (touched.changes === 0) return false;
      append(db, id, items);
      return true;
    })
    .immediate();
}

/** How many items the conversation holds. */
export function countConversationItems(db: Db, id: string): number {
  return (statement(db, 'SELECT count(*) AS n FROM conversation_items WHERE conversation_id = ?').get(id) as { n: number }).n;
}

/** The conversation's last `limit` items, oldest first. */
export function lastConversationItems(db: Db, id: string, limit: number): ConversationItem[] {
  const rows = statement(db, 'SELECT item FROM conversation_items WHERE conversation_id = ? ORDER BY seq DESC LIMIT ?').all(id, limit) as Array<{ item: string }>;
  return rows.reverse().map((r) => JSON.parse(r.item) as ConversationItem);
}

/**
 * A page of the conversation's items: `limit` of them in `order` after the item `after` (undefined:
 * from the start); null when `after` is not an item of the conversation.
 */
export function pageConversationItems(db: Db, id: string, opts: { limit: number; order: 'asc' | 'desc'; after?: string }): { items: ConversationItem[]; hasMore: boolean } | null {
  let from: number | undefined;
  if (opts.after !== undefined) {
    const at = statement(db, 'SELECT seq FROM conversation_items WHERE conversation_id = ? AND id = ?').get(id, opts.after) as { seq: number } | undefined;
    if (at === undefined) return null;
    from = at.seq;
  }
  const sql =
    opts.order === 'asc'
      ? 'SELECT item FROM conversation_items WHERE conversation_id = ? AND seq > ? ORDER BY seq LIMIT ?'
      : 'SELECT item FROM conversation_items WHERE conversation_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?';
  const rows = statement(db, sql).all(id, from ?? (opts.order === 'asc' ? -1 : Number.MAX_SAFE_INTEGER), opts.limit + 1) as Array<{ item: string }>;
  return { items: rows.slice(0, opts.limit).map((r) => JSON.parse(r.item) as ConversationItem), hasMore: rows.length > opts.limit };
}

/** One item of the conversation. */
export function getConversationItem(db: Db, id: string, itemId: string): ConversationItem | undefined {
  const row = statement(db, 'SELECT item FROM conversation_items WHERE conversation_id = ? AND id = ?').get(id, itemId) as { item: string } | undefined;
  return row && (JSON.parse(row.item) as ConversationItem);
}

/** Deletes one item (a change of the conversation); whether it was there. */
export function deleteConversationItem(db: Db, id: string, itemId: string, now = Date.now()): boolean {
  return db.sqlite
    .transaction(() => {
      if (statement(db, 'DELETE FROM conversation_items WHERE conversation_id = ? AND id = ?').run(id, itemId).changes === 0) return false;
      statement(db, 'UPDATE conversations SET updated_at = ? WHERE id = ?').run(now, id);
      return true;
    })
    .immediate();
}

/** What the conversations a user owns hold: how many, their items, and the bytes of the items' JSON. */
export function conversationsOf(db: Db, userId: string): { count: number; items: number; bytes: number } {
  const c = statement(db, 'SELECT count(*) AS n FROM conversations WHERE user_id = ?').get(userId) as { n: number };
  const i = statement(db, 'SELECT count(*) AS n, coalesce(sum(length(i.item)), 0) AS bytes FROM conversation_items i JOIN conversations c ON c.id = i.conversation_id WHERE c.user_id = ?').get(userId) as { n: number; bytes: number };
  return { count: c.n, items: i.n, bytes: i.bytes };
}

/** Deletes every conversation the user owns with its items; how many conversations and items. */
export function deleteConversationsOf(db: Db, userId: string): { conversations: number; items: number } {
  const items = (statement(db, 'SELECT count(*) AS n FROM conversation_items i JOIN conversations c ON c.id = i.conversation_id WHERE c.user_id = ?').get(userId) as { n: number }).n;
  return { conversations: statement(db, 'DELETE FROM conversations WHERE user_id = ?').run(userId).changes, items };
}
