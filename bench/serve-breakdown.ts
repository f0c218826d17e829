/**
 * Where an injected request's time goes next to a plain one (issue 7's analysis), in one process and
 * without HTTP. Two real engines (createServeServices, as the server builds them, with the serving
 * defaults: maxBatch 8, base weights baked in where `auto` bakes them): one with adapters and its
 * cache pre-loaded with all of bench/swap.ts's adapters (1,000 users, ranks 8-128, mixed layer sets),
 * one with adapters disabled. Each is driven by `connections` concurrent requests of the swap
 * workload (Zipf(1.0) users, short prompts, greedy replies of `max-tokens`) in interleaved slices
 * (vanilla first in even rounds, injected first in odd ones), each round with its own popularity draw.
 *
 * Per request it reports the time in decode steps, in prefills (a lone joiner with an adapter goes
 * through its adapter as served, several joiners through the unit graph), in the row pool (joiners'
 * unit writes and feeds, leavers' unit moves; also split by call) and the rest of the engine's thread (planning, leases,
 * sampling, the loop), timed by wrapping Model.prefill/decodeStep and RowPool.add/remove/input. From
 * these: the throughput ratio the engine would reach if every cost but the decode steps were that of
 * a plain request (`boundIfOnlyStepsDiffer`), i.e. the ceiling the decode steps' adapter work sets.
 *
 *   npx tsx bench/serve-breakdown.ts [--rounds 6] [--seconds 4] [--warmup 1.5] [--connections 16]
 *                                    [--max-tokens 16] [--users 1000] [--seed 1]
 *
 * Uses (and builds when missing) bench/swap.ts's workspace. Writes bench/results/serve-breakdown.json
 * and serve-breakdown.svg.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../src/config.js';
import { openDb } from '../src/db/client.js';
import { Registry } from '../src/metrics.js';
import { Model } from '../src/model/model.js';
import { RowPool } from '../src/model/row-pool.js';
import { PALETTE, barChart } from '../src/plot/svg.js';
import { type GenerationService, createServeServices } from '../src/serve/services.js';
import type { ServeRequest } from '../src/serve/types.js';
import { Rng } from '../src/util/rng.js';
import { constWeightsOf, preloadCache, prepareWorkspace, prompts, zipfSampler } from './swap-workspace.js';
import { numberArg } from './args.js';
import { closedLoop, runUnderServeFlags, serveWorkspace, timeCalls } from './in-process.js';

// Engines run under the serving node flags, as `npm start` runs the server: re-run this script under them.
runUnderServeFlags();

const resultsDir = join(dirname(fileURLToPath(import.meta.url)), 'results');
const ROUNDS = numberArg('rounds', 6);
const SECONDS = numberArg('seconds', 4);
const WARMUP = numberArg('warmup', 1.5);
const CONNECTIONS = numberArg('connections', 16);
const MAX_TOKENS = numberArg('max-tokens', 16);
const SEED = numberArg('seed', 1);
const progress = (line: string): void => void process.stderr.write(`${line}\n`);
const r3 = (x: number): number => Math.round(x * 1000) / 1000;

const ws = await prepareWorkspace({ users: numberArg('users', 1000), seed: SEED, base: 'default', fresh: false });
serveWorkspace(ws); // the cache is filled by the bench itself (preloadCache)
const config = loadConfig();

// ---------------------------------------------------------------------------------------------
// Timing: the phase being measured, and per component the calls and milliseconds spent in them.

type Phase = 'vanilla' | 'injected';
let measuring: Phase | null = null;
const spent = new Map<string, { calls: number; ms: number }>();

function timed<T extends object>(proto: T, method: keyof T & string, component: (args: unknown[]) => string): void {
  timeCalls(proto, method, (args, ms) => {
    if (!measuring) return;
    const key = `${measuring}:${component(args)}`;
    const s = spent.get(key) ?? { calls: 0, ms: 0 };
    s.calls += 1;
    s.ms += ms;
    spent.set(key, s);
  });
}
// The engine evaluates pool.input() before it calls prefill/decodeStep: no time is counted twice.
timed(Model.prototype, 'prefill', (a) => {
  const lora = a[1] as { adapter?: unknown } | undefined;
  return lora?.adapter ? 'prefill (lone joiner, its adapter)' : (a[0] as unknown[]).length > 1 ? 'prefill (joiners together)' : 'prefill (lone joiner)';
});
timed(Model.prototype, 'decodeStep', () => 'decode steps');
// Also by call: add (the adapter's checks), remove (leavers' unit moves), input (joiners' unit writes and feeds).
const POOL_CALLS = ['add', 'remove', 'input'] as const;
for (const m of POOL_CALLS) timed(RowPool.prototype, m, () => `row pool ${m}`);

// ---------------------------------------------------------------------------------------------
// The engines

const logger = { info() {}, warn() {}, error: (msg: string, f?: unknown) => progress(`engine error: ${msg} ${JSON.stringify(f ?? {})}`) };
async function engine(adapters: boolean): Promise<GenerationService> {
  const db = openDb(config.dbFile);
  const s = await createServeServices({ config, db, metrics: new Registry(), logger }, { adapters, consistency: false });
  if (!s?.generate || !(await s.loaded)) throw new Error(`no model at ${config.modelPath}`);
  if (adapters) await preloadCache(db, s, SEED);
  return s.generate;
}
const t0 = performance.now();
const engines: Record<Phase, GenerationService> = { injected: await engine(true), vanilla: await engine(false) };
progress(`engines ready in ${((performance.now() - t0) / 1000).toFixed(1)} s (cache pre-loaded: ${(ws.totalBytes / 2 ** 20).toFixed(0)} MiB)`);

/** `connections` clients, each sending its next request when the last is answered; requests answered in the measured seconds. */
async function slice(phase: Phase, round: number): Promise<{ requests: number; seconds: number }> {
  const rng = new Rng(SEED * 31 + 5 + round); // the same request stream for both engines in a round
  const sample = zipfSampler(ws.users, rng);
  const texts = prompts(rng);
  const g = engines[phase];
  const request = async (): Promise<number> => {
    const req: ServeRequest = { userId: sample().id, prompt: texts[rng.int(texts.length)], maxTokens: MAX_TOKENS, temperature: 0, topP: 1, stop: [], stream: false, mode: 'auto' };
    const res = await g.generate(req, new AbortController().signal);
    if (res.personalization.mode !== (phase === 'injected' ? 'injected' : 'vanilla')) throw new Error(`${phase} engine served ${res.personalization.mode}`);
    return 1;
  };
  const r = await closedLoop({ connections: CONNECTIONS, warmupS: WARMUP, seconds: SECONDS, request, onWindow: (open) => (measuring = open ? phase : null) });
  return { requests: r.count, seconds: r.seconds };
}

const totals: Record<Phase, { requests: number; seconds: number }> = { vanilla: { requests: 0, seconds: 0 }, injected: { requests: 0, seconds: 0 } };
const ratioByRound: number[] = [];
for (let round = 0; round < ROUNDS; round++) {
  const order: Phase[] = round % 2 === 0 ? ['vanilla', 'injected'] : ['injected', 'vanilla'];
  const rps: Partial<Record<Phase, number>> = {};
  for (const phase of order) {
    const s = await slice(phase, round);
    totals[phase].requests += s.requests;
    totals[phase].seconds += s.seconds;
    rps[phase] = s.requests / s.seconds;
  }
  ratioByRound.push(rps.injected! / rps.vanilla!);
  progress(`round ${round + 1}/${ROUNDS}: vanilla ${rps.vanilla!.toFixed(1)} req/s, injected ${rps.injected!.toFixed(1)} req/s, ratio ${ratioByRound[round].toFixed(3)}`);
}

// ---------------------------------------------------------------------------------------------
// Per request

const COMPONENTS = ['decode steps', 'prefill (lone joiner)', 'prefill (lone joiner, its adapter)', 'prefill (joiners together)', ...POOL_CALLS.map((m) => `row pool ${m}`)];
function perRequest(phase: Phase): Record<string, { ms: number; callsPerRequest: number; msPerCall: number }> {
  const n = totals[phase].requests;
  const wallMs = (1000 * totals[phase].seconds) / n;
  const out: Record<string, { ms: number; callsPerRequest: number; msPerCall: number }> = {};
  let counted = 0;
  for (const c of COMPONENTS) {
    const s = spent.get(`${phase}:${c}`);
    if (!s) continue;
    out[c] = { ms: r3(s.ms / n), callsPerRequest: r3(s.calls / n), msPerCall: r3(s.ms / s.calls) };
    counted += s.ms / n;
  }
  // The row pool as one component too (its calls are counted above).
  const pool = POOL_CALLS.map((m) => spent.get(`${phase}:row pool ${m}`)).filter((x) => x !== undefined);
  const poolMs = pool.reduce((a, x) => a + x.ms, 0);
  const poolCalls = pool.reduce((a, x) => a + x.calls, 0);
  if (poolCalls > 0) out['row pool'] = { ms: r3(poolMs / n), callsPerRequest: r3(poolCalls / n), msPerCall: r3(poolMs / poolCalls) };
  out.rest = { ms: r3(wallMs - counted), callsPerRequest: 1, msPerCall: r3(wallMs - counted) };
  out.wall = { ms: r3(wallMs), callsPerRequest: 1, msPerCall: r3(wallMs) };
  return out;
}
const plain = perRequest('vanilla');
const injected = perRequest('injected');
const ms = (p: typeof plain, k: string): number => p[k]?.ms ?? 0;
const prefillMs = (p: typeof plain): number => COMPONENTS.filter((c) => c.startsWith('prefill')).reduce((s, c) => s + ms(p, c), 0);
const extra = {
  decodeSteps: r3(ms(injected, 'decode steps') - ms(plain, 'decode steps')),
  prefills: r3(prefillMs(injected) - prefillMs(plain)),
  rowPool: r3(ms(injected, 'row pool') - ms(plain, 'row pool')),
  rest: r3(ms(injected, 'rest') - ms(plain, 'rest')),
};
const ratio = totals.injected.requests / totals.injected.seconds / (totals.vanilla.requests / totals.vanilla.seconds);
const bound = ms(plain, 'wall') / (ms(plain, 'wall') + extra.decodeSteps);
const mean = ratioByRound.reduce((a, b) => a + b, 0) / ratioByRound.length;
const se = Math.sqrt(ratioByRound.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, ratioByRound.length - 1) / ratioByRound.length);
const result = {
  bench: 'serve-breakdown',
  date: new Date().toISOString(),
  command: `npx tsx bench/serve-breakdown.ts --rounds ${ROUNDS} --seconds ${SECONDS} --connections ${CONNECTIONS} --max-tokens ${MAX_TOKENS}`,
  setup: { users: ws.users.length, adapterMiB: r3(ws.totalBytes / 2 ** 20), maxBatch: config.maxBatch, connections: CONNECTIONS, maxTokens: MAX_TOKENS, baseWeightsBaked: constWeightsOf(ws).baked, rounds: ROUNDS, secondsPerSlice: SECONDS },
  rps: { vanilla: r3(totals.vanilla.requests / totals.vanilla.seconds), injected: r3(totals.injected.requests / totals.injected.seconds) },
  throughputRatio: r3(ratio),
  ratioByRound: ratioByRound.map(r3),
  ratioRoundsMean: r3(mean),
  ratioRoundsSe: r3(se),
  perRequestMs: { vanilla: plain, injected },
  injectedExtraMs: extra,
  boundIfOnlyStepsDiffer: r3(bound),
};
console.log(JSON.stringify(result, null, 2));
mkdirSync(resultsDir, { recursive: true });
writeFileSync(join(resultsDir, 'serve-breakdown.json'), `${JSON.stringify(result, null, 2)}\n`);
const groups: Array<[string, (p: typeof plain) => number]> = [
  ['steps', (p) => ms(p, 'decode steps')],
  ['prefills', prefillMs],
  ['row pool', (p) => ms(p, 'row pool')],
  ['rest', (p) => ms(p, 'rest')],
];
writeFileSync(
  join(resultsDir, 'serve-breakdown.svg'),
  barChart({
    title: `Engine time per request by component (ratio ${ratio.toFixed(3)}; ceiling if only the steps differed ${bound.toFixed(3)})`,
    width: 960,
    y: { label: 'ms per request', min: 0 },
    bars: groups.flatMap(([c, f]) => [
      { label: `${c}, plain`, value: r3(f(plain)), color: PALETTE[0] },
      { label: `${c}, injected`, value: r3(f(injected)), color: PALETTE[1] },
    ]),
  }),
);
progress(`ratio ${ratio.toFixed(3)} (rounds ${mean.toFixed(3)} ± ${se.toFixed(3)}); injected extra per request: steps ${extra.decodeSteps} ms, prefills ${extra.prefills} ms, row pool ${extra.rowPool} ms, rest ${extra.rest} ms; ceiling if only the steps differed: ${bound.toFixed(3)}`);
await Promise.all(Object.values(engines).map((g) => g.close()));
process.exit(0);
