/**
 * Our ONNX forward against the independent float64 reference (test/model/reference.ts), for tiny
 * random checkpoints written in Hugging Face layout and imported: both families, GQA, both RoPE
 * styles, a batch of prompts of different lengths, LoRA as one adapter and as a slot pool.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { Runner } from '../../src/graph/runner.js';
import type { ModelConfig } from '../../src/model/config.js';
import { SlotPool } from '../../src/model/lora-feeds.js';
import { Model } from '../../src/model/model.js';
import { IGNORE_INDEX } from '../../src/model/batch.js';
import { transposeInto } from '../../src/util/transpose.js';
import { referenceLogits } from './reference.js';
import { maxAbsDiff, randomAdapter, randomRows, randomWeights, refLora, tempDir, tinyGpt2, tinyLlama, writeCheckpoint } from './fixtures.js';

const runner = new Runner({ intraOpThreads: 1 });
afterAll(() => runner.close());

const TOL = 1e-4;
const variants: [string, ModelConfig, { shards?: number; stripPrefix?: boolean }][] = [
  ['gpt2', tinyGpt2, {}],
  ['gpt2 erf-gelu, bare names', { ...tinyGpt2, activation: 'gelu' }, { stripPrefix: true }],
  ['llama GQA rotate_half, 2 shards', tinyLlama, { shards: 2 }],
  ['llama interleaved RoPE, tied head', { ...tinyLlama, ropeStyle: 'interleaved', tieEmbeddings: true, nKvHeads: 1 }, {}],
];

function load(cfg: ModelConfig, seed: number, opts: { shards?: number; stripPrefix?: boolean }): { model: Model; weights: ReturnType<typeof randomWeights> } {
  const weights = randomWeights(cfg, seed);
  const dir = tempDir('fwd');
  writeCheckpoint(dir, cfg, weights, opts);
  return { model: Model.load(dir, { runner }), weights };
}

const flat = (rows: Float64Array[]): number[] => rows.flatMap((r) => [...r]);

describe.each(variants)('%s', (_name, cfg, opts) => {
  const { model, weights } = load(cfg, 11, opts);
  const rows = randomRows(cfg, [5, 1, 9, 3], 12);

  it('matches the reference logits at every position of every row', async () => {
    const got = await model.forwardLogits(rows);
    rows.forEach((row, r) => expect(maxAbsDiff(got[r], flat(referenceLogits(cfg, weights, row)))).toBeLessThan(TOL));
  });

  it('prefill gives each row its last-token logits, left- or right-padded', async () => {
    for (const padding of ['left', 'right'] as const) {
      const { logits, kv } = await model.prefill(rows, undefined, padding);
      rows.forEach((row, r) => {
        const ref = referenceLogits(cfg, weights, row);
        expect(maxAbsDiff(logits[r], ref[ref.length - 1])).toBeLessThan(TOL);
        expect(kv[r].length).toBe(row.length);
      });
    }
  });

  it('adds a single adapter on some layers (h = W x + s (x A^T) B^T)', async () => {
    const adapter = randomAdapter(cfg, [1], 3, 13, 0.7);
    const got = await model.forwardLogits(rows, { adapter });
    const plain = await model.forwardLogits(rows);
    rows.forEach((row, r) => {
      expect(maxAbsDiff(got[r], flat(referenceLogits(cfg, weights, row, refLora(adapter))))).toBeLessThan(TOL);
      expect(maxAbsDiff(got[r], plain[r])).toBeGreaterThan(1e-2);
    });
  });

  it('reads an adapter held as served (B^T) on every layer, rank 0 where it has none, as the reference does', async () => {
    const adapter = randomAdapter(cfg, [1], 3, 16, 0.7);
    const served = {
      scaling: adapter.scaling,
      pairs: adapter.pairs.map((p) => {
        const Bt = new Float32Array(p.B.length);
        transposeInto(p.B, p.target.outFeatures, p.rank, Bt);
        return { target: p.target, rank: p.rank, A: p.A, Bt };
      }),
    };
    const got = await model.prefill(rows, { adapter: served, everyLayer: true });
    const masked = await model.prefill(rows, { adapter });
    rows.forEach((row, r) => {
      const ref = referenceLogits(cfg, weights, row, refLora(adapter));
      expect(maxAbsDiff(got.logits[r], ref[ref.length - 1])).toBeLessThan(TOL);
      expect(maxAbsDiff(got.logits[r], masked.logits[r])).toBeLessThan(1e-5);
    });
  });

  it('serves a mixed batch from a slot pool: each row gets exactly its own adapter', async () => {
    const a = randomAdapter(cfg, [0, 1], 2, 14, 0.5);
    const b = randomAdapter(cfg, [1], 4, 15, 2);
    const pool = new SlotPool(cfg, 3, 4);
    pool.set(1, a);
    pool.set(2, b);
    const slots = [1, 0, 2, 1];
    const got = await model.forwardLogits(rows, { pool, slots });
    const adapters = [refLora(a), undefined, refLora(b), refLora(a)];
    rows.forEach((row, r) => expect(maxAbsDiff(got[r], flat(referenceLogits(cfg, weights, row, adapters[r])))).toBeLessThan(TOL));
  });

  it('computes the mean next-token loss over labelled positions only', async () => {
    const labels = rows.map((row, r) => row.map((_, i) => (i % 3 === 2 ? IGNORE_INDEX : (row[i] * 7 + r + i) % cfg.vocabSize)));
    let sum = 0;
    let count = 0;
    rows.forEach((row, r) => {
      referenceLogits(cfg, weights, row).forEach((z, i) => {
        const y = labels[r][i];
        if (y === IGNORE_INDEX) return;
        const m = Math.max(...z);
        const lse = m + Math.log(z.reduce((s, v) => s + Math.exp(v - m), 0));
        sum += lse - z[y];
        count++;
      });
    });
    expect(Math.abs((await model.loss({ inputIds: rows, labels })) - sum / count)).toBeLessThan(TOL);
  });
});

describe('Model', () => {
  it('shares one weight copy across sessions: feeds are the weight arrays themselves', async () => {
    const weights = randomWeights(tinyGpt2, 16);
    const own = new Runner({ intraOpThreads: 1 });
    const model = new Model(tinyGpt2, weights, { runner: own });
    const t = weights.get('transformer.wte.weight')!;
    expect(model.baseFeeds()['transformer.wte.weight'].data).toBe(t.data);
    const before = own.compiles;
    await model.forwardLogits([[1, 2, 3]]);
    await model.forwardLogits([[4, 5]]);
    await model.forwardLogits([[4, 5]], { adapter: randomAdapter(tinyGpt2, [0], 2, 1) });
    await model.forwardLogits([[4, 5]], { adapter: randomAdapter(tinyGpt2, [0], 5, 2) }); // another rank: same session
    expect(own.compiles - before).toBe(2);
    await own.close();
  });

  it('rejects out-of-vocabulary tokens and over-long rows with codes', async () => {
    const model = new Model(tinyGpt2, randomWeights(tinyGpt2, 17), { runner });
    await expect(model.forwardLogits([[1, 999]])).rejects.toMatchObject({ code: 'bad_token' });
    await expect(model.forwardLogits([Array(tinyGpt2.maxPositions + 1).fill(1)])).rejects.toMatchObject({ code: 'too_long' });
    await expect(model.forwardLogits([[1, 2]], { adapter: randomAdapter(tinyLlama, [0], 2, 1) })).rejects.toMatchObject({ code: 'bad_map' });
  });
});
