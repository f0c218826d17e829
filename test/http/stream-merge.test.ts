import { describe, expect, it } from 'vitest';
import { mergeStreams } from '../../src/http/stream-merge.js';

/** A stream of `values`, each after `delays[i]` ms; records whether it was ended early. */
function timed(values: string[], delays: number[]) {
  const state = { returned: false };
  async function* gen() {
    try {
      for (const [i, v] of values.entries()) {
        await new Promise((r) => setTimeout(r, delays[i]));
        yield v;
      }
    } finally {
      state.returned = true;
    }
  }
  return { it: gen(), state };
}

describe('mergeStreams', () => {
  it('yields the first events in index order, then each event as it arrives, tagged with its stream', async () => {
    const a = timed(['a0', 'a1', 'a2'], [0, 30, 30]);
    const b = timed(['b0', 'b1'], [0, 5]);
    const started = await Promise.all([a.it, b.it].map(async (iterator) => ({ iterator, first: await iterator.next() })));
    const got: string[] = [];
    for await (const { index, value } of mergeStreams(started)) got.push(`${index}:${value}`);
    expect(got.slice(0, 2)).toEqual(['0:a0', '1:b0']);
    expect(got).toHaveLength(5);
    expect(got.indexOf('1:b1')).toBeLessThan(got.indexOf('0:a1')); // b1 came first in time
    expect(got.filter((g) => g.startsWith('0:'))).toEqual(['0:a0', '0:a1', '0:a2']);
  });

  it('a consumer that stops early ends every stream', async () => {
    const a = timed(['a0', 'a1', 'a2'], [0, 5, 5]);
    const b = timed(['b0', 'b1', 'b2'], [0, 5, 5]);
    const started = await Promise.all([a.it, b.it].map(async (iterator) => ({ iterator, first: await iterator.next() })));
    for await (const { value } of mergeStreams(started)) if (value === 'b0') break;
    expect(a.state.returned && b.state.returned).toBe(true);
  });
});
