/**
 * The MiLP search for one user: every trial trains an adapter of the proposed configuration on the
 * training pairs and is scored on the validation pairs (loss to minimise, ROUGE-L to maximise); the
 * Bayesian-optimisation loop (search/loop.ts) proposes configurations; the chosen configuration's
 * adapter is kept so it need not be trained again.
 */
import type { Adapter } from '../lora/adapter.js';
import type { AdapterSpec } from '../lora/spec.js';
import { type FixedParts, type LoraConfig, type SearchOptions, type SearchResult, type Trial, type TrialStore, MemoryTrialStore, createSpace, runSearch } from './search/index.js';
import type { TrainProgress } from '../train/trainer.js';
import { type InjectTrainOptions, type Injector } from './injector.js';
import type { UserData } from './user-data.js';

export interface TrialOutcome {
  trialIndex: number;
  spec: AdapterSpec;
  adapter: Adapter;
  valLoss: number;
  valRougeL: number;
  seconds: number;
  steps: number;
}

export interface UserSearchOptions {
  budget: number;
  initialPoints: number;
  seed: number;
  fit: 'map' | 'nuts';
  /** LoRA alpha per module (scaling alpha / r); default r (scaling 1). */
  alphaFactor?: number;
  train: Partial<InjectTrainOptions>;
  store?: TrialStore;
  warmStart?: LoraConfig[];
  signal?: AbortSignal;
  timeBudgetMs?: number;
  /** Search only some parts (ablations): fixed layers, n or r. */
  fixed?: FixedParts;
  nMax?: number;
  onProgress?: SearchOptions['onProgress'];
  onTrainProgress?: (trialIndex: number, p: TrainProgress) => void;
  /**
   * Configurations already trained and scored on this user's data (e.g. the fixed default), counted
   * as the search's first trials (warm starts) instead of being trained again; their trialIndex must
   * be 0, 1, … in order. Only with the default in-memory store.
   */
  evaluated?: TrialOutcome[];
  /** Called with each finished trial's adapter (e.g. to persist it); default keeps the front in memory. */
  onTrial?: (t: TrialOutcome) => Promise<void> | void;
}

export interface UserSearchResult {
  search: SearchResult;
  /** The chosen configuration's adapter and figures (null when no trial succeeded). */
  chosen: TrialOutcome | null;
}

export function specOf(config: LoraConfig, alphaFactor?: number): AdapterSpec {
  return alphaFactor === undefined ? { ...config } : { ...config, alpha: config.r * alphaFactor };
}

/** Train and score one configuration (used by the search and by fixed-configuration runs). */
export async function evaluateConfig(
  injector: Injector,
  data: UserData,
  spec: AdapterSpec,
  train: Partial<InjectTrainOptions>,
  trialIndex = 0,
  onTrainProgress?: (trialIndex: number, p: TrainProgress) => void,
): Promise<TrialOutcome> {
  const trained = await injector.train(spec, data.train, data.val, {
    ...train,
    onProgress: onTrainProgress ? (p) => onTrainProgress(trialIndex, p) : train.onProgress,
  });
  const valRougeL = await injector.rougeL(data.split.val, trained.adapter, train.signal);
  return {
    trialIndex,
    spec,
    adapter: trained.adapter,
    valLoss: trained.valLoss,
    valRougeL,
    seconds: trained.seconds,
    steps: trained.result.steps,
  };
}

export async function searchUser(injector: Injector, data: UserData, opts: UserSearchOptions): Promise<UserSearchResult> {
  const space = createSpace({ layers: injector.model.config.nLayers, nMax: opts.nMax, fixed: opts.fixed });
  const kept = new Map<number, TrialOutcome>();
  const evaluated = opts.evaluated ?? [];
  if (evaluated.length > 0 && opts.store) throw new Error('searchUser: `evaluated` trials need the in-memory store');
  const seeded: Trial[] = evaluated.map((t, i) => {
    if (t.trialIndex !== i) throw new Error(`searchUser: evaluated[${i}] has trialIndex ${t.trialIndex}`);
    keepOnFront(kept, t);
    const config = space.canonical({ layers: t.spec.layers, n: t.spec.n, r: t.spec.r });
    return {
      index: i,
      key: space.key(config),
      config,
      phase: 'warm-start',
      status: 'ok',
      loss: t.valLoss,
      rougeL: t.valRougeL,
      cost: { seconds: t.seconds, trainSeconds: t.seconds, steps: t.steps },
      startedAt: new Date().toISOString(),
      durationMs: t.seconds * 1000,
    };
  });
  const result = await runSearch({
    space,
    budget: opts.budget,
    timeBudgetMs: opts.timeBudgetMs,
    initialPoints: opts.initialPoints,
    fit: opts.fit,
    seed: opts.seed,
    store: opts.store ?? new MemoryTrialStore(seeded),
    warmStart: opts.warmStart,
    signal: opts.signal,
    onProgress: opts.onProgress,
    evaluate: async (config, ctx) => {
      const t0 = performance.now();
      const outcome = await evaluateConfig(
        injector,
        data,
        specOf(config, opts.alphaFactor),
        { ...opts.train, seed: trialSeed(opts.seed, ctx.trialIndex), signal: ctx.signal },
        ctx.trialIndex,
        opts.onTrainProgress,
      );
      if (opts.onTrial) await opts.onTrial(outcome);
      else keepOnFront(kept, outcome);
      return {
        loss: outcome.valLoss,
        rougeL: outcome.valRougeL,
        cost: { seconds: (performance.now() - t0) / 1000, trainSeconds: outcome.seconds, steps: outcome.steps },
      };
    },
  });
  let chosen: TrialOutcome | null = null;
  if (result.chosen) {
    // A resumed search may have chosen a trial trained by an earlier process: training is
    // deterministic under the trial's seed, so train it again rather than lose it.
    chosen =
      kept.get(result.chosen.index) ??
      (await evaluateConfig(injector, data, specOf(result.chosen.config, opts.alphaFactor), { ...opts.train, seed: trialSeed(opts.seed, result.chosen.index) }, result.chosen.index));
  }
  return { search: result, chosen };
}

/** The training seed of trial i of a search seeded with `seed`. */
export const trialSeed = (seed: number, trialIndex: number): number => seed * 7919 + trialIndex;

/**
 * Keep a trial's adapter only while it is Pareto-optimal (lower loss, higher ROUGE-L): the chosen
 * configuration always is, and memory stays bounded by the front rather than the budget.
 */
function keepOnFront(kept: Map<number, TrialOutcome>, t: TrialOutcome): void {
  const dominates = (a: TrialOutcome, b: TrialOutcome): boolean =>
    a.valLoss <= b.valLoss && a.valRougeL >= b.valRougeL && (a.valLoss < b.valLoss || a.valRougeL > b.valRougeL);
  if ([...kept.values()].some((k) => dominates(k, t))) return;
  for (const [i, k] of kept) if (dominates(t, k)) kept.delete(i);
  kept.set(t.trialIndex, t);
}
