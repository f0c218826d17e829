import { describe, expect, it } from 'vitest';
import { clampLimit, CursorError, decodeCursor, encodeCursor, isSafeInt, isShortString, pageOf } from '../../src/db/cursor.js';

describe('cursors', () => {
  it('round-trips keys through base64url JSON', () => {
    expect(decodeCursor(encodeCursor(42), isSafeInt)).toBe(42);
    expect(decodeCursor(encodeCursor('alice'), isShortString)).toBe('alice');
    // Independent check of the encoding: base64url of the JSON text '"alice"'.
    expect(encodeCursor('alice')).toBe('ImFsaWNlIg');
  });

  it('rejects malformed cursors and keys of the wrong shape', () => {
    for (const bad of ['', '!!!', 'not base64 at all', encodeCursor('x'), encodeCursor(1.5), 'e30', 'a'.repeat(2000)]) {
      expect(() => decodeCursor(bad, isSafeInt)).toThrow(CursorError);
    }
    try {
      decodeCursor('%%%', isSafeInt);
    } catch (err) {
      expect((err as CursorError).code).toBe('invalid_cursor');
    }
  });

  it('builds pages from limit+1 rows', () => {
    expect(pageOf([1, 2, 3], 3, (r) => r)).toEqual({ items: [1, 2, 3], nextCursor: null });
    const p = pageOf([1, 2, 3, 4], 3, (r) => r);
    expect(p.items).toEqual([1, 2, 3]);
    expect(decodeCursor(p.nextCursor!, isSafeInt)).toBe(3);
  });

  it('clamps limits', () => {
    expect(clampLimit(undefined, 10, 100)).toBe(10);
    expect(clampLimit(0, 10, 100)).toBe(1);
    expect(clampLimit(1e9, 10, 100)).toBe(100);
    expect(clampLimit(Number.NaN, 10, 100)).toBe(10);
  });
});
