/**
 * Start-up agreement between the adapter store and the adapter_versions table.
 *
 * The write protocol (store.ts: temp dir, fsync, rename; then the caller commits the row) leaves
 * exactly three kinds of disagreement after a crash or a bad disk, and each has one repair:
 *   - `.tmp-*` leftovers (a write or removal was interrupted): removed;
 *   - orphans, adapter dirs no row names (death between the rename and the db commit): removed;
 *   - rows whose files are missing or fail their checksum/validation: status `missing` or
 *     `quarantined` (the files moved to the user's quarantine/), and the version is no longer active,
 *     so the user falls back to memory or vanilla serving instead of failing on every request.
 * Rows for adapters of another base model are reported and left alone: the files are fine, the
 * server is configured for a different model.
 *
 * Run it before the job runner starts: a write in flight looks exactly like a leftover or an orphan
 * (minAgeMs guards against that when it cannot be avoided).
 */
import { inTransaction, type Db } from '../db/client.js';
import { activateAdapterVersion, getAdapterVersion, setAdapterStatus } from '../db/queries/adapters.js';
import { adapterVersions, type AdapterVersionRow } from '../db/schema.js';
import { AdapterStoreError, type AdapterStore } from './store.js';

export const ADAPTER_STATUS = {
  ready: 'ready',
  missing: 'missing',
  quarantined: 'quarantined',
  /** Deleted by an operator: the row stays (version numbers are never reused), the files go. */
  deleted: 'deleted',
} as const;

/** Statuses that mean "no usable files": such rows are never loaded or re-checked. */
const DEAD = new Set<string>([ADAPTER_STATUS.missing, ADAPTER_STATUS.quarantined, ADAPTER_STATUS.deleted]);

export interface RowRef {
  userId: string;
  version: number;
  path: string;
}

export interface ConsistencyReport {
  /** Whether repairs were applied (false: everything below is only what would be done). */
  repaired: boolean;
  rowsChecked: number;
  rowsOk: number;
  temps: string[];
  orphans: string[];
  missing: Array<RowRef & { reason: string }>;
  corrupt: Array<RowRef & { reason: string; quarantinedTo?: string }>;
  incompatible: Array<RowRef & { reason: string }>;
  /** Versions whose active flag was cleared (bad files, or dead rows still marked active). */
  deactivated: Array<{ userId: string; version: number }>;
  /** Entries under the root the store does not recognise (never touched). */
  unknown: string[];
  /** I/O errors that stopped one repair step (the check carries on with the rest). */
  errors: Array<{ path: string; error: string }>;
}

export interface ConsistencyOptions {
  /** Apply repairs (default true); false reports only. */
  repair?: boolean;
  /** Hash every live row's file (default true). false only checks that the files are there; reads still verify on first load. */
  checksums?: boolean;
  /** Leave temps and orphans younger than this alone (a writer may still be at work). Default 0. */
  minAgeMs?: number;
  onProgress?: (done: number, total: number) => void;
  now?: () => number;
}

/**
 * Take a version out of service: deactivate it (the user falls back) and set its status; for
 * `quarantined`, move the files aside first. The serving path calls this too when a load fails
 * with adapter_corrupt / adapter_missing. Returns the quarantine path when files were moved.
 * A version an operator deleted, or whose row is gone (its user erased), is left as it is: its files
 * were removed on purpose, and a load that had planned it before finds them gone or half gone;
 * `deleted` must stay, and an erased user's leftovers must not be kept in quarantine.
 */
export async function markAdapterBad(
  db: Db,
  store: AdapterStore,
  row: Pick<AdapterVersionRow, 'userId' | 'version' | 'filePath' | 'active'>,
  kind: 'missing' | 'quarantined',
  reason: string,
): Promise<string | undefined> {
  const isDeleted = (): boolean => {
    const now = getAdapterVersion(db, row.userId, row.version);
    return now === undefined || now.status === ADAPTER_STATUS.deleted;
  };
  if (isDeleted()) return undefined;
  let movedTo: string | undefined;
  if (kind === 'quarantined') {
    try {
      movedTo = await store.quarantine(row.filePath, `${reason} (user version ${row.version})`);
    } catch (e) {
      // Already gone or not ours to move: the row is still taken out of service.
      if (!(e instanceof AdapterStoreError) || (e.code !== 'adapter_missing' && e.code !== 'bad_adapter_path')) throw e;
    }
  }
  // Deactivate and set the status together: a crash between them must not leave a dead active row.
  inTransaction(db, () => {
    if (isDeleted()) return; // deleted while the files were moved aside
    if (row.active === 1) activateAdapterVersion(db, row.userId, null);
    setAdapterStatus(db, row.userId, row.version, kind);
  });
  return movedTo;
}

const reasonOf = (e: unknown): string => (e instanceof Error ? e.message : String(e));

/**
 * How a failed read of a version's files takes the version out of service: `quarantined` when the
 * bytes are bad (checksum, validation), `missing` when the files are gone or the row names no file
 * of the store, null when the files may be fine (I/O trouble, an adapter of another base model).
 */
export function outOfServiceKind(e: unknown): 'quarantined' | 'missing' | null {
  const code = e instanceof AdapterStoreError ? e.code : undefined;
  if (code === 'adapter_corrupt') return 'quarantined';
  if (code === 'adapter_missing' || code === 'bad_adapter_path' || code === 'bad_checksum') return 'missing';
  return null;
}

export type VersionFilesCheck =
  | { ok: true }
  | {
      ok: false;
      /** The store's error code (adapter_corrupt, adapter_missing, adapter_model_mismatch, adapter_io, ...). */
      code: string;
      message: string;
      /** What the version became (null: left as it was, the files may be fine). */
      takenOutAs: 'quarantined' | 'missing' | null;
    };

/**
 * Read one version's files as serving reads them, its checksum verified whatever the store's verify
 * mode; when they fail in a way that says the version is dead, take it out of service
 * (markAdapterBad) before reporting. For an operator about to make a version active.
 */
export async function checkVersionFiles(
  db: Db,
  store: AdapterStore,
  row: Pick<AdapterVersionRow, 'userId' | 'version' | 'filePath' | 'sha256' | 'active'>,
): Promise<VersionFilesCheck> {
  try {
    await store.read(row.filePath, row.sha256, { userId: row.userId, verify: 'always' });
    return { ok: true };
  } catch (e) {
    if (!(e instanceof AdapterStoreError)) throw e;
    const kind = outOfServiceKind(e);
    if (kind) await markAdapterBad(db, store, row, kind, e.message);
    return { ok: false, code: e.code, message: e.message, takenOutAs: kind };
  }
}

export async function checkAdapterStore(db: Db, store: AdapterStore, options: ConsistencyOptions = {}): Promise<ConsistencyReport> {
  const repair = options.repair ?? true;
  const checksums = options.checksums ?? true;
  const now = options.now ?? Date.now;
  const oldEnough = (mtimeMs: number): boolean => now() - mtimeMs >= (options.minAgeMs ?? 0);
  const report: ConsistencyReport = {
    repaired: repair,
    rowsChecked: 0,
    rowsOk: 0,
    temps: [],
    orphans: [],
    missing: [],
    corrupt: [],
    incompatible: [],
    deactivated: [],
    unknown: [],
    errors: [],
  };
  const rows = db.orm.select().from(adapterVersions).all();
  const scan = await store.scan();
  report.unknown = scan.unknown;

  for (const t of scan.temps) {
    if (!oldEnough(t.mtimeMs)) continue;
    report.temps.push(t.path);
    if (repair) await store.removeTemp(t.path).catch((e) => report.errors.push({ path: t.path, error: reasonOf(e) }));
  }

  const live = rows.filter((r) => !DEAD.has(r.status));
  let done = 0;
  for (const row of live) {
    report.rowsChecked += 1;
    const ref: RowRef = { userId: row.userId, version: row.version, path: row.filePath };
    try {
      await store.read(row.filePath, row.sha256, { userId: row.userId, verify: checksums ? 'always' : 'never' });
      report.rowsOk += 1;
    } catch (e) {
      const code = e instanceof AdapterStoreError ? e.code : 'unknown';
      const kind = outOfServiceKind(e);
      const reason = reasonOf(e);
      try {
        if (kind === 'quarantined') {
          const entry: ConsistencyReport['corrupt'][number] = { ...ref, reason };
          if (repair) {
            const to = await markAdapterBad(db, store, row, 'quarantined', reason);
            if (to) entry.quarantinedTo = to;
          }
          report.corrupt.push(entry);
        } else if (kind === 'missing') {
          if (repair) await markAdapterBad(db, store, row, 'missing', reason);
          report.missing.push({ ...ref, reason });
        } else if (code === 'adapter_model_mismatch') {
          report.incompatible.push({ ...ref, reason });
          done += 1;
          options.onProgress?.(done, live.length);
          continue;
        } else {
          // adapter_io and the unexpected: say so, change nothing (the disk may be back next start).
          report.errors.push({ path: row.filePath, error: reason });
          done += 1;
          options.onProgress?.(done, live.length);
          continue;
        }
        if (row.active === 1) report.deactivated.push({ userId: row.userId, version: row.version });
      } catch (repairError) {
        report.errors.push({ path: row.filePath, error: `repair failed: ${reasonOf(repairError)}` });
      }
    }
    done += 1;
    options.onProgress?.(done, live.length);
  }

  // Dead rows must not stay active (a crash between older, non-transactional steps could leave one).
  for (const row of rows) {
    if (DEAD.has(row.status) && row.active === 1) {
      if (repair) activateAdapterVersion(db, row.userId, null);
      report.deactivated.push({ userId: row.userId, version: row.version });
    }
  }

  // A deleted version's directory is an orphan: left behind when a removal died after the row was marked.
  const named = new Set(rows.filter((r) => r.status !== ADAPTER_STATUS.deleted).map((r) => r.filePath));
  for (const a of scan.adapters) {
    if (named.has(a.path) || !oldEnough(a.mtimeMs)) continue;
    report.orphans.push(a.path);
    if (repair) await store.remove(a.path).catch((e) => report.errors.push({ path: a.path, error: reasonOf(e) }));
  }
  if (repair) for (const u of scan.userDirs) await store.pruneUserDir(u);
  return report;
}
