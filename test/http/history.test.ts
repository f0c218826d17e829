import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { historyAppendResponse, historyPageSchema, historySearchSchema } from '../../src/http/schemas.js';
import { expectError, json, makeHarness, type Harness } from './helpers.js';

let h: Harness;
beforeEach(async () => {
  h = makeHarness({ env: { MEMLORA_BODY_LIMIT_BYTES: '4MiB' } });
  await h.req('PUT', '/v1/users/alice');
  await h.req('PUT', '/v1/users/bob');
});
afterEach(() => h.cleanup());

const count = (userId: string) => (h.db.sqlite.prepare('SELECT count(*) AS n FROM history_items WHERE user_id = ?').get(userId) as { n: number }).n;

describe('POST /v1/users/{userId}/history', () => {
  it('stores a batch of 1,000 items in one request, ids in input order', async () => {
    const items = Array.from({ length: 1000 }, (_, i) => ({ kind: 'dialogue', role: i % 2 ? 'assistant' : 'user', text: `turn number ${i}` }));
    const res = await h.req('POST', '/v1/users/alice/history', { items });
    expect(res.status).toBe(201);
    const body = historyAppendResponse.parse(await json(res));
    expect(body.inserted).toBe(1000);
    expect(body.ids).toEqual([...body.ids].sort((a, b) => a - b));
    expect(new Set(body.ids).size).toBe(1000);
    expect(count('alice')).toBe(1000);
    const first = await json(await h.req('GET', '/v1/users/alice/history?limit=1'));
    expect(first.items[0]).toMatchObject({ id: body.ids[0], text: 'turn number 0', role: 'user', kind: 'dialogue' });
  });

  it('refuses 0 and 1,001 items', async () => {
    await expectError(await h.req('POST', '/v1/users/alice/history', { items: [] }), 422, 'validation_failed');
    const items = Array.from({ length: 1001 }, () => ({ kind: 'post', text: 'x' }));
    await expectError(await h.req('POST', '/v1/users/alice/history', { items }), 422, 'validation_failed');
    expect(count('alice')).toBe(0);
  });

  it('writes nothing when one item of a batch is bad, and names that item', async () => {
    await h.req('POST', '/v1/users/alice/history', { items: [{ kind: 'post', text: 'already there' }] });
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ kind: 'diary', text: 'x' }, 'items.500.kind'],
      [{ kind: 'post', text: '   ' }, 'items.500.text'],
      [{ kind: 'post', text: 'a\u0000b' }, 'items.500.text'],
      [{ kind: 'post', text: 'x', role: 'robot' }, 'items.500.role'],
      [{ kind: 'post', text: 'x', createdAt: 'yesterday' }, 'items.500.createdAt'],
      [{ kind: 'post', text: 'x', extra: true }, 'items.500'],
      [{ kind: 'post', text: 'x'.repeat(65_537) }, 'items.500.text'],
    ];
    for (const [bad, path] of cases) {
      const items: unknown[] = Array.from({ length: 1000 }, (_, i) => ({ kind: 'post', text: `good ${i}` }));
      items[500] = bad;
      const err = await expectError(await h.req('POST', '/v1/users/alice/history', { items }), 422, 'validation_failed');
      expect(err.details.issues.map((i: { path: string }) => i.path)).toContain(path);
      expect(count('alice')).toBe(1);
    }
  });

  it('keeps given timestamps and roles', async () => {
    await h.req('POST', '/v1/users/alice/history', {
      items: [{ kind: 'dialogue', role: 'system', text: 'old', createdAt: '2020-02-03T04:05:06+01:00' }],
    });
    const page = historyPageSchema.parse(await json(await h.req('GET', '/v1/users/alice/history')));
    expect(page.items[0]).toMatchObject({ role: 'system', createdAt: '2020-02-03T03:05:06.000Z' });
  });

  it('keeps the conversation a turn belongs to, and rejects malformed conversation ids', async () => {
    await h.req('POST', '/v1/users/alice/history', {
      items: [
        { kind: 'dialogue', role: 'user', text: 'hello', conversationId: 'visit-1' },
        { kind: 'dialogue', role: 'assistant', text: 'hi, how can I help?', conversationId: 'visit-1' },
        { kind: 'profile', text: 'I am a nurse.' },
      ],
    });
    const page = historyPageSchema.parse(await json(await h.req('GET', '/v1/users/alice/history')));
    expect(page.items.map((i) => i.conversationId)).toEqual(['visit-1', 'visit-1', null]);
    const err = await expectError(
      await h.req('POST', '/v1/users/alice/history', { items: [{ kind: 'dialogue', text: 'x', conversationId: '../etc' }] }),
      422,
      'validation_failed',
    );
    expect(err.details.issues.map((i: { path: string }) => i.path)).toContain('items.0.conversationId');
    expect(count('alice')).toBe(3);
  });

  it('404s for unknown users and 422s for bad ids', async () => {
    await expectError(await h.req('POST', '/v1/users/carol/history', { items: [{ kind: 'post', text: 'x' }] }), 404, 'user_not_found');
    await expectError(await h.req('POST', '/v1/users/a%20b/history', { items: [{ kind: 'post', text: 'x' }] }), 422, 'invalid_user_id');
    await expectError(await h.req('GET', '/v1/users/carol/history'), 404, 'user_not_found');
  });
});

describe('GET /v1/users/{userId}/history', () => {
  it('lists every item exactly once across pages, only the user\'s own', async () => {
    const items = Array.from({ length: 57 }, (_, i) => ({ kind: i % 3 ? 'post' : 'profile', text: `alice ${i}` }));
    const { ids } = await json(await h.req('POST', '/v1/users/alice/history', { items }));
    await h.req('POST', '/v1/users/bob/history', { items: [{ kind: 'post', text: 'bob only' }] });
    const seen: number[] = [];
    let cursor: string | null = null;
    do {
      const page = historyPageSchema.parse(await json(await h.req('GET', `/v1/users/alice/history?limit=10${cursor ? `&cursor=${cursor}` : ''}`)));
      seen.push(...page.items.map((i) => i.id));
      expect(page.items.every((i) => i.userId === 'alice')).toBe(true);
      cursor = page.nextCursor;
    } while (cursor);
    expect(seen).toEqual(ids);
    const profiles = historyPageSchema.parse(await json(await h.req('GET', '/v1/users/alice/history?kind=profile&limit=1000')));
    expect(profiles.items).toHaveLength(19);
  });

  it('searches with FTS5 bm25 and ranks the best match first', async () => {
    await h.req('POST', '/v1/users/alice/history', {
      items: [
        { kind: 'profile', text: 'I am vegetarian and I live in Lyon' },
        { kind: 'post', text: 'The weather in Lyon is mild' },
        { kind: 'post', text: 'Unrelated words entirely' },
      ],
    });
    await h.req('POST', '/v1/users/bob/history', { items: [{ kind: 'post', text: 'Bob is vegetarian too' }] });
    const res = historySearchSchema.parse(await json(await h.req('GET', '/v1/users/alice/history?q=vegetarian%20Lyon')));
    expect(res.items.map((i) => i.text)).toEqual(['I am vegetarian and I live in Lyon', 'The weather in Lyon is mild']);
    expect(res.items[0].score).toBeGreaterThan(res.items[1].score);
    const all = historySearchSchema.parse(await json(await h.req('GET', '/v1/users/alice/history?q=vegetarian%20Lyon&match=all')));
    expect(all.items).toHaveLength(1);
    const limited = historySearchSchema.parse(await json(await h.req('GET', '/v1/users/alice/history?q=Lyon&limit=1')));
    expect(limited.items).toHaveLength(1);
  });

  it('is immune to FTS5 syntax in q', async () => {
    await h.req('POST', '/v1/users/alice/history', { items: [{ kind: 'post', text: 'alpha beta' }] });
    for (const q of ['"', 'alpha"', 'alpha OR', 'NOT alpha', 'text:alpha', '*', 'alp*', '(alpha', 'NEAR(alpha beta)', '^alpha', "alpha'); DROP TABLE users;--"]) {
      const res = await h.req('GET', `/v1/users/alice/history?q=${encodeURIComponent(q)}`);
      expect(res.status, q).toBe(200);
      historySearchSchema.parse(await json(res));
    }
    const hit = historySearchSchema.parse(await json(await h.req('GET', `/v1/users/alice/history?q=${encodeURIComponent('text:alpha')}`)));
    expect(hit.items).toHaveLength(1);
    expect(count('alice')).toBe(1);
  });

  it('validates the query', async () => {
    await expectError(await h.req('GET', '/v1/users/alice/history?kind=diary'), 422, 'validation_failed');
    await expectError(await h.req('GET', '/v1/users/alice/history?q='), 422, 'validation_failed');
    await expectError(await h.req('GET', '/v1/users/alice/history?q=x&cursor=MTAx'), 422, 'validation_failed');
    await expectError(await h.req('GET', '/v1/users/alice/history?match=all'), 422, 'validation_failed');
    await expectError(await h.req('GET', '/v1/users/alice/history?cursor=ImFsaWNlIg'), 422, 'invalid_cursor');
  });
});

describe('many bad items', () => {
  it('reports at most 100 issues and says how many were left out', async () => {
    const items = Array.from({ length: 1000 }, () => ({ kind: 'nope', text: 'x' }));
    const err = await expectError(await h.req('POST', '/v1/users/alice/history', { items }), 422, 'validation_failed');
    expect(err.details.issues).toHaveLength(100);
    expect(err.details.truncated).toBe(900);
    expect(err.message).toMatch(/and 990 more$/);
    expect(count('alice')).toBe(0);
  });
});
