/**
 * Does injection put facts into the model? Synthetic persona users (src/eval/persona.ts) state a pet's
 * name, a medication and a city in varied wording and are asked about them with training question
 * wordings; probes ask with held-out wordings. For each user an adapter is trained on the history's
 * training and test splits (the probes are the test here; early-stopped on its validation split); then, on the probes, we compare the
 * reference-answer loss and whether the greedy answer contains the fact, vanilla vs injected.
 *
 *   npx tsx bench/persona.ts [--users 8] [--epochs 15] [--lr 3e-3] [--n 4] [--r 16] [--patience 100]
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig, repoRoot } from '../src/config.js';
import { containsFact, makePersonaUsers } from '../src/eval/persona.js';
import type { TrainingPair } from '../src/inject/dataset.js';
import { Injector } from '../src/inject/injector.js';
import { prepareUserData } from '../src/inject/user-data.js';
import { Model } from '../src/model/model.js';
import { loadTokenizer } from '../src/model/tokenizer.js';
import type { Rank } from '../src/lora/spec.js';

const { values } = parseArgs({
  options: { patience: { type: "string" }, users: { type: "string" }, epochs: { type: 'string' }, lr: { type: 'string' }, n: { type: 'string' }, r: { type: 'string' }, out: { type: 'string' } },
});
const users = Number(values.users ?? 8);
const epochs = Number(values.epochs ?? 15);
const lr = Number(values.lr ?? 3e-3);
const n = Number(values.n ?? 4);
const r = Number(values.r ?? 16) as Rank;
const config = loadConfig();
const model = Model.load(config.modelPath);
const tokenizer = loadTokenizer(config.modelPath);
const injector = new Injector(model, tokenizer, { maxNewTokens: 24 });
const spec = { layers: Array(model.config.nLayers).fill(true), n, r };
console.log(`persona bench: model ${config.modelPath}, ${users} users, config all layers n=${n} r=${r}, ${epochs} epochs, lr ${lr}`);

const rows: { user: string; vanillaLoss: number; injectedLoss: number; vanillaHits: number; injectedHits: number; probes: number; seconds: number; examples: string[] }[] = [];
for (const u of makePersonaUsers(users, 1)) {
  const data = prepareUserData(injector, u.history, 1);
  const probes: TrainingPair[] = u.probes.map((p, i) => ({ group: `probe:${i}`, kind: 'dialogue', context: [{ role: 'user', content: p.question }], target: p.answer, targetItemId: -1 }));
  const probeExamples = injector.examples(probes);
  // The probes are this bench's test set, so the history's own test split joins the training data.
  const t = await injector.train(spec, [...data.train, ...data.test], data.val, { epochs, lr, seed: 1, patience: Number(values.patience ?? 100) });
  const vanillaLoss = await injector.loss(probeExamples);
  const injectedLoss = await injector.loss(probeExamples, t.adapter);
  const vanillaReplies = await injector.replies(probes);
  const injectedReplies = await injector.replies(probes, t.adapter);
  const hits = (replies: string[]): number => replies.filter((rep, i) => containsFact(rep, u.probes[i].fact)).length;
  const row = {
    user: u.id,
    vanillaLoss,
    injectedLoss,
    vanillaHits: hits(vanillaReplies),
    injectedHits: hits(injectedReplies),
    probes: probes.length,
    seconds: t.seconds,
    examples: u.probes.map((p, i) => `${p.question} -> ${injectedReplies[i]}`),
  };
  rows.push(row);
  console.log(
    `${u.id}: probe loss ${vanillaLoss.toFixed(3)} -> ${injectedLoss.toFixed(3)} (${(100 * (1 - injectedLoss / vanillaLoss)).toFixed(1)}% lower), ` +
      `facts in answers ${row.vanillaHits}/${row.probes} -> ${row.injectedHits}/${row.probes}, trained in ${t.seconds.toFixed(1)} s (${t.result.steps} steps)\n    ${row.examples.join("\n    ")}`,
  );
}
const mean = (f: (x: (typeof rows)[number]) => number): number => rows.reduce((s, x) => s + f(x), 0) / rows.length;
const summary = {
  model: config.modelPath,
  config: { ...spec, epochs, lr },
  users: rows.length,
  probes: rows.reduce((s, x) => s + x.probes, 0),
  vanillaProbeLoss: mean((x) => x.vanillaLoss),
  injectedProbeLoss: mean((x) => x.injectedLoss),
  lossDrop: 1 - mean((x) => x.injectedLoss) / mean((x) => x.vanillaLoss),
  vanillaFactRate: rows.reduce((s, x) => s + x.vanillaHits, 0) / rows.reduce((s, x) => s + x.probes, 0),
  injectedFactRate: rows.reduce((s, x) => s + x.injectedHits, 0) / rows.reduce((s, x) => s + x.probes, 0),
  secondsPerUser: mean((x) => x.seconds),
};
console.log(
  `\nprobe-answer loss ${summary.vanillaProbeLoss.toFixed(3)} (vanilla) -> ${summary.injectedProbeLoss.toFixed(3)} (injected): ${(100 * summary.lossDrop).toFixed(1)}% lower (target >= 30%)\n` +
    `greedy answers containing the fact: ${(100 * summary.vanillaFactRate).toFixed(1)}% (vanilla) -> ${(100 * summary.injectedFactRate).toFixed(1)}% (injected) (target >= 70%)`,
);
const out = values.out ?? join(repoRoot, 'bench', 'results');
mkdirSync(out, { recursive: true });
writeFileSync(join(out, 'persona.json'), `${JSON.stringify({ command: `npx tsx bench/persona.ts ${process.argv.slice(2).join(' ')}`.trim(), summary, users: rows }, null, 2)}\n`);
await model.close();
