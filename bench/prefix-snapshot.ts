/**
 * What keeping the prefix cache across a restart costs (MEMLORA_PREFIX_CACHE_RESTORE): the time to
 * write a full cache at shutdown and to read it back at the next start, and to fingerprint the model
 * directory (done once at start).
 *
 *   npx tsx bench/prefix-snapshot.ts [--base default|gpt2-small] [--bytes 64MiB] [--tokens 256] [--rounds 3]
 *
 * The cache is filled to its budget with conversations of `--tokens` positions (random keys and
 * values) at the base's cache shape, saved to a temp directory and restored into an empty cache of
 * the same budget, `--rounds` times; medians reported, with MB/s. The fingerprint is of the real
 * models/default directory (the weights a GPT-2 small host would hash are 24× as many bytes: scale
 * it). Writes bench/results/prefix-snapshot[-gpt2-small].json.
 */
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseBytes, repoRoot } from '../src/config.js';
import type { KvShape, RowKv } from '../src/model/kv.js';
import { PrefixCache } from '../src/serve/prefix-cache.js';
import { modelFingerprint, restorePrefixSnapshot, savePrefixSnapshot } from '../src/serve/prefix-snapshot.js';
import { numberArg, stringArg } from './args.js';
import { DEFAULT_SHAPE, GPT2_SMALL_SHAPE, baseArg } from './swap-workspace.js';

const BASE = baseArg();
const BYTES = parseBytes(stringArg('bytes', '64MiB'));
const TOKENS = numberArg('tokens', 256);
const ROUNDS = numberArg('rounds', 3);
const cfg = BASE === 'gpt2-small' ? GPT2_SMALL_SHAPE : DEFAULT_SHAPE;
const shape: KvShape = { nLayers: cfg.nLayers, nKvHeads: cfg.nKvHeads, headDim: cfg.headDim };
const progress = (msg: string) => process.stderr.write(`[prefix-snapshot] ${msg}\n`);

function kvOf(length: number, seed: number): RowKv {
  const n = shape.nKvHeads * length * shape.headDim;
  const layer = (l: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(seed + l * 7 + i * 0.001));
  return { length, k: Array.from({ length: shape.nLayers }, (_, l) => layer(l)), v: Array.from({ length: shape.nLayers }, (_, l) => layer(l + 100)) };
}

const full = new PrefixCache({ maxBytes: BYTES, shape, minTokens: 1 });
const per = full.entryBytes(TOKENS);
const count = Math.floor(BYTES / per);
for (let i = 0; i < count; i++) full.store(`user-${i}`, 'base', Array.from({ length: TOKENS }, (_, t) => (t * 31 + i) % 2048), kvOf(TOKENS, i));
progress(`${BASE} shape, ${full.stats().entries} conversations of ${TOKENS} tokens, ${(full.stats().bytes / 2 ** 20).toFixed(1)} MiB of ${(BYTES / 2 ** 20).toFixed(0)} MiB`);

const model = modelFingerprint(join(repoRoot, 'models', 'default'));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const save: number[] = [];
const restore: number[] = [];
const fingerprint: number[] = [];
let fileBytes = 0;
for (let r = 0; r < ROUNDS; r++) {
  const dir = mkdtempSync(join(tmpdir(), 'memlora-prefix-snap-bench-'));
  try {
    const file = join(dir, 'prefix-cache.bin');
    let t = performance.now();
    savePrefixSnapshot(file, full, model);
    save.push(performance.now() - t);
    fileBytes = statSync(file).size;
    const back = new PrefixCache({ maxBytes: BYTES, shape, minTokens: 1 });
    t = performance.now();
    const report = restorePrefixSnapshot(file, back, model, () => true)!;
    restore.push(performance.now() - t);
    if (report.restored !== full.stats().entries) throw new Error(`restored ${report.restored} of ${full.stats().entries}`);
    t = performance.now();
    modelFingerprint(join(repoRoot, 'models', 'default'));
    fingerprint.push(performance.now() - t);
    progress(`round ${r + 1}/${ROUNDS}: save ${save.at(-1)!.toFixed(0)} ms, restore ${restore.at(-1)!.toFixed(0)} ms, fingerprint ${fingerprint.at(-1)!.toFixed(0)} ms`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
const mbps = (ms: number) => Math.round(fileBytes / 1e6 / (ms / 1000));
const weights = statSync(join(repoRoot, 'models', 'default', 'model.safetensors')).size;
const result = {
  bench: 'prefix-snapshot',
  date: new Date().toISOString(),
  base: BASE,
  budgetBytes: BYTES,
  conversations: full.stats().entries,
  tokensEach: TOKENS,
  fileBytes,
  rounds: ROUNDS,
  saveMs: Math.round(median(save)),
  saveMBps: mbps(median(save)),
  restoreMs: Math.round(median(restore)),
  restoreMBps: mbps(median(restore)),
  fingerprintMs: Math.round(median(fingerprint)),
  fingerprintBytes: weights,
};
console.log(JSON.stringify(result, null, 2));
const out = join(repoRoot, 'bench', 'results', `prefix-snapshot${BASE === 'gpt2-small' ? '-gpt2-small' : ''}.json`);
writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
progress(`wrote ${out}`);
