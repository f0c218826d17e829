/**
 * The paper's comparison (Table 3) on our base model: for every test user, the same test pairs are
 * answered by the vanilla model, the model with retrieved memory ("w Mem"), the fixed default adapter
 * (all layers, n = 1, r = 8), the MiLP-searched adapter, and MiLP with memory; replies are scored
 * with ROUGE-1/L (F-measure and recall) and Persona-F1, per user, then averaged over users.
 */
import type { ChatMessage } from '../model/chat-format.js';
import type { Adapter } from '../lora/adapter.js';
import { defaultSpec, specKey } from '../lora/spec.js';
import type { TrainingPair } from '../inject/dataset.js';
import type { Injector, InjectTrainOptions } from '../inject/injector.js';
import { type TrialOutcome, evaluateConfig, searchUser, trialSeed } from '../inject/search-user.js';
import { prepareUserData, trainHistory } from '../inject/user-data.js';
import { formatProgress } from '../inject/search/index.js';
import { type MedDia, toHistoryItems } from './meddia.js';
import { messagesWithMemory } from '../serve/memory.js';
import { MemoryIndex } from './memory-baseline.js';
import { personaF1, rouge1, rougeL } from './metrics.js';

export const METHODS = ['vanilla', 'memory', 'default', 'milp', 'milp+memory'] as const;
export type Method = (typeof METHODS)[number];

export interface EvalOptions {
  methods: Method[];
  /** First K test users (all when undefined). */
  users?: number;
  budget: number;
  initialPoints: number;
  /** Largest n searched (the space's n ∈ 0..nMax); undefined keeps the design's 32. */
  nMax?: number;
  /** Wall-clock cap of one user's search, in ms (the search stops after the trial that passes it). */
  timeBudgetMs?: number;
  seed: number;
  memoryK: number;
  train: Partial<InjectTrainOptions>;
  log: (line: string) => void;
}

export interface Scores {
  rouge1F: number;
  rouge1R: number;
  rougeLF: number;
  rougeLR: number;
  personaF1: number;
}

export interface UserResult {
  userId: string;
  pairs: { train: number; val: number; test: number };
  scores: Partial<Record<Method, Scores>>;
  seconds: Partial<Record<Method, number>>;
  chosen?: { config: string; valLoss: number; valRougeL: number; trials: number; rule: string };
  samples: { context: string; target: string; replies: Partial<Record<Method, string>> }[];
}

function score(pairs: readonly TrainingPair[], replies: readonly string[], own: readonly string[]): Scores {
  const s = { rouge1F: 0, rouge1R: 0, rougeLF: 0, rougeLR: 0, personaF1: 0 };
  const history = new Set(own);
  pairs.forEach((p, i) => {
    const r1 = rouge1(p.target, replies[i]);
    const rl = rougeL(p.target, replies[i]);
    s.rouge1F += r1.fmeasure;
    s.rouge1R += r1.recall;
    s.rougeLF += rl.fmeasure;
    s.rougeLR += rl.recall;
    s.personaF1 += personaF1([...history], replies[i]).f1;
  });
  const n = Math.max(1, pairs.length);
  return { rouge1F: s.rouge1F / n, rouge1R: s.rouge1R / n, rougeLF: s.rougeLF / n, rougeLR: s.rougeLR / n, personaF1: s.personaF1 / n };
}

const lastUser = (ctx: readonly ChatMessage[]): string => [...ctx].reverse().find((m) => m.role === 'user')?.content ?? '';

export async function evaluateUser(injector: Injector, med: MedDia, userId: string, o: EvalOptions): Promise<UserResult> {
  const items = toHistoryItems(med.user(userId)!);
  const data = prepareUserData(injector, items, o.seed);
  const test = data.split.test;
  // What the user has said and written outside the test conversations: retrievable memory, and the
  // "own content" Persona-F1 compares replies with.
  const known = trainHistory(items, { ...data.split, groups: { ...data.split.groups, train: [...data.split.groups.train, ...data.split.groups.val] } });
  const own = known.filter((i) => i.role === 'user').map((i) => i.text);
  const memory = new MemoryIndex(known);
  const res: UserResult = { userId, pairs: { train: data.train.length, val: data.val.length, test: test.length }, scores: {}, seconds: {}, samples: [] };
  const memoryPairs = (): TrainingPair[] => test.map((p) => ({ ...p, context: messagesWithMemory(p.context, memory.search(lastUser(p.context), o.memoryK)) }));
  const replies: Partial<Record<Method, string[]>> = {};
  let milpAdapter: Adapter | undefined;
  let defaultTrial: TrialOutcome | undefined;
  try {
    for (const m of o.methods) {
      const t0 = performance.now();
      let out: string[];
      if (m === 'vanilla') out = await injector.replies(test);
      else if (m === 'memory') out = await injector.replies(memoryPairs());
      else if (m === 'default') {
        // Trained as the MiLP search's first trial would be (same seed), so the search can count it
        // as its warm start instead of training it again.
        defaultTrial = await evaluateConfig(injector, data, defaultSpec(injector.model.config.nLayers), { ...o.train, seed: trialSeed(o.seed, 0) }, 0);
        out = await injector.replies(test, defaultTrial.adapter);
      } else {
        if (!milpAdapter) {
          const s = await searchUser(injector, data, {
            budget: o.budget,
            initialPoints: o.initialPoints,
            nMax: o.nMax,
            timeBudgetMs: o.timeBudgetMs,
            // The fixed default is the search's first point (a warm start, as from other users'
            // winners): with a handful of trials, MiLP should not have to rediscover it.
            ...(defaultTrial ? { evaluated: [defaultTrial] } : { warmStart: [defaultSpec(injector.model.config.nLayers)] }),
            seed: o.seed,
            fit: 'map',
            train: o.train,
            onProgress: (e) => {
              const line = formatProgress(e);
              if (line && e.type === 'trial') o.log(`eval: ${userId} ${line}`);
            },
          });
          if (!s.chosen) throw new Error(`search for ${userId} chose nothing (${s.search.stopReason})`);
          milpAdapter = s.chosen.adapter;
          res.chosen = { config: specKey(s.chosen.spec), valLoss: s.chosen.valLoss, valRougeL: s.chosen.valRougeL, trials: s.search.trials.length, rule: s.search.rule };
        }
        out = await injector.replies(m === 'milp' ? test : memoryPairs(), milpAdapter);
      }
      replies[m] = out;
      res.scores[m] = score(test, out, own);
      res.seconds[m] = (performance.now() - t0) / 1000;
      const sc = res.scores[m]!;
      o.log(`eval: ${userId} ${m.padEnd(11)} R-1 ${(100 * sc.rouge1F).toFixed(2)} R-L ${(100 * sc.rougeLF).toFixed(2)} P-F1 ${(100 * sc.personaF1).toFixed(2)} (${test.length} test pairs)`);
    }
  } finally {
    memory.close();
  }
  res.samples = test.slice(0, 2).map((p, i) => ({
    context: lastUser(p.context),
    target: p.target,
    replies: Object.fromEntries(Object.entries(replies).map(([m, r]) => [m, r![i]])),
  }));
  return res;
}
