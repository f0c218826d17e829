/**
 * The MiLP search loop: warm-start configurations first (a user's previous front, configurations that
 * won for other users), then a scrambled Sobol' design up to `initialPoints` trials, then Bayesian
 * optimisation: one SAAS GP per objective (MAP or NUTS), qNEHVI over (loss ↓, ROUGE-L ↑), optimised
 * over the discrete space, q configurations per batch by sequential greedy selection. Every trial is
 * saved to the store before the next starts, so a search resumes where it stopped; stored trials are
 * never re-evaluated and no configuration is evaluated twice.
 *
 * The budget counts all trials of the search, resumed ones included; the time budget counts this call.
 */
import { DEFAULT_LOSS_TOLERANCE, chooseTrial, paretoTrials } from './choose.js';
import { initialDesign } from './design.js';
import { SearchError } from './errors.js';
import { hypervolume2d } from './hypervolume.js';
import { Nehvi, type NehviOptions } from './nehvi.js';
import { optimizeAcquisition, type OptimizerOptions, type Proposal } from './optimize.js';
import { toMinimization, type Objectives } from './pareto.js';
import { Rng } from '../../util/rng.js';
import { fitSaasModel, type FitDiagnostics, type MapOptions, type ObjectiveModel } from './saas.js';
import type { LoraConfig, SearchSpace } from './space.js';
import { MemoryTrialStore, type TrialStore } from './store.js';
import { isOk, type OkTrial, type Trial, type TrialPhase } from './trial.js';
import type { NutsOptions } from './nuts.js';

export interface EvaluationResult {
  loss: number;
  rougeL: number;
  cost?: Record<string, number>;
}

export interface TrialContext {
  trialIndex: number;
  phase: TrialPhase;
  signal: AbortSignal;
}

/** Trains the configuration and scores it on the validation split. */
export type Evaluator = (config: LoraConfig, ctx: TrialContext) => Promise<EvaluationResult>;

export type AcquisitionSettings = NehviOptions & OptimizerOptions;

export interface SearchOptions {
  space: SearchSpace;
  evaluate: Evaluator;
  /** Total trials of the search, resumed ones included. At least one of budget / timeBudgetMs. */
  budget?: number;
  /** Wall-clock budget of this call: no new trial starts after it (a running one finishes). */
  timeBudgetMs?: number;
  /** The clock, in milliseconds (default performance.now; tests give their own, so that time budgets are exact). */
  now?: () => number;
  /** Trials before BO starts, warm-start trials included (default 8; the paper used 100). */
  initialPoints?: number;
  /** Configurations proposed per BO iteration (default 1). */
  batchSize?: number;
  /** Surrogate fit: 'map' (fast, default) or 'nuts' (fully Bayesian). */
  fit?: 'map' | 'nuts';
  nuts?: Partial<NutsOptions>;
  map?: Partial<MapOptions>;
  acquisition?: Partial<AcquisitionSettings>;
  seed?: number;
  store?: TrialStore;
  /** Evaluated first (those not yet evaluated), before quasi-random points. */
  warmStart?: LoraConfig[];
  /** Worst acceptable values bounding the hypervolume; inferred from the initial trials when absent. */
  referencePoint?: Objectives;
  /** Loss tolerance of the chosen-configuration rule (default 0: the lowest validation loss, choose.ts). */
  lossTolerance?: number;
  /** Consecutive failed evaluations that abort the search (default 3). */
  maxConsecutiveFailures?: number;
  onProgress?: (event: SearchProgress) => void;
  signal?: AbortSignal;
}

export type StopReason = 'budget' | 'time' | 'aborted' | 'exhausted';

export type SearchProgress =
  | { type: 'resumed'; trials: number; ok: number }
  | { type: 'fitted'; trialIndex: number; points: number; seconds: number; diagnostics: [FitDiagnostics, FitDiagnostics] }
  | {
      type: 'trial';
      trial: Trial;
      /** Trials done so far (resumed included) and the budget. */
      done: number;
      budget: number | null;
      best: Objectives | null;
      hypervolume: number;
      frontSize: number;
      elapsedMs: number;
    }
  | { type: 'warning'; code: string; message: string }
  | { type: 'done'; stopReason: StopReason; trials: number; hypervolume: number; chosen: Trial | null };

export interface SearchResult {
  trials: Trial[];
  /** Pareto-optimal successful trials, by loss ascending. */
  front: OkTrial[];
  chosen: OkTrial | null;
  /** The rule that picked `chosen`, in words. */
  rule: string;
  /** The reference point of every hypervolume reported (null when no trial succeeded). */
  referencePoint: Objectives | null;
  /** Hypervolume of the successful trials among the first i+1, for each trial i. */
  hypervolume: number[];
  stopReason: StopReason;
}

const DEFAULT_INITIAL = 8;

/** Worst observed values pushed out by 10% of their range (BoTorch's infer_reference_point). */
export function inferReferencePoint(trials: readonly OkTrial[]): Objectives {
  if (trials.length === 0) throw new SearchError('no_trials', 'cannot infer a reference point without successful trials', {});
  let lo = Infinity;
  let hi = -Infinity;
  let rlo = Infinity;
  let rhi = -Infinity;
  for (const t of trials) {
    lo = Math.min(lo, t.loss);
    hi = Math.max(hi, t.loss);
    rlo = Math.min(rlo, t.rougeL);
    rhi = Math.max(rhi, t.rougeL);
  }
  const pad = (range: number, v: number) => (range > 0 ? 0.1 * range : Math.max(0.1 * Math.abs(v), 1e-6));
  return { loss: hi + pad(hi - lo, hi), rougeL: rlo - pad(rhi - rlo, rlo) };
}

function refMin(ref: Objectives): [number, number] {
  return toMinimization(ref);
}

export function hypervolumeOf(trials: readonly Trial[], ref: Objectives): number {
  return hypervolume2d(trials.filter(isOk).map((t) => toMinimization(t)), refMin(ref));
}

/** Hypervolume after each trial, in order. */
export function hypervolumeCurve(trials: readonly Trial[], ref: Objectives): number[] {
  const pts: Array<[number, number]> = [];
  return trials.map((t) => {
    if (isOk(t)) pts.push(toMinimization(t));
    return hypervolume2d(pts, refMin(ref));
  });
}

function encodeAll(space: SearchSpace, configs: readonly LoraConfig[]): Float64Array {
  const x = new Float64Array(configs.length * space.dims);
  configs.forEach((c, i) => x.set(space.encode(c), i * space.dims));
  return x;
}

function errorMessage(e: unknown): string {
  if (e instanceof Error) return (e as Error & { code?: string }).code ? `${(e as Error & { code?: string }).code}: ${e.message}` : e.message;
  return String(e);
}

export async function runSearch(opts: SearchOptions): Promise<SearchResult> {
  const { space, evaluate } = opts;
  if (opts.budget === undefined && opts.timeBudgetMs === undefined) throw new SearchError('no_budget', 'give a trial budget, a time budget, or both', {});
  if (opts.budget !== undefined && !(Number.isInteger(opts.budget) && opts.budget >= 0)) throw new SearchError('bad_budget', `budget must be a non-negative integer, got ${opts.budget}`, { budget: opts.budget });
  const initialPoints = opts.initialPoints ?? DEFAULT_INITIAL;
  const q = opts.batchSize ?? 1;
  if (!(Number.isInteger(q) && q >= 1)) throw new SearchError('bad_batch_size', `batchSize must be a positive integer, got ${q}`, { batchSize: q });
  const budget = opts.budget ?? Infinity;
  const store = opts.store ?? new MemoryTrialStore();
  const seed = opts.seed ?? 0;
  const base = new Rng(seed);
  const lossTolerance = opts.lossTolerance ?? DEFAULT_LOSS_TOLERANCE;
  const maxFailures = opts.maxConsecutiveFailures ?? 3;
  const signal = opts.signal ?? new AbortController().signal;
  const emit = (e: SearchProgress) => opts.onProgress?.(e);
  const now = opts.now ?? (() => performance.now());
  const t0 = now();

  const trials = (await store.load()).sort((a, b) => a.index - b.index);
  for (const t of trials) {
    try {
      t.key = space.key(t.config);
    } catch (e) {
      throw new SearchError('store_mismatch', `stored trial ${t.index} does not fit this search space: ${errorMessage(e)}`, { trial: t.index, config: t.config });
    }
  }
  const evaluated = new Set(trials.map((t) => t.key));
  if (trials.length > 0) emit({ type: 'resumed', trials: trials.length, ok: trials.filter(isOk).length });

  const warm: LoraConfig[] = [];
  for (const c of opts.warmStart ?? []) {
    const k = space.key(c);
    if (!evaluated.has(k) && !warm.some((w) => space.key(w) === k)) warm.push(space.canonical(c));
  }
  const warmKeys = new Set(warm.map((c) => space.key(c)));

  const okTrials = () => trials.filter(isOk);
  const currentRef = (): Objectives | null => {
    if (opts.referencePoint) return opts.referencePoint;
    const ok = okTrials();
    if (ok.length === 0) return null;
    // From the first initialPoints successes only, so the point stops moving once BO starts and is
    // the same again when the search resumes.
    return inferReferencePoint(ok.slice(0, Math.max(2, initialPoints)));
  };

  let consecutiveFailures = 0;
  let stopReason: StopReason | null = null;

  const runTrial = async (config: LoraConfig, phase: TrialPhase, acquisition?: number): Promise<void> => {
    const index = trials.length === 0 ? 0 : trials[trials.length - 1].index + 1;
    const key = space.key(config);
    const startedAt = new Date().toISOString();
    const start = now();
    let trial: Trial;
    try {
      const res = await evaluate(config, { trialIndex: index, phase, signal });
      if (!Number.isFinite(res.loss) || !Number.isFinite(res.rougeL)) {
        throw new SearchError('nonfinite_objective', `evaluator returned loss=${res.loss}, rougeL=${res.rougeL}`, { loss: res.loss, rougeL: res.rougeL });
      }
      trial = { index, key, config, phase, status: 'ok', loss: res.loss, rougeL: res.rougeL, startedAt, durationMs: now() - start };
      if (res.cost) trial.cost = { ...res.cost };
      consecutiveFailures = 0;
    } catch (e) {
      if (signal.aborted) {
        stopReason = 'aborted';
        return;
      }
      trial = { index, key, config, phase, status: 'failed', loss: null, rougeL: null, error: errorMessage(e), startedAt, durationMs: now() - start };
      consecutiveFailures++;
    }
    if (acquisition !== undefined) trial.acquisition = acquisition;
    await store.save(trial);
    trials.push(trial);
    evaluated.add(key);
    const ok = okTrials();
    const ref = currentRef();
    emit({
      type: 'trial',
      trial,
      done: trials.length,
      budget: Number.isFinite(budget) ? budget : null,
      best: ok.length ? { loss: Math.min(...ok.map((t) => t.loss)), rougeL: Math.max(...ok.map((t) => t.rougeL)) } : null,
      hypervolume: ref ? hypervolumeOf(trials, ref) : 0,
      frontSize: paretoTrials(trials).length,
      elapsedMs: now() - t0,
    });
    if (consecutiveFailures >= maxFailures) {
      throw new SearchError('evaluation_failed', `${consecutiveFailures} evaluations failed in a row; last: ${trial.error}`, { lastTrial: trial });
    }
  };

  const shouldStop = (): StopReason | null => {
    if (stopReason) return stopReason;
    if (signal.aborted) return 'aborted';
    if (trials.length >= budget) return 'budget';
    if (opts.timeBudgetMs !== undefined && now() - t0 >= opts.timeBudgetMs) return 'time';
    return null;
  };

  const proposeBatch = (size: number): { configs: LoraConfig[]; values: Array<number | undefined> } => {
    const ok = okTrials();
    const n = ok.length;
    const d = space.dims;
    const x = encodeAll(space, ok.map((t) => t.config));
    const fitRng = base.derive(2, trials.length);
    const fitOpts = { method: opts.fit ?? 'map', nuts: opts.nuts, map: opts.map } as const;
    const models: [ObjectiveModel, ObjectiveModel] = [
      fitSaasModel(x, n, d, ok.map((t) => t.loss), fitRng, fitOpts),
      fitSaasModel(x, n, d, ok.map((t) => -t.rougeL), fitRng, fitOpts),
    ];
    emit({
      type: 'fitted',
      trialIndex: trials.length,
      points: n,
      seconds: models[0].diagnostics.seconds + models[1].diagnostics.seconds,
      diagnostics: [models[0].diagnostics, models[1].diagnostics],
    });
    const ref = refMin(currentRef() as Objectives);
    const front = paretoTrials(trials).map((t) => t.config);
    const chosen: Proposal[] = [];
    for (let j = 0; j < size; j++) {
      const acqRng = base.derive(3, trials.length, j);
      const pending = encodeAll(space, chosen.map((p) => p.config));
      const acq = new Nehvi(models, x, n, d, pending, chosen.length, ref, acqRng, opts.acquisition);
      const exclude = new Set(evaluated);
      for (const p of chosen) exclude.add(p.key);
      const prop = optimizeAcquisition(space, (cs) => acq.evaluate(encodeAll(space, cs), cs.length), exclude, [...front, ...chosen.map((p) => p.config)], acqRng, opts.acquisition);
      if (!prop) break;
      if (prop.fallback) emit({ type: 'warning', code: 'acquisition_flat', message: `no candidate promised a hypervolume improvement; exploring ${prop.key}` });
      chosen.push(prop);
    }
    return { configs: chosen.map((p) => p.config), values: chosen.map((p) => (p.fallback ? undefined : p.value)) };
  };

  /** A random configuration nobody evaluated, when model fitting fails. */
  const randomUnevaluated = (): LoraConfig | null => {
    const rng = base.derive(4, trials.length);
    for (let i = 0; i < 1000; i++) {
      const c = space.random(rng);
      if (!evaluated.has(space.key(c))) return c;
    }
    for (const c of space.size <= 100_000 ? space.enumerate() : []) if (!evaluated.has(space.key(c))) return c;
    return null;
  };

  while (!(stopReason = shouldStop())) {
    const nextWarm = warm.find((c) => !evaluated.has(space.key(c)));
    if (nextWarm) {
      await runTrial(nextWarm, 'warm-start');
      continue;
    }
    const nonBo = trials.filter((t) => t.phase !== 'bo').length;
    if (nonBo < initialPoints || okTrials().length < 2) {
      const exclude = new Set([...evaluated, ...warmKeys]);
      const [next] = initialDesign(space, 1, base.derive(1), exclude);
      if (next) {
        await runTrial(next, 'initial');
        continue;
      }
      if (okTrials().length < 2) {
        stopReason = 'exhausted';
        break;
      }
    }
    const remaining = Math.min(q, budget - trials.length);
    let batch: { configs: LoraConfig[]; values: Array<number | undefined> };
    try {
      batch = proposeBatch(remaining);
    } catch (e) {
      if (!(e instanceof SearchError)) throw e;
      emit({ type: 'warning', code: e.code, message: `model or acquisition failed (${e.message}); trying a random configuration` });
      const c = randomUnevaluated();
      batch = { configs: c ? [c] : [], values: [undefined] };
    }
    if (batch.configs.length === 0) {
      stopReason = 'exhausted';
      break;
    }
    for (let j = 0; j < batch.configs.length; j++) {
      if (j > 0 && shouldStop()) break;
      await runTrial(batch.configs[j], 'bo', batch.values[j]);
    }
  }

  const ref = currentRef();
  const { trial: chosen, rule } = chooseTrial(trials, lossTolerance);
  const hv = ref ? hypervolumeCurve(trials, ref) : trials.map(() => 0);
  const result: SearchResult = {
    trials: [...trials],
    front: paretoTrials(trials),
    chosen,
    rule,
    referencePoint: ref,
    hypervolume: hv,
    stopReason: stopReason ?? 'budget',
  };
  emit({ type: 'done', stopReason: result.stopReason, trials: trials.length, hypervolume: hv.length ? hv[hv.length - 1] : 0, chosen });
  return result;
}

function fmt(v: number | null | undefined, digits = 4): string {
  return v === null || v === undefined ? '—' : v.toFixed(digits);
}

/** One human-readable line per event, for CLI progress output. */
export function formatProgress(e: SearchProgress, space?: SearchSpace): string {
  switch (e.type) {
    case 'resumed':
      return `resumed: ${e.trials} stored trials (${e.ok} succeeded), none re-evaluated`;
    case 'fitted':
      return `fitted ${e.diagnostics[0].method.toUpperCase()} SAAS GPs on ${e.points} trials in ${e.seconds.toFixed(1)}s`;
    case 'trial': {
      const t = e.trial;
      const what = space ? (space.isVanilla(t.config) ? 'vanilla' : `layers ${t.config.layers.map((b) => (b ? 1 : 0)).join('')} n=${t.config.n} r=${t.config.r}`) : t.key;
      const res = t.status === 'ok' ? `loss ${fmt(t.loss)} rougeL ${fmt(t.rougeL)}` : `FAILED (${t.error})`;
      const of = e.budget === null ? `${e.done}` : `${e.done}/${e.budget}`;
      return `trial ${of} [${t.phase}] ${what}: ${res} | best loss ${fmt(e.best?.loss)} best rougeL ${fmt(e.best?.rougeL)} | HV ${e.hypervolume.toExponential(3)} front ${e.frontSize} | ${(e.elapsedMs / 1000).toFixed(1)}s`;
    }
    case 'warning':
      return `warning (${e.code}): ${e.message}`;
    case 'done':
      return `search done (${e.stopReason}) after ${e.trials} trials, HV ${e.hypervolume.toExponential(3)}${e.chosen ? `, chosen trial ${e.chosen.index} (${e.chosen.key})` : ''}`;
  }
}
