import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { openDb } from '../src/db/client.js';
import { createConversation } from '../src/db/queries/conversations.js';
import { PURGE_BATCH, storeResponse } from '../src/db/queries/responses.js';
import { createUser } from '../src/db/queries/users.js';
import { memoryLogger } from '../src/http/logger.js';
import { Registry } from '../src/metrics.js';
import { CONVERSATION_BATCH, startRetentionSweep } from '../src/retention.js';
import { startServer, type RunningServer } from '../src/server.js';
import { ADMIN_TOKEN } from './http/helpers.js';

const DAY_MS = 86_400_000;
let dir: string;
let running: RunningServer | undefined;
afterEach(async () => {
  await running?.close();
  running = undefined;
  rmSync(dir, { recursive: true, force: true });
});

function config(retentionDays: number) {
  dir = mkdtempSync(join(tmpdir(), 'memlora-retention-'));
  return loadConfig({ MEMLORA_PORT: '0', MEMLORA_DATA_DIR: join(dir, 'data'), MEMLORA_ADAPTER_DIR: join(dir, 'adapters'), MEMLORA_ADMIN_TOKEN: ADMIN_TOKEN, MEMLORA_RESPONSES_RETENTION_DAYS: String(retentionDays) });
}

/** `n` stored responses and `n` conversations of two items each, made `ageDays` ago. */
function fill(db: ReturnType<typeof openDb>, prefix: string, n: number, ageDays: number) {
  const at = Date.now() - ageDays * DAY_MS;
  for (let i = 0; i < n; i++) {
    const id = `resp_${prefix}${i}`;
    storeResponse(db, { id, userId: 'alice', createdAt: at, previousResponseId: null, response: { id, status: 'completed' }, items: [] }, 0);
    const conv = `conv_${prefix}${i}`;
    const items = [0, 1].map((k) => ({ type: 'message', id: `msg_${conv}_${k}`, status: 'completed', role: 'user', content: [{ type: 'input_text', text: 'hi' }] }));
    createConversation(db, { id: conv, userId: 'alice', createdAt: at, updatedAt: at, metadata: {} }, items, 0);
  }
}
const count = (db: ReturnType<typeof openDb>, table: string) => (db.sqlite.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;

describe('the retention sweep', () => {
  it('deletes every stored response and conversation past the retention, in batches, and keeps the rest; counts them', async () => {
    const cfg = config(30);
    const db = openDb(cfg.dbFile);
    createUser(db, { id: 'alice' });
    const expired = PURGE_BATCH * 2 + 5;
    fill(db, 'old', expired, 31);
    fill(db, 'new', 3, 29);
    const metrics = new Registry();
    const logger = memoryLogger();
    // A timer far away: the sweep at start works through the batches, the event loop free between them.
    const sweep = startRetentionSweep({ db, config: cfg, logger, metrics }, 3_600_000);
    expect(count(db, 'stored_responses')).toBe(expired + 3 - PURGE_BATCH);
    for (let i = 0; count(db, 'stored_responses') > 3 || count(db, 'conversations') > 3; i++) {
      if (i > 500) throw new Error('the sweep never finished');
      await new Promise((r) => setImmediate(r));
    }
    await sweep.stop();
    expect(count(db, 'stored_responses')).toBe(3);
    expect(count(db, 'conversations')).toBe(3);
    expect(count(db, 'conversation_items')).toBe(6);
    const text = metrics.expose();
    expect(text).toMatch(new RegExp(`^memlora_responses_purged_total ${expired}$`, 'm'));
    expect(text).toMatch(new RegExp(`^memlora_conversations_purged_total ${expired}$`, 'm'));
    expect(logger.lines.find((l) => l.msg.startsWith('retention sweep'))?.fields).toEqual({ responses: expired, conversations: expired });
    expect(expired).toBeGreaterThan(CONVERSATION_BATCH);
    db.close();
  });

  it('a retention of 0 keeps nothing: what an earlier retention stored is deleted', async () => {
    const cfg = config(0);
    const db = openDb(cfg.dbFile);
    createUser(db, { id: 'alice' });
    fill(db, 'any', 4, 0);
    const sweep = startRetentionSweep({ db, config: cfg, logger: memoryLogger(), metrics: new Registry() }, 3_600_000);
    expect(await sweep.sweep()).toEqual({ responses: 0, conversations: 0 });
    await sweep.stop();
    expect(count(db, 'stored_responses')).toBe(0);
    expect(count(db, 'conversations')).toBe(0);
    db.close();
  });

  it('the server sweeps at start: chats that expired while it was down are gone without any new write', async () => {
    const cfg = config(30);
    const db = openDb(cfg.dbFile);
    createUser(db, { id: 'alice' });
    fill(db, 'old', 5, 40);
    fill(db, 'new', 1, 1);
    db.close();
    running = await startServer(cfg, { handleSignals: false, logger: memoryLogger(), services: {} });
    for (let i = 0; count(running.db, 'stored_responses') > 1; i++) {
      if (i > 500) throw new Error('the sweep never ran');
      await new Promise((r) => setTimeout(r, 2));
    }
    expect(count(running.db, 'conversations')).toBe(1);
    expect(await (await fetch(`${running.url}/metrics`)).text()).toMatch(/^memlora_conversations_purged_total 5$/m);
  });
});
