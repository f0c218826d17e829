import { afterEach, describe, expect, it } from 'vitest';
import { createAdapterVersion } from '../../src/db/queries/adapters.js';
import { adapterSchema } from '../../src/http/schemas.js';
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
