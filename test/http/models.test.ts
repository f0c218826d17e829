import { statSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { createAdapterVersion, setAdapterStatus } from '../../src/db/queries/adapters.js';
import { deleteHistoryItem } from '../../src/db/queries/forgetting.js';
import { appendHistory } from '../../src/db/queries/history.js';
import { modelListSchema, modelSchema, modelRef } from '../../src/http/schemas.js';
import { fakeGenerate } from './fake-generate.js';
import { expectError, json, makeHarness, type Harness } from './helpers.js';

let h: Harness;
afterEach(() => h?.cleanup());

describe('modelRef', () => {
  it('reads memlora:<user id> and memlora:<user id>@<version>; anything else names no user', () => {
    expect(modelRef('memlora:alice')).toEqual({ userId: 'alice', version: null });
    expect(modelRef('memlora:alice@12')).toEqual({ userId: 'alice', version: 12 });
    expect(modelRef('memlora:a.b-c_d@1')).toEqual({ userId: 'a.b-c_d', version: 1 });
    for (const id of ['memlora', 'memlora:', 'memlora:@1', 'memlora:alice@0', 'memlora:alice@01', 'memlora:alice@', 'memlora:alice@x', 'memlora:alice@1@2', 'memlora:alice@1234567890', 'gpt-4o', undefined]) {
      expect(modelRef(id), String(id)).toBeNull();
    }
  });
});

describe('GET /v1/models', () => {
  it('lists the one served model, dated by the base model directory', async () => {
    h = makeHarness();
    const res = await h.req('GET', '/v1/models');
    expect(res.status).toBe(200);
    const body = modelListSchema.parse(await json(res));
    expect(body.data).toEqual([
      {
        id: 'memlora',
        object: 'model',
        created: Math.floor(statSync(h.config.modelPath).mtimeMs / 1000),
        owned_by: 'memlora',
        memlora: { baseModel: 'default' },
      },
    ]);
  });

  it('names the configured base model, and dates a missing one 0', async () => {
    h = makeHarness({ env: { MEMLORA_MODEL_PATH: '/nonexistent/tiny-llama' } });
    const body = modelListSchema.parse(await json(await h.req('GET', '/v1/models')));
    expect(body.data[0]).toMatchObject({ id: 'memlora', created: 0, memlora: { baseModel: 'tiny-llama' } });
  });

  it('GET /v1/models/memlora is the listed model; any other id is 404 model_not_found', async () => {
    h = makeHarness();
    const listed = modelListSchema.parse(await json(await h.req('GET', '/v1/models'))).data[0];
    const res = await h.req('GET', '/v1/models/memlora');
    expect(res.status).toBe(200);
    expect(modelSchema.parse(await json(res))).toEqual(listed);
    const err = await expectError(await h.req('GET', '/v1/models/gpt-4o'), 404, 'model_not_found');
    expect(err.details).toEqual({ model: 'gpt-4o' });
  });

  it('GET /v1/models/memlora:<user id> is that user\'s own model while the user exists; it is not listed', async () => {
    h = makeHarness();
    await h.req('PUT', '/v1/users/alice');
    const body = modelSchema.parse(await json(await h.req('GET', '/v1/models/memlora:alice')));
    expect(body).toMatchObject({ id: 'memlora:alice', object: 'model', memlora: { baseModel: 'default', userId: 'alice' } });
    expect(modelListSchema.parse(await json(await h.req('GET', '/v1/models'))).data.map((m) => m.id)).toEqual(['memlora']);
    await expectError(await h.req('GET', '/v1/models/memlora:bob'), 404, 'model_not_found');
    await expectError(await h.req('GET', '/v1/models/memlora:..'), 404, 'model_not_found');
    await h.req('DELETE', '/v1/users/alice');
    await expectError(await h.req('GET', '/v1/models/memlora:alice'), 404, 'model_not_found');
  });

  it('chat and legacy completions take the user from model memlora:<user id> when user is absent; both must agree', async () => {
    const gen = fakeGenerate();
    h = makeHarness({ services: { generate: gen } });
    await h.req('PUT', '/v1/users/alice');
    const messages = [{ role: 'user', content: 'hi' }];
    const chat = await h.req('POST', '/v1/chat/completions', { model: 'memlora:alice', messages });
    expect(chat.status).toBe(200);
    expect((await json(chat)).model).toBe('memlora:alice');
    expect(gen.calls[0].req.userId).toBe('alice');
    const legacy = await h.req('POST', '/v1/completions', { model: 'memlora:alice', prompt: 'hi', max_tokens: 0, echo: true, logprobs: 0 });
    expect(legacy.status).toBe(200);
    expect(gen.scoreCalls[0].userId).toBe('alice');
    expect((await h.req('POST', '/v1/chat/completions', { model: 'memlora:alice', user: 'alice', messages })).status).toBe(200);
    for (const body of [{ messages }, { model: 'memlora', messages }, { model: 'memlora:', messages }, { model: 'memlora:alice', user: 'bob', messages }]) {
      await expectError(await h.req('POST', '/v1/chat/completions', body), 422, 'validation_failed');
    }
    await expectError(await h.req('POST', '/v1/completions', { model: 'gpt-4o', prompt: 'x' }), 422, 'validation_failed');
    await expectError(await h.req('POST', '/v1/chat/completions', { model: 'memlora:bob', messages }), 404, 'user_not_found');
  });

  it('memlora:<user id>@<version> names one of the user\'s adapter versions: found while it is ready, and served by chat, legacy completions and the Responses API as adapter_version', async () => {
    const gen = fakeGenerate();
    h = makeHarness({ services: { generate: gen } });
    await h.req('PUT', '/v1/users/alice');
    const row = { userId: 'alice', filePath: 'x', sha256: 'y', status: 'ready' as const, config: { layers: [1], n: 1, r: 8 }, metrics: {} };
    createAdapterVersion(h.db, { ...row, activate: true });
    createAdapterVersion(h.db, { ...row, activate: false });
    const found = modelSchema.parse(await json(await h.req('GET', '/v1/models/memlora:alice@2')));
    expect(found).toMatchObject({ id: 'memlora:alice@2', memlora: { baseModel: 'default', userId: 'alice', adapterVersion: 2 } });
    for (const id of ['memlora:alice@3', 'memlora:alice@0', 'memlora:alice@02', 'memlora:alice@', 'memlora:bob@1', 'memlora:alice@1@1']) {
      await expectError(await h.req('GET', `/v1/models/${encodeURIComponent(id)}`), 404, 'model_not_found');
    }
    setAdapterStatus(h.db, 'alice', 1, 'quarantined');
    await expectError(await h.req('GET', '/v1/models/memlora:alice@1'), 404, 'model_not_found');
    // An inactive version trained on history deleted since is not served when named: not found either.
    const [item] = appendHistory(h.db, 'alice', [{ kind: 'post', text: 'to forget' }]);
    deleteHistoryItem(h.db, 'alice', item.id, Date.now() + 1);
    await expectError(await h.req('GET', '/v1/models/memlora:alice@2'), 404, 'model_not_found');
    setAdapterStatus(h.db, 'alice', 1, 'ready');

    const messages = [{ role: 'user', content: 'hi' }];
    const chat = await h.req('POST', '/v1/chat/completions', { model: 'memlora:alice@2', messages });
    expect(chat.status).toBe(200);
    expect((await json(chat)).model).toBe('memlora:alice@2');
    expect(gen.calls.at(-1)!.req).toMatchObject({ userId: 'alice', adapterVersion: 2 });
    expect((await h.req('POST', '/v1/chat/completions', { model: 'memlora:alice@2', user: 'alice', adapter_version: 2, messages })).status).toBe(200);
    expect((await h.req('POST', '/v1/chat/completions', { model: 'memlora:alice', adapter_version: 2, messages })).status).toBe(200);
    expect(gen.calls.at(-1)!.req.adapterVersion).toBe(2);
    expect((await h.req('POST', '/v1/chat/completions', { model: 'memlora:alice', messages })).status).toBe(200);
    expect(gen.calls.at(-1)!.req.adapterVersion).toBeUndefined();
    expect((await h.req('POST', '/v1/completions', { model: 'memlora:alice@2', prompt: 'hi', max_tokens: 0, echo: true, logprobs: 0 })).status).toBe(200);
    expect(gen.scoreCalls.at(-1)).toMatchObject({ userId: 'alice', adapterVersion: 2 });
    expect((await h.req('POST', '/v1/completions', { model: 'memlora:alice@2', prompt: 'hi', max_tokens: 2 })).status).toBe(200);
    expect(gen.calls.at(-1)!.req).toMatchObject({ userId: 'alice', adapterVersion: 2 });
    expect((await h.req('POST', '/v1/responses', { model: 'memlora:alice@2', input: 'hi', store: false })).status).toBe(200);
    expect(gen.calls.at(-1)!.req).toMatchObject({ userId: 'alice', adapterVersion: 2 });

    for (const [body, path] of [
      [{ model: 'memlora:alice@2', adapter_version: 1, messages }, 'model'],
      [{ model: 'memlora:alice@2', mode: 'vanilla', messages }, 'model'],
      [{ model: 'memlora:alice', adapter_version: 2, mode: 'memory', messages }, 'adapter_version'],
    ] as const) {
      const err = await expectError(await h.req('POST', '/v1/chat/completions', body), 422, 'validation_failed');
      expect(err.details.issues.map((i: { path: string }) => i.path), JSON.stringify(body)).toContain(path);
    }
  });

  it('a chat completion that names no model answers as the listed model', async () => {
    h = makeHarness({ services: { generate: fakeGenerate() } });
    await h.req('PUT', '/v1/users/alice');
    const res = await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: [{ role: 'user', content: 'hi' }] });
    expect(res.status).toBe(200);
    expect((await json(res)).model).toBe('memlora');
  });
});
