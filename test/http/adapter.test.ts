import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createAdapterVersion } from '../../src/db/queries/adapters.js';
import { createJob } from '../../src/db/queries/jobs.js';
import { adapterActivationSchema, adapterDeletionSchema, adapterListSchema, adapterSchema } from '../../src/http/schemas.js';
import { diskAdapterFiles } from '../../src/http/adapter-files.js';
import { userDirName } from '../../src/lora/paths.js';
import { AdapterStoreError } from '../../src/lora/store.js';
import { expectError, json, makeHarness, type Harness } from './helpers.js';

let h: Harness;
afterEach(() => h?.cleanup());

describe('GET /v1/users/{userId}/adapter', () => {
  it('returns the active version with config and metrics, never the file path', async () => {
    h = makeHarness();
    await h.req('PUT', '/v1/users/alice');
    await expectError(await h.req('GET', '/v1/users/alice/adapter'), 404, 'adapter_not_found');
    const base = { userId: 'alice', filePath: '/srv/adapters/secret/v.safetensors', sha256: 'b'.repeat(64), status: 'ready' };
    createAdapterVersion(h.db, { ...base, config: { layers: [1], n: 1, rank: 8 }, metrics: { valLoss: 3 }, activate: true });
    createAdapterVersion(h.db, { ...base, config: { layers: [1, 2], n: 2, rank: 16 }, metrics: { valLoss: 2.5 }, activate: true });
    createAdapterVersion(h.db, { ...base, config: { layers: [3], n: 1, rank: 8 }, metrics: { valLoss: 9 }, activate: false });
    const res = await h.req('GET', '/v1/users/alice/adapter');
    expect(res.status).toBe(200);
    const text = await res.clone().text();
    expect(text).not.toContain('/srv/adapters');
    const body = adapterSchema.parse(await json(res));
    expect(body).toMatchObject({ userId: 'alice', version: 2, config: { layers: [1, 2], n: 2, rank: 16 }, metrics: { valLoss: 2.5 }, status: 'ready' });
  });

  it('404s unknown users and 422s bad ids', async () => {
    h = makeHarness();
    await expectError(await h.req('GET', '/v1/users/nobody/adapter'), 404, 'user_not_found');
    await expectError(await h.req('GET', '/v1/users/no%20body/adapter'), 422, 'invalid_user_id');
  });
});

describe('GET /v1/users/{userId}/adapters', () => {
  it('lists every version newest first, with its status and the active one marked, never the file path', async () => {
    h = makeHarness();
    await h.req('PUT', '/v1/users/alice');
    expect(adapterListSchema.parse(await json(await h.req('GET', '/v1/users/alice/adapters')))).toEqual({ items: [] });
    const base = { userId: 'alice', filePath: '/srv/adapters/secret/v.safetensors', sha256: 'c'.repeat(64), metrics: {} };
    createAdapterVersion(h.db, { ...base, config: { rank: 8 }, status: 'ready', activate: true });
    createAdapterVersion(h.db, { ...base, config: { rank: 16 }, status: 'quarantined' });
    createAdapterVersion(h.db, { ...base, config: { rank: 32 }, status: 'ready' });
    const res = await h.req('GET', '/v1/users/alice/adapters');
    expect(await res.clone().text()).not.toContain('/srv/adapters');
    const body = adapterListSchema.parse(await json(res));
    expect(body.items.map((a) => [a.version, a.status, a.active, a.config.rank])).toEqual([
      [3, 'ready', false, 32],
      [2, 'quarantined', false, 16],
      [1, 'ready', true, 8],
    ]);
    await expectError(await h.req('GET', '/v1/users/nobody/adapters'), 404, 'user_not_found');
  });
});

describe('PUT /v1/admin/users/{userId}/adapter', () => {
  const base = { userId: 'alice', filePath: '/srv/a/v.safetensors', sha256: 'd'.repeat(64), metrics: {}, config: {} };
  const activeVersions = () => (h.db.sqlite.prepare("SELECT version FROM adapter_versions WHERE user_id = 'alice' AND active = 1").all() as Array<{ version: number }>).map((r) => r.version);

  it('rolls back, rolls forward, switches off, and is idempotent', async () => {
    h = makeHarness();
    await h.req('PUT', '/v1/users/alice');
    createAdapterVersion(h.db, { ...base, status: 'ready', activate: true });
    createAdapterVersion(h.db, { ...base, status: 'ready', activate: true });
    const put = async (version: number | null) => adapterActivationSchema.parse(await json(await h.admin('PUT', '/v1/admin/users/alice/adapter', { version })));
    expect(await put(1)).toMatchObject({ userId: 'alice', active: { version: 1, active: true }, previousVersion: 2 });
    expect(activeVersions()).toEqual([1]);
    expect(await put(1)).toMatchObject({ active: { version: 1 }, previousVersion: 1 });
    expect(await put(null)).toMatchObject({ active: null, previousVersion: 1 });
    expect(activeVersions()).toEqual([]);
    await expectError(await h.req('GET', '/v1/users/alice/adapter'), 404, 'adapter_not_found');
    expect(await put(2)).toMatchObject({ active: { version: 2 }, previousVersion: null });
    expect(adapterSchema.parse(await json(await h.req('GET', '/v1/users/alice/adapter'))).version).toBe(2);
    expect(h.logger.lines.filter((l) => l.msg === 'adapter version activated').map((l) => [l.fields.version, l.fields.previousVersion])).toEqual([
      [1, 2],
      [null, 1],
      [2, null],
    ]);
  });

  it('refuses, changing nothing: no token, bad bodies, unknown user or version, a version out of service, an active job', async () => {
    h = makeHarness();
    await h.req('PUT', '/v1/users/alice');
    createAdapterVersion(h.db, { ...base, status: 'ready', activate: true });
    createAdapterVersion(h.db, { ...base, status: 'quarantined' });
    createAdapterVersion(h.db, { ...base, status: 'ready' });
    await expectError(await h.req('PUT', '/v1/admin/users/alice/adapter', { version: 3 }), 401, 'unauthorized');
    for (const body of [{}, { version: 0 }, { version: '3' }, { version: 1.5 }, { version: 3, force: true }]) {
      await expectError(await h.admin('PUT', '/v1/admin/users/alice/adapter', body), 422, 'validation_failed');
    }
    await expectError(await h.admin('PUT', '/v1/admin/users/alice/adapter', '{"version":'), 400, 'invalid_json');
    await expectError(await h.admin('PUT', '/v1/admin/users/nobody/adapter', { version: 1 }), 404, 'user_not_found');
    await expectError(await h.admin('PUT', '/v1/admin/users/no%20body/adapter', { version: 1 }), 422, 'invalid_user_id');
    const missing = await expectError(await h.admin('PUT', '/v1/admin/users/alice/adapter', { version: 9 }), 404, 'adapter_not_found');
    expect(missing.details).toEqual({ userId: 'alice', version: 9 });
    const dead = await expectError(await h.admin('PUT', '/v1/admin/users/alice/adapter', { version: 2 }), 409, 'adapter_unusable');
    expect(dead.details).toEqual({ userId: 'alice', version: 2, reason: 'quarantined' });
    // A queued injection job would activate its own result when it finishes (and its quality gate
    // compares against the version that served when it started): cancel it first.
    const job = createJob(h.db, { userId: 'alice', params: {} });
    const busy = await expectError(await h.admin('PUT', '/v1/admin/users/alice/adapter', { version: 3 }), 409, 'job_active');
    expect(busy.details).toMatchObject({ jobId: job.id });
    expect(activeVersions()).toEqual([1]);
    expect((await h.admin('POST', `/v1/admin/jobs/${job.id}/cancel`)).status).toBe(200);
    expect((await h.admin('PUT', '/v1/admin/users/alice/adapter', { version: 3 })).status).toBe(200);
    expect(activeVersions()).toEqual([3]);
  });
});

describe('DELETE /v1/admin/users/{userId}/adapters/{version}', () => {
  it('removes an inactive version\'s files, keeps its row as deleted, refuses the active one, and is idempotent', async () => {
    h = makeHarness();
    await h.req('PUT', '/v1/users/alice');
    await h.req('PUT', '/v1/users/bob');
    // Store-shaped directories, as the adapter store writes them.
    const stored = (userId: string, name: string) => {
      const rel = `${userDirName(userId)}/${name}`;
      mkdirSync(join(h.config.adapterDir, rel), { recursive: true });
      writeFileSync(join(h.config.adapterDir, rel, 'adapter_model.safetensors'), Buffer.alloc(100, 1));
      writeFileSync(join(h.config.adapterDir, rel, 'adapter_config.json'), '{}');
      return rel;
    };
    const old = stored('alice', 'a-1736100000000-0123456789ab');
    const cur = stored('alice', 'a-1736200000000-0123456789ab');
    const bobs = stored('bob', 'a-1736100000000-0123456789ab');
    const base = { sha256: 'e'.repeat(64), metrics: {}, config: {}, status: 'ready' };
    createAdapterVersion(h.db, { ...base, userId: 'alice', filePath: old });
    createAdapterVersion(h.db, { ...base, userId: 'alice', filePath: cur, activate: true });
    createAdapterVersion(h.db, { ...base, userId: 'bob', filePath: bobs });

    await expectError(await h.req('DELETE', '/v1/admin/users/alice/adapters/1'), 401, 'unauthorized');
    const active = await expectError(await h.admin('DELETE', '/v1/admin/users/alice/adapters/2'), 409, 'adapter_active');
    expect(active.details).toEqual({ userId: 'alice', version: 2 });
    await expectError(await h.admin('DELETE', '/v1/admin/users/alice/adapters/3'), 404, 'adapter_not_found');
    await expectError(await h.admin('DELETE', '/v1/admin/users/nobody/adapters/1'), 404, 'user_not_found');
    for (const v of ['0', '-1', '1.5', 'one', '01', '99999999999']) await expectError(await h.admin('DELETE', `/v1/admin/users/alice/adapters/${v}`), 422, 'invalid_version');
    expect(existsSync(join(h.config.adapterDir, old))).toBe(true);

    const res = await h.admin('DELETE', '/v1/admin/users/alice/adapters/1');
    expect(res.status).toBe(200);
    expect(adapterDeletionSchema.parse(await json(res))).toMatchObject({ adapter: { version: 1, status: 'deleted', active: false }, removed: { files: 2, bytes: 102 } });
    expect(existsSync(join(h.config.adapterDir, old))).toBe(false);
    expect(existsSync(join(h.config.adapterDir, cur))).toBe(true);
    expect(existsSync(join(h.config.adapterDir, bobs))).toBe(true); // another user's version 1
    const again = adapterDeletionSchema.parse(await json(await h.admin('DELETE', '/v1/admin/users/alice/adapters/1')));
    expect(again.removed).toEqual({ files: 0, bytes: 0 });
    const listed = adapterListSchema.parse(await json(await h.req('GET', '/v1/users/alice/adapters')));
    expect(listed.items.map((a) => [a.version, a.status, a.active])).toEqual([
      [2, 'ready', true],
      [1, 'deleted', false],
    ]);
    // A deleted version cannot serve again.
    const back = await expectError(await h.admin('PUT', '/v1/admin/users/alice/adapter', { version: 1 }), 409, 'adapter_unusable');
    expect(back.details).toMatchObject({ reason: 'deleted' });
    // Version numbers are never reused: with both versions deleted the next one is still 3.
    expect((await h.admin('PUT', '/v1/admin/users/alice/adapter', { version: null })).status).toBe(200);
    expect((await h.admin('DELETE', '/v1/admin/users/alice/adapters/2')).status).toBe(200);
    expect(existsSync(join(h.config.adapterDir, cur))).toBe(false);
    expect(createAdapterVersion(h.db, { ...base, userId: 'alice', filePath: old }).version).toBe(3);
  });
});

describe('GET /v1/admin/users/{userId}/adapters/{version}/files/{file}: a store failure while reading', () => {
  it('is the version\'s (409 adapter_unusable with the reason) or, for I/O, 503 adapter_unavailable to retry; never a 500', async () => {
    let failure = new AdapterStoreError('bad_adapter_path', 'not an adapter path of this store');
    h = makeHarness({ adapterFiles: (root) => ({ ...diskAdapterFiles(root), readFile: async () => Promise.reject(failure) }) });
    await h.req('PUT', '/v1/users/alice');
    createAdapterVersion(h.db, { userId: 'alice', config: {}, filePath: 'x/a-1-000000000000', sha256: 'e'.repeat(64), metrics: {}, status: 'ready', activate: true });
    const path = '/v1/admin/users/alice/adapters/1/files/adapter_config.json';
    expect((await expectError(await h.admin('GET', path), 409, 'adapter_unusable')).details).toEqual({ userId: 'alice', version: 1, reason: 'bad_adapter_path' });
    failure = new AdapterStoreError('bad_checksum', 'expected sha256 is not 64 lower-case hex digits');
    expect((await expectError(await h.admin('GET', path), 409, 'adapter_unusable')).details.reason).toBe('bad_checksum');
    failure = new AdapterStoreError('adapter_io', 'EIO');
    const io = await h.admin('GET', path);
    expect(io.headers.get('retry-after')).toBe('1');
    await expectError(io, 503, 'adapter_unavailable');
  });
});
