import { describe, expect, it } from 'vitest';
import { TextCache, adoptUsed, peekKept, recordUsed } from '../../src/util/text-cache.js';

describe('TextCache', () => {
  it('makes once per text, drops the oldest past its size, and keeps nothing whose making threw', () => {
    const cache = new TextCache<{ text: string }>(2);
    let made = 0;
    const make = (text: string) => () => ({ text: `${text}${++made}` });
    const a = cache.get('a', make('a'));
    expect(cache.get('a', make('a'))).toBe(a);
    cache.get('b', make('b'));
    cache.get('c', make('c')); // 'a' is the oldest: dropped
    expect(cache.get('b', make('b')).text).toBe('b2');
    expect(cache.get('a', make('a'))).not.toBe(a);
    expect(made).toBe(4);
    expect(() => cache.get('x', () => { throw new Error('no'); })).toThrow('no');
    expect(cache.get('x', make('x')).text).toBe('x5');
  });

  it("records what named caches give (made or kept), peeks without making, and adopts another thread's values through the cache's adopt, never over a kept one", () => {
    let ids = 0;
    const a = new TextCache<{ id: number; text: string }>(4, 'test-a', (v) => ({ ...v, id: 100 + ids++ }));
    const unnamed = new TextCache<string>(4);
    const make = (text: string) => () => ({ id: ids++, text });
    const kept = a.get('old', make('old'));
    // Recorded: the make and the kept value alike (a thread whose cache kept a text still reports it), in order; unnamed caches not.
    const { result, used } = recordUsed(() => [a.get('new', make('new')), a.get('old', make('old')), unnamed.get('u', () => 'u')]);
    expect(result[1]).toBe(kept);
    expect(used).toEqual([
      { cache: 'test-a', text: 'new', value: result[0] },
      { cache: 'test-a', text: 'old', value: kept },
    ]);
    // Peeking makes nothing: what is kept is given, a miss reports itself.
    let made = 0;
    expect(peekKept(() => a.get('old', () => ({ id: made++, text: 'x' })))).toEqual({ kept: true, result: kept });
    expect(peekKept(() => [a.get('old', make('old')), a.get('missing', () => ({ id: made++, text: 'x' }))])).toEqual({ kept: false });
    expect(made).toBe(0);
    expect(peekKept(() => a.get('missing', make('missing')))).toEqual({ kept: false }); // still not kept
    // Adopted: through adopt (a fresh id here), unless the text is kept; unknown cache names skipped.
    adoptUsed([
      { cache: 'test-a', text: 'from-thread', value: { id: 1, text: 'from-thread' } },
      { cache: 'test-a', text: 'old', value: { id: 2, text: 'other' } },
      { cache: 'no-such-cache', text: 'x', value: 1 },
    ]);
    expect(a.get('from-thread', () => { throw new Error('made again'); })).toEqual({ id: 102, text: 'from-thread' });
    expect(a.get('old', make('old'))).toBe(kept);
    expect(() => new TextCache<number>(1, 'test-a')).toThrow(/exists already/);
  });

  it('keeps what its refusals call a refusal and throws it again, records it as data, and revives it adopted; other errors are not kept', () => {
    class Refused extends Error {
      constructor(message: string, readonly where = 0) {
        super(message);
        this.name = 'Refused';
      }
    }
    const c = new TextCache<string>(4, 'test-refusals', undefined, {
      is: (e): e is Refused => e instanceof Refused,
      revive: (f) => new Refused(f.message, Number(f.where)),
    });
    let made = 0;
    const refuse = () => {
      made++;
      throw new Refused('no such thing', 7);
    };
    const first = (() => {
      try {
        return c.get('bad', refuse);
      } catch (e) {
        return e;
      }
    })();
    expect(first).toBeInstanceOf(Refused);
    expect(() => c.get('bad', refuse)).toThrow(first as Error); // kept: not made again
    expect(made).toBe(1);
    expect(() => peekKept(() => c.get('bad', refuse))).toThrow('no such thing');
    // Recorded as data (its message and own fields), also when the code taking it throws.
    const used: Parameters<typeof recordUsed>[1] = [];
    expect(() => recordUsed(() => c.get('bad', refuse), used)).toThrow('no such thing');
    expect(used).toEqual([{ cache: 'test-refusals', text: 'bad', refusal: { message: 'no such thing', name: 'Refused', where: 7 } }]);
    // Adopted from another thread: revived as its class, thrown for its text.
    adoptUsed([{ cache: 'test-refusals', text: 'other', refusal: { message: 'refused there', where: 3 } }]);
    const revived = (() => {
      try {
        return c.get('other', () => 'made');
      } catch (e) {
        return e;
      }
    })();
    expect(revived).toBeInstanceOf(Refused);
    expect(revived).toMatchObject({ message: 'refused there', where: 3 });
    // Another error is not a refusal: thrown, not kept.
    expect(() => c.get('flaky', () => { throw new RangeError('passing'); })).toThrow('passing');
    expect(c.get('flaky', () => 'made now')).toBe('made now');
  });
});
