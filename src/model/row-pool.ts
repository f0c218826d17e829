/**
 * A row-aligned adapter pool for a live decode batch (LoRA mode `rows`): row b of the pool holds the
 * adapter of batch row b as A^T [in, PR] and B^T [PR, out], ranks zero-padded to the pool rank PR and
 * the scaling folded into B.
 *
 * Why not SlotPool + gather: the gather copies every row's A and B on every step (at rank 128 on all
 * six layers of the default model, 7.7 MB per row per step); here a row is written once when its
 * occupant changes and the graph reads the buffers in place. Rows mirror a KvBatch: `add` appends,
 * `remove` moves the last row into the hole, so both keep the same order when called together.
 *
 * Writes are lazy: add/remove only record which rows changed; `input()` brings the buffers up to date
 * first (writing the changed rows, or every row when PR or the capacity changes) and hands out views.
 * PR is the smallest power of two (at least 8) covering the largest rank among the rows, so a batch
 * pays for the padding of its own largest adapter, not of the largest adapter ever seen.
 */
import type { HostTensor } from '../graph/types.js';
import type { ModelConfig } from './config.js';
import type { RowId } from './kv.js';
import { type AdapterLike, type CheckedPair, checkAdapter, type LoraInput, LoraFeedError } from './lora-feeds.js';
import { LORA_MAPS, mapFeatures } from './weights.js';

export const MIN_POOL_RANK = 8;
/** Allocations up to this size are kept when PR shrinks (reallocating on every rank change costs more). */
const KEEP_BYTES = 64 * 1024 * 1024;

/** The pool rank that covers `rank`: a power of two, at least MIN_POOL_RANK; 0 for no adapter. */
export function rankBucket(rank: number): number {
  if (rank <= 0) return 0;
  let b = MIN_POOL_RANK;
  while (b < rank) b *= 2;
  return b;
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
  layer: number;
  map: string;
  inF: number;
  outF: number;
  a: Float32Array;
  b: Float32Array;
}

export interface RowPoolStats {
  /** Rows written because their occupant changed. */
  rowWrites: number;
  /** Times every row was rewritten because PR or the capacity changed. */
  relayouts: number;
}

/** Floats per row per unit of rank over every LoRA map of the model: sum of (in + out). */
function floatsPerRank(cfg: ModelConfig): number {
  let n = 0;
  for (let l = 0; l < cfg.nLayers; l++) for (const m of LORA_MAPS[cfg.family]) {
    const f = mapFeatures(cfg, m);
    n += f.inFeatures + f.outFeatures;
  }
  return n;
}

export class RowPool {
  private rowsList: Row[] = [];
  private pr = 0;
  private capRows = 0;
  private capRank = 0;
  private bufs: MapBuf[] = [];
  /** Rows whose buffer content is out of date. */
  private dirty = new Set<number>();
  /** The layout itself is out of date (PR or capacity changed): every row is rewritten. */
  private stale = false;
  readonly stats: RowPoolStats = { rowWrites: 0, relayouts: 0 };

  /** Rows to allocate for (the batch limit); more rows grow the buffers. */
  private readonly rowHint: number;

  constructor(
    readonly cfg: ModelConfig,
    opts: { maxRows?: number } = {},
  ) {
    this.rowHint = Math.max(1, opts.maxRows ?? 4);
  }

  /** Bytes of the buffers for `rows` rows at pool rank `rank` (every layer and map of the model). */
  static bytesFor(cfg: ModelConfig, rows: number, rank: number): number {
    return rows * rank * floatsPerRank(cfg) * 4;
  }

  get rows(): readonly RowId[] {
    return this.rowsList.map((r) => r.id);
  }

  get size(): number {
    return this.rowsList.length;
  }

  /** The pool rank the rows need now (0 when no row carries an adapter). */
  get rank(): number {
    return rankBucket(Math.max(0, ...this.rowsList.map((r) => r.rank)));
  }

  /** Bytes allocated. */
  get bytes(): number {
    return this.bufs.reduce((s, b) => s + b.a.byteLength + b.b.byteLength, 0);
  }

  indexOf(id: RowId): number {
    return this.rowsList.findIndex((r) => r.id === id);
  }

  /** The rank an adapter needs in a pool (its largest pair), after checking it against the model. */
  static rankOf(cfg: ModelConfig, adapter: AdapterLike | null): number {
    if (!adapter) return 0;
    const { pairs } = checkAdapter(cfg, adapter);
    return Math.max(0, ...[...pairs.values()].map((p) => p.rank));
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
    this.dirty.add(this.rowsList.length - 1);
  }

  /** Remove a row; the last row takes its place (as KvBatch.remove does). */
  remove(id: RowId): void {
    const r = this.indexOf(id);
    if (r < 0) throw new LoraFeedError('unknown_row', `no row ${String(id)} in the pool`, { id });
    const last = this.rowsList.length - 1;
    if (r !== last) {
      this.rowsList[r] = this.rowsList[last];
      this.dirty.add(r);
    }
    this.rowsList.pop();
    this.dirty.delete(last);
  }

  /**
   * LoRA input for rows [from, to) (a prefill of the rows just added, or the whole batch for a
   * decode step): mode `rows` over the union of their layers, or undefined when none of them has an
   * adapter. The feeds are views of the live buffers, valid until the next add/remove.
   */
  input(from = 0, to = this.rowsList.length): LoraInput | undefined {
    if (from < 0 || to > this.rowsList.length || from >= to) throw new LoraFeedError('bad_rows', `rows ${from}..${to} of a pool of ${this.rowsList.length}`, { from, to });
    this.sync();
    const span = this.rowsList.slice(from, to);
    const layers = Array.from({ length: this.cfg.nLayers }, (_, l) => span.some((r) => r.layers[l]));
    if (!layers.some(Boolean)) return undefined;
    const pr = this.pr;
    const n = to - from;
    const feeds: Record<string, HostTensor> = {};
    for (const m of this.bufs) {
      if (!layers[m.layer]) continue;
      const a = m.a.subarray(from * m.inF * pr, to * m.inF * pr);
      const b = m.b.subarray(from * pr * m.outF, to * pr * m.outF);
      feeds[`pool.${m.layer}.${m.map}.A`] = { dtype: 'float32', dims: [n, m.inF, pr], data: a };
      feeds[`pool.${m.layer}.${m.map}.B`] = { dtype: 'float32', dims: [n, pr, m.outF], data: b };
    }
    return { lora: { mode: 'rows', layers }, feeds };
  }

  /** Bring the buffers up to date: the changed rows, or every row after a layout change. */
  private sync(): void {
    const want = this.rank;
    const rows = this.rowsList.length;
    if (want === 0) {
      // No adapter in the batch: nothing is fed. Rows are written afresh when one arrives.
      if (this.pr !== 0) this.stale = true;
      this.pr = 0;
      this.dirty.clear();
      return;
    }
    if (want !== this.pr || rows > this.capRows || want > this.capRank) {
      this.layout(want, rows);
      this.stale = true;
    }
    if (this.stale) {
      this.stats.relayouts += 1;
      for (let r = 0; r < rows; r++) this.write(r);
      this.stale = false;
    } else {
      for (const r of this.dirty) this.write(r);
      this.stats.rowWrites += this.dirty.size;
    }
    this.dirty.clear();
  }

  /**
   * Set PR; reallocate when the capacity is short, or when a rare huge adapter left behind more than
   * KEEP_BYTES that the rows now need a quarter of (smaller leftovers stay: ranks come and go).
   */
  private layout(pr: number, rows: number): void {
    const tooSmall = rows > this.capRows || pr > this.capRank;
    const need = RowPool.bytesFor(this.cfg, Math.max(rows, this.rowHint), pr);
    const tooBig = this.bytes > KEEP_BYTES && this.bytes > 4 * need;
    this.pr = pr;
    if (!tooSmall && !tooBig) return;
    this.capRows = Math.max(rows, this.rowHint, tooSmall && rows > this.capRows ? 2 * this.capRows : 0);
    this.capRank = tooBig ? pr : Math.max(pr, this.capRank);
    this.bufs = [];
    for (let l = 0; l < this.cfg.nLayers; l++) {
      for (const map of LORA_MAPS[this.cfg.family]) {
        const { inFeatures: inF, outFeatures: outF } = mapFeatures(this.cfg, map);
        this.bufs.push({ layer: l, map, inF, outF, a: new Float32Array(this.capRows * pr * inF), b: new Float32Array(this.capRows * outF * pr) });
      }
    }
  }

  /** Write row r at the current PR: A^T and scaled B^T of its pairs padded with zeros, zeros where it has none. */
  private write(r: number): void {
    const row = this.rowsList[r];
    const pr = this.pr;
    for (const m of this.bufs) {
      const aOff = r * m.inF * pr;
      const bOff = r * pr * m.outF;
      m.a.fill(0, aOff, aOff + m.inF * pr);
      const p = row.pairs.get(`${m.layer}.${m.map}`);
      if (!p) {
        m.b.fill(0, bOff, bOff + pr * m.outF);
        continue;
      }
      const k = p.rank;
      // A [k, in] -> A^T [in, PR]: row j of A becomes column j.
      for (let j = 0; j < k; j++) {
        const src = j * m.inF;
        for (let i = 0; i < m.inF; i++) m.a[aOff + i * pr + j] = p.A[src + i];
      }
      // B [out, k] -> scaled B^T [PR, out]: rows k..PR-1 stay zero.
      const s = row.scaling;
      for (let o = 0; o < m.outF; o++) {
        const src = o * k;
        for (let j = 0; j < k; j++) m.b[bOff + j * m.outF + o] = s * p.B[src + j];
      }
      m.b.fill(0, bOff + k * m.outF, bOff + pr * m.outF);
    }
  }
}
