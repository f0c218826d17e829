/**
 * Cache warming: users' active adapters loaded into the adapter cache ahead of their requests (after
 * a restart, before a peak, before a load test), along the path a request takes: the version the
 * database says is active (personalize.ts planRequest), the cache's single-flight load through the
 * leaser (which takes a bad version out of service as a failed request load does), and the engine's
 * check that the adapter fits the model, which also turns B round as served (lora/adapter.ts
 * toServed), so the user's first request neither waits for the disk nor pays that transpose.
 *
 * Loads run one after another (the load thread reads one file at a time anyway) between the engine's
 * steps, and stop when `signal` aborts. Warming more bytes than the cache holds evicts the least
 * recently used: each entry says whether its adapter is still resident when warming ends.
 */
import type { Db } from '../db/client.js';
import { userExists } from '../db/queries/users.js';
import type { AnyAdapter } from '../lora/adapter.js';
import { adapterKey } from '../lora/cache.js';
import { type CacheStats, cacheStats } from './cache-admin.js';
import { type Adapters, type AdapterLeaser, planRequest } from './personalize.js';
import type { FallbackReason } from './types.js';

export type WarmOutcome =
  /** Read from the store into the cache. */
  | 'loaded'
  /** Already in the cache: nothing read. */
  | 'cached'
  /** The user has no usable active version (none, or one out of service). */
  | 'no_adapter'
  | 'unknown_user'
  /** The load failed: `reason` says how (a corrupt or missing file is taken out of service). */
  | 'failed';

/** Why a warming load failed: the file was corrupt (quarantined), gone (marked missing), or unreadable now / not for this model. */
export type WarmFailure = Extract<FallbackReason, 'adapter_corrupt' | 'adapter_missing' | 'adapter_unavailable'>;

const warmFailure = (r: FallbackReason): WarmFailure => (r === 'adapter_corrupt' || r === 'adapter_missing' ? r : 'adapter_unavailable');

export interface WarmEntry {
  userId: string;
  outcome: WarmOutcome;
  /** The active version (null without one). */
  version: number | null;
  reason?: WarmFailure;
  /** In the cache when warming ended (false: evicted by later loads, or never loaded). */
  resident: boolean;
}

export interface WarmReport {
  results: WarmEntry[];
  cache: CacheStats;
}

export async function warmAdapters(
  deps: { db: Db; adapters: Adapters; leaser: AdapterLeaser; fit: (adapter: AnyAdapter) => void; onMisfit: (userId: string, version: number, err: unknown) => void },
  userIds: readonly string[],
  signal?: AbortSignal,
): Promise<WarmReport> {
  const { db, adapters, leaser } = deps;
  const results: WarmEntry[] = [];
  for (const userId of new Set(userIds)) {
    if (signal?.aborted) break;
    if (!userExists(db, userId)) {
      results.push({ userId, outcome: 'unknown_user', version: null, resident: false });
      continue;
    }
    const plan = planRequest(db, adapters, userId, 'injected');
    if (plan.kind !== 'injected') {
      results.push({ userId, outcome: 'no_adapter', version: null, resident: false });
      continue;
    }
    const version = plan.row.version;
    if (adapters.cache.has(adapterKey(userId, version))) {
      results.push({ userId, outcome: 'cached', version, resident: true });
      continue;
    }
    const got = await leaser.acquire(userId, plan.row, { warming: true });
    if ('fallback' in got) {
      results.push({ userId, outcome: 'failed', version, reason: warmFailure(got.fallback.reason), resident: false });
      continue;
    }
    try {
      deps.fit(got.lease.adapter);
      results.push({ userId, outcome: 'loaded', version, resident: true });
    } catch (e) {
      deps.onMisfit(userId, version, e);
      results.push({ userId, outcome: 'failed', version, reason: 'adapter_unavailable', resident: false });
    } finally {
      got.lease.release();
    }
  }
  for (const r of results) if (r.resident && r.version !== null) r.resident = adapters.cache.has(adapterKey(r.userId, r.version));
  return { results, cache: cacheStats(adapters.cache) };
}
