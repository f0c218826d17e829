import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { openDb } from '../../src/db/client.js';
import { createUser } from '../../src/db/queries/users.js';
import { exportCommand } from '../../src/http/export-command.js';
import { createAdapterVersion } from '../../src/db/queries/adapters.js';
import { appendHistory } from '../../src/db/queries/history.js';
import { createJob } from '../../src/db/queries/jobs.js';
import { recordUsage, setQuota } from '../../src/db/queries/usage.js';
import { EXPORT_PAGE } from '../../src/http/user-export.js';
import { fakeGenerateApp, type FakeGenerate } from './fake-generate.js';
import { expectError, json, type Harness } from './helpers.js';

let h: Harness;
let gen: FakeGenerate;
afterEach(() => h?.cleanup());

type Line = { type: string } & Record<string, any>;
const lines = (text: string): Line[] => text.trimEnd().split('\n').map((l) => JSON.parse(l) as Line);

describe('GET /v1/admin/users/{userId}/export', () => {
  it('streams everything held of the user as NDJSON, page after page, ending with the counts; nothing of another user, no server paths', async () => {
    ({ h, gen } = await fakeGenerateApp(true));
    await h.req('PUT', '/v1/users/alice', { metadata: { plan: 'pro' } });
    await h.req('PUT', '/v1/users/bob');
    // More history than a page, and a conversation longer than a page.
    const history = EXPORT_PAGE + 9;
    appendHistory(h.db, 'alice', Array.from({ length: history }, (_, i) => ({ kind: 'post' as const, text: `post ${i}` })));
    appendHistory(h.db, 'bob', [{ kind: 'post', text: 'bob secret' }]);
    await h.req('DELETE', `/v1/users/alice/history/1`);
    const job = createJob(h.db, { userId: 'alice', params: { budget: 2 } });
    createAdapterVersion(h.db, { userId: 'alice', config: { n: 2, r: 8 }, filePath: `${h.config.adapterDir}/alice/v1.safetensors`, sha256: 'a'.repeat(64), metrics: { valLoss: 2.5 }, status: 'ready', activate: true });
    recordUsage(h.db, 'alice', { promptTokens: 10, cachedTokens: 2, completionTokens: 5, scoredTokens: 0 });
    setQuota(h.db, 'alice', 5000);
    const resp = await json<{ id: string }>(await h.req('POST', '/v1/responses', { user: 'alice', input: 'remember this' }));
    await h.req('POST', '/v1/responses', { user: 'bob', input: 'not alice' });
    const conv = (await json<{ id: string }>(await h.req('POST', '/v1/conversations', { user: 'alice', items: [{ role: 'user', content: 'first' }] }))).id;
    const more = Array.from({ length: 20 }, (_, i) => ({ role: 'user', content: `line ${i}` }));
    for (let k = 0; k < 14; k++) expect((await h.req('POST', `/v1/conversations/${conv}/items`, { items: more })).status).toBe(200);
    const items = 1 + 14 * 20;
    expect(items).toBeGreaterThan(EXPORT_PAGE);

    const res = await h.admin('GET', '/v1/admin/users/alice/export');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('application/x-ndjson');
    const text = await res.text();
    const got = lines(text);
    const types = [...new Set(got.map((l) => l.type))];
    expect(types).toEqual(['user', 'history', 'history_deletion', 'job', 'adapter', 'usage', 'response', 'conversation', 'conversation_item', 'end']);
    expect(got[0]).toMatchObject({ type: 'user', id: 'alice', metadata: { plan: 'pro' }, quota: 5000 });
    expect(got.filter((l) => l.type === 'history').map((l) => l.text)).toEqual(Array.from({ length: history - 1 }, (_, i) => `post ${i + 1}`));
    expect(got.find((l) => l.type === 'history_deletion')).toMatchObject({ itemId: 1 });
    expect(got.find((l) => l.type === 'job')).toMatchObject({ id: job.id, params: { budget: 2 }, state: 'queued' });
    expect(got.find((l) => l.type === 'adapter')).toEqual({ type: 'adapter', version: 1, config: { n: 2, r: 8 }, sha256: 'a'.repeat(64), metrics: { valLoss: 2.5 }, status: 'ready', active: 1, createdAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT/) });
    expect(got.find((l) => l.type === 'usage')).toMatchObject({ requests: 1, promptTokens: 10, cachedTokens: 2, completionTokens: 5 });
    const response = got.find((l) => l.type === 'response')!;
    expect(response).toMatchObject({ id: resp.id, response: { id: resp.id, output: [{ content: [{ text: 'echo remember this' }] }] }, items: [{ content: [{ text: 'remember this' }] }] });
    expect(got.filter((l) => l.type === 'conversation_item').map((l) => l.item.content[0].text)).toEqual(['first', ...Array.from({ length: 14 }, () => more.map((m) => m.content)).flat()]);
    expect(got.at(-1)).toEqual({
      type: 'end',
      counts: { user: 1, history: history - 1, history_deletion: 1, job: 1, trial: 0, adapter: 1, usage: 1, response: 1, conversation: 1, conversation_item: items },
    });
    expect(text).not.toContain('bob');
    expect(text).not.toContain(h.config.adapterDir);
    expect(gen.calls).toHaveLength(2);
  });

  it('is an operator\'s: 401 without the admin token, 404 for an unknown or erased user, 422 with a query', async () => {
    ({ h, gen } = await fakeGenerateApp(true));
    await expectError(await h.req('GET', '/v1/admin/users/alice/export'), 401, 'unauthorized');
    await expectError(await h.admin('GET', '/v1/admin/users/carol/export'), 404, 'user_not_found');
    await expectError(await h.admin('GET', '/v1/admin/users/alice/export?x=1'), 422, 'validation_failed');
    expect((await h.req('DELETE', '/v1/users/alice')).status).toBe(200);
    await expectError(await h.admin('GET', '/v1/admin/users/alice/export'), 404, 'user_not_found');
  });
});

describe('memlora export', () => {
  it('writes what the route streams to a file, whole; refuses an unknown user (1) and a missing --user (2)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'memlora-export-'));
    const saved = process.env.MEMLORA_DATA_DIR;
    process.env.MEMLORA_DATA_DIR = dir;
    const err = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      const db = openDb(loadConfig().dbFile);
      createUser(db, { id: 'alice' });
      appendHistory(db, 'alice', [{ kind: 'post', text: 'hello' }]);
      db.close();
      const out = join(dir, 'alice.ndjson');
      expect(await exportCommand.run(['--user', 'alice', '--out', out])).toBe(0);
      const got = lines(readFileSync(out, 'utf8'));
      expect(got.map((l) => l.type)).toEqual(['user', 'history', 'end']);
      expect(got[1]).toMatchObject({ text: 'hello' });
      expect(readdirSync(dir).filter((f) => f.endsWith('.partial'))).toEqual([]);
      expect(await exportCommand.run(['--user', 'carol', '--out', join(dir, 'carol.ndjson')])).toBe(1);
      expect(existsSync(join(dir, 'carol.ndjson'))).toBe(false);
      expect(await exportCommand.run([])).toBe(2);
      expect(await exportCommand.run(['--bogus'])).toBe(2);
    } finally {
      err.mockRestore();
      if (saved === undefined) delete process.env.MEMLORA_DATA_DIR;
      else process.env.MEMLORA_DATA_DIR = saved;
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
