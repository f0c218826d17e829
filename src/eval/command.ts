/** `memlora eval`: the Vanilla / memory / MiLP comparison on MedDia's test users (runner.ts). */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { Command } from '../cli.js';
import { loadConfig, repoRoot } from '../config.js';
import { Injector } from '../inject/injector.js';
import { loadInjectionRecipe } from '../inject/recipe.js';
import { Model } from '../model/model.js';
import { loadTokenizer } from '../model/tokenizer.js';
import { loadMedDia } from './meddia.js';
import { markdownTable, summarise } from './report.js';
import { type EvalOptions, METHODS, type Method, type UserResult, evaluateUser } from './runner.js';

const USAGE = `usage: memlora eval [--dataset meddia] [--methods vanilla,memory,default,milp,milp+memory] [--users K]
                    [--budget N] [--initial-points N] [--n-max N] [--time-budget-min M]
                    [--epochs N] [--lr X] [--seed N] [--out bench/results]

Answers every test pair of MedDia's held-out test users (docs/DATA.md) with each method and prints the
table of the paper's Table 3 (ROUGE-1, ROUGE-L F-measure, Persona-F1, and ROUGE recall beside them)
with per-user bootstrap 95% intervals; writes <out>/eval-meddia.json and .md. --n-max bounds the number
of parallel LoRAs searched; --n-max, --epochs and --lr default to the model's injection.json
(src/inject/recipe.ts), else 32 and the paper's 4 epochs at 5e-4. --time-budget-min caps each user's search in wall-clock minutes.
Model: MEMLORA_MODEL_PATH (default models/default).
`;

export const evalCommand: Command = {
  name: 'eval',
  describe: 'compare vanilla, retrieved memory and MiLP injection on MedDia test users',
  async run(argv) {
    const { values } = parseArgs({
      args: argv,
      options: {
        dataset: { type: 'string' },
        methods: { type: 'string' },
        users: { type: 'string' },
        budget: { type: 'string' },
        'initial-points': { type: 'string' },
        'n-max': { type: 'string' },
        'time-budget-min': { type: 'string' },
        epochs: { type: 'string' },
        lr: { type: 'string' },
        seed: { type: 'string' },
        out: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    });
    if (values.help) return void process.stdout.write(USAGE);
    if ((values.dataset ?? 'meddia') !== 'meddia') {
      process.stderr.write(`memlora eval: only --dataset meddia is available offline\n`);
      return 2;
    }
    const methods = (values.methods ?? 'vanilla,memory,milp').split(',').map((m) => m.trim()) as Method[];
    const bad = methods.filter((m) => !METHODS.includes(m));
    if (bad.length) {
      process.stderr.write(`memlora eval: unknown methods ${bad.join(', ')} (choose from ${METHODS.join(', ')})\n`);
      return 2;
    }
    const num = (v: string | undefined, d: number): number => {
      if (v === undefined) return d;
      const x = Number(v);
      if (!Number.isFinite(x) || x < 0) throw new Error(`memlora eval: expected a non-negative number, got ${JSON.stringify(v)}`);
      return x;
    };
    const config = loadConfig();
    const recipe = loadInjectionRecipe(config.modelPath);
    const model = Model.load(config.modelPath, { runnerOptions: { intraOpThreads: config.intraOpThreads } });
    const tokenizer = loadTokenizer(config.modelPath);
    const injector = new Injector(model, tokenizer);
    const med = loadMedDia();
    const opts: EvalOptions = {
      methods,
      users: values.users === undefined ? undefined : num(values.users, 0),
      budget: num(values.budget, 12),
      initialPoints: num(values['initial-points'], 6),
      nMax: values['n-max'] === undefined ? recipe.nMax : num(values['n-max'], 32),
      timeBudgetMs: values['time-budget-min'] === undefined ? undefined : num(values['time-budget-min'], 0) * 60_000,
      seed: num(values.seed, 1),
      memoryK: 5,
      train: { epochs: values.epochs === undefined ? recipe.epochs : num(values.epochs, 4), lr: values.lr === undefined ? recipe.lr : num(values.lr, 5e-4) },
      log: (line) => process.stderr.write(`${line}\n`),
    };
    const users = med.testUserIds.slice(0, opts.users ?? med.testUserIds.length);
    const t0 = performance.now();
    const results: UserResult[] = [];
    for (const [i, u] of users.entries()) {
      const ur = await evaluateUser(injector, med, u, opts);
      results.push(ur);
      const done = (performance.now() - t0) / 60000;
      opts.log(`eval: user ${i + 1}/${users.length} done (${u}${ur.chosen ? `, chose ${ur.chosen.config}` : ''}); ${done.toFixed(1)} min elapsed, eta ${((done / (i + 1)) * (users.length - i - 1)).toFixed(1)} min`);
    }
    const summary = summarise(results, methods);
    const table = markdownTable(summary);
    const minutes = (performance.now() - t0) / 60000;
    const command = `npx tsx src/cli.ts eval ${argv.join(' ')}`.trim();
    const out = values.out ?? join(repoRoot, 'bench', 'results');
    mkdirSync(out, { recursive: true });
    const { log: _log, ...settings } = opts;
    writeFileSync(join(out, 'eval-meddia.json'), `${JSON.stringify({ command, minutes, settings, model: config.modelPath, summary, users: results }, null, 2)}\n`);
    writeFileSync(
      join(out, 'eval-meddia.md'),
      `# MedDia evaluation\n\nCommand: \`${command}\` (${minutes.toFixed(1)} minutes on this machine).\n` +
        `${users.length} test users, ${results.reduce((s, r) => s + r.pairs.test, 0)} test pairs. Scores are means over users of per-user means, ` +
        `in percent, with 95% bootstrap intervals over users. ROUGE is reported as F-measure (LaMP) and recall (MSP) beside it.\n\n${table}\n`,
    );
    process.stdout.write(`${table}\n`);
    await model.close();
    return 0;
  },
};
