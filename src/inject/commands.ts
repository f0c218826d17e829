/**
 * `memlora inject` (train one configuration for a user) and `memlora search` (the MiLP search for a
 * user). Both read the user's history from the service database, write the adapter to the store and
 * record it as a new adapter version; progress lines go to stderr, the result as JSON to stdout.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { Command } from '../cli.js';
import { loadConfig } from '../config.js';
import { createAdapterVersion } from '../db/queries/adapters.js';
import { userExists } from '../db/queries/users.js';
import type { Adapter } from '../lora/adapter.js';
import { userDirName } from '../lora/paths.js';
import { type AdapterSpec, parseAdapterSpec, specKey } from '../lora/spec.js';
import { type InjectContext, openInjectContext, userHistory } from './context.js';
import { frontSvg } from './front-plot.js';
import { JsonFileTrialStore, formatProgress } from './search/index.js';
import { evaluateConfig, searchUser } from './search-user.js';
import { loadInjectionRecipe } from './recipe.js';
import { prepareUserData } from './user-data.js';

const err = (line: string): boolean => process.stderr.write(`${line}\n`);

class UsageError extends Error {}

function positive(v: string | undefined, name: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`--${name} must be a positive number, got ${JSON.stringify(v)}`);
  return n;
}

async function withContext<T>(userId: string, fn: (ctx: InjectContext) => Promise<T>): Promise<T> {
  const ctx = openInjectContext(loadConfig());
  try {
    if (!userExists(ctx.db, userId)) throw new UsageError(`no user ${JSON.stringify(userId)} in ${ctx.db.file}`);
    return await fn(ctx);
  } finally {
    await ctx.close();
  }
}

/** Store the adapter and record it as the user's next version. */
async function saveVersion(ctx: InjectContext, userId: string, adapter: Adapter, metrics: Record<string, number | string>, activate: boolean): Promise<number> {
  const w = await ctx.store.write(userId, adapter);
  try {
    const row = createAdapterVersion(ctx.db, {
      userId,
      config: { layers: adapter.spec.layers, n: adapter.spec.n, r: adapter.spec.r, ...(adapter.spec.alpha !== undefined ? { alpha: adapter.spec.alpha } : {}) },
      filePath: w.path,
      sha256: w.sha256,
      metrics,
      status: 'ready',
      activate,
    });
    return row.version;
  } catch (e) {
    await ctx.store.remove(w.path);
    throw e;
  }
}

/** Training options: the flags, else the base model's injection recipe, else the trainer's defaults. */
function recipeTrain(values: { epochs?: string; lr?: string }): { epochs?: number; lr?: number } {
  const recipe = loadInjectionRecipe(loadConfig().modelPath);
  return { epochs: positive(values.epochs, 'epochs') ?? recipe.epochs, lr: positive(values.lr, 'lr') ?? recipe.lr };
}

const TRAIN_OPTIONS = {
  epochs: { type: 'string' },
  lr: { type: 'string' },
  seed: { type: 'string' },
  'no-activate': { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

const INJECT_USAGE = `usage: memlora inject --user <id> --config '{"layers":[true,...],"n":1,"r":8}' [--epochs N] [--lr X] [--seed N] [--no-activate]

Trains one LoRA configuration on the user's history (70% train, early-stopped on the 10% validation
split), prints validation loss and ROUGE-L, writes the adapter and records it as the user's next
adapter version (active unless --no-activate). Reads MEMLORA_* configuration (README).
--epochs and --lr default to the base model's injection.json (src/inject/recipe.ts), else 4 and 5e-4.
`;

export const injectCommand: Command = {
  name: 'inject',
  describe: 'train one adapter configuration for a user and store it as a new adapter version',
  async run(argv) {
    try {
      const { values } = parseArgs({ args: argv, options: { user: { type: 'string' }, config: { type: 'string' }, ...TRAIN_OPTIONS }, strict: true });
      if (values.help) return void process.stdout.write(INJECT_USAGE);
      if (!values.user || !values.config) throw new UsageError('--user and --config are required');
      const raw = JSON.parse(values.config) as unknown;
      const userId = values.user;
      const out = await withContext(userId, async (ctx) => {
        const spec: AdapterSpec = parseAdapterSpec(raw, ctx.model.config.nLayers);
        const data = prepareUserData(ctx.injector, userHistory(ctx.db, userId));
        err(`inject: user ${userId}: ${data.train.length} train / ${data.val.length} val / ${data.test.length} test pairs; config ${specKey(spec)}`);
        const t = await evaluateConfig(
          ctx.injector,
          data,
          spec,
          { ...recipeTrain(values), seed: positive(values.seed, 'seed') ?? 0 },
          0,
          (_i, p) => err(`inject: step ${p.step}/${p.totalSteps} loss ${p.smoothLoss.toFixed(4)}${p.valLoss !== undefined ? ` val ${p.valLoss.toFixed(4)}` : ''}`),
        );
        const metrics = { valLoss: t.valLoss, valRougeL: t.valRougeL, trainSeconds: t.seconds, steps: t.steps };
        const version = await saveVersion(ctx, userId, t.adapter, metrics, !values['no-activate']);
        return { userId, version, active: !values['no-activate'], config: spec, ...metrics };
      });
      process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
      return 0;
    } catch (e) {
      if (e instanceof UsageError || e instanceof SyntaxError) {
        err(`memlora inject: ${e.message}\n\n${INJECT_USAGE}`);
        return 2;
      }
      throw e;
    }
  },
};

const SEARCH_USAGE = `usage: memlora search --user <id> [--budget 20] [--initial-points 8] [--fit map|nuts] [--epochs N] [--lr X] [--seed N] [--no-activate]

The MiLP search for one user: Bayesian optimisation (SAAS GP, NEHVI) over which layers to inject, how
many LoRAs and their rank, trading validation loss against ROUGE-L. Prints a line per trial, writes
the trials and the Pareto front (SVG) under <data dir>/searches/<user>/, and stores the chosen
configuration's adapter as the user's next version (active unless --no-activate). A rerun resumes
from the saved trials. --epochs, --lr and the largest n searched come from the base model's
injection.json when it has one (src/inject/recipe.ts).
`;

export const searchCommand: Command = {
  name: 'search',
  describe: 'run the MiLP configuration search for a user and store the chosen adapter',
  async run(argv) {
    try {
      const { values } = parseArgs({
        args: argv,
        options: { user: { type: 'string' }, budget: { type: 'string' }, 'initial-points': { type: 'string' }, fit: { type: 'string' }, ...TRAIN_OPTIONS },
        strict: true,
      });
      if (values.help) return void process.stdout.write(SEARCH_USAGE);
      if (!values.user) throw new UsageError('--user is required');
      if (values.fit && values.fit !== 'map' && values.fit !== 'nuts') throw new UsageError('--fit must be map or nuts');
      const userId = values.user;
      const budget = positive(values.budget, 'budget') ?? 20;
      const config = loadConfig();
      const dir = join(config.dataDir, 'searches', userDirName(userId));
      mkdirSync(dir, { recursive: true });
      const out = await withContext(userId, async (ctx) => {
        const data = prepareUserData(ctx.injector, userHistory(ctx.db, userId));
        err(`search: user ${userId}: ${data.train.length} train / ${data.val.length} val / ${data.test.length} test pairs; budget ${budget}`);
        const res = await searchUser(ctx.injector, data, {
          budget,
          initialPoints: positive(values['initial-points'], 'initial-points') ?? 8,
          fit: (values.fit as 'map' | 'nuts' | undefined) ?? 'map',
          seed: positive(values.seed, 'seed') ?? 1,
          nMax: loadInjectionRecipe(config.modelPath).nMax,
          train: recipeTrain(values),
          store: new JsonFileTrialStore(join(dir, 'trials.json')),
          onProgress: (e) => {
            const line = formatProgress(e);
            if (line) err(`search: ${line}`);
          },
        });
        writeFileSync(join(dir, 'front.svg'), frontSvg(res.search.trials, `MiLP search, user ${userId}`));
        err(`search: Pareto front written to ${join(dir, 'front.svg')}`);
        if (!res.chosen) return { userId, chosen: null, rule: res.search.rule, trials: res.search.trials.length };
        const c = res.chosen;
        const metrics = { valLoss: c.valLoss, valRougeL: c.valRougeL, trainSeconds: c.seconds, steps: c.steps, trials: res.search.trials.length };
        const version = await saveVersion(ctx, userId, c.adapter, metrics, !values['no-activate']);
        return { userId, version, config: c.spec, rule: res.search.rule, front: res.search.front.map((t) => ({ config: specKey(t.config), loss: t.loss, rougeL: t.rougeL })), ...metrics };
      });
      process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
      return 0;
    } catch (e) {
      if (e instanceof UsageError) {
        err(`memlora search: ${e.message}\n\n${SEARCH_USAGE}`);
        return 2;
      }
      throw e;
    }
  },
};
