/** History items: all-or-nothing batch append, chronological listing, FTS5 bm25 search. */
import { and, asc, count, eq, gt } from 'drizzle-orm';
import { inTransaction, type Db } from '../client.js';
import { statement } from '../statements.js';
import { clampLimit, decodeCursor, isSafeInt, pageOf, type Page } from '../cursor.js';
import { NotFoundError } from '../errors.js';
import { historyItems, type HistoryItemRow, type HistoryKind, type HistoryRole } from '../schema.js';
import { userExists } from './users.js';

export type HistoryItem = HistoryItemRow;

export interface NewHistoryItem {
  kind: HistoryKind;
  role?: HistoryRole | null;
  text: string;
  /** The dialogue (session) this turn belongs to; turns of one conversation are never split apart. */
  conversationId?: string | null;
  /** ms since epoch; defaults to the time of the append (imports keep original times). */
  createdAt?: number;
}

export type SearchHit = HistoryItem & {
  /** Relevance, higher is better: the negated FTS5 bm25 rank. */
  score: number;
};

/** Appends every item in ONE transaction: either all are stored (ids ascending in input order) or none. */
export function appendHistory(db: Db, userId: string, items: readonly NewHistoryItem[], now: number = Date.now()): HistoryItem[] {
  if (items.length === 0) return [];
  return inTransaction(db, () => {
    if (!userExists(db, userId)) throw new NotFoundError('user_not_found', userId);
    return db.orm
      .insert(historyItems)
      .values(
        items.map((it) => ({
          userId,
          kind: it.kind,
          role: it.role ?? null,
          text: it.text,
          conversationId: it.conversationId ?? null,
          createdAt: it.createdAt ?? now,
        })),
      )
      .returning()
      .all();
  });
}

/** One user's history oldest first; the cursor is the last id returned. */
export function listHistory(
  db: Db,
  userId: string,
  opts: { cursor?: string; limit?: number; kind?: HistoryKind } = {},
): Page<HistoryItem> {
  const limit = clampLimit(opts.limit, 100, 1000);
  const after = opts.cursor === undefined ? undefined : decodeCursor(opts.cursor, isSafeInt);
  const rows = db.orm
    .select()
    .from(historyItems)
    .where(
      and(
        eq(historyItems.userId, userId),
        after === undefined ? undefined : gt(historyItems.id, after),
        opts.kind === undefined ? undefined : eq(historyItems.kind, opts.kind),
      ),
    )
    .orderBy(asc(historyItems.id))
    .limit(limit + 1)
    .all();
  return pageOf(rows, limit, (h) => h.id);
}

/** Every history item of a user, oldest first (dataset building). */
export function allHistory(db: Db, userId: string): HistoryItem[] {
  return db.orm.select().from(historyItems).where(eq(historyItems.userId, userId)).orderBy(asc(historyItems.id)).all();
}

export function countHistory(db: Db, userId: string): number {
  return db.orm.select({ n: count() }).from(historyItems).where(eq(historyItems.userId, userId)).get()?.n ?? 0;
}

const MAX_QUERY_TERMS = 32;

/**
 * Turns free user text into an FTS5 query that can never be FTS5 syntax: the text is cut into runs
 * of letters, digits and marks (what the unicode61 tokenizer indexes), and each run becomes a
 * double-quoted string. Operators (AND, OR, NOT, NEAR), column filters, prefix stars, parentheses,
 * carets and quotes are thereby plain words or dropped; control characters (a NUL would cut FTS5's
 * C-string parse short) never reach SQLite. Returns null when nothing searchable is left.
 * `any` joins terms with OR (bm25 ranks items matching more terms higher); `all` requires every term.
 */
export function toFtsQuery(q: string, match: 'any' | 'all' = 'any'): string | null {
  const terms = (q.match(/[\p{L}\p{N}\p{M}\p{Co}]+/gu) ?? []).slice(0, MAX_QUERY_TERMS).map((t) => `"${t}"`);
  if (terms.length === 0) return null;
  return terms.join(match === 'any' ? ' OR ' : ' AND ');
}

/** bm25-ranked search within one user's history. */
export function searchHistory(
  db: Db,
  userId: string,
  q: string,
  opts: { limit?: number; match?: 'any' | 'all' } = {},
): SearchHit[] {
  const limit = clampLimit(opts.limit, 20, 1000);
  const fts = toFtsQuery(q, opts.match);
  if (fts === null) return [];
  const rows = statement(
    db,
    `SELECT h.id AS id, h.user_id AS userId, h.kind AS kind, h.role AS role, h.text AS text,
              h.conversation_id AS conversationId, h.created_at AS createdAt, bm25(history_fts) AS rank
         FROM history_fts
         JOIN history_items h ON h.id = history_fts.rowid
        WHERE history_fts MATCH ? AND h.user_id = ?
        ORDER BY rank, h.id
        LIMIT ?`,
  ).all(fts, userId, limit) as Array<HistoryItem & { rank: number }>;
  return rows.map(({ rank, ...item }) => ({ ...item, score: -rank }));
}
