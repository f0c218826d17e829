/**
 * The adapter-swapping workload of issue 7, shared by bench/swap.ts (over HTTP) and
 * bench/serve-breakdown.ts (in process): 1,000 users, each with a stored adapter of a realistic
 * configuration (random weights; merged rank n*r from 8 to 128, layer sets from one layer to all)
 * written with AdapterStore plus its db row, kept in a temp dir between runs; Zipf(1.0) popularity;
 * short chat prompts; and the cache pre-load of a serving process.
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Db } from '../src/db/client.js';
import { openDb } from '../src/db/client.js';
import { createAdapterVersion } from '../src/db/queries/adapters.js';
import { createUser } from '../src/db/queries/users.js';
import { initAdapter } from '../src/lora/adapter.js';
import { ADAPTER_FILES } from '../src/lora/format.js';
import type { AdapterSpec, Rank } from '../src/lora/spec.js';
import { AdapterStore } from '../src/lora/store.js';
import type { ModelConfig } from '../src/model/config.js';
import { readHfConfig } from '../src/model/import.js';
import { saveCheckpoint } from '../src/model/save.js';
import { type ConstWeights, bakesWeights } from '../src/model/model.js';
import { loraTargets, parameterCount } from '../src/model/weights.js';
import { initWeights } from '../src/pretrain/init.js';
import { defaultModelConfig } from '../src/pretrain/run.js';
import type { ServeServices } from '../src/serve/services.js';
import { Rng } from '../src/util/rng.js';
import { stringArg } from './args.js';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const progress = (line: string): void => void process.stderr.write(`${line}\n`);

export const DEFAULT_SHAPE: ModelConfig = defaultModelConfig({ vocabSize: 2048, bosId: 0, eosId: 0 });
/**
 * A random GPT-2 of GPT-2 small's shape (d_model 768, 12 layers, 12 heads, FFN 3072; 87M parameters
 * with the default tokenizer's 2,048 tokens) in place of the 5M-parameter default model. The same
 * adapter configurations (ranks 8-128, same layer-set shapes) are then in the proportion to the base
 * model that they have on a real LLM: on the default model, a decode step of 8 rows reads about 0.6x
 * the base weights' bytes again in adapter units, and a decode step is bound by the bytes it reads.
 */
export const GPT2_SMALL_SHAPE: ModelConfig = defaultModelConfig({ vocabSize: 2048, bosId: 0, eosId: 0 }, { dModel: 768, nLayers: 12, nHeads: 12, dFf: 3072, maxPositions: DEFAULT_SHAPE.maxPositions });

export type Base = 'default' | 'gpt2-small';

/** The bench's `--base default|gpt2-small` (default: default), checked. */
export function baseArg(): Base {
  const b = stringArg('base', 'default');
  if (b !== 'default' && b !== 'gpt2-small') throw new Error(`--base must be default or gpt2-small, got ${b}`);
  return b;
}

export interface UserInfo {
  id: string;
  rank: number;
  layers: number;
  bytes: number;
  /** Absolute paths of the adapter's three files. */
  files: string[];
}

export interface Workspace {
  dir: string;
  modelPath: string;
  modelKind: string;
  dataDir: string;
  adapterDir: string;
  users: UserInfo[];
  totalBytes: number;
}

/** Merged ranks n*r in 8..128 with (n, r) pairs of the search space; smaller ones are more common. */
const RANK_CHOICES: Array<{ n: number; r: Rank; weight: number }> = [
  { n: 1, r: 8, weight: 0.25 },
  { n: 2, r: 8, weight: 0.12 },
  { n: 1, r: 16, weight: 0.13 },
  { n: 2, r: 16, weight: 0.1 },
  { n: 1, r: 32, weight: 0.1 },
  { n: 1, r: 64, weight: 0.08 },
  { n: 2, r: 32, weight: 0.07 },
  { n: 1, r: 96, weight: 0.08 },
  { n: 2, r: 64, weight: 0.04 },
  { n: 4, r: 32, weight: 0.03 },
];

function pick<T extends { weight: number }>(xs: T[], rng: Rng): T {
  let u = rng.next() * xs.reduce((s, x) => s + x.weight, 0);
  for (const x of xs) if ((u -= x.weight) <= 0) return x;
  return xs[xs.length - 1];
}

/** Layer sets: all, upper or lower half, every other layer, one layer. */
function layerSet(nLayers: number, rng: Rng): boolean[] {
  const u = rng.next();
  const half = Math.floor(nLayers / 2);
  if (u < 0.4) return Array(nLayers).fill(true);
  if (u < 0.6) return Array.from({ length: nLayers }, (_, l) => l >= half);
  if (u < 0.75) return Array.from({ length: nLayers }, (_, l) => l < half);
  if (u < 0.9) return Array.from({ length: nLayers }, (_, l) => l % 2 === 1);
  const only = rng.int(nLayers);
  return Array.from({ length: nLayers }, (_, l) => l === only);
}

export interface WorkspaceOptions {
  users: number;
  seed: number;
  base: Base;
  /** Rebuild even when a workspace of these options exists. */
  fresh: boolean;
}

/** The workspace of these options: built (model, adapters, db), or reused from the temp dir. */
export async function prepareWorkspace({ users: count, seed, base, fresh }: WorkspaceOptions): Promise<Workspace> {
  const defaultModel = join(repo, 'models', 'default');
  const useDefault = base === 'default' && existsSync(join(defaultModel, 'config.json'));
  const key = `u${count}-s${seed}-${base === 'default' ? (useDefault ? 'default' : 'random') : base}`;
  const dir = join(tmpdir(), `memlora-bench-swap-${key}`);
  const manifestFile = join(dir, 'manifest.json');
  if (!fresh && existsSync(manifestFile)) {
    const ws = JSON.parse(readFileSync(manifestFile, 'utf8')) as Workspace;
    progress(`setup: reusing ${dir} (${ws.users.length} users, ${(ws.totalBytes / 2 ** 20).toFixed(0)} MiB of adapters; --fresh rebuilds)`);
    return ws;
  }
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  let modelPath = defaultModel;
  let modelKind = 'models/default (trained)';
  if (!useDefault) {
    modelPath = join(dir, 'model');
    const shape = base === 'gpt2-small' ? GPT2_SMALL_SHAPE : DEFAULT_SHAPE;
    modelKind = base === 'gpt2-small' ? 'random GPT-2 of GPT-2 small\'s shape (--base gpt2-small)' : 'random GPT-2 of the default shape (models/default/config.json absent)';
    saveCheckpoint(modelPath, shape, initWeights(shape, seed));
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(defaultModel, f), join(modelPath, f));
  }
  const cfg = readHfConfig(modelPath);
  const dataDir = join(dir, 'data');
  const adapterDir = join(dir, 'adapters');
  mkdirSync(dataDir, { recursive: true });
  const db = openDb(join(dataDir, 'memlora.db'));
  const store = new AdapterStore(adapterDir, { config: cfg, name: basename(modelPath) });
  const rng = new Rng(seed);
  const targets = loraTargets(cfg);
  const users: UserInfo[] = [];
  let total = 0;
  const t0 = performance.now();
  for (let i = 0; i < count; i++) {
    const id = `user-${String(i).padStart(4, '0')}`;
    const { n, r } = pick(RANK_CHOICES, rng);
    const spec: AdapterSpec = { layers: layerSet(cfg.nLayers, rng), n, r };
    const adapter = initAdapter(spec, targets, seed * 100_000 + i);
    for (const p of adapter.pairs) for (let k = 0; k < p.B.length; k++) p.B[k] = (rng.next() - 0.5) * 0.02;
    createUser(db, { id });
    const w = await store.write(id, adapter);
    createAdapterVersion(db, { userId: id, config: { ...spec }, filePath: w.path, sha256: w.sha256, metrics: {}, status: 'ready', activate: true });
    const abs = join(adapterDir, ...w.path.split('/'));
    users.push({ id, rank: n * r, layers: spec.layers.filter(Boolean).length, bytes: w.bytes, files: Object.values(ADAPTER_FILES).map((f) => join(abs, f)) });
    total += w.bytes;
    if ((i + 1) % 50 === 0 || i + 1 === count) progress(`setup: wrote ${i + 1}/${count} adapters (${(total / 2 ** 20).toFixed(0)} MiB, ${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  }
  db.close();
  const ws: Workspace = { dir, modelPath, modelKind, dataDir, adapterDir, users, totalBytes: total };
  writeFileSync(manifestFile, JSON.stringify(ws));
  return ws;
}

/** The servers' MEMLORA_CONST_WEIGHTS setting (default auto) and whether it bakes the workspace model's weights. */
export function constWeightsOf(ws: Workspace): { setting: ConstWeights; baked: boolean } {
  const setting = (process.env.MEMLORA_CONST_WEIGHTS || 'auto') as ConstWeights;
  return { setting, baked: bakesWeights(setting, 4 * parameterCount(readHfConfig(ws.modelPath))) };
}

/**
 * Zipf(1.0) over the users: rank k has weight 1/k; ranks are assigned to users in a random order drawn
 * from `rng`, and the requests' users are drawn from `draws` (default the same generator).
 */
export function zipfSampler<T>(users: readonly T[], rng: Rng, draws: Rng = rng): () => T {
  const order = [...users];
  for (let i = order.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  const cdf: number[] = [];
  let acc = 0;
  for (let k = 1; k <= order.length; k++) cdf.push((acc += 1 / k));
  return () => {
    const u = draws.next() * acc;
    let lo = 0;
    let hi = cdf.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cdf[mid] < u) lo = mid + 1;
      else hi = mid;
    }
    return order[lo];
  };
}

const WORDS = 'my headache is worse in the morning and I walk the dog every day before work while drinking coffee with friends who like hiking cooking reading music travel'.split(' ');

export function prompts(rng: Rng): string[] {
  return Array.from({ length: 64 }, () => Array.from({ length: 14 + rng.int(10) }, () => WORDS[rng.int(WORDS.length)]).join(' '));
}

/**
 * The users to warm, in an order drawn from `seed`: all of them fit a 100% cache; a random subset
 * survives in the smaller ones.
 */
export function warmOrder(userIds: readonly string[], seed: number): string[] {
  const ids = [...userIds];
  const rng = new Rng(seed + 7);
  for (let i = ids.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [ids[i], ids[j]] = [ids[j], ids[i]];
  }
  return ids;
}

/**
 * Fill an in-process engine's cache through the engine's own warming (what POST /v1/admin/cache/warm
 * runs): adapters held as served, as a running server's cache holds them after each adapter's first
 * use, so the measured seconds are the steady state (adapters loaded during a run still pay theirs).
 */
export async function preloadCache(db: Db, s: ServeServices, seed: number): Promise<void> {
  const rows = db.sqlite.prepare('SELECT user_id AS userId FROM adapter_versions WHERE active = 1 ORDER BY user_id').all() as Array<{ userId: string }>;
  const report = await s.generate!.warm(warmOrder(rows.map((r) => r.userId), seed), new AbortController().signal);
  const failed = report.results.filter((r) => r.outcome === 'failed' || r.outcome === 'no_adapter');
  if (failed.length > 0) throw new Error(`warming failed for ${failed.length} users, e.g. ${JSON.stringify(failed[0])}`);
}
