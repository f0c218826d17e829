/**
 * The load test of adapter swapping (issue 7).
 *
 *   npx tsx bench/swap.ts [--users 1000] [--seconds 32] [--rounds 8] [--warmup 12] [--slice-warmup 2]
 *                         [--connections 16] [--max-tokens 16] [--seed 1] [--fresh] [--skip-micro]
 *                         [--skip-threads] [--base default|gpt2-small]
 *                         [--quick]   (vanilla and 100% only, no micro benches: bench/results/swap-quick.json)
 *
 * 1,000 users, each with a stored adapter of a realistic configuration (random weights; merged rank
 * n*r from 8 to 128, layer sets from one layer to all six) written with AdapterStore plus its db row,
 * are served by the real server (startServer with the real engine, in a child process started with
 * the serving node flags, src/serve/node-flags.ts, as `npm start` does) and driven over HTTP on
 * 127.0.0.1 by autocannon with Zipf(1.0) user popularity. Phases, one server each, same build:
 *   vanilla   adapters disabled: every request served by the base model (the baseline)
 *   100%      cache sized at all adapter bytes
 *   10%, 1%   cache sized at that share of them
 *   vanilla 1 thread, 100% 1 thread   the first two again with MEMLORA_INTRA_OP_THREADS=1, against
 *             the serving default for 0 (one thread per core; --skip-threads leaves them out)
 * Every configuration's server is started first and its cache warmed through the server's own
 * POST /v1/admin/cache/warm (all users in random order, so the smaller caches start with a random
 * subset; held as served, B transposed, as after each adapter's first use). Then, against the machine's drifting speed, the servers are measured in interleaved
 * slices: `rounds` rounds in the order A B C D, D C B A, ..., each slice `seconds`/`rounds` measured
 * after `slice-warmup` seconds unmeasured (`warmup` in the first round), each round with its own draw
 * of which users are popular. Reported per phase: throughput and its
 * ratio to the baseline (targets >= 0.8 at 100%, >= 0.5 at 10%), the ratio in each round (the
 * configurations' slices of a round are adjacent: paired samples) with its mean and standard error
 * over the rounds (how far one run's ratio can be trusted on a noisy machine), tokens/s, p50/p99 latency, cache hit
 * rate, and the time of each adapter load in the server against a raw read of the same files
 * (target <= 2x), measured both inside the loaded server and in isolation. The 100% server's hit
 * curve (GET /v1/admin/cache/curve: its lookups replayed through an ideal LRU of every size) is read
 * at the 10% and 1% sizes and set beside the hit rates those servers measured, and drawn in
 * swap-hit-rate.svg.
 * Before that, in this process: the decode step with the gathered slot pool against the unit
 * pool at ranks 8..128, and ONNX Runtime with 1 vs 2 intra-op threads.
 *
 * The model is models/default when it exists, else a random GPT-2 of the default shape (d_model 256,
 * 6 layers, 4 heads, FFN 1024, vocab 2048); with --base gpt2-small, a random GPT-2 of GPT-2 small's
 * shape (see BASE), results in bench/results/swap-gpt2-small.json and swap-*-gpt2-small.svg.
 * Adapters and db are kept in a temp dir between runs (--fresh rebuilds). Writes
 * bench/results/swap.json and bench/results/swap-*.svg.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../src/config.js';
import { cacheCurveSchema, warmResultSchema } from '../src/http/schemas.js';
import { openDb } from '../src/db/client.js';
import { getActiveAdapter } from '../src/db/queries/adapters.js';
import { initAdapter } from '../src/lora/adapter.js';
import { AdapterCache, adapterKey } from '../src/lora/cache.js';
import { AdapterStore } from '../src/lora/store.js';
import { readHfConfig } from '../src/model/import.js';
import { KvBatch } from '../src/model/kv.js';
import { type LoraInput, SlotPool } from '../src/model/lora-feeds.js';
import { Model } from '../src/model/model.js';
import { RowPool } from '../src/model/row-pool.js';
import { loraTargets } from '../src/model/weights.js';
import { barChart, lineChart } from '../src/plot/svg.js';
import { type AdapterReader, WorkerAdapterLoader } from '../src/serve/loader.js';
import { SERVE_NODE_FLAGS } from '../src/serve/node-flags.js';
import { DEFAULT_SERVE_THREADS, createServeServices } from '../src/serve/services.js';
import { startServer } from '../src/server.js';
import { Rng } from '../src/util/rng.js';
import { type AutocannonResult, driveGenerate } from './http-load.js';
import { type Base, type UserInfo, type Workspace, baseArg, constWeightsOf, prepareWorkspace, prompts, warmOrder, zipfSampler } from './swap-workspace.js';
import { flag, numberArg } from './args.js';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '..');
const resultsDir = join(here, 'results');

const USERS = numberArg('users', 1000);
/** Measured seconds per configuration (in ROUNDS slices, see main). */
const SECONDS = numberArg('seconds', 32);
/** Unmeasured seconds of load before a server's first slice: its first seconds after pre-loading run slower. */
const WARMUP = numberArg('warmup', 12);
/**
 * Rounds of interleaved slices (see main); each configuration gets SECONDS / ROUNDS measured per
 * round. Each round draws which users are popular anew (the same draw for every configuration): the
 * most popular user alone gets 13% of the requests and ranks differ 16-fold, so the draw moves the
 * LoRA work of a decode step by up to 1.7x (1,166 to 1,939 rank-layers over the rounds of one run).
 * The figures are means over ROUNDS draws.
 */
const ROUNDS = numberArg('rounds', 8);
/** Unmeasured seconds of load before each slice after the first round. */
const SLICE_WARMUP = numberArg('slice-warmup', 2);
const CONNECTIONS = numberArg('connections', 16);
const MAX_TOKENS = numberArg('max-tokens', 16);
const SEED = numberArg('seed', 1);
const MAX_BATCH = 8;

const now = (): number => performance.now();
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? Number.NaN : s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const r3 = (x: number): number => Math.round(x * 1000) / 1000;
const progress = (line: string): void => void process.stderr.write(`${line}\n`);

/** `--base gpt2-small`: GPT-2 small's shape in place of the default model (swap-workspace.ts GPT2_SMALL_SHAPE). */
const BASE: Base = baseArg();
/** Suffix of the result files: none for the default model. */
const RESULT_SUFFIX = BASE === 'default' ? '' : `-${BASE}`;

// ---------------------------------------------------------------------------------------------
// In-process micro benchmarks: pool layout and threads

async function decodeSteps(model: Model, variants: Array<[string, () => LoraInput | undefined]>, rounds: number): Promise<Map<string, number>> {
  const B = MAX_BATCH;
  const prompts = Array.from({ length: B }, (_, i) => Array.from({ length: 48 }, (_, j) => (i * 7 + j * 13) % model.config.vocabSize));
  const pre = await model.prefill(prompts);
  const times = new Map<string, number[]>(variants.map(([n]) => [n, []]));
  const fresh = (): KvBatch => {
    const kv = new KvBatch(model.kvShape, { maxLength: model.config.maxPositions });
    pre.kv.forEach((k, i) => kv.add(i, k));
    return kv;
  };
  let kv = fresh();
  for (const [, lora] of variants) await model.decodeStep(kv, Array(B).fill(5), lora()); // compile
  for (let r = 0; r < rounds; r++) {
    if (kv.length(0) > 200) kv = fresh();
    // Interleaved, so machine load drifts over every variant alike.
    for (const [name, lora] of variants) {
      const t = now();
      await model.decodeStep(kv, Array(B).fill(5), lora());
      times.get(name)!.push(now() - t);
    }
  }
  return new Map([...times].map(([n, t]) => [n, median(t)]));
}

async function microBenches(ws: Workspace): Promise<Record<string, unknown>> {
  const model = Model.load(ws.modelPath, { runnerOptions: { intraOpThreads: 1 } });
  const cfg = model.config;
  const all = Array.from({ length: cfg.nLayers }, (_, l) => l);
  const variants: Array<[string, () => LoraInput | undefined]> = [['plain', () => undefined]];
  for (const pr of [8, 32, 64, 128]) {
    const adapters = Array.from({ length: MAX_BATCH }, (_, i) => {
      const a = initAdapter({ layers: all.map(() => true), n: pr / 8, r: 8 }, loraTargets(cfg), 500 + i);
      for (const p of a.pairs) p.B.fill(0.001);
      return a;
    });
    const slots = new SlotPool(cfg, 2 * MAX_BATCH, pr);
    adapters.forEach((a, i) => slots.set(i + 1, a));
    const rows = new RowPool(cfg, { maxRows: MAX_BATCH });
    adapters.forEach((a, i) => rows.add(i, a));
    variants.push([`gather r${pr}`, () => ({ pool: slots, slots: adapters.map((_, i) => i + 1) })]);
    variants.push([`rows r${pr}`, () => rows.input()]);
  }
  progress('micro: decode step, batch 8, gathered slot pool vs unit pool (interleaved)...');
  const layout = await decodeSteps(model, variants, 25);
  const plain = layout.get('plain')!;
  const pool: Record<string, unknown> = { batch: MAX_BATCH, plainMs: r3(plain) };
  for (const pr of [8, 32, 64, 128]) {
    pool[`rank${pr}`] = {
      gatherMs: r3(layout.get(`gather r${pr}`)!),
      rowsMs: r3(layout.get(`rows r${pr}`)!),
      gatherVsPlain: r3(layout.get(`gather r${pr}`)! / plain),
      rowsVsPlain: r3(layout.get(`rows r${pr}`)! / plain),
    };
  }
  await model.close();

  progress('micro: decode step with 1 vs 2 ONNX Runtime intra-op threads (interleaved)...');
  const one = Model.load(ws.modelPath, { runnerOptions: { intraOpThreads: 1 } });
  const two = new Model(one.config, weightsOf(one), { runnerOptions: { intraOpThreads: 2 } });
  const rowsOne = new RowPool(cfg, { maxRows: MAX_BATCH });
  for (let i = 0; i < MAX_BATCH; i++) {
    const a = initAdapter({ layers: all.map(() => true), n: 4, r: 8 }, loraTargets(cfg), 900 + i);
    rowsOne.add(i, a);
  }
  const t1: number[] = [];
  const t2: number[] = [];
  for (let round = 0; round < 3; round++) {
    const a = await decodeSteps(one, [['plain', () => undefined], ['r32', () => rowsOne.input()]], 15);
    const b = await decodeSteps(two, [['plain', () => undefined], ['r32', () => rowsOne.input()]], 15);
    t1.push(a.get('plain')!, a.get('r32')!);
    t2.push(b.get('plain')!, b.get('r32')!);
  }
  await one.close();
  await two.close();
  const threads = { oneThreadMs: r3(median(t1)), twoThreadsMs: r3(median(t2)), twoVsOne: r3(median(t2) / median(t1)) };
  return { pool, threads };
}

/** The base weights of a loaded model, for a second Model with other runner options (no copy). */
function weightsOf(model: Model): Map<string, { dtype: 'float32'; dims: number[]; data: Float32Array }> {
  const w = new Map<string, { dtype: 'float32'; dims: number[]; data: Float32Array }>();
  for (const [name, t] of Object.entries(model.baseFeeds())) {
    if (name.startsWith('rope.')) continue;
    w.set(name, { dtype: 'float32', dims: [...t.dims], data: t.data as Float32Array });
  }
  return w;
}

// ---------------------------------------------------------------------------------------------
// Adapter load against raw read, in isolation

async function rawRead(files: string[]): Promise<number> {
  const t = now();
  await Promise.all(files.map((f) => readFile(f)));
  return now() - t;
}

async function isolatedLoads(ws: Workspace, rng: Rng): Promise<Record<string, unknown>> {
  const cfg = readHfConfig(ws.modelPath);
  const store = new AdapterStore(ws.adapterDir, { config: cfg, name: basename(ws.modelPath) });
  const db = openDb(join(ws.dataDir, 'memlora.db'), { readonly: true });
  const sample = Array.from({ length: 60 }, () => ws.users[rng.int(ws.users.length)]);
  const worker = new WorkerAdapterLoader(ws.adapterDir, { config: cfg, name: basename(ws.modelPath) });
  const raw: number[] = [];
  const first: number[] = [];
  const later: number[] = [];
  const onThread: number[] = [];
  let bytes = 0;
  for (const u of sample) {
    const row = getActiveAdapter(db, u.id)!;
    const cache = new AdapterCache({ maxBytes: 0 });
    const load = async (reader: AdapterReader): Promise<number> => {
      const t = now();
      const lease = await cache.acquire(adapterKey(u.id, row.version), () => reader.read(row.filePath, row.sha256, { userId: u.id }));
      lease.release();
      return now() - t;
    };
    await rawRead(u.files); // warm this adapter's pages like the others
    raw.push(await rawRead(u.files));
    first.push(await load(worker)); // the load thread verifies the checksum on its first load of a file
    later.push(await load(worker)); // verified once: no hash
    await load(store); // this thread's store verifies its first load too
    onThread.push(await load(store)); // the same on this thread (no thread hop)
    raw.push(await rawRead(u.files));
    bytes += u.bytes;
  }
  db.close();
  await worker.close();
  const mean = (xs: number[]): number => xs.reduce((s, x) => s + x, 0) / xs.length;
  const rawMean = mean(raw);
  return {
    adapters: sample.length,
    meanMiB: r3(bytes / sample.length / 2 ** 20),
    rawMs: r3(rawMean),
    firstLoadMs: r3(mean(first)),
    loadMs: r3(mean(later)),
    sameThreadLoadMs: r3(mean(onThread)),
    firstLoadVsRaw: r3(mean(first) / rawMean),
    loadVsRaw: r3(mean(later) / rawMean),
    sameThreadLoadVsRaw: r3(mean(onThread) / rawMean),
  };
}

// ---------------------------------------------------------------------------------------------
// The server, in a child process

const BENCH_ADMIN_TOKEN = 'bench-admin-token-0123456789';

interface ServerChild {
  proc: ChildProcess;
  url: string;
  exited: Promise<void>;
}

async function startChild(ws: Workspace, phase: { cacheBytes: number; adapters: boolean; threads: number }, loadsFile: string): Promise<ServerChild> {
  const proc = spawn(process.execPath, [...SERVE_NODE_FLAGS, '--import', 'tsx', fileURLToPath(import.meta.url), '--serve'], {
    cwd: repo,
    env: {
      ...process.env,
      MEMLORA_PORT: '0',
      MEMLORA_HOST: '127.0.0.1',
      MEMLORA_DATA_DIR: ws.dataDir,
      MEMLORA_ADAPTER_DIR: ws.adapterDir,
      MEMLORA_MODEL_PATH: ws.modelPath,
      MEMLORA_CACHE_BYTES: String(Math.max(0, Math.floor(phase.cacheBytes))),
      // The servers share the workspace's data dir: no snapshot written by one and restored by another.
      MEMLORA_CACHE_RESTORE: 'off',
      // Whole prompts, as in every run before prefix caching: the bench draws from 64 shared prompts,
      // so popular users would repeat whole prompts and skip their prefills (bench/prefix.ts measures that).
      MEMLORA_PREFIX_CACHE_BYTES: '0',
      MEMLORA_MAX_BATCH: String(MAX_BATCH),
      MEMLORA_MAX_QUEUE: '256',
      MEMLORA_INTRA_OP_THREADS: String(phase.threads),
      MEMLORA_ADMIN_TOKEN: BENCH_ADMIN_TOKEN,
      BENCH_ADAPTERS: phase.adapters ? '1' : '0',
      BENCH_LOADS_FILE: loadsFile,
      BENCH_SEED: String(SEED),
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const url = await new Promise<string>((resolveUrl, reject) => {
    let buf = '';
    proc.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = /BENCH_URL (\S+)/.exec(buf);
      if (m) resolveUrl(m[1]);
    });
    proc.once('exit', (code) => reject(new Error(`bench server exited early (${code})`)));
  });
  return { proc, url, exited };
}

/** The child: the real server and engine, its cache pre-loaded, adapter loads timed and written out at exit. */
async function serveChild(): Promise<void> {
  const adapters = process.env.BENCH_ADAPTERS !== '0';
  const loads: Array<{ path: string; ms: number }> = [];
  let recording = false;
  const quiet = {
    info() {},
    warn(msg: string, f?: Record<string, unknown>) {
      process.stderr.write(`bench server warn: ${msg} ${JSON.stringify(f ?? {})}\n`);
    },
    error(msg: string, f?: Record<string, unknown>) {
      process.stderr.write(`bench server error: ${msg} ${JSON.stringify(f ?? {})}\n`);
    },
  };
  const config = loadConfig();
  const server = await startServer(config, {
    logger: quiet,
    handleSignals: false,
    services: async (ctx) => {
      const s = await createServeServices(ctx, { adapters, consistency: false });
      if (!s) throw new Error(`no model at ${config.modelPath}`);
      if (!(await s.loaded)) throw new Error('model failed to load');
      // Time every cache miss as the server serves it: on the load thread.
      const reader = s.reader!;
      const read = reader.read.bind(reader);
      reader.read = async (path, sha, opts) => {
        const t = now();
        const a = await read(path, sha, opts);
        if (recording) loads.push({ path, ms: now() - t });
        return a;
      };
      return { generate: s.generate, adapterFiles: s.adapterFiles };
    },
  });
  // The parent warms the cache through POST /v1/admin/cache/warm, then says when to start timing loads.
  process.once('SIGUSR2', () => {
    recording = true;
    process.stdout.write('BENCH_RECORDING\n');
  });
  process.stdout.write(`BENCH_URL ${server.url}\n`);
  process.once('SIGTERM', () => {
    void server.close().then(() => {
      if (process.env.BENCH_LOADS_FILE) writeFileSync(process.env.BENCH_LOADS_FILE, JSON.stringify(loads));
      process.exit(0);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Load generation

const drive = (url: string, seconds: number, sample: () => UserInfo, texts: string[], rng: Rng): Promise<AutocannonResult> =>
  driveGenerate({ url, connections: CONNECTIONS, seconds, maxTokens: MAX_TOKENS, user: () => sample().id, prompts: texts, rng });

/** Values of the metric lines of one scrape, by the full series name. */
async function scrape(url: string): Promise<Map<string, number>> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

const delta = (a: Map<string, number>, b: Map<string, number>, name: string): number => (b.get(name) ?? 0) - (a.get(name) ?? 0);

function sumMatching(m: Map<string, number>, prefix: string): number {
  let s = 0;
  for (const [k, v] of m) if (k.startsWith(prefix)) s += v;
  return s;
}

interface PhaseResult {
  name: string;
  cacheShare: number | null;
  threads: number;
  segments: number;
  rpsBySegment: number[];
  /** LoRA work per decode step in each segment (its round's popularity draw). */
  rankLayersBySegment: number[];
  /** The most the idle servers used together while one of this phase's slices was measured, in cores. */
  idleServersCpuMax: number | null;
  meanStepMs: number;
  meanPrefillMs: number;
  /** Requests per prefill call (joiners prefilled together). */
  rowsPerPrefill: number;
  /** Share of the measured time the loop spent in decode steps and in prefills. */
  stepShare: number;
  prefillShare: number;
  cacheBytes: number;
  requests: number;
  rps: number;
  tokensPerS: number;
  p50Ms: number;
  p99Ms: number;
  meanMs: number;
  errors: number;
  non2xx: number;
  hitRate: number | null;
  loads: number;
  evictions: number;
  meanBatchRows: number;
  /** LoRA work per decode step: the sum over layers of the rows' ranks rounded up to the unit. */
  meanRankLayers: number;
  unitMovesPerStep: number;
  loadInServerMs: number | null;
  rawOfSameMs: number | null;
  loadVsRawInServer: number | null;
}

interface PhaseConfig {
  name: string;
  /** Share of all adapter bytes the cache holds; null: adapters disabled (the baseline). */
  cacheShare: number | null;
  /** MEMLORA_INTRA_OP_THREADS (0: the serving default). */
  threads: number;
}

/** One measured slice of load on a configuration's server (after an unmeasured warm-up). */
interface Segment {
  duration: number;
  ok: number;
  errors: number;
  non2xx: number;
  p50: number;
  p99: number;
  mean: number;
  d: (name: string) => number;
  tokens: number;
  /** Cores the idle servers used, together, while this slice was measured (null: not measured). */
  idleCpu: number | null;
}

const SERIES = [
  'memlora_adapter_cache_hits_total',
  'memlora_adapter_cache_misses_total',
  'memlora_adapter_cache_loads_total',
  'memlora_adapter_cache_evictions_total',
  'memlora_generate_batch_rows_sum',
  'memlora_generate_batch_rows_count',
  'memlora_generate_step_seconds_sum',
  'memlora_generate_prefill_seconds_sum',
  'memlora_generate_prefill_seconds_count',
  'memlora_generate_pool_rank_layers_sum',
  'memlora_generate_pool_unit_moves_total',
];

/** A configuration's server, started once and measured in slices. */
interface PhaseServer {
  cfg: PhaseConfig;
  child: ServerChild;
  loadsFile: string;
}

async function startPhase(ws: Workspace, cfg: PhaseConfig): Promise<PhaseServer> {
  const cacheBytes = cfg.cacheShare === null ? ws.totalBytes : ws.totalBytes * cfg.cacheShare;
  const loadsFile = join(ws.dir, `loads-${cfg.name.replace(/[^a-z0-9]+/gi, '_')}.json`);
  rmSync(loadsFile, { force: true });
  const t0 = now();
  const child = await startChild(ws, { cacheBytes, adapters: cfg.cacheShare !== null, threads: cfg.threads }, loadsFile);
  let warmed = '';
  if (cfg.cacheShare !== null) {
    const t1 = now();
    const counts = await warmOverHttp(child, warmOrder(ws.users.map((u) => u.id), SEED));
    warmed = `; warmed over HTTP in ${((now() - t1) / 1000).toFixed(1)} s (${counts.loaded} loaded, ${counts.resident} resident)`;
  }
  let said = '';
  const recording = new Promise<void>((r) => child.proc.stdout!.on('data', (d: Buffer) => (said += d.toString()).includes('BENCH_RECORDING') && r()));
  child.proc.kill('SIGUSR2');
  await recording;
  progress(`${cfg.name}: server ready in ${((now() - t0) / 1000).toFixed(1)} s, cache ${(cacheBytes / 2 ** 20).toFixed(0)} MiB${warmed}`);
  return { cfg, child, loadsFile };
}

/**
 * Fill a server's cache through POST /v1/admin/cache/warm, in the given order (everything at 100%, a
 * random subset survives in the smaller caches), 1000 users a call (the route's limit).
 */
async function warmOverHttp(child: ServerChild, userIds: string[]): Promise<{ loaded: number; resident: number }> {
  // Resident as each call reported it (with more than 1000 users a later call may evict an earlier one's).
  let loaded = 0;
  const resident = new Set<string>();
  for (let i = 0; i < userIds.length; i += 1000) {
    const res = await fetch(`${child.url}/v1/admin/cache/warm`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${BENCH_ADMIN_TOKEN}` },
      body: JSON.stringify({ userIds: userIds.slice(i, i + 1000) }),
    });
    if (res.status !== 200) throw new Error(`cache warm answered ${res.status}: ${await res.text()}`);
    const body = warmResultSchema.parse(await res.json());
    if (body.counts.failed + body.counts.no_adapter + body.counts.unknown_user > 0) throw new Error(`cache warm: ${JSON.stringify(body.counts)}`);
    loaded += body.counts.loaded;
    for (const r of body.results) if (r.resident) resident.add(r.userId);
  }
  return { loaded, resident: resident.size };
}

/**
 * The 100% server's hit curve (GET /v1/admin/cache/curve: its lookups over every slice, warming not
 * counted), read at the smaller caches' sizes: what an ideal LRU of that size would have hit on the
 * same traffic, to set beside the hit rates those servers measured.
 */
async function curveOf(srv: PhaseServer, ws: Workspace): Promise<{ lookups: number; coldLookups: number; predicted: Record<string, number | null>; points: Array<{ bytes: number; hitRate: number }> }> {
  const res = await fetch(`${srv.child.url}/v1/admin/cache/curve`, { headers: { authorization: `Bearer ${BENCH_ADMIN_TOKEN}` } });
  if (res.status !== 200) throw new Error(`cache curve answered ${res.status}: ${await res.text()}`);
  const c = cacheCurveSchema.parse(await res.json());
  const at = (bytes: number): number | null => (c.lookups === 0 ? null : r3(c.points.filter((p) => p.bytes <= bytes).at(-1)?.hitRate ?? 0));
  return { lookups: c.lookups, coldLookups: c.coldLookups, predicted: { '10%': at(0.1 * ws.totalBytes), '1%': at(0.01 * ws.totalBytes) }, points: c.points };
}

/** CPU seconds (user + system) a process has used, from /proc (null where there is none). */
function cpuSeconds(pid: number | undefined): number | null {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
  } catch {
    return null;
  }
}

/**
 * `warmup` seconds of load unmeasured, then `seconds` measured (counters scraped around them). The
 * other servers wait idle meanwhile: their CPU use over the measured seconds is reported, as a check
 * that they do not take the cores from the one measured.
 */
async function slice(ws: Workspace, srv: PhaseServer, others: PhaseServer[], seconds: number, warmup: number, round: number): Promise<Segment> {
  const rng = new Rng(SEED * 31 + 5 + round); // the same request stream for every configuration in a round
  const sample = zipfSampler(ws.users, rng);
  const texts = prompts(rng);
  await drive(srv.child.url, warmup, sample, texts, rng);
  const idle0 = others.map((o) => cpuSeconds(o.child.proc.pid));
  const before = await scrape(srv.child.url);
  const res = await drive(srv.child.url, seconds, sample, texts, rng);
  const after = await scrape(srv.child.url);
  const idle1 = others.map((o) => cpuSeconds(o.child.proc.pid));
  const idleCpu = others.length === 0 || idle0.some((c) => c === null) ? null : idle1.reduce<number>((a, c, i) => a + (c! - idle0[i]!), 0) / res.duration;
  const deltas = new Map(SERIES.map((n) => [n, delta(before, after, n)]));
  return {
    duration: res.duration,
    ok: res.statusCodeStats['200']?.count ?? 0,
    errors: res.errors,
    non2xx: res.non2xx,
    p50: res.latency.p50,
    p99: res.latency.p99,
    mean: res.latency.average,
    d: (n) => deltas.get(n) ?? 0,
    tokens: sumMatching(after, 'memlora_generate_tokens_total') - sumMatching(before, 'memlora_generate_tokens_total'),
    idleCpu,
  };
}

/** Stop a configuration's server; the adapter loads it timed (written at exit). */
async function stopPhase(srv: PhaseServer): Promise<Array<{ path: string; ms: number }>> {
  const { proc, exited } = srv.child;
  if (proc.exitCode === null) {
    proc.kill('SIGTERM');
    const killed = setTimeout(() => proc.kill('SIGKILL'), 20_000);
    await exited;
    clearTimeout(killed);
  }
  return existsSync(srv.loadsFile) ? (JSON.parse(readFileSync(srv.loadsFile, 'utf8')) as Array<{ path: string; ms: number }>) : [];
}

/** A configuration's segments together: counts summed, latency percentiles averaged over segments. */
function merge(ws: Workspace, cfg: PhaseConfig, segs: Segment[], loads: Array<{ path: string; ms: number }>, rawMsByPath: Map<string, number>): PhaseResult {
  const sum = (f: (s: Segment) => number): number => segs.reduce((a, s) => a + f(s), 0);
  const d = (n: string): number => sum((s) => s.d(n));
  const duration = sum((s) => s.duration);
  const steps = Math.max(1, d('memlora_generate_batch_rows_count'));
  const hits = d('memlora_adapter_cache_hits_total');
  const misses = d('memlora_adapter_cache_misses_total');
  const measured = loads.filter((l) => rawMsByPath.has(l.path));
  const loadMs = measured.reduce((a, l) => a + l.ms, 0);
  const rawMs = measured.reduce((a, l) => a + rawMsByPath.get(l.path)!, 0);
  return {
    name: cfg.name,
    cacheShare: cfg.cacheShare,
    threads: cfg.threads || DEFAULT_SERVE_THREADS || cpus().length,
    cacheBytes: Math.floor(cfg.cacheShare === null ? ws.totalBytes : ws.totalBytes * cfg.cacheShare),
    segments: segs.length,
    requests: sum((s) => s.ok),
    rps: r3(sum((s) => s.ok) / duration),
    rpsBySegment: segs.map((s) => r3(s.ok / s.duration)),
    rankLayersBySegment: segs.map((s) => r3(s.d('memlora_generate_pool_rank_layers_sum') / Math.max(1, s.d('memlora_generate_batch_rows_count')))),
    idleServersCpuMax: segs.some((s) => s.idleCpu === null) ? null : r3(Math.max(...segs.map((s) => s.idleCpu!))),
    tokensPerS: r3(sum((s) => s.tokens) / duration),
    p50Ms: r3(sum((s) => s.p50) / segs.length),
    p99Ms: r3(sum((s) => s.p99) / segs.length),
    meanMs: r3(sum((s) => s.mean) / segs.length),
    errors: sum((s) => s.errors),
    non2xx: sum((s) => s.non2xx),
    hitRate: cfg.cacheShare === null || hits + misses === 0 ? null : r3(hits / (hits + misses)),
    loads: d('memlora_adapter_cache_loads_total'),
    evictions: d('memlora_adapter_cache_evictions_total'),
    meanBatchRows: r3(d('memlora_generate_batch_rows_sum') / steps),
    meanStepMs: r3((1000 * d('memlora_generate_step_seconds_sum')) / steps),
    meanPrefillMs: r3((1000 * d('memlora_generate_prefill_seconds_sum')) / Math.max(1, d('memlora_generate_prefill_seconds_count'))),
    rowsPerPrefill: r3(sum((s) => s.ok) / Math.max(1, d('memlora_generate_prefill_seconds_count'))),
    stepShare: r3(d('memlora_generate_step_seconds_sum') / duration),
    prefillShare: r3(d('memlora_generate_prefill_seconds_sum') / duration),
    meanRankLayers: r3(d('memlora_generate_pool_rank_layers_sum') / steps),
    unitMovesPerStep: r3(d('memlora_generate_pool_unit_moves_total') / steps),
    loadInServerMs: measured.length ? r3(loadMs / measured.length) : null,
    rawOfSameMs: measured.length ? r3(rawMs / measured.length) : null,
    loadVsRawInServer: measured.length ? r3(loadMs / rawMs) : null,
  };
}

// ---------------------------------------------------------------------------------------------

/** The servers' MEMLORA_CONST_WEIGHTS setting and whether it bakes this model's weights (model.ts, Model.constWeights). */
async function main(): Promise<void> {
  const started = now();
  const load0 = loadavg()[0];
  const ws = await prepareWorkspace({ users: USERS, seed: SEED, base: BASE, fresh: flag('fresh') });
  progress(`model: ${ws.modelKind}`);
  const rng = new Rng(SEED + 1);
  const quick = flag('quick');
  const micro = flag('skip-micro') || quick ? null : await microBenches(ws);
  if (micro) progress(`micro: ${JSON.stringify(micro)}`);

  progress('loads: adapter load (store.read through the cache) vs raw read of the same files, in isolation...');
  const isolated = await isolatedLoads(ws, rng);
  progress(`loads: ${JSON.stringify(isolated)}`);
  // Raw read time of every adapter, warm (as in the server, which pre-loaded them all), for the in-server comparison.
  const rawMsByPath = new Map<string, number>();
  for (const u of ws.users) {
    await rawRead(u.files);
    const rel = u.files[0].slice(ws.adapterDir.length + 1).split('/').slice(0, 2).join('/');
    rawMsByPath.set(rel, median([await rawRead(u.files), await rawRead(u.files)]));
  }

  const plan: PhaseConfig[] = [
    { name: 'vanilla', cacheShare: null, threads: 0 },
    { name: '100%', cacheShare: 1, threads: 0 },
    { name: '10%', cacheShare: 0.1, threads: 0 },
    { name: '1%', cacheShare: 0.01, threads: 0 },
  ].slice(0, quick ? 2 : 4);
  // The serving default for MEMLORA_INTRA_OP_THREADS=0 (one thread per core), checked under this load against one thread.
  if (!flag('skip-threads') && !quick) plan.push({ name: 'vanilla 1 thread', cacheShare: null, threads: 1 }, { name: '100% 1 thread', cacheShare: 1, threads: 1 });
  // The machine's speed drifts by more than the effects measured here (other tenants' jobs): every
  // configuration's server is started first (each pre-loads its cache), then all are measured in
  // interleaved slices, `rounds` rounds in the order A B C D, D C B A, ..., each slice after a short
  // unmeasured warm-up, so that a configuration and its baseline are measured seconds apart and a
  // drift weighs on all alike. The idle servers' CPU use is measured and reported per slice.
  const segs = new Map<string, Segment[]>(plan.map((c) => [c.name, []]));
  let curve: Awaited<ReturnType<typeof curveOf>> | null = null;
  const servers: PhaseServer[] = [];
  const loads = new Map<string, Array<{ path: string; ms: number }>>();
  try {
    for (const cfg of plan) servers.push(await startPhase(ws, cfg));
    const perSlice = Math.max(1, Math.round(SECONDS / ROUNDS));
    progress(`measuring: ${ROUNDS} rounds of ${plan.length} slices, ${perSlice} s measured each after ${SLICE_WARMUP} s of warm-up (${WARMUP} s in the first round)`);
    for (let round = 1; round <= ROUNDS; round++) {
      for (const srv of round % 2 === 1 ? servers : [...servers].reverse()) {
        const seg = await slice(ws, srv, servers.filter((o) => o !== srv), perSlice, round === 1 ? WARMUP : SLICE_WARMUP, round);
        segs.get(srv.cfg.name)!.push(seg);
        progress(`${srv.cfg.name} (round ${round}): ${r3(seg.ok / seg.duration)} req/s, p50 ${seg.p50} ms, p99 ${seg.p99} ms, errors ${seg.errors + seg.non2xx}, idle servers ${seg.idleCpu === null ? '?' : `${(100 * seg.idleCpu).toFixed(1)}% of a core`}`);
      }
    }
    curve = await curveOf(servers.find((s) => s.cfg.cacheShare === 1 && s.cfg.threads === 0)!, ws);
  } finally {
    for (const srv of servers) loads.set(srv.cfg.name, await stopPhase(srv));
  }
  const phases = plan.map((c) => merge(ws, c, segs.get(c.name)!, loads.get(c.name) ?? [], rawMsByPath));
  const base = phases[0];
  const table = phases.map((p) => {
    const baseline = p.threads === base.threads ? base : phases.find((q) => q.cacheShare === null && q.threads === p.threads)!;
    // Each round measures every configuration in adjacent slices: the per-round ratios are paired
    // samples, and their spread says how far one run's ratio can be trusted on this machine.
    const byRound = p.rpsBySegment.map((r, i) => r / baseline.rpsBySegment[i]);
    const mean = byRound.reduce((a, b) => a + b, 0) / byRound.length;
    const sd = Math.sqrt(byRound.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, byRound.length - 1));
    return {
      ...p,
      throughputRatio: r3(p.rps / baseline.rps),
      tokensRatio: r3(p.tokensPerS / baseline.tokensPerS),
      ratioByRound: byRound.map(r3),
      ratioRoundsMean: r3(mean),
      ratioRoundsSe: r3(sd / Math.sqrt(byRound.length)),
    };
  });

  const ranks = ws.users.map((u) => u.rank);
  const result = {
    bench: 'swap',
    date: new Date().toISOString(),
    command: `${process.env.MEMLORA_CONST_WEIGHTS ? `MEMLORA_CONST_WEIGHTS=${process.env.MEMLORA_CONST_WEIGHTS} ` : ''}npx tsx bench/swap.ts ${process.argv.slice(2).join(' ')}`.trim(),
    /** The servers' MEMLORA_CONST_WEIGHTS (inherited from this process's environment; unset: the default, auto) and whether it baked this model's weights. */
    constWeights: constWeightsOf(ws),
    machine: { cpus: cpus().length, loadAvgAtStart: r3(load0), loadAvgAtEnd: r3(loadavg()[0]) },
    model: ws.modelKind,
    base: BASE,
    setup: {
      users: ws.users.length,
      totalAdapterMiB: r3(ws.totalBytes / 2 ** 20),
      meanAdapterMiB: r3(ws.totalBytes / ws.users.length / 2 ** 20),
      ranks: Object.fromEntries([...new Set(ranks)].sort((a, b) => a - b).map((r) => [r, ranks.filter((x) => x === r).length])),
      meanLayers: r3(ws.users.reduce((s, u) => s + u.layers, 0) / ws.users.length),
      zipfExponent: 1,
      connections: CONNECTIONS,
      maxBatch: MAX_BATCH,
      maxTokens: MAX_TOKENS,
      warmupS: WARMUP,
      measuredS: SECONDS,
    },
    micro,
    adapterLoad: { isolated },
    phases: table,
    /** The 100% server's hit curve read at the 10% and 1% sizes (an ideal LRU on the same traffic), beside the hit rates measured there. */
    hitCurve: curve,
    targets: {
      throughputRatioAt100: { target: 0.8, got: table[1].throughputRatio },
      throughputRatioAt10: quick ? null : { target: 0.5, got: table[2].throughputRatio },
      loadVsRawIsolated: { target: 2, got: isolated.loadVsRaw },
    },
    threadsUnderLoad: flag('skip-threads') || quick
      ? null
      : {
          vanillaDefaultVsOne: r3(table[0].rps / table[4].rps),
          injectedDefaultVsOne: r3(table[1].rps / table[5].rps),
        },
    totalSeconds: r3((now() - started) / 1000),
  };
  mkdirSync(resultsDir, { recursive: true });
  writeFileSync(join(resultsDir, `${quick ? 'swap-quick' : 'swap'}${RESULT_SUFFIX}.json`), `${JSON.stringify(result, null, 2)}\n`);
  if (quick) {
    for (const p of table) console.log(`${p.name}: ${p.rps} req/s, ratio ${p.throughputRatio}, step ${p.meanStepMs} ms (${p.stepShare}), prefill ${p.meanPrefillMs} ms x ${p.rowsPerPrefill} rows (${p.prefillShare}), p50 ${p.p50Ms} p99 ${p.p99Ms}`);
    return;
  }

  const cached = table.filter((p) => p.cacheShare !== null && p.threads === base.threads);
  const x = (p: PhaseResult): number => (p.cacheShare ?? 1) * 100;
  writeFileSync(
    join(resultsDir, `swap-latency${RESULT_SUFFIX}.svg`),
    lineChart({
      title: `Latency vs adapter cache size (${ws.users.length} users, Zipf 1.0, ${CONNECTIONS} connections)`,
      x: { label: 'cache size, % of all adapter bytes', log: true },
      y: { label: 'latency, ms', min: 0 },
      markers: true,
      series: [
        { name: 'p50', points: cached.map((p) => [x(p), p.p50Ms]) },
        { name: 'p99', points: cached.map((p) => [x(p), p.p99Ms]) },
        { name: 'vanilla p50', points: cached.map((p) => [x(p), base.p50Ms]) },
        { name: 'vanilla p99', points: cached.map((p) => [x(p), base.p99Ms]) },
      ],
    }),
  );
  writeFileSync(
    join(resultsDir, `swap-hit-rate${RESULT_SUFFIX}.svg`),
    lineChart({
      title: 'Adapter cache hit rate and throughput vs cache size',
      x: { label: 'cache size, % of all adapter bytes', log: true },
      y: { label: 'fraction', min: 0, max: 1.1 },
      markers: true,
      series: [
        { name: 'hit rate', points: cached.map((p) => [x(p), p.hitRate ?? 0]) },
        { name: 'throughput / vanilla', points: cached.map((p) => [x(p), p.rps / base.rps]) },
        // Every size at once: the 100% server's lookups replayed through an ideal LRU (its hit curve), from 0.5%.
        ...(curve ? [{ name: 'hit curve (ideal LRU)', points: curve.points.map((p) => [(100 * p.bytes) / ws.totalBytes, p.hitRate] as [number, number]).filter(([pct]) => pct >= 0.5) }] : []),
      ],
    }),
  );
  writeFileSync(
    join(resultsDir, `swap-throughput${RESULT_SUFFIX}.svg`),
    barChart({
      title: 'Requests per second by phase (same server build)',
      y: { label: 'requests / s', min: 0 },
      bars: table.map((p) => ({ label: p.name.replace(' threads', 't'), value: p.rps })),
    }),
  );

  console.log(`\nadapter swap load test: ${ws.users.length} users, ${result.setup.totalAdapterMiB} MiB of adapters, model: ${ws.modelKind}`);
  console.log('phase                req/s  ratio   tok/s  p50 ms  p99 ms  hit rate  loads  step ms  load/raw (in server)  ratio by round: mean ± se');
  for (const p of table) {
    console.log(
      `${p.name.padEnd(18)} ${String(p.rps).padStart(7)} ${String(p.throughputRatio).padStart(6)} ${String(p.tokensPerS).padStart(7)} ${String(p.p50Ms).padStart(7)} ${String(p.p99Ms).padStart(7)} ${String(p.hitRate ?? '-').padStart(9)} ${String(p.loads).padStart(6)} ${String(p.meanStepMs).padStart(8)}  ${String(p.loadVsRawInServer ?? '-').padEnd(20)}  ${p.cacheShare === null ? '-' : `${p.ratioRoundsMean} ± ${p.ratioRoundsSe}`}`,
    );
  }
  if (result.threadsUnderLoad) console.log(`default (one per core) vs 1 intra-op thread under load: vanilla ${result.threadsUnderLoad.vanillaDefaultVsOne}x, injected ${result.threadsUnderLoad.injectedDefaultVsOne}x throughput`);
  console.log(`adapter load vs raw read, isolated: ${isolated.loadVsRaw}x (first load with checksum ${isolated.firstLoadVsRaw}x)`);
  if (curve) {
    const measured = (share: number): string => String(table.find((p) => p.cacheShare === share && p.threads === base.threads)?.hitRate ?? 'not run');
    console.log(`hit curve of the 100% server (${curve.lookups} lookups, ${curve.coldLookups} cold): an LRU of 10% would hit ${curve.predicted['10%']} (measured ${measured(0.1)}), of 1% ${curve.predicted['1%']} (measured ${measured(0.01)})`);
  }
  console.log(`wrote bench/results/swap${RESULT_SUFFIX}.json and swap-{latency,hit-rate,throughput}${RESULT_SUFFIX}.svg in ${result.totalSeconds} s`);
}

if (process.argv.includes('--serve')) {
  serveChild().catch((e) => {
    process.stderr.write(`bench server failed: ${e instanceof Error ? e.stack : String(e)}\n`);
    process.exit(1);
  });
} else {
  main().catch((e) => {
    process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
    process.exit(1);
  });
}

