/**
 * Prefix caching under a multi-turn chat load: the same chats against two real servers, one with the
 * prefix cache (MEMLORA_PREFIX_CACHE_BYTES = --prefix-bytes, the server's default 64 MiB unless given)
 * and one without (0), measured in one run in interleaved slices.
 *
 *   npx tsx bench/prefix.ts [--users 1000] [--connections 16] [--turns 4] [--max-tokens 32]
 *                           [--rounds 4] [--seconds 16] [--warmup 8] [--seed 1] [--quick] [--out prefix]
 *                           [--base default|gpt2-small] [--prefix-bytes 64MiB]
 *                           [--plot-only]   (redraw <out>.svg from <out>.json)
 *
 * The users are bench/swap.ts's workspace (1,000 users with stored adapters of ranks 8-128 on mixed
 * layer sets, default model; `--base gpt2-small`: a random GPT-2 of GPT-2 small's shape, whose
 * conversations take 6× the bytes a token, with results in <out>-gpt2-small.json; take fewer
 * `--users` there, as every server caches all adapters); each server's adapter cache holds all of
 * them and is warmed first, so adapter loads play no part. A chat is one MedDia dialogue (its patient turns, in order) for one
 * user: each turn posts /v1/generate with the whole conversation so far, the user's earlier turns and
 * the server's own replies (greedy), as a chat application does; `connections` chats run at once,
 * each connection starting the next chat when one ends (or when its prompt would no longer fit the
 * context window). Both servers get the same chats in the same order; each round measures a slice of
 * each (order A B, then B A) after its own warm-up, so a slow minute weighs on both alike.
 *
 * Reported per server: requests per second, latency p50/p99, time to the first token (the
 * response's timings.queueMs + prefillMs) p50/p99, and by turn the mean latency, time to the first
 * token, prefill time, prompt tokens and cached tokens; the throughput ratio
 * (prefix cache / none) overall and per round; and the prefix server's own counters over the
 * measured slices (GET /v1/admin/prefix-cache before and after each): lookups, hit rate, reused
 * tokens, evictions, with its bytes and entries at the end. Writes bench/results/<out>.json and
 * <out>.svg (latency and prefill time by turn).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadMedDia } from '../src/eval/meddia.js';
import { lineChart } from '../src/plot/svg.js';
import { Rng } from '../src/util/rng.js';
import { flag, numberArg, stringArg } from './args.js';
import type { PrefixCacheReport } from '../src/serve/prefix-admin.js';
import { baseArg, prepareWorkspace, type Workspace } from './swap-workspace.js';
import { BENCH_ADMIN_TOKEN as TOKEN, type ServeProcess, startWorkspaceServer } from './server-process.js';

const repo = join(import.meta.dirname, '..');
const QUICK = flag('quick');
const USERS = numberArg('users', 1000);
const CONNECTIONS = numberArg('connections', 16);
const TURNS = numberArg('turns', 4);
const MAX_TOKENS = numberArg('max-tokens', 32);
const ROUNDS = numberArg('rounds', QUICK ? 2 : 4);
const SECONDS = numberArg('seconds', QUICK ? 8 : 16);
const WARMUP = numberArg('warmup', QUICK ? 4 : 8);
const SEED = numberArg('seed', 1);
const BASE = baseArg();
const OUT = stringArg('out', QUICK ? 'prefix-quick' : 'prefix') + (BASE === 'default' ? '' : `-${BASE}`);
const PREFIX_BYTES = stringArg('prefix-bytes', '64MiB');
const progress = (line: string): void => void process.stderr.write(`${line}\n`);
const r2 = (x: number): number => Math.round(x * 100) / 100;
const r3 = (x: number): number => Math.round(x * 1000) / 1000;

interface Server extends ServeProcess {
  name: 'prefix' | 'none';
}

async function startServer(ws: Workspace, name: Server['name']): Promise<Server> {
  const env = { MEMLORA_PREFIX_CACHE_BYTES: name === 'prefix' ? PREFIX_BYTES : '0', MEMLORA_MAX_QUEUE: '256' };
  return { name, ...(await startWorkspaceServer(ws, name, env, SEED)) };
}

async function prefixReport(server: Server): Promise<PrefixCacheReport> {
  const res = await fetch(`${server.url}/v1/admin/prefix-cache`, { headers: { authorization: `Bearer ${TOKEN}` } });
  if (!res.ok) throw new Error(`GET /v1/admin/prefix-cache of the ${server.name} server: ${res.status} ${await res.text()}`);
  return (await res.json()) as PrefixCacheReport;
}

/** The counters a slice moves (no adapter version changes during the bench, so none is retired). */
type Counters = Pick<PrefixCacheReport['counters'], (typeof COUNTERS)[number]>;
const COUNTERS = ['lookups', 'hits', 'reusedTokens', 'evictions'] as const;

interface Chat {
  userId: string;
  turns: string[];
}

/** The chats of a round: users in a seeded order, each with a MedDia dialogue's first TURNS patient turns. */
function chatsOf(round: number, users: readonly string[], dialogues: readonly string[][]): Chat[] {
  const rng = new Rng(SEED * 1000 + round);
  const order = [...users];
  for (let i = order.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order.map((userId) => ({ userId, turns: dialogues[rng.int(dialogues.length)].slice(0, TURNS) }));
}

interface Sample {
  turn: number;
  ms: number;
  prefillMs: number;
  /** Time to the first token: queueMs + prefillMs of the response's timings. */
  ttftMs: number;
  promptTokens: number;
  cachedTokens: number;
}

interface Slice {
  samples: Sample[];
  seconds: number;
  errors: number;
  tooLong: number;
}

/** `CONNECTIONS` closed-loop chats against one server for `seconds` (new requests stop then; those running finish). */
async function drive(server: Server, chats: readonly Chat[], seconds: number): Promise<Slice> {
  const samples: Sample[] = [];
  let next = 0;
  let errors = 0;
  let tooLong = 0;
  const t0 = performance.now();
  const until = t0 + seconds * 1000;
  const worker = async (): Promise<void> => {
    while (performance.now() < until && next < chats.length) {
      const chat = chats[next++];
      const messages: Array<{ role: 'user' | 'assistant'; content: string }> = [];
      for (const [turn, text] of chat.turns.entries()) {
        if (performance.now() >= until) break;
        messages.push({ role: 'user', content: text });
        const start = performance.now();
        const res = await fetch(`${server.url}/v1/generate`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ userId: chat.userId, messages, maxTokens: MAX_TOKENS, temperature: 0 }),
        });
        const body = (await res.json()) as { text: string; usage: { promptTokens: number; cachedTokens: number }; timings: { queueMs: number; prefillMs: number }; error?: { code: string } };
        if (res.status === 422 && body.error?.code === 'prompt_too_long') {
          tooLong += 1;
          break;
        }
        if (!res.ok) {
          errors += 1;
          break;
        }
        samples.push({ turn, ms: performance.now() - start, prefillMs: body.timings.prefillMs, ttftMs: body.timings.queueMs + body.timings.prefillMs, promptTokens: body.usage.promptTokens, cachedTokens: body.usage.cachedTokens });
        messages.push({ role: 'assistant', content: body.text });
      }
    }
  };
  await Promise.all(Array.from({ length: CONNECTIONS }, worker));
  return { samples, seconds: (performance.now() - t0) / 1000, errors, tooLong };
}

const quantile = (xs: number[], q: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(q * s.length))] : Number.NaN;
};
const mean = (xs: number[]): number => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : Number.NaN);

function summary(slices: Slice[]) {
  const all = slices.flatMap((s) => s.samples);
  const seconds = slices.reduce((a, s) => a + s.seconds, 0);
  const byTurn = Array.from({ length: TURNS }, (_, t) => {
    const xs = all.filter((x) => x.turn === t);
    return {
      turn: t + 1,
      requests: xs.length,
      meanMs: r2(mean(xs.map((x) => x.ms))),
      prefillMs: r2(mean(xs.map((x) => x.prefillMs))),
      ttftMs: r2(mean(xs.map((x) => x.ttftMs))),
      promptTokens: r2(mean(xs.map((x) => x.promptTokens))),
      cachedTokens: r2(mean(xs.map((x) => x.cachedTokens))),
    };
  });
  const prompt = all.reduce((a, x) => a + x.promptTokens, 0);
  const cached = all.reduce((a, x) => a + x.cachedTokens, 0);
  return {
    requests: all.length,
    reqPerS: r2(all.length / seconds),
    p50Ms: r2(quantile(all.map((x) => x.ms), 0.5)),
    p99Ms: r2(quantile(all.map((x) => x.ms), 0.99)),
    prefillMs: r2(mean(all.map((x) => x.prefillMs))),
    ttftP50Ms: r2(quantile(all.map((x) => x.ttftMs), 0.5)),
    ttftP99Ms: r2(quantile(all.map((x) => x.ttftMs), 0.99)),
    promptTokens: prompt,
    cachedTokens: cached,
    cachedShare: r3(prompt ? cached / prompt : 0),
    errors: slices.reduce((a, s) => a + s.errors, 0),
    tooLong: slices.reduce((a, s) => a + s.tooLong, 0),
    byTurn,
  };
}

type TurnStats = ReturnType<typeof summary>['byTurn'];

/** Mean latency, time to the first token and prefill time by turn, with and without the prefix cache. */
function plotByTurn(r: { config: { connections: number; turns: number }; prefix: { byTurn: TurnStats }; none: { byTurn: TurnStats } }): string {
  const line = (name: string, turns: TurnStats, key: 'meanMs' | 'ttftMs' | 'prefillMs') => ({ name, points: turns.map((t) => [t.turn, t[key]] as const) });
  return lineChart({
    title: `Multi-turn chats (${r.config.connections} at once): means by turn`,
    x: { label: 'turn of the chat', min: 1, max: r.config.turns },
    y: { label: 'ms', min: 0 },
    markers: true,
    series: [
      line('latency, prefix cache', r.prefix.byTurn, 'meanMs'),
      line('latency, none', r.none.byTurn, 'meanMs'),
      line('first token, prefix cache', r.prefix.byTurn, 'ttftMs'),
      line('first token, none', r.none.byTurn, 'ttftMs'),
      line('prefill, prefix cache', r.prefix.byTurn, 'prefillMs'),
      line('prefill, none', r.none.byTurn, 'prefillMs'),
    ],
  });
}

if (flag('plot-only')) {
  // Redraw the plot of an earlier run from its JSON.
  const file = join(repo, 'bench', 'results', `${OUT}.json`);
  writeFileSync(file.replace(/\.json$/, '.svg'), plotByTurn(JSON.parse(readFileSync(file, 'utf8'))));
  progress(`wrote bench/results/${OUT}.svg from ${OUT}.json`);
  process.exit(0);
}

const ws = await prepareWorkspace({ users: USERS, seed: SEED, base: BASE, fresh: false });
const med = loadMedDia();
const dialogues = med.users.flatMap((u) => u.conversations.map((c) => c.turns.map((t) => t.patient))).filter((d) => d.length >= TURNS);
progress(`workspace ${ws.dir}: ${ws.users.length} users; ${dialogues.length} MedDia dialogues of at least ${TURNS} patient turns`);
const servers: Server[] = [];
try {
  for (const name of ['prefix', 'none'] as const) {
    const t = performance.now();
    servers.push(await startServer(ws, name));
    progress(`${name} server ready and warmed in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  }
  const users = ws.users.map((u) => u.id);
  const slices: Record<Server['name'], Slice[]> = { prefix: [], none: [] };
  const perRound: Array<{ round: number; prefix: number; none: number; ratio: number }> = [];
  const measured: Counters = { lookups: 0, hits: 0, reusedTokens: 0, evictions: 0 };
  let last: PrefixCacheReport | undefined;
  for (let round = 0; round < ROUNDS; round++) {
    const chats = chatsOf(round, users, dialogues);
    const order = round % 2 === 0 ? servers : [...servers].reverse();
    const rate: Record<string, number> = {};
    for (const s of order) {
      // Unmeasured warm-up on other chats (the prefix server's cache then holds conversations of other users, as in service).
      await drive(s, chatsOf(10_000 + round, users, dialogues), WARMUP);
      const before = s.name === 'prefix' ? await prefixReport(s) : undefined;
      const slice = await drive(s, chats, SECONDS);
      if (before) {
        last = await prefixReport(s);
        for (const k of COUNTERS) measured[k] += last.counters[k] - before.counters[k];
      }
      slices[s.name].push(slice);
      rate[s.name] = slice.samples.length / slice.seconds;
      progress(`round ${round + 1}/${ROUNDS} ${s.name}: ${slice.samples.length} requests in ${slice.seconds.toFixed(1)} s (${rate[s.name].toFixed(1)} req/s), ${slice.errors} errors`);
    }
    perRound.push({ round: round + 1, prefix: r2(rate.prefix), none: r2(rate.none), ratio: r3(rate.prefix / rate.none) });
  }
  const prefix = summary(slices.prefix);
  const none = summary(slices.none);
  const ratios = perRound.map((r) => r.ratio);
  const m = mean(ratios);
  const se = ratios.length > 1 ? Math.sqrt(ratios.reduce((a, x) => a + (x - m) ** 2, 0) / (ratios.length - 1) / ratios.length) : Number.NaN;
  const result = {
    command: `npx tsx bench/prefix.ts ${process.argv.slice(2).join(' ')}`.trim(),
    date: new Date().toISOString(),
    config: { base: BASE, model: ws.modelKind, users: ws.users.length, connections: CONNECTIONS, turns: TURNS, maxTokens: MAX_TOKENS, rounds: ROUNDS, seconds: SECONDS, warmup: WARMUP, seed: SEED, prefixCacheBytes: PREFIX_BYTES },
    throughputRatio: r3(prefix.reqPerS / none.reqPerS),
    perRoundRatio: { mean: r3(m), se: r3(se), rounds: perRound },
    p50Ratio: r3(prefix.p50Ms / none.p50Ms),
    /** The prefix server's counters over the measured slices, its bytes and entries after the last. */
    prefixCache: { ...measured, hitRate: r3(measured.lookups ? measured.hits / measured.lookups : Number.NaN), bytes: last?.bytes, maxBytes: last?.maxBytes, entries: last?.entries, users: last?.users },
    prefix,
    none,
  };
  const resultsDir = join(repo, 'bench', 'results');
  writeFileSync(join(resultsDir, `${OUT}.json`), `${JSON.stringify(result, null, 2)}\n`);
  writeFileSync(join(resultsDir, `${OUT}.svg`), plotByTurn(result));
  progress(`throughput: prefix cache ${prefix.reqPerS} req/s, none ${none.reqPerS} req/s: ratio ${result.throughputRatio} (per round ${r3(m)} ± ${r3(se)})`);
  const pc = result.prefixCache;
  progress(`prefix cache (measured slices): ${pc.hits} hits of ${pc.lookups} lookups (${pc.hitRate}), ${pc.reusedTokens} tokens reused, ${pc.evictions} evictions; at the end ${pc.entries} conversations of ${pc.users} users in ${((pc.bytes ?? 0) / 2 ** 20).toFixed(1)} of ${((pc.maxBytes ?? 0) / 2 ** 20).toFixed(0)} MiB`);
  progress(`p50/p99: prefix cache ${prefix.p50Ms}/${prefix.p99Ms} ms, none ${none.p50Ms}/${none.p99Ms} ms; first token p50/p99 ${prefix.ttftP50Ms}/${prefix.ttftP99Ms} vs ${none.ttftP50Ms}/${none.ttftP99Ms} ms; prompt tokens cached ${prefix.cachedTokens} of ${prefix.promptTokens} (${prefix.cachedShare})`);
  for (const [a, b] of prefix.byTurn.map((t, i) => [t, none.byTurn[i]] as const)) {
    progress(`turn ${a.turn}: prompt ${a.promptTokens} tokens, cached ${a.cachedTokens}; latency ${a.meanMs} vs ${b.meanMs} ms, first token ${a.ttftMs} vs ${b.ttftMs} ms, prefill ${a.prefillMs} vs ${b.prefillMs} ms`);
  }
  progress(`wrote bench/results/${OUT}.json and ${OUT}.svg`);
} finally {
  for (const s of servers) s.proc.kill('SIGTERM');
}
