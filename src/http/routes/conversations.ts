/**
 * OpenAI's Conversations API: a conversation is a list of items (messages, function calls and their
 * outputs) that a response names with `conversation` reads before its input, and to which the
 * response adds its input and output when it is done (routes/responses.ts). Created (with up to 20
 * first items and metadata), read, its metadata replaced, deleted; its items listed in pages, added
 * (up to 20 at a time, 10,000 in all), read and deleted one by one. Owned by the user of the first
 * response that adds to it, or by the user named at its creation (memlora's `user`); erasing that user
 * erases it. Kept until MEMLORA_RESPONSES_RETENTION_DAYS after its last change; with 0 none are kept.
 */
import { randomBytes } from 'node:crypto';
import type { Hono } from 'hono';
import {
  type Conversation,
  appendConversationItems,
  countConversationItems,
  createConversation,
  deleteConversation,
  deleteConversationItem,
  getConversationItem,
  pageConversationItems,
  updateConversationMetadata,
} from '../../db/queries/conversations.js';
import { userExists } from '../../db/queries/users.js';
import type { AppEnv, RouteDeps } from '../context.js';
import { ApiError } from '../errors.js';
import { checkConversationRoom, conversationNotFound, itemList, itemsOf, keptSince, liveConversation, purgeCounters } from '../responses-conversation.js';
import { INCLUDE_QUERY_LISTS, conversationCreateSchema, conversationItemsAddSchema, conversationUpdateSchema, includeOnlyQuery, noQuery, responsesInputItemsQuery } from '../schemas.js';
import { parseQuery, readJson } from '../validate.js';
import { userNotFound } from './users.js';

const conversationJson = (c: Conversation) => ({ id: c.id, object: 'conversation' as const, created_at: Math.floor(c.createdAt / 1000), metadata: c.metadata, memlora: { userId: c.userId } });

export function registerConversationRoutes(app: Hono<AppEnv>, deps: RouteDeps): void {
  const { db, config, metrics, conversationLocks: locks } = deps;
  const conversationsPurged = purgeCounters(metrics).conversations;

  const found = (id: string): Conversation => liveConversation(db, config, id);
  const itemNotFound = (id: string, itemId: string) => new ApiError(404, 'item_not_found', `conversation ${JSON.stringify(id)} has no item ${JSON.stringify(itemId)}`, { id, itemId });

  app.post('/v1/conversations', async (c) => {
    const body = await readJson(c, conversationCreateSchema, config.bodyLimitBytes, {});
    if (config.responsesRetentionDays === 0) throw new ApiError(409, 'conversations_disabled', 'conversations are not stored on this server (MEMLORA_RESPONSES_RETENTION_DAYS=0)');
    if (body.user !== undefined && !userExists(db, body.user)) throw userNotFound(body.user);
    const key = randomBytes(12).toString('hex');
    const now = Date.now();
    const conversation: Conversation = { id: `conv_${key}`, userId: body.user ?? null, createdAt: now, updatedAt: now, metadata: body.metadata ?? {} };
    const purged = createConversation(db, conversation, itemsOf(body.items ?? [], key), keptSince(config, now));
    if (purged > 0) conversationsPurged.inc(undefined, purged);
    return c.json(conversationJson(conversation));
  });

  app.get('/v1/conversations/:conversationId', (c) => {
    parseQuery(c, noQuery);
    return c.json(conversationJson(found(c.req.param('conversationId'))));
  });

  app.post('/v1/conversations/:conversationId', async (c) => {
    const id = c.req.param('conversationId');
    const body = await readJson(c, conversationUpdateSchema, config.bodyLimitBytes);
    const updated = updateConversationMetadata(db, id, body.metadata, keptSince(config));
    if (updated === undefined) throw conversationNotFound(id, config);
    return c.json(conversationJson(updated));
  });

  app.delete('/v1/conversations/:conversationId', (c) => {
    parseQuery(c, noQuery);
    const id = c.req.param('conversationId');
    locks.check(id);
    if (!deleteConversation(db, id, keptSince(config))) throw conversationNotFound(id, config);
    return c.json({ id, object: 'conversation.deleted', deleted: true });
  });

  app.get('/v1/conversations/:conversationId/items', (c) => {
    const q = parseQuery(c, responsesInputItemsQuery, INCLUDE_QUERY_LISTS);
    const id = found(c.req.param('conversationId')).id;
    const page = pageConversationItems(db, id, { limit: q.limit ?? 20, order: q.order ?? 'desc', after: q.after });
    if (page === null) throw new ApiError(422, 'invalid_cursor', `after ${JSON.stringify(q.after)} is not an item of this conversation`, { after: q.after });
    return c.json(itemList(page.items, page.hasMore));
  });

  app.post('/v1/conversations/:conversationId/items', async (c) => {
    parseQuery(c, includeOnlyQuery, INCLUDE_QUERY_LISTS);
    const id = c.req.param('conversationId');
    const body = await readJson(c, conversationItemsAddSchema, config.bodyLimitBytes);
    found(id);
    locks.check(id);
    checkConversationRoom(countConversationItems(db, id), body.items.length, 'items');
    const items = itemsOf(body.items, randomBytes(12).toString('hex'));
    if (!appendConversationItems(db, id, items, keptSince(config))) throw conversationNotFound(id, config);
    return c.json(itemList(items, false));
  });

  app.get('/v1/conversations/:conversationId/items/:itemId', (c) => {
    parseQuery(c, includeOnlyQuery, INCLUDE_QUERY_LISTS);
    const id = found(c.req.param('conversationId')).id;
    const itemId = c.req.param('itemId');
    const item = getConversationItem(db, id, itemId);
    if (item === undefined) throw itemNotFound(id, itemId);
    return c.json(item);
  });

  app.delete('/v1/conversations/:conversationId/items/:itemId', (c) => {
    parseQuery(c, noQuery);
    const id = found(c.req.param('conversationId')).id;
    const itemId = c.req.param('itemId');
    locks.check(id);
    if (!deleteConversationItem(db, id, itemId)) throw itemNotFound(id, itemId);
    return c.json(conversationJson(found(id)));
  });
}
