import { statSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { modelListSchema, modelSchema } from '../../src/http/schemas.js';
import { fakeGenerate } from './fake-generate.js';
import { expectError, json, makeHarness, type Harness } from './helpers.js';

let h: Harness;
afterEach(() => h?.cleanup());

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

  it('a chat completion that names no model answers as the listed model', async () => {
    h = makeHarness({ services: { generate: fakeGenerate() } });
    await h.req('PUT', '/v1/users/alice');
    const res = await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: [{ role: 'user', content: 'hi' }] });
    expect(res.status).toBe(200);
    expect((await json(res)).model).toBe('memlora');
  });
});
