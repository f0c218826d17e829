/**
 * What a decode step with adapters costs, by how the batch's rows are grouped (issue 7's analysis):
 * batch 8 on the default model, every row with an adapter on all layers, the same step timed for
 * mixes of ranks that form 5, 3, 2 or 1 rank groups (rows-mode LoRA, row-pool.ts), interleaved so
 * machine load drifts over every variant alike. Each variant's ranks are already bucket ranks, so
 * the coarser groupings show what padding rows up to fewer buckets would cost or save.
 *
 *   npx tsx bench/rank-groups.ts [--threads N]   (0 = one per core)
 *
 * Writes bench/results/rank-groups.json.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../src/config.js';
import { Model } from '../src/model/model.js';
import { RowPool, rankBucket } from '../src/model/row-pool.js';
import { initAdapter } from '../src/lora/adapter.js';
import { loraTargets } from '../src/model/weights.js';
import { KvBatch } from '../src/model/kv.js';
const model = Model.load('models/default', { runnerOptions: { intraOpThreads: Number(process.argv[process.argv.indexOf('--threads') + 1] ?? 0) || 0 } });
const cfg = model.config;
const B = 8;
const variants: Record<string, number[]> = {
  plain: [],
  'pow2 (5 groups)': [8, 16, 32, 64, 96, 128, 16, 8],
  '{32,128} (2 groups)': [32, 32, 32, 128, 128, 128, 32, 32],
  '{16,64,128} (3 groups)': [16, 16, 64, 64, 128, 128, 16, 16],
  'single 128': Array(8).fill(128),
  'single 32': Array(8).fill(32),
};
const pools = new Map<string, RowPool | null>();
for (const [name, ranks] of Object.entries(variants)) {
  if (!ranks.length) { pools.set(name, null); continue; }
  const rp = new RowPool(cfg, { maxRows: B });
  ranks.forEach((r, i) => {
    const a = initAdapter({ layers: Array(cfg.nLayers).fill(true), n: r / 8, r: 8 }, loraTargets(cfg), 100 + i);
    for (const p of a.pairs) p.B.fill(0.001);
    rp.add(i, a);
  });
  pools.set(name, rp);
}
const prompts = Array.from({ length: B }, (_, i) => Array.from({ length: 48 }, (_, j) => (i * 7 + j * 13) % cfg.vocabSize));
const pre = await model.prefill(prompts);
const freshKv = (): KvBatch => { const kv = new KvBatch(model.kvShape, { maxLength: cfg.maxPositions }); pre.kv.forEach((k, i) => kv.add(i, k)); return kv; };
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
const med = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
const plain = med(times.get('plain')!);
const rows: Record<string, { ms: number; vsPlain: number; groups: number; paddedRankSum: number }> = {};
for (const [n, t] of times) {
  const ranks = variants[n];
  rows[n] = { ms: +med(t).toFixed(3), vsPlain: +(med(t) / plain).toFixed(3), groups: new Set(ranks.map(rankBucket)).size, paddedRankSum: ranks.reduce((a, r) => a + rankBucket(r), 0) };
  console.log(n.padEnd(26), med(t).toFixed(2), 'ms', `${(med(t) / plain).toFixed(3)}x plain`);
}
mkdirSync(join(repoRoot, 'bench', 'results'), { recursive: true });
writeFileSync(join(repoRoot, 'bench', 'results', 'rank-groups.json'), `${JSON.stringify({ command: 'npx tsx bench/rank-groups.ts', batch: B, plainMs: +plain.toFixed(3), variants: rows}, null, 2)}\n`);
await model.close();
