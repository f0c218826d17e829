/**
 * How adapters become graph feeds. An adapter is data (src/lora owns its format and store); here it
 * is turned into the inputs of a graph built with a LoRA spec:
 * - one adapter for the whole batch (training, evaluation, single-user generation), or
 * - a slot pool for mixed batches: each slot holds one adapter, ranks zero-padded to the pool's rank
 *   bucket and the scaling folded into B, and every row names its slot.
 */
import type { HostTensor } from '../graph/types.js';
import type { ModelConfig } from './config.js';
import type { LoraSpec } from './layers.js';
import { transposeInto } from '../util/transpose.js';
import { LORA_MAPS, mapFeatures } from './weights.js';

/**
 * Structurally src/lora's Adapter or ServedAdapter: merged rank-R pairs, A [R, in] and either B
 * [out, R] or, as served, Bt [R, out] (B transposed), scaled by `scaling`.
 */
export interface AdapterLike {
  scaling: number;
  pairs: readonly AdapterPairLike[];
}

export type AdapterPairLike = { target: { layer: number; map: string }; rank: number; A: Float32Array } & (
  | { B: Float32Array; Bt?: undefined }
  | { Bt: Float32Array; B?: undefined }
);

export class LoraFeedError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = 'LoraFeedError';
  }
}

export interface CheckedPair {
  layer: number;
  map: string;
  rank: number;
  out: number;
  A: Float32Array;
  /** B [out, R] and Bt [R, out]: the adapter gives one, the other is made on first use (pairB, pairBt). */
  B?: Float32Array;
  Bt?: Float32Array;
}

/** [rows, cols] -> a new [cols, rows]. */
function transposed(m: Float32Array, rows: number, cols: number): Float32Array {
  const t = new Float32Array(m.length);
  transposeInto(m, rows, cols, t);
  return t;
}

/** The pair's B [out, R] (transposed from Bt once, when the adapter is held as served). */
export function pairB(p: CheckedPair): Float32Array {
  p.B ??= transposed(p.Bt!, p.rank, p.out);
  return p.B;
}

/** The pair's Bt [R, out] (transposed from B once, when the adapter is held as stored). */
export function pairBt(p: CheckedPair): Float32Array {
  p.Bt ??= transposed(p.B!, p.out, p.rank);
  return p.Bt;
}

/** Validates an adapter against a model: known maps, sizes, every map of an injected layer, one rank per layer. */
export function checkAdapter(cfg: ModelConfig, adapter: AdapterLike): { layers: boolean[]; pairs: Map<string, CheckedPair> } {
  const maps = LORA_MAPS[cfg.family];
  const pairs = new Map<string, CheckedPair>();
  const layers: boolean[] = Array(cfg.nLayers).fill(false);
  for (const p of adapter.pairs) {
    const { layer, map } = p.target;
    if (!Number.isInteger(layer) || layer < 0 || layer >= cfg.nLayers) {
      throw new LoraFeedError('bad_layer', `adapter pair for layer ${layer}: the model has ${cfg.nLayers} layers`, { layer });
    }
    if (!maps.includes(map)) throw new LoraFeedError('bad_map', `adapter pair for map "${map}": ${cfg.family} LoRA maps are ${maps.join(', ')}`, { map });
    const { inFeatures: i, outFeatures: o } = mapFeatures(cfg, map);
    const b = p.B ?? p.Bt;
    if (!(b instanceof Float32Array) || p.A.length !== p.rank * i || b.length !== o * p.rank) {
      throw new LoraFeedError('bad_pair_size', `adapter pair ${layer}.${map}: rank ${p.rank} needs A ${p.rank}x${i} and B ${o}x${p.rank}, got ${p.A.length} and ${b?.length} values`, {
        layer,
        map,
        rank: p.rank,
      });
    }
    const key = `${layer}.${map}`;
    if (pairs.has(key)) throw new LoraFeedError('duplicate_pair', `adapter has two pairs for ${key}`, { key });
    pairs.set(key, { layer, map, rank: p.rank, out: o, A: p.A, ...(p.B ? { B: p.B } : { Bt: p.Bt }) });
    layers[layer] = true;
  }
  layers.forEach((on, l) => {
    if (!on) return;
    const ranks = maps.map((m) => pairs.get(`${l}.${m}`)?.rank);
    if (ranks.some((r) => r === undefined)) {
      throw new LoraFeedError('incomplete_layer', `adapter covers layer ${l} but not all of its maps (${maps.join(', ')})`, { layer: l });
    }
    if (new Set(ranks).size > 1) throw new LoraFeedError('mixed_rank', `adapter layer ${l} has maps of different ranks ${ranks.join(', ')}`, { layer: l, ranks });
  });
  return { layers, pairs };
}

const NO_WEIGHTS = new Float32Array(0);

/**
 * The spec and feeds for one adapter, in the layout it is held in (B as stored, or Bt as served: no
 * copy either way); an empty adapter gives no spec (the plain model). With `everyLayer`, the graph has
 * LoRA on every layer and the layers the adapter leaves alone get rank 0 (empty A and B, whose term
 * is exactly zero): one graph for every adapter, not one per layer set.
 */
export function adapterFeeds(cfg: ModelConfig, adapter: AdapterLike, opts: { everyLayer?: boolean } = {}): { lora?: LoraSpec; feeds: Record<string, HostTensor> } {
  const { layers, pairs } = checkAdapter(cfg, adapter);
  if (!layers.some(Boolean)) return { feeds: {} };
  const feeds: Record<string, HostTensor> = { lora_scale: { dtype: 'float32', dims: [], data: Float32Array.of(adapter.scaling) } };
  const served = [...pairs.values()].every((p) => p.Bt !== undefined);
  const put = (layer: number, map: string, rank: number, a: Float32Array, b: Float32Array): void => {
    const { inFeatures: i, outFeatures: o } = mapFeatures(cfg, map);
    feeds[`lora.${layer}.${map}.A`] = { dtype: 'float32', dims: [rank, i], data: a };
    if (served) feeds[`lora.${layer}.${map}.Bt`] = { dtype: 'float32', dims: [rank, o], data: b };
    else feeds[`lora.${layer}.${map}.B`] = { dtype: 'float32', dims: [o, rank], data: b };
  };
  for (const p of pairs.values()) put(p.layer, p.map, p.rank, p.A, served ? p.Bt! : pairB(p));
  if (opts.everyLayer) {
    layers.forEach((on, l) => {
      if (!on) for (const m of LORA_MAPS[cfg.family]) put(l, m, 0, NO_WEIGHTS, NO_WEIGHTS);
    });
  }
  const mask = opts.everyLayer ? layers.map(() => true) : layers;
  return { lora: served ? { mode: 'single', layers: mask, bt: true } : { mode: 'single', layers: mask }, feeds };
}

/**
 * A pool of adapter slots for mixed batches: per layer and map A [S, PR, in] and B [S, out, PR].
 * Slot contents are written in place; `feeds()` hands out views, so a step costs no copy. Slot 0 is
 * left all-zero by convention (rows without an adapter). Rows of adapters that do not cover a pool
 * layer stay zero there.
 */
export class SlotPool {
  readonly lora: LoraSpec;
  private readonly a = new Map<string, Float32Array>();
  private readonly b = new Map<string, Float32Array>();
  private readonly occupied: boolean[];

  constructor(
    readonly cfg: ModelConfig,
    readonly slots: number,
    /** The rank bucket PR: every slot's adapter has rank <= PR. */
    readonly rank: number,
    layers: readonly boolean[] = Array(cfg.nLayers).fill(true),
  ) {
    if (!Number.isInteger(slots) || slots < 1 || !Number.isInteger(rank) || rank < 1) {
      throw new LoraFeedError('bad_pool', `a slot pool needs slots >= 1 and rank >= 1, got ${slots} and ${rank}`, { slots, rank });
    }
    if (layers.length !== cfg.nLayers) throw new LoraFeedError('layer_count', `pool layer mask has ${layers.length} entries for ${cfg.nLayers} layers`);
    this.lora = { mode: 'pool', layers: [...layers] };
    this.occupied = Array(slots).fill(false);
    layers.forEach((on, l) => {
      if (!on) return;
      for (const map of LORA_MAPS[cfg.family]) {
        const { inFeatures: i, outFeatures: o } = mapFeatures(cfg, map);
        this.a.set(`${l}.${map}`, new Float32Array(slots * rank * i));
        this.b.set(`${l}.${map}`, new Float32Array(slots * o * rank));
      }
    });
  }

  isOccupied(slot: number): boolean {
    return this.occupied[slot] ?? false;
  }

  /** Write an adapter into a slot (scaling folded into B, rank padded with zeros); null clears it. */
  set(slot: number, adapter: AdapterLike | null): void {
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.slots) throw new LoraFeedError('bad_slot', `slot ${slot} is outside the pool of ${this.slots}`, { slot });
    this.clear(slot);
    if (!adapter) return;
    const { layers, pairs } = checkAdapter(this.cfg, adapter);
    layers.forEach((on, l) => {
      if (on && !this.lora.layers[l]) throw new LoraFeedError('layer_not_pooled', `adapter uses layer ${l}, which the pool does not carry`, { layer: l });
    });
    const pr = this.rank;
    for (const p of pairs.values()) {
      if (p.rank > pr) throw new LoraFeedError('rank_exceeds_pool', `adapter rank ${p.rank} exceeds the pool's rank bucket ${pr}`, { rank: p.rank, pool: pr });
      const { inFeatures: i, outFeatures: o } = mapFeatures(this.cfg, p.map);
      const a = this.a.get(`${p.layer}.${p.map}`)!;
      const b = this.b.get(`${p.layer}.${p.map}`)!;
      a.set(p.A, slot * pr * i); // rows 0..rank-1 of the slot; the rest stay zero
      const base = slot * o * pr;
      const B = pairB(p);
      for (let row = 0; row < o; row++) {
        for (let k = 0; k < p.rank; k++) b[base + row * pr + k] = adapter.scaling * B[row * p.rank + k];
      }
    }
    this.occupied[slot] = true;
  }

  clear(slot: number): void {
    const pr = this.rank;
    for (const [key, a] of this.a) {
      const map = key.slice(key.indexOf('.') + 1);
      const { inFeatures: i, outFeatures: o } = mapFeatures(this.cfg, map);
      a.fill(0, slot * pr * i, (slot + 1) * pr * i);
      this.b.get(key)!.fill(0, slot * o * pr, (slot + 1) * o * pr);
    }
    this.occupied[slot] = false;
  }

  /** The pool tensors (views of the live arrays) for a graph built with `this.lora`. */
  feeds(): Record<string, HostTensor> {
    const out: Record<string, HostTensor> = {};
    for (const [key, a] of this.a) {
      const map = key.slice(key.indexOf('.') + 1);
      const { inFeatures: i, outFeatures: o } = mapFeatures(this.cfg, map);
      out[`pool.${key}.A`] = { dtype: 'float32', dims: [this.slots, this.rank, i], data: a };
      out[`pool.${key}.B`] = { dtype: 'float32', dims: [this.slots, o, this.rank], data: this.b.get(key)! };
    }
    return out;
  }

  /** Bytes held by the pool (metrics). */
  get bytes(): number {
    let n = 0;
    for (const a of this.a.values()) n += a.byteLength;
    for (const b of this.b.values()) n += b.byteLength;
    return n;
  }
}

/**
 * LoRA for one call: an adapter for every row, a pool with a slot per row, or feeds the caller laid
 * out already (the unit pool, row-pool.ts: `lora` is its spec, `feeds` its views).
 */
export type LoraInput =
  | { adapter: AdapterLike; everyLayer?: boolean }
  | { pool: SlotPool; slots: readonly number[] }
  | { lora: LoraSpec; feeds: Record<string, HostTensor> };

/** The spec and feeds of a call's LoRA input for a batch of `rows` rows. */
export function loraInputFeeds(cfg: ModelConfig, lora: LoraInput | undefined, rows: number): { lora?: LoraSpec; feeds: Record<string, HostTensor> } {
  if (!lora) return { feeds: {} };
  if ('adapter' in lora) return adapterFeeds(cfg, lora.adapter, { everyLayer: lora.everyLayer });
  if ('feeds' in lora) return { lora: lora.lora, feeds: lora.feeds };
  if (lora.slots.length !== rows) throw new LoraFeedError('slot_count', `${lora.slots.length} slots for ${rows} rows`, { slots: lora.slots.length, rows });
  for (const s of lora.slots) {
    if (!Number.isInteger(s) || s < 0 || s >= lora.pool.slots) throw new LoraFeedError('bad_slot', `slot ${s} is outside the pool of ${lora.pool.slots}`, { slot: s });
  }
  return {
    lora: lora.pool.lora,
    feeds: { ...lora.pool.feeds(), slot: { dtype: 'int64', dims: [rows], data: BigInt64Array.from(lora.slots, (s) => BigInt(s)) } },
  };
}
