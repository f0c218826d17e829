/**
 * A user's adapter versions: the active one, all of them, and (admin) which one serves the user and
 * deleting an old one (its files go, its row stays with status `deleted`: numbers are never reused).
 *
 * Making a version active is a hot swap: the next request of the user is served with it, requests
 * already running finish on the version they started with, and nothing restarts. Before the swap the
 * version's files are read as serving reads them (checksum, validation against the base model), so
 * an operator rolling back to an old version learns at once that its files are bad, and such a
 * version is taken out of service (quarantined or marked missing) instead of failing later requests.
 */
import type { Hono } from 'hono';
import { inTransaction } from '../../db/client.js';
import { activateAdapterVersion, getActiveAdapter, getAdapterVersion, listAdapterVersions, markAdapterVersionDeleted } from '../../db/queries/adapters.js';
import { versionsTrainedOnDeleted } from '../../db/queries/forgetting.js';
import { activeJobForUser } from '../../db/queries/jobs.js';
import { userExists } from '../../db/queries/users.js';
import { JobActiveError } from '../../db/errors.js';
import { ADAPTER_STATUS } from '../../lora/consistency.js';
import type { AppEnv, RouteDeps } from '../context.js';
import { ApiError } from '../errors.js';
import { activateAdapterBody } from '../schemas.js';
import { adapterJson } from '../serialize.js';
import { readJson, userIdParam } from '../validate.js';
import { userNotFound } from './users.js';

function versionNotFound(userId: string, version: number): ApiError {
  return new ApiError(404, 'adapter_not_found', `user ${JSON.stringify(userId)} has no adapter version ${version}`, { userId, version });
}

function unusable(userId: string, version: number, reason: string, message: string): ApiError {
  return new ApiError(409, 'adapter_unusable', `adapter version ${version} of ${JSON.stringify(userId)} cannot serve: ${message}`, { userId, version, reason });
}

/**
 * Delete a version that is not active: the row first (nothing can make it active afterwards), then
 * the files: a removal that dies half-way leaves a directory no live row names, which the start-up
 * check collects as an orphan. `already`: it was deleted before (nothing removed now).
 */
export async function deleteAdapterVersion(deps: Pick<RouteDeps, 'db' | 'services' | 'logger'>, userId: string, version: number, why?: string) {
  const { row, already } = markAdapterVersionDeleted(deps.db, userId, version, ADAPTER_STATUS.deleted);
  const removed = deps.services.adapterFiles.removeVersion ? await deps.services.adapterFiles.removeVersion(row) : { files: 0, bytes: 0 };
  if (!already) deps.logger.info(why ? `adapter version deleted: ${why}` : 'adapter version deleted', { userId, version, ...removed });
  return { row, removed, already };
}

export function registerAdapterRoutes(app: Hono<AppEnv>, deps: RouteDeps): void {
  const { db, config, services, logger } = deps;

  app.get('/v1/users/:userId/adapter', (c) => {
    const userId = userIdParam(c);
    if (!userExists(db, userId)) throw userNotFound(userId);
    const active = getActiveAdapter(db, userId);
    if (!active) {
      throw new ApiError(404, 'adapter_not_found', `user ${JSON.stringify(userId)} has no active adapter`, { userId });
    }
    return c.json(adapterJson(active));
  });

  app.get('/v1/users/:userId/adapters', (c) => {
    const userId = userIdParam(c);
    if (!userExists(db, userId)) throw userNotFound(userId);
    const trained = new Map(versionsTrainedOnDeleted(db, userId).map((v) => [v.version, v.deletedItems]));
    return c.json({ items: listAdapterVersions(db, userId).map((v) => ({ ...adapterJson(v), deletedItemsTrainedOn: trained.get(v.version) ?? 0 })) });
  });

  app.put('/v1/admin/users/:userId/adapter', async (c) => {
    const userId = userIdParam(c);
    const { version } = await readJson(c, activateAdapterBody, config.bodyLimitBytes);
    if (!userExists(db, userId)) throw userNotFound(userId);
    if (version !== null) {
      const row = getAdapterVersion(db, userId, version);
      if (!row) throw versionNotFound(userId, version);
      if (row.status !== ADAPTER_STATUS.ready) throw unusable(userId, version, row.status, `its files are ${row.status}`);
      const checked = await services.adapterFiles.checkVersion?.(row);
      if (checked && !checked.ok) {
        logger.error('adapter version refused for activation', { userId, version, code: checked.code, takenOutAs: checked.takenOutAs, err: checked.message });
        if (checked.code === 'adapter_io') throw new ApiError(503, 'adapter_unavailable', `adapter version ${version} could not be read now: ${checked.message}`, { userId, version }, { 'retry-after': '1' });
        throw unusable(userId, version, checked.code, checked.message);
      }
    }
    // One transaction: the job check, the re-read and the swap see the same database.
    const { active, previous } = inTransaction(db, () => {
      // A running injection job would activate its own result when it finishes: cancel it first.
      const job = activeJobForUser(db, userId);
      if (job) throw new JobActiveError(userId, job.id, job.state);
      const previous = getActiveAdapter(db, userId)?.version ?? null;
      if (version !== null) {
        const row = getAdapterVersion(db, userId, version);
        if (!row) throw versionNotFound(userId, version); // the user was deleted meanwhile
        if (row.status !== ADAPTER_STATUS.ready) throw unusable(userId, version, row.status, `its files are ${row.status}`);
      }
      return { active: activateAdapterVersion(db, userId, version), previous };
    });
    if (previous !== (active?.version ?? null)) logger.info('adapter version activated', { userId, version, previousVersion: previous });
    return c.json({ userId, active: active ? adapterJson(active) : null, previousVersion: previous });
  });

  app.delete('/v1/admin/users/:userId/adapters/:version', async (c) => {
    const userId = userIdParam(c);
    const version = versionParam(c.req.param('version'));
    if (!userExists(db, userId)) throw userNotFound(userId);
    if (!getAdapterVersion(db, userId, version)) throw versionNotFound(userId, version);
    const { row, removed } = await deleteAdapterVersion(deps, userId, version);
    return c.json({ adapter: adapterJson(row), removed });
  });
}

/** A version in a path: a positive integer below 2^31, else 422 invalid_version. */
function versionParam(raw: string): number {
  const n = /^[1-9][0-9]{0,9}$/.test(raw) ? Number(raw) : NaN;
  if (!(n <= 2 ** 31 - 1)) throw new ApiError(422, 'invalid_version', 'adapter versions are positive integers', { version: raw.slice(0, 40) });
  return n;
}
