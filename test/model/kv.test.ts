/**
 * KV-cache decode against full recomputation at every step, both families, a batch of rows with
 * different lengths that join and leave between steps (continuous batching), with and without LoRA.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { Runner } from '../../src/graph/runner.js';
import type { ModelConfig } from '../../src/model/config.js';
import { KvBatch, KvError, concatRowKv } from '../../src/model/kv.js';
import { type LoraInput, SlotPool } from '../../src/model/lora-feeds.js';
import { Model } from '../../src/model/model.js';
import { Rng } from '../../src/util/rng.js';
import { maxAbsDiff, randomAdapter, randomRows, randomWeights, tinyGpt2, tinyLlama } from './fixtures.js';

const runner = new Runner({ intraOpThreads: 1 });
afterAll(() => runner.close());

const TOL = 1e-4;
const families: [string, ModelConfig][] = [
  ['gpt2', tinyGpt2],
  ['llama GQA', tinyLlama],
  ['llama interleaved', { ...tinyLlama, ropeStyle: 'interleaved' }],
];

describe.each(families)('%s: KV-cache decode equals full recomputation', (_n, cfg) => {
  const model = new Model(cfg, randomWeights(cfg, 31), { runner });

  async function check(lora?: (ids: number[]) => LoraInput | undefined, loraOf?: (id: number) => LoraInput | undefined): Promise<void> {
    const rng = new Rng(32);
    const seqs = new Map<number, number[]>(randomRows(cfg, [4, 9, 1], 33).map((r, i) => [i, r]));
    const batch = new KvBatch(model.kvShape, { bucket: 4, maxLength: cfg.maxPositions });
    const ids0 = [...seqs.keys()];
    const pre = await model.prefill([...seqs.values()], lora?.(ids0));
    ids0.forEach((id, i) => batch.add(id, pre.kv[i]));
    for (let step = 0; step < 10; step++) {
      if (step === 3) batch.remove(1); // a row leaves mid-batch...
      if (step === 5) {
        // ...and another joins with its own prefill
        const row = randomRows(cfg, [6], 34)[0];
        seqs.set(7, row);
        batch.add(7, (await model.prefill([row], loraOf?.(7))).kv[0]);
      }
      const tokens = batch.rows.map(() => rng.int(cfg.vocabSize));
      const logits = await model.decodeStep(batch, tokens, lora?.(batch.rows as number[]));
      batch.rows.forEach((id, i) => seqs.get(id as number)!.push(tokens[i]));
      for (const [i, id] of batch.rows.entries()) {
        const seq = seqs.get(id as number)!;
        expect(batch.length(id)).toBe(seq.length);
        const full = (await model.forwardLogits([seq], loraOf?.(id as number)))[0];
        expect(maxAbsDiff(logits[i], full.subarray(full.length - cfg.vocabSize))).toBeLessThan(TOL);
      }
    }
  }

  it('plain model, rows joining and leaving', () => check());

  it('per-row adapters from a slot pool', async () => {
    const pool = new SlotPool(cfg, 3, 3);
    const a = randomAdapter(cfg, [0, 1], 3, 35, 1);
    const b = randomAdapter(cfg, [1], 2, 36, 1);
    pool.set(1, a);
    pool.set(2, b);
    const slotOf = (id: number): number => [1, 0, 2, 0, 0, 0, 0, 2][id];
    const alone = (id: number): LoraInput | undefined => ({ pool, slots: [slotOf(id)] });
    await check((ids) => ({ pool, slots: ids.map(slotOf) }), alone);
  });
});

describe('KvBatch', () => {
  const shape = { nLayers: 2, nKvHeads: 2, headDim: 3 };
  const row = (len: number, seed: number) => {
    const rng = new Rng(seed);
    const mk = (): Float32Array => Float32Array.from({ length: 2 * len * 3 }, () => rng.normal());
    return { length: len, k: [mk(), mk()], v: [mk(), mk()] };
  };
  const present = (b: number, val: number) =>
    Object.fromEntries(
      [0, 1].flatMap((l) => [`present_k.${l}`, `present_v.${l}`]).map((n) => [n, { dtype: 'float32' as const, dims: [b, 2, 1, 3], data: new Float32Array(b * 6).fill(val) }]),
    );

  it('keeps each row intact through growth, removal and shrinking', () => {
    const kv = new KvBatch(shape, { bucket: 4 });
    const r0 = row(3, 1);
    const r1 = row(9, 2);
    kv.add('a', r0);
    expect(kv.capacity).toBe(4);
    kv.add('b', r1);
    expect(kv.capacity).toBe(12);
    kv.add('c', row(2, 3));
    kv.append(present(3, 5));
    expect(kv.extract('a').k[1].subarray(0, 9)).toEqual(r0.k[1].subarray(0, 9));
    kv.remove('b'); // 'c' moves into b's place
    expect(kv.rows).toEqual(['a', 'c']);
    expect(kv.capacity).toBe(12); // longest is 4 now: 8 would do, but it shrinks only to half or less
    kv.add('d', row(20, 4));
    expect(kv.capacity).toBe(24);
    kv.remove('d');
    expect(kv.capacity).toBe(8);
    const a = kv.extract('a');
    expect(a.length).toBe(4);
    // head 1 of layer 0: the 3 original positions then the appended one
    expect([...a.k[0].subarray(12, 21)]).toEqual([...r0.k[0].subarray(9, 18)]);
    expect([...a.k[0].subarray(21, 24)]).toEqual([5, 5, 5]);
  });

  it('relays its rows in place within the memory it holds: a long row joining again reuses the buffers it grew for, every row intact', () => {
    const kv = new KvBatch(shape, { bucket: 4 });
    const rows = [row(3, 11), row(5, 12), row(2, 13), row(7, 14)];
    rows.forEach((r, i) => kv.add(i, r));
    const long = row(21, 15);
    kv.add('long', long);
    expect(kv.capacity).toBe(24);
    const memory = kv.decodeFeeds()['past_k.1'].data.buffer;
    kv.remove('long');
    expect(kv.capacity).toBe(8); // shrunk in place: rows moved down, the first first
    expect(kv.decodeFeeds()['past_k.1'].data.buffer).toBe(memory);
    kv.append(present(4, 9));
    kv.add('again', row(18, 16));
    expect(kv.capacity).toBe(20); // grown in place: rows moved up, the last first
    expect(kv.decodeFeeds()['past_k.1'].data.buffer).toBe(memory);
    rows.forEach((r, i) => {
      const got = kv.extract(i);
      expect(got.length).toBe(r.length + 1);
      for (const [name, l] of [['k', 0], ['k', 1], ['v', 0], ['v', 1]] as const) {
        for (let h = 0; h < 2; h++) {
          const g = got[name][l].subarray(h * (r.length + 1) * 3, (h + 1) * (r.length + 1) * 3);
          expect([...g.subarray(0, r.length * 3)]).toEqual([...r[name][l].subarray(h * r.length * 3, (h + 1) * r.length * 3)]);
          expect([...g.subarray(r.length * 3)]).toEqual([9, 9, 9]);
        }
      }
    });
    // Emptied, it keeps its memory for the next rows.
    for (const id of [0, 1, 2, 3, 'again']) kv.remove(id);
    kv.add('next', row(4, 17));
    expect(kv.decodeFeeds()['past_k.1'].data.buffer).toBe(memory);
    expect([...kv.extract('next').v[1]]).toEqual([...row(4, 17).v[1]]);
  });

  it('masks each row past its own length and positions the next token at it', () => {
    const kv = new KvBatch(shape, { bucket: 4 });
    kv.add(1, row(2, 4));
    kv.add(2, row(5, 5));
    const f = kv.decodeFeeds();
    const cap = kv.capacity;
    expect(f.attn_bias.dims).toEqual([2, 1, 1, cap + 1]);
    const bias = [...f.attn_bias.data].map((x) => (x === 0 ? 1 : 0));
    expect(bias).toEqual([...[1, 1, 0, 0, 0, 0, 0, 0], 1, ...[1, 1, 1, 1, 1, 0, 0, 0], 1]);
    expect([...(f.positions.data as BigInt64Array)]).toEqual([2n, 5n]);
    expect(f['past_k.0'].dims).toEqual([2, 2, cap, 3]);
  });

  it('joins a cached prefix with more tokens', () => {
    const a = row(2, 6);
    const b = row(3, 7);
    const j = concatRowKv(shape, a, b);
    expect(j.length).toBe(5);
    expect([...j.v[1].subarray(15, 21)]).toEqual([...a.v[1].subarray(6, 12)]);
    expect([...j.v[1].subarray(21, 30)]).toEqual([...b.v[1].subarray(9, 18)]);
  });

  it('refuses rows that cannot grow and unknown or duplicate ids', () => {
    const kv = new KvBatch(shape, { bucket: 4, maxLength: 4 });
    expect(() => kv.add('x', row(4, 8))).toThrow(KvError);
    kv.add('x', row(3, 8));
    expect(() => kv.add('x', row(1, 9))).toThrow(/already/);
    kv.append(present(1, 1));
    expect(() => kv.decodeFeeds()).toThrow(/4 positions/);
    expect(() => kv.remove('nope')).toThrow(/no row/);
  });
});
