import { afterAll, describe, expect, it } from 'vitest';
import { grad } from '../../src/graph/autodiff.js';
import { Runner } from '../../src/graph/runner.js';
import type { HostTensor } from '../../src/graph/types.js';
import { packLm } from '../../src/model/batch.js';
import { BuilderError, buildGraph, loraInputs, normaliseSpec, sessionKey, weightInputs } from '../../src/model/builder.js';
import type { ModelConfig } from '../../src/model/config.js';
import { KvBatch } from '../../src/model/kv.js';
import { SlotPool, adapterFeeds } from '../../src/model/lora-feeds.js';
import { Model } from '../../src/model/model.js';
import { expectedTensors } from '../../src/model/weights.js';
import { maxAbsDiff, randomAdapter, randomRows, randomWeights, tinyGpt2, tinyLlama } from './fixtures.js';

const runner = new Runner({ intraOpThreads: 1 });
afterAll(() => runner.close());

describe('sessionKey', () => {
  it('separates kinds, LoRA modes and layer masks, and folds an empty mask into the plain model', () => {
    const k = (spec: Parameters<typeof sessionKey>[1]): string => sessionKey(tinyGpt2, spec);
    const keys = new Set([
      k({ kind: 'train' }),
      k({ kind: 'prefill' }),
      k({ kind: 'prefill', allLogits: true }),
      k({ kind: 'decode' }),
      k({ kind: 'decode', lora: { mode: 'single', layers: [true, false] } }),
      k({ kind: 'decode', lora: { mode: 'single', layers: [false, true] } }),
      k({ kind: 'decode', lora: { mode: 'pool', layers: [false, true] } }),
      k({ kind: 'decode', lora: { mode: 'single', layers: [false, true], bt: true } }),
    ]);
    expect(keys.size).toBe(8);
    expect(k({ kind: 'decode', lora: { mode: 'single', layers: [false, false] } })).toBe(k({ kind: 'decode' }));
    expect(sessionKey(tinyGpt2, { kind: 'train' })).not.toBe(sessionKey({ ...tinyGpt2, dFf: 32 }, { kind: 'train' }));
  });

  it('rejects a layer mask of the wrong length, allLogits outside prefill and extend, and a transposed B outside mode single', () => {
    expect(() => normaliseSpec(tinyGpt2, { kind: 'train', lora: { mode: 'single', layers: [true] } })).toThrow(BuilderError);
    expect(() => normaliseSpec(tinyGpt2, { kind: 'decode', lora: { mode: 'rows', layers: [true, true], bt: true } })).toThrow(/bt/);
    expect(() => normaliseSpec(tinyGpt2, { kind: 'decode', allLogits: true })).toThrow(/allLogits/);
    expect(() => normaliseSpec(tinyGpt2, { kind: 'train', allLogits: true })).toThrow(/allLogits/);
    expect(normaliseSpec(tinyGpt2, { kind: 'extend', allLogits: true }).allLogits).toBe(true);
  });
});

describe('buildGraph', () => {
  it('declares weights as inputs under their HF names, never as initializers', () => {
    for (const cfg of [tinyGpt2, tinyLlama]) {
      const g = buildGraph(cfg, { kind: 'decode', lora: { mode: 'pool', layers: [true, true] } });
      const names = new Set(g.inputs.map((i) => i.name));
      for (const t of expectedTensors(cfg)) expect(names.has(t.name)).toBe(true);
      expect(g.initializers.every((v) => v.shape.reduce((a: number, b) => a * (b as number), 1) <= 8)).toBe(true);
      expect(names.has('slot')).toBe(true);
      expect(g.outputs.map((o) => o.name)).toEqual(['logits', ...[0, 1].flatMap((l) => [`present_k.${l}`, `present_v.${l}`])]);
    }
  });

  it('gives each injected layer its own symbolic rank', () => {
    const g = buildGraph(tinyLlama, { kind: 'train', lora: { mode: 'single', layers: [false, true] } });
    const lora = loraInputs(g);
    expect(lora.map((v) => `${v.name}:${v.shape.join(',')}`)).toEqual([
      'lora.1.mlp.gate_proj.A:R1,16',
      'lora.1.mlp.gate_proj.B:20,R1',
      'lora.1.mlp.up_proj.A:R1,16',
      'lora.1.mlp.up_proj.B:20,R1',
      'lora.1.mlp.down_proj.A:R1,20',
      'lora.1.mlp.down_proj.B:16,R1',
    ]);
  });

  // A prefill returns one position's logits per row: its last block needs every position's keys and
  // values (the presents) and nothing else at the other positions.
  it.each([
    ['gpt2', tinyGpt2, 'mlp.c_proj.weight'],
    ['llama', tinyLlama, 'mlp.down_proj.weight'],
  ] as const)('%s: a prefill computes its last block past the keys and values at each row\'s query position only', (_n, cfg, ffnOut) => {
    const last = cfg.nLayers - 1;
    const layerOf = (l: number) => (cfg.family === 'gpt2' ? `transformer.h.${l}.` : `model.layers.${l}.`);
    const ffnShape = (g: ReturnType<typeof buildGraph>, l: number) => {
      const w = `${layerOf(l)}${ffnOut}`;
      // The weight itself or its transpose (Llama's [out, in] weights; ORT folds the Transpose into MatMul).
      const mm = g.nodes.find((n) => n.op === 'MatMul' && n.inputs.some((v) => v?.name === w || v?.node?.inputs.some((u) => u?.name === w)));
      expect(mm).toBeDefined();
      return mm!.outputs[0].shape;
    };
    for (const lora of [undefined, { mode: 'rows' as const, layers: [true, true] }, { mode: 'pool' as const, layers: [false, true] }]) {
      const g = buildGraph(cfg, { kind: 'prefill', lora });
      expect(ffnShape(g, last)).toEqual(['B', 1, cfg.dModel]);
      expect(ffnShape(g, last - 1)).toEqual(['B', 'T', cfg.dModel]);
      expect(g.outputs.find((o) => o.name === `present_k.${last}`)!.value.shape).toEqual(['B', cfg.nKvHeads, 'T', cfg.headDim]);
      // Every position's logits: nothing trimmed.
      expect(ffnShape(buildGraph(cfg, { kind: 'prefill', allLogits: true, lora }), last)).toEqual(['B', 'T', cfg.dModel]);
    }
  });

  it.each([
    ['gpt2', tinyGpt2],
    ['llama', { ...tinyLlama, ropeStyle: 'interleaved' as const }],
  ] as const)('%s: the trimmed prefill gives the logits and keys/values of the full forward, slot pool on the last layer, left- or right-padded', async (_n, cfg) => {
    const model = new Model(cfg, randomWeights(cfg, 31), { runner });
    const pool = new SlotPool(cfg, 3, 4);
    pool.set(1, randomAdapter(cfg, [1], 4, 32, 0.8));
    pool.set(2, randomAdapter(cfg, [0, 1], 2, 33, 1.5));
    const rows = randomRows(cfg, [6, 1, 9, 4], 34);
    const lora = { pool, slots: [1, 0, 2, 1] };
    const full = await model.forwardLogits(rows, lora);
    for (const padding of ['left', 'right'] as const) {
      const pre = await model.prefill(rows, lora, padding);
      rows.forEach((row, r) => expect(maxAbsDiff(pre.logits[r], full[r].subarray((row.length - 1) * cfg.vocabSize))).toBeLessThan(1e-5));
      // The next token decoded from the trimmed prefill's cache against the full forward of the longer rows.
      const next = rows.map((row, r) => (row[row.length - 1] + r + 1) % cfg.vocabSize);
      const batch = new KvBatch(model.kvShape, { bucket: 4, maxLength: cfg.maxPositions });
      rows.forEach((_row, r) => batch.add(r, pre.kv[r]));
      const step = await model.decodeStep(batch, next, lora);
      const longer = await model.forwardLogits(rows.map((row, r) => [...row, next[r]]), lora);
      rows.forEach((row, r) => expect(maxAbsDiff(step[r], longer[r].subarray(row.length * cfg.vocabSize))).toBeLessThan(1e-4));
    }
  });

  // The lead builds train steps with grad() on these graphs: check the walk finds a rule for every
  // op on the path and that a small step against the gradient lowers the loss.
  const trainSteps: [string, ModelConfig, boolean][] = [
    ['gpt2 LoRA', tinyGpt2, false],
    ['llama LoRA', tinyLlama, false],
    ['gpt2 all weights', tinyGpt2, true],
    ['llama all weights', { ...tinyLlama, ropeStyle: 'interleaved' }, true],
  ];
  it.each(trainSteps)('%s: grad() over the train graph lowers the loss', async (_n, cfg, full) => {
    const model = new Model(cfg, randomWeights(cfg, 21), { runner });
    const adapter = randomAdapter(cfg, [0, 1], 2, 22, 1);
    const { lora, feeds: loraFeeds } = adapterFeeds(cfg, adapter);
    const spec = { kind: 'train' as const, lora };
    const g = buildGraph(cfg, spec);
    const params = full ? weightInputs(g) : loraInputs(g);
    expect(params.length).toBe(full ? expectedTensors(cfg).length : 2 * (cfg.family === 'gpt2' ? 2 : 3) * 2);
    const grads = grad(g.outputs[0].value, params);
    grads.forEach((gv, i) => g.output(`grad.${params[i].name}`, gv));
    const session = await runner.compile(`${sessionKey(cfg, spec)}#grad${full}`, () => g);
    const rows = randomRows(cfg, [6, 4], 23);
    const batch = packLm({ inputIds: rows.map((r) => r.slice(0, -1)), labels: rows.map((r) => r.slice(1)) });
    const feeds: Record<string, HostTensor> = { ...loraFeeds, ...batch.feeds };
    const out = await session.run({ ...model.baseFeeds(), ...feeds });
    const loss0 = (out.loss.data as Float32Array)[0];
    const step = 1e-3;
    const moved: Record<string, HostTensor> = {};
    const base = { ...model.baseFeeds() } as Record<string, unknown>;
    for (const p of params) {
      const gr = out[`grad.${p.name}`].data as Float32Array;
      expect(gr.every(Number.isFinite)).toBe(true);
      const src = (feeds[p.name] ?? base[p.name]) as { data: Float32Array; dims: readonly number[] };
      moved[p.name] = { dtype: 'float32', dims: [...src.dims], data: src.data.map((x, i) => x - step * gr[i]) };
    }
    const after = await session.run({ ...model.baseFeeds(), ...feeds, ...moved });
    expect((after.loss.data as Float32Array)[0]).toBeLessThan(loss0);
  });
});
