/**
 * Statements prepared once per connection for the queries every request runs (user lookup, the
 * active adapter, memory search): preparing a statement costs more than running it (measured on the
 * bench database: the active-adapter lookup 130 us built by drizzle per call, 30 us prepared; a raw
 * user lookup 15-20 us prepared per call, 7-10 us cached). A prepared statement reads the database as
 * it is when it runs, so a version activated a moment ago is seen by the next request.
 */
import type Database from 'better-sqlite3';
import type { Db } from './client.js';

const prepared = new WeakMap<Database.Database, Map<string, unknown>>();

/** A query built and prepared once per connection under `key` (drizzle's `.prepare()`, with placeholders). */
export function preparedQuery<T>(db: Db, key: string, make: () => T): T {
  let m = prepared.get(db.sqlite);
  if (!m) prepared.set(db.sqlite, (m = new Map()));
  let q = m.get(key) as T | undefined;
  if (q === undefined) m.set(key, (q = make()));
  return q;
}

/** The raw statement for `sql` on this connection, prepared at its first use. */
export function statement(db: Db, sql: string): Database.Statement {
  return preparedQuery(db, `sql:${sql}`, () => db.sqlite.prepare(sql));
}
