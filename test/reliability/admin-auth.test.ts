/**
 * Admin authentication gives a prober nothing to work with: every refused token, however close to
 * the real one, gets the same status, body and headers; the comparison is constant-time by
 * construction (both sides hashed to fixed-size digests, then timingSafeEqual, on every request
 * including malformed ones); and no spelling of an admin path slips past the check.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { parse as parseYaml } from 'yaml';

vi.mock('node:crypto', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:crypto')>();
  return { ...real, timingSafeEqual: vi.fn(real.timingSafeEqual) };
});

const crypto = await import('node:crypto');
const { OPENAPI_FILE } = await import('../../src/http/app.js');
const { requireAdmin, tokenMatches } = await import('../../src/http/auth.js');
const { makeHarness } = await import('../http/helpers.js');
const { snapshot } = await import('./support.js');

/** Mixed case and digits, so upper- and lower-casing it gives different strings. */
const TOKEN = 'Adm1n-Token_XyZ.0123456789abcdefQRS';
const sha = (s: string) => createHash('sha256').update(s, 'utf8').digest();
const safeEqual = vi.mocked(crypto.timingSafeEqual);

type H = ReturnType<typeof makeHarness>;
let h: H;
beforeEach(() => {
  h = makeHarness({ env: { MEMLORA_ADMIN_TOKEN: TOKEN } });
  safeEqual.mockClear();
});
afterEach(() => h.cleanup());

/** A same-length string that differs from `s` in every position. */
const flipped = (s: string) => [...s].map((ch) => (ch === 'a' ? 'b' : 'a')).join('');

const REFUSED: Array<[string, string | undefined]> = [
  ['missing', undefined],
  ['empty', ''],
  ['scheme only', 'Bearer'],
  ['scheme and space', 'Bearer '],
  ['scheme and spaces', 'Bearer      '],
  ['token without scheme', TOKEN],
  ['Basic scheme', `Basic ${Buffer.from(`admin:${TOKEN}`).toString('base64')}`],
  ['Basic scheme, raw token', `Basic ${TOKEN}`],
  ['Token scheme', `Token ${TOKEN}`],
  ['Digest scheme', `Digest username="admin", response="${TOKEN}"`],
  ['scheme glued to token', `Bearer${TOKEN}`],
  ['colon separator', `Bearer:${TOKEN}`],
  ['equals separator', `Bearer=${TOKEN}`],
  ['tab separator', `Bearer\t${TOKEN}`],
  ['longer scheme', `BearerX ${TOKEN}`],
  ['two tokens', `Bearer ${TOKEN} ${TOKEN}`],
  ['token and junk', `Bearer ${TOKEN} extra`],
  ['comma list', `Bearer ${TOKEN}, Basic x`],
  ['quoted', `Bearer "${TOKEN}"`],
  ['lowercased token', `Bearer ${TOKEN.toLowerCase()}`],
  ['uppercased token', `Bearer ${TOKEN.toUpperCase()}`],
  ['lowercase scheme, wrong token', `bearer ${flipped(TOKEN)}`],
  ['wrong, same length', `Bearer ${flipped(TOKEN)}`],
  ['last character wrong', `Bearer ${TOKEN.slice(0, -1)}T`],
  ['first character wrong', `Bearer b${TOKEN.slice(1)}`],
  ['prefix, all but one', `Bearer ${TOKEN.slice(0, -1)}`],
  ['prefix, half', `Bearer ${TOKEN.slice(0, TOKEN.length / 2)}`],
  ['prefix, one character', `Bearer ${TOKEN[0]}`],
  ['correct with suffix', `Bearer ${TOKEN}x`],
  ['correct twice', `Bearer ${TOKEN}${TOKEN}`],
  ['latin-1 lookalike', `Bearer ${TOKEN.replace('a', '\u00e0')}`],
  ['very long', `Bearer ${'x'.repeat(8000)}`],
  ['the literal placeholder', 'Bearer <MEMLORA_ADMIN_TOKEN>'],
  ['null', 'Bearer null'],
  ['undefined', 'Bearer undefined'],
];

/** Forms RFC 7235 (case-insensitive scheme) and RFC 6750 (`"Bearer" 1*SP b64token`) make valid, plus OWS trimming. */
const ACCEPTED = [`Bearer ${TOKEN}`, `bearer ${TOKEN}`, `BEARER ${TOKEN}`, `Bearer   ${TOKEN}`, `  Bearer ${TOKEN}  `];

const doc = parseYaml(readFileSync(OPENAPI_FILE, 'utf8')) as Record<string, any>;
/** Every admin operation in the document, with a concrete path. */
const ADMIN_OPS: Array<{ method: string; path: string }> = [];
for (const [template, item] of Object.entries(doc.paths as Record<string, any>)) {
  for (const m of ['get', 'put', 'post', 'delete', 'patch']) {
    if (item[m]?.security?.length) {
      ADMIN_OPS.push({ method: m.toUpperCase(), path: template.replace('{userId}', 'alice').replace('{jobId}', 'job_0000000000aaaaaaaaaaaaaaaa') });
    }
  }
}

async function call(app: H['app'], method: string, path: string, auth: string | undefined) {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (auth !== undefined) headers.authorization = auth;
  const res = await app.request(path, { method, headers, body: method === 'GET' ? undefined : '{}' });
  const fields = [...res.headers].filter(([k]) => k !== 'x-request-id');
  return { status: res.status, body: await res.text(), headers: JSON.stringify(fields), requestId: res.headers.get('x-request-id') };
}

describe('refusals are indistinguishable', () => {
  it('every refused form gets the same status, body and headers on every admin route', async () => {
    await h.req('PUT', '/v1/users/alice');
    expect(ADMIN_OPS.length).toBeGreaterThanOrEqual(4);
    const before = snapshot(h.db, h.config.adapterDir);
    const reference = await call(h.app, 'GET', '/v1/admin/jobs', undefined);
    expect(reference.status).toBe(401);
    expect(JSON.parse(reference.body).error.code).toBe('unauthorized');
    expect(reference.headers).toContain('www-authenticate');
    for (const { method, path } of [...ADMIN_OPS, { method: 'GET', path: '/v1/admin/no-such-route' }]) {
      for (const [label, auth] of REFUSED) {
        const r = await call(h.app, method, path, auth);
        const where = `${method} ${path} with ${label}`;
        expect(r.status, where).toBe(reference.status);
        expect(r.body, where).toBe(reference.body);
        expect(r.headers, where).toBe(reference.headers);
        expect(r.requestId, where).toBeTruthy();
      }
    }
    // Nothing was written by any refused request (inject and cancel included).
    expect(snapshot(h.db, h.config.adapterDir)).toEqual(before);
  });

  it('a server with no token configured refuses everything the same way', async () => {
    const { createApp } = await import('../../src/http/app.js');
    const app = createApp({ config: { ...h.config, adminToken: null }, db: h.db, services: { adapterFiles: { removeUserAdapters: async () => ({ files: 0, bytes: 0 }) } }, logger: h.logger });
    const reference = await call(h.app, 'GET', '/v1/admin/jobs', undefined);
    for (const [label, auth] of [...REFUSED, ['the other server\'s token', `Bearer ${TOKEN}`] as [string, string]]) {
      const r = await call(app, 'GET', '/v1/admin/jobs', auth);
      expect([r.status, r.body, r.headers], label).toEqual([reference.status, reference.body, reference.headers]);
    }
  });

  it('accepts exactly the token, in the forms the HTTP specs allow', async () => {
    for (const auth of ACCEPTED) expect((await call(h.app, 'GET', '/v1/admin/jobs', auth)).status, JSON.stringify(auth)).toBe(200);
  });
});

describe('constant-time comparison, by construction', () => {
  it('tokenMatches hashes both sides to 32-byte digests and compares them with timingSafeEqual', () => {
    for (const [given, expected] of [
      ['', TOKEN],
      ['x', TOKEN],
      [TOKEN, TOKEN],
      [TOKEN.slice(0, -1), TOKEN],
      [`${TOKEN}x`, TOKEN],
      ['y'.repeat(100_000), TOKEN],
    ]) {
      safeEqual.mockClear();
      const result = tokenMatches(given, expected);
      expect(safeEqual).toHaveBeenCalledTimes(1);
      const [a, b] = safeEqual.mock.calls[0] as [Buffer, Buffer];
      // Fixed length whatever the input: timingSafeEqual never throws on a length mismatch, and the
      // time does not depend on how long the guess was.
      expect(a.length).toBe(32);
      expect(b.length).toBe(32);
      expect(Buffer.from(a).equals(sha(given))).toBe(true);
      expect(Buffer.from(b).equals(sha(expected))).toBe(true);
      expect(result).toBe(given === expected);
    }
  });

  it('the middleware runs exactly one digest comparison per request, whatever the header looks like', async () => {
    for (const [label, auth] of [...REFUSED, ...ACCEPTED.map((a) => ['accepted', a] as [string, string])]) {
      safeEqual.mockClear();
      await call(h.app, 'GET', '/v1/admin/jobs', auth);
      expect(safeEqual, label).toHaveBeenCalledTimes(1);
      const [a, b] = safeEqual.mock.calls[0] as [Buffer, Buffer];
      expect(a.length, label).toBe(32);
      expect(Buffer.from(b).equals(sha(TOKEN)), label).toBe(true);
    }
  });

  it('an unconfigured server still compares (against a random reference) before refusing', async () => {
    const mw = requireAdmin(null);
    for (const auth of [undefined, `Bearer ${TOKEN}`, 'Bearer unconfigured:0.5']) {
      safeEqual.mockClear();
      const c = { req: { header: () => auth } } as unknown as Parameters<typeof mw>[0];
      await expect(mw(c, async () => {})).rejects.toMatchObject({ status: 401, code: 'unauthorized' });
      expect(safeEqual).toHaveBeenCalledTimes(1);
    }
  });
});

describe('admin paths cannot be reached around the check', () => {
  it('no spelling of an admin path answers 2xx without the token', async () => {
    await h.req('PUT', '/v1/users/alice');
    const variants = (p: string) => [
      p,
      `${p}/`,
      p.replace('/v1/admin/', '/v1//admin/'),
      p.replace('/v1/admin/', '/v1/admin//'),
      p.replace('/v1/admin/', '/v1/./admin/'),
      p.replace('/v1/admin/', '/v1/users/../admin/'),
      p.replace('/v1/admin/', '/v1/users/%2e%2e/admin/'),
      p.replace('/v1/admin/', '/v1/%61dmin/'),
      p.replace('/v1/admin/', '/V1/ADMIN/'),
      p.replace('/v1/admin/', '/v1/Admin/'),
      p.replace('/v1/admin/', '/v1/admin%2f'),
      `${p};jsessionid=1`,
      `${p}%00`,
      `${p}?authorization=Bearer%20${TOKEN}`,
      `${p}#frag`,
    ];
    for (const { method, path } of ADMIN_OPS) {
      for (const v of variants(path)) {
        const r = await call(h.app, method, v, undefined);
        expect(r.status, `${method} ${v}`).toBeGreaterThanOrEqual(400);
        expect(r.status, `${method} ${v}`).toBeLessThan(500);
        expect(JSON.parse(r.body).error.code, `${method} ${v}`).toMatch(/^(unauthorized|not_found|method_not_allowed)$/);
      }
    }
    expect(h.db.sqlite.prepare('SELECT count(*) AS n FROM injection_jobs').get()).toEqual({ n: 0 });
  });

  it('the token is never echoed back, in a refusal or anywhere else', async () => {
    for (const [, auth] of REFUSED) {
      const r = await call(h.app, 'GET', '/v1/admin/jobs', auth);
      expect(r.body).not.toContain(TOKEN.slice(0, 12));
      expect(r.headers).not.toContain(TOKEN.slice(0, 12));
    }
    const metrics = await (await h.req('GET', '/metrics')).text();
    expect(metrics).not.toContain(TOKEN.slice(0, 12));
    expect(h.logger.lines.map((l) => JSON.stringify(l)).join('\n')).not.toContain(TOKEN.slice(0, 12));
  });
});
