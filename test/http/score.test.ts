/** POST /v1/score through the real app and a real SQLite file, the scoring service faked (the engine's scoring is tested in test/serve). */
import { afterEach, describe, expect, it } from 'vitest';
import { scoreResultSchema } from '../../src/http/schemas.js';
import { ServiceError } from '../../src/http/services.js';
import { fakeGenerateApp, type FakeGenerate } from './fake-generate.js';
import { expectError, json, type Harness } from './helpers.js';

let h: Harness;
let gen: FakeGenerate;
afterEach(() => h?.cleanup());

async function setup(withService = true) {
  ({ h, gen } = await fakeGenerateApp(withService));
}

describe('POST /v1/score', () => {
  it('passes the request with its defaults filled in and answers the result', async () => {
    await setup();
    const res = await h.req('POST', '/v1/score', { userId: 'alice', prompt: 'Where to?', text: 'to the sea' });
    expect(res.status).toBe(200);
    const body = scoreResultSchema.parse(await json(res));
    expect(body.tokens.map((t) => t.token)).toEqual(['to', ' the', ' sea']);
    expect(body.base).toBeUndefined();
    expect(gen.scoreCalls).toEqual([{ userId: 'alice', prompt: 'Where to?', text: 'to the sea', mode: 'auto', topLogprobs: 0, compare: false }]);
    const compared = scoreResultSchema.parse(await json(await h.req('POST', '/v1/score', { userId: 'alice', messages: [{ role: 'user', content: 'hi' }], text: 'hello', mode: 'vanilla', topLogprobs: 2, compare: true })));
    expect(compared.base?.logprobs).toHaveLength(1);
    expect(gen.scoreCalls[1]).toMatchObject({ mode: 'vanilla', topLogprobs: 2, compare: true, messages: [{ role: 'user', content: 'hi' }] });
    // Token ids as the context and as the text go to the service as they are.
    await h.req('POST', '/v1/score', { userId: 'alice', prompt: [1, 104], text: [105, 106] });
    expect(gen.scoreCalls[2]).toMatchObject({ prompt: [1, 104], text: [105, 106] });
  });

  it('rejects bad bodies with 422 and unknown users with 404 before calling the service', async () => {
    await setup();
    for (const [body, path] of [
      [{ userId: 'alice' }, 'text'],
      [{ userId: 'alice', text: '' }, 'text'],
      [{ userId: 'alice', text: [] }, 'text'],
      [{ userId: 'alice', text: 'x', prompt: [] }, 'prompt'],
      [{ userId: 'alice', text: 'x', prompt: 'a', messages: [{ role: 'user', content: 'b' }] }, 'messages'],
      [{ userId: 'alice', text: 'x', topLogprobs: 21 }, 'topLogprobs'],
      [{ userId: 'alice', text: 'x', mode: 'magic' }, 'mode'],
      [{ userId: 'alice', text: 'x', compare: 'yes' }, 'compare'],
      [{ userId: 'alice', text: 'x', maxTokens: 3 }, ''],
    ] as const) {
      const err = await expectError(await h.req('POST', '/v1/score', body), 422, 'validation_failed');
      expect(err.details.issues.map((i: { path: string }) => i.path), JSON.stringify(body)).toContain(path);
    }
    await expectError(await h.req('POST', '/v1/score', { userId: 'bob', text: 'x' }), 404, 'user_not_found');
    expect(gen.scoreCalls).toHaveLength(0);
  });

  it('answers 503 without a model, and maps the service\'s errors (prompt_too_long 422, queue_full 429)', async () => {
    await setup(false);
    await expectError(await h.req('POST', '/v1/score', { userId: 'alice', text: 'x' }), 503, 'model_unavailable');
    h.cleanup();
    await setup();
    gen.failWith = new ServiceError('prompt_too_long', 'too long', { details: { promptTokens: 600, contextTokens: 512 } });
    const err = await expectError(await h.req('POST', '/v1/score', { userId: 'alice', text: 'x' }), 422, 'prompt_too_long');
    expect(err.details).toEqual({ promptTokens: 600, contextTokens: 512 });
    gen.failWith = new ServiceError('queue_full', 'full', { retryAfterS: 2 });
    const res = await h.req('POST', '/v1/score', { userId: 'alice', text: 'x' });
    expect(res.headers.get('retry-after')).toBe('2');
    await expectError(res, 429, 'queue_full');
  });
});
