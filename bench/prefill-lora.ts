/**
 * What a prefill with adapters costs (issue 7's analysis): 1, 2 and 8 joiners with the mixed ranks
 * and layer sets of bench/rank-groups.ts, prompts of T tokens, on the default model; plain prefill
 * vs the unit graph (mode `rows`, row-pool.ts), interleaved so machine load drifts over both alike;
 * the mean of the fastest quarter of 40 runs of each. A lone joiner, as the engine reads it: through
 * its adapter as served (mode `single` with B^T, rank 0 on the layers it leaves alone) against the
 * unit graph and plain, each of the eight adapters in turn (per adapter the fastest of its runs,
 * then the mean over adapters). Then the cost of writing a joiner's units into the pool with its
 * adapter as stored (B) and as served (B^T).
 *
 *   npx tsx bench/prefill-lora.ts [--threads N] [--tokens T]
 *
 * Writes bench/results/prefill-lora.json.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../src/config.js';
import { Model } from '../src/model/model.js';
import { RowPool } from '../src/model/row-pool.js';
import { initAdapter, toServed } from '../src/lora/adapter.js';
import { loraTargets } from '../src/model/weights.js';
import { numberArg } from './args.js';

const model = Model.load('models/default', { runnerOptions: { intraOpThreads: numberArg('threads', 0) } });
const cfg = model.config;
const T = numberArg('tokens', 64);
const L = cfg.nLayers;
const all = Array(L).fill(true);
const half = Math.floor(L / 2);
const mix = [32, 16, 64, 8, 96, 128, 16, 8];
const sets = [all, all, Array.from({ length: L }, (_, l) => l >= half), Array.from({ length: L }, (_, l) => l < half), Array.from({ length: L }, (_, l) => l % 2 === 1), all, Array.from({ length: L }, (_, l) => l === 2), Array.from({ length: L }, (_, l) => l >= half)];
const adapters = mix.map((r, i) => {
  const a = initAdapter({ layers: sets[i], n: r / 8, r: 8 }, loraTargets(cfg), 100 + i);
  for (const p of a.pairs) p.B.fill(0.001);
  return a;
});
const prompts = Array.from({ length: 8 }, (_, i) => Array.from({ length: T }, (_, j) => (i * 7 + j * 13) % cfg.vocabSize));

type Variant = { rows: number; mode: 'plain' | 'rows' };
const variants: Variant[] = [];
for (const rows of [1, 2, 8]) for (const mode of ['plain', 'rows'] as const) variants.push({ rows, mode });
const name = (v: Variant) => `${v.rows} row${v.rows > 1 ? 's' : ''}, ${v.mode}`;
const pool = new RowPool(cfg, { maxRows: 8 });
adapters.forEach((a, i) => pool.add(i, a));
const input = (v: Variant) => (v.mode === 'plain' ? undefined : pool.input(0, v.rows));
const times = new Map<string, number[]>(variants.map((v) => [name(v), []]));
for (const v of variants) await model.prefill(prompts.slice(0, v.rows), input(v));
for (let r = 0; r < 40; r++) {
  for (const v of variants) {
    const t = performance.now();
    await model.prefill(prompts.slice(0, v.rows), input(v));
    times.get(name(v))!.push(performance.now() - t);
  }
}
// The fastest quarter's mean: the op costs without the machine's load spikes.
const med = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b).slice(0, Math.ceil(xs.length / 4));
  return s.reduce((a, b) => a + b, 0) / s.length;
};
const out: Record<string, { ms: number; vsPlain: number }> = {};
for (const v of variants) {
  const ms = med(times.get(name(v))!);
  out[name(v)] = { ms: +ms.toFixed(3), vsPlain: +(ms / med(times.get(name({ rows: v.rows, mode: 'plain' }))!)).toFixed(3) };
}
console.table(out);

// A lone joiner, each adapter in turn: plain, the unit graph, its adapter as served (the engine's path).
const served = adapters.map((a) => toServed({ spec: { layers: [], n: 1, r: 8 }, scaling: a.scaling, pairs: a.pairs.map((p) => ({ ...p, B: p.B.slice() })) }));
const alone = { plain: 0, rows: 1, served: 2 } as const;
const best: number[][][] = Object.keys(alone).map(() => adapters.map(() => []));
const lone = (k: number, how: keyof typeof alone) =>
  model.prefill([prompts[k]], how === 'plain' ? undefined : how === 'rows' ? pool.input(k, k + 1) : { adapter: served[k], everyLayer: true });
for (let k = 0; k < adapters.length; k++) for (const how of Object.keys(alone) as (keyof typeof alone)[]) await lone(k, how);
for (let r = 0; r < 6; r++) {
  for (let k = 0; k < adapters.length; k++) {
    for (const how of Object.keys(alone) as (keyof typeof alone)[]) {
      const t = performance.now();
      await lone(k, how);
      best[alone[how]][k].push(performance.now() - t);
    }
  }
}
const loneMs = best.map((perAdapter) => perAdapter.reduce((s, xs) => s + Math.min(...xs), 0) / perAdapter.length);
const loneJoiner = {
  plainMs: +loneMs[0].toFixed(3),
  rowsVsPlain: +(loneMs[1] / loneMs[0]).toFixed(3),
  servedVsPlain: +(loneMs[2] / loneMs[0]).toFixed(3),
};
console.log(`a lone joiner (mean over the ${adapters.length} adapters): unit graph ${loneJoiner.rowsVsPlain}x plain, its adapter as served ${loneJoiner.servedVsPlain}x plain (plain ${loneJoiner.plainMs} ms)`);

// Writing a joiner's units into the pool (RowPool.input after add): its adapter as stored (B [out, r]:
// transposed at the join) and as served (B^T, lora/adapter.ts toServed: block copies).
const joins: Record<string, number[]> = { stored: [], served: [] };
const writer = new RowPool(cfg, { maxRows: 8 });
let id = 0;
for (let r = 0; r < 24; r++) {
  for (const [kind, list] of [['stored', adapters], ['served', served]] as const) {
    for (const a of list) {
      writer.add(id, a);
      const t = performance.now();
      writer.input(writer.size - 1, writer.size);
      if (r > 3) joins[kind].push(performance.now() - t);
      writer.remove(id++);
    }
  }
}
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const joinWrite = { storedMs: +mean(joins.stored).toFixed(3), servedMs: +mean(joins.served).toFixed(3), meanRank: mix.reduce((a, b) => a + b, 0) / mix.length };
console.log(`writing a joiner's units (mean over the ${mix.length} adapters): as stored ${joinWrite.storedMs} ms, as served ${joinWrite.servedMs} ms`);
const dir = join(repoRoot, 'bench', 'results');
mkdirSync(dir, { recursive: true });
writeFileSync(join(dir, 'prefill-lora.json'), `${JSON.stringify({ bench: 'prefill-lora', date: new Date().toISOString(), command: `npx tsx bench/prefill-lora.ts${process.argv.slice(2).map((a) => ` ${a}`).join('')}`, tokens: T, ranks: mix, results: out, loneJoiner, joinWrite }, null, 2)}\n`);
