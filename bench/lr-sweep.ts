/**
 * The learning-rate sweep behind models/default/injection.json: one MedDia test user, the fixed
 * default configuration (all layers, n=1, r=8), batch 8, each setting trained with the same seed;
 * validation loss and ROUGE-L (what the search sees) and test loss and ROUGE-L F beside vanilla.
 *
 *   npx tsx bench/lr-sweep.ts [--user meddia-u06]
 *
 * Writes bench/results/lr-sweep.json.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig, repoRoot } from '../src/config.js';
import { loadMedDia, toHistoryItems } from '../src/eval/meddia.js';
import { Injector } from '../src/inject/injector.js';
import { evaluateConfig } from '../src/inject/search-user.js';
import { prepareUserData } from '../src/inject/user-data.js';
import { defaultSpec } from '../src/lora/spec.js';
import { Model } from '../src/model/model.js';
import { loadTokenizer } from '../src/model/tokenizer.js';

const { values } = parseArgs({ options: { user: { type: 'string' } } });
const config = loadConfig();
const model = Model.load(config.modelPath, { runnerOptions: { intraOpThreads: 1 } });
const injector = new Injector(model, loadTokenizer(config.modelPath));
const med = loadMedDia();
const userId = values.user ?? med.testUserIds[0];
const data = prepareUserData(injector, toHistoryItems(med.user(userId)), 1);
const f4 = (x: number): string => x.toFixed(4);
const vanilla = {
  valLoss: await injector.loss(data.val),
  valRougeL: await injector.rougeL(data.split.val),
  testLoss: await injector.loss(data.test),
  testRougeL: await injector.rougeL(data.split.test),
};
console.log(`${userId}: ${data.train.length} train / ${data.val.length} val / ${data.test.length} test pairs`);
console.log(`vanilla: val loss ${f4(vanilla.valLoss)} R-L ${f4(vanilla.valRougeL)}, test loss ${f4(vanilla.testLoss)} R-L ${f4(vanilla.testRougeL)}`);
const settings: [number, number][] = [[5e-4, 4], [2e-3, 4], [5e-3, 4], [1e-2, 4], [5e-3, 2]];
const runs = [];
for (const [lr, epochs] of settings) {
  const t = await evaluateConfig(injector, data, defaultSpec(model.config.nLayers), { lr, epochs, seed: 1 });
  const run = { lr, epochs, steps: t.steps, valLoss: t.valLoss, valRougeL: t.valRougeL, testLoss: await injector.loss(data.test, t.adapter), testRougeL: await injector.rougeL(data.split.test, t.adapter), seconds: t.seconds };
  runs.push(run);
  console.log(`lr ${lr} x ${epochs} epochs: val loss ${f4(run.valLoss)} R-L ${f4(run.valRougeL)}, test loss ${f4(run.testLoss)} R-L ${f4(run.testRougeL)} (${run.steps} steps, ${run.seconds.toFixed(1)} s)`);
}
mkdirSync(join(repoRoot, 'bench', 'results'), { recursive: true });
writeFileSync(join(repoRoot, 'bench', 'results', 'lr-sweep.json'), `${JSON.stringify({ command: 'npx tsx bench/lr-sweep.ts', model: config.modelPath, user: userId, vanilla, runs }, null, 2)}\n`);
await model.close();
