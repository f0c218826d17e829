/**
 * SQLite under a second writer (a worker thread with its own connection, as the injection job
 * runner will be). What the code does: each connection waits up to busy_timeout (5 s by default,
 * openDb's busyTimeoutMs) for the write lock; past it, SQLITE_BUSY becomes 503 `busy` with
 * Retry-After. Either way a history batch is all or nothing, and nothing answers 500.
 */
import { Worker } from 'node:worker_threads';
import { afterEach, describe, expect, it } from 'vitest';
import { openDb, type Db } from '../../src/db/client.js';
import { diskAdapterFiles } from '../../src/http/adapter-files.js';
import { createApp } from '../../src/http/app.js';
import { memoryLogger } from '../../src/http/logger.js';
import { makeHarness, ADMIN_TOKEN, type Harness } from '../http/helpers.js';
import { dbProblems, snapshot } from './support.js';

/**
 * The other writer. `hold`: one write transaction kept open for holdMs, or until the main thread
 * flips the shared `release` flag (it can, between requests, when its own busy waits are short). `churn`: short write transactions for durationMs. */
const WORKER = `
const { workerData, parentPort } = require('node:worker_threads');
const Database = require('better-sqlite3');
const db = new Database(workerData.file);
db.pragma('busy_timeout = 5000');
const sleep = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
const now = Date.now();
db.prepare('INSERT OR IGNORE INTO users (id, created_at, updated_at) VALUES (?, ?, ?)').run('worker', now, now);
const insert = db.prepare("INSERT INTO history_items (user_id, kind, text, created_at) VALUES ('worker', 'post', ?, ?)");
if (workerData.mode === 'hold') {
  db.exec('BEGIN IMMEDIATE');
  insert.run('written while holding the lock', Date.now());
  parentPort.postMessage({ state: 'locked' });
  if (workerData.release) Atomics.wait(new Int32Array(workerData.release), 0, 0);
  else sleep(workerData.holdMs);
  db.exec('COMMIT');
  parentPort.postMessage({ state: 'released' });
} else {
  let n = 0;
  const end = Date.now() + workerData.durationMs;
  parentPort.postMessage({ state: 'started' });
  while (Date.now() < end) {
    db.transaction(() => { for (let i = 0; i < 20; i++) insert.run('churn ' + n++, Date.now()); })();
    sleep(1);
  }
  parentPort.postMessage({ state: 'done', inserted: n });
}
db.close();
`;

interface Other {
  worker: Worker;
  /** Resolves with the first message whose state is `state`. */
  when(state: string): Promise<Record<string, unknown>>;
  exited: Promise<number>;
}

const workers: Worker[] = [];

function otherWriter(file: string, data: Record<string, unknown>): Other {
  const worker = new Worker(WORKER, { eval: true, workerData: { file, ...data } });
  workers.push(worker);
  const seen: Array<Record<string, unknown>> = [];
  const waiters: Array<() => void> = [];
  worker.on('message', (m: Record<string, unknown>) => {
    seen.push(m);
    for (const w of waiters.splice(0)) w();
  });
  const exited = new Promise<number>((resolve, reject) => {
    worker.once('exit', resolve);
    worker.once('error', reject);
  });
  const when = (state: string) =>
    new Promise<Record<string, unknown>>((resolve) => {
      const check = () => {
        const m = seen.find((x) => x.state === state);
        if (m) resolve(m);
        else waiters.push(check);
      };
      check();
    });
  return { worker, when, exited };
}

let h: Harness;
let shortDb: Db | undefined;
afterEach(async () => {
  // A failed test must not leave a worker holding the lock (and the test process alive).
  await Promise.all(workers.splice(0).map((w) => w.terminate()));
  shortDb?.close();
  shortDb = undefined;
  h?.cleanup();
});

const batch = (tag: string, n: number) => ({ items: Array.from({ length: n }, (_, i) => ({ kind: 'dialogue', role: 'user', text: `${tag} ${i}` })) });
const count = (db: Db, user: string) => (db.sqlite.prepare('SELECT count(*) AS n FROM history_items WHERE user_id = ?').get(user) as { n: number }).n;

describe('a second writer holds the lock for less than busy_timeout', () => {
  it('the history append waits for it and succeeds, whole', async () => {
    h = makeHarness();
    await h.req('PUT', '/v1/users/alice');
    const other = otherWriter(h.config.dbFile, { mode: 'hold', holdMs: 400 });
    await other.when('locked');
    const res = await h.req('POST', '/v1/users/alice/history', batch('waited', 200));
    expect(res.status).toBe(201);
    const body = (await res.json()) as { ids: number[] };
    expect(body.ids).toHaveLength(200);
    expect(await other.exited).toBe(0);
    expect(count(h.db, 'alice')).toBe(200);
    expect(count(h.db, 'worker')).toBe(1);
    // The worker committed first, so its row precedes the whole batch.
    const workerId = (h.db.sqlite.prepare("SELECT id FROM history_items WHERE user_id = 'worker'").get() as { id: number }).id;
    expect(Math.min(...body.ids)).toBeGreaterThan(workerId);
    expect(dbProblems(h.db)).toEqual([]);
  });

  it('batches interleaved with a churning writer are each stored whole and contiguous', async () => {
    h = makeHarness();
    await h.req('PUT', '/v1/users/alice');
    const other = otherWriter(h.config.dbFile, { mode: 'churn', durationMs: 600 });
    await other.when('started');
    const acked: number[][] = [];
    for (let b = 0; b < 15; b++) {
      const res = await h.req('POST', '/v1/users/alice/history', batch(`b${b}`, 40));
      expect(res.status).toBe(201);
      acked.push(((await res.json()) as { ids: number[] }).ids);
      await new Promise((r) => setTimeout(r, 10));
    }
    const done = await other.when('done');
    expect(await other.exited).toBe(0);
    for (const [b, ids] of acked.entries()) {
      // One transaction per batch: no row of the other writer lands inside it.
      expect(ids).toEqual(Array.from({ length: 40 }, (_, i) => ids[0] + i));
      const texts = h.db.sqlite.prepare(`SELECT text FROM history_items WHERE id BETWEEN ? AND ? ORDER BY id`).all(ids[0], ids[39]) as Array<{ text: string }>;
      expect(texts.map((t) => t.text)).toEqual(Array.from({ length: 40 }, (_, i) => `b${b} ${i}`));
    }
    expect(count(h.db, 'alice')).toBe(15 * 40);
    expect(count(h.db, 'worker')).toBe(done.inserted);
    expect(dbProblems(h.db)).toEqual([]);
  });
});

describe('a second writer holds the lock past busy_timeout', () => {
  it('writes answer 503 busy with Retry-After, write nothing, and succeed once the lock is free', async () => {
    h = makeHarness();
    h.db.close();
    // The same app over a connection that gives up after 100 ms instead of 5 s.
    shortDb = openDb(h.config.dbFile, { busyTimeoutMs: 100 });
    const logger = memoryLogger();
    const app = createApp({ config: h.config, db: shortDb, services: { adapterFiles: diskAdapterFiles(h.config.adapterDir) }, logger });
    const req = (method: string, path: string, body?: unknown) =>
      app.request(path, {
        method,
        headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_TOKEN}` },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    expect((await req('PUT', '/v1/users/alice')).status).toBe(201);
    const queued = (await (await req('POST', '/v1/admin/users/alice/inject', {})).json()) as { id: string };

    const release = new Int32Array(new SharedArrayBuffer(4));
    const other = otherWriter(h.config.dbFile, { mode: 'hold', release: release.buffer });
    await other.when('locked');
    const before = snapshot(shortDb, h.config.adapterDir);
    const writes: Array<[string, string, unknown]> = [
      ['POST', '/v1/users/alice/history', batch('refused', 300)],
      ['PUT', '/v1/users/bob', undefined],
      ['PUT', '/v1/users/alice', { metadata: { plan: 'pro' } }],
      ['POST', `/v1/admin/jobs/${queued.id}/cancel`, undefined],
      ['DELETE', '/v1/users/alice', undefined],
    ];
    for (const [method, path, body] of writes) {
      const res = await req(method, path, body);
      const text = await res.text();
      expect(res.status, `${method} ${path}: ${text}`).toBe(503);
      expect(JSON.parse(text).error.code).toBe('busy');
      expect(res.headers.get('retry-after')).toBe('1');
      expect(res.headers.get('x-request-id')).toBeTruthy();
    }
    // Readers are not blocked by a writer in WAL mode.
    expect((await req('GET', '/v1/users/alice/history')).status).toBe(200);
    expect(snapshot(shortDb, h.config.adapterDir)).toEqual(before);
    expect(logger.lines.filter((l) => l.level === 'error')).toEqual([]);

    Atomics.store(release, 0, 1);
    Atomics.notify(release, 0);
    await other.when('released');
    expect(await other.exited).toBe(0);
    const retry = await req('POST', '/v1/users/alice/history', batch('retried', 300));
    expect(retry.status).toBe(201);
    expect(count(shortDb, 'alice')).toBe(300);
    expect(dbProblems(shortDb)).toEqual([]);
  });
});
