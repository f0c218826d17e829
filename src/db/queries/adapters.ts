/** Adapter versions: numbered per user, at most one active (enforced by a partial unique index). */
import { and, desc, eq, max, sql } from 'drizzle-orm';
import { inTransaction, type Db } from '../client.js';
import { preparedQuery } from '../statements.js';
import { AdapterActiveError, NotFoundError } from '../errors.js';
import { adapterVersions, type AdapterVersionRow, type JsonObject } from '../schema.js';
import { userExists } from './users.js';

export type AdapterVersion = AdapterVersionRow;

export interface NewAdapterVersion {
  userId: string;
  config: JsonObject;
  filePath: string;
  sha256: string;
  metrics: JsonObject;
  status: string;
  /** Make it the active version in the same transaction. */
  activate?: boolean;
}

/** Inserts the next version number for the user (max + 1, starting at 1), optionally activating it. */
export function createAdapterVersion(db: Db, input: NewAdapterVersion, now: number = Date.now()): AdapterVersion {
  return inTransaction(db, () => {
    if (!userExists(db, input.userId)) throw new NotFoundError('user_not_found', input.userId);
    const last =
      db.orm
        .select({ v: max(adapterVersions.version) })
        .from(adapterVersions)
        .where(eq(adapterVersions.userId, input.userId))
        .get()?.v ?? 0;
    if (input.activate) {
      db.orm.update(adapterVersions).set({ active: 0 }).where(eq(adapterVersions.userId, input.userId)).run();
    }
    return db.orm
      .insert(adapterVersions)
      .values({
        userId: input.userId,
        version: last + 1,
        config: input.config,
        filePath: input.filePath,
        sha256: input.sha256,
        metrics: input.metrics,
        status: input.status,
        active: input.activate ? 1 : 0,
        createdAt: now,
      })
      .returning()
      .get();
  });
}

/** All versions of a user, newest first. */
export function listAdapterVersions(db: Db, userId: string): AdapterVersion[] {
  return db.orm
    .select()
    .from(adapterVersions)
    .where(eq(adapterVersions.userId, userId))
    .orderBy(desc(adapterVersions.version))
    .all();
}

export function getAdapterVersion(db: Db, userId: string, version: number): AdapterVersion | undefined {
  return db.orm
    .select()
    .from(adapterVersions)
    .where(and(eq(adapterVersions.userId, userId), eq(adapterVersions.version, version)))
    .get();
}

export function getActiveAdapter(db: Db, userId: string): AdapterVersion | undefined {
  return preparedQuery(db, 'getActiveAdapter', () =>
    db.orm
      .select()
      .from(adapterVersions)
      .where(and(eq(adapterVersions.userId, sql.placeholder('userId')), eq(adapterVersions.active, 1)))
      .prepare(),
  ).get({ userId });
}

/** Makes `version` the user's only active version (or none, with null). Throws if the version does not exist. */
export function activateAdapterVersion(db: Db, userId: string, version: number | null): AdapterVersion | undefined {
  return inTransaction(db, () => {
    if (version !== null && !getAdapterVersion(db, userId, version)) {
      throw new NotFoundError('adapter_not_found', `${userId}@${version}`);
    }
    db.orm.update(adapterVersions).set({ active: 0 }).where(eq(adapterVersions.userId, userId)).run();
    if (version === null) return undefined;
    return db.orm
      .update(adapterVersions)
      .set({ active: 1 })
      .where(and(eq(adapterVersions.userId, userId), eq(adapterVersions.version, version)))
      .returning()
      .get();
  });
}

/** Status changes (e.g. quarantining a corrupt file); does not touch the active flag. */
export function setAdapterStatus(db: Db, userId: string, version: number, status: string): AdapterVersion | undefined {
  return db.orm
    .update(adapterVersions)
    .set({ status })
    .where(and(eq(adapterVersions.userId, userId), eq(adapterVersions.version, version)))
    .returning()
    .get();
}

/**
 * Marks an inactive version deleted (status `deletedStatus`, the store's; its files are removed after
 * this commits; the row stays, so version numbers are never reused). Throws adapter_not_found, or adapter_active for the active
 * version. Returns the row and whether it was deleted already.
 */
export function markAdapterVersionDeleted(db: Db, userId: string, version: number, deletedStatus: string): { row: AdapterVersion; already: boolean } {
  return inTransaction(db, () => {
    const row = getAdapterVersion(db, userId, version);
    if (!row) throw new NotFoundError('adapter_not_found', `${userId}@${version}`);
    if (row.active === 1) throw new AdapterActiveError(userId, version);
    if (row.status === deletedStatus) return { row, already: true };
    return { row: setAdapterStatus(db, userId, version, deletedStatus)!, already: false };
  });
}
