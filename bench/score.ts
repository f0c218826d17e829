/**
 * What scoring costs (POST /v1/score, in process without HTTP): one real engine with adapters
 * (createServeServices, as the server builds it) on the default model and the swap bench's
 * workspace of `users` users with stored adapters (ranks 8-128, cache holding all of them), driven
 * by `connections` closed-loop clients scoring texts of 16, 64 and 256 tokens after a short prompt,
 * for each user drawn with Zipf(1.0) popularity: vanilla, through the user's adapter, and through
 * the adapter with the base model beside it (`compare`). Slices interleaved over `rounds` rounds.
 * Reports scored tokens/s, requests/s and the milliseconds per request of each setting.
 *
 *   npx tsx bench/score.ts [--users 50] [--rounds 3] [--seconds 2] [--warmup 0.5] [--connections 4]
 *
 * Writes bench/results/score.json.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../src/config.js';
import { openDb } from '../src/db/client.js';
import { Registry } from '../src/metrics.js';
import { loadTokenizer } from '../src/model/tokenizer.js';
import { createServeServices } from '../src/serve/services.js';
import type { RequestedMode } from '../src/serve/types.js';
import { Rng } from '../src/util/rng.js';
import { numberArg } from './args.js';
import { closedLoop, runUnderServeFlags, serveWorkspace } from './in-process.js';
import { preloadCache, prepareWorkspace, prompts, zipfSampler } from './swap-workspace.js';

runUnderServeFlags();

const ROUNDS = numberArg('rounds', 3);
const SECONDS = numberArg('seconds', 2);
const WARMUP = numberArg('warmup', 0.5);
const CONNECTIONS = numberArg('connections', 4);
const SEED = numberArg('seed', 1);
const progress = (line: string): void => void process.stderr.write(`${line}\n`);
const r3 = (x: number): number => Math.round(x * 1000) / 1000;

const ws = await prepareWorkspace({ users: numberArg('users', 50), seed: SEED, base: 'default', fresh: false });
serveWorkspace(ws);
const config = loadConfig();
const db = openDb(config.dbFile);
const logger = { info() {}, warn() {}, error: (msg: string, f?: unknown) => progress(`engine error: ${msg} ${JSON.stringify(f ?? {})}`) };
const services = await createServeServices({ config, db, metrics: new Registry(), logger }, { consistency: false });
if (!services?.generate || !(await services.loaded)) throw new Error(`no model at ${config.modelPath}`);
const gen = services.generate;
await preloadCache(db, services, SEED);
const tokenizer = loadTokenizer(config.modelPath);

/** A text of about `n` tokens: the first n tokens of the prompts run together, decoded. */
function textOf(n: number): string {
  const ids = tokenizer.encode(prompts(new Rng(SEED + n)).join(' '), { parseSpecial: false });
  if (ids.length < n) throw new Error(`only ${ids.length} tokens of text`);
  return tokenizer.decode(ids.slice(0, n));
}

const LENGTHS = [16, 64, 256];
const MODES: Array<{ name: string; mode: RequestedMode; compare: boolean }> = [
  { name: 'vanilla', mode: 'vanilla', compare: false },
  { name: 'adapter', mode: 'injected', compare: false },
  { name: 'adapter + base', mode: 'injected', compare: true },
];
const SETTINGS = LENGTHS.flatMap((n) => MODES.map((m) => ({ ...m, tokens: n, key: `${m.name} / ${n}`, text: textOf(n) })));
type Setting = (typeof SETTINGS)[number];

const totals = new Map(SETTINGS.map((s) => [s.key, { requests: 0, scored: 0, seconds: 0 }]));
async function slice(s: Setting, round: number): Promise<void> {
  const rng = new Rng(SEED * 1000 + round);
  const user = zipfSampler(ws.users.map((u) => u.id), rng);
  const context = prompts(rng);
  let n = 0;
  let scored = 0;
  const request = async (): Promise<number> => {
    const r = await gen.score({ userId: user(), prompt: context[n++ % context.length], text: s.text, mode: s.mode, compare: s.compare }, new AbortController().signal);
    if (s.mode === 'injected' && r.personalization.mode !== 'injected') throw new Error(`served ${r.personalization.mode}, not through the adapter`);
    scored = r.usage.scoredTokens;
    return 1;
  };
  const r = await closedLoop({ connections: CONNECTIONS, warmupS: WARMUP, seconds: SECONDS, request });
  const t = totals.get(s.key)!;
  t.requests += r.count;
  t.scored += r.count * scored;
  t.seconds += r.seconds;
}

progress(`score: ${ws.users.length} users with adapters, ${CONNECTIONS} clients, ${ROUNDS} rounds of ${SETTINGS.length} slices of ${SECONDS} s`);
for (let round = 0; round < ROUNDS; round++) {
  const order = SETTINGS.map((_, i) => SETTINGS[(i + round * 4) % SETTINGS.length]);
  for (const s of order) await slice(s, round);
  progress(`round ${round + 1}/${ROUNDS} done`);
}

const summary = SETTINGS.map((s) => {
  const t = totals.get(s.key)!;
  return {
    setting: s.name,
    textTokens: s.tokens,
    requestsPerS: r3(t.requests / t.seconds),
    scoredTokensPerS: r3(t.scored / t.seconds),
    // Closed loop: each client waits for its answer, so a request's time is connections / rate.
    msPerRequest: r3((1000 * CONNECTIONS * t.seconds) / t.requests),
  };
});
for (const s of summary) {
  progress(`${s.setting.padEnd(15)} ${String(s.textTokens).padStart(4)} tokens: ${s.requestsPerS.toFixed(1)} req/s, ${s.scoredTokensPerS.toFixed(0)} scored tokens/s, ${s.msPerRequest.toFixed(1)} ms a request`);
}
const resultsDir = join(dirname(fileURLToPath(import.meta.url)), 'results');
mkdirSync(resultsDir, { recursive: true });
writeFileSync(
  join(resultsDir, 'score.json'),
  `${JSON.stringify({ date: new Date().toISOString(), model: 'models/default', setup: { users: ws.users.length, connections: CONNECTIONS, rounds: ROUNDS, secondsPerSlice: SECONDS }, summary }, null, 2)}\n`,
);
await gen.close();
db.close();
