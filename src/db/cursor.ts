/**
 * Opaque pagination cursors: base64url of the JSON of the last key a page returned. Opaque to
 * clients (they must not build them), validated on the way back in.
 */

export interface Page<T> {
  items: T[];
  /** Pass back to get the next page; null when this page is the last. */
  nextCursor: string | null;
}

export class CursorError extends Error {
  readonly code = 'invalid_cursor';
  constructor(readonly cursor: string) {
    super(`invalid cursor ${JSON.stringify(cursor.length > 64 ? `${cursor.slice(0, 64)}…` : cursor)}`);
    this.name = 'CursorError';
  }
}

export function encodeCursor(key: unknown): string {
  return Buffer.from(JSON.stringify(key), 'utf8').toString('base64url');
}

/** Decodes a cursor and checks its key shape; any malformed cursor is a CursorError. */
export function decodeCursor<T>(cursor: string, isKey: (v: unknown) => v is T): T {
  if (cursor.length === 0 || cursor.length > 1024 || !/^[A-Za-z0-9_-]+$/.test(cursor)) throw new CursorError(cursor);
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw new CursorError(cursor);
  }
  if (!isKey(value)) throw new CursorError(cursor);
  return value;
}

export const isSafeInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v);
export const isShortString = (v: unknown): v is string => typeof v === 'string' && v.length <= 256;

/** Clamps a page size to 1..max (the HTTP layer validates; this guards other callers). */
export function clampLimit(limit: number | undefined, fallback: number, max: number): number {
  if (limit === undefined || !Number.isFinite(limit)) return fallback;
  return Math.min(max, Math.max(1, Math.floor(limit)));
}

/** Builds a page from rows fetched with limit+1: the extra row only tells whether more exist. */
export function pageOf<T>(rows: T[], limit: number, keyOf: (row: T) => unknown): Page<T> {
  const more = rows.length > limit;
  const items = more ? rows.slice(0, limit) : rows;
  return { items, nextCursor: more ? encodeCursor(keyOf(items[items.length - 1])) : null };
}
