/**
 * What a decode step with adapters costs, by the batch's mix of adapters and the pool's unit width
 * (issue 7's analysis): batch 8 on the default model, rows-mode LoRA (row-pool.ts), the same step
 * timed for each variant, interleaved so machine load drifts over every variant alike.
 *   - plain: no adapter;
 *   - mixed ranks 8..128 on all layers, at unit widths 8, 16 and 32 (the rank granularity);
 *   - the same ranks on the layer sets of bench/swap.ts (one to six layers; rows pay only their own);
 *   - every row rank 32 on all layers, and every row rank 8 on all layers (the fixed cost of the ops).
 *
 *   npx tsx bench/rank-groups.ts [--threads N]   (0 = one per core)
 *
 * Writes bench/results/rank-groups.json.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../src/config.js';
import { Model } from '../src/model/model.js';
import { RowPool } from '../src/model/row-pool.js';
import { initAdapter } from '../src/lora/adapter.js';
import { loraTargets } from '../src/model/weights.js';
import { KvBatch } from '../src/model/kv.js';

const model = Model.load('models/default', { runnerOptions: { intraOpThreads: Number(process.argv[process.argv.indexOf('--threads') + 1] ?? 0) || 0, allowSpinning: process.argv.includes('--spin') } });
const cfg = model.config;
const B = 8;
const L = cfg.nLayers;
const all = Array(L).fill(true);
const half = Math.floor(L / 2);
const mix = [8, 16, 32, 64, 96, 128, 16, 8];
// Layer sets as bench/swap.ts draws them: all, upper half, lower half, odd layers, one layer.
const sets = [all, all, Array.from({ length: L }, (_, l) => l >= half), Array.from({ length: L }, (_, l) => l < half), Array.from({ length: L }, (_, l) => l % 2 === 1), all, Array.from({ length: L }, (_, l) => l === 2), Array.from({ length: L }, (_, l) => l >= half)];
const variants: Record<string, { ranks: number[]; layers: boolean[][]; unit: number }> = {
  plain: { ranks: [], layers: [], unit: 16 },
  'mixed ranks, all layers, W 8': { ranks: mix, layers: mix.map(() => all), unit: 8 },
  'mixed ranks, all layers, W 16': { ranks: mix, layers: mix.map(() => all), unit: 16 },
  'mixed ranks, all layers, W 32': { ranks: mix, layers: mix.map(() => all), unit: 32 },
  'mixed ranks, mixed layers, W 16': { ranks: mix, layers: sets, unit: 16 },
  'rank 32, all layers, W 16': { ranks: Array(B).fill(32), layers: mix.map(() => all), unit: 16 },
  'rank 8, all layers, W 8': { ranks: Array(B).fill(8), layers: mix.map(() => all), unit: 8 },
};
const pools = new Map<string, RowPool | null>();
for (const [name, v] of Object.entries(variants)) {
  if (!v.ranks.length) {
    pools.set(name, null);
    continue;
  }
  const rp = new RowPool(cfg, { maxRows: B, unit: v.unit });
  v.ranks.forEach((r, i) => {
    const a = initAdapter({ layers: v.layers[i], n: r / 8, r: 8 }, loraTargets(cfg), 100 + i);
    for (const p of a.pairs) p.B.fill(0.001);
    rp.add(i, a);
  });
  pools.set(name, rp);
}
const prompts = Array.from({ length: B }, (_, i) => Array.from({ length: 48 }, (_, j) => (i * 7 + j * 13) % cfg.vocabSize));
const pre = await model.prefill(prompts);
const freshKv = (): KvBatch => {
  const kv = new KvBatch(model.kvShape, { maxLength: cfg.maxPositions });
  pre.kv.forEach((k, i) => kv.add(i, k));
  return kv;
};
let kv = freshKv();
const times = new Map<string, number[]>([...pools.keys()].map((n) => [n, []]));
for (const [, rp] of pools) await model.decodeStep(kv, Array(B).fill(5), rp ? rp.input() : undefined);
for (let r = 0; r < 40; r++) {
  if (kv.length(0) > 200) kv = freshKv();
  for (const [name, rp] of pools) {
    const t = performance.now();
    await model.decodeStep(kv, Array(B).fill(5), rp ? rp.input() : undefined);
    times.get(name)!.push(performance.now() - t);
  }
}
const med = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};
const plain = med(times.get('plain')!);
const rows: Record<string, { ms: number; vsPlain: number; rankLayers: number }> = {};
for (const [n, t] of times) {
  rows[n] = { ms: +med(t).toFixed(3), vsPlain: +(med(t) / plain).toFixed(3), rankLayers: pools.get(n)?.rankLayers ?? 0 };
  console.log(n.padEnd(34), med(t).toFixed(2), 'ms', `${(med(t) / plain).toFixed(3)}x plain`, `rank-layers ${rows[n].rankLayers}`);
}
mkdirSync(join(repoRoot, 'bench', 'results'), { recursive: true });
writeFileSync(join(repoRoot, 'bench', 'results', 'rank-groups.json'), `${JSON.stringify({ command: 'npx tsx bench/rank-groups.ts', batch: B, plainMs: +plain.toFixed(3), variants: rows }, null, 2)}\n`);
await model.close();
