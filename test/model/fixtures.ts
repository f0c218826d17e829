/** Tiny random models and checkpoints in Hugging Face layout for the model tests. */
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { repoRoot } from '../../src/config.js';
import type { HostTensor } from '../../src/graph/types.js';
import { type ModelConfig, toHfConfig } from '../../src/model/config.js';
import { writeSafetensors } from '../../src/model/safetensors.js';
import { type Weights, expectedTensors, loraTargets } from '../../src/model/weights.js';
import { Rng } from '../../src/util/rng.js';
import type { RefLora } from './reference.js';

export const tinyGpt2: ModelConfig = {
  family: 'gpt2',
  vocabSize: 37,
  dModel: 16,
  nLayers: 2,
  nHeads: 4,
  nKvHeads: 4,
  headDim: 4,
  dFf: 24,
  maxPositions: 32,
  normEps: 1e-5,
  ropeTheta: 10000,
  ropeStyle: 'half',
  tieEmbeddings: true,
  activation: 'gelu_tanh',
  bosId: 0,
  eosId: 1,
};

/** A small GPT-2 (d 32, 2 layers, 128 positions) over a real tokenizer's vocabulary: injection and job tests. */
export function smallGpt2For(tokenizer: { vocabSize: number; bosId: number; eosId: number }): ModelConfig {
  return { ...tinyGpt2, vocabSize: tokenizer.vocabSize, dModel: 32, headDim: 8, dFf: 64, maxPositions: 128, bosId: tokenizer.bosId, eosId: tokenizer.eosId };
}

export const tinyLlama: ModelConfig = {
  family: 'llama',
  vocabSize: 41,
  dModel: 16,
  nLayers: 2,
  nHeads: 4,
  nKvHeads: 2,
  headDim: 4,
  dFf: 20,
  maxPositions: 32,
  normEps: 1e-6,
  ropeTheta: 10000,
  ropeStyle: 'half',
  tieEmbeddings: false,
  activation: 'silu',
  bosId: 1,
  eosId: 2,
};

/** Random weights: norms near 1, everything else N(0, std). */
export function randomWeights(cfg: ModelConfig, seed: number, std = 0.3): Weights {
  const rng = new Rng(seed);
  const w: Weights = new Map();
  for (const { name, shape } of expectedTensors(cfg)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const isNorm = /(ln_\d|ln_f|norm|layernorm)\.weight$/.test(name);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = isNorm ? 1 + 0.1 * rng.normal() : std * rng.normal();
    w.set(name, { dtype: 'float32', dims: shape, data });
  }
  return w;
}

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `memlora-${prefix}-`));
}

/**
 * Write a checkpoint folder: config.json and model.safetensors, or `shards` files with an index.
 * `stripPrefix` saves names as the bare HF models do (no `transformer.` / `model.`).
 */
export function writeCheckpoint(dir: string, cfg: ModelConfig, weights: Weights, opts: { shards?: number; stripPrefix?: boolean; extra?: Record<string, HostTensor> } = {}): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify(toHfConfig(cfg), null, 2));
  const named = new Map<string, HostTensor>();
  for (const [n, t] of weights) named.set(opts.stripPrefix ? n.replace(/^(transformer|model)\./, '') : n, t);
  for (const [n, t] of Object.entries(opts.extra ?? {})) named.set(n, t);
  const shards = opts.shards ?? 1;
  if (shards === 1) {
    writeSafetensors(join(dir, 'model.safetensors'), named);
    return;
  }
  const names = [...named.keys()];
  const map: Record<string, string> = {};
  for (let s = 0; s < shards; s++) {
    const file = `model-${String(s + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
    const part = new Map(names.filter((_, i) => i % shards === s).map((n) => [n, named.get(n)!]));
    for (const n of part.keys()) map[n] = file;
    writeSafetensors(join(dir, file), part);
  }
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: map }));
}

/** A random adapter on the given layers (B non-zero), in src/lora's Adapter shape. */
export function randomAdapter(cfg: ModelConfig, layers: number[], rank: number, seed: number, scaling = 0.5) {
  const rng = new Rng(seed);
  const pairs = loraTargets(cfg)
    .filter((t) => layers.includes(t.layer))
    .map((t) => ({
      target: t,
      rank,
      A: Float32Array.from({ length: rank * t.inFeatures }, () => 0.3 * rng.normal()),
      B: Float32Array.from({ length: t.outFeatures * rank }, () => 0.3 * rng.normal()),
    }));
  return { scaling, pairs };
}

export function refLora(adapter: ReturnType<typeof randomAdapter>): RefLora {
  return { scale: adapter.scaling, pairs: new Map(adapter.pairs.map((p) => [`${p.target.layer}.${p.target.map}`, { rank: p.rank, A: p.A, B: p.B }])) };
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** Random token rows of the given lengths. */
export function randomRows(cfg: ModelConfig, lengths: number[], seed: number): number[][] {
  const rng = new Rng(seed);
  return lengths.map((n) => Array.from({ length: n }, () => rng.int(cfg.vocabSize)));
}

/** The shared models/data folder: ../shared from the repository root, MEMLORA_SHARED_DIR overrides. */
export function sharedDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.MEMLORA_SHARED_DIR ? resolve(env.MEMLORA_SHARED_DIR) : resolve(repoRoot, '..', 'shared');
}
