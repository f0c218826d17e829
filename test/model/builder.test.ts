import { afterAll, describe, expect, it } from 'vitest';
import { grad } from '../../src/graph/autodiff.js';
import { Runner } from '../../src/graph/runner.js';
import type { HostTensor } from '../../src/graph/types.js';
import { packLm } from '../../src/model/batch.js';
import { BuilderError, buildGraph, loraInputs, normaliseSpec, sessionKey, weightInputs } from '../../src/model/builder.js';
import type { ModelConfig } from '../../src/model/config.js';
import { adapterFeeds } from '../../src/model/lora-feeds.js';
import { Model } from '../../src/model/model.js';
import { expectedTensors } from '../../src/model/weights.js';
import { randomAdapter, randomRows, randomWeights, tinyGpt2, tinyLlama } from './fixtures.js';

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

  it('rejects a layer mask of the wrong length, allLogits outside prefill and a transposed B outside mode single', () => {
    expect(() => normaliseSpec(tinyGpt2, { kind: 'train', lora: { mode: 'single', layers: [true] } })).toThrow(BuilderError);
    expect(() => normaliseSpec(tinyGpt2, { kind: 'decode', lora: { mode: 'rows', layers: [true, true], bt: true } })).toThrow(/bt/);
    expect(() => normaliseSpec(tinyGpt2, { kind: 'decode', allLogits: true })).toThrow(/allLogits/);
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
