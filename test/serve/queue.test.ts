import { describe, expect, it } from 'vitest';
import { BoundedQueue } from '../../src/serve/queue.js';

describe('BoundedQueue', () => {
  it('keeps arrival order, refuses past its bound, removes from anywhere', () => {
    const q = new BoundedQueue<string>(3);
    expect([q.push('a'), q.push('b'), q.push('c'), q.push('d')]).toEqual([true, true, true, false]);
    expect(q.full).toBe(true);
    expect(q.remove('b')).toBe(true);
    expect(q.remove('b')).toBe(false);
    expect([...q]).toEqual(['a', 'c']);
    for (const x of q) q.remove(x); // iteration works on a snapshot
    expect(q.length).toBe(0);
    q.push('e');
    expect(q.drain()).toEqual(['e']);
    expect(() => new BoundedQueue(0)).toThrow(expect.objectContaining({ code: 'invalid_queue_size' }));
  });
});

describe('BoundedQueue counts per key', () => {
  it('counts each key through push, remove and drain; a refused push counts nothing', () => {
    const q = new BoundedQueue<{ user: string; n: number }>(3, (x) => x.user);
    const a1 = { user: 'a', n: 1 };
    const a2 = { user: 'a', n: 2 };
    const b1 = { user: 'b', n: 1 };
    q.push(a1);
    q.push(b1);
    q.push(a2);
    expect([q.countOf('a'), q.countOf('b'), q.countOf('c')]).toEqual([2, 1, 0]);
    q.remove(a1);
    q.remove(a1); // not queued any more: no change
    expect(q.countOf('a')).toBe(1);
    q.push({ user: 'c', n: 1 });
    expect(q.push({ user: 'c', n: 2 })).toBe(false); // full
    expect(q.countOf('c')).toBe(1);
    q.drain();
    expect([q.countOf('a'), q.countOf('b'), q.countOf('c'), q.length]).toEqual([0, 0, 0, 0]);
  });
});
