/** `memlora ablate`: the paper's Table 5 design (which parts of the configuration to search), ablation.ts. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import type { Command } from '../cli.js';
import { loadConfig, repoRoot } from '../config.js';
import { Injector } from '../inject/injector.js';
import { loadInjectionRecipe } from '../inject/recipe.js';
import { Model } from '../model/model.js';
import { loadTokenizer } from '../model/tokenizer.js';
import { ABLATION_VARIANTS, type AblationOptions, type AblationUser, type AblationVariant, ablateUser, ablationTable, summariseAblation } from './ablation.js';
import { loadMedDia } from './meddia.js';

const USAGE = `usage: memlora ablate [--variants default,layers,n,r,layers+n,layers+r,n+r,all] [--users K | --user ID]
                      [--budget N] [--initial-points N] [--n-max N] [--epochs N] [--lr X] [--seed N]
                      [--no-warm-start] [--out bench/results/ablation]

For each of the first K MedDia test users (docs/DATA.md), runs one MiLP search per variant, searching
only the named parts of the configuration and holding the rest at the fixed default (all layers, n=1,
r=8); "default" searches nothing. Every search starts from the trained default configuration (it lies in
every variant's subspace) unless --no-warm-start. Prints, and writes to <out>.json and <out>.md, the test ROUGE-1/L of
each variant's chosen adapter (mean over users, 95% bootstrap interval) beside vanilla. --n-max,
--epochs and --lr default to the model's injection.json (src/inject/recipe.ts).
Model: MEMLORA_MODEL_PATH (default models/default).
`;

export const ablateCommand: Command = {
  name: 'ablate',
  describe: 'search-space ablation (the paper Table 5): search layers / n / r / pairs / all on MedDia test users',
  async run(argv) {
    const { values } = parseArgs({
      args: argv,
      options: {
        variants: { type: 'string' },
        users: { type: 'string' },
        user: { type: 'string' },
        budget: { type: 'string' },
        'initial-points': { type: 'string' },
        'n-max': { type: 'string' },
        epochs: { type: 'string' },
        lr: { type: 'string' },
        seed: { type: 'string' },
        out: { type: 'string' },
        'no-warm-start': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    });
    if (values.help) return void process.stdout.write(USAGE);
    const fail = (line: string): number => (process.stderr.write(`memlora ablate: ${line}\n`), 2);
    const variants = (values.variants ?? ABLATION_VARIANTS.join(',')).split(',').map((v) => v.trim()) as AblationVariant[];
    const bad = variants.filter((v) => !ABLATION_VARIANTS.includes(v));
    if (bad.length) return fail(`unknown variants ${bad.join(', ')} (choose from ${ABLATION_VARIANTS.join(', ')})`);
    const nums: Record<string, number | undefined> = {};
    for (const k of ['users', 'budget', 'initial-points', 'n-max', 'epochs', 'lr', 'seed'] as const) {
      const v = values[k];
      if (v === undefined) continue;
      const x = Number(v);
      if (!Number.isFinite(x) || x < 0) return fail(`--${k} must be a non-negative number, got ${JSON.stringify(v)}`);
      nums[k] = x;
    }
    const med = loadMedDia();
    if (values.user !== undefined && !med.user(values.user)) return fail(`no MedDia user ${JSON.stringify(values.user)}`);
    const users = values.user !== undefined ? [values.user] : med.testUserIds.slice(0, nums.users ?? 3);
    const config = loadConfig();
    const recipe = loadInjectionRecipe(config.modelPath);
    const model = Model.load(config.modelPath, { runnerOptions: { intraOpThreads: config.intraOpThreads } });
    const injector = new Injector(model, loadTokenizer(config.modelPath));
    const opts: AblationOptions = {
      variants,
      budget: nums.budget ?? 8,
      initialPoints: nums['initial-points'] ?? 4,
      nMax: nums['n-max'] ?? recipe.nMax,
      seed: nums.seed ?? 1,
      warmStartDefault: !values['no-warm-start'],
      train: { epochs: nums.epochs ?? recipe.epochs, lr: nums.lr ?? recipe.lr },
      log: (line) => process.stderr.write(`${line}\n`),
    };
    const t0 = performance.now();
    const results: AblationUser[] = [];
    for (const [i, u] of users.entries()) {
      results.push(await ablateUser(injector, med, u, opts));
      opts.log(`ablate: user ${i + 1}/${users.length} done; ${((performance.now() - t0) / 60000).toFixed(1)} min elapsed`);
    }
    const rows = summariseAblation(results, variants);
    const table = ablationTable(rows);
    const minutes = (performance.now() - t0) / 60000;
    const command = `npx tsx src/cli.ts ablate ${argv.join(' ')}`.trim();
    const out = values.out ?? join(repoRoot, 'bench', 'results', 'ablation');
    mkdirSync(dirname(out), { recursive: true });
    const { log: _log, ...settings } = opts;
    writeFileSync(`${out}.json`, `${JSON.stringify({ command, minutes, settings, model: config.modelPath, rows, users: results }, null, 2)}\n`);
    writeFileSync(
      `${out}.md`,
      `# Search-space ablation (the paper's Table 5 design)\n\nCommand: \`${command}\` (${minutes.toFixed(1)} minutes on this machine), ` +
        `users: ${users.join(', ')}.\n\n${table}\n\nChosen configurations:\n\n` +
        results.map((u) => `- ${u.userId}: ${Object.entries(u.variants).map(([v, c]) => `${v} → ${c!.config} (${c!.trials} trials)`).join('; ')}`).join('\n') +
        '\n',
    );
    process.stdout.write(`${table}\n`);
    await model.close();
    return 0;
  },
};
