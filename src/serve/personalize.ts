/**
 * How a request is personalised, decided from the request's own user id only:
 *
 *   mode      the user has an active adapter   else: history matches the query   else
 *   auto      injected                         memory                            vanilla
 *   injected  injected                         memory + fallback no_adapter      vanilla + fallback no_adapter
 *   memory    memory (adapters are not used)                                     vanilla + fallback no_memory
 *   vanilla   vanilla
 *
 * `injected` without an adapter is served, not refused: the response's personalization says what was
 * used and why (`fallback`). An adapter that fails to load is taken out of service as its failure
 * says (corrupt: quarantined; missing: marked missing; both deactivated, so the next request does not
 * try again), the cache forgets it, the error is logged, and this request falls back like one
 * without an adapter, unless another version was made active since it was planned (the engine then
 * serves it with that one). Other users are not touched.
 *
 * A request that names an adapter version (`adapterVersion`: an upload kept inactive tried before it
 * is activated, two versions compared) is served with that version, active or not, or refused, never
 * given a fallback: an unknown version is adapter_not_found, one not ready or whose files fail
 * adapter_unusable (bad files taken out of service all the same; so is an inactive version trained
 * on history the user deleted since), one that cannot be read now adapter_unavailable. It leaves the
 * user's served version alone: no hot swap is noted, so the active version stays cached and its
 * prefix-cache conversations stay.
 *
 * Isolation: every id used below comes from the request's userId; adapter rows are looked up by it,
 * the store refuses a path outside that user's directory, and the lease is checked against it.
 */
import type { Db } from '../db/client.js';
import { getActiveAdapter, getAdapterVersion } from '../db/queries/adapters.js';
import { versionsTrainedOnDeleted } from '../db/queries/forgetting.js';
import type { AdapterVersionRow } from '../db/schema.js';
import { type AcquireOptions, type AdapterCache, type AdapterLease, adapterKey, userOfKey } from '../lora/cache.js';
import { ADAPTER_STATUS, markAdapterBad, outOfServiceKind } from '../lora/consistency.js';
import { AdapterStoreError, type AdapterStore } from '../lora/store.js';
import { ServeError, adapterFilesFailure, adapterVersionNotFound, adapterVersionNotReady, adapterVersionUnusable } from './errors.js';
import type { AdapterReader } from './loader.js';
import type { Fallback, FallbackReason, RequestedMode, ServeLogger } from './types.js';

export type AdapterRow = Pick<AdapterVersionRow, 'userId' | 'version' | 'filePath' | 'sha256' | 'active' | 'status'>;

/** What the database says a request should get, before anything is loaded; `pinned`: the request named the version. */
export type Plan = { kind: 'injected'; row: AdapterRow; pinned?: true } | { kind: 'memory' | 'vanilla'; fallback?: Fallback };

/** Adapters are served only when the server has a store and cache (the bench's vanilla baseline has none). */
export interface Adapters {
  /** Takes bad versions out of service (quarantine) and reads adapters unless `reader` does. */
  store: AdapterStore;
  cache: AdapterCache;
  /** Where cache misses are read from (default: the store on this thread; the server uses a load thread). */
  reader?: AdapterReader;
}

export function planRequest(db: Db, adapters: Adapters | null, userId: string, mode: RequestedMode, version?: number): Plan {
  if (version !== undefined) {
    if (mode === 'memory' || mode === 'vanilla') throw new ServeError('invalid_request', `adapterVersion serves an adapter: mode ${mode} uses none`);
    return planPinned(db, adapters, userId, version);
  }
  if (mode === 'vanilla') return { kind: 'vanilla' };
  if (mode === 'memory') return { kind: 'memory' };
  const row = adapters ? getActiveAdapter(db, userId) : undefined;
  if (row && row.status === ADAPTER_STATUS.ready) {
    if (row.userId !== userId) throw isolation(`adapter row of ${row.userId} returned for ${userId}`);
    return { kind: 'injected', row };
  }
  return { kind: 'memory', fallback: mode === 'injected' ? { from: 'injected', reason: 'no_adapter' } : undefined };
}

/** The version a request names, if it can serve: refused otherwise (pinnableVersion). */
function planPinned(db: Db, adapters: Adapters | null, userId: string, version: number): Plan {
  if (!adapters) throw new ServeError('adapters_disabled', 'this server runs without adapters: no adapter version can serve');
  return { kind: 'injected', row: pinnableVersion(db, userId, version), pinned: true };
}

/**
 * The row of a version a request may name, or its refusal: adapter_not_found where the user has no
 * such version; adapter_unusable where it is not ready (its status the reason), or where it is not
 * the active version and was trained on history the user deleted since (`trained_on_deleted_history`):
 * forgetting deactivates such a version, and a request naming it must not serve it again (only an
 * operator can, with PUT /v1/admin/users/{userId}/adapter).
 */
export function pinnableVersion(db: Db, userId: string, version: number): AdapterRow {
  const row = getAdapterVersion(db, userId, version);
  if (!row) throw adapterVersionNotFound(userId, version);
  if (row.userId !== userId) throw isolation(`adapter row of ${row.userId} returned for ${userId}`);
  if (row.status !== ADAPTER_STATUS.ready) throw adapterVersionNotReady(userId, version, row.status);
  if (!row.active) {
    const forgotten = versionsTrainedOnDeleted(db, userId).find((v) => v.version === version);
    if (forgotten) {
      const n = forgotten.deletedItems;
      throw adapterVersionUnusable(userId, version, 'trained_on_deleted_history', `it was trained on ${n} history item${n === 1 ? '' : 's'} the user deleted since; only an operator can make it serve again`);
    }
  }
  return row;
}

/**
 * The refusal of a request that named its adapter version when that version failed to load: as its
 * row says now where an operator deleted the version (or erased the user) meanwhile; else by the
 * store's error code, as activating or downloading the version is refused (adapterFilesFailure; bad
 * files are already taken out of service).
 */
export function pinnedFailure(db: Db, userId: string, version: number, code: string, message: string): ServeError {
  const now = getAdapterVersion(db, userId, version);
  if (!now) return adapterVersionNotFound(userId, version);
  if (now.status === ADAPTER_STATUS.deleted) return adapterVersionNotReady(userId, version, now.status);
  return adapterFilesFailure(userId, version, code, message);
}

function isolation(message: string): ServeError {
  return new ServeError('isolation_violation', message);
}

export class AdapterLeaser {
  /** Versions being taken out of service: concurrent failures of one version mark it once. */
  private readonly marking = new Map<string, Promise<void>>();
  /**
   * The version each user was last served with: a hot swap drops the previous one from the cache,
   * and onSwap hears of it (the engine retires the previous version's conversations).
   */
  private readonly lastVersion = new Map<string, number>();

  constructor(
    private readonly db: Db,
    private readonly adapters: Adapters,
    private readonly logger: ServeLogger,
    private readonly onSwap: (userId: string, from: number, to: number) => void = () => {},
  ) {}

  /**
   * A lease on the adapter of `row` for the request of `userId`, or the fallback to use when it cannot
   * be loaded, with the store's error code (`unknown` for any other error). Loads from the store on a
   * miss, once however many requests wait (the cache's single flight). `pinned`: the request named
   * the version, so it is not the user's served one.
   */
  async acquire(userId: string, row: AdapterRow, opts: AcquireOptions & { pinned?: boolean } = {}): Promise<{ lease: AdapterLease } | { fallback: Fallback; code: string }> {
    if (row.userId !== userId) throw isolation(`request of ${userId} asked for an adapter of ${row.userId}`);
    const key = adapterKey(userId, row.version);
    // A version the request named is not the user's served one: no hot swap to note.
    if (!opts.pinned) this.noteVersion(userId, row.version);
    const { store, cache } = this.adapters;
    let lease: AdapterLease;
    try {
      const reader = this.adapters.reader ?? store;
      lease = await cache.acquire(key, () => reader.read(row.filePath, row.sha256, { userId }), { warming: opts.warming });
    } catch (e) {
      const code = e instanceof AdapterStoreError ? e.code : 'unknown';
      return { fallback: { from: 'injected', reason: await this.failed(userId, row, key, e, code, opts.pinned === true) }, code };
    }
    if (lease.key !== key || userOfKey(lease.key) !== userId) {
      lease.release();
      throw isolation(`lease ${lease.key} handed to a request of ${userId}`);
    }
    return { lease };
  }

  private noteVersion(userId: string, version: number): void {
    const last = this.lastVersion.get(userId);
    if (last !== undefined && last !== version) {
      this.adapters.cache.invalidate(adapterKey(userId, last));
      this.onSwap(userId, last, version);
    }
    this.lastVersion.delete(userId); // re-insert: the map stays in recency order
    this.lastVersion.set(userId, version);
    if (this.lastVersion.size > 100_000) this.lastVersion.delete(this.lastVersion.keys().next().value as string);
  }

  /**
   * Take a failed version out of service as its error says; returns the fallback reason. What the
   * request gets (a fallback, the version active since, or a refusal where it named the version) is
   * the engine's to decide, and it counts the fallbacks it serves.
   */
  private async failed(userId: string, row: AdapterRow, key: string, e: unknown, code: string, pinned: boolean): Promise<FallbackReason> {
    const kind = outOfServiceKind(e);
    const reason: FallbackReason = kind === 'quarantined' ? 'adapter_corrupt' : kind === 'missing' ? 'adapter_missing' : 'adapter_unavailable';
    const then = pinned ? 'refusing the request that named it' : 'serving the fallback';
    this.adapters.cache.invalidate(key);
    const fields = { userId, version: row.version, path: row.filePath, code, err: e instanceof Error ? e.message : String(e) };
    if (!kind) {
      // I/O trouble or another base model's adapter: the file may be fine, leave it and the row alone.
      this.logger.error(`adapter unavailable; ${then}`, fields);
      return reason;
    }
    let marking = this.marking.get(key);
    if (!marking) {
      // The row as it is now: a version activated since this request looked must stay active.
      const current = getAdapterVersion(this.db, userId, row.version) ?? { ...row, active: 0 };
      marking = markAdapterBad(this.db, this.adapters.store, current, kind, e instanceof Error ? e.message : String(e))
        .then((to) => this.logger.error(`adapter ${kind}; ${then}`, { ...fields, quarantinedTo: to ?? null }))
        .catch((err) => this.logger.error('could not take a bad adapter out of service', { ...fields, markError: String(err) }))
        .finally(() => this.marking.delete(key));
      this.marking.set(key, marking);
    }
    await marking;
    return reason;
  }
}
