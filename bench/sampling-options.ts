/**
 * What a request's per-token options cost it: one real engine (createServeServices, as the server
 * builds it, serving defaults: maxBatch 8, base weights baked in) on the default model, driven by
 * `connections` closed-loop clients of short prompts and seeded replies of `max-tokens` (temperature
 * 0.8, top-p 0.95), in interleaved slices (the order rotated each round) of: plain sampling;
 * log-probabilities with 0, 5 and 20 alternatives per token; frequency and presence penalties; a
 * logit bias on 300 token ids; all the shapers at once (bias, repetition, frequency and presence
 * penalties); and JSON mode (responseFormat json_object: the grammar's mask over the vocabulary at
 * every step; its replies end when their object closes, so they are shorter); a JSON schema's
 * documents (responseFormat json_schema: the schema's automaton, its masks per state); a pattern
 * (guidedRegex: its NFA's masks per state set); and a guided choice
 * among four strings (replies of a few tokens). Reports completion tokens/s of each setting and its ratio to plain, per round and
 * overall, and (as the machine's drift between slices is larger than the cost) the time per token
 * spent where the options add work, timed inside the engine by wrapping Sequence.next (shaping the
 * logits, sampling, and with logprobs the log-softmax over the vocabulary and the top-k selection)
 * and TokenTexts.describe (the token texts and bytes): its extra over plain, next to the wall time
 * per token of the same slices. The replies' tokens differ between settings (the shapers change what
 * is drawn, and so how wide the top-p nucleus is), so the logits' shaping alone is also timed
 * directly: shapeLogits on one row of the vocabulary with a reply's history (a 20-token prompt and
 * `max-tokens` generated tokens), microseconds per call.
 *
 *   npx tsx bench/sampling-options.ts [--rounds 6] [--seconds 3] [--warmup 1] [--connections 16] [--max-tokens 32]
 *
 * Writes bench/results/sampling-options.json.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../src/config.js';
import { openDb } from '../src/db/client.js';
import { Registry } from '../src/metrics.js';
import { countsTokens, shapeLogits } from '../src/model/sampling.js';
import { Sequence } from '../src/model/sequence.js';
import { TokenTexts } from '../src/serve/logprobs.js';
import { samplingOf } from '../src/serve/sampling.js';
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

const dataDir = mkdtempSync(join(tmpdir(), 'memlora-bench-sampling-'));
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
const engineVocab = (JSON.parse(readFileSync(join(config.modelPath, 'config.json'), 'utf8')) as { vocab_size: number }).vocab_size;

// Time inside the calls that the options make heavier, by the setting being measured.
let measuring: string | null = null;
const inside = new Map<string, number>();
const addInside = (_args: unknown[], ms: number): void => {
  if (measuring) inside.set(measuring, (inside.get(measuring) ?? 0) + ms);
};
timeCalls(Sequence.prototype, 'next', addInside);
timeCalls(TokenTexts.prototype, 'describe', addInside);

/** 300 token ids spread over the vocabulary, each pushed down a little (none banned: the replies keep their length). */
const BIAS_300 = Object.fromEntries(Array.from({ length: 300 }, (_, i) => [String(7 + i * 6), -2]));

/** A schema of the kind structured outputs ask for: a bounded string, a boolean, an enum and an optional list. */
const DISH = {
  type: 'object',
  properties: {
    dish: { type: 'string', maxLength: 40 },
    vegetarian: { type: 'boolean' },
    course: { enum: ['starter', 'main', 'dessert'] },
    sides: { type: 'array', items: { type: 'string', maxLength: 20 }, maxItems: 3 },
  },
  required: ['dish', 'vegetarian', 'course'],
  additionalProperties: false,
};

type Setting = { name: string } & Partial<Pick<ServeRequest, 'logprobs' | 'topLogprobs' | 'frequencyPenalty' | 'presencePenalty' | 'repetitionPenalty' | 'logitBias' | 'responseFormat' | 'guidedChoice' | 'guidedRegex'>>;
const SETTINGS: readonly Setting[] = [
  { name: 'plain' },
  { name: 'logprobs top 0', logprobs: true, topLogprobs: 0 },
  { name: 'logprobs top 5', logprobs: true, topLogprobs: 5 },
  { name: 'logprobs top 20', logprobs: true, topLogprobs: 20 },
  { name: 'frequency + presence', frequencyPenalty: 0.5, presencePenalty: 0.5 },
  { name: 'logit bias 300', logitBias: BIAS_300 },
  { name: 'all shapers', frequencyPenalty: 0.5, presencePenalty: 0.5, repetitionPenalty: 1.1, logitBias: BIAS_300 },
  { name: 'json object', responseFormat: { type: 'json_object' } },
  { name: 'json schema', responseFormat: { type: 'json_schema', jsonSchema: { name: 'dish', schema: DISH } } },
  { name: 'guided regex', guidedRegex: '(Yes|No), [a-z ]{8,60}\\.' },
  { name: 'guided choice', guidedChoice: ['yes, of course', 'no, thank you', 'maybe later', 'I am not sure yet'] },
];
const PLAIN = SETTINGS[0].name;

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
  rounds.push(Object.fromEntries(SETTINGS.map((s) => [s.name, r3(tps[s.name] / tps[PLAIN])])));
  progress(`round ${round + 1}/${ROUNDS}: ${SETTINGS.map((s) => `${s.name} ${tps[s.name].toFixed(0)} tok/s`).join(', ')}`);
}

const tokensPerS = (name: string): number => totals.get(name)!.tokens / totals.get(name)!.seconds;
// Microseconds per token: inside the timed calls, and the wall (the served tokens are counted at the
// answer, the calls as they run: the same slices, so the two agree to within the requests in flight).
const usInside = (name: string): number => (1000 * (inside.get(name) ?? 0)) / totals.get(name)!.tokens;
/** Microseconds per shapeLogits call with the setting's options on a row of the vocabulary and a reply's history. */
function shapeUs(setting: Setting): number {
  const v = engineVocab;
  const rng = new Rng(7);
  const row = Float32Array.from({ length: v }, () => rng.uniform() * 8 - 4);
  const opts = samplingOf({ temperature: 0.8, topP: 0.95, ...setting }, v);
  const seen = new Set<number>();
  const counts = new Map<number, number>();
  for (let i = 0; i < 20; i++) seen.add(Math.floor(rng.uniform() * v));
  for (let i = 0; i < MAX_TOKENS; i++) {
    const t = Math.floor(rng.uniform() * v);
    seen.add(t);
    counts.set(t, (counts.get(t) ?? 0) + 1);
  }
  const history = { seen, counts: countsTokens(opts) ? counts : undefined };
  const calls = 20_000;
  let sink = 0;
  for (let i = 0; i < 2000; i++) sink += shapeLogits(row, opts, history)[i % v];
  const t0 = performance.now();
  for (let i = 0; i < calls; i++) sink += shapeLogits(row, opts, history)[i % v];
  const us = ((performance.now() - t0) * 1000) / calls;
  if (Number.isNaN(sink)) throw new Error('NaN logits');
  return us;
}

const summary = SETTINGS.map((s) => ({
  setting: s.name,
  tokensPerS: r3(tokensPerS(s.name)),
  ratioToPlain: r3(tokensPerS(s.name) / tokensPerS(PLAIN)),
  perRound: rounds.map((r) => r[s.name]),
  usPerTokenWall: r3(1e6 / tokensPerS(s.name)),
  usPerTokenInSampling: r3(usInside(s.name)),
  usPerTokenExtra: r3(usInside(s.name) - usInside(PLAIN)),
  usPerShapeLogits: r3(shapeUs(s)),
}));
for (const s of summary) {
  progress(
    `${s.setting.padEnd(20)} ${s.tokensPerS.toFixed(0)} tok/s, ${s.ratioToPlain.toFixed(3)}x plain (per round ${Math.min(...s.perRound).toFixed(2)}-${Math.max(...s.perRound).toFixed(2)}); ` +
      `per token ${s.usPerTokenInSampling.toFixed(1)} us in sampling (+${s.usPerTokenExtra.toFixed(1)} us over plain) of ${s.usPerTokenWall.toFixed(0)} us wall; shaping the logits ${s.usPerShapeLogits.toFixed(2)} us`,
  );
}

const resultsDir = join(root, 'bench', 'results');
mkdirSync(resultsDir, { recursive: true });
writeFileSync(
  join(resultsDir, 'sampling-options.json'),
  `${JSON.stringify({ date: new Date().toISOString(), model: 'models/default', setup: { maxBatch: config.maxBatch, connections: CONNECTIONS, maxTokens: MAX_TOKENS, rounds: ROUNDS, secondsPerSlice: SECONDS }, summary }, null, 2)}\n`,
);
await services.generate.close();
db.close();
rmSync(dataDir, { recursive: true, force: true });
