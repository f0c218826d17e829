import { mkdirSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createAdapterVersion } from '../../src/db/queries/adapters.js';
import { getJob } from '../../src/db/queries/jobs.js';
import { createTrial } from '../../src/db/queries/trials.js';
import { userAdapterDir } from '../../src/lora/paths.js';
import { deleteUserResponse, userPageSchema, userSchema } from '../../src/http/schemas.js';
import { expectError, json, makeHarness, type Harness } from './helpers.js';

let h: Harness;
afterEach(() => h?.cleanup());

describe('PUT /v1/users/{userId}', () => {
  it('creates (201), is idempotent (200), and updates metadata only when given', async () => {
    h = makeHarness();
    const created = await h.req('PUT', '/v1/users/alice', { metadata: { plan: 'pro' } });
    expect(created.status).toBe(201);
    const body = userSchema.parse(await json(created));
    expect(body).toMatchObject({ id: 'alice', metadata: { plan: 'pro' } });

    const again = await h.req('PUT', '/v1/users/alice');
    expect(again.status).toBe(200);
    expect(await json(again)).toEqual(body);

    const updated = await json(await h.req('PUT', '/v1/users/alice', { metadata: { plan: 'free' } }));
    expect(updated.metadata).toEqual({ plan: 'free' });
    expect(updated.createdAt).toBe(body.createdAt);
    expect((await json(await h.req('PUT', '/v1/users/alice', { metadata: null }))).metadata).toBeNull();
    expect((await h.req('PUT', '/v1/users/bob', {})).status).toBe(201);
  });

  it('validates the body', async () => {
    h = makeHarness();
    await expectError(await h.req('PUT', '/v1/users/alice', { metadata: 'x' }), 422, 'validation_failed');
    await expectError(await h.req('PUT', '/v1/users/alice', { meta: {} }), 422, 'validation_failed');
    await expectError(await h.req('PUT', '/v1/users/alice', { metadata: { big: 'x'.repeat(20_000) } }), 422, 'validation_failed');
  });

  it('rejects bad user ids with 422 invalid_user_id', async () => {
    h = makeHarness();
    const bad = ['...', '....', 'a b', 'a%2Fb', 'x'.repeat(129), 'a%00b', 'caf%C3%A9', 'a:b', 'a%5Cb', '%2F', '%2E%2E%2F', '..%2Fetc'];
    for (const id of bad) {
      await expectError(await h.req('PUT', `/v1/users/${id}`), 422, 'invalid_user_id');
      await expectError(await h.req('GET', `/v1/users/${id}`), 422, 'invalid_user_id');
    }
    // "." and ".." are dot segments: URL parsing removes them before routing, so they never reach a
    // handler as an id; whatever route they land on, nothing is created.
    for (const id of ['.', '..', '%2E', '%2E%2E', '%2e.']) {
      const res = await h.req('PUT', `/v1/users/${id}`);
      expect([404, 405, 422]).toContain(res.status);
    }
    expect((await json(await h.req('GET', '/v1/users'))).items).toEqual([]);
    for (const id of ['a', 'A.b-c_d', '.hidden', 'x'.repeat(128), '0']) {
      expect((await h.req('PUT', `/v1/users/${id}`)).status).toBe(201);
    }
  });
});

describe('GET /v1/users/{userId} and GET /v1/users', () => {
  it('gets a user, 404 user_not_found for unknown ones', async () => {
    h = makeHarness();
    await h.req('PUT', '/v1/users/alice');
    expect(userSchema.parse(await json(await h.req('GET', '/v1/users/alice'))).id).toBe('alice');
    const err = await expectError(await h.req('GET', '/v1/users/bob'), 404, 'user_not_found');
    expect(err.details).toEqual({ userId: 'bob' });
  });

  it('paginates over all users exactly once', async () => {
    h = makeHarness();
    const ids = Array.from({ length: 23 }, (_, i) => `user-${i}`);
    for (const id of ids) await h.req('PUT', `/v1/users/${id}`);
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page = userPageSchema.parse(await json(await h.req('GET', `/v1/users?limit=5${cursor ? `&cursor=${cursor}` : ''}`)));
      expect(page.items.length).toBeLessThanOrEqual(5);
      seen.push(...page.items.map((u) => u.id));
      cursor = page.nextCursor;
    } while (cursor);
    expect(seen).toEqual([...ids].sort());
  });

  it('validates the query string and the cursor', async () => {
    h = makeHarness();
    await expectError(await h.req('GET', '/v1/users?limit=0'), 422, 'validation_failed');
    await expectError(await h.req('GET', '/v1/users?limit=1001'), 422, 'validation_failed');
    await expectError(await h.req('GET', '/v1/users?limit=abc'), 422, 'validation_failed');
    await expectError(await h.req('GET', '/v1/users?limt=5'), 422, 'validation_failed');
    await expectError(await h.req('GET', '/v1/users?cursor=garbage!!'), 422, 'invalid_cursor');
    await expectError(await h.req('GET', '/v1/users?cursor=MTAx'), 422, 'invalid_cursor'); // a number, not a user key
  });
});

describe('DELETE /v1/users/{userId}', () => {
  it('removes rows and adapter files and reports what it removed', async () => {
    h = makeHarness();
    await h.req('PUT', '/v1/users/alice');
    await h.req('PUT', '/v1/users/bob');
    await h.req('POST', '/v1/users/alice/history', { items: [{ kind: 'post', text: 'one' }, { kind: 'post', text: 'two' }] });
    await h.req('POST', '/v1/users/bob/history', { items: [{ kind: 'post', text: 'bob' }] });
    const job = await json(await h.admin('POST', '/v1/admin/users/alice/inject', {}));
    createTrial(h.db, { jobId: job.id, userId: 'alice', idx: 0, config: {}, status: 'completed' });
    createAdapterVersion(h.db, { userId: 'alice', config: {}, filePath: 'v1', sha256: 'a'.repeat(64), metrics: {}, status: 'ready', activate: true });

    // A fake adapter store: files in nested dirs for alice, one file for bob.
    const aliceDir = userAdapterDir(h.config.adapterDir, 'alice');
    mkdirSync(join(aliceDir, 'v1'), { recursive: true });
    writeFileSync(join(aliceDir, 'v1', 'adapter.safetensors'), Buffer.alloc(1000));
    writeFileSync(join(aliceDir, 'v1', 'config.json'), '{"rank":8}');
    writeFileSync(join(aliceDir, 'index.json'), '[]');
    const bobDir = userAdapterDir(h.config.adapterDir, 'bob');
    mkdirSync(bobDir, { recursive: true });
    writeFileSync(join(bobDir, 'x.bin'), Buffer.alloc(10));

    const res = await h.req('DELETE', '/v1/users/alice');
    expect(res.status).toBe(200);
    expect(deleteUserResponse.parse(await json(res))).toEqual({
      userId: 'alice',
      removed: { historyItems: 2, jobs: 1, trials: 1, adapterVersions: 1, usageDays: 0, responses: 0, conversations: 0, adapterFiles: 3, adapterBytes: 1000 + 10 + 2 },
    });
    expect(existsSync(aliceDir)).toBe(false);
    expect(existsSync(join(bobDir, 'x.bin'))).toBe(true);
    for (const table of ['users', 'history_items', 'injection_jobs', 'trials', 'adapter_versions']) {
      const col = table === 'users' ? 'id' : 'user_id';
      expect(h.db.sqlite.prepare(`SELECT count(*) AS n FROM ${table} WHERE ${col} = 'alice'`).get()).toEqual({ n: 0 });
    }
    await expectError(await h.req('GET', '/v1/users/alice'), 404, 'user_not_found');
    expect((await json(await h.req('GET', '/v1/users/bob/history'))).items).toHaveLength(1);
    await expectError(await h.req('DELETE', '/v1/users/alice'), 404, 'user_not_found');
  });

  it('reports zero files when the user never had adapters', async () => {
    h = makeHarness();
    await h.req('PUT', '/v1/users/carol');
    const body = await json(await h.req('DELETE', '/v1/users/carol'));
    expect(body.removed).toEqual({ historyItems: 0, jobs: 0, trials: 0, adapterVersions: 0, usageDays: 0, responses: 0, conversations: 0, adapterFiles: 0, adapterBytes: 0 });
  });

  it('asks the job runner to stop a running job first', async () => {
    const cancelled: string[] = [];
    h = makeHarness({
      services: {
        jobs: {
          enqueue: () => {},
          cancel: async (id) => {
            cancelled.push(id);
            return getJob(h.db, id)!;
          },
        },
      },
    });
    await h.req('PUT', '/v1/users/alice');
    const job = await json(await h.admin('POST', '/v1/admin/users/alice/inject'));
    h.db.sqlite.prepare("UPDATE injection_jobs SET state = 'running' WHERE id = ?").run(job.id);
    expect((await h.req('DELETE', '/v1/users/alice')).status).toBe(200);
    expect(cancelled).toEqual([job.id]);
  });
});

describe('restart', () => {
  it('keeps users and history across closing and reopening the database file', async () => {
    h = makeHarness();
    await h.req('PUT', '/v1/users/alice', { metadata: { k: 1 } });
    await h.req('POST', '/v1/users/alice/history', { items: [{ kind: 'qa', text: 'persisted words' }] });
    const job = await json(await h.admin('POST', '/v1/admin/users/alice/inject'));
    h.restart();
    expect((await json(await h.req('GET', '/v1/users/alice'))).metadata).toEqual({ k: 1 });
    expect((await json(await h.req('GET', '/v1/users/alice/history?q=persisted'))).items).toHaveLength(1);
    expect((await json(await h.admin('GET', `/v1/admin/jobs/${job.id}`))).state).toBe('queued');
  });
});
