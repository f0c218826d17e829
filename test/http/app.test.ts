import { afterEach, describe, expect, it } from 'vitest';
import { expectError, json, makeHarness, type Harness } from './helpers.js';

let h: Harness;
afterEach(() => h?.cleanup());

describe('request ids', () => {
  it('echoes a sane incoming id and replaces an insane one', async () => {
    h = makeHarness();
    const echoed = await h.req('GET', '/healthz', undefined, { 'x-request-id': 'abc-123.DEF_4' });
    expect(echoed.headers.get('x-request-id')).toBe('abc-123.DEF_4');
    for (const bad of ['has space', 'x'.repeat(200), 'semi;colon', '<script>']) {
      const res = await h.req('GET', '/healthz', undefined, { 'x-request-id': bad });
      const id = res.headers.get('x-request-id');
      expect(id).not.toBe(bad);
      expect(id).toMatch(/^[0-9a-f-]{36}$/);
    }
  });

  it('is on error responses too, and differs per request', async () => {
    h = makeHarness();
    const a = await h.req('GET', '/nope');
    const b = await h.req('GET', '/nope');
    expect(a.headers.get('x-request-id')).toBeTruthy();
    expect(a.headers.get('x-request-id')).not.toBe(b.headers.get('x-request-id'));
  });
});

describe('routing errors', () => {
  it('answers unknown routes with 404 not_found', async () => {
    h = makeHarness();
    await expectError(await h.req('GET', '/v1/nothing'), 404, 'not_found');
    await expectError(await h.req('GET', '/v1/users/alice/unknown'), 404, 'not_found');
    await expectError(await h.req('GET', '/v1/users/'), 404, 'not_found');
  });

  it('answers a wrong method with 405 and an Allow header', async () => {
    h = makeHarness();
    const res = await h.req('POST', '/v1/users');
    expect(res.headers.get('allow')).toBe('GET, HEAD');
    const err = await expectError(res, 405, 'method_not_allowed');
    expect(err.details.allowed).toEqual(['GET', 'HEAD']);
    const res2 = await h.req('PATCH', '/v1/users/alice');
    expect(res2.headers.get('allow')?.split(', ').sort()).toEqual(['DELETE', 'GET', 'HEAD', 'PUT']);
    await expectError(res2, 405, 'method_not_allowed');
    await expectError(await h.req('GET', '/v1/generate'), 405, 'method_not_allowed');
  });
});

describe('bodies', () => {
  it('refuses bodies over the limit by Content-Length with 413', async () => {
    h = makeHarness({ env: { MEMLORA_BODY_LIMIT_BYTES: '2048' } });
    const big = JSON.stringify({ items: [{ kind: 'post', text: 'x'.repeat(3000) }] });
    const err = await expectError(await h.req('POST', '/v1/users/alice/history', big), 413, 'body_too_large');
    expect(err.details).toEqual({ limitBytes: 2048 });
  });

  it('refuses a streamed body (no Content-Length) once it passes the limit', async () => {
    h = makeHarness({ env: { MEMLORA_BODY_LIMIT_BYTES: '2048' } });
    await h.req('PUT', '/v1/users/alice');
    const chunk = new TextEncoder().encode('x'.repeat(1000));
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(ctrl) {
        if (sent++ < 10) ctrl.enqueue(chunk);
        else ctrl.close();
      },
    });
    const res = await h.app.request('/v1/users/alice/history', { method: 'POST', body, duplex: 'half' } as RequestInit);
    await expectError(res, 413, 'body_too_large');
    expect((await json(await h.req('GET', '/v1/users/alice/history'))).items).toEqual([]);
  });

  it('answers malformed, empty and non-UTF-8 bodies with 400 invalid_json', async () => {
    h = makeHarness();
    await h.req('PUT', '/v1/users/alice');
    await expectError(await h.req('POST', '/v1/users/alice/history', '{"items": [}'), 400, 'invalid_json');
    await expectError(await h.req('POST', '/v1/users/alice/history', ''), 400, 'invalid_json');
    const latin1 = new Uint8Array([0x7b, 0x22, 0xe9, 0x22, 0x3a, 0x31, 0x7d]); // {"é":1} in Latin-1
    await expectError(await h.app.request('/v1/users/alice/history', { method: 'POST', body: latin1 }), 400, 'invalid_json');
    await expectError(await h.req('POST', '/v1/generate', 'null garbage'), 400, 'invalid_json');
  });

  it('answers schema violations with 422 validation_failed naming the paths', async () => {
    h = makeHarness();
    await h.req('PUT', '/v1/users/alice');
    const err = await expectError(
      await h.req('POST', '/v1/users/alice/history', { items: [{ kind: 'post', text: 'ok' }, { kind: 'nope', text: '' }], extra: 1 }),
      422,
      'validation_failed',
    );
    const paths = err.details.issues.map((i: { path: string }) => i.path).sort();
    expect(paths).toEqual(['', 'items.1.kind', 'items.1.text']);
    await expectError(await h.req('POST', '/v1/users/alice/history', [1, 2]), 422, 'validation_failed');
  });

  it('refuses deeply nested JSON without overflowing the stack', async () => {
    h = makeHarness();
    const deep = `{"metadata":${'['.repeat(100_000)}${']'.repeat(100_000)}}`;
    const err = await expectError(await h.req('PUT', '/v1/users/alice', deep), 422, 'validation_failed');
    expect(err.message).toMatch(/deeper than/);
    await expectError(await h.req('GET', '/v1/users/alice'), 404, 'user_not_found');
  });
});

describe('unexpected failures', () => {
  it('answer 500 internal without internals, and are logged with the request id', async () => {
    h = makeHarness({
      services: {
        adapterFiles: {
          removeUserAdapters: async () => {
            throw new Error('disk exploded at /secret/path');
          },
        },
      },
    });
    await h.req('PUT', '/v1/users/alice');
    const res = await h.req('DELETE', '/v1/users/alice', undefined, { 'x-request-id': 'req-500' });
    const text = await res.clone().text();
    await expectError(res, 500, 'internal');
    expect(text).not.toMatch(/secret|exploded|at .*\.ts/);
    const logged = h.logger.lines.find((l) => l.level === 'error');
    expect(logged?.fields.requestId).toBe('req-500');
    expect(String(logged?.fields.err)).toMatch(/disk exploded/);
  });

  it('maps a busy database to 503 with Retry-After', async () => {
    h = makeHarness({
      services: {
        adapterFiles: {
          removeUserAdapters: async () => {
            throw Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY' });
          },
        },
      },
    });
    await h.req('PUT', '/v1/users/alice');
    const res = await h.req('DELETE', '/v1/users/alice');
    expect(res.headers.get('retry-after')).toBe('1');
    await expectError(res, 503, 'busy');
  });
});

describe('http metrics', () => {
  it('counts requests by route pattern and status', async () => {
    h = makeHarness();
    await h.req('PUT', '/v1/users/alice');
    await h.req('GET', '/v1/users/alice');
    await h.req('GET', '/v1/users/bob');
    await h.req('GET', '/totally/unknown');
    const text = await (await h.req('GET', '/metrics')).text();
    expect(text).toContain('http_requests_total{method="PUT",route="/v1/users/:userId",status="201"} 1');
    expect(text).toContain('http_requests_total{method="GET",route="/v1/users/:userId",status="200"} 1');
    expect(text).toContain('http_requests_total{method="GET",route="/v1/users/:userId",status="404"} 1');
    expect(text).toContain('http_requests_total{method="GET",route="<unmatched>",status="404"} 1');
    expect(text).toContain('http_request_duration_seconds_count{method="GET",route="/v1/users/:userId"} 2');
  });
});
