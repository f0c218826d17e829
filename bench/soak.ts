/**
 * Bounded soak of the real server over loopback (issue 10, "Load").
 *
 *   npx tsx bench/soak.ts [--minutes 10] [--clients 4] [--jobs 3] [--job-window 0.5] [--seed-users 4]
 *                         [--sample-s 5] [--progress-s 15] [--think-ms 50] [--exit-deadline-s 60] [--out-dir bench/results]
 *                         [--model models/default]
 *
 * The recorded run is the defaults (`npx tsx bench/soak.ts`: 10 minutes, 4 clients). Smoke runs:
 * `npx tsx bench/soak.ts --minutes 0.5 --clients 2 --sample-s 1 --out-dir /tmp/soak-smoke`.
 *
 * `memlora serve` runs as a CHILD PROCESS (`node --import tsx src/cli.ts serve`, port 0 on 127.0.0.1,
 * a temp data and adapter dir, the default model models/default, MEMLORA_INTRA_OP_THREADS=1,
 * MEMLORA_JOB_CONCURRENCY=1), so the memory read from its /metrics (process_resident_memory_bytes,
 * nodejs_heap_used_bytes, every --sample-s seconds) is the server's alone, not the load generator's.
 * RSS includes the injection jobs' worker threads; the heap figure is the main thread's V8 heap only.
 *
 * Set-up: a few MedDia test users and their whole histories are created through the API. Then
 * `--clients` closed-loop clients send mixed traffic for `--minutes`: history appends (1-5 items, each
 * text carrying a unique token), history listing and search (the search looks for an appended item's
 * token), /v1/generate (8-16 tokens, half streamed, a few streams dropped by the client after the
 * first chunk), /v1/chat/completions (a third streamed), user creates and reads, /healthz, and
 * deliberately bad requests (bad ids, malformed JSON, unknown user, a blank item beside a valid one,
 * out-of-range sampling parameters, unknown job, no admin token, wrong method, an oversized body)
 * whose 4xx are expected. One admin loop starts up to `--jobs` injection jobs (budget 2,
 * initialPoints 2), one at a time, on the seeded users, starting them only in the first --job-window
 * of the load, and polls them.
 *
 * After the load: every history item acknowledged with 2xx is read back through the API (paginated),
 * SIGTERM is sent and the server must exit 0 within --exit-deadline-s, then the SQLite file is opened
 * read-only and checked again (acknowledged items present with their text, nothing stored from a
 * rejected request, every created user present; jobs by state).
 *
 * Writes <out-dir>/soak.json and <out-dir>/soak-memory.svg (RSS and heap over time). Exit code 1 when
 * any criterion fails: a 5xx, a connection error or timeout, a malformed 2xx answer (a stream without
 * its end, a body without its fields), an unexpected 4xx to a well-formed request, a 2xx to a bad
 * request, an error body without the documented shape, an acknowledged item missing or altered, a
 * rejected request's item or user stored, a search missing a stored item's unique token, the server
 * dying, or an unclean exit. Memory growth is reported with a verdict but does not set the exit code:
 * the mean of the last quarter's samples over the second quarter's, within 5% to count as "no
 * unbounded growth", for the heap over all samples and for RSS over the samples taken while no
 * injection job was active (a training job's worker adds hundreds of MiB to RSS and would swamp it).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { repoRoot } from '../src/config.js';
import { loadMedDia, toHistoryItems } from '../src/eval/meddia.js';
import { lineChart } from '../src/plot/svg.js';
import { SERVE_NODE_FLAGS } from '../src/serve/node-flags.js';
import { Rng } from '../src/util/rng.js';
import { numberArg, stringArg } from './args.js';

/** A non-negative number option. */
function nonNegativeArg(name: string, fallback: number): number {
  const v = numberArg(name, fallback);
  if (v < 0) throw new Error(`--${name} needs a non-negative number, got ${v}`);
  return v;
}

const MINUTES = nonNegativeArg('minutes', 10);
const CLIENTS = Math.max(1, Math.round(nonNegativeArg('clients', 4)));
const MAX_JOBS = Math.round(nonNegativeArg('jobs', 3));
const SEED_USERS = Math.max(1, Math.round(nonNegativeArg('seed-users', 4)));
const SAMPLE_S = Math.max(0.5, nonNegativeArg('sample-s', 5));
const PROGRESS_S = Math.max(1, nonNegativeArg('progress-s', 15));
const THINK_MS = nonNegativeArg('think-ms', 50);
const EXIT_DEADLINE_S = nonNegativeArg('exit-deadline-s', 60);
/** Jobs start only in this first fraction of the load, so its end has samples without a job's worker. */
const JOB_WINDOW = Math.min(1, nonNegativeArg('job-window', 0.5));
const here = dirname(fileURLToPath(import.meta.url));
const OUT_DIR = resolve(stringArg('out-dir', join(here, 'results')));
const MODEL_PATH = resolve(stringArg('model', join(repoRoot, 'models', 'default')));
const REQUEST_TIMEOUT_MS = 120_000;
const JOB_BODY = { budget: 2, initialPoints: 2 };
const TOKEN = `soak-admin-${randomBytes(12).toString('hex')}`;
/** Marks this run's texts and ids; texts with `soakbad<RUN>` must never be stored. */
const RUN = randomBytes(3).toString('hex');
const log = (line: string) => process.stderr.write(`soak: ${line}\n`);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

if (!existsSync(join(MODEL_PATH, 'config.json'))) {
  log(`no model at ${MODEL_PATH} (config.json missing); train or import the default model first`);
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------
// The server, a child process

const dir = mkdtempSync(join(tmpdir(), 'memlora-soak-'));
const dataDir = join(dir, 'data');
const env: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MEMLORA_') || k === 'MEMLORA_SHARED_DIR'));
Object.assign(env, {
  MEMLORA_PORT: '0',
  MEMLORA_HOST: '127.0.0.1',
  MEMLORA_DATA_DIR: dataDir,
  MEMLORA_ADAPTER_DIR: join(dir, 'adapters'),
  MEMLORA_ADMIN_TOKEN: TOKEN,
  MEMLORA_MODEL_PATH: MODEL_PATH,
  MEMLORA_INTRA_OP_THREADS: '1',
  MEMLORA_JOB_CONCURRENCY: '1',
});
const serverArgs = [...SERVE_NODE_FLAGS, '--import', 'tsx', join(repoRoot, 'src', 'cli.ts'), 'serve'];
const t0 = performance.now();
const since = () => (performance.now() - t0) / 1000;
const child: ChildProcess = spawn(process.execPath, serverArgs, { cwd: repoRoot, env, stdio: ['ignore', 'pipe', 'pipe'] });

/** The server's log (JSON lines on stderr): errors and warnings counted, the tail kept. */
const serverLog = { errors: 0, warnings: 0, firstErrors: [] as string[], tail: [] as string[] };
let onListening: ((url: string) => void) | undefined;
function onServerLine(line: string): void {
  if (line.trim() === '') return;
  serverLog.tail.push(line.slice(0, 500));
  if (serverLog.tail.length > 50) serverLog.tail.shift();
  let rec: { level?: string; msg?: string; url?: string } | undefined;
  try {
    rec = JSON.parse(line);
  } catch {
    rec = undefined;
  }
  if (rec?.level === 'error') {
    serverLog.errors++;
    if (serverLog.firstErrors.length < 10) serverLog.firstErrors.push(line.slice(0, 1000));
  } else if (rec?.level === 'warn') serverLog.warnings++;
  if (rec?.msg === 'memlora listening' && typeof rec.url === 'string') onListening?.(rec.url);
}
for (const stream of [child.stdout!, child.stderr!]) {
  let buf = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    buf += chunk;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      onServerLine(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
    }
  });
}

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  at: number;
}
const state: { exited: Exit | null; sigtermAt: number | null } = { exited: null, sigtermAt: null };
const exitPromise = new Promise<void>((res) =>
  child.once('exit', (code, signal) => {
    state.exited = { code, signal, at: performance.now() };
    if (state.sigtermAt === null) log(`SERVER EXITED during the run (code ${code}, signal ${signal}); last log lines:\n${serverLog.tail.slice(-10).join('\n')}`);
    res();
  }),
);

// Never leave a server behind, whatever ends this script.
process.on('exit', () => {
  if (state.exited === null) child.kill('SIGKILL');
});

const listening = new Promise<string>((res, rej) => {
  onListening = res;
  setTimeout(() => rej(new Error('the server did not report listening within 180 s')), 180_000).unref();
  void exitPromise.then(() => rej(new Error(`the server exited before listening: ${serverLog.tail.slice(-5).join(' | ')}`)));
});

// MedDia loads while the server starts.
const md = loadMedDia();
const seeded = md.testUserIds.slice(0, SEED_USERS).map((id) => md.user(id));
const patientLines = md.testUserIds
  .flatMap((id) => md.user(id).conversations.flatMap((c) => c.turns.map((t) => t.patient)))
  .filter((l) => l.length > 0 && l.length < 400);

let base: string;
try {
  base = await listening;
} catch (err) {
  log(String(err));
  child.kill('SIGKILL');
  process.exit(1);
}
log(`server pid ${child.pid} at ${base} (${since().toFixed(1)} s); ${cpus().length} cores, load ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);

// ---------------------------------------------------------------------------------------------
// Requests and their bookkeeping

interface RouteStats {
  count: number;
  statuses: Record<string, number>;
  ms: number[];
  expected4xx: number;
  unexpected4xx: number;
  failures: number;
}
const routes = new Map<string, RouteStats>();
const failures: Array<{ atS: number; route: string; what: string }> = [];
let failureCount = 0;
let requestCount = 0;

function stat(route: string): RouteStats {
  let s = routes.get(route);
  if (!s) routes.set(route, (s = { count: 0, statuses: {}, ms: [], expected4xx: 0, unexpected4xx: 0, failures: 0 }));
  return s;
}
function fail(route: string, what: string): void {
  failureCount++;
  stat(route).failures++;
  if (failures.length < 100) failures.push({ atS: Number(since().toFixed(1)), route, what: what.slice(0, 500) });
}
function noAnswer(route: string, what: string, err: unknown): void {
  const e = err as Error & { cause?: { code?: string } };
  const kind = e.name === 'TimeoutError' ? 'timeout' : `error:${e.cause?.code ?? e.name}`;
  const s = stat(route);
  s.statuses[kind] = (s.statuses[kind] ?? 0) + 1;
  fail(route, `${what}: ${kind} ${e.message}`);
}

interface CallOptions {
  json?: unknown;
  /** A body sent as is (malformed JSON). */
  raw?: string;
  /** Send the admin token (default true). */
  auth?: boolean;
  /** 'client-error': the request is bad on purpose and must get a 4xx. */
  expect?: 'ok' | 'client-error';
  /** For a 2xx: what is wrong with the answer, or null. */
  check?: (text: string) => string | null;
}
interface Answer {
  status: number;
  text: string;
  body: any;
}

function parseJson(text: string): any {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** One request, timed to its last byte, classified and counted under `route`; null when no answer came. */
async function call(route: string, method: string, path: string, o: CallOptions = {}): Promise<Answer | null> {
  const s = stat(route);
  s.count++;
  requestCount++;
  const headers: Record<string, string> = {};
  if (o.auth ?? true) headers.authorization = `Bearer ${TOKEN}`;
  const body = o.raw ?? (o.json === undefined ? undefined : JSON.stringify(o.json));
  if (body !== undefined) headers['content-type'] = 'application/json';
  const start = performance.now();
  let status: number;
  let text: string;
  try {
    const res = await fetch(`${base}${path}`, { method, headers, body, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
    status = res.status;
    text = await res.text();
  } catch (err) {
    noAnswer(route, `${method} ${path}`, err);
    return null;
  }
  s.ms.push(performance.now() - start);
  s.statuses[status] = (s.statuses[status] ?? 0) + 1;
  const parsed = parseJson(text);
  const expect = o.expect ?? 'ok';
  if (status >= 500) {
    fail(route, `${method} ${path}: ${status} ${text.slice(0, 300)}`);
  } else if (status >= 400) {
    const shaped = typeof parsed?.error?.code === 'string' && typeof parsed?.error?.message === 'string';
    if (expect === 'ok') s.unexpected4xx++;
    if (!shaped) fail(route, `${method} ${path}: ${status} without the documented error shape: ${text.slice(0, 300)}`);
    else if (expect === 'client-error') s.expected4xx++;
    else fail(route, `${method} ${path}: unexpected ${status} ${text.slice(0, 300)}`);
  } else if (expect === 'client-error') {
    fail(route, `${method} ${path}: a bad request was accepted with ${status}`);
  } else {
    const problem = o.check?.(text) ?? null;
    if (problem) fail(route, `${method} ${path}: ${status} but ${problem}`);
  }
  return { status, text, body: parsed };
}

/** SSE blocks as (event, data). */
function sseEvents(text: string): Array<{ event: string | null; data: string }> {
  return text
    .split(/\r?\n\r?\n/)
    .filter((b) => b.trim() !== '')
    .map((block) => {
      let event: string | null = null;
      const data: string[] = [];
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      return { event, data: data.join('\n') };
    });
}

const modes: Record<string, number> = {};
const countMode = (m: unknown) => {
  const k = typeof m === 'string' ? m : 'missing';
  modes[k] = (modes[k] ?? 0) + 1;
};

function checkGenerate(text: string): string | null {
  const b = parseJson(text);
  if (typeof b?.text !== 'string') return 'no text in the result';
  countMode(b.personalization?.mode);
  return null;
}
function checkGenerateStream(text: string): string | null {
  const evs = sseEvents(text);
  const error = evs.find((e) => e.event === 'error');
  if (error) return `an error event: ${error.data.slice(0, 200)}`;
  const done = evs.find((e) => e.event === 'done');
  if (!done) return 'the stream ended without a done event';
  countMode(parseJson(done.data)?.result?.personalization?.mode);
  return null;
}
function checkChat(text: string): string | null {
  const b = parseJson(text);
  if (typeof b?.choices?.[0]?.message?.content !== 'string') return 'no choices[0].message.content';
  countMode(b.memlora?.personalization?.mode);
  return null;
}
function checkChatStream(text: string): string | null {
  const evs = sseEvents(text);
  if (evs.at(-1)?.data !== '[DONE]') return 'the stream did not end with [DONE]';
  const chunks = evs.slice(0, -1).map((e) => parseJson(e.data));
  if (chunks.some((d) => d?.error !== undefined)) return 'an error chunk in the stream';
  countMode(chunks.find((d) => d?.memlora)?.memlora?.personalization?.mode);
  return null;
}

// ---------------------------------------------------------------------------------------------
// Memory samples from the server's /metrics

interface MemSample {
  t: number;
  phase: 'setup' | 'load' | 'verify';
  rss: number;
  heap: number;
  /** An injection job was queued or running (its worker thread's memory is in RSS). */
  jobActive: boolean;
}
const samples: MemSample[] = [];
let phase: MemSample['phase'] = 'setup';
let jobActive = false;
let lastMetricsText = '';
const metricValue = (text: string, name: string): number => {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : Number.NaN;
};
async function sample(): Promise<void> {
  const a = await call('GET /metrics', 'GET', '/metrics', {
    auth: false,
    check: (t) => (Number.isFinite(metricValue(t, 'process_resident_memory_bytes')) && Number.isFinite(metricValue(t, 'nodejs_heap_used_bytes')) ? null : 'no memory gauges'),
  });
  if (!a || a.status !== 200) return;
  lastMetricsText = a.text;
  samples.push({ t: since(), phase, rss: metricValue(a.text, 'process_resident_memory_bytes'), heap: metricValue(a.text, 'nodejs_heap_used_bytes'), jobActive });
}
let sampling = true;
const sampler = (async () => {
  while (sampling && state.exited === null) {
    await sample();
    await sleep(SAMPLE_S * 1000);
  }
})();

// The model loads in the background after listening; /readyz says when generation can serve.
{
  const deadline = performance.now() + 300_000;
  for (;;) {
    const r = await fetch(`${base}/readyz`).then(
      (x) => x.status,
      () => 0,
    );
    if (r === 200) break;
    if (performance.now() > deadline || state.exited !== null) {
      log('the server did not become ready within 300 s');
      child.kill('SIGKILL');
      process.exit(1);
    }
    await sleep(500);
  }
}
const readyAtS = since();
log(`ready after ${readyAtS.toFixed(1)} s`);

// ---------------------------------------------------------------------------------------------
// Set-up: seeded users with their MedDia histories

/** Every item acknowledged with 2xx: id -> (user, text). */
const acked = new Map<number, { userId: string; text: string }>();
/** Users whose PUT was acknowledged. */
const createdUsers = new Set<string>();
/** Items of appends that got no answer at all (they may or may not be stored). */
let unansweredAppendItems = 0;

async function append(route: string, userId: string, items: Array<{ text: string } & Record<string, unknown>>): Promise<number[] | null> {
  const a = await call(route, 'POST', `/v1/users/${userId}/history`, {
    json: { items },
    check: (t) => {
      const ids = parseJson(t)?.ids;
      return Array.isArray(ids) && ids.length === items.length ? null : `ids do not match the ${items.length} items sent`;
    },
  });
  if (!a) unansweredAppendItems += items.length;
  if (!a || a.status !== 201 || !Array.isArray(a.body?.ids) || a.body.ids.length !== items.length) return null;
  const ids = a.body.ids as number[];
  ids.forEach((id, i) => acked.set(id, { userId, text: items[i].text }));
  return ids;
}

for (const u of seeded) {
  const put = await call('seed: PUT /v1/users/:id', 'PUT', `/v1/users/${u.id}`, { json: { metadata: { source: 'meddia', soak: RUN } } });
  if (put && put.status < 300) createdUsers.add(u.id);
  const items = toHistoryItems(u).map((i) => ({
    kind: i.kind,
    role: i.role,
    text: i.text,
    conversationId: i.conversationId,
    createdAt: new Date(i.createdAt).toISOString(),
  }));
  for (let k = 0; k < items.length; k += 500) await append('seed: POST /v1/users/:id/history', u.id, items.slice(k, k + 500));
}
const seededItems = acked.size;
log(`seeded ${seeded.length} MedDia users, ${seededItems} history items (${since().toFixed(1)} s)`);

/** Users traffic goes to: the seeded ones, then those the clients create. */
const pool: string[] = seeded.map((u) => u.id);
/** Recently appended items (user, unique token, id), for searches. */
const searchable: Array<{ userId: string; token: string; id: number }> = [];
const searchStats = { checked: 0, found: 0 };

// ---------------------------------------------------------------------------------------------
// Clients

const rng = new Rng(0x50a6);
let loadEnd = Number.POSITIVE_INFINITY;
const running = () => since() < loadEnd && state.exited === null;
let badSeq = 0;

const pick = <T>(r: Rng, xs: readonly T[]): T => xs[r.int(xs.length)];
const line = (r: Rng) => pick(r, patientLines);

async function doAppend(r: Rng, client: number, n: number): Promise<void> {
  const userId = pick(r, pool);
  const items = Array.from({ length: 1 + r.int(5) }, (_, j) => ({
    kind: 'dialogue',
    role: r.int(2) ? 'user' : 'assistant',
    text: `sk${RUN}c${client}n${n}i${j} ${line(r)}`,
    conversationId: `soak-${client}-${n >> 3}`,
  }));
  const ids = await append('POST /v1/users/:id/history', userId, items);
  if (ids) {
    ids.forEach((id, j) => searchable.push({ userId, token: items[j].text.split(' ')[0], id }));
    if (searchable.length > 2000) searchable.splice(0, searchable.length - 2000);
  }
}

async function doList(r: Rng): Promise<void> {
  const userId = pick(r, pool);
  const first = await call('GET /v1/users/:id/history (list)', 'GET', `/v1/users/${userId}/history?limit=${1 + r.int(50)}`);
  const cursor = first?.body?.nextCursor;
  if (typeof cursor === 'string' && r.int(2)) {
    await call('GET /v1/users/:id/history (list)', 'GET', `/v1/users/${userId}/history?limit=20&cursor=${encodeURIComponent(cursor)}`);
  }
}

async function doSearch(r: Rng): Promise<void> {
  const route = 'GET /v1/users/:id/history (search)';
  if (searchable.length === 0 || r.int(4) === 0) {
    const words = line(r).split(/\s+/).slice(0, 3).join(' ');
    await call(route, 'GET', `/v1/users/${pick(r, pool)}/history?q=${encodeURIComponent(words || 'pain')}&limit=10`);
    return;
  }
  const s = pick(r, searchable);
  const a = await call(route, 'GET', `/v1/users/${s.userId}/history?q=${s.token}&limit=5`);
  if (a?.status === 200) {
    searchStats.checked++;
    if ((a.body?.items ?? []).some((it: { id: number }) => it.id === s.id)) searchStats.found++;
    else fail(route, `search for ${s.token} (item ${s.id}, user ${s.userId}) did not return it`);
  }
}

function genBody(r: Rng, stream: boolean): Record<string, unknown> {
  const body: Record<string, unknown> = { userId: pick(r, pool), maxTokens: 8 + r.int(9), stream };
  if (r.int(3) === 0) body.prompt = line(r);
  else body.messages = [{ role: 'user', content: line(r) }];
  if (r.int(2)) {
    body.temperature = 0.8;
    body.seed = r.int(1000);
  }
  return body;
}

async function doGenerate(r: Rng): Promise<void> {
  const stream = r.int(2) === 1;
  await call(stream ? 'POST /v1/generate (stream)' : 'POST /v1/generate', 'POST', '/v1/generate', {
    json: genBody(r, stream),
    check: stream ? checkGenerateStream : checkGenerate,
  });
}

/** A streamed generation the client drops after its first chunk: the server must free the row. */
async function doAbortedStream(r: Rng): Promise<void> {
  const route = 'POST /v1/generate (stream, client abort)';
  const s = stat(route);
  s.count++;
  requestCount++;
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(new Error('timeout')), REQUEST_TIMEOUT_MS);
  const start = performance.now();
  let dropped = false;
  try {
    const res = await fetch(`${base}/v1/generate`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ ...genBody(r, true), maxTokens: 64 }),
      signal: ac.signal,
    });
    s.statuses[res.status] = (s.statuses[res.status] ?? 0) + 1;
    if (res.status !== 200) {
      if (res.status < 500) s.unexpected4xx++;
      fail(route, `${res.status} ${(await res.text()).slice(0, 300)}`);
    } else {
      await res.body!.getReader().read();
      s.ms.push(performance.now() - start);
    }
    dropped = true;
    ac.abort();
  } catch (err) {
    if (!dropped) noAnswer(route, 'POST /v1/generate', err);
  } finally {
    clearTimeout(timer);
  }
}

async function doChat(r: Rng): Promise<void> {
  const stream = r.int(3) === 0;
  const body: Record<string, unknown> = { model: 'memlora', user: pick(r, pool), messages: [{ role: 'user', content: line(r) }], max_tokens: 8 + r.int(9) };
  if (stream) body.stream = true;
  if (r.int(2)) body.temperature = 0.7;
  await call(stream ? 'POST /v1/chat/completions (stream)' : 'POST /v1/chat/completions', 'POST', '/v1/chat/completions', {
    json: body,
    check: stream ? checkChatStream : checkChat,
  });
}

async function doCreateUser(r: Rng, client: number, n: number): Promise<void> {
  const id = `soak-${RUN}-c${client}-u${n}`;
  const a = await call('PUT /v1/users/:id', 'PUT', `/v1/users/${id}`, { json: r.int(2) ? { metadata: { client, n } } : {} });
  if (a && a.status >= 200 && a.status < 300) {
    createdUsers.add(id);
    pool.push(id);
  }
}

async function doReadUser(r: Rng): Promise<void> {
  await call('GET /v1/users/:id', 'GET', `/v1/users/${pick(r, pool)}`);
}

/** Requests that must get a 4xx with the error shape and change nothing. */
async function doBad(r: Rng): Promise<void> {
  const n = badSeq++;
  const userId = pick(r, pool);
  const badText = `soakbad${RUN}n${n} ${line(r)}`;
  const bad = { expect: 'client-error' as const };
  const unknownJob = () => call('bad: unknown job', 'GET', `/v1/admin/jobs/job_${RUN}nothere${n}`, bad);
  switch (r.int(10)) {
    case 0:
      await call('bad: invalid user id', 'GET', `/v1/users/${pick(r, ['bad%24id', '...', 'a%2F..%2Fb', 'x'.repeat(200)])}`, bad);
      return;
    case 1:
      await call('bad: malformed JSON', 'POST', `/v1/users/${userId}/history`, { ...bad, raw: `{"items": [{"kind": "dialogue", "text": "${badText}"` });
      return;
    case 2:
      await call('bad: unknown user', 'POST', `/v1/users/soak-nobody-${RUN}-${n}/history`, { ...bad, json: { items: [{ kind: 'dialogue', text: badText }] } });
      return;
    case 3:
      // All-or-nothing: the valid item beside the blank one must not be stored.
      await call('bad: blank item in a batch', 'POST', `/v1/users/${userId}/history`, {
        ...bad,
        json: { items: [{ kind: 'dialogue', text: badText }, { kind: 'dialogue', text: '   ' }] },
      });
      return;
    case 4:
      await call('bad: sampling params', 'POST', '/v1/generate', {
        ...bad,
        json: pick(r, [
          { userId, prompt: 'hello', maxTokens: 100_000 },
          { userId, prompt: 'hello', temperature: -1 },
          { userId, prompt: 'hello', topP: 0 },
          { userId, prompt: 'hello', maxTokens: 0 },
        ]),
      });
      return;
    case 5:
      await unknownJob();
      return;
    case 6:
      await call('bad: no admin token', 'GET', '/v1/admin/jobs', { ...bad, auth: false });
      return;
    case 7:
      await call('bad: wrong method', 'DELETE', `/v1/users/${userId}/history`, bad);
      return;
    case 8:
      await call('bad: generate for unknown user', 'POST', '/v1/generate', { ...bad, json: { userId: `soak-nobody-${RUN}-${n}`, prompt: 'hello', maxTokens: 8 } });
      return;
    default:
      // Over the 1 MiB body limit (1.1 MB on the wire), so only one time in four.
      if (r.int(4) !== 0) {
        await unknownJob();
        return;
      }
      await call('bad: oversized body', 'POST', `/v1/users/${userId}/history`, {
        ...bad,
        json: { items: [{ kind: 'dialogue', text: `${badText} ${'x'.repeat(60_000)}` }, ...Array.from({ length: 18 }, () => ({ kind: 'dialogue', text: 'y'.repeat(60_000) }))] },
      });
  }
}

const ACTIONS: Array<[number, (r: Rng, client: number, n: number) => Promise<void>]> = [
  [24, doAppend],
  [8, doList],
  [8, doSearch],
  [18, doGenerate],
  [2, doAbortedStream],
  [12, doChat],
  [4, doCreateUser],
  [3, doReadUser],
  [10, doBad],
  [2, async () => void (await call('GET /healthz', 'GET', '/healthz', { auth: false }))],
];
const WEIGHT = ACTIONS.reduce((a, [w]) => a + w, 0);

async function client(c: number): Promise<void> {
  const r = rng.derive(c);
  for (let n = 0; running(); n++) {
    let x = r.int(WEIGHT);
    const action = ACTIONS.find(([w]) => (x -= w) < 0)![1];
    await action(r, c, n);
    if (THINK_MS > 0) await sleep(r.int(2 * THINK_MS + 1));
  }
}

// ---------------------------------------------------------------------------------------------
// Injection jobs: one at a time on the seeded users, polled

interface JobRecord {
  id: string;
  userId: string;
  startedAtS: number;
  lastState: string;
  finishedAtS: number | null;
  progress?: unknown;
}
const jobs: JobRecord[] = [];
const FINISHED = new Set(['succeeded', 'rejected', 'failed', 'cancelled']);

async function jobLoop(): Promise<void> {
  for (let polls = 1; running(); polls++) {
    const current = jobs.at(-1);
    if (current && !FINISHED.has(current.lastState)) {
      const a = await call('GET /v1/admin/jobs/:id', 'GET', `/v1/admin/jobs/${current.id}`);
      if (a?.status === 200) {
        current.lastState = a.body.state;
        current.progress = a.body.progress;
        if (FINISHED.has(current.lastState)) {
          current.finishedAtS = since();
          log(`job ${current.id} ${current.lastState} after ${(current.finishedAtS - current.startedAtS).toFixed(0)} s`);
        }
      }
      jobActive = !FINISHED.has(current.lastState);
    } else if (jobs.length < MAX_JOBS && since() < loadStart + JOB_WINDOW * MINUTES * 60) {
      const userId = seeded[jobs.length % seeded.length].id;
      const a = await call('POST /v1/admin/users/:id/inject', 'POST', `/v1/admin/users/${userId}/inject`, { json: { ...JOB_BODY, seed: jobs.length + 1 } });
      if (a?.status === 202 && typeof a.body?.id === 'string') {
        jobActive = true;
        jobs.push({ id: a.body.id, userId, startedAtS: since(), lastState: a.body.state, finishedAtS: null });
        log(`job ${a.body.id} queued on ${userId} (budget ${JOB_BODY.budget})`);
      }
    } else jobActive = false;
    if (polls % 5 === 0) await call('GET /v1/admin/jobs', 'GET', '/v1/admin/jobs?limit=20');
    await sleep(2000);
  }
}

// ---------------------------------------------------------------------------------------------
// The run

const mib = (b: number) => b / 1024 ** 2;
// Warm-up: the first generations initialise sessions and buffers; memory "start" is sampled after them.
await Promise.all(Array.from({ length: CLIENTS }, (_, c) => doGenerate(rng.derive(1000 + c))));
phase = 'load';
const loadStart = since();
await sample();
loadEnd = loadStart + MINUTES * 60;
log(`load: ${CLIENTS} clients for ${MINUTES} min, up to ${MAX_JOBS} injection jobs`);

const progress = setInterval(() => {
  const m = samples.at(-1);
  const j = jobs.at(-1);
  log(
    `${((since() - loadStart) / 60).toFixed(1)} min  requests ${requestCount}  failures ${failureCount}  ` +
      `rss ${m ? mib(m.rss).toFixed(0) : '?'} MiB heap ${m ? mib(m.heap).toFixed(0) : '?'} MiB  items acked ${acked.size}  ` +
      `jobs ${jobs.length}${j ? ` (last ${j.lastState})` : ''}`,
  );
}, PROGRESS_S * 1000);

await Promise.all([...Array.from({ length: CLIENTS }, (_, c) => client(c)), jobLoop()]);
clearInterval(progress);
const loadSeconds = since() - loadStart;
phase = 'verify';
await sample();
sampling = false;
await sampler;
const serverCounted5xx = [...lastMetricsText.matchAll(/^http_requests_total\{[^}]*status="5\d\d"[^}]*\} (\S+)$/gm)].reduce((a, m) => a + Number(m[1]), 0);
log(`load done after ${(loadSeconds / 60).toFixed(2)} min: ${requestCount} requests, ${failureCount} failures; verifying`);

// ---------------------------------------------------------------------------------------------
// Verification through the API, then shutdown, then the SQLite file

const apiCheck = { usersRead: 0, pages: 0, missing: 0, textMismatch: 0, firstMissing: [] as number[] };
const jobsApi: Record<string, number> = {};
if (state.exited === null) {
  const byUser = new Map<string, number[]>();
  for (const [id, v] of acked) {
    if (!byUser.has(v.userId)) byUser.set(v.userId, []);
    byUser.get(v.userId)!.push(id);
  }
  for (const [userId, ids] of byUser) {
    const seen = new Map<number, string>();
    let cursor: string | null = null;
    do {
      const q: string = cursor === null ? '' : `&cursor=${encodeURIComponent(cursor)}`;
      const a = await call('verify: GET /v1/users/:id/history', 'GET', `/v1/users/${userId}/history?limit=1000${q}`);
      if (!a || a.status !== 200) break;
      apiCheck.pages++;
      for (const it of a.body.items as Array<{ id: number; text: string }>) seen.set(it.id, it.text);
      cursor = a.body.nextCursor;
    } while (cursor !== null);
    apiCheck.usersRead++;
    for (const id of ids) {
      const text = seen.get(id);
      if (text === undefined) {
        apiCheck.missing++;
        if (apiCheck.firstMissing.length < 20) apiCheck.firstMissing.push(id);
      } else if (text !== acked.get(id)!.text) apiCheck.textMismatch++;
    }
  }
  for (const j of jobs) {
    const a = await call('verify: GET /v1/admin/jobs/:id', 'GET', `/v1/admin/jobs/${j.id}`);
    if (a?.status === 200) {
      j.lastState = a.body.state;
      j.progress = a.body.progress;
    }
    jobsApi[j.lastState] = (jobsApi[j.lastState] ?? 0) + 1;
  }
}
log(`API read-back: ${acked.size} acknowledged items over ${apiCheck.usersRead} users, missing ${apiCheck.missing}, altered ${apiCheck.textMismatch}`);

const diedDuringRun = state.exited !== null;
const shutdown = { signal: 'SIGTERM', deadlineS: EXIT_DEADLINE_S, exitCode: null as number | null, exitSignal: null as string | null, seconds: null as number | null, killed: false, clean: false };
if (!diedDuringRun) {
  state.sigtermAt = performance.now();
  child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), EXIT_DEADLINE_S * 1000)));
  if ((await Promise.race([exitPromise, deadline])) === 'timeout') {
    shutdown.killed = true;
    log(`the server did not exit within ${EXIT_DEADLINE_S} s of SIGTERM; SIGKILL`);
    child.kill('SIGKILL');
    await exitPromise;
  }
  clearTimeout(timer);
}
{
  const ex = state.exited as Exit | null;
  shutdown.exitCode = ex?.code ?? null;
  shutdown.exitSignal = ex?.signal ?? null;
  shutdown.seconds = ex && state.sigtermAt !== null ? Number(((ex.at - state.sigtermAt) / 1000).toFixed(2)) : null;
  shutdown.clean = !diedDuringRun && !shutdown.killed && ex?.code === 0;
}
log(`shutdown: exit code ${shutdown.exitCode}${shutdown.exitSignal ? ` (signal ${shutdown.exitSignal})` : ''} ${shutdown.seconds ?? '?'} s after SIGTERM${shutdown.clean ? '' : ' — UNCLEAN'}`);

const dbCheck = {
  opened: false,
  missing: 0,
  textMismatch: 0,
  unacknowledgedStored: 0,
  rejectedTextsStored: 0,
  phantomUsers: 0,
  createdUsersMissing: 0,
  jobsByState: {} as Record<string, number>,
  error: null as string | null,
};
try {
  const db = new Database(join(dataDir, 'memlora.db'), { readonly: true, fileMustExist: true });
  dbCheck.opened = true;
  const rowsOf = db.prepare('SELECT id, text FROM history_items WHERE user_id = ?');
  for (const u of new Set([...pool, ...[...acked.values()].map((v) => v.userId)])) {
    for (const row of rowsOf.all(u) as Array<{ id: number; text: string }>) {
      const a = acked.get(row.id);
      if (!a) dbCheck.unacknowledgedStored++;
      else if (a.userId !== u || a.text !== row.text) dbCheck.textMismatch++;
    }
  }
  const byId = db.prepare('SELECT user_id AS userId FROM history_items WHERE id = ?');
  for (const [id, v] of acked) {
    const row = byId.get(id) as { userId: string } | undefined;
    if (!row) dbCheck.missing++;
    else if (row.userId !== v.userId) dbCheck.textMismatch++;
  }
  dbCheck.rejectedTextsStored = (db.prepare('SELECT count(*) AS n FROM history_items WHERE text LIKE ?').get(`%soakbad${RUN}%`) as { n: number }).n;
  dbCheck.phantomUsers = (db.prepare('SELECT count(*) AS n FROM users WHERE id LIKE ?').get(`soak-nobody-${RUN}-%`) as { n: number }).n;
  const userRow = db.prepare('SELECT 1 FROM users WHERE id = ?');
  for (const u of createdUsers) if (!userRow.get(u)) dbCheck.createdUsersMissing++;
  for (const row of db.prepare('SELECT state, count(*) AS n FROM injection_jobs GROUP BY state').all() as Array<{ state: string; n: number }>) {
    dbCheck.jobsByState[row.state] = row.n;
  }
  db.close();
} catch (err) {
  dbCheck.error = String(err);
}
log(
  `SQLite after exit: missing ${dbCheck.missing}, altered ${dbCheck.textMismatch}, stored without ack ${dbCheck.unacknowledgedStored}, ` +
    `rejected texts stored ${dbCheck.rejectedTextsStored}, phantom users ${dbCheck.phantomUsers}, created users missing ${dbCheck.createdUsersMissing}` +
    `${dbCheck.error ? `; ERROR ${dbCheck.error}` : ''}`,
);

// ---------------------------------------------------------------------------------------------
// Report

const quantile = (sorted: number[], q: number): number | null =>
  sorted.length === 0 ? null : sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
const round = (x: number | null, d = 1) => (x === null || !Number.isFinite(x) ? null : Number(x.toFixed(d)));
const routeTable = [...routes.entries()]
  .sort(([a], [b]) => a.localeCompare(b))
  .map(([route, s]) => {
    const ms = [...s.ms].sort((a, b) => a - b);
    return {
      route,
      requests: s.count,
      statuses: s.statuses,
      expected4xx: s.expected4xx,
      unexpected4xx: s.unexpected4xx,
      failures: s.failures,
      p50Ms: round(quantile(ms, 0.5)),
      p99Ms: round(quantile(ms, 0.99)),
      maxMs: round(ms.at(-1) ?? null),
    };
  });
const totals = { requests: 0, answered2xx: 0, expected4xx: 0, unexpected4xx: 0, status5xx: 0, noAnswer: 0 };
for (const r of routeTable) {
  totals.requests += r.requests;
  totals.expected4xx += r.expected4xx;
  totals.unexpected4xx += r.unexpected4xx;
  for (const [k, v] of Object.entries(r.statuses)) {
    if (/^2/.test(k)) totals.answered2xx += v;
    if (/^5/.test(k)) totals.status5xx += v;
    if (/^(error|timeout)/.test(k)) totals.noAnswer += v;
  }
}

// Growth: the load's samples (and the one right after it) in four quarters, second against last.
// An injection job's worker thread adds hundreds of MiB to RSS while it trains, so RSS is judged on
// the samples without an active job (in quarters of their own, by order); the heap is the main
// thread's and is judged on all samples (quarters by time).
const firstVerify = samples.find((s) => s.phase === 'verify');
const loadSamples = samples.filter((s) => s.phase === 'load' || s === firstVerify);
const jobFree = loadSamples.filter((s) => !s.jobActive);
const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : Number.NaN);
const byTime = (xs: MemSample[]) =>
  [0, 1, 2, 3].map((i) => xs.filter((s) => s.t >= loadStart + (i * loadSeconds) / 4 && (i === 3 || s.t < loadStart + ((i + 1) * loadSeconds) / 4)));
const byOrder = (xs: MemSample[]) => [0, 1, 2, 3].map((i) => xs.slice(Math.floor((i * xs.length) / 4), Math.floor(((i + 1) * xs.length) / 4)));
function growth(quarters: MemSample[][], key: 'rss' | 'heap') {
  const q2 = mean(quarters[1].map((s) => s[key]));
  const q4 = mean(quarters[3].map((s) => s[key]));
  // Least-squares slope over the last two quarters, MiB per minute.
  const half = [...quarters[2], ...quarters[3]];
  const mt = mean(half.map((s) => s.t));
  const mv = mean(half.map((s) => s[key]));
  const num = half.reduce((a, s) => a + (s.t - mt) * (s[key] - mv), 0);
  const den = half.reduce((a, s) => a + (s.t - mt) ** 2, 0);
  return {
    samplesPerQuarter: quarters.map((q) => q.length),
    quarterSpansS: quarters.map((q) => (q.length ? [round(q[0].t - loadStart), round(q.at(-1)!.t - loadStart)] : null)),
    secondQuarterMeanMiB: round(mib(q2)),
    lastQuarterMeanMiB: round(mib(q4)),
    lastVsSecondQuarter: round(q4 / q2, 3),
    lastHalfSlopeMiBPerMin: den > 0 ? round(mib(num / den) * 60, 2) : null,
  };
}
type Growth = ReturnType<typeof growth>;
const heapGrowth = growth(byTime(loadSamples), 'heap');
const rssGrowthAll = growth(byTime(loadSamples), 'rss');
const rssGrowthJobFree = growth(byOrder(jobFree), 'rss');
const GROWTH_TOLERANCE = 1.05;
const judged = (g: Growth) => g.samplesPerQuarter[1] >= 3 && g.samplesPerQuarter[3] >= 3;
const within = (g: Growth) => g.lastVsSecondQuarter !== null && g.lastVsSecondQuarter <= GROWTH_TOLERANCE;
const tol = `${((GROWTH_TOLERANCE - 1) * 100).toFixed(0)}%`;
const memoryVerdict = !judged(heapGrowth)
  ? `too few samples to judge growth (${heapGrowth.samplesPerQuarter.join('/')} per quarter; run longer or sample more often)`
  : !judged(rssGrowthJobFree)
    ? `heap last/second quarter x${heapGrowth.lastVsSecondQuarter}${within(heapGrowth) ? ` (within ${tol})` : ' (GREW)'}; RSS not judged: only ${jobFree.length} samples without an active injection job, whose worker dominates RSS (all samples: x${rssGrowthAll.lastVsSecondQuarter})`
    : within(heapGrowth) && within(rssGrowthJobFree)
      ? `no unbounded growth: last-quarter means within ${tol} of second-quarter means (heap x${heapGrowth.lastVsSecondQuarter}; RSS without an active job x${rssGrowthJobFree.lastVsSecondQuarter}; RSS over all samples x${rssGrowthAll.lastVsSecondQuarter})`
      : `memory grew from the second to the last quarter (heap x${heapGrowth.lastVsSecondQuarter}; RSS without an active job x${rssGrowthJobFree.lastVsSecondQuarter}): this run does not show it bounded`;
const point = (s: MemSample | undefined) => (s ? { atS: round(s.t), rssMiB: round(mib(s.rss)), heapMiB: round(mib(s.heap)) } : null);
const memory = {
  note:
    'the server process only (its /metrics). RSS includes the injection job worker threads (hundreds of MiB while one trains); heap is the main thread V8 heap. ' +
    'Growth: mean of the last quarter over the mean of the second; heap and all-sample RSS in quarters of the load by time, RSS without an active job in quarters of those samples by order.',
  startAfterWarmUp: point(samples.find((s) => s.phase === 'load')),
  end: point(firstVerify ?? samples.at(-1)),
  maxRssMiB: round(mib(Math.max(...samples.map((s) => s.rss)))),
  maxHeapMiB: round(mib(Math.max(...samples.map((s) => s.heap)))),
  heap: heapGrowth,
  rssWithoutActiveJob: rssGrowthJobFree,
  rssAllSamples: rssGrowthAll,
  growthTolerance: GROWTH_TOLERANCE,
  verdict: memoryVerdict,
  samples: samples.map((s) => ({ t: round(s.t), phase: s.phase, rssMiB: round(mib(s.rss), 2), heapMiB: round(mib(s.heap), 2), jobActive: s.jobActive })),
};

const jobsByFinalState: Record<string, number> = {};
for (const j of jobs) jobsByFinalState[j.lastState] = (jobsByFinalState[j.lastState] ?? 0) + 1;

const criteria = {
  no5xx: totals.status5xx === 0,
  noConnectionErrorsOrTimeouts: totals.noAnswer === 0,
  noUnexpected4xx: totals.unexpected4xx === 0,
  noOtherFailures: failureCount === 0,
  serverStayedUp: !diedDuringRun,
  noAcknowledgedItemMissing: apiCheck.missing === 0 && dbCheck.opened && dbCheck.missing === 0,
  noAcknowledgedItemAltered: apiCheck.textMismatch === 0 && dbCheck.textMismatch === 0,
  noRejectedWriteStored: dbCheck.rejectedTextsStored === 0 && dbCheck.phantomUsers === 0,
  noUnacknowledgedItemStored: dbCheck.unacknowledgedStored <= unansweredAppendItems,
  everyCreatedUserStored: dbCheck.createdUsersMissing === 0,
  searchFindsAppendedItems: searchStats.found === searchStats.checked,
  cleanExitWithinDeadline: shutdown.clean,
};
const pass = Object.values(criteria).every(Boolean);

const report = {
  command: `npx tsx bench/soak.ts ${process.argv.slice(2).join(' ')}`.trim(),
  date: new Date().toISOString(),
  server: {
    argv: ['node', ...serverArgs.map((a) => (a.startsWith(repoRoot) ? relative(repoRoot, a) : a))],
    model: relative(repoRoot, MODEL_PATH) || MODEL_PATH,
    intraOpThreads: 1,
    jobConcurrency: 1,
    readyAfterS: round(readyAtS),
  },
  machine: { cores: cpus().length, loadAvgEnd: loadavg().map((l) => round(l, 2)) },
  settings: { minutes: MINUTES, clients: CLIENTS, maxJobs: MAX_JOBS, jobBody: JOB_BODY, seedUsers: seeded.map((u) => u.id), sampleS: SAMPLE_S, jobWindow: JOB_WINDOW, thinkMs: THINK_MS, exitDeadlineS: EXIT_DEADLINE_S },
  loadMinutes: round(loadSeconds / 60, 2),
  totals: { ...totals, failures: failureCount, serverCounted5xx },
  routes: routeTable,
  servedModes: modes,
  history: { acknowledgedItems: acked.size, seededItems, api: apiCheck, sqlite: dbCheck, unansweredAppendItems, search: searchStats },
  users: { created: createdUsers.size },
  jobs: {
    started: jobs.length,
    byFinalStateSeenByApi: jobsApi,
    byStateInDbAfterExit: dbCheck.jobsByState,
    list: jobs.map((j) => ({ ...j, startedAtS: round(j.startedAtS), finishedAtS: round(j.finishedAtS) })),
  },
  memory,
  shutdown,
  serverLog: { errors: serverLog.errors, warnings: serverLog.warnings, firstErrors: serverLog.firstErrors },
  failures: { count: failureCount, first: failures },
  criteria,
  pass,
};

mkdirSync(OUT_DIR, { recursive: true });
writeFileSync(join(OUT_DIR, 'soak.json'), `${JSON.stringify(report, null, 2)}\n`);
const xMin = (s: MemSample) => (s.t - loadStart) / 60;
writeFileSync(
  join(OUT_DIR, 'soak-memory.svg'),
  lineChart({
    title: `memlora server memory, ${MINUTES}-minute soak (${CLIENTS} clients, ${jobs.length} injection jobs)`,
    x: { label: 'minutes since the load started (negative: set-up)' },
    y: { label: 'MiB', min: 0 },
    series: [
      { name: 'RSS', points: samples.map((s) => [xMin(s), mib(s.rss)] as const) },
      { name: 'V8 heap used (main thread)', points: samples.map((s) => [xMin(s), mib(s.heap)] as const) },
    ],
    markers: samples.length <= 60,
  }),
);

for (const r of routeTable) {
  const st = Object.entries(r.statuses)
    .map(([k, v]) => `${k}:${v}`)
    .join(' ');
  log(`  ${r.route.padEnd(44)} n ${String(r.requests).padStart(5)}  p50 ${String(r.p50Ms ?? '-').padStart(7)} ms  p99 ${String(r.p99Ms ?? '-').padStart(7)} ms  [${st}]${r.failures ? `  FAILURES ${r.failures}` : ''}`);
}
log(`served modes ${JSON.stringify(modes)}; search found ${searchStats.found}/${searchStats.checked}; jobs ${JSON.stringify(jobsByFinalState)} (db after exit ${JSON.stringify(dbCheck.jobsByState)})`);
log(
  `memory: start ${memory.startAfterWarmUp?.rssMiB} MiB RSS / ${memory.startAfterWarmUp?.heapMiB} MiB heap, end ${memory.end?.rssMiB} / ${memory.end?.heapMiB}, ` +
    `max ${memory.maxRssMiB} / ${memory.maxHeapMiB}; ${memoryVerdict}`,
);
if (serverLog.errors > 0) log(`server logged ${serverLog.errors} errors, first: ${serverLog.firstErrors[0]}`);
for (const f of failures.slice(0, 10)) log(`  failure at ${f.atS} s ${f.route}: ${f.what}`);
for (const [k, v] of Object.entries(criteria)) if (!v) log(`  criterion failed: ${k}`);
log(`${pass ? 'PASS' : 'FAIL'}; wrote ${join(OUT_DIR, 'soak.json')} and soak-memory.svg`);
// A failed run keeps its database and adapters for a look.
if (pass) rmSync(dir, { recursive: true, force: true });
else log(`kept the server's data for inspection: ${dir}`);
process.exit(pass ? 0 : 1);
