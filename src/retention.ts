/**
 * The retention of the chats the service keeps, held on disk and not only for readers: stored
 * responses and conversations past MEMLORA_RESPONSES_RETENTION_DAYS (all of them with a retention of
 * 0) are deleted when the server starts and every SWEEP_MS, in batches with the event loop free
 * between them, so they are gone within SWEEP_MS of expiring even when no new writes come (the writes
 * purge a batch each as well). The server starts it and stops it before it closes the database.
 */
import type { Config } from './config.js';
import type { Db } from './db/client.js';
import { purgeExpiredConversations } from './db/queries/conversations.js';
import { PURGE_BATCH, purgeExpiredResponses } from './db/queries/responses.js';
import { keptSince, purgeCounters } from './http/responses-conversation.js';
import type { Logger } from './http/services.js';
import type { Registry } from './metrics.js';

export const SWEEP_MS = 10 * 60_000;
/** Conversations deleted in one step: each may hold up to 10,000 items. */
export const CONVERSATION_BATCH = 8;

export interface RetentionSweep {
  /** Deletes everything past the retention now; how much. */
  sweep(): Promise<{ responses: number; conversations: number }>;
  /** Stops the timer and waits for a sweep under way. */
  stop(): Promise<void>;
}

export function startRetentionSweep(deps: { db: Db; config: Config; logger: Logger; metrics: Registry }, everyMs = SWEEP_MS): RetentionSweep {
  const { db, config, logger, metrics } = deps;
  const purged = purgeCounters(metrics);
  let stopped = false;
  let running: Promise<unknown> | null = null;

  const sweep = async () => {
    const gone = { responses: 0, conversations: 0 };
    while (!stopped) {
      const keepSince = keptSince(config);
      const responses = purgeExpiredResponses(db, keepSince);
      const conversations = purgeExpiredConversations(db, keepSince, CONVERSATION_BATCH);
      gone.responses += responses;
      gone.conversations += conversations;
      purged.responses.inc(undefined, responses);
      purged.conversations.inc(undefined, conversations);
      if (responses < PURGE_BATCH && conversations < CONVERSATION_BATCH) break;
      await new Promise((resolve) => setImmediate(resolve));
    }
    if (gone.responses + gone.conversations > 0) logger.info('retention sweep: expired chats deleted', gone);
    return gone;
  };
  const tick = () => {
    if (running !== null || stopped) return;
    running = sweep()
      .catch((err: unknown) => logger.error('retention sweep failed', { err: err instanceof Error ? err.message : String(err) }))
      .finally(() => (running = null));
  };
  tick();
  const timer = setInterval(tick, everyMs);
  timer.unref();
  return {
    sweep,
    async stop() {
      stopped = true;
      clearInterval(timer);
      await running;
    },
  };
}
