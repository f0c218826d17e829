/**
 * /v1/generate latency while injection jobs train (issue 8: p99 with two jobs running <= 2x idle).
 *
 *   npx tsx bench/serve-during-inject.ts [--requests 48] [--rounds 2] [--concurrency 2] [--max-tokens 24] [--budget 8] [--nice 19]
 *
 * A real server on 127.0.0.1 (the default model when models/default/config.json exists, else a
 * random GPT-2 of the default shape: d_model 256, 6 layers, 4 heads, FFN 1024, vocab 2048), MedDia's
 * test users and their histories in the database, the real generation engine and the real job
 * service with MEMLORA_JOB_CONCURRENCY=2. A closed loop of `concurrency` clients sends /generate
 * requests (a patient's line of a MedDia user, greedy, `max-tokens` tokens) in phases, all in this
 * one run, `rounds` times over (the machine is shared, so conditions alternate rather than run once):
 *   idle           no job
 *   jobs (nice N)  two injection jobs training in worker threads whose OS priority is lowered
 *   jobs (nice 0)  two injection jobs at normal priority
 * A job phase counts only requests that started after both jobs were training and ended before
 * either stopped. Prints p50/p90/p99 per condition (rounds pooled) and the ratios to idle, and
 * writes bench/results/serve-during-inject.json and .svg (latency distribution per condition).
 */
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig, repoRoot } from '../src/config.js';
import { openDb } from '../src/db/client.js';
import { appendHistory } from '../src/db/queries/history.js';
import { createUser } from '../src/db/queries/users.js';
import { loadMedDia, toHistoryItems } from '../src/eval/meddia.js';
import type { JobService as HttpJobService } from '../src/http/services.js';
import { memoryLogger } from '../src/http/logger.js';
import type { JobRunSettings } from '../src/inject/job-runner.js';
import { JobService, startJobService } from '../src/inject/jobs.js';
import { saveTokenizer, trainBpe } from '../src/model/bpe-train.js';
import type { ModelConfig } from '../src/model/config.js';
import { saveCheckpoint } from '../src/model/save.js';
import { loadTokenizer } from '../src/model/tokenizer.js';
import { lineChart } from '../src/plot/svg.js';
import { initWeights } from '../src/pretrain/init.js';
import { createServeServices } from '../src/serve/services.js';
import { startServer } from '../src/server.js';
import { defaultModelConfig } from '../src/pretrain/run.js';
import { numberArg } from './args.js';

const REQUESTS = numberArg('requests', 48);
const CONCURRENCY = numberArg('concurrency', 2);
const MAX_TOKENS = numberArg('max-tokens', 24);
const BUDGET = numberArg('budget', 8);
const ROUNDS = numberArg('rounds', 2);
const NICE = numberArg('nice', 19);
const TOKEN = 'bench-admin-token-0123456789';
const here = dirname(fileURLToPath(import.meta.url));
const log = (line: string) => process.stderr.write(`serve-during-inject: ${line}\n`);

// ---------------------------------------------------------------------------------------------
// Model, data, server

const dir = mkdtempSync(join(tmpdir(), 'memlora-sdi-'));
const defaultDir = join(repoRoot, 'models', 'default');
let modelPath = defaultDir;
let modelNote = 'models/default';
const md = loadMedDia();
if (!existsSync(join(defaultDir, 'config.json'))) {
  modelPath = join(dir, 'model');
  mkdirSync(modelPath, { recursive: true });
  if (existsSync(join(defaultDir, 'tokenizer.json'))) {
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) if (existsSync(join(defaultDir, f))) copyFileSync(join(defaultDir, f), join(modelPath, f));
  } else {
    saveTokenizer(modelPath, trainBpe(md.pretrainTexts().slice(0, 2000), { vocabSize: 2048 }));
  }
  const tok = loadTokenizer(modelPath);
  const cfg: ModelConfig = defaultModelConfig(tok);
  saveCheckpoint(modelPath, cfg, initWeights(cfg, 1, 0.02));
  modelNote = `random GPT-2 of the default shape (models/default/config.json not found; vocab ${cfg.vocabSize})`;
}

const config = loadConfig({
  MEMLORA_PORT: '0',
  MEMLORA_HOST: '127.0.0.1',
  MEMLORA_DATA_DIR: join(dir, 'data'),
  MEMLORA_ADAPTER_DIR: join(dir, 'adapters'),
  MEMLORA_ADMIN_TOKEN: TOKEN,
  MEMLORA_MODEL_PATH: modelPath,
  MEMLORA_JOB_CONCURRENCY: '2',
});

const users = md.testUserIds.map((id) => md.user(id));
{
  const db = openDb(config.dbFile);
  for (const u of users) {
    createUser(db, { id: u.id });
    appendHistory(
      db,
      u.id,
      toHistoryItems(u).map((i) => ({ kind: i.kind, role: i.role as 'user' | 'assistant', text: i.text, conversationId: i.conversationId, createdAt: i.createdAt })),
    );
  }
  db.close();
}
/** What clients ask: each user's patient lines. */
const prompts = users.map((u) => ({ userId: u.id, lines: u.conversations.flatMap((c) => c.turns.map((t) => t.patient)).filter((l) => l.length > 0) }));

const settings: Partial<JobRunSettings> = { budget: BUDGET, initialPoints: 3, nMax: 4, train: { epochs: 1 }, progressIntervalMs: 500 };
let niced!: JobService;
let plain!: JobService;
let current!: JobService;
/** The server's job service: one of two real services (worker threads at nice N, or at nice 0), switched between phases. */
const jobs: HttpJobService = {
  enqueue: (job) => current.enqueue(job),
  cancel: (id) => current.cancel(id),
  close: async () => {
    await niced.close();
    await plain.close();
  },
};

let loaded: Promise<unknown> = Promise.resolve();
const server = await startServer(config, {
  handleSignals: false,
  logger: memoryLogger(),
  services: async (ctx) => {
    const serve = await createServeServices(ctx);
    if (!serve?.generate) throw new Error('no generation service: the serving engine did not start');
    loaded = serve.loaded;
    niced = await startJobService({ config: ctx.config, db: ctx.db, logger: ctx.logger, settings, niceness: NICE });
    plain = new JobService({ config: ctx.config, db: ctx.db, logger: ctx.logger, settings, niceness: null });
    current = niced;
    return { generate: serve.generate, adapterFiles: serve.adapterFiles, jobs };
  },
});
await loaded;
log(`server ${server.url}, model: ${modelNote}; ${users.length} MedDia users; ${cpus().length} cores, load ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);

// ---------------------------------------------------------------------------------------------
// Load and measurement

const headers = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };
const call = async (method: string, path: string, body?: unknown): Promise<any> => {
  const res = await fetch(`${server.url}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: res.status, body: await res.json() };
};

interface Sample {
  start: number;
  end: number;
  ms: number;
  status: number;
  mode?: string;
}

let seq = 0;
async function one(): Promise<Sample> {
  const p = prompts[seq % prompts.length];
  const line = p.lines[Math.floor(seq / prompts.length) % p.lines.length];
  seq++;
  const start = performance.now();
  const res = await fetch(`${server.url}/v1/generate`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ userId: p.userId, messages: [{ role: 'user', content: line }], maxTokens: MAX_TOKENS, temperature: 0 }),
  });
  const body = (await res.json()) as any;
  const end = performance.now();
  return { start, end, ms: end - start, status: res.status, mode: body?.personalization?.mode };
}

/** `count` requests from `CONCURRENCY` closed-loop clients (or until `stop()` says so). */
async function load(count: number, stop: () => boolean = () => false): Promise<Sample[]> {
  const out: Sample[] = [];
  let issued = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (issued < count && !stop()) {
        issued++;
        out.push(await one());
      }
    }),
  );
  return out;
}

const quantile = (sorted: number[], q: number): number => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];

interface PhaseStats {
  n: number;
  errors: number;
  p50: number;
  p90: number;
  p99: number;
  mean: number;
  max: number;
}

function stats(samples: Sample[]): PhaseStats {
  const ok = samples.filter((s) => s.status === 200).map((s) => s.ms).sort((a, b) => a - b);
  return {
    n: ok.length,
    errors: samples.length - ok.length,
    p50: quantile(ok, 0.5),
    p90: quantile(ok, 0.9),
    p99: quantile(ok, 0.99),
    mean: ok.reduce((a, b) => a + b, 0) / Math.max(1, ok.length),
    max: ok.at(-1) ?? Number.NaN,
  };
}

/** Two jobs on two users, measured while both train; cancelled afterwards. */
async function jobPhase(service: JobService, userIds: [string, string]): Promise<{ samples: Sample[]; window: { fromMs: number; toMs: number }; trials: number }> {
  current = service;
  const training = new Set<string>();
  const ended = new Set<string>();
  let firstEnd = Number.POSITIVE_INFINITY;
  let trials = 0;
  const onEvent = (jobId: string, e: { type: string; state?: string }) => {
    if (e.type === 'training') training.add(jobId);
    if (e.type === 'trial') trials++;
    if (e.type === 'state' && e.state !== 'running' && !ended.has(jobId)) {
      ended.add(jobId);
      firstEnd = Math.min(firstEnd, performance.now());
    }
  };
  service.on('event', onEvent);
  const ids: string[] = [];
  for (const u of userIds) {
    const r = await call('POST', `/v1/admin/users/${u}/inject`, { budget: BUDGET, seed: 1 });
    if (r.status !== 202) throw new Error(`inject ${u}: ${r.status} ${JSON.stringify(r.body)}`);
    ids.push(r.body.id);
  }
  while (!ids.every((id) => training.has(id))) {
    if (ids.some((id) => ended.has(id))) throw new Error('a job ended before training started');
    await new Promise((r) => setTimeout(r, 50));
  }
  const from = performance.now();
  const samples = await load(REQUESTS, () => ended.size > 0);
  const to = Math.min(performance.now(), firstEnd);
  for (const id of ids) await call('POST', `/v1/admin/jobs/${id}/cancel`);
  await service.idle();
  service.off('event', onEvent);
  return { samples: samples.filter((s) => s.start >= from && s.end <= to), window: { fromMs: from, toMs: to }, trials };
}

log('warm-up');
await load(4 * CONCURRENCY);
const NICED = `jobs (nice ${NICE})`;
const conditions = ['idle', NICED, 'jobs (nice 0)'] as const;
const phases: Array<{ name: string; round: number; samples: Sample[]; trials?: number }> = [];
let next = 0;
for (let round = 1; round <= ROUNDS; round++) {
  log(`round ${round}: idle`);
  phases.push({ name: 'idle', round, samples: await load(REQUESTS) });
  for (const [name, service] of [[NICED, niced], ['jobs (nice 0)', plain]] as const) {
    log(`round ${round}: ${name}`);
    const pair: [string, string] = [users[next % users.length].id, users[(next + 1) % users.length].id];
    next += 2;
    const r = await jobPhase(service, pair);
    phases.push({ name, round, samples: r.samples, trials: r.trials });
  }
}
const loadEnd = loadavg();
await server.close();

// ---------------------------------------------------------------------------------------------
// Report

const pooled = (name: string) => phases.filter((p) => p.name === name).flatMap((p) => p.samples);
const table = conditions.map((name) => ({ name, ...stats(pooled(name)), trialsFinished: phases.filter((p) => p.name === name).reduce((a, p) => a + (p.trials ?? 0), 0) }));
const perPhase = phases.map((p) => ({ name: p.name, round: p.round, ...stats(p.samples) }));
const idle = table[0];
const ratios = Object.fromEntries(table.slice(1).map((t) => [t.name, { p50: t.p50 / idle.p50, p90: t.p90 / idle.p90, p99: t.p99 / idle.p99 }]));
const modes = [...new Set(phases.flatMap((p) => p.samples.map((s) => s.mode)))];
for (const t of perPhase) log(`  round ${t.round} ${t.name.padEnd(15)} n ${String(t.n).padStart(3)} err ${t.errors}  p50 ${t.p50.toFixed(0).padStart(5)}  p90 ${t.p90.toFixed(0).padStart(5)}  max ${t.max.toFixed(0).padStart(5)} ms`);
for (const t of table) {
  log(`${t.name.padEnd(15)} n ${String(t.n).padStart(3)} err ${t.errors}  p50 ${t.p50.toFixed(0).padStart(5)} ms  p90 ${t.p90.toFixed(0).padStart(5)} ms  p99 ${t.p99.toFixed(0).padStart(5)} ms  max ${t.max.toFixed(0).padStart(5)} ms`);
}
for (const [name, r] of Object.entries(ratios)) log(`${name}: p99 ${r.p99.toFixed(2)}x idle (target <= 2x), p90 ${r.p90.toFixed(2)}x, p50 ${r.p50.toFixed(2)}x`);

const outDir = resolve(here, 'results');
mkdirSync(outDir, { recursive: true });
writeFileSync(
  join(outDir, 'serve-during-inject.json'),
  `${JSON.stringify(
    {
      model: modelNote,
      machine: { cores: cpus().length, loadAvgEnd: loadEnd },
      requestsPerPhase: REQUESTS,
      rounds: ROUNDS,
      concurrency: CONCURRENCY,
      maxTokens: MAX_TOKENS,
      jobs: { concurrency: 2, budget: BUDGET, settings, intraOpThreads: 1, niceness: [NICE, 0] },
      servedModes: modes,
      conditions: table,
      phases: perPhase,
      ratioToIdle: ratios,
      target: 'p99 while two jobs train <= 2x idle p99',
    },
    null,
    2,
  )}\n`,
);
writeFileSync(
  join(outDir, 'serve-during-inject.svg'),
  lineChart({
    title: `/v1/generate latency, idle vs two injection jobs (${CONCURRENCY} clients, ${MAX_TOKENS} tokens)`,
    x: { label: 'latency (ms)' },
    y: { label: 'fraction of requests at or below' },
    series: conditions.map((name) => {
      const ms = pooled(name).filter((s) => s.status === 200).map((s) => s.ms).sort((x, y) => x - y);
      return { name, points: ms.map((v, i) => [v, (i + 1) / ms.length] as const) };
    }),
  }),
);
log(`wrote ${join('bench', 'results', 'serve-during-inject.json')} and .svg`);
rmSync(dir, { recursive: true, force: true });
process.exit(0);
