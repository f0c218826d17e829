/**
 * Percentile bootstrap over users: resample users with replacement, recompute the mean of per-user
 * scores, and report the 2.5th and 97.5th percentiles (a 95% interval for the mean over users).
 */
import { Rng } from '../util/rng.js';

export interface Interval {
  mean: number;
  lo: number;
  hi: number;
}

export function bootstrapMean(values: readonly number[], opts: { samples?: number; seed?: number; level?: number } = {}): Interval {
  const n = values.length;
  if (n === 0) return { mean: Number.NaN, lo: Number.NaN, hi: Number.NaN };
  const mean = values.reduce((s, v) => s + v, 0) / n;
  const samples = opts.samples ?? 10_000;
  const level = opts.level ?? 0.95;
  const rng = new Rng(opts.seed ?? 1);
  const means = new Float64Array(samples);
  for (let b = 0; b < samples; b++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += values[rng.int(n)];
    means[b] = s / n;
  }
  means.sort();
  const q = (p: number): number => means[Math.min(samples - 1, Math.max(0, Math.floor(p * samples)))];
  return { mean, lo: q((1 - level) / 2), hi: q(1 - (1 - level) / 2) };
}

/** Bootstrap interval of the mean paired difference a - b over users (same resampled users for both). */
export function bootstrapDifference(a: readonly number[], b: readonly number[], opts: { samples?: number; seed?: number } = {}): Interval & { pBelowZero: number } {
  const d = a.map((v, i) => v - b[i]);
  const iv = bootstrapMean(d, opts);
  const rng = new Rng(opts.seed ?? 1);
  const samples = opts.samples ?? 10_000;
  let below = 0;
  for (let s = 0; s < samples; s++) {
    let sum = 0;
    for (let i = 0; i < d.length; i++) sum += d[rng.int(d.length)];
    if (sum <= 0) below++;
  }
  return { ...iv, pBelowZero: below / samples };
}
