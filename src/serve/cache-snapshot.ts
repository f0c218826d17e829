/**
 * The adapter cache across restarts. At shutdown the server writes which users' adapters the cache
 * held, most recently used first (`<dataDir>/adapter-cache.json`, written whole or not at all); at the
 * next start, once the model is loaded, it warms them in the background (warm.ts: the active version
 * from the database, one load each, bad files taken out of service), least recently used first so the
 * hottest end up most recent and survive if the cache is now smaller. A deploy or a crash-free restart
 * then does not send every popular user's first request to the disk. Requests are served meanwhile;
 * MEMLORA_CACHE_RESTORE=off turns it off. The file holds user ids only, no adapter data.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import type { AdapterCache } from '../lora/cache.js';
import type { ServeLogger } from './types.js';
import type { WarmReport } from './warm.js';

export const CACHE_SNAPSHOT_FILE = 'adapter-cache.json';

const snapshotSchema = z.object({
  version: z.literal(1),
  savedAt: z.string(),
  /** Most recently used first. */
  users: z.array(z.string().min(1).max(128)),
});

export const snapshotPath = (dataDir: string): string => join(dataDir, CACHE_SNAPSHOT_FILE);

/** The users whose adapters the cache holds, most recently used first (leased ones count as most recent). */
export function cachedUsers(cache: AdapterCache): string[] {
  return [...new Set(cache.contents().map((e) => e.userId))];
}

/**
 * Write the cache's users to `file` (a temp file renamed over it, so a crash leaves the old one or the
 * new one). Returns how many were written; an empty cache leaves the file as it is.
 */
export function saveCacheSnapshot(file: string, cache: AdapterCache): number {
  const users = cachedUsers(cache);
  if (users.length === 0) return 0;
  mkdirSync(dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    writeFileSync(tmp, `${JSON.stringify({ version: 1, savedAt: new Date().toISOString(), users })}\n`);
    renameSync(tmp, file);
  } finally {
    rmSync(tmp, { force: true });
  }
  return users.length;
}

/** The users of a snapshot, most recently used first: null without a file; throws on a file that is not one. */
export function readCacheSnapshot(file: string): { users: string[]; savedAt: string } | null {
  if (!existsSync(file)) return null;
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`${file} is not JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
  const parsed = snapshotSchema.safeParse(raw);
  if (!parsed.success) throw new Error(`${file} is not an adapter cache snapshot: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
  return { users: parsed.data.users, savedAt: parsed.data.savedAt };
}

/** What the start-up restore of the adapter cache did. */
export interface RestoreReport {
  /** Users in the snapshot. */
  users: number;
  loaded: number;
  failed: number;
  /** Users without a usable adapter now, or gone. */
  noAdapter: number;
  /** Users whose adapter is in the cache when the restore ends. */
  resident: number;
  ms: number;
}

/**
 * Warm the users of the snapshot in `file` with `warm` (the engine's), least recently used first, until
 * `signal` aborts. `finished`: every user was processed, or there was nothing to restore (an unreadable
 * file is logged and counts as nothing), so the cache may be saved over the file at shutdown.
 */
export async function restoreCache(
  file: string,
  warm: (userIds: readonly string[], signal: AbortSignal) => Promise<WarmReport>,
  signal: AbortSignal,
  logger: ServeLogger,
): Promise<{ report: RestoreReport | null; finished: boolean }> {
  let snap: ReturnType<typeof readCacheSnapshot>;
  try {
    snap = readCacheSnapshot(file);
  } catch (err) {
    logger.error('adapter cache snapshot unreadable; not restored', { file, err: err instanceof Error ? err.message : String(err) });
    return { report: null, finished: true };
  }
  if (!snap) return { report: null, finished: true };
  const t0 = performance.now();
  // Least recently used first: the hottest are loaded last, so they are the most recent.
  const warmed = await warm([...snap.users].reverse(), signal);
  const count = (...outcomes: string[]): number => warmed.results.filter((r) => outcomes.includes(r.outcome)).length;
  const report: RestoreReport = {
    users: snap.users.length,
    loaded: count('loaded'),
    failed: count('failed'),
    noAdapter: count('no_adapter', 'unknown_user'),
    resident: warmed.results.filter((r) => r.resident).length,
    ms: Math.round(performance.now() - t0),
  };
  const finished = warmed.results.length === new Set(snap.users).size;
  logger.info(finished ? 'adapter cache restored' : 'adapter cache restore stopped at shutdown', { file, savedAt: snap.savedAt, ...report });
  return { report, finished };
}
