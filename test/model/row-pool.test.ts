/**
 * The unit pool (LoRA mode `rows`): its layout checked value by value, and decode steps of a batch
 * whose rows carry different adapters (different ranks and layers, several units per row, rows joining
 * and leaving) against each row computed alone with its adapter fed as a single adapter.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { Runner } from '../../src/graph/runner.js';
import type { ModelConfig } from '../../src/model/config.js';
import { KvBatch } from '../../src/model/kv.js';
import { LoraFeedError } from '../../src/model/lora-feeds.js';
import { Model } from '../../src/model/model.js';
import { RowPool, unitsFor } from '../../src/model/row-pool.js';
import type { HostTensor } from '../../src/graph/types.js';
import { Rng } from '../../src/util/rng.js';
import { maxAbsDiff, randomAdapter, randomRows, randomWeights, tinyGpt2, tinyLlama } from './fixtures.js';

const runner = new Runner({ intraOpThreads: 1 });
afterAll(() => runner.close());

const code = (f: () => unknown): string | undefined => {
  try {
    f();
  } catch (e) {
    return (e as LoraFeedError).code;
  }
  return undefined;
};

describe('unitsFor', () => {
  it('is the number of unit-wide slices that cover a rank, 0 for none', () => {
    expect([0, 1, 16, 17, 96, 128].map((r) => unitsFor(r))).toEqual([0, 1, 1, 2, 6, 8]);
    expect([0, 1, 8, 9, 96].map((r) => unitsFor(r, 8))).toEqual([0, 1, 1, 2, 12]);
  });
});

type Feeds = Record<string, HostTensor>;
const feedsOf = (inp: ReturnType<RowPool['input']>): Feeds => (inp && 'feeds' in inp ? inp.feeds : {});
const floats = (t: HostTensor): number[] => [...(t.data as Float32Array)];

describe('RowPool layout', () => {
  it('cuts a row into units of A rows and B^T rows, zero past the rank, its scaling in sel; rows without an adapter have no units', () => {
    const pool = new RowPool(tinyGpt2, { maxRows: 2, unit: 2 });
    const a = randomAdapter(tinyGpt2, [1], 3, 1, 0.5); // rank 3 at unit 2: two units, the second half empty
    pool.add('x', null);
    pool.add('y', a);
    const inp = pool.input()!;
    // One graph for every layer mix: layer 0, which no row adapts, gets one zero unit no row selects.
    expect('feeds' in inp && inp.lora).toEqual({ mode: 'rows', layers: [true, true] });
    const feeds = feedsOf(inp);
    expect(Object.keys(feeds).filter((k) => k.includes('.1')).sort()).toEqual(['rows.1', 'sel.1', 'unit.1.mlp.c_fc.A', 'unit.1.mlp.c_fc.Bt', 'unit.1.mlp.c_proj.A', 'unit.1.mlp.c_proj.Bt']);
    expect([...feeds['rows.0'].data]).toEqual([0n]);
    expect(floats(feeds['sel.0'])).toEqual([0, 0]);
    expect(feeds['unit.0.mlp.c_fc.A'].dims).toEqual([1, 2, 16]);
    expect(floats(feeds['unit.0.mlp.c_fc.A']).every((v) => v === 0)).toBe(true);
    expect([...feeds['rows.1'].data]).toEqual([1n, 1n]); // both units serve batch row 1 ('y')
    expect(feeds['sel.1'].dims).toEqual([2, 1, 2]); // [rows, 1, units]
    expect(floats(feeds['sel.1'])).toEqual([0, 0, 0.5, 0.5]); // row 1's scaling on its units
    const A = feeds['unit.1.mlp.c_fc.A'];
    const B = feeds['unit.1.mlp.c_fc.Bt'];
    const w = 2;
    expect(A.dims).toEqual([2, w, 16]);
    expect(B.dims).toEqual([2, w, 24]);
    const pa = a.pairs.find((p) => p.target.layer === 1 && p.target.map === 'mlp.c_fc')!;
    const ad = A.data as Float32Array;
    const bd = B.data as Float32Array;
    for (let u = 0; u < 2; u++) {
      for (let j = 0; j < w; j++) {
        const r = u * w + j; // rank index
        for (let i = 0; i < 16; i++) expect(ad[(u * w + j) * 16 + i]).toBe(r < 3 ? pa.A[r * 16 + i] : 0);
        for (let o = 0; o < 24; o++) expect(bd[(u * w + j) * 24 + o]).toBe(r < 3 ? pa.B[o * 3 + r] : 0);
      }
    }
    expect(pool.input(0, 1)).toBeUndefined();
  });

  it('gives each layer the units of the rows that adapt it, with the row of each unit and a selection matrix', () => {
    const pool = new RowPool(tinyGpt2, { maxRows: 4, unit: 4 });
    const adapters = { a: randomAdapter(tinyGpt2, [0], 3, 2), b: randomAdapter(tinyGpt2, [0, 1], 12, 3), d: randomAdapter(tinyGpt2, [1], 5, 4) };
    pool.add('a', adapters.a); // 1 unit on layer 0
    pool.add('b', adapters.b); // 3 units on layers 0 and 1
    pool.add('c', null);
    pool.add('d', adapters.d); // 2 units on layer 1
    const inp = pool.input()!;
    const feeds = feedsOf(inp);
    expect('feeds' in inp && inp.lora).toEqual({ mode: 'rows', layers: [true, true] });
    expect([...feeds['rows.0'].data]).toEqual([0n, 1n, 1n, 1n]);
    expect([...feeds['rows.1'].data]).toEqual([1n, 1n, 1n, 3n, 3n]);
    // sel.1 [4 rows, 1, 5 units]: row 1 owns units 0-2, row 3 units 3-4 (each with its scaling), rows 0 and 2 none.
    const [sb, sd] = [adapters.b.scaling, adapters.d.scaling];
    expect(floats(feeds['sel.1'])).toEqual([0, 0, 0, 0, 0, sb, sb, sb, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, sd, sd]);
    expect(feeds['unit.0.mlp.c_fc.A'].dims).toEqual([4, 4, 16]);
    expect(feeds['unit.1.mlp.c_proj.Bt'].dims).toEqual([5, 4, 16]);
    expect(pool.rankLayers).toBe((4 + 5) * 4);
    expect(pool.liveBytes).toBe(pool.rowBytes(adapters.a) + pool.rowBytes(adapters.b) + pool.rowBytes(adapters.d));
    expect(pool.rowBytes(adapters.b)).toBe(2 * 3 * 4 * (16 + 24 + 24 + 16) * 4); // 2 layers x 3 units x W 4 x floats per rank x 4 bytes
    expect(pool.rowBytes(null)).toBe(0);
    // The rows added last, alone (a prefill of joiners): rows and sel count from the range's first row.
    pool.add('e', randomAdapter(tinyGpt2, [0], 8, 5));
    const tail = feedsOf(pool.input(4, 5));
    expect([...tail['rows.0'].data]).toEqual([0n, 0n]);
    expect(floats(tail['sel.0'])).toEqual([0.5, 0.5]);
    expect(floats(tail['sel.1'])).toEqual([0]); // no unit of the joiner on layer 1
    expect(tail['unit.0.mlp.c_fc.A'].dims).toEqual([2, 4, 16]);
  });

  it('hands a range whose units earlier removals scattered the same values as a pool of those rows alone', () => {
    const adapters = [randomAdapter(tinyGpt2, [0, 1], 8, 30), randomAdapter(tinyGpt2, [0], 4, 31), randomAdapter(tinyGpt2, [0, 1], 12, 32), randomAdapter(tinyGpt2, [1], 4, 33)];
    const pool = new RowPool(tinyGpt2, { unit: 4 });
    adapters.forEach((a, i) => pool.add(i, a));
    pool.input();
    pool.remove(0); // the last units (rows 2 and 3) move into row 0's holes
    expect(pool.rows).toEqual([3, 1, 2]);
    const alone = new RowPool(tinyGpt2, { unit: 4 });
    alone.add(1, adapters[1]);
    alone.add(2, adapters[2]);
    const got = feedsOf(pool.input(1, 3));
    const want = feedsOf(alone.input());
    expect(Object.keys(got).sort()).toEqual(Object.keys(want).sort());
    for (const k of Object.keys(want)) {
      expect(got[k].dims).toEqual(want[k].dims);
      if (k.startsWith('unit.')) {
        // Unit order may differ; compare each unit's row and weights as sets.
        const layer = k.split('.')[1];
        const rowsOf = (f: Feeds) => [...f[`rows.${layer}`].data].map(Number);
        const units = (f: Feeds) => {
          const t = f[k];
          const n = t.dims[1] * t.dims[2];
          return rowsOf(f).map((r, u) => `${r}:${floats(t).slice(u * n, (u + 1) * n).join(',')}`).sort();
        };
        expect(units(got)).toEqual(units(want));
      }
    }
  });

  it('writes a row once when it joins and copies a layer\'s last units into the holes of one that leaves', () => {
    const pool = new RowPool(tinyGpt2, { maxRows: 4, unit: 8 });
    const adapters = [0, 1, 2].map((i) => randomAdapter(tinyGpt2, [0], 2, 10 + i));
    adapters.forEach((a, i) => pool.add(i, a));
    const before = pool.input()!;
    const a2 = Float32Array.from(feedsOf(before)['unit.0.mlp.c_fc.A'].data as Float32Array).subarray(2 * 16 * 8);
    expect(pool.stats).toEqual({ unitWrites: 3, unitMoves: 0 });
    pool.input();
    expect(pool.stats).toEqual({ unitWrites: 3, unitMoves: 0 }); // a step with no change writes nothing
    pool.remove(0); // row 2's unit moves into slot 0 by a copy
    const after = feedsOf(pool.input());
    expect(pool.rows).toEqual([2, 1]);
    expect(pool.stats).toEqual({ unitWrites: 3, unitMoves: 1 });
    expect([...(after['unit.0.mlp.c_fc.A'].data as Float32Array).subarray(0, 16 * 8)]).toEqual([...a2]);
    expect([...after['rows.0'].data]).toEqual([0n, 1n]);
    pool.add(9, randomAdapter(tinyGpt2, [1], 4, 20));
    pool.input();
    expect(pool.stats).toEqual({ unitWrites: 4, unitMoves: 1 });
  });

  it('hands an unchanged batch the same input again, builds a new one after any add or remove, and nothing for rows without adapters', () => {
    const pool = new RowPool(tinyGpt2, { maxRows: 4, unit: 4 });
    pool.add('v', null);
    pool.add('w', null);
    expect(pool.input()).toBeUndefined();
    const a = randomAdapter(tinyGpt2, [1], 6, 50);
    pool.add('x', a);
    const first = pool.input()!;
    expect(pool.input()).toBe(first); // a decode step of the same batch: nothing rebuilt
    expect(pool.stats.unitWrites).toBe(2);
    expect(pool.input(0, 2)).toBeUndefined(); // the rows without adapters alone: the plain model
    expect(pool.input()).toBe(first);
    pool.add('y', null); // a join without an adapter still changes the batch (sel gets a row)
    const second = pool.input()!;
    expect(second).not.toBe(first);
    expect(feedsOf(second)['sel.1'].dims).toEqual([4, 1, 2]);
    expect(floats(feedsOf(second)['sel.1'])).toEqual([0, 0, 0, 0, a.scaling, a.scaling, 0, 0]);
    pool.remove('v'); // 'y' takes its place: x stays at batch row 2
    const third = feedsOf(pool.input());
    expect([...third['rows.1'].data]).toEqual([2n, 2n]);
    expect(floats(third['sel.1'])).toEqual([0, 0, 0, 0, a.scaling, a.scaling]);
    pool.remove('x'); // the last adapted row leaves: the plain model again
    expect(pool.input()).toBeUndefined();
    expect(pool.stats.unitWrites).toBe(2);
  });

  it('a row that leaves before it was ever written (a lone joiner done at its first token) costs no write and leaves no trace', () => {
    const adapters = [randomAdapter(tinyGpt2, [0, 1], 8, 40), randomAdapter(tinyGpt2, [0], 4, 41), randomAdapter(tinyGpt2, [0, 1], 12, 42), randomAdapter(tinyGpt2, [0], 8, 43)];
    const pool = new RowPool(tinyGpt2, { unit: 4 });
    pool.add(0, adapters[0]);
    pool.add(1, adapters[1]);
    pool.input();
    const written = pool.stats.unitWrites;
    pool.add(2, adapters[2]);
    pool.add(3, adapters[3]);
    pool.remove(2); // never written; row 3's unwritten units fill its holes
    expect(pool.rows).toEqual([0, 1, 3]);
    const got = feedsOf(pool.input());
    expect(pool.stats.unitWrites - written).toBe(2); // row 3's two units on layer 0, none of row 2's
    const alone = new RowPool(tinyGpt2, { unit: 4 });
    [0, 1, 3].forEach((i) => alone.add(i, adapters[i]));
    const want = feedsOf(alone.input());
    expect(Object.keys(got).sort()).toEqual(Object.keys(want).sort());
    for (const k of Object.keys(want)) {
      expect(got[k].dims).toEqual(want[k].dims);
      if (!k.startsWith('unit.')) continue;
      const layer = k.split('.')[1];
      const units = (f: Feeds) => {
        const t = f[k];
        const n = t.dims[1] * t.dims[2];
        return [...f[`rows.${layer}`].data].map(Number).map((r, u) => `${r}:${floats(t).slice(u * n, (u + 1) * n).join(',')}`).sort();
      };
      expect(units(got)).toEqual(units(want));
    }
  });

  it('refuses bad ranges, unknown and duplicate rows, bad unit widths, and adapters that do not fit the model', () => {
    const pool = new RowPool(tinyGpt2);
    pool.add(1, null);
    expect(code(() => pool.add(1, null))).toBe('duplicate_row');
    expect(code(() => pool.remove(2))).toBe('unknown_row');
    expect(code(() => pool.input(0, 2))).toBe('bad_rows');
    expect(code(() => pool.add(2, randomAdapter(tinyLlama, [0], 2, 3)))).toBe('bad_map');
    expect(code(() => pool.rowBytes(randomAdapter(tinyLlama, [0], 2, 3)))).toBe('bad_map');
    expect(code(() => new RowPool(tinyGpt2, { unit: 0 }))).toBe('bad_unit');
    expect(pool.input()).toBeUndefined();
  });
});

const families: [string, ModelConfig][] = [
  ['gpt2', tinyGpt2],
  ['llama GQA', tinyLlama],
];

describe.each(families)('%s: decode with a row pool equals each row alone', (_n, cfg) => {
  const model = new Model(cfg, randomWeights(cfg, 41), { runner });

  it('rows with different adapters (ranks, layers, none) joining and leaving', async () => {
    const rng = new Rng(42);
    const adapters = [randomAdapter(cfg, [0, 1], 3, 43, 0.7), null, randomAdapter(cfg, [1], 12, 44, 1.3), randomAdapter(cfg, [0], 5, 45, 1)];
    const seqs = new Map<number, number[]>(randomRows(cfg, [4, 7, 2], 46).map((r, i) => [i, r]));
    const pool = new RowPool(cfg, { maxRows: 4, unit: 4 }); // ranks 3, 12, 5: 1, 3 and 2 units
    const batch = new KvBatch(model.kvShape, { bucket: 4, maxLength: cfg.maxPositions });
    const single = (id: number) => (adapters[id] ? { adapter: adapters[id]! } : undefined);
    for (const id of seqs.keys()) pool.add(id, adapters[id]);
    const pre = await model.prefill([...seqs.values()], pool.input());
    [...seqs.keys()].forEach((id, i) => batch.add(id, pre.kv[i]));
    for (const [i, id] of [...seqs.keys()].entries()) {
      const alone = await model.prefill([seqs.get(id)!], single(id));
      expect(maxAbsDiff(pre.logits[i], alone.logits[0])).toBeLessThan(1e-4);
    }
    for (let step = 0; step < 8; step++) {
      if (step === 2) {
        batch.remove(0);
        pool.remove(0);
      }
      if (step === 4) {
        // a joiner is prefilled from its own pool row, then decodes with the others
        const row = randomRows(cfg, [5], 47)[0];
        seqs.set(3, row);
        pool.add(3, adapters[3]);
        const joined = await model.prefill([row], pool.input(pool.size - 1, pool.size));
        batch.add(3, joined.kv[0]);
      }
      expect(pool.rows).toEqual(batch.rows);
      const tokens = batch.rows.map(() => rng.int(cfg.vocabSize));
      const logits = await model.decodeStep(batch, tokens, pool.input());
      batch.rows.forEach((id, i) => seqs.get(id as number)!.push(tokens[i]));
      for (const [i, id] of batch.rows.entries()) {
        const full = (await model.forwardLogits([seqs.get(id as number)!], single(id as number)))[0];
        expect(maxAbsDiff(logits[i], full.subarray(full.length - cfg.vocabSize))).toBeLessThan(1e-4);
      }
    }
  });

  it('decodes the same with an adapter held as served (B^T) as with it held as stored (B)', async () => {
    const a = randomAdapter(cfg, [0, 1], 6, 60, 0.9);
    const b = randomAdapter(cfg, [1], 9, 61, 1.1);
    const rows = randomRows(cfg, [5, 3], 62);
    const run = async (x: typeof a | ReturnType<typeof served>, y: typeof a | ReturnType<typeof served>) => {
      const pool = new RowPool(cfg, { unit: 4 });
      pool.add(0, x);
      pool.add(1, y);
      const batch = new KvBatch(model.kvShape, { maxLength: cfg.maxPositions });
      const pre = await model.prefill(rows, pool.input());
      pre.kv.forEach((k, i) => batch.add(i, k));
      return model.decodeStep(batch, [1, 2], pool.input());
    };
    const stored = await run(a, b);
    const asServed = await run(served(a), served(b));
    for (let i = 0; i < 2; i++) expect(maxAbsDiff(stored[i], asServed[i])).toBe(0);
  });
});

/** An adapter of randomAdapter in the served form (B^T instead of B), as the load thread hands it over. */
function served(a: ReturnType<typeof randomAdapter>) {
  return {
    scaling: a.scaling,
    pairs: a.pairs.map((p) => {
      const out = p.B.length / p.rank;
      const Bt = new Float32Array(p.B.length);
      for (let o = 0; o < out; o++) for (let k = 0; k < p.rank; k++) Bt[k * out + o] = p.B[o * p.rank + k];
      return { target: p.target, rank: p.rank, A: p.A, Bt };
    }),
  };
}
