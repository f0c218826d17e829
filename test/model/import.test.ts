import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { HostTensor } from '../../src/graph/types.js';
import { importCheckpoint, inspectCheckpoint } from '../../src/model/import.js';
import { saveCheckpoint } from '../../src/model/save.js';
import { WeightsError, canonicalName, expectedTensors, loraTargets, parameterCount } from '../../src/model/weights.js';
import { randomWeights, tempDir, tinyGpt2, tinyLlama, writeCheckpoint } from './fixtures.js';

function importError(dir: string): WeightsError {
  try {
    importCheckpoint(dir);
  } catch (e) {
    return e as WeightsError;
  }
  throw new Error('import did not fail');
}

describe('importCheckpoint', () => {
  it('imports both families, single file and sharded, with or without the HF prefix', () => {
    for (const cfg of [tinyGpt2, tinyLlama]) {
      const w = randomWeights(cfg, 3);
      for (const opts of [{}, { shards: 2 }, { stripPrefix: true }, { shards: 3, stripPrefix: true }]) {
        const dir = tempDir('imp');
        writeCheckpoint(dir, cfg, w, opts);
        const got = importCheckpoint(dir);
        expect(got.config).toEqual(cfg);
        expect([...got.weights.keys()].sort()).toEqual([...w.keys()].sort());
        for (const [n, t] of w) expect(got.weights.get(n)!.data).toEqual(t.data);
        expect(got.files.length).toBe(opts.shards ?? 1);
      }
    }
  });

  it('reads back what saveCheckpoint writes (config, weights, metadata)', () => {
    for (const cfg of [tinyGpt2, { ...tinyLlama, ropeStyle: 'interleaved' as const }]) {
      const dir = tempDir('save');
      const w = randomWeights(cfg, 10);
      w.set('extra.unused', { dtype: 'float32', dims: [1], data: new Float32Array(1) });
      saveCheckpoint(dir, cfg, w, { recipe: 'test' });
      const got = importCheckpoint(dir);
      expect(got.config).toEqual(cfg);
      expect(got.unused).toEqual([]);
      for (const [n, t] of got.weights) expect(t.data).toEqual(w.get(n)!.data);
    }
  });

  it('drops GPT-2 mask buffers and a tied lm_head, reports other extras as unused', () => {
    const dir = tempDir('extra');
    const w = randomWeights(tinyGpt2, 4);
    const t = (n: number): HostTensor => ({ dtype: 'float32', dims: [n], data: new Float32Array(n) });
    writeCheckpoint(dir, tinyGpt2, w, { stripPrefix: true, extra: { 'h.0.attn.bias': t(4), 'h.1.attn.masked_bias': t(1), 'lm_head.weight': t(2), 'score.weight': t(3) } });
    const got = importCheckpoint(dir);
    expect(got.unused).toEqual(['h.0.attn.bias', 'h.1.attn.masked_bias', 'lm_head.weight', 'score.weight']);
    expect(got.weights.has('transformer.h.0.attn.bias')).toBe(false);
    expect(got.weights.size).toBe(expectedTensors(tinyGpt2).length);
  });

  it('converts float64 weights to float32', () => {
    const dir = tempDir('f64');
    const w = randomWeights(tinyLlama, 5);
    const d = new Map([...w].map(([n, t]) => [n, { dtype: 'float64', dims: t.dims, data: Float64Array.from(t.data as Float32Array) } as HostTensor]));
    writeCheckpoint(dir, tinyLlama, d);
    const got = importCheckpoint(dir);
    expect(got.weights.get('model.norm.weight')!.dtype).toBe('float32');
    expect(got.weights.get('model.norm.weight')!.data).toEqual(w.get('model.norm.weight')!.data);
  });

  it('names the first missing tensor, with its expected shape', () => {
    const dir = tempDir('missing');
    const w = randomWeights(tinyLlama, 6);
    w.delete('model.layers.1.mlp.up_proj.weight');
    w.delete('model.norm.weight');
    writeCheckpoint(dir, tinyLlama, w, { shards: 2 });
    const e = importError(dir);
    expect(e.code).toBe('missing_tensor');
    expect(e.message).toContain('model.layers.1.mlp.up_proj.weight');
    expect(e.details).toEqual({ name: 'model.layers.1.mlp.up_proj.weight', expected: [20, 16] });
  });

  it('names the first misshaped tensor with expected and actual shapes', () => {
    const dir = tempDir('shape');
    const w = randomWeights(tinyGpt2, 7);
    // GPT-2's Conv1D layout is [in, out]: a transposed (Linear-style) c_fc is misshaped.
    w.set('transformer.h.0.mlp.c_fc.weight', { dtype: 'float32', dims: [24, 16], data: new Float32Array(24 * 16) });
    w.set('transformer.ln_f.bias', { dtype: 'float32', dims: [3], data: new Float32Array(3) });
    writeCheckpoint(dir, tinyGpt2, w);
    const e = importError(dir);
    expect(e.code).toBe('tensor_shape');
    expect(e.message).toBe('tensor "transformer.h.0.mlp.c_fc.weight" has shape [24,16], expected [16,24]');
    expect(e.details).toEqual({ name: 'transformer.h.0.mlp.c_fc.weight', expected: [16, 24], got: [24, 16] });
  });

  it('requires lm_head when embeddings are not tied; checks config before tensors', () => {
    const dir = tempDir('head');
    const w = randomWeights(tinyLlama, 8);
    w.delete('lm_head.weight');
    writeCheckpoint(dir, tinyLlama, w);
    expect(importError(dir).message).toContain('"lm_head.weight"');
    expect(() => inspectCheckpoint(join(dir, 'nope'))).toThrow(/config\.json/);
  });

  it('rejects two checkpoint names that mean the same tensor', () => {
    const dir = tempDir('dup');
    const w = randomWeights(tinyGpt2, 9);
    writeCheckpoint(dir, tinyGpt2, w, { extra: { 'wte.weight': w.get('transformer.wte.weight')! } });
    expect(importError(dir).code).toBe('duplicate_tensor');
  });
});

describe('weights', () => {
  it('lists the LoRA targets of each family with their widths', () => {
    expect(loraTargets(tinyGpt2).slice(0, 2)).toEqual([
      { layer: 0, map: 'mlp.c_fc', inFeatures: 16, outFeatures: 24 },
      { layer: 0, map: 'mlp.c_proj', inFeatures: 24, outFeatures: 16 },
    ]);
    expect(loraTargets(tinyLlama).filter((t) => t.layer === 1).map((t) => t.map)).toEqual(['mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj']);
  });

  it('canonicalises bare names per family', () => {
    expect(canonicalName(tinyGpt2, 'h.3.mlp.c_fc.weight')).toBe('transformer.h.3.mlp.c_fc.weight');
    expect(canonicalName(tinyGpt2, 'h.3.attn.c_attn.bias')).toBe('transformer.h.3.attn.c_attn.bias');
    expect(canonicalName(tinyGpt2, 'transformer.h.3.attn.bias')).toBeNull();
    expect(canonicalName(tinyLlama, 'layers.0.self_attn.rotary_emb.inv_freq')).toBeNull();
    expect(canonicalName(tinyLlama, 'embed_tokens.weight')).toBe('model.embed_tokens.weight');
    expect(canonicalName(tinyLlama, 'lm_head.weight')).toBe('lm_head.weight');
  });

  it('counts parameters (GPT-2 small is 124M)', () => {
    const gpt2Small = { ...tinyGpt2, vocabSize: 50257, dModel: 768, nLayers: 12, nHeads: 12, nKvHeads: 12, headDim: 64, dFf: 3072, maxPositions: 1024 };
    expect(parameterCount(gpt2Small)).toBe(124_439_808);
  });
});
