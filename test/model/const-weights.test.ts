/**
 * Base weights baked into the inference graphs as constants (ModelOptions.constWeights): the same
 * logits as with the weights fed as inputs, for prefill, decode and both LoRA paths of serving, no
 * weight among the inference graphs' inputs, training graphs unchanged, and the `auto` bound.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { Runner } from '../../src/graph/runner.js';
import type { ModelConfig } from '../../src/model/config.js';
import { KvBatch } from '../../src/model/kv.js';
import { CONST_WEIGHTS_AUTO_MAX_BYTES, Model } from '../../src/model/model.js';
import { RowPool } from '../../src/model/row-pool.js';
import { maxAbsDiff, randomAdapter, randomRows, randomWeights, tinyGpt2, tinyLlama } from './fixtures.js';

const runner = new Runner({ intraOpThreads: 1 });
afterAll(() => runner.close());

const families: [string, ModelConfig][] = [
  ['gpt2', tinyGpt2],
  ['llama GQA', tinyLlama],
];

describe.each(families)('%s: weights baked into the inference graphs', (_n, cfg) => {
  const weights = randomWeights(cfg, 51);
  const fed = new Model(cfg, weights, { runner });
  const baked = new Model(cfg, weights, { runner, constWeights: 'on' });
  const names = [...weights.keys()];

  it('gives the logits of the weights fed as inputs: prefill, decode, one adapter, a row pool', async () => {
    expect(fed.constWeights).toBe(false);
    expect(baked.constWeights).toBe(true);
    const rows = randomRows(cfg, [5, 2, 7], 52);
    const adapters = [randomAdapter(cfg, [0, 1], 4, 53, 0.7), null, randomAdapter(cfg, [1], 6, 54, 1.2)];
    const run = async (m: Model) => {
      const pool = new RowPool(cfg, { maxRows: 4, unit: 4 });
      adapters.forEach((a, i) => pool.add(i, a));
      const pre = await m.prefill(rows, pool.input());
      const plain = await m.prefill(rows);
      const single = await m.prefill([rows[0]], { adapter: adapters[0]! });
      const batch = new KvBatch(m.kvShape, { bucket: 4, maxLength: cfg.maxPositions });
      pre.kv.forEach((kv, i) => batch.add(i, kv));
      const steps = [];
      for (let s = 0; s < 3; s++) steps.push(await m.decodeStep(batch, [1 + s, 2 + s, 3 + s], pool.input()));
      return [...pre.logits, ...plain.logits, ...single.logits, ...steps.flat()];
    };
    const a = await run(fed);
    const b = await run(baked);
    expect(b).toHaveLength(a.length);
    a.forEach((x, i) => expect(maxAbsDiff(x, b[i])).toBeLessThan(1e-5));
  });

  it('takes no weight as an input in its prefill and decode graphs; training graphs still take them all', async () => {
    const every = Array(cfg.nLayers).fill(true);
    for (const spec of [{ kind: 'prefill' as const }, { kind: 'decode' as const }, { kind: 'decode' as const, lora: { mode: 'rows' as const, layers: every } }]) {
      const inputs = (await baked.session(spec)).inputNames;
      expect(inputs.filter((n) => names.includes(n))).toEqual([]);
      expect((await fed.session(spec)).inputNames.filter((n) => names.includes(n)).length).toBeGreaterThan(0);
    }
    const train = (await baked.session({ kind: 'train' })).inputNames;
    expect(names.every((n) => train.includes(n))).toBe(true);
    // A baked model's loss is the fed model's (training graphs are shared).
    const batch = { inputIds: randomRows(cfg, [6], 55), labels: randomRows(cfg, [6], 56) };
    expect(await baked.loss(batch)).toBe(await fed.loss(batch));
  });

  it('bakes with `auto` up to the size bound, never by default or with `off`', () => {
    const bytes = names.reduce((s, n) => s + (weights.get(n)!.data as Float32Array).byteLength, 0);
    expect(fed.weightBytes).toBe(bytes);
    expect(bytes).toBeLessThan(CONST_WEIGHTS_AUTO_MAX_BYTES);
    expect(new Model(cfg, weights, { runner, constWeights: 'auto' }).constWeights).toBe(true);
    expect(new Model(cfg, weights, { runner, constWeights: 'off' }).constWeights).toBe(false);
  });
});
