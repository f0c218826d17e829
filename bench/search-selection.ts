/**
 * Does the search's validation objective predict test ROUGE-L? (issue 6's real-injection criterion)
 *
 *   npx tsx bench/search-selection.ts run [--users K] [--skip S] [--budget 8] [--initial-points 4] [--seed 1] --out FILE
 *   npx tsx bench/search-selection.ts analyse FILE [FILE ...]
 *
 * `run`: for MedDia test users S..S+K-1, the MiLP search of the eval (warm start from the trained
 * default configuration, then quasi-random and BO trials), with every trial's adapter also scored on
 * the user's test pairs as it finishes. The search never sees those scores; they are only recorded,
 * with each trial's configuration and validation loss / ROUGE-L, the default's, and vanilla's.
 * `analyse`: over all recorded users, the test ROUGE-L that each selection rule would have reached
 * (best ROUGE-L within 2% of the best loss, the rule until this bench; best validation loss, the rule
 * since; best validation ROUGE-L; the 2% rule restricted to trials that beat the default on both
 * validation objectives; always the default; and the best trial in hindsight), wins / ties / losses against the default, and the rank correlation between each
 * validation objective and test ROUGE-L within a user. Writes FILE.md next to the first FILE.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { loadConfig } from '../src/config.js';
import { loadMedDia, toHistoryItems } from '../src/eval/meddia.js';
import { rougeL } from '../src/eval/metrics.js';
import { Injector } from '../src/inject/injector.js';
import { loadInjectionRecipe } from '../src/inject/recipe.js';
import { chooseTrial, formatProgress } from '../src/inject/search/index.js';
import type { Trial } from '../src/inject/search/index.js';
import { evaluateConfig, searchUser, trialSeed } from '../src/inject/search-user.js';
import { prepareUserData } from '../src/inject/user-data.js';
import { defaultSpec, specKey } from '../src/lora/spec.js';
import { Model } from '../src/model/model.js';
import { loadTokenizer } from '../src/model/tokenizer.js';

interface TrialRecord {
  index: number;
  config: string;
  valLoss: number;
  valRougeL: number;
  testRougeL: number;
}

interface UserRecord {
  userId: string;
  pairs: { train: number; val: number; test: number };
  vanillaTestRougeL: number;
  /** trials[0] is the default configuration (the warm start). */
  trials: TrialRecord[];
}

const args = process.argv.slice(2);
const opt = (name: string, d?: string): string | undefined => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : d;
};

async function run(): Promise<void> {
  const out = opt('out');
  if (!out) throw new Error('run needs --out FILE');
  const skip = Number(opt('skip', '0'));
  const k = Number(opt('users', '16'));
  const budget = Number(opt('budget', '8'));
  const initialPoints = Number(opt('initial-points', '4'));
  const seed = Number(opt('seed', '1'));
  const config = loadConfig();
  const recipe = loadInjectionRecipe(config.modelPath);
  const model = Model.load(config.modelPath, { runnerOptions: { intraOpThreads: config.intraOpThreads } });
  const injector = new Injector(model, loadTokenizer(config.modelPath));
  const med = loadMedDia();
  const users = med.testUserIds.slice(skip, skip + k);
  const train = { epochs: recipe.epochs, lr: recipe.lr };
  const records: UserRecord[] = [];
  const t0 = performance.now();
  for (const [ui, userId] of users.entries()) {
    const data = prepareUserData(injector, toHistoryItems(med.user(userId)!), seed);
    const test = data.split.test;
    const testRougeL = async (adapter?: Parameters<Injector['replies']>[1]): Promise<number> => {
      const replies = await injector.replies(test, adapter);
      return test.reduce((s, p, i) => s + rougeL(p.target, replies[i]).fmeasure, 0) / Math.max(1, test.length);
    };
    const rec: UserRecord = { userId, pairs: { train: data.split.train.length, val: data.split.val.length, test: test.length }, vanillaTestRougeL: await testRougeL(), trials: [] };
    const def = await evaluateConfig(injector, data, defaultSpec(model.config.nLayers), { ...train, seed: trialSeed(seed, 0) }, 0);
    rec.trials.push({ index: 0, config: specKey(def.spec), valLoss: def.valLoss, valRougeL: def.valRougeL, testRougeL: await testRougeL(def.adapter) });
    await searchUser(injector, data, {
      evaluated: [def],
      budget,
      initialPoints,
      nMax: recipe.nMax,
      seed,
      fit: 'map',
      train,
      onTrial: async (t) => {
        if (rec.trials.some((r) => r.index === t.trialIndex)) return; // the warm start, recorded above
        rec.trials.push({ index: t.trialIndex, config: specKey(t.spec), valLoss: t.valLoss, valRougeL: t.valRougeL, testRougeL: await testRougeL(t.adapter) });
      },
      onProgress: (e) => {
        const line = formatProgress(e);
        if (line && e.type === 'trial') process.stderr.write(`selection: ${userId} ${line}\n`);
      },
    });
    records.push(rec);
    writeFileSync(out, `${JSON.stringify({ command: `npx tsx bench/search-selection.ts ${args.join(' ')}`, budget, initialPoints, seed, train, nMax: recipe.nMax, users: records }, null, 2)}\n`);
    process.stderr.write(`selection: user ${ui + 1}/${users.length} (${userId}) done, ${((performance.now() - t0) / 60000).toFixed(1)} min\n`);
  }
  await model.close();
}

const mean = (xs: readonly number[]): number => xs.reduce((s, x) => s + x, 0) / Math.max(1, xs.length);

/** Spearman rank correlation (average ranks for ties); NaN with fewer than 3 points or no spread. */
function spearman(a: readonly number[], b: readonly number[]): number {
  const rank = (xs: readonly number[]): number[] => {
    const order = xs.map((x, i) => [x, i] as const).sort((p, q) => p[0] - q[0]);
    const r = new Array<number>(xs.length);
    for (let i = 0; i < order.length; ) {
      let j = i;
      while (j + 1 < order.length && order[j + 1][0] === order[i][0]) j++;
      for (let k = i; k <= j; k++) r[order[k][1]] = (i + j) / 2;
      i = j + 1;
    }
    return r;
  };
  if (a.length < 3) return Number.NaN;
  const ra = rank(a);
  const rb = rank(b);
  const ma = mean(ra);
  const mb = mean(rb);
  let num = 0;
  let da = 0;
  let db = 0;
  for (let i = 0; i < ra.length; i++) {
    num += (ra[i] - ma) * (rb[i] - mb);
    da += (ra[i] - ma) ** 2;
    db += (rb[i] - mb) ** 2;
  }
  return da > 0 && db > 0 ? num / Math.sqrt(da * db) : Number.NaN;
}

type Rule = (u: UserRecord) => TrialRecord;

const asTrials = (u: UserRecord): Trial[] =>
  u.trials.map((t) => ({ index: t.index, key: t.config, config: { layers: [], n: 0, r: 8 }, phase: 'bo', status: 'ok', loss: t.valLoss, rougeL: t.valRougeL, startedAt: '', durationMs: 0 }));

const RULES: Record<string, Rule> = {
  'best val ROUGE-L within 2% of the best val loss (Pareto front; the rule before this bench)': (u) => u.trials.find((t) => t.index === chooseTrial(asTrials(u), 0.02).trial!.index)!,
  'best val loss (the rule since this bench)': (u) => u.trials.find((t) => t.index === chooseTrial(asTrials(u), 0).trial!.index)!,
  'best val ROUGE-L': (u) => [...u.trials].sort((a, b) => b.valRougeL - a.valRougeL || a.index - b.index)[0],
  'the 2% rule among trials that beat the default on both val objectives (else the default)': (u) => {
    const d = u.trials[0];
    const better = u.trials.filter((t) => t.index === 0 || (t.valLoss < d.valLoss && t.valRougeL > d.valRougeL));
    return better.find((t) => t.index === chooseTrial(asTrials({ ...u, trials: better }), 0.02).trial!.index)!;
  },
  'always the default (all layers, n=1, r=8)': (u) => u.trials[0],
  'best test ROUGE-L in hindsight (not a rule: the ceiling)': (u) => [...u.trials].sort((a, b) => b.testRougeL - a.testRougeL)[0],
};

function analyse(files: string[]): void {
  const users = files.flatMap((f) => (JSON.parse(readFileSync(f, 'utf8')) as { users: UserRecord[] }).users);
  const pct = (x: number) => (100 * x).toFixed(2);
  const lines: string[] = [
    '# Which trial should the search choose? (bench/search-selection.ts)',
    '',
    `Command: \`npx tsx bench/search-selection.ts analyse ${files.join(' ')}\`; ${users.length} MedDia test users, ${users.reduce((s, u) => s + u.trials.length, 0)} trials, every trial scored on the user's test pairs after the search (the search never sees them).`,
    '',
    '| rule | mean test ROUGE-L F | vs the default: wins / ties / losses |',
    '| --- | --- | --- |',
  ];
  lines.push(`| no adapter (vanilla) | ${pct(mean(users.map((u) => u.vanillaTestRougeL)))} | – |`);
  for (const [name, rule] of Object.entries(RULES)) {
    let w = 0;
    let t = 0;
    let l = 0;
    const scores = users.map((u) => {
      const c = rule(u);
      const d = u.trials[0].testRougeL;
      if (c.index === 0 || Math.abs(c.testRougeL - d) < 1e-12) t++;
      else if (c.testRougeL > d) w++;
      else l++;
      return c.testRougeL;
    });
    lines.push(`| ${name} | ${pct(mean(scores))} | ${w} / ${t} / ${l} |`);
  }
  const rho = (key: 'valLoss' | 'valRougeL', sign: number) => users.map((u) => spearman(u.trials.map((t) => sign * t[key]), u.trials.map((t) => t.testRougeL))).filter((x) => Number.isFinite(x));
  const rl = rho('valRougeL', 1);
  const lo = rho('valLoss', -1);
  lines.push(
    '',
    'Rank correlation (Spearman) between a validation objective and test ROUGE-L across one user\'s trials, mean over users (1: the objective orders trials as the test does, 0: no relation):',
    '',
    `- validation ROUGE-L: ${mean(rl).toFixed(3)} (${rl.filter((x) => x > 0).length} of ${rl.length} users positive)`,
    `- validation loss (lower is better): ${mean(lo).toFixed(3)} (${lo.filter((x) => x > 0).length} of ${lo.length} users positive)`,
    '',
    '| user | val / test pairs | default val loss, val R-L, test R-L | 2% rule choice | its val loss, val R-L, test R-L | best-val-loss choice, test R-L | best test trial |',
    '| --- | --- | --- | --- | --- | --- | --- |',
  );
  for (const u of users) {
    const d = u.trials[0];
    const c = RULES[Object.keys(RULES)[0]](u);
    const l = RULES[Object.keys(RULES)[1]](u);
    const b = RULES[Object.keys(RULES)[5]](u);
    lines.push(`| ${u.userId} | ${u.pairs.val} / ${u.pairs.test} | ${d.valLoss.toFixed(4)}, ${pct(d.valRougeL)}, ${pct(d.testRougeL)} | ${c.config} | ${c.valLoss.toFixed(4)}, ${pct(c.valRougeL)}, ${pct(c.testRougeL)} | ${l.config} ${pct(l.testRougeL)} | ${b.config} ${pct(b.testRougeL)} |`);
  }
  const md = `${lines.join('\n')}\n`;
  writeFileSync(files[0].replace(/(-\w+)?\.json$/, '.md'), md);
  process.stdout.write(md);
}

if (args[0] === 'run') await run();
else if (args[0] === 'analyse') analyse(args.slice(1).filter((a) => !a.startsWith('--')));
else process.stderr.write('usage: npx tsx bench/search-selection.ts run --out FILE [--users K] [--skip S] | analyse FILE...\n');
