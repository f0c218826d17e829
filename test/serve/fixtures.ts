/**
 * A tiny random GPT-2 with a small trained BPE tokenizer written as a model directory, a real SQLite
 * file, an adapter store and cache, and helpers to give users stored adapters: random ones (for
 * batching equivalence) and "forcing" ones whose B pushes the last layer's output along one token's
 * embedding, so that the user's greedy reply is that token over and over and a mix-up is visible.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { type Db, openDb } from '../../src/db/client.js';
import { createAdapterVersion } from '../../src/db/queries/adapters.js';
import { appendHistory } from '../../src/db/queries/history.js';
import { createUser } from '../../src/db/queries/users.js';
import { memoryLogger } from '../../src/http/logger.js';
import { type Adapter, initAdapter } from '../../src/lora/adapter.js';
import { AdapterCache } from '../../src/lora/cache.js';
import type { AdapterSpec } from '../../src/lora/spec.js';
import { AdapterStore } from '../../src/lora/store.js';
import { type Counter, type Histogram, Registry } from '../../src/metrics.js';
import { saveTokenizer, trainBpe } from '../../src/model/bpe-train.js';
import { type ModelConfig, validateConfig } from '../../src/model/config.js';
import { Model } from '../../src/model/model.js';
import { loadTokenizer, type Tokenizer } from '../../src/model/tokenizer.js';
import { loraTargets, type Weights } from '../../src/model/weights.js';
import { Engine, type EngineOptions } from '../../src/serve/engine.js';
import type { ServeRequest } from '../../src/serve/types.js';
import { Rng } from '../../src/util/rng.js';
import { fixtureTexts } from '../model/tokenizer-fixture.js';
import { randomWeights, writeCheckpoint } from '../model/fixtures.js';

export function serveConfig(maxPositions = 96): ModelConfig {
  return validateConfig({
    family: 'gpt2',
    vocabSize: 320,
    dModel: 32,
    nLayers: 2,
    nHeads: 2,
    nKvHeads: 2,
    headDim: 16,
    dFf: 64,
    maxPositions,
    normEps: 1e-5,
    ropeTheta: 10000,
    ropeStyle: 'half',
    tieEmbeddings: true,
    activation: 'gelu_tanh',
    bosId: 0,
    eosId: 0,
    chatTemplate: 'memlora',
  });
}

export interface ModelDir {
  dir: string;
  cfg: ModelConfig;
  weights: Weights;
  tokenizer: Tokenizer;
}

/** config.json, model.safetensors, tokenizer.json in a fresh directory (the layout MEMLORA_MODEL_PATH expects). */
export function writeModelDir(root: string, maxPositions = 96, seed = 7): ModelDir {
  const dir = join(root, 'model');
  const cfg = serveConfig(maxPositions);
  const weights = randomWeights(cfg, seed, 0.3);
  writeCheckpoint(dir, cfg, weights);
  saveTokenizer(dir, trainBpe(fixtureTexts(), { vocabSize: cfg.vocabSize }), { modelMaxLength: maxPositions, chatTemplate: 'memlora' });
  return { dir, cfg, weights, tokenizer: loadTokenizer(dir) };
}

export interface ServeFixture extends ModelDir {
  root: string;
  db: Db;
  model: Model;
  store: AdapterStore;
  cache: AdapterCache;
  registry: Registry;
  logger: ReturnType<typeof memoryLogger>;
  engine(opts?: Partial<EngineOptions>): Engine;
  /** A user (created if needed) with `adapter` written to the store and made the active version. */
  giveAdapter(userId: string, adapter: Adapter): Promise<{ version: number; path: string }>;
  addHistory(userId: string, texts: string[]): void;
  /** A counter of the fixture's registry, by name and labels. */
  counter(name: string, labels?: Record<string, string>): number;
  /** Decode steps that ran with more than `rows` rows (memlora_generate_batch_rows). */
  stepsWithMoreThan(rows: number): number;
  cleanup(): Promise<void>;
}

export function makeServeFixture(opts: { cacheBytes?: number; maxPositions?: number } = {}): ServeFixture {
  const root = mkdtempSync(join(tmpdir(), 'memlora-serve-'));
  const md = writeModelDir(root, opts.maxPositions);
  const db = openDb(join(root, 'memlora.db'));
  const model = Model.load(md.dir, { runnerOptions: { intraOpThreads: 1 } });
  const store = new AdapterStore(join(root, 'adapters'), { config: md.cfg, name: basename(md.dir) });
  const registry = new Registry();
  const cache = new AdapterCache({ maxBytes: opts.cacheBytes ?? 64 * 1024 * 1024, registry });
  const logger = memoryLogger();
  const engines: Engine[] = [];
  const ensureUser = (userId: string) => createUser(db, { id: userId });
  return {
    ...md,
    root,
    db,
    model,
    store,
    cache,
    registry,
    logger,
    engine(o = {}) {
      const e = new Engine({ model, tokenizer: md.tokenizer, db, adapters: { store, cache }, maxQueue: 64, maxBatch: 8, registry, logger, ...o });
      engines.push(e);
      return e;
    },
    async giveAdapter(userId, adapter) {
      ensureUser(userId);
      const w = await store.write(userId, adapter);
      const row = createAdapterVersion(db, { userId, config: { ...adapter.spec }, filePath: w.path, sha256: w.sha256, metrics: {}, status: 'ready', activate: true });
      return { version: row.version, path: w.path };
    },
    addHistory(userId, texts) {
      ensureUser(userId);
      appendHistory(db, userId, texts.map((text) => ({ kind: 'post' as const, text })));
    },
    counter: (name, labels) => (registry.get(name) as Counter).get(labels),
    stepsWithMoreThan(rows) {
      const h = registry.get('memlora_generate_batch_rows') as Histogram;
      const s = h.snapshot();
      return s.count - s.buckets[h.buckets.indexOf(rows)];
    },
    async cleanup() {
      for (const e of engines) await e.close();
      await model.close();
      db.close();
      rmSync(root, { recursive: true, force: true });
    },
  };
}

/** A stored-format adapter on `layers` with rank n*r and a strong random B (outputs clearly differ from vanilla). */
export function randomStoredAdapter(cfg: ModelConfig, layers: number[], n: number, seed: number): Adapter {
  const spec: AdapterSpec = { layers: Array.from({ length: cfg.nLayers }, (_, l) => layers.includes(l)), n, r: 8, alpha: 16 };
  const a = initAdapter(spec, loraTargets(cfg), seed);
  const rng = new Rng(seed + 99);
  for (const p of a.pairs) for (let i = 0; i < p.B.length; i++) p.B[i] = rng.normal() * 0.5;
  return a;
}

/**
 * An adapter that makes greedy decoding emit `token` at every step: on the last layer, c_proj's LoRA
 * adds strength * (sum of the MLP activations) * (token's embedding) to the residual stream, which
 * then dominates the final layer norm and, through the tied head, the logits.
 */
export function forcingAdapter(cfg: ModelConfig, weights: Weights, token: number, strength = 100): Adapter {
  const last = cfg.nLayers - 1;
  const spec: AdapterSpec = { layers: Array.from({ length: cfg.nLayers }, (_, l) => l === last), n: 1, r: 8 };
  const a = initAdapter(spec, loraTargets(cfg), 5);
  const wte = weights.get('transformer.wte.weight')!.data as Float32Array;
  for (const p of a.pairs) {
    p.A.fill(0);
    p.B.fill(0);
    if (p.target.map !== 'mlp.c_proj') continue;
    for (let i = 0; i < p.target.inFeatures; i++) p.A[i] = 1 / p.target.inFeatures; // row 0: mean activation
    for (let o = 0; o < p.target.outFeatures; o++) p.B[o * p.rank] = strength * wte[token * cfg.dModel + o]; // column 0
  }
  return a;
}

export function req(userId: string, extra: Partial<ServeRequest> = {}): ServeRequest {
  return { userId, prompt: 'Hello, how can I help you today?', maxTokens: 10, temperature: 0, topP: 1, stop: [], stream: false, mode: 'auto', ...extra };
}

export const never = (): AbortSignal => new AbortController().signal;

/** The single token of a one-character string (byte-level BPE: every ASCII character is one). */
export function tokenOf(tokenizer: Tokenizer, ch: string): number {
  const ids = tokenizer.encode(ch);
  if (ids.length !== 1) throw new Error(`"${ch}" is ${ids.length} tokens`);
  return ids[0];
}
