/**
 * Opens the SQLite database with the pragmas the service relies on and applies pending migrations.
 * One Db per process (or per worker thread): better-sqlite3 is synchronous, so a connection must
 * not be shared across threads.
 */
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { drizzle, type BetterSQLite3Database } from 'drizzle-orm/better-sqlite3';
import { migrate } from 'drizzle-orm/better-sqlite3/migrator';
import * as schema from './schema.js';

/** migrations/ at the repository root: this file is src/db/client.ts or dist/db/client.js. */
export const MIGRATIONS_DIR: string = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'migrations');

export type Orm = BetterSQLite3Database<typeof schema>;

export interface Db {
  /** The raw better-sqlite3 connection, for pragmas, FTS5 queries and transactions. */
  sqlite: Database.Database;
  /** Typed drizzle queries over the same connection. */
  orm: Orm;
  /** The file path given to openDb (":memory:" for an in-memory database). */
  file: string;
  close(): void;
}

export interface OpenDbOptions {
  /** Apply pending migrations (default true). Worker threads that open a second connection may skip it. */
  migrate?: boolean;
  /** How long a writer waits on a locked database before SQLITE_BUSY, in ms (default 5000). */
  busyTimeoutMs?: number;
  readonly?: boolean;
}

export class DbError extends Error {
  constructor(
    readonly code: 'db_open_failed' | 'db_migration_failed',
    message: string,
    readonly file: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'DbError';
  }
}

export function openDb(file: string, options: OpenDbOptions = {}): Db {
  const { migrate: runMigrations = true, busyTimeoutMs = 5000, readonly = false } = options;
  let sqlite: Database.Database;
  try {
    if (file !== ':memory:' && !readonly) mkdirSync(dirname(resolve(file)), { recursive: true });
    sqlite = new Database(file, { readonly });
  } catch (err) {
    throw new DbError('db_open_failed', `cannot open database ${file}: ${(err as Error).message}`, file, { cause: err });
  }
  try {
    // WAL lets readers proceed during a write; NORMAL sync is durable across process crashes in WAL
    // mode (only an OS crash can lose the last transactions), at a fraction of FULL's fsyncs.
    if (!readonly) sqlite.pragma('journal_mode = WAL');
    sqlite.pragma('foreign_keys = ON');
    sqlite.pragma(`busy_timeout = ${Math.max(0, Math.floor(busyTimeoutMs))}`);
    sqlite.pragma('synchronous = NORMAL');
    const orm = drizzle(sqlite, { schema });
    if (runMigrations && !readonly) {
      try {
        migrate(orm, { migrationsFolder: MIGRATIONS_DIR });
      } catch (err) {
        throw new DbError('db_migration_failed', `cannot migrate database ${file}: ${(err as Error).message}`, file, {
          cause: err,
        });
      }
    }
    return {
      sqlite,
      orm,
      file,
      close: () => {
        if (sqlite.open) sqlite.close();
      },
    };
  } catch (err) {
    sqlite.close();
    throw err;
  }
}

/** Runs fn in one IMMEDIATE transaction (takes the write lock up front, so no upgrade deadlock). */
export function inTransaction<T>(db: Db, fn: () => T): T {
  return db.sqlite.transaction(fn).immediate();
}
