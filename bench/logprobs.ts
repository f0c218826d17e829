/**
 * What log-probabilities cost a served request: one real engine (createServeServices, as the server
 * builds it, serving defaults: maxBatch 8, base weights baked in) on the default model, driven by
 * `connections` closed-loop clients of short prompts and seeded replies of `max-tokens`, in
 * interleaved slices without logprobs and with logprobs and 0, 5 and 20 alternatives per token (the
 * order rotated each round). Reports completion tokens/s of each setting and its ratio to no
 * logprobs, per round and overall, and (as the machine's drift between slices is larger than the
 * cost) the time per token spent where logprobs add work, timed inside the engine by wrapping
 * Sequence.next (sampling, and with logprobs the log-softmax over the vocabulary and the top-k
 * selection) and TokenTexts.describe (the token texts and bytes): its extra over no logprobs, next
 * to the wall time per token of the same slices.
 *
 *   npx tsx bench/logprobs.ts [--rounds 6] [--seconds 3] [--warmup 1] [--connections 16] [--max-tokens 32]
 *
 * Writes bench/results/logprobs.json.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../src/config.js';
import { openDb } from '../src/db/client.js';
import { Registry } from '../src/metrics.js';
import { Sequence } from '../src/model/sequence.js';
import { TokenTexts } from '../src/serve/logprobs.js';
import { createServeServices } from '../src/serve/services.js';
import type { ServeRequest } from '../src/serve/types.js';
import { Rng } from '../src/util/rng.js';
import { numberArg } from './args.js';
import { closedLoop, runUnderServeFlags, timeCalls } from './in-process.js';
import { prompts } from './swap-workspace.js';

runUnderServeFlags();

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const ROUNDS = numberArg('rounds', 6);
const SECONDS = numberArg('seconds', 3);
const WARMUP = numberArg('warmup', 1);
const CONNECTIONS = numberArg('connections', 16);
const MAX_TOKENS = numberArg('max-tokens', 32);
const progress = (line: string): void => void process.stderr.write(`${line}\n`);
const r3 = (x: number): number => Math.round(x * 1000) / 1000;

const dataDir = mkdtempSync(join(tmpdir(), 'memlora-bench-logprobs-'));
Object.assign(process.env, {
  MEMLORA_DATA_DIR: dataDir,
  MEMLORA_MODEL_PATH: join(root, 'models', 'default'),
  MEMLORA_PREFIX_CACHE_BYTES: '0',
  MEMLORA_CACHE_RESTORE: 'off',
  MEMLORA_MAX_QUEUE: '256',
});
const config = loadConfig();
const db = openDb(config.dbFile);
const logger = { info() {}, warn() {}, error: (msg: string, f?: unknown) => progress(`engine error: ${msg} ${JSON.stringify(f ?? {})}`) };
const services = await createServeServices({ config, db, metrics: new Registry(), logger }, { adapters: false, consistency: false });
if (!services?.generate || !(await services.loaded)) throw new Error(`no model at ${config.modelPath}`);
const engine = services.generate;

// Time inside the calls that logprobs make heavier, by the setting being measured.
let measuring: string | null = null;
const inside = new Map<string, number>();
const addInside = (_args: unknown[], ms: number): void => {
  if (measuring) inside.set(measuring, (inside.get(measuring) ?? 0) + ms);
};
timeCalls(Sequence.prototype, 'next', addInside);
timeCalls(TokenTexts.prototype, 'describe', addInside);

const SETTINGS = [
  { name: 'off', logprobs: false },
  { name: 'top 0', logprobs: true, topLogprobs: 0 },
  { name: 'top 5', logprobs: true, topLogprobs: 5 },
  { name: 'top 20', logprobs: true, topLogprobs: 20 },
] as const;
type Setting = (typeof SETTINGS)[number];

/** Completion tokens answered in the measured seconds, `connections` clients each sending its next request when the last is answered. */
async function slice(setting: Setting, round: number): Promise<{ tokens: number; seconds: number }> {
  const rng = new Rng(1000 + round); // the same request stream for every setting in a round
  const texts = prompts(rng);
  const { name, ...asked } = setting;
  let n = 0;
  const request = async (): Promise<number> => {
    const i = n++;
    const req: ServeRequest = { userId: `u${i % 64}`, prompt: texts[i % texts.length], maxTokens: MAX_TOKENS, temperature: 0.8, topP: 0.95, seed: i, stop: [], stream: false, mode: 'vanilla', ...asked };
    const res = await engine.generate(req, new AbortController().signal);
    if (asked.logprobs && res.logprobs?.length !== res.usage.completionTokens) throw new Error('logprobs missing');
    return res.usage.completionTokens;
  };
  const r = await closedLoop({ connections: CONNECTIONS, warmupS: WARMUP, seconds: SECONDS, request, onWindow: (open) => (measuring = open ? name : null) });
  return { tokens: r.count, seconds: r.seconds };
}

const totals = new Map<string, { tokens: number; seconds: number }>(SETTINGS.map((s) => [s.name, { tokens: 0, seconds: 0 }]));
const rounds: Array<Record<string, number>> = [];
for (let round = 0; round < ROUNDS; round++) {
  const order = SETTINGS.map((_, i) => SETTINGS[(i + round) % SETTINGS.length]);
  const tps: Record<string, number> = {};
  for (const s of order) {
    const r = await slice(s, round);
    const t = totals.get(s.name)!;
    t.tokens += r.tokens;
    t.seconds += r.seconds;
    tps[s.name] = r.tokens / r.seconds;
  }
  rounds.push(Object.fromEntries(SETTINGS.map((s) => [s.name, r3(tps[s.name] / tps.off)])));
  progress(`round ${round + 1}/${ROUNDS}: ${SETTINGS.map((s) => `${s.name} ${tps[s.name].toFixed(0)} tok/s`).join(', ')}`);
}

const tokensPerS = (name: string): number => totals.get(name)!.tokens / totals.get(name)!.seconds;
// Microseconds per token: inside the timed calls, and the wall (the served tokens are counted at the
// answer, the calls as they run: the same slices, so the two agree to within the requests in flight).
const usInside = (name: string): number => (1000 * (inside.get(name) ?? 0)) / totals.get(name)!.tokens;
const summary = SETTINGS.map((s) => ({
  setting: s.name,
  tokensPerS: r3(tokensPerS(s.name)),
  ratioToOff: r3(tokensPerS(s.name) / tokensPerS('off')),
  perRound: rounds.map((r) => r[s.name]),
  usPerTokenWall: r3(1e6 / tokensPerS(s.name)),
  usPerTokenSamplingAndLogprobs: r3(usInside(s.name)),
  usPerTokenExtra: r3(usInside(s.name) - usInside('off')),
}));
for (const s of summary) {
  progress(
    `${s.setting.padEnd(6)} ${s.tokensPerS.toFixed(0)} tok/s, ${s.ratioToOff.toFixed(3)}x no logprobs (per round ${Math.min(...s.perRound).toFixed(2)}-${Math.max(...s.perRound).toFixed(2)}); ` +
      `per token ${s.usPerTokenSamplingAndLogprobs.toFixed(1)} us in sampling and logprobs (+${s.usPerTokenExtra.toFixed(1)} us over off) of ${s.usPerTokenWall.toFixed(0)} us wall`,
  );
}

const resultsDir = join(root, 'bench', 'results');
mkdirSync(resultsDir, { recursive: true });
writeFileSync(
  join(resultsDir, 'logprobs.json'),
  `${JSON.stringify({ date: new Date().toISOString(), model: 'models/default', setup: { maxBatch: config.maxBatch, connections: CONNECTIONS, maxTokens: MAX_TOKENS, rounds: ROUNDS, secondsPerSlice: SECONDS }, summary }, null, 2)}\n`,
);
await services.generate.close();
db.close();
rmSync(dataDir, { recursive: true, force: true });
