/**
 * Why retrieved memory ("w Mem") hurts the default model: test ROUGE-L F of vanilla replies vs replies
 * with the k best bm25 history items in the prompt (k = 1, 2, 5, and k = 2 over the patient's own
 * lines only), retrieved exactly as serving and `memlora eval` do, with the mean prompt length and
 * how many prompts are cut to the reply room.
 *
 *   npx tsx bench/memory-k.ts [--users 4]
 *
 * Writes bench/results/memory-k.json.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig, repoRoot } from '../src/config.js';
import { loadMedDia, toHistoryItems } from '../src/eval/meddia.js';
import { MemoryIndex } from '../src/eval/memory-baseline.js';
import { rougeL } from '../src/eval/metrics.js';
import type { TrainingPair } from '../src/inject/dataset.js';
import { Injector } from '../src/inject/injector.js';
import { prepareUserData, trainHistory } from '../src/inject/user-data.js';
import { Model } from '../src/model/model.js';
import { loadTokenizer } from '../src/model/tokenizer.js';
import { messagesWithMemory } from '../src/serve/memory.js';

const { values } = parseArgs({ options: { users: { type: 'string' } } });
const config = loadConfig();
const model = Model.load(config.modelPath, { runnerOptions: { intraOpThreads: 1 } });
const injector = new Injector(model, loadTokenizer(config.modelPath));
const room = injector.opts.maxLen - injector.opts.maxNewTokens;
const med = loadMedDia();
const users = med.testUserIds.slice(0, Number(values.users ?? 4));
const lastUser = (p: TrainingPair): string => [...p.context].reverse().find((m) => m.role === 'user')?.content ?? '';
const perUser: Record<string, Record<string, { rougeL: number; meanPromptTokens: number; cut: number; pairs: number }>> = {};
for (const u of users) {
  const items = toHistoryItems(med.user(u));
  const data = prepareUserData(injector, items, 1);
  const known = trainHistory(items, { ...data.split, groups: { ...data.split.groups, train: [...data.split.groups.train, ...data.split.groups.val] } });
  const all = new MemoryIndex(known);
  const own = new MemoryIndex(known.filter((i) => i.role === 'user'));
  const test = data.split.test;
  const variants: Record<string, TrainingPair[]> = { vanilla: test };
  for (const k of [1, 2, 5]) variants[`k=${k}`] = test.map((p) => ({ ...p, context: messagesWithMemory(p.context, all.search(lastUser(p), k)) }));
  variants['k=2 own lines'] = test.map((p) => ({ ...p, context: messagesWithMemory(p.context, own.search(lastUser(p), 2)) }));
  perUser[u] = {};
  for (const [name, pairs] of Object.entries(variants)) {
    const lens = pairs.map((p) => injector.promptIds(p).length);
    const replies = await injector.replies(pairs);
    perUser[u][name] = {
      rougeL: pairs.reduce((s, p, i) => s + rougeL(p.target, replies[i]).fmeasure, 0) / pairs.length,
      meanPromptTokens: lens.reduce((a, b) => a + b, 0) / lens.length,
      cut: lens.filter((l) => l >= room).length,
      pairs: pairs.length,
    };
  }
  all.close();
  own.close();
  process.stderr.write(`memory-k: ${u} ${Object.entries(perUser[u]).map(([k, v]) => `${k} R-L ${(100 * v.rougeL).toFixed(1)} (cut ${v.cut}/${v.pairs})`).join(' | ')}\n`);
}
const names = Object.keys(perUser[users[0]]);
const mean = Object.fromEntries(names.map((n) => [n, users.reduce((s, u) => s + perUser[u][n].rougeL, 0) / users.length]));
console.log(`mean test ROUGE-L F over ${users.length} users: ${names.map((n) => `${n} ${(100 * mean[n]).toFixed(2)}`).join(', ')}`);
const out = join(repoRoot, 'bench', 'results');
mkdirSync(out, { recursive: true });
writeFileSync(join(out, 'memory-k.json'), `${JSON.stringify({ command: 'npx tsx bench/memory-k.ts', model: config.modelPath, promptRoomTokens: room, users, meanRougeL: mean, perUser }, null, 2)}\n`);
await model.close();
