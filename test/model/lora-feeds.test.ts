import { describe, expect, it } from 'vitest';
import { initAdapter } from '../../src/lora/adapter.js';
import { LoraFeedError, SlotPool, adapterFeeds, loraInputFeeds } from '../../src/model/lora-feeds.js';
import { loraTargets } from '../../src/model/weights.js';
import { randomAdapter, tinyGpt2, tinyLlama } from './fixtures.js';

const code = (f: () => unknown): string | undefined => {
  try {
    f();
  } catch (e) {
    return (e as LoraFeedError).code;
  }
  return undefined;
};

describe('adapterFeeds', () => {
  it('feeds A [R, in], B [out, R] and the scale for the layers an adapter covers', () => {
    const a = randomAdapter(tinyLlama, [1], 3, 1, 0.25);
    const { lora, feeds } = adapterFeeds(tinyLlama, a);
    expect(lora).toEqual({ mode: 'single', layers: [false, true] });
    expect(feeds['lora.1.mlp.down_proj.A'].dims).toEqual([3, 20]);
    expect(feeds['lora.1.mlp.down_proj.B'].dims).toEqual([16, 3]);
    expect([...feeds.lora_scale.data]).toEqual([0.25]);
    expect(Object.keys(feeds).length).toBe(7);
  });

  it('feeds an adapter held as served as Bt [R, out] (no copy), and with everyLayer gives the other layers rank 0', () => {
    const a = randomAdapter(tinyLlama, [1], 3, 1, 0.25);
    const served = { scaling: a.scaling, pairs: a.pairs.map((p) => ({ target: p.target, rank: p.rank, A: p.A, Bt: new Float32Array(p.B.length) })) };
    const { lora, feeds } = adapterFeeds(tinyLlama, served, { everyLayer: true });
    expect(lora).toEqual({ mode: 'single', layers: [true, true], bt: true });
    expect(feeds['lora.1.mlp.down_proj.Bt'].dims).toEqual([3, 16]);
    expect(feeds['lora.1.mlp.down_proj.Bt'].data).toBe(served.pairs.find((p) => p.target.layer === 1 && p.target.map === 'mlp.down_proj')!.Bt);
    expect(feeds['lora.1.mlp.down_proj.B']).toBeUndefined();
    expect(feeds['lora.0.mlp.down_proj.A'].dims).toEqual([0, 20]);
    expect(feeds['lora.0.mlp.down_proj.Bt'].dims).toEqual([0, 16]);
    expect(Object.keys(feeds).length).toBe(13);
    // Without everyLayer, only the adapter's own layers (one graph per layer set).
    expect(adapterFeeds(tinyLlama, served).lora).toEqual({ mode: 'single', layers: [false, true], bt: true });
  });

  it("accepts src/lora's adapters as they are (merged rank n*r)", () => {
    const spec = { layers: [true, false], n: 2, r: 8 as const };
    const adapter = initAdapter(spec, loraTargets(tinyGpt2), 3);
    const { lora, feeds } = adapterFeeds(tinyGpt2, adapter);
    expect(lora?.layers).toEqual([true, false]);
    expect(feeds['lora.0.mlp.c_fc.A'].dims).toEqual([16, 16]);
  });

  it('treats an adapter without pairs as the plain model', () => {
    expect(adapterFeeds(tinyGpt2, { scaling: 1, pairs: [] })).toEqual({ feeds: {} });
  });

  it('rejects incomplete layers, mixed ranks, wrong sizes and foreign maps', () => {
    const a = randomAdapter(tinyLlama, [0], 2, 2);
    expect(code(() => adapterFeeds(tinyLlama, { ...a, pairs: a.pairs.slice(1) }))).toBe('incomplete_layer');
    const b = randomAdapter(tinyLlama, [0], 3, 3);
    expect(code(() => adapterFeeds(tinyLlama, { ...a, pairs: [a.pairs[0], a.pairs[1], b.pairs[2]] }))).toBe('mixed_rank');
    expect(code(() => adapterFeeds(tinyLlama, { ...a, pairs: [{ ...a.pairs[0], rank: 3 }, ...a.pairs.slice(1)] }))).toBe('bad_pair_size');
    expect(code(() => adapterFeeds(tinyGpt2, a))).toBe('bad_map');
    expect(code(() => adapterFeeds(tinyGpt2, randomAdapter({ ...tinyGpt2, nLayers: 3 }, [2], 2, 4)))).toBe('bad_layer');
  });
});

describe('SlotPool', () => {
  it('pads ranks with zeros and folds the scale into B', () => {
    const pool = new SlotPool(tinyGpt2, 3, 4);
    const a = randomAdapter(tinyGpt2, [0], 2, 5, 0.5);
    pool.set(2, a);
    const f = pool.feeds();
    const A = f['pool.0.mlp.c_fc.A'];
    const B = f['pool.0.mlp.c_fc.B'];
    expect(A.dims).toEqual([3, 4, 16]);
    expect(B.dims).toEqual([3, 24, 4]);
    const pa = a.pairs[0];
    const slotA = (A.data as Float32Array).subarray(2 * 4 * 16, 3 * 4 * 16);
    expect([...slotA.subarray(0, 32)]).toEqual([...pa.A]);
    expect(slotA.subarray(32).every((x) => x === 0)).toBe(true);
    const slotB = (B.data as Float32Array).subarray(2 * 24 * 4);
    expect(slotB[5 * 4 + 1]).toBeCloseTo(0.5 * pa.B[5 * 2 + 1], 6);
    expect(slotB[5 * 4 + 2]).toBe(0);
    expect((f['pool.1.mlp.c_fc.A'].data as Float32Array).every((x) => x === 0)).toBe(true); // layer 1 untouched
    expect((A.data as Float32Array).subarray(0, 2 * 4 * 16).every((x) => x === 0)).toBe(true); // slots 0, 1
    pool.set(2, null);
    expect((A.data as Float32Array).every((x) => x === 0)).toBe(true);
    expect(pool.isOccupied(2)).toBe(false);
  });

  it('refuses ranks above the bucket, unpooled layers and slots outside the pool', () => {
    const pool = new SlotPool(tinyGpt2, 2, 2, [true, false]);
    expect(code(() => pool.set(1, randomAdapter(tinyGpt2, [0], 3, 6)))).toBe('rank_exceeds_pool');
    expect(code(() => pool.set(1, randomAdapter(tinyGpt2, [1], 2, 7)))).toBe('layer_not_pooled');
    expect(code(() => pool.set(2, null))).toBe('bad_slot');
    expect(code(() => loraInputFeeds(tinyGpt2, { pool, slots: [0, 2] }, 2))).toBe('bad_slot');
    expect(code(() => loraInputFeeds(tinyGpt2, { pool, slots: [0] }, 2))).toBe('slot_count');
    expect([...loraInputFeeds(tinyGpt2, { pool, slots: [1, 0] }, 2).feeds.slot.data]).toEqual([1n, 0n]);
  });
});
