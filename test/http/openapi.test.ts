/**
 * Conformance between openapi.yaml and the app: the same routes, and every documented example
 * valid against the zod schema the document names (x-zod-schema / x-zod-query).
 */
import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import type { z } from 'zod';
import { OPENAPI_FILE } from '../../src/http/app.js';
import * as schemas from '../../src/http/schemas.js';
import { makeHarness } from './helpers.js';

type Obj = Record<string, any>;
const doc = parse(readFileSync(OPENAPI_FILE, 'utf8')) as Obj;
const h = makeHarness();
afterAll(() => h.cleanup());

const METHODS = ['get', 'put', 'post', 'delete', 'patch'];

function documentedRoutes(d: Obj): Set<string> {
  const out = new Set<string>();
  for (const [path, item] of Object.entries(d.paths as Obj)) {
    for (const m of METHODS) if (item[m]) out.add(`${m.toUpperCase()} ${path}`);
  }
  return out;
}

function appRoutes(routes: Array<{ method: string; path: string }>): Set<string> {
  return new Set(routes.filter((r) => r.method !== 'ALL').map((r) => `${r.method} ${r.path.replace(/:(\w+)/g, '{$1}')}`));
}

function diff(a: Set<string>, b: Set<string>): string[] {
  return [...a].filter((x) => !b.has(x)).sort();
}

function deref(v: Obj): Obj {
  if (v && typeof v.$ref === 'string') {
    let cur: any = doc;
    for (const p of v.$ref.slice(2).split('/')) cur = cur[p];
    return deref(cur);
  }
  return v;
}

function schemaNamed(name: unknown): z.ZodType {
  const s = (schemas as Record<string, unknown>)[String(name)];
  if (!s || typeof (s as z.ZodType).safeParse !== 'function') throw new Error(`openapi names x-zod-schema ${String(name)}, which src/http/schemas.ts does not export`);
  return s as z.ZodType;
}

function examplesOf(media: Obj): Array<{ label: string; value: unknown; schema?: string }> {
  const out: Array<{ label: string; value: unknown; schema?: string }> = [];
  if (media.example !== undefined) out.push({ label: 'example', value: media.example, schema: media['x-zod-schema'] });
  for (const [k, ex] of Object.entries((media.examples ?? {}) as Obj)) {
    out.push({ label: k, value: ex.value, schema: ex['x-zod-schema'] ?? media['x-zod-schema'] });
  }
  return out;
}

const operations: Array<{ key: string; path: string; op: Obj; pathParams: Obj[] }> = [];
for (const [path, item] of Object.entries(doc.paths as Obj)) {
  for (const m of METHODS) {
    if (item[m]) operations.push({ key: `${m.toUpperCase()} ${path}`, path, op: item[m], pathParams: (item.parameters ?? []).map(deref) });
  }
}

describe('openapi.yaml', () => {
  it('is OpenAPI 3.1', () => {
    expect(doc.openapi).toMatch(/^3\.1\./);
  });

  it('documents exactly the routes the app serves', () => {
    const documented = documentedRoutes(doc);
    const served = appRoutes(h.app.routes);
    expect(diff(served, documented), 'routes the document lacks').toEqual([]);
    expect(diff(documented, served), 'documented routes the app lacks').toEqual([]);
  });

  it('would notice a missing or an extra route', () => {
    const served = appRoutes(h.app.routes);
    const lacking = structuredClone(doc);
    delete lacking.paths['/v1/generate'];
    expect(diff(served, documentedRoutes(lacking))).toEqual(['POST /v1/generate']);
    const extra = structuredClone(doc);
    extra.paths['/v1/users/{userId}'].patch = { responses: {} };
    expect(diff(documentedRoutes(extra), served)).toEqual(['PATCH /v1/users/{userId}']);
  });

  for (const { key, op, pathParams } of operations) {
    describe(key, () => {
      it('has a summary and responses', () => {
        expect(typeof op.summary).toBe('string');
        expect(Object.keys(op.responses ?? {}).length).toBeGreaterThan(0);
      });

      it('has request examples that validate against its zod schema', () => {
        const body = op.requestBody ? deref(op.requestBody) : undefined;
        if (!body) return;
        // Files uploaded as they are (an adapter's): bytes, or multipart parts of bytes; no JSON schema to hold them to.
        if (!body.content['application/json']) {
          for (const [type, media] of Object.entries(body.content as Obj)) {
            if (type === 'multipart/form-data') {
              expect(media.schema.type).toBe('object');
              for (const part of Object.values(media.schema.properties as Obj)) expect(part).toMatchObject({ type: 'string', format: 'binary' });
            } else {
              expect(type).toBe('application/octet-stream');
              expect(media.schema).toEqual({ type: 'string', format: 'binary' });
            }
          }
          return;
        }
        const media = body.content['application/json'];
        expect(media, 'JSON request body').toBeTruthy();
        const schema = schemaNamed(media['x-zod-schema']);
        const examples = examplesOf(media);
        expect(examples.length, 'request examples').toBeGreaterThan(0);
        for (const ex of examples) {
          const r = schema.safeParse(ex.value);
          expect(r.success, `${ex.label}: ${r.success ? '' : JSON.stringify(r.error.issues)}`).toBe(true);
        }
      });

      it('has parameter examples that validate', () => {
        const params = [...pathParams, ...(op.parameters ?? []).map(deref)];
        const query = params.filter((p) => p.in === 'query');
        if (query.length > 0) {
          const schema = schemaNamed(op['x-zod-query']);
          for (const p of query) {
            expect(p.example, `example for query ${p.name}`).not.toBeUndefined();
            const value = { ...(p['x-example-with'] ?? {}), [p.name]: String(p.example) };
            const r = schema.safeParse(value);
            expect(r.success, `${p.name}=${p.example}: ${r.success ? '' : JSON.stringify(r.error.issues)}`).toBe(true);
          }
        }
        for (const p of params.filter((q) => q.in === 'path')) {
          expect(p.example, `example for path ${p.name}`).not.toBeUndefined();
          if (p.name === 'userId') expect(schemas.isValidUserId(p.example)).toBe(true);
          if (p.name === 'jobId') expect(schemas.jobIdSchema.safeParse(p.example).success).toBe(true);
        }
      });

      it('has response examples that validate (success against the named schema, errors against the error shape)', () => {
        for (const [status, r] of Object.entries(op.responses as Obj)) {
          const resp = deref(r);
          expect(typeof resp.description).toBe('string');
          const media = resp.content?.['application/json'];
          if (!media) continue;
          const examples = examplesOf(media);
          expect(examples.length, `${status} examples`).toBeGreaterThan(0);
          for (const ex of examples) {
            // Errors use the one error shape unless the document names another schema (the /readyz probe body).
            const schema = ex.schema === undefined && Number(status) >= 400 ? schemas.errorBodySchema : schemaNamed(ex.schema);
            const result = schema.safeParse(ex.value);
            expect(result.success, `${status} ${ex.label}: ${result.success ? '' : JSON.stringify(result.error.issues)}`).toBe(true);
          }
        }
      });
    });
  }
});
