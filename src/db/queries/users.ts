/** Users: create-or-update, read, list by id, delete with a count of everything removed. */
import { asc, count, eq, gt } from 'drizzle-orm';
import { inTransaction, type Db } from '../client.js';
import { statement } from '../statements.js';
import { clampLimit, decodeCursor, isShortString, pageOf, type Page } from '../cursor.js';
import { adapterVersions, conversations, historyItems, injectionJobs, storedResponses, trials, usageDaily, users, type JsonObject, type UserRow } from '../schema.js';

export type User = UserRow;

export interface PutUserInput {
  id: string;
  /** undefined keeps the stored metadata; null clears it. */
  metadata?: JsonObject | null;
}

/**
 * Idempotent create: inserts the user if missing, otherwise updates metadata when given.
 * `created` says which happened (the HTTP layer answers 201 or 200 from it).
 */
export function createUser(db: Db, input: PutUserInput, now: number = Date.now()): { user: User; created: boolean } {
  return inTransaction(db, () => {
    const existing = db.orm.select().from(users).where(eq(users.id, input.id)).get();
    if (!existing) {
      const user = db.orm
        .insert(users)
        .values({ id: input.id, createdAt: now, updatedAt: now, metadata: input.metadata ?? null })
        .returning()
        .get();
      return { user, created: true };
    }
    if (input.metadata === undefined) return { user: existing, created: false };
    const user = db.orm
      .update(users)
      .set({ metadata: input.metadata, updatedAt: now })
      .where(eq(users.id, input.id))
      .returning()
      .get();
    return { user, created: false };
  });
}

export function getUser(db: Db, id: string): User | undefined {
  return db.orm.select().from(users).where(eq(users.id, id)).get();
}

export function userExists(db: Db, id: string): boolean {
  return statement(db, 'SELECT 1 FROM users WHERE id = ?').get(id) !== undefined;
}

/** Users in id order; the cursor is the last id of the previous page. */
export function listUsers(db: Db, opts: { cursor?: string; limit?: number } = {}): Page<User> {
  const limit = clampLimit(opts.limit, 100, 1000);
  const after = opts.cursor === undefined ? undefined : decodeCursor(opts.cursor, isShortString);
  const rows = db.orm
    .select()
    .from(users)
    .where(after === undefined ? undefined : gt(users.id, after))
    .orderBy(asc(users.id))
    .limit(limit + 1)
    .all();
  return pageOf(rows, limit, (u) => u.id);
}

export interface DeletedUserCounts {
  historyItems: number;
  jobs: number;
  trials: number;
  adapterVersions: number;
  /** Days of metered usage (usage_daily rows). */
  usageDays: number;
  /** Stored responses of the Responses API (expired ones not yet purged included). */
  responses: number;
  /** Conversations of the Conversations API they own (with their items). */
  conversations: number;
}

/** Deletes the user and (by cascade) every row they own; undefined if there was no such user. */
export function deleteUser(db: Db, id: string): DeletedUserCounts | undefined {
  return inTransaction(db, () => {
    if (!userExists(db, id)) return undefined;
    const countOf = (table: typeof historyItems | typeof injectionJobs | typeof trials | typeof adapterVersions | typeof usageDaily | typeof storedResponses | typeof conversations) =>
      db.orm.select({ n: count() }).from(table).where(eq(table.userId, id)).get()?.n ?? 0;
    const counts: DeletedUserCounts = {
      historyItems: countOf(historyItems),
      jobs: countOf(injectionJobs),
      trials: countOf(trials),
      adapterVersions: countOf(adapterVersions),
      usageDays: countOf(usageDaily),
      responses: countOf(storedResponses),
      conversations: countOf(conversations),
    };
    db.orm.delete(users).where(eq(users.id, id)).run();
    return counts;
  });
}
