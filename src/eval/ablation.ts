/**
 * The paper's Table 5 design on MedDia test users: which parts of the LoRA configuration are worth
 * searching. Each variant searches some parts (layers, n, r) and holds the others at the fixed
 * default (all layers, n = 1, r = 8); "default" searches nothing. Every variant's chosen adapter
 * answers the user's test pairs and is scored with ROUGE-1 / ROUGE-L F; the validation objectives of
 * the chosen trial are kept beside them.
 */
import type { Injector, InjectTrainOptions } from '../inject/injector.js';
import { evaluateConfig, searchUser, trialSeed } from '../inject/search-user.js';
import { formatProgress } from '../inject/search/index.js';
import type { FixedParts } from '../inject/search/index.js';
import { prepareUserData } from '../inject/user-data.js';
import { defaultSpec, specKey } from '../lora/spec.js';
import { type Interval, bootstrapMean } from './bootstrap.js';
import { type MedDia, toHistoryItems } from './meddia.js';
import { rouge1, rougeL } from './metrics.js';

/** Which parts a variant searches. */
export const ABLATION_VARIANTS = ['default', 'layers', 'n', 'r', 'layers+n', 'layers+r', 'n+r', 'all'] as const;
export type AblationVariant = (typeof ABLATION_VARIANTS)[number];

/** The parts a variant holds fixed, at the default configuration's values. */
export function fixedPartsOf(variant: AblationVariant, nLayers: number): FixedParts {
  const d = defaultSpec(nLayers);
  const searched = new Set(variant === 'default' ? [] : variant === 'all' ? ['layers', 'n', 'r'] : variant.split('+'));
  return {
    ...(searched.has('layers') ? {} : { layers: d.layers }),
    ...(searched.has('n') ? {} : { n: d.n }),
    ...(searched.has('r') ? {} : { r: d.r }),
  };
}

export interface AblationOptions {
  variants: AblationVariant[];
  budget: number;
  initialPoints: number;
  nMax?: number;
  seed: number;
  /** Start every search from the trained default configuration (default true). */
  warmStartDefault?: boolean;
  train: Partial<InjectTrainOptions>;
  log: (line: string) => void;
}

export interface AblationCell {
  config: string;
  trials: number;
  valLoss: number;
  valRougeL: number;
  testRouge1: number;
  testRougeL: number;
  seconds: number;
}

export interface AblationUser {
  userId: string;
  vanilla: { testRouge1: number; testRougeL: number };
  variants: Partial<Record<AblationVariant, AblationCell>>;
}

export async function ablateUser(injector: Injector, med: MedDia, userId: string, o: AblationOptions): Promise<AblationUser> {
  const data = prepareUserData(injector, toHistoryItems(med.user(userId)!), o.seed);
  const test = data.split.test;
  const testScores = async (adapter?: Parameters<Injector['replies']>[1]): Promise<{ testRouge1: number; testRougeL: number }> => {
    const replies = await injector.replies(test, adapter);
    const n = Math.max(1, test.length);
    return {
      testRouge1: test.reduce((s, p, i) => s + rouge1(p.target, replies[i]).fmeasure, 0) / n,
      testRougeL: test.reduce((s, p, i) => s + rougeL(p.target, replies[i]).fmeasure, 0) / n,
    };
  };
  const res: AblationUser = { userId, vanilla: await testScores(), variants: {} };
  const nLayers = injector.model.config.nLayers;
  // The default configuration lies in every variant's subspace (the fixed parts take its values):
  // trained once, it is every search's first trial (a warm start), so variants differ only in
  // what they may search beyond it.
  const tDefault = performance.now();
  const defaultTrial = await evaluateConfig(injector, data, defaultSpec(nLayers), { ...o.train, seed: trialSeed(o.seed, 0) }, 0);
  const defaultSeconds = (performance.now() - tDefault) / 1000;
  for (const v of o.variants) {
    const t0 = performance.now() - (v === 'default' ? defaultSeconds * 1000 : 0);
    let cell: Omit<AblationCell, 'testRouge1' | 'testRougeL' | 'seconds'>;
    let adapter;
    if (v === 'default') {
      adapter = defaultTrial.adapter;
      cell = { config: specKey(defaultTrial.spec), trials: 1, valLoss: defaultTrial.valLoss, valRougeL: defaultTrial.valRougeL };
    } else {
      const s = await searchUser(injector, data, {
        evaluated: o.warmStartDefault === false ? undefined : [defaultTrial],
        budget: o.budget,
        initialPoints: o.initialPoints,
        nMax: o.nMax,
        fixed: fixedPartsOf(v, nLayers),
        seed: o.seed,
        fit: 'map',
        train: o.train,
        onProgress: (e) => {
          const line = formatProgress(e);
          if (line && e.type === 'trial') o.log(`ablate: ${userId} [${v}] ${line}`);
        },
      });
      if (!s.chosen) throw new Error(`ablation ${v} for ${userId} chose nothing (${s.search.stopReason})`);
      adapter = s.chosen.adapter;
      cell = { config: specKey(s.chosen.spec), trials: s.search.trials.length, valLoss: s.chosen.valLoss, valRougeL: s.chosen.valRougeL };
    }
    const scores = await testScores(adapter);
    res.variants[v] = { ...cell, ...scores, seconds: (performance.now() - t0) / 1000 };
    o.log(
      `ablate: ${userId} [${v}] chose ${cell.config}: val loss ${cell.valLoss.toFixed(4)} val R-L ${(100 * cell.valRougeL).toFixed(2)}, ` +
        `test R-1 ${(100 * scores.testRouge1).toFixed(2)} R-L ${(100 * scores.testRougeL).toFixed(2)} (vanilla R-L ${(100 * res.vanilla.testRougeL).toFixed(2)})`,
    );
  }
  return res;
}

export interface AblationRow {
  variant: AblationVariant | 'vanilla';
  users: number;
  testRouge1: Interval;
  testRougeL: Interval;
  valLoss: number;
  valRougeL: number;
}

export function summariseAblation(users: readonly AblationUser[], variants: readonly AblationVariant[]): AblationRow[] {
  const mean = (xs: number[]): number => xs.reduce((s, x) => s + x, 0) / Math.max(1, xs.length);
  const rows: AblationRow[] = [
    {
      variant: 'vanilla',
      users: users.length,
      testRouge1: bootstrapMean(users.map((u) => u.vanilla.testRouge1), { seed: 7 }),
      testRougeL: bootstrapMean(users.map((u) => u.vanilla.testRougeL), { seed: 7 }),
      valLoss: Number.NaN,
      valRougeL: Number.NaN,
    },
  ];
  for (const v of variants) {
    const cells = users.flatMap((u) => (u.variants[v] ? [u.variants[v]!] : []));
    rows.push({
      variant: v,
      users: cells.length,
      testRouge1: bootstrapMean(cells.map((c) => c.testRouge1), { seed: 7 }),
      testRougeL: bootstrapMean(cells.map((c) => c.testRougeL), { seed: 7 }),
      valLoss: mean(cells.map((c) => c.valLoss)),
      valRougeL: mean(cells.map((c) => c.valRougeL)),
    });
  }
  return rows;
}

const SEARCHED: Record<AblationRow['variant'], string> = {
  vanilla: 'no adapter',
  default: 'nothing (all layers, n=1, r=8)',
  layers: 'layers',
  n: 'n',
  r: 'r',
  'layers+n': 'layers + n',
  'layers+r': 'layers + r',
  'n+r': 'n + r',
  all: 'layers + n + r',
};

export function ablationTable(rows: readonly AblationRow[]): string {
  const pct = (v: number): string => (Number.isNaN(v) ? '–' : (100 * v).toFixed(2));
  const cell = (i: Interval): string => (i.lo === i.hi ? pct(i.mean) : `${pct(i.mean)} [${pct(i.lo)}, ${pct(i.hi)}]`);
  return [
    '| searched | users | test ROUGE-1 F | test ROUGE-L F | val loss | val ROUGE-L F |',
    '| --- | --- | --- | --- | --- | --- |',
    ...rows.map((r) => `| ${SEARCHED[r.variant]} | ${r.users} | ${cell(r.testRouge1)} | ${cell(r.testRougeL)} | ${Number.isNaN(r.valLoss) ? '–' : r.valLoss.toFixed(4)} | ${pct(r.valRougeL)} |`),
  ].join('\n');
}
