import { afterAll, describe, expect, it } from 'vitest';
import { Graph } from '../../src/graph/ir.js';
import * as ops from '../../src/graph/ops.js';
import { Runner } from '../../src/graph/runner.js';
import type { HostTensor } from '../../src/graph/types.js';

const runner = new Runner({ intraOpThreads: 1 });
afterAll(() => runner.close());

const vec = (...xs: number[]): HostTensor => ({ dtype: 'float32', dims: [xs.length], data: Float32Array.from(xs) });

function diffGraph(): Graph {
  const g = new Graph('feed-sources');
  g.output('d', ops.sub(g.input('x', 'float32', [2]), g.input('y', 'float32', [2])));
  return g;
}

describe('CompiledGraph.run feed sources', () => {
  it('takes each input from the first source that names it, ignoring surplus names', async () => {
    const s = await runner.compile('feed-sources', diffGraph);
    const out = await s.run([{ x: vec(10, 20) }, { x: vec(1, 2), y: vec(3, 5), z: vec(0) }]);
    expect([...(out.d.data as Float32Array)]).toEqual([7, 15]);
    // One object is one source: the same answer as spreading the sources into it, last first.
    const spread = await s.run({ ...{ x: vec(1, 2), y: vec(3, 5) }, ...{ x: vec(10, 20) } });
    expect([...(spread.d.data as Float32Array)]).toEqual([7, 15]);
  });

  it('names the input that no source feeds', async () => {
    const s = await runner.compile('feed-sources', diffGraph);
    await expect(s.run([{ x: vec(1, 2) }, {}])).rejects.toMatchObject({ code: 'missing_feed', details: { input: 'y' } });
  });
});
