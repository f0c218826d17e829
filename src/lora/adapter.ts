/**
 * An adapter in memory: for every injected layer and feed-forward map, the merged rank-(n*r) pair
 * A [n*r, in] and B [out, n*r] (row block i of A and column block i of B are module i).
 */
import type { LoraTarget } from '../model/weights.js';
import { Rng } from '../util/rng.js';
import { type AdapterSpec, injectedLayers, isVanilla, scalingOf, totalRank } from './spec.js';

/** One feed-forward linear map that can carry LoRA: the model's own declaration, so the two never drift. */
export type { LoraTarget } from '../model/weights.js';

export interface LoraPair {
  target: LoraTarget;
  rank: number;
  /** [rank, in], row-major. */
  A: Float32Array;
  /** [out, rank], row-major. */
  B: Float32Array;
}

export interface Adapter {
  spec: AdapterSpec;
  scaling: number;
  pairs: LoraPair[];
}

export const pairKey = (t: Pick<LoraTarget, 'layer' | 'map'>): string => `${t.layer}.${t.map}`;

export type LoraInit = 'kaiming' | 'gaussian';

/**
 * Fresh adapter: A as PEFT initialises it (Kaiming-uniform with a = sqrt(5), i.e. U(-1/sqrt(in),
 * 1/sqrt(in)), or Gaussian with std 1/r), B zero, so the adapter starts as the identity on the model.
 */
export function initAdapter(spec: AdapterSpec, targets: LoraTarget[], seed: number, init: LoraInit = 'kaiming'): Adapter {
  const rng = new Rng(seed);
  const rank = totalRank(spec);
  const layers = new Set(injectedLayers(spec));
  const pairs: LoraPair[] = [];
  if (!isVanilla(spec)) {
    for (const t of targets) {
      if (!layers.has(t.layer)) continue;
      const A = new Float32Array(rank * t.inFeatures);
      if (init === 'kaiming') {
        const bound = 1 / Math.sqrt(t.inFeatures);
        for (let i = 0; i < A.length; i++) A[i] = (rng.next() * 2 - 1) * bound;
      } else {
        const std = 1 / spec.r;
        for (let i = 0; i < A.length; i++) A[i] = rng.normal() * std;
      }
      pairs.push({ target: t, rank, A, B: new Float32Array(t.outFeatures * rank) });
    }
  }
  return { spec, scaling: scalingOf(spec), pairs };
}

/** Bytes the adapter's tensors occupy (cache accounting). */
export function adapterBytes(a: Adapter): number {
  return a.pairs.reduce((s, p) => s + p.A.byteLength + p.B.byteLength, 0);
}

/**
 * Merge n separately held rank-r modules into the stored rank-n*r pair: stack the A's by rows,
 * concatenate the B's by columns. Exact: sum_i B_i A_i x = [B_1 .. B_n] [A_1; ..; A_n] x.
 */
export function mergeModules(target: LoraTarget, modules: { A: Float32Array; B: Float32Array; r: number }[]): LoraPair {
  const rank = modules.reduce((s, m) => s + m.r, 0);
  const A = new Float32Array(rank * target.inFeatures);
  const B = new Float32Array(target.outFeatures * rank);
  let off = 0;
  for (const m of modules) {
    A.set(m.A, off * target.inFeatures);
    for (let o = 0; o < target.outFeatures; o++) {
      for (let k = 0; k < m.r; k++) B[o * rank + off + k] = m.B[o * m.r + k];
    }
    off += m.r;
  }
  return { target, rank, A, B };
}
