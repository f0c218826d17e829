/**
 * Sharing the batch between users through the real server (startServer over a tiny model directory,
 * a real SQLite file): with one batch row held by a long stream, a burst of one user and single
 * requests of others queue up; MEMLORA_MAX_QUEUE_PER_USER refuses the burst's next request with 429
 * user_queue_full while other users are still queued, and when the row frees the requests are
 * served in the order MEMLORA_SCHEDULING says: fair (the others between the burst's requests) or
 * fifo (arrival order); GET /v1/admin/queue shows who fills the queue meanwhile.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { memoryLogger } from '../../src/http/logger.js';
import { queueReportSchema } from '../../src/http/schemas.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { ADMIN_TOKEN } from '../http/helpers.js';
import { type ModelDir, writeModelDir } from './fixtures.js';

let root: string;
let md: ModelDir;
beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'memlora-fair-http-'));
  md = writeModelDir(root, 512);
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

async function serve(scheduling: 'fair' | 'fifo'): Promise<RunningServer> {
  const config = loadConfig({
    MEMLORA_PORT: '0',
    MEMLORA_DATA_DIR: join(root, scheduling, 'data'),
    MEMLORA_ADAPTER_DIR: join(root, scheduling, 'adapters'),
    MEMLORA_MODEL_PATH: md.dir,
    MEMLORA_ADMIN_TOKEN: ADMIN_TOKEN,
    MEMLORA_MAX_QUEUE: '8',
    MEMLORA_MAX_QUEUE_PER_USER: '3',
    MEMLORA_MAX_BATCH: '1',
    MEMLORA_SCHEDULING: scheduling,
  });
  const server = await startServer(config, { handleSignals: false, logger: memoryLogger() });
  for (let i = 0; (await fetch(`${server.url}/readyz`)).status !== 200; i++) {
    if (i > 500) throw new Error('model never became ready');
    await new Promise((r) => setTimeout(r, 10));
  }
  for (const u of ['hog', 'bob', 'carol', 'dave']) await fetch(`${server.url}/v1/users/${u}`, { method: 'PUT' });
  return server;
}

async function metric(server: RunningServer, line: string): Promise<number> {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const found = text.split('\n').find((l) => l.startsWith(`${line} `));
  return found ? Number(found.slice(line.length + 1)) : 0;
}

async function untilQueued(server: RunningServer, depth: number): Promise<void> {
  for (let i = 0; (await metric(server, 'memlora_generate_queue_depth')) < depth; i++) {
    if (i > 2000) throw new Error(`the queue never reached ${depth}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

describe.each(['fair', 'fifo'] as const)('MEMLORA_SCHEDULING=%s through the real server', (scheduling) => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await serve(scheduling);
  });
  afterAll(async () => {
    await server?.close();
  });

  it('a burst past MEMLORA_MAX_QUEUE_PER_USER gets 429 user_queue_full while others queue; the freed row serves them in the scheduling order', async () => {
    const post = (body: unknown, signal?: AbortSignal) =>
      fetch(`${server.url}/v1/generate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal });
    const ac = new AbortController();
    // The one row (MEMLORA_MAX_BATCH=1) is held by a long stream.
    const long = await post({ userId: 'carol', prompt: 'Hello', maxTokens: 480, stream: true, mode: 'vanilla' }, ac.signal);
    await long.body!.getReader().read();
    const order: string[] = [];
    const send = async (name: string, userId: string): Promise<number> => {
      const res = await post({ userId, prompt: 'Hello', maxTokens: 3, mode: 'vanilla' });
      await res.arrayBuffer();
      if (res.ok) order.push(name);
      return res.status;
    };
    // Queued one at a time, so that arrival order is known: three of hog's, then bob's.
    const queued: Array<Promise<number>> = [];
    for (const [i, [name, user]] of [['hog1', 'hog'], ['hog2', 'hog'], ['hog3', 'hog'], ['bob', 'bob']].entries()) {
      queued.push(send(name, user));
      await untilQueued(server, i + 1);
    }
    // hog has 3 waiting (MEMLORA_MAX_QUEUE_PER_USER=3): a fourth is refused, though the queue has room.
    const refused = await post({ userId: 'hog', prompt: 'Hello', maxTokens: 3, mode: 'vanilla' });
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    const err = ((await refused.json()) as { error: { code: string; details: Record<string, unknown> } }).error;
    expect(err).toMatchObject({ code: 'user_queue_full', details: { userId: 'hog', queued: 3, maxQueuePerUser: 3 } });
    // The same refusal through the OpenAI-compatible route.
    const chat = await fetch(`${server.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user: 'hog', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2 }) });
    expect(chat.status).toBe(429);
    expect(((await chat.json()) as { error: { code: string } }).error.code).toBe('user_queue_full');
    expect(await metric(server, 'memlora_generate_rejected_total{code="user_queue_full"}')).toBe(2);
    // Another user is still queued.
    queued.push(send('dave', 'dave'));
    await untilQueued(server, 5);
    // An operator sees who fills the queue.
    const res = await fetch(`${server.url}/v1/admin/queue`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect(res.status).toBe(200);
    const queue = queueReportSchema.parse(await res.json());
    expect(queue).toMatchObject({ scheduling, maxBatch: 1, maxQueue: 8, maxQueuePerUser: 3, waiting: 5, usersTotal: 4 });
    expect(queue.rows.map((r) => [r.userId, r.state, r.mode])).toEqual([['carol', 'decode', 'vanilla']]);
    expect(queue.users.map((u) => [u.userId, u.rows, u.waiting])).toEqual([['hog', 0, 3], ['bob', 0, 1], ['dave', 0, 1], ['carol', 1, 0]]);
    const auth = { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } };
    const one = queueReportSchema.parse(await (await fetch(`${server.url}/v1/admin/queue?limit=1`, auth)).json());
    expect([one.users.map((u) => u.userId), one.usersTotal]).toEqual([['hog'], 4]);
    const bad = await fetch(`${server.url}/v1/admin/queue?limit=0`, auth);
    expect([bad.status, ((await bad.json()) as { error: { code: string } }).error.code]).toEqual([422, 'validation_failed']);
    expect((await fetch(`${server.url}/v1/admin/queue`)).status).toBe(401);
    ac.abort(); // the long stream's client goes away: the row frees
    expect(await Promise.all(queued)).toEqual([200, 200, 200, 200, 200]);
    expect(order).toEqual(scheduling === 'fair' ? ['hog1', 'bob', 'dave', 'hog2', 'hog3'] : ['hog1', 'hog2', 'hog3', 'bob', 'dave']);
  });
});
