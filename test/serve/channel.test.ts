import { describe, expect, it } from 'vitest';
import { Channel } from '../../src/serve/channel.js';

describe('Channel', () => {
  it('delivers pushed values in order to a waiting or a late consumer, then ends', async () => {
    const ch = new Channel<number>();
    const early = ch.next();
    ch.push(1);
    ch.push(2);
    ch.end();
    ch.push(3); // after the end: dropped
    expect(await early).toEqual({ done: false, value: 1 });
    const rest: number[] = [];
    for await (const v of ch) rest.push(v);
    expect(rest).toEqual([2]);
  });

  it('reports a failure once, after the values before it', async () => {
    const ch = new Channel<string>();
    ch.push('a');
    ch.fail(new Error('boom'));
    expect(await ch.next()).toEqual({ done: false, value: 'a' });
    await expect(ch.next()).rejects.toThrow('boom');
    expect(await ch.next()).toEqual({ done: true, value: undefined });
    const waiting = new Channel<string>();
    const pending = waiting.next();
    waiting.fail(new Error('later'));
    await expect(pending).rejects.toThrow('later');
  });
});
