/**
 * Generation throughput (issue 4): tokens/s for 1 and 8 concurrent sequences through batched prefill +
 * KV-cache decode, and the speed of KV-cache decode relative to full recomputation at a 256-token
 * context, measured in one run on one model.
 *
 * Model: `models/default` (or the folder given), else a random GPT-2 of the default model's shape
 * (src/pretrain/run.ts defaultModelConfig: d_model 256, 6 layers, 4 heads, FFN 1024, vocab 2048).
 *
 * Run: npx tsx bench/generate.ts [modelDir] [--tokens 128] [--steps 24] [--threads 0]
 * Writes bench/results/generate.json.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Runner } from '../src/graph/runner.js';
import type { ModelConfig } from '../src/model/config.js';
import { KvBatch } from '../src/model/kv.js';
import { Model } from '../src/model/model.js';
import { sampleToken } from '../src/model/sampling.js';
import { type Weights, expectedTensors } from '../src/model/weights.js';
import { Rng } from '../src/util/rng.js';
import { defaultModelConfig } from '../src/pretrain/run.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
function opt(name: string, fallback: number): number {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : fallback;
}
const positional = args.filter((a, i) => !a.startsWith('--') && !(i > 0 && args[i - 1].startsWith('--')));
const TOKENS = opt('tokens', 128);
const STEPS = opt('steps', 24);
const THREADS = opt('threads', 0);
const CONTEXT = 256;

const DEFAULT_SIZE: ModelConfig = defaultModelConfig({ vocabSize: 2048, bosId: 0, eosId: 0 });

function randomWeights(cfg: ModelConfig): Weights {
  const rng = new Rng(7);
  const w: Weights = new Map();
  for (const { name, shape } of expectedTensors(cfg)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const norm = /(ln_\d|ln_f)\.weight$/.test(name);
    w.set(name, { dtype: 'float32', dims: shape, data: Float32Array.from({ length: n }, () => (norm ? 1 : 0.02 * rng.normal())) });
  }
  return w;
}

function loadModel(runner: Runner): { model: Model; source: string } {
  const dir = resolve(positional[0] ?? join(root, 'models', 'default'));
  if (existsSync(join(dir, 'config.json'))) return { model: Model.load(dir, { runner }), source: dir };
  if (positional[0]) throw new Error(`no config.json in ${dir}`);
  return { model: new Model(DEFAULT_SIZE, randomWeights(DEFAULT_SIZE), { runner }), source: 'random GPT-2 of the default size (models/default not found)' };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const now = (): number => performance.now();

/** Prefill `prompts`, then `steps` decode steps with seeded sampling; times in ms. */
async function generateRun(model: Model, prompts: number[][], steps: number, seed: number): Promise<{ prefillMs: number; decodeMs: number; tokens: number }> {
  const cfg = model.config;
  const rngs = prompts.map((_, i) => new Rng(seed + i));
  const pick = (l: Float32Array, r: number): number => sampleToken(l, { temperature: 0.8, topP: 0.95 }, rngs[r]);
  const t0 = now();
  const pre = await model.prefill(prompts);
  const batch = new KvBatch(model.kvShape, { maxLength: cfg.maxPositions });
  prompts.forEach((_, i) => batch.add(i, pre.kv[i]));
  let tokens = prompts.map((_, r) => pick(pre.logits[r], r));
  const t1 = now();
  for (let s = 1; s < steps; s++) {
    const logits = await model.decodeStep(batch, tokens);
    tokens = logits.map((l, r) => pick(l, r));
  }
  return { prefillMs: t1 - t0, decodeMs: now() - t1, tokens: prompts.length * steps };
}

function prompts(cfg: ModelConfig, lengths: number[], seed: number): number[][] {
  const rng = new Rng(seed);
  return lengths.map((n) => Array.from({ length: n }, () => rng.int(cfg.vocabSize)));
}

async function main(): Promise<void> {
  const runner = new Runner({ intraOpThreads: THREADS });
  const { model, source } = loadModel(runner);
  const cfg = model.config;
  console.log(`model: ${source}`);
  console.log(`  ${cfg.family}, ${cfg.nLayers} layers, d_model ${cfg.dModel}, ${cfg.nHeads} heads, ffn ${cfg.dFf}, vocab ${cfg.vocabSize}; ORT threads ${THREADS || 'default'}`);

  // Compile every session once before timing.
  await generateRun(model, prompts(cfg, [8], 1), 3, 1);
  await generateRun(model, prompts(cfg, [8, 9, 10, 11, 12, 13, 14, 15], 1), 3, 1);

  const throughput: Record<string, { tokensPerSec: number; decodeTokensPerSec: number; prefillMs: number; decodeMs: number; tokens: number }> = {};
  for (const [label, lengths] of [
    ['1 sequence', [32]],
    ['8 sequences', [32, 12, 48, 20, 64, 8, 40, 28]],
  ] as [string, number[]][]) {
    const runs: Awaited<ReturnType<typeof generateRun>>[] = [];
    for (let rep = 0; rep < 3; rep++) runs.push(await generateRun(model, prompts(cfg, lengths, 10 + rep), TOKENS, 100 + rep));
    const best = runs.sort((a, b) => a.prefillMs + a.decodeMs - (b.prefillMs + b.decodeMs))[1]; // median of 3 by total
    throughput[label] = {
      tokensPerSec: (best.tokens / (best.prefillMs + best.decodeMs)) * 1000,
      decodeTokensPerSec: ((best.tokens - lengths.length) / best.decodeMs) * 1000,
      prefillMs: best.prefillMs,
      decodeMs: best.decodeMs,
      tokens: best.tokens,
    };
    console.log(
      `${label.padEnd(12)} ${throughput[label].tokensPerSec.toFixed(0).padStart(6)} tokens/s end to end ` +
        `(${TOKENS} tokens each; decode alone ${throughput[label].decodeTokensPerSec.toFixed(0)} tokens/s, prefill ${best.prefillMs.toFixed(1)} ms)`,
    );
  }

  // KV-cache decode vs recomputing the whole context for every token, at a 256-token context.
  const context = prompts(cfg, [CONTEXT + STEPS], 3)[0];
  const kvMs: number[] = [];
  const fullMs: number[] = [];
  const pre = await model.prefill([context.slice(0, CONTEXT)]);
  const batch = new KvBatch(model.kvShape, { maxLength: cfg.maxPositions });
  batch.add(0, pre.kv[0]);
  await model.prefill([context.slice(0, CONTEXT + 1)]); // warm the recompute path at this size
  for (let s = 0; s < STEPS; s++) {
    // Interleaved, so both paths see the same machine state.
    const t0 = now();
    await model.decodeStep(batch, [context[CONTEXT + s]]);
    const t1 = now();
    await model.prefill([context.slice(0, CONTEXT + s + 1)]);
    const t2 = now();
    kvMs.push(t1 - t0);
    fullMs.push(t2 - t1);
  }
  const ratio = median(fullMs) / median(kvMs);
  console.log(
    `context ${CONTEXT}: KV-cache decode ${median(kvMs).toFixed(2)} ms/token, full recomputation ${median(fullMs).toFixed(2)} ms/token ` +
      `-> KV cache ${ratio.toFixed(1)}x faster (target >= 5x) ${ratio >= 5 ? 'OK' : 'BELOW TARGET'}`,
  );

  const out = {
    model: source,
    config: cfg,
    threads: THREADS || 'ORT default',
    tokensPerSequence: TOKENS,
    throughput,
    kvVsRecompute: { context: CONTEXT, steps: STEPS, kvMsPerToken: median(kvMs), recomputeMsPerToken: median(fullMs), ratio, target: 5, meetsTarget: ratio >= 5 },
    samplesMs: { kv: kvMs, recompute: fullMs },
  };
  mkdirSync(join(root, 'bench', 'results'), { recursive: true });
  writeFileSync(join(root, 'bench', 'results', 'generate.json'), `${JSON.stringify(out, null, 2)}\n`);
  console.log('wrote bench/results/generate.json');
  await runner.close();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
