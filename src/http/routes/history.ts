/**
 * /v1/users/{userId}/history: batch append (all-or-nothing), cursor listing, FTS5 search, and
 * deleting one item, or in bulk a conversation's, those written before a time, or all: gone from
 * listing, search and memory at once, the user's prefix-cache conversations dropped, and the adapter
 * versions trained on them named (on request the active one deactivated, or every one of them
 * deleted); re-injection (stale-users) then trains an adapter without them.
 */
import type { Hono } from 'hono';
import { inTransaction } from '../../db/client.js';
import { activateAdapterVersion } from '../../db/queries/adapters.js';
import { deleteHistoryItem, deleteHistoryItems, versionsTrainedOnDeleted } from '../../db/queries/forgetting.js';
import { appendHistory, listHistory, searchHistory } from '../../db/queries/history.js';
import { userExists } from '../../db/queries/users.js';
import type { AppEnv, RouteDeps } from '../context.js';
import { ApiError } from '../errors.js';
import { historyAppendBody, historyBulkDeleteQuery, historyDeleteQuery, historyQuery } from '../schemas.js';
import { historyJson, searchHitJson } from '../serialize.js';
import { parseQuery, readJson, userIdParam } from '../validate.js';
import { deleteAdapterVersion } from './adapter.js';
import { userNotFound } from './users.js';

/** Most deleted item ids a bulk deletion lists in its answer. */
const MAX_LISTED_IDS = 1000;

/** An item id in a path: a positive integer below 2^53, else 422 invalid_item_id. */
function itemIdParam(raw: string): number {
  const n = /^[1-9][0-9]{0,15}$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isSafeInteger(n)) throw new ApiError(422, 'invalid_item_id', 'history item ids are positive integers', { itemId: raw.slice(0, 40) });
  return n;
}

export function registerHistoryRoutes(app: Hono<AppEnv>, deps: RouteDeps): void {
  const { db, config, services, logger, metrics } = deps;
  const deletedItems = metrics.counter('memlora_history_deleted_items_total', 'History items users deleted (one at a time or in bulk).', []);
  const forgetDeactivations = metrics.counter('memlora_history_forget_deactivations_total', 'Active adapters stopped serving because they were trained on deleted history (adapter=deactivate or delete).', []);
  const forgetDeletions = metrics.counter('memlora_history_forget_version_deletions_total', 'Adapter versions deleted because they were trained on deleted history (adapter=delete).', []);

  app.delete('/v1/users/:userId/history/:itemId', async (c) => {
    const userId = userIdParam(c);
    const itemId = itemIdParam(c.req.param('itemId'));
    const q = parseQuery(c, historyDeleteQuery);
    if (!userExists(db, userId)) throw userNotFound(userId);
    if (!deleteHistoryItem(db, userId, itemId)) {
      throw new ApiError(404, 'history_item_not_found', `user ${JSON.stringify(userId)} has no history item ${itemId}`, { userId, itemId });
    }
    deletedItems.inc();
    return c.json({ userId, itemId, ...(await afterDeletion(userId, q.adapter, true)) });
  });

  app.delete('/v1/users/:userId/history', async (c) => {
    const userId = userIdParam(c);
    const q = parseQuery(c, historyBulkDeleteQuery);
    if (!userExists(db, userId)) throw userNotFound(userId);
    const itemIds = deleteHistoryItems(db, userId, { conversationId: q.conversationId, before: q.before === undefined ? undefined : Date.parse(q.before) });
    if (itemIds.length > 0) deletedItems.inc(undefined, itemIds.length);
    const after = await afterDeletion(userId, q.adapter, itemIds.length > 0);
    // The ids, oldest first, up to MAX_LISTED_IDS (a retention run may delete many more; `deleted` counts them all).
    return c.json({ userId, deleted: itemIds.length, itemIds: itemIds.slice(0, MAX_LISTED_IDS), ...after });
  });

  /**
   * What follows a deletion: the user's prefix-cache conversations dropped (memory may have put the
   * items' text there; `deleted`: only when items were), the versions trained on deleted history
   * (these items or earlier ones) named, and with adapter=deactivate the active one among them
   * stopped serving (a hot swap: the user's next request is served without it, with memory or the
   * base model; requests running finish on it); with adapter=delete that, and then every one of them
   * deleted, files and all, as an operator deletes a version.
   */
  const afterDeletion = async (userId: string, adapter: 'keep' | 'deactivate' | 'delete' | undefined, deleted: boolean) => {
    const prefixCacheDropped = deleted ? (services.generate?.dropPrefixCache?.(userId).dropped.entries ?? 0) : 0;
    let trained = versionsTrainedOnDeleted(db, userId);
    let deactivated: number | null = null;
    const active = trained.find((v) => v.active);
    if ((adapter === 'deactivate' || adapter === 'delete') && active) {
      inTransaction(db, () => activateAdapterVersion(db, userId, null));
      deactivated = active.version;
      forgetDeactivations.inc();
      trained = trained.map((v) => ({ ...v, active: false }));
      logger.info('adapter deactivated: trained on deleted history', { userId, version: deactivated });
    }
    const deletedVersions: number[] = [];
    if (adapter === 'delete') {
      for (const v of trained) {
        const { already } = await deleteAdapterVersion(deps, userId, v.version, 'trained on deleted history');
        if (already) continue;
        deletedVersions.push(v.version);
        forgetDeletions.inc();
      }
      trained = versionsTrainedOnDeleted(db, userId);
    }
    return { prefixCacheDropped, trainedOnDeleted: trained, deactivated, deletedVersions };
  };

  app.post('/v1/users/:userId/history', async (c) => {
    const userId = userIdParam(c);
    const body = await readJson(c, historyAppendBody, config.bodyLimitBytes);
    if (!userExists(db, userId)) throw userNotFound(userId);
    const rows = appendHistory(
      db,
      userId,
      body.items.map((it) => ({
        kind: it.kind,
        role: it.role ?? null,
        text: it.text,
        conversationId: it.conversationId ?? null,
        createdAt: it.createdAt === undefined ? undefined : Date.parse(it.createdAt),
      })),
    );
    return c.json({ userId, inserted: rows.length, ids: rows.map((r) => r.id) }, 201);
  });

  app.get('/v1/users/:userId/history', (c) => {
    const userId = userIdParam(c);
    const q = parseQuery(c, historyQuery);
    if (!userExists(db, userId)) throw userNotFound(userId);
    if (q.q !== undefined) {
      const hits = searchHistory(db, userId, q.q, { limit: q.limit ?? 20, match: q.match });
      return c.json({ items: hits.map(searchHitJson), nextCursor: null });
    }
    const page = listHistory(db, userId, { cursor: q.cursor, limit: q.limit, kind: q.kind });
    return c.json({ items: page.items.map(historyJson), nextCursor: page.nextCursor });
  });
}
