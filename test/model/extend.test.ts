/**
 * Extend graphs (prefix caching): a prompt run on from the cache of its first tokens gives the logits
 * and the cache of a prefill of the whole prompt, for both families, batched rows with prefixes of
 * different lengths, one adapter and the unit pool; checked against our prefill and against the
 * independent float64 reference.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { Runner } from '../../src/graph/runner.js';
import type { ModelConfig } from '../../src/model/config.js';
import { concatRowKv, KvBatch, type RowKv, sliceRowKv } from '../../src/model/kv.js';
import { Model, ModelError } from '../../src/model/model.js';
import { RowPool } from '../../src/model/row-pool.js';
import { referenceLogits } from './reference.js';
import { maxAbsDiff, randomAdapter, randomRows, randomWeights, refLora, tinyGpt2, tinyLlama } from './fixtures.js';

const runner = new Runner({ intraOpThreads: 1 });
afterAll(() => runner.close());

const TOL = 1e-4;
const variants: [string, ModelConfig][] = [
  ['gpt2', tinyGpt2],
  ['llama GQA', tinyLlama],
];

const kvDiff = (a: RowKv, b: RowKv): number => {
  expect(a.length).toBe(b.length);
  return Math.max(...a.k.map((x, l) => maxAbsDiff(x, b.k[l])), ...a.v.map((x, l) => maxAbsDiff(x, b.v[l])));
};

describe.each(variants)('%s', (_name, cfg) => {
  const weights = randomWeights(cfg, 21);
  const model = new Model(cfg, weights, { runner });
  const rows = randomRows(cfg, [9, 4, 12], 22);
  const cuts = [5, 1, 7];

  it('run on from cached prefixes, a batch of rows matches a prefill of the whole prompts and the reference', async () => {
    const whole = await model.prefill(rows);
    // Caches longer than the prefixes used (a cached conversation that went on differently): each
    // row uses its first `cut` positions only.
    const cached = await model.prefill(rows.map((r, i) => [...r.slice(0, cuts[i]), 7, 8]));
    const ext = await model.extend(rows.map((r, i) => ({ past: cached.kv[i], pastLength: cuts[i], ids: r.slice(cuts[i]) })));
    rows.forEach((row, i) => {
      expect(maxAbsDiff(ext.logits[i], whole.logits[i])).toBeLessThan(TOL);
      const ref = referenceLogits(cfg, weights, row);
      expect(maxAbsDiff(ext.logits[i], ref[ref.length - 1])).toBeLessThan(TOL);
      expect(ext.added[i].length).toBe(row.length - cuts[i]);
      const joined = concatRowKv(model.kvShape, sliceRowKv(model.kvShape, cached.kv[i], cuts[i]), ext.added[i]);
      expect(kvDiff(joined, whole.kv[i])).toBeLessThan(1e-5);
    });
  });

  it('a lone row (fed as cached, without a copy) using the first positions of a longer cache, then decoding on from it', async () => {
    const row = rows[2];
    const longer = await model.prefill([[...row.slice(0, 6), 9, 9, 9, 9]]);
    const ext = await model.extend([{ past: longer.kv[0], pastLength: 6, ids: row.slice(6) }]);
    const whole = await model.prefill([row]);
    expect(maxAbsDiff(ext.logits[0], whole.logits[0])).toBeLessThan(TOL);
    // The batch takes the cached prefix and the new tokens' cache as two parts, and decodes as the prefilled cache does.
    const next = 3;
    const steps = await Promise.all(
      [[{ kv: longer.kv[0], length: 6 }, { kv: ext.added[0] }], [{ kv: whole.kv[0] }]].map(async (parts) => {
        const batch = new KvBatch(model.kvShape, { maxLength: cfg.maxPositions });
        batch.add('other', whole.kv[0]); // a row beside it, so the batch's layout is not the part's own
        batch.add('r', parts);
        expect(batch.length('r')).toBe(row.length);
        return (await model.decodeStep(batch, [next, next]))[1];
      }),
    );
    expect(maxAbsDiff(steps[0], steps[1])).toBeLessThan(TOL);
    const ref = referenceLogits(cfg, weights, [...row, next]);
    expect(maxAbsDiff(steps[0], ref[ref.length - 1])).toBeLessThan(TOL);
  });

  it('through one adapter (as a lone joiner is served) and through the unit pool (rows with different adapters)', async () => {
    const adapters = [randomAdapter(cfg, [0], 3, 31, 0.7), randomAdapter(cfg, [1], 5, 32, 0.7), randomAdapter(cfg, [0, 1], 2, 33, 0.7)];
    // One adapter, every layer fed (rank 0 where it has none), as the engine feeds a lone joiner.
    const a = adapters[1];
    const pre = await model.prefill([rows[0].slice(0, 4)], { adapter: a, everyLayer: true });
    const one = await model.extend([{ past: pre.kv[0], ids: rows[0].slice(4) }], { adapter: a, everyLayer: true });
    const ref = referenceLogits(cfg, weights, rows[0], refLora(a));
    expect(maxAbsDiff(one.logits[0], ref[ref.length - 1])).toBeLessThan(TOL);
    const plain = await model.extend([{ past: pre.kv[0], ids: rows[0].slice(4) }]);
    expect(maxAbsDiff(one.logits[0], plain.logits[0])).toBeGreaterThan(1e-2);

    // The unit pool: each row its own adapter, one call.
    const pool = new RowPool(cfg, { maxRows: 4, unit: 2 });
    adapters.forEach((ad, i) => pool.add(i, ad));
    const pasts = await Promise.all(rows.map(async (r, i) => (await model.prefill([r.slice(0, cuts[i])], { adapter: adapters[i] })).kv[0]));
    const mixed = await model.extend(
      rows.map((r, i) => ({ past: pasts[i], ids: r.slice(cuts[i]) })),
      pool.input(),
    );
    rows.forEach((row, i) => {
      const want = referenceLogits(cfg, weights, row, refLora(adapters[i]));
      expect(maxAbsDiff(mixed.logits[i], want[want.length - 1])).toBeLessThan(TOL);
    });
  });

  it('readLogits: every position of a row read in pieces, plain and through an adapter, as the independent reference reads it whole', async () => {
    const a = randomAdapter(cfg, [0, 1], 3, 34, 0.7);
    const row = rows[2]; // 12 tokens, in pieces of 5, 4 and 3
    for (const lora of [undefined, { adapter: a, everyLayer: true }]) {
      const ref = referenceLogits(cfg, weights, row, lora && refLora(a));
      let past: RowKv | undefined;
      const got: Float32Array[] = [];
      for (const [from, to] of [[0, 5], [5, 9], [9, 12]]) {
        const piece = await model.readLogits({ past, ids: row.slice(from, to) }, lora);
        expect(piece.kv.length).toBe(to - from);
        got.push(piece.logits);
        past = past ? concatRowKv(model.kvShape, past, piece.kv) : piece.kv;
      }
      const all = Float32Array.from(got.flatMap((g) => [...g]));
      expect(all.length).toBe(row.length * cfg.vocabSize);
      expect(maxAbsDiff(all, Float32Array.from(ref.flatMap((r) => [...r])))).toBeLessThan(TOL);
      expect(kvDiff(past!, (await model.prefill([row], lora)).kv[0])).toBeLessThan(TOL);
    }
  });

  it('refuses a row without a cached prefix, a prefix longer than its cache, and one past the context window', async () => {
    const pre = await model.prefill([rows[0]]);
    await expect(model.extend([{ past: pre.kv[0], pastLength: 0, ids: [1] }])).rejects.toMatchObject({ code: 'empty_past' });
    await expect(model.extend([{ past: pre.kv[0], pastLength: pre.kv[0].length + 1, ids: [1] }])).rejects.toMatchObject({ code: 'bad_slice' });
    const long = Array.from({ length: cfg.maxPositions }, () => 1);
    const err = await model.extend([{ past: pre.kv[0], ids: long }]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelError);
    expect((err as ModelError).code).toBe('too_long');
  });
});
