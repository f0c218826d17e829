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
