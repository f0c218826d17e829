import { describe, expect, it } from 'vitest';
import { TextCache } from '../../src/util/text-cache.js';

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
});
