/** MEMLORA_API_KEY through the real app: the client routes need it (or the admin token), admin routes the admin token only, operations routes nothing. */
import { afterEach, describe, expect, it } from 'vitest';
import { fakeGenerate } from './fake-generate.js';
import { ADMIN_TOKEN, expectError, type Harness, makeHarness } from './helpers.js';

const KEY = 'client-key-0123456789';
let h: Harness;
afterEach(() => h?.cleanup());

const as = (token: string) => ({ authorization: `Bearer ${token}` });

describe('MEMLORA_API_KEY', () => {
  it('the client routes answer only with the key (or the admin token): 401 with WWW-Authenticate otherwise, nothing done', async () => {
    const gen = fakeGenerate();
    h = makeHarness({ env: { MEMLORA_API_KEY: KEY }, services: { generate: gen } });
    for (const headers of [{}, as('wrong-key-0123456789'), as(`${KEY}x`), { authorization: KEY }, { authorization: `Basic ${KEY}` }]) {
      const res = await h.req('PUT', '/v1/users/alice', undefined, headers);
      await expectError(res, 401, 'unauthorized');
      expect(res.headers.get('www-authenticate')).toBe('Bearer realm="memlora"');
    }
    // Refused before anything ran: no user was created.
    expect((await h.admin('GET', '/v1/users/alice')).status).toBe(404);
    expect((await h.req('PUT', '/v1/users/alice', undefined, as(KEY))).status).toBe(201);
    expect((await h.req('GET', '/v1/users/alice', undefined, as(ADMIN_TOKEN))).status).toBe(200);
    const hello = { user: 'alice', messages: [{ role: 'user', content: 'hi' }] };
    await expectError(await h.req('POST', '/v1/chat/completions', hello), 401, 'unauthorized');
    await expectError(await h.req('POST', '/v1/generate', { userId: 'alice', prompt: 'hi' }), 401, 'unauthorized');
    await expectError(await h.req('POST', '/v1/responses', { user: 'alice', input: 'hi' }), 401, 'unauthorized');
    await expectError(await h.req('POST', '/tokenize', { prompt: 'hi' }), 401, 'unauthorized');
    await expectError(await h.req('POST', '/detokenize', { tokens: [1] }), 401, 'unauthorized');
    expect(gen.calls).toHaveLength(0);
    // As an OpenAI client sends its API key.
    expect((await h.req('POST', '/v1/chat/completions', hello, as(KEY))).status).toBe(200);
    expect((await h.req('POST', '/tokenize', { prompt: 'hi' }, as(KEY))).status).toBe(200);
    expect(gen.calls).toHaveLength(1);
  });

  it('admin routes take the admin token, not the key; health, metrics and the docs stay open', async () => {
    h = makeHarness({ env: { MEMLORA_API_KEY: KEY } });
    const admin = await h.req('GET', '/v1/admin/queue', undefined, as(KEY));
    await expectError(admin, 401, 'unauthorized');
    expect(admin.headers.get('www-authenticate')).toBe('Bearer realm="memlora-admin"');
    expect((await h.admin('GET', '/v1/admin/usage/users')).status).toBe(200);
    for (const path of ['/healthz', '/metrics', '/openapi.yaml']) expect((await h.req('GET', path)).status, path).toBe(200);
  });

  it('without a key the client routes are open, as before', async () => {
    h = makeHarness();
    expect((await h.req('PUT', '/v1/users/alice')).status).toBe(201);
  });
});
