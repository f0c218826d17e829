import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { appendHistory, countHistory, listHistory, searchHistory, toFtsQuery, allHistory } from '../../../src/db/queries/history.js';
import { createUser } from '../../../src/db/queries/users.js';
import { tempDb } from '../helpers.js';

let t: ReturnType<typeof tempDb>;
beforeEach(() => {
  t = tempDb();
  createUser(t.db, { id: 'alice' });
  createUser(t.db, { id: 'bob' });
});
afterEach(() => t.cleanup());

describe('appendHistory', () => {
  it('stores a batch in input order with increasing ids', () => {
    const rows = appendHistory(
      t.db,
      'alice',
      [
        { kind: 'profile', text: 'I like tea' },
        { kind: 'dialogue', role: 'user', text: 'hi', createdAt: 5 },
      ],
      100,
    );
    expect(rows.map((r) => [r.kind, r.role, r.text, r.createdAt])).toEqual([
      ['profile', null, 'I like tea', 100],
      ['dialogue', 'user', 'hi', 5],
    ]);
    expect(rows[1].id).toBeGreaterThan(rows[0].id);
  });

  it('writes nothing when one item violates a constraint', () => {
    appendHistory(t.db, 'alice', [{ kind: 'post', text: 'before' }]);
    const items = Array.from({ length: 10 }, (_, i) => ({ kind: 'post' as const, text: `item ${i}` }));
    (items[7] as { kind: string }).kind = 'diary';
    expect(() => appendHistory(t.db, 'alice', items)).toThrow(/CHECK/);
    expect(countHistory(t.db, 'alice')).toBe(1);
    expect(searchHistory(t.db, 'alice', 'item')).toEqual([]);
  });

  it('refuses unknown users with user_not_found', () => {
    expect(() => appendHistory(t.db, 'carol', [{ kind: 'post', text: 'x' }])).toThrow(expect.objectContaining({ code: 'user_not_found' }));
  });
});

describe('listHistory', () => {
  it('pages through one user only, each item once, oldest first, optionally by kind', () => {
    const mine = appendHistory(t.db, 'alice', Array.from({ length: 25 }, (_, i) => ({ kind: i % 2 ? ('qa' as const) : ('post' as const), text: `a${i}` })));
    appendHistory(t.db, 'bob', [{ kind: 'post', text: 'b0' }]);
    const seen: number[] = [];
    let cursor: string | undefined;
    do {
      const page = listHistory(t.db, 'alice', { cursor, limit: 7 });
      seen.push(...page.items.map((h) => h.id));
      cursor = page.nextCursor ?? undefined;
    } while (cursor);
    expect(seen).toEqual(mine.map((r) => r.id));
    const qa = listHistory(t.db, 'alice', { kind: 'qa', limit: 100 });
    expect(qa.items).toHaveLength(12);
    expect(qa.items.every((h) => h.kind === 'qa')).toBe(true);
    expect(qa.nextCursor).toBeNull();
    expect(allHistory(t.db, 'alice').map((h) => h.id)).toEqual(mine.map((r) => r.id));
  });
});

describe('searchHistory', () => {
  beforeEach(() => {
    appendHistory(t.db, 'alice', [
      { kind: 'profile', text: 'I am a vegetarian living in Lyon' },
      { kind: 'post', text: 'Climbing gyms in Lyon are crowded' },
      { kind: 'post', text: 'Nothing relevant here' },
      { kind: 'qa', text: 'Café au lait or espresso?' },
    ]);
    appendHistory(t.db, 'bob', [{ kind: 'post', text: 'Bob is also vegetarian in Lyon' }]);
  });

  it('ranks by bm25 within one user', () => {
    const hits = searchHistory(t.db, 'alice', 'vegetarian Lyon');
    expect(hits.map((h) => h.text)).toEqual(['I am a vegetarian living in Lyon', 'Climbing gyms in Lyon are crowded']);
    expect(hits[0].score).toBeGreaterThan(hits[1].score);
    expect(hits.every((h) => h.userId === 'alice')).toBe(true);
    expect(searchHistory(t.db, 'alice', 'vegetarian Lyon', { match: 'all' }).map((h) => h.text)).toEqual(['I am a vegetarian living in Lyon']);
  });

  it('folds diacritics and case', () => {
    expect(searchHistory(t.db, 'alice', 'CAFE').map((h) => h.kind)).toEqual(['qa']);
  });

  it('treats FTS5 syntax in the query as plain text', () => {
    const hostile = [
      'Lyon"', '"', 'Lyon OR', 'NOT Lyon', 'Lyon AND', 'text:Lyon', '*', 'Ly*', '(Lyon', 'NEAR(Lyon climbing)', '^Lyon',
      '"Lyon" OR "x', "'; DROP TABLE users; --", '\u0000', '-Lyon', '+', '{text}: Lyon', 'Lyon\u0000gyms',
    ];
    for (const q of hostile) {
      expect(() => searchHistory(t.db, 'alice', q), q).not.toThrow();
    }
    // The words still match as words.
    expect(searchHistory(t.db, 'alice', 'text:Lyon').length).toBeGreaterThan(0);
    expect(searchHistory(t.db, 'alice', 'NOT Lyon').length).toBeGreaterThan(0);
    expect(searchHistory(t.db, 'alice', '*')).toEqual([]);
    expect(t.db.sqlite.prepare('SELECT count(*) AS n FROM users').get()).toEqual({ n: 2 });
  });

  it('quotes every term', () => {
    expect(toFtsQuery('a "b" c*')).toBe('"a" OR "b" OR "c"');
    expect(toFtsQuery('text:Lyon NEAR(x)')).toBe('"text" OR "Lyon" OR "NEAR" OR "x"');
    expect(toFtsQuery('x y', 'all')).toBe('"x" AND "y"');
    expect(toFtsQuery('  ** ! ')).toBeNull();
  });

  it('honours the limit', () => {
    expect(searchHistory(t.db, 'alice', 'Lyon', { limit: 1 })).toHaveLength(1);
  });
});

describe('searchHistory with arbitrary text', () => {
  it('never throws and never matches across users', async () => {
    const fc = await import('fast-check');
    appendHistory(t.db, 'alice', [{ kind: 'post', text: 'alpha beta gamma "quoted" NEAR OR AND NOT * ^ : ( )' }]);
    appendHistory(t.db, 'bob', [{ kind: 'post', text: 'alpha beta gamma' }]);
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: 'binary', maxLength: 60 }), fc.string({ unit: fc.constantFrom('"', '*', '^', ':', '(', ')', ' ', 'OR', 'NEAR', 'a', '\u0000', '-', '+'), maxLength: 20 })), (q) => {
        const hits = searchHistory(t.db, 'alice', q);
        return hits.every((h) => h.userId === 'alice');
      }),
      { numRuns: 300 },
    );
  });
});
