/**
 * What injection buys a user, read through POST /v1/score: MedDia test users are served by a real
 * memlora server (in this process, the default model) with their history minus held-out
 * conversations; each gets an adapter from an injection job (POST /v1/admin/users/{id}/inject, a
 * search of `budget` trials; budget 1 trains its first trial only, the job's starting configuration,
 * recorded per user in the results; `force` so the adapter serves even where the quality gate would
 * keep the base model, whose decision is reported); then
 * every held-out doctor reply is scored after its conversation so far, through the user's adapter
 * and with their retrieved memory, each with the base model beside it (`compare`). The lift of a
 * reply is its mean log-probability per token minus the base model's (nats per token; > 0: the
 * personalisation made the user's real reply likelier).
 *
 *   npx tsx bench/score-lift.ts [--users 4] [--budget 1] [--seed 1]
 *
 * Writes bench/results/score-lift.json and score-lift.svg (mean lift per user, adapter and memory).
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../src/config.js';
import { scoreResultSchema } from '../src/http/schemas.js';
import { loadMedDia, toHistoryItems } from '../src/eval/meddia.js';
import { type TrainingPair, buildDataset } from '../src/inject/dataset.js';
import { PALETTE, barChart } from '../src/plot/svg.js';
import { startServer } from '../src/server.js';
import { numberArg } from './args.js';

const USERS = numberArg('users', 4);
const BUDGET = numberArg('budget', 1);
const SEED = numberArg('seed', 1);
const TOKEN = 'score-lift-admin-token';
const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const progress = (line: string): void => void process.stderr.write(`${line}\n`);
const r4 = (x: number): number => Math.round(x * 1e4) / 1e4;
const mean = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

const dir = mkdtempSync(join(tmpdir(), 'memlora-score-lift-'));
const config = loadConfig({
  MEMLORA_PORT: '0',
  MEMLORA_DATA_DIR: join(dir, 'data'),
  MEMLORA_ADAPTER_DIR: join(dir, 'adapters'),
  MEMLORA_MODEL_PATH: join(root, 'models', 'default'),
  MEMLORA_ADMIN_TOKEN: TOKEN,
  MEMLORA_CACHE_RESTORE: 'off',
});
const quiet = { info() {}, warn() {}, error: (msg: string, f?: unknown) => progress(`server error: ${msg} ${JSON.stringify(f ?? {})}`) };
const server = await startServer(config, { handleSignals: false, logger: quiet, print: () => {} });
const admin = { authorization: `Bearer ${TOKEN}` };

async function call(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; json: any }> {
  const res = await fetch(`${server.url}${path}`, {
    method,
    headers: { ...headers, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, json: await res.json().catch(() => null) };
}

async function must(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<any> {
  const r = await call(method, path, body, headers);
  if (r.status >= 300) throw new Error(`${method} ${path} answered ${r.status}: ${JSON.stringify(r.json)}`);
  return r.json;
}

for (let i = 0; (await fetch(`${server.url}/readyz`)).status !== 200; i++) {
  if (i > 600) throw new Error('the model never became ready');
  await new Promise((r) => setTimeout(r, 100));
}

/** Score a held-out reply after its conversation, dropping the oldest messages (after a profile) until it fits the window. */
async function score(userId: string, pair: TrainingPair, mode: 'injected' | 'memory') {
  let context = pair.context;
  for (;;) {
    const r = await call('POST', '/v1/score', { userId, messages: context, text: pair.target, mode, compare: true });
    if (r.status === 200) return { result: scoreResultSchema.parse(r.json), dropped: pair.context.length - context.length };
    const keep = context[0]?.role === 'system' ? 1 : 0;
    if (r.json?.error?.code !== 'prompt_too_long' || context.length <= keep + 1) return null;
    context = [...context.slice(0, keep), ...context.slice(keep + 1)];
  }
}

const med = loadMedDia();
const userIds = med.testUserIds.slice(0, USERS);
const perUser: Array<Record<string, unknown>> = [];
for (const userId of userIds) {
  const items = toHistoryItems(med.user(userId));
  const split = buildDataset(items, { seed: SEED });
  const heldOut = new Set(split.groups.test);
  const known = items.filter((i) => !heldOut.has(`conversation:${i.conversationId}`));
  await must('PUT', `/v1/users/${userId}`);
  for (let k = 0; k < known.length; k += 1000) {
    const batch = known.slice(k, k + 1000).map((i) => ({ kind: i.kind, role: i.role, text: i.text, conversationId: i.conversationId, createdAt: new Date(i.createdAt).toISOString() }));
    await must('POST', `/v1/users/${userId}/history`, { items: batch });
  }
  const t0 = performance.now();
  const job = await must('POST', `/v1/admin/users/${userId}/inject`, { budget: BUDGET, initialPoints: 1, seed: SEED, force: true }, admin);
  let state = job;
  for (let i = 0; !['succeeded', 'rejected', 'failed', 'cancelled'].includes(state.state); i++) {
    await new Promise((r) => setTimeout(r, 1000));
    state = await must('GET', `/v1/admin/jobs/${job.id}`, undefined, admin);
    if (i % 15 === 14) progress(`  ${userId}: job ${state.state}, ${JSON.stringify(state.progress ?? {})}`);
  }
  const injectS = (performance.now() - t0) / 1000;
  progress(`${userId}: ${known.length} history items stored (${items.length - known.length} held out, ${split.test.length} replies), injection ${state.state} in ${injectS.toFixed(0)} s`);
  if (state.state !== 'succeeded') throw new Error(`injection of ${userId} ended ${state.state}: ${JSON.stringify(state.error ?? state.result)}`);
  const lifts: Record<'injected' | 'memory', number[]> = { injected: [], memory: [] };
  const tokens = { injected: { own: 0, base: 0, n: 0 }, memory: { own: 0, base: 0, n: 0 } };
  let skipped = 0;
  let servedAs: unknown = null;
  for (const pair of split.test) {
    for (const mode of ['injected', 'memory'] as const) {
      const s = await score(userId, pair, mode);
      if (!s) {
        skipped++;
        continue;
      }
      const r = s.result;
      if (mode === 'injected') servedAs = r.personalization;
      lifts[mode].push(r.meanLogprob - r.base!.meanLogprob);
      tokens[mode].own += r.logprob;
      tokens[mode].base += r.base!.logprob;
      tokens[mode].n += r.usage.scoredTokens;
    }
  }
  const row = {
    userId,
    heldOutReplies: split.test.length,
    skipped,
    injectSeconds: r4(injectS),
    jobResult: state.result,
    servedAs,
    adapterLift: r4(mean(lifts.injected)),
    adapterLiftPerToken: r4((tokens.injected.own - tokens.injected.base) / tokens.injected.n),
    adapterImproved: r4(lifts.injected.filter((x) => x > 0).length / Math.max(1, lifts.injected.length)),
    memoryLift: r4(mean(lifts.memory)),
    memoryLiftPerToken: r4((tokens.memory.own - tokens.memory.base) / tokens.memory.n),
    memoryImproved: r4(lifts.memory.filter((x) => x > 0).length / Math.max(1, lifts.memory.length)),
    baseMeanLogprob: r4(tokens.injected.base / tokens.injected.n),
  };
  perUser.push(row);
  progress(`  lift (nats/token, mean over replies): adapter ${row.adapterLift} (${(row.adapterImproved * 100).toFixed(0)}% of replies likelier), memory ${row.memoryLift} (${(row.memoryImproved * 100).toFixed(0)}%); base ${row.baseMeanLogprob} per token`);
}

const summary = {
  users: perUser.length,
  adapterLift: r4(mean(perUser.map((u) => u.adapterLift as number))),
  adapterUsersImproved: perUser.filter((u) => (u.adapterLift as number) > 0).length,
  memoryLift: r4(mean(perUser.map((u) => u.memoryLift as number))),
  memoryUsersImproved: perUser.filter((u) => (u.memoryLift as number) > 0).length,
};
progress(`over ${summary.users} users: adapter lift ${summary.adapterLift} nats/token (${summary.adapterUsersImproved} users better), memory lift ${summary.memoryLift} (${summary.memoryUsersImproved} users better)`);
const resultsDir = join(root, 'bench', 'results');
mkdirSync(resultsDir, { recursive: true });
writeFileSync(join(resultsDir, 'score-lift.json'), `${JSON.stringify({ date: new Date().toISOString(), model: 'models/default', setup: { users: USERS, budget: BUDGET, seed: SEED }, summary, perUser }, null, 2)}\n`);
writeFileSync(
  join(resultsDir, 'score-lift.svg'),
  barChart({
    title: 'Held-out replies: mean lift over the base model per user (nats/token); A adapter (blue), M memory (orange)',
    width: 1400,
    y: { label: 'nats per token' },
    bars: perUser.flatMap((u) => {
      const short = (u.userId as string).replace(/^meddia-/, '');
      return [
        { label: `${short} A`, value: u.adapterLift as number, color: PALETTE[0] },
        { label: `${short} M`, value: u.memoryLift as number, color: PALETTE[1] },
      ];
    }),
  }),
);
await server.close();
rmSync(dir, { recursive: true, force: true });
