/**
 * Adapter load time against raw file read time (issue 7: load <= 2x raw read).
 *
 *   npx tsx bench/adapter-load.ts [--adapters 48] [--rounds 5] [--seed 1]
 *
 * Writes N adapters of realistic configurations for the default model's shape (GPT-2 style,
 * d_model 256, 6 layers, FFN 1024; n in {1,2,4,8}, r in {8,16,32,64}, random layer sets) into a temp
 * store, then times, per adapter and interleaved in shuffled order:
 *   raw        fs.promises.readFile of the same three files (the baseline)
 *   pread      open + fstat + one read per file into an exact buffer (a stricter baseline: readFile
 *              reads big files in 512 KiB chunks, one thread-pool round trip each)
 *   always     store.read with the checksum on every load
 *   once       store.read after the file's checksum was verified once (the default mode)
 *   onceSync   store.readSync, the same with blocking file calls (what the load thread runs)
 *   served     a load through WorkerAdapterLoader: the server's path (the load thread, readSync,
 *              the adapter handed back by transfer)
 *   cacheHit   AdapterCache.acquire + release of a cached adapter
 * with the page cache warm (files just written and read), and cold for raw/always/once: each file is
 * dropped from the page cache with `dd iflag=nocache count=0` (posix_fadvise DONTNEED) before each
 * timed read. A VM's host may still cache the disk, so "cold" is cold for this kernel only.
 * Prints ratios measured in this one run and writes bench/results/adapter-load.json.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { adapterBytes, initAdapter } from '../src/lora/adapter.js';
import { AdapterCache, adapterKey } from '../src/lora/cache.js';
import { ADAPTER_FILES } from '../src/lora/format.js';
import type { Rank } from '../src/lora/spec.js';
import { AdapterStore, type WrittenAdapter } from '../src/lora/store.js';
import { loraTargets } from '../src/model/weights.js';
import { WorkerAdapterLoader } from '../src/serve/loader.js';
import { Rng } from '../src/util/rng.js';
import { defaultModelConfig } from '../src/pretrain/run.js';
import { numberArg } from './args.js';

const N = numberArg('adapters', 48);
const ROUNDS = numberArg('rounds', 5);
const SEED = numberArg('seed', 1);

const config = defaultModelConfig({ vocabSize: 8192, bosId: 0, eosId: 1 });
const model = { config, name: 'memlora/default-bench' };

const now = (): number => performance.now();
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

function shuffle<T>(xs: T[], rng: Rng): T[] {
  const out = [...xs];
  for (let i = out.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

let canDrop = true;
function dropFromPageCache(files: string[]): void {
  if (!canDrop) return;
  try {
    for (const f of files) execFileSync('dd', [`if=${f}`, 'iflag=nocache', 'count=0', 'status=none']);
  } catch {
    canDrop = false;
    process.stderr.write('dd iflag=nocache failed: cold numbers are not measured\n');
  }
}

async function main(): Promise<void> {
  const rng = new Rng(SEED);
  const dir = mkdtempSync(join(tmpdir(), 'memlora-bench-adapters-'));
  const root = join(dir, 'adapters');
  const store = new AdapterStore(root, model, { verify: 'once' });
  const always = new AdapterStore(root, model, { verify: 'always' });
  const targets = loraTargets(config);
  try {
    // 1. Write N adapters of mixed configurations.
    const items: Array<WrittenAdapter & { userId: string; spec: string; weightBytes: number; files: string[] }> = [];
    let writeMs = 0;
    for (let i = 0; i < N; i++) {
      const n = [1, 2, 4, 8][rng.int(4)];
      const r = ([8, 16, 32, 64] as Rank[])[rng.int(4)];
      let layers = Array.from({ length: config.nLayers }, () => rng.next() < 0.6);
      if (!layers.some(Boolean)) {
        const only = rng.int(config.nLayers);
        layers = layers.map((_, l) => l === only);
      }
      const adapter = initAdapter({ layers, n, r }, targets, SEED * 1000 + i);
      for (const p of adapter.pairs) for (let k = 0; k < p.B.length; k++) p.B[k] = (rng.next() - 0.5) * 0.02;
      const userId = `bench-user-${i}`;
      const t0 = now();
      const w = await store.write(userId, adapter);
      writeMs += now() - t0;
      const abs = join(root, ...w.path.split('/'));
      items.push({ ...w, userId, spec: `n${n} r${r} L${layers.map(Number).join('')}`, weightBytes: adapterBytes(adapter), files: Object.values(ADAPTER_FILES).map((f) => join(abs, f)) });
      process.stdout.write(`\rwrote ${i + 1}/${N} adapters (${(items.reduce((s, x) => s + x.bytes, 0) / 2 ** 20).toFixed(0)} MiB)`);
    }
    process.stdout.write('\n');
    const totalBytes = items.reduce((s, x) => s + x.bytes, 0);

    const raw = async (it: (typeof items)[number]): Promise<void> => {
      await Promise.all(it.files.map((f) => readFile(f)));
    };
    const pread = async (it: (typeof items)[number]): Promise<void> => {
      await Promise.all(
        it.files.map(async (f) => {
          const fh = await open(f);
          try {
            const { size } = await fh.stat();
            const buf = Buffer.allocUnsafeSlow(size);
            let done = 0;
            while (done < size) {
              const { bytesRead } = await fh.read(buf, done, size - done, done);
              if (bytesRead === 0) break;
              done += bytesRead;
            }
          } finally {
            await fh.close();
          }
        }),
      );
    };
    const readOnce = async (it: (typeof items)[number]): Promise<void> => {
      await store.read(it.path, it.sha256, { userId: it.userId });
    };
    const readOnceSync = async (it: (typeof items)[number]): Promise<void> => {
      store.readSync(it.path, it.sha256, { userId: it.userId });
    };
    const loader = new WorkerAdapterLoader(root, model, 'once');
    const served = async (it: (typeof items)[number]): Promise<void> => {
      await loader.read(it.path, it.sha256, { userId: it.userId });
    };
    const readAlways = async (it: (typeof items)[number]): Promise<void> => {
      await always.read(it.path, it.sha256, { userId: it.userId });
    };
    const cache = new AdapterCache({ maxBytes: totalBytes * 2 });
    const cacheHit = async (it: (typeof items)[number]): Promise<void> => {
      (await cache.acquire(adapterKey(it.userId, 1), () => store.read(it.path, it.sha256))).release();
    };

    // Warm everything once: page cache, the once-verified memo, the cache, and the JIT.
    for (const it of items) {
      await raw(it);
      await pread(it);
      await readOnce(it);
      await readOnceSync(it);
      await served(it);
      await readAlways(it);
      await cacheHit(it);
    }

    type Method = 'raw' | 'pread' | 'always' | 'once' | 'onceSync' | 'served' | 'cacheHit';
    const warm: Record<Method, number[][]> = { raw: [], pread: [], always: [], once: [], onceSync: [], served: [], cacheHit: [] };
    const cold: Record<'raw' | 'pread' | 'always' | 'once' | 'served', number[][]> = { raw: [], pread: [], always: [], once: [], served: [] };
    for (const m of Object.keys(warm) as Method[]) warm[m] = items.map(() => []);
    for (const m of Object.keys(cold) as (keyof typeof cold)[]) cold[m] = items.map(() => []);
    const fns = { raw, pread, always: readAlways, once: readOnce, onceSync: readOnceSync, served, cacheHit };

    for (let round = 0; round < ROUNDS; round++) {
      for (const idx of shuffle(items.map((_, i) => i), rng)) {
        const it = items[idx];
        for (const m of shuffle(Object.keys(fns) as Method[], rng)) {
          const t0 = now();
          await fns[m](it);
          warm[m][idx].push(now() - t0);
        }
        for (const m of shuffle(Object.keys(cold) as (keyof typeof cold)[], rng)) {
          dropFromPageCache(it.files);
          if (!canDrop) break;
          const t0 = now();
          await fns[m](it);
          cold[m][idx].push(now() - t0);
        }
      }
      process.stdout.write(`\rround ${round + 1}/${ROUNDS}`);
    }
    process.stdout.write('\n');

    // Per adapter: the median over rounds; per method: the sum over adapters (time to load them all once).
    const total = (per: number[][]): number => per.reduce((s, xs) => s + (xs.length ? median(xs) : 0), 0);
    const buckets = [
      { name: '< 1 MiB', lo: 0, hi: 2 ** 20 },
      { name: '1-8 MiB', lo: 2 ** 20, hi: 8 * 2 ** 20 },
      { name: '>= 8 MiB', lo: 8 * 2 ** 20, hi: Infinity },
    ];
    const summarize = (per: Record<string, number[][]>, method: string) => {
      const all = total(per[method]);
      return {
        totalMs: +all.toFixed(3),
        mibPerS: +(totalBytes / 2 ** 20 / (all / 1000)).toFixed(1),
        byBucket: Object.fromEntries(
          buckets.map((b) => {
            const ids = items.flatMap((x, i) => (x.bytes >= b.lo && x.bytes < b.hi ? [i] : []));
            return [b.name, { adapters: ids.length, totalMs: +ids.reduce((s, i) => s + (per[method][i].length ? median(per[method][i]) : 0), 0).toFixed(3) }];
          }),
        ),
      };
    };
    const warmSummary = Object.fromEntries(Object.keys(warm).map((m) => [m, summarize(warm, m)]));
    const coldSummary = canDrop ? Object.fromEntries(Object.keys(cold).map((m) => [m, summarize(cold, m)])) : null;
    const ratio = (a: number, b: number): number => +(a / b).toFixed(3);
    const ratios = {
      warm: {
        onceOverRaw: ratio(warmSummary.once.totalMs, warmSummary.raw.totalMs),
        alwaysOverRaw: ratio(warmSummary.always.totalMs, warmSummary.raw.totalMs),
        onceOverPread: ratio(warmSummary.once.totalMs, warmSummary.pread.totalMs),
        alwaysOverPread: ratio(warmSummary.always.totalMs, warmSummary.pread.totalMs),
        onceSyncOverRaw: ratio(warmSummary.onceSync.totalMs, warmSummary.raw.totalMs),
        servedOverRaw: ratio(warmSummary.served.totalMs, warmSummary.raw.totalMs),
        cacheHitOverRaw: ratio(warmSummary.cacheHit.totalMs, warmSummary.raw.totalMs),
        byBucket: Object.fromEntries(
          buckets.map((b) => [
            b.name,
            {
              onceOverRaw: ratio(warmSummary.once.byBucket[b.name].totalMs, warmSummary.raw.byBucket[b.name].totalMs),
              alwaysOverRaw: ratio(warmSummary.always.byBucket[b.name].totalMs, warmSummary.raw.byBucket[b.name].totalMs),
            },
          ]),
        ),
      },
      cold: coldSummary
        ? {
            onceOverRaw: ratio(coldSummary.once.totalMs, coldSummary.raw.totalMs),
            alwaysOverRaw: ratio(coldSummary.always.totalMs, coldSummary.raw.totalMs),
            onceOverPread: ratio(coldSummary.once.totalMs, coldSummary.pread.totalMs),
            alwaysOverPread: ratio(coldSummary.always.totalMs, coldSummary.pread.totalMs),
            servedOverRaw: ratio(coldSummary.served.totalMs, coldSummary.raw.totalMs),
          }
        : null,
    };

    const sizes = items.map((x) => x.bytes).sort((a, b) => a - b);
    const result = {
      bench: 'adapter-load',
      command: `npx tsx bench/adapter-load.ts --adapters ${N} --rounds ${ROUNDS} --seed ${SEED}`,
      date: new Date().toISOString(),
      machine: { cpus: cpus().length, cpu: cpus()[0]?.model, node: process.version },
      model: { family: config.family, dModel: config.dModel, nLayers: config.nLayers, dFf: config.dFf },
      adapters: N,
      rounds: ROUNDS,
      totalBytes,
      sizeBytes: { min: sizes[0], median: median(sizes), max: sizes[sizes.length - 1] },
      writeMiBPerS: +(totalBytes / 2 ** 20 / (writeMs / 1000)).toFixed(1),
      warm: warmSummary,
      cold: coldSummary,
      ratios,
      target: 'an adapter load (store.read, verify once, the default; and served: through the load thread) <= 2x raw read',
    };
    const out = resolve(dirname(fileURLToPath(import.meta.url)), 'results', 'adapter-load.json');
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);

    const mib = (b: number): string => `${(b / 2 ** 20).toFixed(2)} MiB`;
    console.log(`${N} adapters, ${mib(totalBytes)} in all (min ${mib(sizes[0])}, median ${mib(median(sizes))}, max ${mib(sizes[sizes.length - 1])}); write ${result.writeMiBPerS} MiB/s with fsync`);
    console.log('time to load every adapter once (sum of per-adapter medians over rounds):');
    for (const [name, s] of Object.entries(warmSummary)) console.log(`  warm ${name.padEnd(9)} ${s.totalMs.toFixed(1).padStart(9)} ms  ${String(s.mibPerS).padStart(8)} MiB/s`);
    if (coldSummary) for (const [name, s] of Object.entries(coldSummary)) console.log(`  cold ${name.padEnd(9)} ${s.totalMs.toFixed(1).padStart(9)} ms  ${String(s.mibPerS).padStart(8)} MiB/s`);
    console.log(`ratios (same run): warm once/raw ${ratios.warm.onceOverRaw}x, onceSync/raw ${ratios.warm.onceSyncOverRaw}x, served/raw ${ratios.warm.servedOverRaw}x, always/raw ${ratios.warm.alwaysOverRaw}x, cache hit/raw ${ratios.warm.cacheHitOverRaw}x`);
    console.log(`  against pread: warm once ${ratios.warm.onceOverPread}x, always ${ratios.warm.alwaysOverPread}x${ratios.cold ? `; cold once ${ratios.cold.onceOverPread}x, always ${ratios.cold.alwaysOverPread}x` : ''}`);
    for (const [b, r] of Object.entries(ratios.warm.byBucket)) console.log(`  warm ${b.padEnd(9)} once/raw ${r.onceOverRaw}x, always/raw ${r.alwaysOverRaw}x`);
    if (ratios.cold) console.log(`  cold once/raw ${ratios.cold.onceOverRaw}x, served/raw ${ratios.cold.servedOverRaw}x, always/raw ${ratios.cold.alwaysOverRaw}x`);
    console.log(`wrote ${out}`);
    await loader.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
