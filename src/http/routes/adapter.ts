/**
 * A user's adapter versions: the active one, all of them, and (admin) which one serves the user and
 * deleting an old one (its files go, its row stays with status `deleted`: numbers are never reused).
 *
 * Making a version active is a hot swap: the next request of the user is served with it, requests
 * already running finish on the version they started with, and nothing restarts. Before the swap the
 * version's files are read as serving reads them (checksum, validation against the base model), so
 * an operator rolling back to an old version learns at once that its files are bad, and such a
 * version is taken out of service (quarantined or marked missing) instead of failing later requests.
 *
 * A version's files can be downloaded (the PEFT layout: they load in PEFT on the same base model) and
 * a downloaded weights file uploaded again as a new version of any user on a server with the same base
 * model: a backup restored, a user moved between servers. A LoRA adapter trained with PEFT on the
 * same base model uploads too (its two files as multipart parts), converted exactly. An upload is
 * checked as every load checks a stored adapter, written whole before its row exists, and served at
 * once unless `activate=false`.
 */
import type { Hono } from 'hono';
import { inTransaction } from '../../db/client.js';
import { activateAdapterVersion, createAdapterVersion, getActiveAdapter, getAdapterVersion, listAdapterVersions, markAdapterVersionDeleted } from '../../db/queries/adapters.js';
import { versionsTrainedOnDeleted } from '../../db/queries/forgetting.js';
import { activeJobForUser } from '../../db/queries/jobs.js';
import { userExists } from '../../db/queries/users.js';
import { JobActiveError } from '../../db/errors.js';
import { ADAPTER_STATUS } from '../../lora/consistency.js';
import { AdapterStoreError } from '../../lora/store.js';
import { UploadBodyError, type UploadedAdapter } from '../../serve/adapter-upload.js';
import { adapterFilesFailure, adapterVersionNotFound, adapterVersionNotReady } from '../../serve/errors.js';
import type { AppEnv, RouteDeps } from '../context.js';
import { ApiError } from '../errors.js';
import { ADAPTER_DOWNLOADS, activateAdapterBody, importAdapterQuery } from '../schemas.js';
import { adapterJson } from '../serialize.js';
import type { AdapterFileKey } from '../services.js';
import { parseQuery, readJson, readLimited, userIdParam } from '../validate.js';
import { userNotFound } from './users.js';

/** Where a download's name is found among the stored files, and what it is served as. */
const DOWNLOADS: Record<(typeof ADAPTER_DOWNLOADS)[number], { key: AdapterFileKey; type: string }> = {
  'adapter_model.safetensors': { key: 'weights', type: 'application/octet-stream' },
  'adapter_config.json': { key: 'adapterConfig', type: 'application/json' },
  'memlora_adapter.json': { key: 'memlora', type: 'application/json' },
};

/** The path of the upload route, which reads its body with its own bound (the model's largest adapter), not the server's. */
export const ADAPTER_UPLOAD_PATH = /^\/v1\/admin\/users\/[^/]+\/adapters\/?$/;

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
      if (!row) throw adapterVersionNotFound(userId, version);
      if (row.status !== ADAPTER_STATUS.ready) throw adapterVersionNotReady(userId, version, row.status);
      const checked = await services.adapterFiles.checkVersion?.(row);
      if (checked && !checked.ok) {
        logger.error('adapter version refused for activation', { userId, version, code: checked.code, takenOutAs: checked.takenOutAs, err: checked.message });
        throw adapterFilesFailure(userId, version, checked.code, checked.message);
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
        if (!row) throw adapterVersionNotFound(userId, version); // the user was deleted meanwhile
        if (row.status !== ADAPTER_STATUS.ready) throw adapterVersionNotReady(userId, version, row.status);
      }
      return { active: activateAdapterVersion(db, userId, version), previous };
    });
    if (previous !== (active?.version ?? null)) logger.info('adapter version activated', { userId, version, previousVersion: previous });
    return c.json({ userId, active: active ? adapterJson(active) : null, previousVersion: previous });
  });

  app.get('/v1/admin/users/:userId/adapters/:version/files/:file', async (c) => {
    const userId = userIdParam(c);
    const version = versionParam(c.req.param('version'));
    const name = c.req.param('file');
    const download = Object.hasOwn(DOWNLOADS, name) ? DOWNLOADS[name as keyof typeof DOWNLOADS] : undefined;
    if (!download) throw new ApiError(404, 'adapter_file_not_found', `an adapter version has no file ${JSON.stringify(name.slice(0, 80))}: ask for one of ${ADAPTER_DOWNLOADS.join(', ')}`, { files: ADAPTER_DOWNLOADS });
    if (!userExists(db, userId)) throw userNotFound(userId);
    const row = getAdapterVersion(db, userId, version);
    if (!row) throw adapterVersionNotFound(userId, version);
    if (row.status !== ADAPTER_STATUS.ready) throw adapterVersionNotReady(userId, version, row.status);
    const files = services.adapterFiles;
    if (!files.readFile) throw new ApiError(503, 'model_unavailable', 'no base model is configured: adapter files are not served', null, { 'retry-after': '5' });
    // Checked as a load checks them (bad files are taken out of service), so what downloads is what serves.
    const checked = await files.checkVersion?.(row);
    if (checked && !checked.ok) throw adapterFilesFailure(userId, version, checked.code, checked.message);
    let bytes: Uint8Array;
    try {
      bytes = await files.readFile(row, download.key);
    } catch (e) {
      // Any store failure (a path not of the store's shape, a checksum that is not hex, ...) is the version's.
      if (!(e instanceof AdapterStoreError)) throw e;
      throw adapterFilesFailure(userId, version, e.code, e.message);
    }
    return c.body(bytes as Uint8Array<ArrayBuffer>, 200, {
      'content-type': download.type,
      'content-disposition': `attachment; filename="${name}"`,
      'x-adapter-sha256': row.sha256,
    });
  });

  app.post('/v1/admin/users/:userId/adapters', async (c) => {
    const userId = userIdParam(c);
    const { activate } = parseQuery(c, importAdapterQuery);
    if (!userExists(db, userId)) throw userNotFound(userId);
    const files = services.adapterFiles;
    if (!files.importAdapter || files.maxImportBytes === undefined) throw new ApiError(503, 'model_unavailable', 'no base model is configured: an adapter cannot be checked against it', null, { 'retry-after': '5' });
    const job = activate ? activeJobForUser(db, userId) : undefined;
    if (job) throw new JobActiveError(userId, job.id, job.state); // before the body: nothing is read or written
    const body = await readLimited(c, files.maxImportBytes + UPLOAD_SLACK_BYTES);
    let written: UploadedAdapter;
    try {
      // The body is read apart (and checked) where the adapter is: off the serving thread.
      written = await files.importAdapter(userId, { body, contentType: c.req.header('content-type') ?? '' });
    } catch (e) {
      if (e instanceof UploadBodyError) throw new ApiError(400, 'invalid_adapter', e.message, e.details);
      throw e;
    }
    let result: { row: ReturnType<typeof createAdapterVersion>; previous: number | null };
    try {
      // One transaction: the job check, the row and its activation see the same database.
      result = inTransaction(db, () => {
        const running = activate ? activeJobForUser(db, userId) : undefined;
        if (running) throw new JobActiveError(userId, running.id, running.state);
        const previous = getActiveAdapter(db, userId)?.version ?? null;
        const metrics = { imported: true, source: written.source };
        const row = createAdapterVersion(db, { userId, config: written.config, filePath: written.path, sha256: written.sha256, metrics, status: ADAPTER_STATUS.ready, activate });
        return { row, previous };
      });
    } catch (e) {
      // No row names the files: remove them now (the start-up check would collect them as an orphan).
      await files.removeVersion?.({ userId, version: 0, filePath: written.path }).catch(() => undefined);
      throw e;
    }
    const { row, previous } = result;
    logger.info('adapter version imported', { userId, version: row.version, source: written.source, activated: activate, previousVersion: previous, bytes: written.bytes });
    return c.json({ adapter: adapterJson(row), previousVersion: previous, bytes: written.bytes }, 201, { location: `/v1/admin/users/${encodeURIComponent(userId)}/adapters/${row.version}/files/adapter_model.safetensors` });
  });

  app.delete('/v1/admin/users/:userId/adapters/:version', async (c) => {
    const userId = userIdParam(c);
    const version = versionParam(c.req.param('version'));
    if (!userExists(db, userId)) throw userNotFound(userId);
    if (!getAdapterVersion(db, userId, version)) throw adapterVersionNotFound(userId, version);
    const { row, removed } = await deleteAdapterVersion(deps, userId, version);
    return c.json({ adapter: adapterJson(row), removed });
  });
}

/** Room in an upload beyond the largest weights file: PEFT's adapter_config.json and the multipart framing. */
const UPLOAD_SLACK_BYTES = 1024 * 1024;

/** A version in a path: a positive integer below 2^31, else 422 invalid_version. */
function versionParam(raw: string): number {
  const n = /^[1-9][0-9]{0,9}$/.test(raw) ? Number(raw) : NaN;
  if (!(n <= 2 ** 31 - 1)) throw new ApiError(422, 'invalid_version', 'adapter versions are positive integers', { version: raw.slice(0, 40) });
  return n;
}
