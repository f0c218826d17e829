/**
 * Sharing the batch between users: one heavy user's burst against everyone else, on two real
 * servers of the same build, MEMLORA_SCHEDULING=fair and =fifo, measured in one run in interleaved
 * slices.
 *
 *   npx tsx bench/fairness.ts [--users 1000] [--hog 24] [--others 8] [--max-tokens 32] [--layers all|any]
 *                             [--rounds 4] [--seconds 12] [--warmup 4] [--seed 1] [--quick]
 *                             [--plot-only]   (redraw fairness.svg from fairness.json)
 *
 * The users are bench/swap.ts's workspace (1,000 users with stored adapters of ranks 8-128 on mixed
 * layer sets, default model); each server's adapter cache holds all of them and is warmed first, and
 * prefix caching is off (MEMLORA_PREFIX_CACHE_BYTES=0: the heavy user's repeated prompts would
 * otherwise be cheaper than the others'), so the two servers differ in scheduling only. Load: the
 * heavy user ("hog") on `hog` closed-loop connections at once (a client
 * retrying in a loop, a batch job, a runaway integration), and `others` closed-loop connections each
 * sending one request at a time for a user drawn uniformly from the others (chat users). Every
 * request is a short chat prompt, greedy, `max-tokens` tokens, through the user's adapter. Each round
 * measures a slice of each server (order A B, then B A) after its own warm-up. The hog and the others
 * are the users whose adapters have the same merged rank on every layer (the workspace's most common
 * such rank; weights differ), so that a policy serving more of one class than the other changes
 * neither the work per request nor the layers a batch adapts. `--layers any`: the most common rank
 * and layer count with the layer sets mixed (results in <out>-mixed-layers.json): a batch of the
 * hog's rows then adapts fewer layers than a mix of users, which would favour fifo.
 *
 * Reported per server and class (hog, others): requests per second, latency p50/p99, time in the
 * queue (the response's timings.queueMs) p50/p99, refused requests; the others' latency ratio
 * fifo / fair (how much sooner a chat user is answered while the burst runs) and the total throughput
 * ratio fair / fifo in requests and in generated tokens per second (what sharing costs; replies end
 * early at EOS, by how much depends on the adapter and prompt, so the two policies' mixes may
 * differ in tokens a request). Writes bench/results/fairness.json (fairness-quick.json with
 * --quick) and .svg (the others' and the hog's latency distributions under each policy).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { lineChart } from '../src/plot/svg.js';
import { Rng } from '../src/util/rng.js';
import { flag, numberArg, stringArg } from './args.js';
import { type ServeProcess, startWorkspaceServer } from './server-process.js';
import { prepareWorkspace, prompts } from './swap-workspace.js';

const repo = join(import.meta.dirname, '..');
const QUICK = flag('quick');
const USERS = numberArg('users', 1000);
const HOG = numberArg('hog', 24);
const OTHERS = numberArg('others', 8);
const MAX_TOKENS = numberArg('max-tokens', 32);
const ROUNDS = numberArg('rounds', QUICK ? 2 : 4);
const SECONDS = numberArg('seconds', QUICK ? 6 : 12);
const WARMUP = numberArg('warmup', QUICK ? 2 : 4);
const SEED = numberArg('seed', 1);
const LAYERS = stringArg('layers', 'all');
if (LAYERS !== 'all' && LAYERS !== 'any') throw new Error(`--layers must be all or any, got ${LAYERS}`);
const OUT = stringArg('out', QUICK ? 'fairness-quick' : 'fairness') + (LAYERS === 'any' ? '-mixed-layers' : '');
const progress = (line: string): void => void process.stderr.write(`${line}\n`);
const r2 = (x: number): number => Math.round(x * 100) / 100;
const r3 = (x: number): number => Math.round(x * 1000) / 1000;

type Policy = 'fair' | 'fifo';
type Class = 'hog' | 'others';

interface Server extends ServeProcess {
  name: Policy;
}

interface Sample {
  cls: Class;
  ms: number;
  queueMs: number;
  /** Tokens generated: replies end early at EOS, and how early depends on the adapter and prompt. */
  tokens: number;
}

interface Slice {
  samples: Sample[];
  seconds: number;
  refused: Record<Class, number>;
  errors: number;
}

/** The hog's and the others' closed loops against one server for `seconds` (new requests stop then; those running finish). */
async function drive(server: Server, hog: string, others: readonly string[], seconds: number, rng: Rng): Promise<Slice> {
  const texts = prompts(rng);
  const samples: Sample[] = [];
  const refused: Record<Class, number> = { hog: 0, others: 0 };
  let errors = 0;
  const t0 = performance.now();
  const until = t0 + seconds * 1000;
  const loop = async (cls: Class, user: () => string): Promise<void> => {
    while (performance.now() < until) {
      const start = performance.now();
      const res = await fetch(`${server.url}/v1/generate`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ userId: user(), prompt: texts[rng.int(texts.length)], maxTokens: MAX_TOKENS, temperature: 0 }),
      });
      const body = (await res.json()) as { timings?: { queueMs: number }; usage?: { completionTokens: number }; personalization?: { mode: string } };
      if (res.status === 429) {
        refused[cls] += 1;
        await new Promise((r) => setTimeout(r, Number(res.headers.get('retry-after') ?? 1) * 1000));
        continue;
      }
      if (!res.ok || body.personalization?.mode !== 'injected') {
        errors += 1;
        continue;
      }
      samples.push({ cls, ms: performance.now() - start, queueMs: body.timings!.queueMs, tokens: body.usage!.completionTokens });
    }
  };
  await Promise.all([
    ...Array.from({ length: HOG }, () => loop('hog', () => hog)),
    ...Array.from({ length: OTHERS }, () => loop('others', () => others[rng.int(others.length)])),
  ]);
  return { samples, seconds: (performance.now() - t0) / 1000, refused, errors };
}

const quantile = (xs: readonly number[], q: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(q * s.length))] : Number.NaN;
};

function summary(slices: readonly Slice[]) {
  const seconds = slices.reduce((a, s) => a + s.seconds, 0);
  const all = slices.flatMap((s) => s.samples);
  const of = (cls: Class) => {
    const xs = all.filter((x) => x.cls === cls);
    return {
      requests: xs.length,
      reqPerS: r2(xs.length / seconds),
      tokensPerS: r2(xs.reduce((a, x) => a + x.tokens, 0) / seconds),
      tokensPerRequest: r2(xs.reduce((a, x) => a + x.tokens, 0) / xs.length),
      p50Ms: r2(quantile(xs.map((x) => x.ms), 0.5)),
      p99Ms: r2(quantile(xs.map((x) => x.ms), 0.99)),
      queueP50Ms: r2(quantile(xs.map((x) => x.queueMs), 0.5)),
      queueP99Ms: r2(quantile(xs.map((x) => x.queueMs), 0.99)),
      refused: slices.reduce((a, s) => a + s.refused[cls], 0),
      /** Latency quantiles 0.01 .. 1 (the plot's distribution). */
      cdf: Array.from({ length: 100 }, (_, i) => r2(quantile(xs.map((x) => x.ms), (i + 1) / 100))),
    };
  };
  return { reqPerS: r2(all.length / seconds), tokensPerS: r2(all.reduce((a, x) => a + x.tokens, 0) / seconds), errors: slices.reduce((a, s) => a + s.errors, 0), hog: of('hog'), others: of('others') };
}

type Summary = ReturnType<typeof summary>;

/** Latency distributions (share of requests answered within x ms) per class and policy. */
function plot(r: { config: { hog: number; others: number }; fair: Summary; fifo: Summary }): string {
  const line = (name: string, cdf: readonly number[]) => ({ name, points: cdf.map((ms, i) => [ms, (i + 1) / 100] as const) });
  return lineChart({
    title: `One user on ${r.config.hog} connections, ${r.config.others} chat users: latency`,
    x: { label: 'latency (ms)', min: 0 },
    y: { label: 'share of requests answered', min: 0, max: 1 },
    series: [line('others, fair', r.fair.others.cdf), line('others, fifo', r.fifo.others.cdf), line('hog, fair', r.fair.hog.cdf), line('hog, fifo', r.fifo.hog.cdf)],
  });
}

if (flag('plot-only')) {
  const file = join(repo, 'bench', 'results', `${OUT}.json`);
  writeFileSync(file.replace(/\.json$/, '.svg'), plot(JSON.parse(readFileSync(file, 'utf8'))));
  progress(`wrote bench/results/${OUT}.svg from ${OUT}.json`);
  process.exit(0);
}

const ws = await prepareWorkspace({ users: USERS, seed: SEED, base: 'default', fresh: false });
// Every user of the load has an adapter of the same merged rank on every layer (the workspace's most
// common rank among its all-layer adapters), so that neither the work per request nor the layers a
// batch adapts depend on whose rows are in it: the throughput ratio is then what the policy costs.
// (A batch of one user's rows adapts only that user's layers; rows of users with different layer
// sets adapt the union, which costs more. --layers any takes the most common rank and layer count
// instead, layer sets mixed, to measure that too.)
const allLayers = Math.max(...ws.users.map((u) => u.layers));
const groups = new Map<string, typeof ws.users>();
for (const u of ws.users) {
  if (LAYERS === 'all' && u.layers !== allLayers) continue;
  const key = `${u.rank}x${u.layers}`;
  groups.set(key, [...(groups.get(key) ?? []), u]);
}
const group = [...groups.values()].reduce((a, b) => (b.length > a.length ? b : a));
const hog = group[0].id;
const others = group.slice(1).map((u) => u.id);
const shape = { rank: group[0].rank, layers: group[0].layers };
progress(`workspace ${ws.dir}: ${ws.users.length} users, ${group.length} with rank ${shape.rank} on ${shape.layers} layers (${LAYERS === 'all' ? 'all' : 'sets mixed'}): hog ${hog} on ${HOG} connections, ${OTHERS} connections of the other ${others.length}`);
const servers: Server[] = [];
try {
  for (const name of ['fair', 'fifo'] as const) {
    const t = performance.now();
    const env = { MEMLORA_SCHEDULING: name, MEMLORA_PREFIX_CACHE_BYTES: '0', MEMLORA_MAX_QUEUE: '256' };
    servers.push({ name, ...(await startWorkspaceServer(ws, name, env, SEED)) });
    progress(`${name} server ready and warmed in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  }
  const slices: Record<Policy, Slice[]> = { fair: [], fifo: [] };
  const perRound: Array<{ round: number; othersP50Ratio: number; throughputRatio: number; tokenThroughputRatio: number }> = [];
  for (let round = 0; round < ROUNDS; round++) {
    const order = round % 2 === 0 ? servers : [...servers].reverse();
    const got: Partial<Record<Policy, Slice>> = {};
    for (const s of order) {
      await drive(s, hog, others, WARMUP, new Rng(SEED * 1000 + 500 + round));
      const slice = await drive(s, hog, others, SECONDS, new Rng(SEED * 1000 + round));
      slices[s.name].push(slice);
      got[s.name] = slice;
      const n = (cls: Class) => slice.samples.filter((x) => x.cls === cls).length;
      progress(`round ${round + 1}/${ROUNDS} ${s.name}: hog ${n('hog')} others ${n('others')} requests in ${slice.seconds.toFixed(1)} s, others p50 ${quantile(slice.samples.filter((x) => x.cls === 'others').map((x) => x.ms), 0.5).toFixed(0)} ms, ${slice.refused.hog + slice.refused.others} refused, ${slice.errors} errors`);
    }
    const p50 = (s: Slice) => quantile(s.samples.filter((x) => x.cls === 'others').map((x) => x.ms), 0.5);
    const rate = (s: Slice) => s.samples.length / s.seconds;
    const tokenRate = (s: Slice) => s.samples.reduce((a, x) => a + x.tokens, 0) / s.seconds;
    perRound.push({ round: round + 1, othersP50Ratio: r3(p50(got.fifo!) / p50(got.fair!)), throughputRatio: r3(rate(got.fair!) / rate(got.fifo!)), tokenThroughputRatio: r3(tokenRate(got.fair!) / tokenRate(got.fifo!)) });
  }
  const fair = summary(slices.fair);
  const fifo = summary(slices.fifo);
  const result = {
    command: `npx tsx bench/fairness.ts ${process.argv.slice(2).join(' ')}`.trim(),
    date: new Date().toISOString(),
    config: { model: ws.modelKind, users: ws.users.length, hogUser: hog, otherUsers: others.length, adapter: { ...shape, layerSets: LAYERS === 'all' ? 'all layers' : 'mixed' }, hog: HOG, others: OTHERS, maxTokens: MAX_TOKENS, rounds: ROUNDS, seconds: SECONDS, warmup: WARMUP, seed: SEED, maxBatch: 8 },
    /** How many times longer a chat user waits for a reply under fifo than under fair. */
    othersLatencyRatio: { p50: r3(fifo.others.p50Ms / fair.others.p50Ms), p99: r3(fifo.others.p99Ms / fair.others.p99Ms) },
    othersThroughputRatio: r3(fair.others.reqPerS / fifo.others.reqPerS),
    hogThroughputRatio: r3(fair.hog.reqPerS / fifo.hog.reqPerS),
    /** All requests: what sharing the rows costs, in requests and in generated tokens per second. */
    throughputRatio: r3(fair.reqPerS / fifo.reqPerS),
    tokenThroughputRatio: r3(fair.tokensPerS / fifo.tokensPerS),
    perRound,
    fair,
    fifo,
  };
  const resultsDir = join(repo, 'bench', 'results');
  writeFileSync(join(resultsDir, `${OUT}.json`), `${JSON.stringify(result, null, 2)}\n`);
  writeFileSync(join(resultsDir, `${OUT}.svg`), plot(result));
  for (const [name, s] of [['fair', fair], ['fifo', fifo]] as const) {
    progress(`${name}: ${s.reqPerS} req/s, ${s.tokensPerS} tokens/s; others ${s.others.tokensPerRequest} tokens a request, hog ${s.hog.tokensPerRequest}; others ${s.others.reqPerS} req/s p50/p99 ${s.others.p50Ms}/${s.others.p99Ms} ms (queue ${s.others.queueP50Ms}/${s.others.queueP99Ms}); hog ${s.hog.reqPerS} req/s p50/p99 ${s.hog.p50Ms}/${s.hog.p99Ms} ms (queue ${s.hog.queueP50Ms}/${s.hog.queueP99Ms}); refused hog ${s.hog.refused} others ${s.others.refused}; errors ${s.errors}`);
  }
  progress(`others' latency fifo/fair: p50 ${result.othersLatencyRatio.p50}x, p99 ${result.othersLatencyRatio.p99}x; others' throughput fair/fifo ${result.othersThroughputRatio}x; hog ${result.hogThroughputRatio}x; total ${result.throughputRatio}x (tokens/s ${result.tokenThroughputRatio}x)`);
  progress(`wrote bench/results/${OUT}.json and ${OUT}.svg`);
} finally {
  for (const s of servers) s.proc.kill('SIGTERM');
}
