/**
 * The Responses API's stored responses, as OpenAI's clients read them: GET /v1/responses/{id} (the
 * response object as answered, or a background response as it stands; with stream=true a background
 * response's events, from starting_after on), GET /v1/responses/{id}/input_items (the items its
 * model read, paged), POST /v1/responses/{id}/cancel (a background response) and DELETE
 * /v1/responses/{id} (a running background response is cancelled first). A response past the
 * retention, or never stored, is 404 response_not_found. POST /v1/responses (routes/responses.ts) stores them. For operators, what a
 * user's stored responses and conversations hold, and their erasure with the user kept
 * (/v1/admin/users/{userId}/responses).
 */
import type { Hono } from 'hono';
import { streamSSE } from 'hono/streaming';
import { inTransaction } from '../../db/client.js';
import { conversationsOf, deleteConversationsOf } from '../../db/queries/conversations.js';
import { deleteStoredResponse, deleteStoredResponsesOf, storedResponsesOf, updateStoredResponse } from '../../db/queries/responses.js';
import { userExists } from '../../db/queries/users.js';
import { KEEP_MS } from '../background-responses.js';
import type { AppEnv, RouteDeps } from '../context.js';
import { ApiError } from '../errors.js';
import { type Item, itemList, keptSince, responseNotFound, storedResponse } from '../responses-conversation.js';
import { INCLUDE_QUERY_LISTS, noQuery, responsesGetQuery, responsesInputItemsQuery } from '../schemas.js';
import { parseQuery, userIdParam } from '../validate.js';
import { clientSignal } from './generate.js';
import { userNotFound } from './users.js';

export function registerStoredResponsesRoutes(app: Hono<AppEnv>, deps: RouteDeps): void {
  const { db, config, metrics, background } = deps;
  const deleted = metrics.counter('memlora_responses_deleted_total', 'Stored responses deleted (DELETE /v1/responses/{id}, or a user\'s all at once by an operator).', []);

  app.get('/v1/responses/:responseId', (c) => {
    const q = parseQuery(c, responsesGetQuery, INCLUDE_QUERY_LISTS);
    const id = c.req.param('responseId');
    const stored = storedResponse(db, config, id);
    if (q.stream !== 'true') return c.json(background.current(stored));
    const run = background.get(id);
    if (run === undefined) {
      // One waiting to run again after a restart streams once it runs: Retry-After says when to ask again.
      const waiting = stored.response.background === true && stored.request != null;
      const why =
        stored.response.background !== true
          ? 'it was not created in the background'
          : waiting
            ? 'it waits to run again after a restart of the server; retry in a moment'
            : `its events are kept for ${KEEP_MS / 60_000} minutes after it is done`;
      throw new ApiError(409, 'stream_unavailable', `response ${JSON.stringify(id)} cannot be streamed: ${why}; read it without stream`, { id }, waiting ? { 'retry-after': '1' } : undefined);
    }
    const reader = clientSignal(c);
    return streamSSE(c, async (sse) => {
      sse.onAbort(() => reader.abort(new Error('client disconnected')));
      for await (const ev of run.from(q.starting_after ?? -1, reader.signal)) await sse.writeSSE(ev);
    });
  });

  app.post('/v1/responses/:responseId/cancel', async (c) => {
    parseQuery(c, noQuery);
    const id = c.req.param('responseId');
    const stored = storedResponse(db, config, id);
    if (stored.response.background !== true) throw new ApiError(409, 'response_not_cancellable', `response ${JSON.stringify(id)} was not created in the background: only background responses can be cancelled`, { id });
    // Running: stopped, and stored cancelled by its run. Waiting to run again after a restart: stored
    // cancelled here (its request dropped, so it is not run). Done: answered as it is.
    if (background.get(id) !== undefined) await background.cancel(id);
    else if (stored.request != null) updateStoredResponse(db, id, { ...stored.response, status: 'cancelled' }, 'drop');
    return c.json(background.current(storedResponse(db, config, id)));
  });

  app.get('/v1/responses/:responseId/input_items', (c) => {
    const q = parseQuery(c, responsesInputItemsQuery, INCLUDE_QUERY_LISTS);
    const items = storedResponse(db, config, c.req.param('responseId')).items as Item[];
    const ordered = q.order === 'asc' ? items : [...items].reverse();
    let from = 0;
    if (q.after !== undefined) {
      const at = ordered.findIndex((item) => item.id === q.after);
      if (at < 0) throw new ApiError(422, 'invalid_cursor', `after ${JSON.stringify(q.after)} is not an item of this response`, { after: q.after });
      from = at + 1;
    }
    const data = ordered.slice(from, from + (q.limit ?? 20));
    return c.json(itemList(data, from + data.length < ordered.length));
  });

  app.delete('/v1/responses/:responseId', async (c) => {
    parseQuery(c, noQuery);
    const id = c.req.param('responseId');
    await background.cancel(id);
    background.forget(id);
    if (!deleteStoredResponse(db, id, keptSince(config))) throw responseNotFound(id, config);
    deleted.inc();
    return c.json({ id, object: 'response', deleted: true });
  });

  const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

  app.get('/v1/admin/users/:userId/responses', (c) => {
    const userId = userIdParam(c);
    parseQuery(c, noQuery);
    if (!userExists(db, userId)) throw userNotFound(userId);
    const r = storedResponsesOf(db, userId);
    return c.json({ userId, responses: { count: r.count, bytes: r.bytes, oldest: iso(r.oldest), newest: iso(r.newest) }, conversations: conversationsOf(db, userId) });
  });

  // The user's chats as the service keeps them, erased while the user, their history and adapters stay.
  app.delete('/v1/admin/users/:userId/responses', async (c) => {
    const userId = userIdParam(c);
    parseQuery(c, noQuery);
    // Their background responses stop first, so none is stored or added to a conversation after the erasure.
    await background.cancelUser(userId);
    const erased = inTransaction(db, () => {
      if (!userExists(db, userId)) return undefined;
      const responses = deleteStoredResponsesOf(db, userId);
      const conversations = deleteConversationsOf(db, userId);
      return { responses, conversations: conversations.conversations, conversationItems: conversations.items };
    });
    if (erased === undefined) throw userNotFound(userId);
    deleted.inc(undefined, erased.responses);
    return c.json({ userId, deleted: erased });
  });
}
