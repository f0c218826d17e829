/**
 * The row-aligned pool (LoRA mode `rows`): its layout checked value by value, and decode steps of a
 * batch whose rows carry different adapters (different ranks and layers, rows joining and leaving)
 * against each row computed alone with its adapter fed as a single adapter.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { Runner } from '../../src/graph/runner.js';
import type { ModelConfig } from '../../src/model/config.js';
import { KvBatch } from '../../src/model/kv.js';
import { LoraFeedError } from '../../src/model/lora-feeds.js';
import { Model } from '../../src/model/model.js';
import { RowPool, rankBucket } from '../../src/model/row-pool.js';
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

describe('rankBucket', () => {
  it('is the power of two from 8 up that covers the rank, 0 for none', () => {
    expect([0, 1, 8, 9, 16, 17, 96, 128, 129].map(rankBucket)).toEqual([0, 8, 8, 16, 16, 32, 128, 128, 256]);
  });
});

describe('RowPool layout', () => {
  it('writes A^T and scaled B^T padded to the group rank; rows without an adapter are in no group', () => {
    const pool = new RowPool(tinyGpt2, { maxRows: 2 });
    const a = randomAdapter(tinyGpt2, [1], 3, 1, 0.5);
    pool.add('x', null);
    pool.add('y', a);
    const inp = pool.input()!;
    expect('feeds' in inp && inp.lora).toEqual({ mode: 'rows', layers: [false, true], groups: 1 });
    const feeds = 'feeds' in inp ? inp.feeds : {};
    expect(Object.keys(feeds).sort()).toEqual(['pool.g0.1.mlp.c_fc.A', 'pool.g0.1.mlp.c_fc.B', 'pool.g0.1.mlp.c_proj.A', 'pool.g0.1.mlp.c_proj.B', 'rows.g0']);
    expect([...feeds['rows.g0'].data]).toEqual([1n]); // batch row 1 ('y')
    const A = feeds['pool.g0.1.mlp.c_fc.A'];
    const B = feeds['pool.g0.1.mlp.c_fc.B'];
    const pr = 8;
    expect(A.dims).toEqual([1, 16, pr]);
    expect(B.dims).toEqual([1, pr, 24]);
    const pa = a.pairs.find((p) => p.target.layer === 1 && p.target.map === 'mlp.c_fc')!;
    const ad = A.data as Float32Array;
    const bd = B.data as Float32Array;
    for (let i = 0; i < 16; i++) {
      for (let j = 0; j < pr; j++) expect(ad[i * pr + j]).toBe(j < 3 ? pa.A[j * 16 + i] : 0);
    }
    for (let j = 0; j < pr; j++) {
      for (let o = 0; o < 24; o++) expect(bd[j * 24 + o]).toBe(j < 3 ? Math.fround(0.5 * pa.B[o * 3 + j]) : 0);
    }
    expect(pool.input(0, 1)).toBeUndefined();
  });

  it('groups rows by rank bucket: each group is fed at its own rank, with the batch rows it serves', () => {
    const pool = new RowPool(tinyGpt2, { maxRows: 4 });
    pool.add('a', randomAdapter(tinyGpt2, [0], 3, 2)); // bucket 8
    pool.add('b', randomAdapter(tinyGpt2, [0, 1], 12, 3)); // bucket 16
    pool.add('c', null);
    pool.add('d', randomAdapter(tinyGpt2, [1], 5, 4)); // bucket 8
    const inp = pool.input()!;
    const feeds = 'feeds' in inp ? inp.feeds : {};
    expect('feeds' in inp && inp.lora).toEqual({ mode: 'rows', layers: [true, true], groups: 2 });
    expect([...feeds['rows.g0'].data]).toEqual([0n, 3n]);
    expect([...feeds['rows.g1'].data]).toEqual([1n]);
    expect(feeds['pool.g0.0.mlp.c_fc.A'].dims).toEqual([2, 16, 8]);
    expect(feeds['pool.g1.0.mlp.c_fc.A'].dims).toEqual([1, 16, 16]);
    expect(pool.paddedRank).toBe(2 * 8 + 16);
    expect(pool.liveBytes).toBe(RowPool.rowBytes(tinyGpt2, 3) * 2 + RowPool.rowBytes(tinyGpt2, 12));
    // The rows added last, alone (a prefill of joiners): the suffix of each group.
    pool.add('e', randomAdapter(tinyGpt2, [0], 8, 5));
    const tail = pool.input(4, 5)!;
    expect('feeds' in tail && [...tail.feeds['rows.g0'].data]).toEqual([0n]);
    expect('feeds' in tail && tail.feeds['pool.g0.0.mlp.c_fc.A'].dims).toEqual([1, 16, 8]);
  });

  it('writes a row once when it joins and copies a group\'s last row into the hole of one that leaves', () => {
    const pool = new RowPool(tinyGpt2, { maxRows: 4 });
    const adapters = [0, 1, 2].map((i) => randomAdapter(tinyGpt2, [0], 2, 10 + i));
    adapters.forEach((a, i) => pool.add(i, a));
    const before = pool.input()!;
    const a2 = 'feeds' in before ? Float32Array.from(before.feeds['pool.g0.0.mlp.c_fc.A'].data as Float32Array).subarray(2 * 16 * 8) : null;
    expect(pool.stats).toEqual({ rowWrites: 3, rowMoves: 0 });
    pool.input();
    expect(pool.stats).toEqual({ rowWrites: 3, rowMoves: 0 }); // a step with no change writes nothing
    pool.remove(0); // row 2 moves into slot 0 by a copy
    const after = pool.input()!;
    expect(pool.rows).toEqual([2, 1]);
    expect(pool.stats).toEqual({ rowWrites: 3, rowMoves: 1 });
    expect('feeds' in after && [...(after.feeds['pool.g0.0.mlp.c_fc.A'].data as Float32Array).subarray(0, 16 * 8)]).toEqual([...a2!]);
    expect('feeds' in after && [...after.feeds['rows.g0'].data]).toEqual([0n, 1n]);
    pool.add(9, randomAdapter(tinyGpt2, [1], 4, 20));
    pool.input();
    expect(pool.stats).toEqual({ rowWrites: 4, rowMoves: 1 });
  });

  it('refuses bad ranges, unknown and duplicate rows, and adapters that do not fit the model', () => {
    const pool = new RowPool(tinyGpt2);
    pool.add(1, null);
    expect(code(() => pool.add(1, null))).toBe('duplicate_row');
    expect(code(() => pool.remove(2))).toBe('unknown_row');
    expect(code(() => pool.input(0, 2))).toBe('bad_rows');
    expect(code(() => pool.add(2, randomAdapter(tinyLlama, [0], 2, 3)))).toBe('bad_map');
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
    const pool = new RowPool(cfg, { maxRows: 4 });
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
});
