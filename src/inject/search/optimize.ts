/**
 * Maximises an acquisition function over the mixed discrete LoRA space: score a pool of random
 * configurations (the whole space when it is small) plus the one-change neighbours of the given
 * seeds (the observed Pareto points), then hill-climb with best-improvement local search over
 * one-change neighbours from the best-scoring pool members and from each seed. Configurations whose
 * key is excluded (already evaluated, or already chosen for this batch) are never proposed.
 */
import type { Rng } from '../../util/rng.js';
import type { LoraConfig, SearchSpace } from './space.js';
import { withDefaults } from '../../util/options.js';

/** Scores configurations; larger is better. */
export type AcquisitionScorer = (configs: LoraConfig[]) => Float64Array;

export interface OptimizerOptions {
  /** Random configurations scored before local search. */
  randomCandidates: number;
  /** Local searches started from the best pool members (seeds start their own as well). */
  localStarts: number;
  /** Maximum hill-climbing moves per local search. */
  maxLocalSteps: number;
  /** Spaces with at most this many models are scored exhaustively. */
  enumerateBelow: number;
}

export const DEFAULT_OPTIMIZER: OptimizerOptions = { randomCandidates: 512, localStarts: 8, maxLocalSteps: 20, enumerateBelow: 1024 };

export interface Proposal {
  config: LoraConfig;
  key: string;
  value: number;
  /** True when no candidate had a positive score and the proposal is a random pool member. */
  fallback: boolean;
  /** Number of distinct configurations scored. */
  scored: number;
}

export function optimizeAcquisition(
  space: SearchSpace,
  score: AcquisitionScorer,
  exclude: ReadonlySet<string>,
  seeds: readonly LoraConfig[],
  rng: Rng,
  options: Partial<OptimizerOptions> = {},
): Proposal | null {
  const o = withDefaults(DEFAULT_OPTIMIZER, options);
  const cache = new Map<string, { config: LoraConfig; value: number }>();
  const scoreAll = (configs: LoraConfig[]) => {
    const fresh: LoraConfig[] = [];
    const keys: string[] = [];
    const seenNow = new Set<string>();
    for (const c of configs) {
      const k = space.key(c);
      if (exclude.has(k) || cache.has(k) || seenNow.has(k)) continue;
      fresh.push(c);
      keys.push(k);
      seenNow.add(k);
    }
    if (fresh.length === 0) return;
    const v = score(fresh);
    fresh.forEach((c, i) => cache.set(keys[i], { config: c, value: Number.isFinite(v[i]) ? v[i] : -Infinity }));
  };

  const pool: LoraConfig[] = [];
  if (space.size <= o.enumerateBelow) {
    for (const c of space.enumerate()) pool.push(c);
  } else {
    for (let i = 0; i < o.randomCandidates; i++) {
      // Half uniform, half with a random layer density so both sparse and dense layer sets appear.
      pool.push(i % 2 === 0 ? space.random(rng) : space.random(rng, rng.uniform()));
    }
  }
  for (const s of seeds) pool.push(...space.neighbours(s));
  scoreAll(pool);
  if (cache.size === 0) return null;

  const ranked = () => [...cache.entries()].sort((a, b) => b[1].value - a[1].value);
  const starts = ranked()
    .slice(0, o.localStarts)
    .map(([, v]) => v.config);
  for (const s of seeds) {
    // From each seed, start at its best unexcluded neighbour.
    let best: { config: LoraConfig; value: number } | null = null;
    for (const nb of space.neighbours(s)) {
      const e = cache.get(space.key(nb));
      if (e && (!best || e.value > best.value)) best = e;
    }
    if (best) starts.push(best.config);
  }
  for (const start of starts) {
    const first = cache.get(space.key(start));
    if (!first) continue;
    let current: { config: LoraConfig; value: number } = first;
    for (let step = 0; step < o.maxLocalSteps; step++) {
      const nbs = space.neighbours(current.config);
      scoreAll(nbs);
      let next: { config: LoraConfig; value: number } = current;
      for (const nb of nbs) {
        const e = cache.get(space.key(nb));
        if (e && e.value > next.value) next = e;
      }
      if (next === current) break;
      current = next;
    }
  }
  const all = ranked();
  const [bestKey, best] = all[0];
  if (best.value > 0) return { config: best.config, key: bestKey, value: best.value, fallback: false, scored: cache.size };
  // Nothing promises an improvement: explore with a random unevaluated configuration.
  const [key, pick] = all[rng.int(all.length)];
  return { config: pick.config, key, value: pick.value, fallback: true, scored: cache.size };
}
