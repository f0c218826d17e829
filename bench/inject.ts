/**
 * Injection speed on this machine: training tokens per second of LoRA train steps, and the wall time
 * to inject one MedDia user with a fixed configuration (train + early stopping + the two objectives),
 * measured in one run.
 *
 *   npx tsx bench/inject.ts [--user meddia-u06] [--n 1] [--r 8] [--epochs N] [--lr X]   (default: the model's injection.json)
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig, repoRoot } from '../src/config.js';
import { loadMedDia, toHistoryItems } from '../src/eval/meddia.js';
import { Injector } from '../src/inject/injector.js';
import { loadInjectionRecipe } from '../src/inject/recipe.js';
import { evaluateConfig } from '../src/inject/search-user.js';
import { prepareUserData } from '../src/inject/user-data.js';
import type { Rank } from '../src/lora/spec.js';
import { Model } from '../src/model/model.js';
import { loadTokenizer } from '../src/model/tokenizer.js';

const { values } = parseArgs({ options: { user: { type: 'string' }, n: { type: 'string' }, r: { type: 'string' }, epochs: { type: 'string' }, lr: { type: 'string' } } });
const config = loadConfig();
const model = Model.load(config.modelPath);
const tokenizer = loadTokenizer(config.modelPath);
const injector = new Injector(model, tokenizer);
const med = loadMedDia();
const userId = values.user ?? med.testUserIds[0];
const spec = { layers: Array(model.config.nLayers).fill(true), n: Number(values.n ?? 1), r: Number(values.r ?? 8) as Rank };
// Training settings: the flags, else the model's injection recipe (models/default/injection.json).
const recipe = loadInjectionRecipe(config.modelPath);
const train = { epochs: values.epochs ? Number(values.epochs) : recipe.epochs, lr: values.lr ? Number(values.lr) : recipe.lr, seed: 1 };

const t0 = performance.now();
const data = prepareUserData(injector, toHistoryItems(med.user(userId)!), 1);
const prepMs = performance.now() - t0;
// Warm-up: compile the train-step graph once so the figures are steady-state.
await injector.train(spec, data.train.slice(0, 8), data.val.slice(0, 1), { epochs: 1 });
const t1 = performance.now();
const outcome = await evaluateConfig(injector, data, spec, train);
const totalMs = performance.now() - t1;
const trained = await injector.train(spec, data.train, [], { ...train, epochs: 1 });
const tokensPerSec = trained.result.tokens / (trained.result.elapsedMs / 1000);
const allTokens = data.train.reduce((s, e) => s + e.inputIds.length, 0);
const result = {
  model: config.modelPath,
  user: userId,
  pairs: { train: data.train.length, val: data.val.length, test: data.test.length },
  config: spec,
  train,
  trainingTokensPerSecond: { supervised: tokensPerSec, processed: allTokens / (trained.result.elapsedMs / 1000) },
  injectSeconds: totalMs / 1000,
  trainSeconds: outcome.seconds,
  objectiveSeconds: totalMs / 1000 - outcome.seconds,
  steps: outcome.steps,
  valLoss: outcome.valLoss,
  valRougeL: outcome.valRougeL,
  dataPrepSeconds: prepMs / 1000,
};
console.log(
  `inject bench: user ${userId} (${data.train.length} train / ${data.val.length} val pairs), config all layers n=${spec.n} r=${spec.r}\n` +
    `  training throughput: ${result.trainingTokensPerSecond.processed.toFixed(0)} tokens/s processed (${tokensPerSec.toFixed(0)} supervised target tokens/s)\n` +
    `  inject one user: ${result.injectSeconds.toFixed(1)} s (training ${outcome.seconds.toFixed(1)} s over ${outcome.steps} steps, objectives ${result.objectiveSeconds.toFixed(1)} s)\n` +
    `  validation loss ${outcome.valLoss.toFixed(4)}, ROUGE-L ${outcome.valRougeL.toFixed(4)}`,
);
const out = join(repoRoot, 'bench', 'results');
mkdirSync(out, { recursive: true });
writeFileSync(join(out, 'inject.json'), `${JSON.stringify(result, null, 2)}\n`);
await model.close();
