import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { OPENAPI_FILE } from '../../src/http/app.js';
import { healthSchema, readySchema } from '../../src/http/schemas.js';
import { fakeGenerate } from './fake-generate.js';
import { json, makeHarness, type Harness } from './helpers.js';

let h: Harness;
afterEach(() => h?.cleanup());

describe('health and readiness', () => {
  it('healthz is always ok', async () => {
    h = makeHarness();
    const res = await h.req('GET', '/healthz');
    expect(res.status).toBe(200);
    healthSchema.parse(await json(res));
  });

  it('readyz reflects the db, the model and draining', async () => {
    const gen = fakeGenerate();
    h = makeHarness();
    let body = readySchema.parse(await json(await h.req('GET', '/readyz')));
    expect(body).toEqual({ status: 'ready', checks: { db: 'ok', model: 'absent', draining: false } });
    h.cleanup();

    h = makeHarness({ services: { generate: gen } });
    gen.loaded = false;
    let res = await h.req('GET', '/readyz');
    expect(res.status).toBe(503);
    expect(readySchema.parse(await json(res)).checks.model).toBe('loading');
    gen.loaded = true;
    res = await h.req('GET', '/readyz');
    expect(res.status).toBe(200);
    expect(readySchema.parse(await json(res)).checks.model).toBe('loaded');
    // A model that failed to load is not "loading": it will not come up without a restart, and says why.
    gen.loadError = () => 'the CUDA execution provider is configured but not installed';
    res = await h.req('GET', '/readyz');
    expect(res.status).toBe(503);
    expect(readySchema.parse(await json(res))).toEqual({
      status: 'not_ready',
      checks: { db: 'ok', model: 'failed', draining: false },
      modelError: 'the CUDA execution provider is configured but not installed',
    });
    await h.req('PUT', '/v1/users/u1');
    const refused = await h.req('POST', '/v1/generate', { userId: 'u1', prompt: 'hi' });
    expect(refused.status).toBe(503);
    expect(((await json(refused)) as { error: { code: string; message: string } }).error).toMatchObject({ code: 'model_unavailable', message: 'the model failed to load; the reason is in GET /readyz' });
    gen.loadError = () => null;
    h.lifecycle.draining = true;
    res = await h.req('GET', '/readyz');
    expect(res.status).toBe(503);
    expect(readySchema.parse(await json(res)).checks.draining).toBe(true);
    h.lifecycle.draining = false;
    h.db.sqlite.close();
    res = await h.req('GET', '/readyz');
    expect(res.status).toBe(503);
    body = readySchema.parse(await json(res));
    expect(body.checks.db).toBe('error');
  });
});

describe('metrics', () => {
  it('serves the Prometheus text format and includes registered metrics', async () => {
    h = makeHarness();
    h.metrics.counter('adapter_cache_hits_total', 'Adapter cache hits.').inc(undefined, 3);
    const res = await h.req('GET', '/metrics');
    expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
    const text = await res.text();
    expect(text).toContain('# TYPE adapter_cache_hits_total counter\nadapter_cache_hits_total 3\n');
    expect(text).toContain('# TYPE http_requests_total counter');
  });
});

describe('API documents', () => {
  it('serves openapi.yaml verbatim', async () => {
    h = makeHarness();
    const res = await h.req('GET', '/openapi.yaml');
    expect(res.headers.get('content-type')).toMatch(/^application\/yaml/);
    expect(await res.text()).toBe(readFileSync(OPENAPI_FILE, 'utf8'));
  });

  it('renders /docs as self-contained HTML covering every path', async () => {
    h = makeHarness();
    const res = await h.req('GET', '/docs');
    expect(res.headers.get('content-type')).toMatch(/^text\/html/);
    const html = await res.text();
    expect(html.startsWith('<!doctype html>')).toBe(true);
    for (const path of ['/v1/users/{userId}/history', '/v1/generate', '/v1/chat/completions', '/v1/admin/jobs/{jobId}/cancel', '/metrics']) {
      expect(html).toContain(`<code>${path}</code>`);
    }
    expect(html).toContain('id="schema-GenerateRequest"');
    // Nothing loaded from elsewhere: no scripts, stylesheets, images or remote URLs.
    expect(html).not.toMatch(/<script|<link|<img|src=|https?:\/\//i);
  });
});
