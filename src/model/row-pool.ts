/**
 * The adapters of a live decode batch, for LoRA mode `rows` (layers.ts): rows are grouped by rank
 * bucket (the power of two, at least 8, covering the adapter's rank), and each group keeps a pool of
 * its rows' adapters as A^T [in, PR] and B^T [PR, out], padded to the group's PR with the scaling
 * folded into B. A row without an adapter is in no group and costs nothing.
 *
 * Why this layout: a pool gathered per step (SlotPool + Gather) copies every row's adapter on every
 * step, and one pool padded to the batch's largest rank makes a batch of rank-8 users pay rank 128
 * when one rank-128 user is among them. Here a row is written once, when it joins; when a row leaves
 * its group, the group's last row is copied into the hole (a memcpy, not a rewrite); and the graph
 * multiplies each group at its own rank.
 *
 * Rows mirror a KvBatch (`add` appends, `remove` moves the last row into the hole), so both keep the
 * same batch order when called together. Writes are lazy: `input()` brings the pools up to date and
 * hands out views, valid until the next add/remove.
 */
import type { HostTensor } from '../graph/types.js';
import type { ModelConfig } from './config.js';
import type { RowId } from './kv.js';
import { type AdapterLike, type CheckedPair, checkAdapter, type LoraInput, LoraFeedError } from './lora-feeds.js';
import { LORA_MAPS, mapFeatures } from './weights.js';

export const MIN_POOL_RANK = 8;
/** An empty group keeps its buffers up to this size (ranks come and go); a bigger one is freed. */
const KEEP_BYTES = 64 * 1024 * 1024;

/** The pool rank that covers `rank`: a power of two, at least MIN_POOL_RANK; 0 for no adapter. */
export function rankBucket(rank: number): number {
  if (rank <= 0) return 0;
  let b = MIN_POOL_RANK;
  while (b < rank) b *= 2;
  return b;
}

/** Floats per row per unit of rank over every LoRA map of the model: the sum of (in + out). */
function floatsPerRank(cfg: ModelConfig): number {
  let n = 0;
  for (let l = 0; l < cfg.nLayers; l++) {
    for (const m of LORA_MAPS[cfg.family]) {
      const f = mapFeatures(cfg, m);
      n += f.inFeatures + f.outFeatures;
    }
  }
  return n;
}

interface Row {
  id: RowId;
  scaling: number;
  /** Largest pair rank (0: no adapter). */
  rank: number;
  layers: boolean[];
  pairs: Map<string, CheckedPair>;
}

interface MapBuf {
  key: string;
  layer: number;
  map: string;
  inF: number;
  outF: number;
  a: Float32Array;
  b: Float32Array;
}

export interface RowPoolStats {
  /** Rows written from their adapter (once per join). */
  rowWrites: number;
  /** Rows copied inside a group's buffers to fill the hole a leaving row left. */
  rowMoves: number;
}

/** The pool of one rank bucket: slot s holds the adapter of row ids[s]. */
class RankGroup {
  ids: RowId[] = [];
  cap = 0;
  bufs: MapBuf[] = [];
  readonly dirty = new Set<number>();

  constructor(
    readonly cfg: ModelConfig,
    readonly pr: number,
  ) {}

  get bytes(): number {
    return this.bufs.reduce((s, m) => s + m.a.byteLength + m.b.byteLength, 0);
  }

  add(id: RowId, rowHint: number): void {
    if (this.ids.length === this.cap) this.grow(Math.max(rowHint, 2 * this.cap, 1));
    this.ids.push(id);
    this.dirty.add(this.ids.length - 1);
  }

  remove(id: RowId, stats: RowPoolStats): void {
    const s = this.ids.indexOf(id);
    const last = this.ids.length - 1;
    if (s !== last) {
      if (this.dirty.has(last)) this.dirty.add(s);
      else {
        this.dirty.delete(s);
        for (const m of this.bufs) {
          m.a.copyWithin(s * m.inF * this.pr, last * m.inF * this.pr, (last + 1) * m.inF * this.pr);
          m.b.copyWithin(s * this.pr * m.outF, last * this.pr * m.outF, (last + 1) * this.pr * m.outF);
        }
        stats.rowMoves += 1;
      }
      this.ids[s] = this.ids[last];
    }
    this.ids.pop();
    this.dirty.delete(last);
    if (this.ids.length === 0 && this.bytes > KEEP_BYTES) {
      this.bufs = [];
      this.cap = 0;
    }
  }

  private grow(cap: number): void {
    const pr = this.pr;
    const old = new Map(this.bufs.map((m) => [m.key, m]));
    this.bufs = [];
    for (let l = 0; l < this.cfg.nLayers; l++) {
      for (const map of LORA_MAPS[this.cfg.family]) {
        const { inFeatures: inF, outFeatures: outF } = mapFeatures(this.cfg, map);
        const key = `${l}.${map}`;
        const m: MapBuf = { key, layer: l, map, inF, outF, a: new Float32Array(cap * inF * pr), b: new Float32Array(cap * pr * outF) };
        const prev = old.get(key);
        if (prev) {
          m.a.set(prev.a.subarray(0, this.ids.length * inF * pr));
          m.b.set(prev.b.subarray(0, this.ids.length * pr * outF));
        }
        this.bufs.push(m);
      }
    }
    this.cap = cap;
  }

  /** Write slot s from its row's adapter: A^T and scaled B^T padded with zeros, zeros where it has no pair. */
  write(s: number, row: Row): void {
    const pr = this.pr;
    for (const m of this.bufs) {
      const { a, b, inF, outF } = m;
      const aOff = s * inF * pr;
      const bOff = s * pr * outF;
      a.fill(0, aOff, aOff + inF * pr);
      const p = row.pairs.get(m.key);
      if (!p) {
        b.fill(0, bOff, bOff + pr * outF);
        continue;
      }
      const k = p.rank;
      const A = p.A;
      const B = p.B;
      const scale = row.scaling;
      // A [k, in] -> A^T [in, PR]: row i of A^T gathers column i of A.
      for (let i = 0; i < inF; i++) {
        const d = aOff + i * pr;
        for (let j = 0; j < k; j++) a[d + j] = A[j * inF + i];
      }
      // B [out, k] -> scaled B^T [PR, out]: rows k..PR-1 stay zero.
      for (let j = 0; j < k; j++) {
        const d = bOff + j * outF;
        for (let o = 0; o < outF; o++) b[d + o] = scale * B[o * k + j];
      }
      b.fill(0, bOff + k * outF, bOff + pr * outF);
    }
  }
}

export class RowPool {
  private rowsList: Row[] = [];
  private readonly groups = new Map<number, RankGroup>();
  private readonly rowHint: number;
  private readonly fpr: number;
  readonly stats: RowPoolStats = { rowWrites: 0, rowMoves: 0 };

  constructor(
    readonly cfg: ModelConfig,
    /** maxRows: rows to allocate a group for when it is first used (the batch limit). */
    opts: { maxRows?: number } = {},
  ) {
    this.rowHint = Math.max(1, opts.maxRows ?? 4);
    this.fpr = floatsPerRank(cfg);
  }

  /** Bytes one row of an adapter of `rank` occupies in its group (padded to the group's rank). */
  static rowBytes(cfg: ModelConfig, rank: number): number {
    return rankBucket(rank) * floatsPerRank(cfg) * 4;
  }

  /** The rank an adapter needs in a pool (its largest pair), after checking it against the model. */
  static rankOf(cfg: ModelConfig, adapter: AdapterLike | null): number {
    if (!adapter) return 0;
    const { pairs } = checkAdapter(cfg, adapter);
    return Math.max(0, ...[...pairs.values()].map((p) => p.rank));
  }

  get rows(): readonly RowId[] {
    return this.rowsList.map((r) => r.id);
  }

  get size(): number {
    return this.rowsList.length;
  }

  indexOf(id: RowId): number {
    return this.rowsList.findIndex((r) => r.id === id);
  }

  /** Bytes allocated for all groups. */
  get bytes(): number {
    let n = 0;
    for (const g of this.groups.values()) n += g.bytes;
    return n;
  }

  /** Bytes the live rows occupy (rows times their group's rank): what the engine budgets. */
  get liveBytes(): number {
    let n = 0;
    for (const g of this.groups.values()) n += g.ids.length * g.pr * this.fpr * 4;
    return n;
  }

  /** The LoRA work of a step over all rows, in rank units: sum over groups of rows x PR. */
  get paddedRank(): number {
    let n = 0;
    for (const g of this.groups.values()) n += g.ids.length * g.pr;
    return n;
  }

  /** Append a row (null: no adapter). Validates the adapter now; the write happens at the next input(). */
  add(id: RowId, adapter: AdapterLike | null): void {
    if (this.indexOf(id) >= 0) throw new LoraFeedError('duplicate_row', `row ${String(id)} is already in the pool`, { id });
    const row: Row = { id, scaling: 1, rank: 0, layers: Array(this.cfg.nLayers).fill(false), pairs: new Map() };
    if (adapter) {
      const { layers, pairs } = checkAdapter(this.cfg, adapter);
      row.scaling = adapter.scaling;
      row.layers = layers;
      row.pairs = pairs;
      row.rank = Math.max(0, ...[...pairs.values()].map((p) => p.rank));
    }
    this.rowsList.push(row);
    if (row.rank > 0) this.group(rankBucket(row.rank)).add(id, this.rowHint);
  }

  /** Remove a row; the last row takes its place in batch order (as KvBatch.remove does). */
  remove(id: RowId): void {
    const r = this.indexOf(id);
    if (r < 0) throw new LoraFeedError('unknown_row', `no row ${String(id)} in the pool`, { id });
    const row = this.rowsList[r];
    if (row.rank > 0) this.groups.get(rankBucket(row.rank))!.remove(id, this.stats);
    const last = this.rowsList.length - 1;
    this.rowsList[r] = this.rowsList[last];
    this.rowsList.pop();
  }

  private group(pr: number): RankGroup {
    let g = this.groups.get(pr);
    if (!g) {
      g = new RankGroup(this.cfg, pr);
      this.groups.set(pr, g);
    }
    return g;
  }

  /**
   * LoRA input for rows [from, to) of the batch (a prefill of the rows just added, or all rows for a
   * decode step): mode `rows` with one group per rank bucket among them, over the union of their
   * layers; undefined when none of them has an adapter. Within each group the rows of the range
   * must occupy consecutive slots, which holds for "all rows" and for "the rows added last".
   */
  input(from = 0, to = this.rowsList.length): LoraInput | undefined {
    if (from < 0 || to > this.rowsList.length || from >= to) throw new LoraFeedError('bad_rows', `rows ${from}..${to} of a pool of ${this.rowsList.length}`, { from, to });
    const byId = new Map<RowId, { row: Row; at: number }>();
    this.rowsList.forEach((row, at) => byId.set(row.id, { row, at }));
    for (const g of this.groups.values()) {
      for (const s of g.dirty) g.write(s, byId.get(g.ids[s])!.row);
      this.stats.rowWrites += g.dirty.size;
      g.dirty.clear();
    }
    const span = this.rowsList.slice(from, to).filter((r) => r.rank > 0);
    if (span.length === 0) return undefined;
    const layers = Array.from({ length: this.cfg.nLayers }, (_, l) => span.some((r) => r.layers[l]));
    const buckets = [...new Set(span.map((r) => rankBucket(r.rank)))].sort((a, b) => a - b);
    const feeds: Record<string, HostTensor> = {};
    buckets.forEach((pr, gi) => {
      const g = this.groups.get(pr)!;
      const slots = g.ids.map((id, s) => ({ s, at: byId.get(id)!.at })).filter((x) => x.at >= from && x.at < to);
      const s0 = slots[0].s;
      const s1 = s0 + slots.length;
      if (slots.some((x, i) => x.s !== s0 + i)) throw new LoraFeedError('rows_not_contiguous', `rows ${from}..${to} are scattered in the rank-${pr} group`, { from, to, pr });
      feeds[`rows.g${gi}`] = { dtype: 'int64', dims: [slots.length], data: BigInt64Array.from(slots, (x) => BigInt(x.at - from)) };
      for (const m of g.bufs) {
        if (!layers[m.layer]) continue;
        feeds[`pool.g${gi}.${m.key}.A`] = { dtype: 'float32', dims: [slots.length, m.inF, pr], data: m.a.subarray(s0 * m.inF * pr, s1 * m.inF * pr) };
        feeds[`pool.g${gi}.${m.key}.B`] = { dtype: 'float32', dims: [slots.length, pr, m.outF], data: m.b.subarray(s0 * pr * m.outF, s1 * pr * m.outF) };
      }
    });
    return { lora: { mode: 'rows', layers, groups: buckets.length }, feeds };
  }
}
