/**
 * An adapter in memory: for every injected layer and feed-forward map, the merged rank-(n*r) pair
 * A [n*r, in] and B [out, n*r] (row block i of A and column block i of B are module i).
 */
import type { LoraTarget } from '../model/weights.js';
import { Rng } from '../util/rng.js';
import { transposeInto } from '../util/transpose.js';
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

/** A pair as served: B held transposed, the layout the serving pools copy in blocks (row k of Bt is column k of B). */
export interface ServedPair {
  target: LoraTarget;
  rank: number;
  /** [rank, in], row-major. */
  A: Float32Array;
  /** [rank, out], row-major: B^T. */
  Bt: Float32Array;
}

/** An adapter as the serving engine holds it once it is in use (toServed below). */
export interface ServedAdapter {
  spec: AdapterSpec;
  scaling: number;
  pairs: ServedPair[];
}

/** Either form of a decoded adapter: the serving cache holds both (loaded with B, served with Bt). */
export type AnyAdapter = Adapter | ServedAdapter;

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
export function adapterBytes(a: AnyAdapter): number {
  return (a.pairs as Array<LoraPair | ServedPair>).reduce((s, p) => s + p.A.byteLength + ('B' in p ? p.B : p.Bt).byteLength, 0);
}

/** toServed's transposition buffer: one for the process, grown as needed. */
let scratch = new Float32Array(0);

/**
 * Turn an adapter into its served form in place: each B is transposed in its own memory and becomes
 * Bt (the pair loses B), so no second copy of the weights is made and the cache's byte count holds.
 * The same object comes back; an adapter already served comes back as it is. The serving engine does
 * it once per cached adapter version, at its first use: later joins copy its units in blocks.
 */
export function toServed(a: AnyAdapter): ServedAdapter {
  const pairs = a.pairs as Array<LoraPair | ServedPair>;
  const size = Math.max(0, ...pairs.map((p) => ('B' in p ? p.B.length : 0)));
  if (size === 0) return a as ServedAdapter;
  // A fresh buffer per adapter would be garbage for the collector to chase while serving.
  if (scratch.length < size) scratch = new Float32Array(size);
  for (const p of pairs) {
    if (!('B' in p)) continue;
    const m = p as Partial<LoraPair> & Partial<ServedPair> & { rank: number; target: LoraTarget };
    const B = m.B!;
    const tmp = scratch.subarray(0, B.length);
    tmp.set(B);
    transposeInto(tmp, m.target.outFeatures, m.rank, B);
    m.Bt = m.B;
    delete m.B;
  }
  return a as ServedAdapter;
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
