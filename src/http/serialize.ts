/** Database rows to API JSON: timestamps become ISO 8601 strings, internal columns are dropped. */
import type { AdapterVersion } from '../db/queries/adapters.js';
import type { HistoryItem, SearchHit } from '../db/queries/history.js';
import type { Job } from '../db/queries/jobs.js';
import type { User } from '../db/queries/users.js';

export const iso = (ms: number): string => new Date(ms).toISOString();
const isoOrNull = (ms: number | null): string | null => (ms === null ? null : iso(ms));

export function userJson(u: User) {
  return { id: u.id, metadata: u.metadata ?? null, createdAt: iso(u.createdAt), updatedAt: iso(u.updatedAt) };
}

export function historyJson(h: HistoryItem) {
  return { id: h.id, userId: h.userId, kind: h.kind, role: h.role ?? null, text: h.text, conversationId: h.conversationId ?? null, createdAt: iso(h.createdAt) };
}

export function searchHitJson(h: SearchHit) {
  return { ...historyJson(h), score: h.score };
}

export function jobJson(j: Job) {
  return {
    id: j.id,
    userId: j.userId,
    state: j.state,
    params: j.params,
    progress: j.progress ?? null,
    result: j.result ?? null,
    error: j.error ?? null,
    createdAt: iso(j.createdAt),
    startedAt: isoOrNull(j.startedAt),
    finishedAt: isoOrNull(j.finishedAt),
    updatedAt: iso(j.updatedAt),
  };
}

/** The file path stays internal: clients learn the version and checksum, not the server's layout. */
export function adapterJson(a: AdapterVersion) {
  return {
    userId: a.userId,
    version: a.version,
    status: a.status,
    config: a.config,
    metrics: a.metrics,
    sha256: a.sha256,
    active: a.active === 1,
    createdAt: iso(a.createdAt),
  };
}
