/**
 * The adapters of a live decode batch, for LoRA mode `rows` (layers.ts). Each row's adapter is cut,
 * layer by layer, into rank units of a fixed width W (rank 40 at W 16: three units, the last one
 * zero-padded), and each layer keeps one pool of the units of the rows that adapt it: W rows of A
 * [W, in] and the same W rows of B^T [W, out], both block copies of an adapter as served (B held
 * transposed, lora/adapter.ts ServedAdapter; an adapter holding B is transposed once, when its row
 * joins). A decode step multiplies every unit of a layer in one batched matmul and sums each row's
 * units with a selection matrix that also carries the row's scaling, so:
 *  - a row pays for its own rank (rounded up to W) on its own layers only: a rank-8 row next to a
 *    rank-128 row does not pay 128, and a row adapting 2 of 6 layers does not pay for the other 4;
 *  - however mixed the batch, a layer costs the same few ops (not one set per rank group);
 *  - a row is written once, when it joins; when it leaves, the layer's last units are copied into its
 *    holes (a memcpy, not a rewrite).
 *
 * Rows mirror a KvBatch (`add` appends, `remove` moves the last row into the hole), so both keep the
 * same batch order when called together. Writes are lazy: `input()` brings the pools up to date and
 * hands out views, valid until the next add/remove.
 */
import type { HostTensor } from '../graph/types.js';
import type { ModelConfig } from './config.js';
import type { RowId } from './kv.js';
import { type AdapterLike, type CheckedPair, checkAdapter, type LoraInput, LoraFeedError, pairBt } from './lora-feeds.js';
import { LORA_MAPS, mapFeatures } from './weights.js';

/** Unit width: the rank granularity rows are padded to (bench/rank-groups.ts measures 8, 16, 32). */
export const DEFAULT_UNIT = 16;
/** An empty layer pool keeps its buffers up to this size (rows come and go); a bigger one is freed. */
const KEEP_BYTES = 64 * 1024 * 1024;

/** Units of width `unit` that cover `rank`: ceil(rank / unit); 0 for no adapter. */
export function unitsFor(rank: number, unit = DEFAULT_UNIT): number {
  return rank > 0 ? Math.ceil(rank / unit) : 0;
}

/** Floats per unit of rank on one layer, over its LoRA maps: the sum of (in + out). */
function floatsPerRank(cfg: ModelConfig): number {
  let n = 0;
  for (const m of LORA_MAPS[cfg.family]) {
    const f = mapFeatures(cfg, m);
    n += f.inFeatures + f.outFeatures;
  }
  return n;
}

interface Row {
  id: RowId;
  scaling: number;
  /** Rank per layer (0: the layer is not adapted). */
  ranks: number[];
  pairs: Map<string, CheckedPair>;
}

interface MapBuf {
  map: string;
  inF: number;
  outF: number;
  a: Float32Array;
  b: Float32Array;
}

export interface RowPoolStats {
  /** Units written from their row's adapter (when the row joins). */
  unitWrites: number;
  /** Units copied inside a layer pool to fill the hole a leaving row left. */
  unitMoves: number;
}

/** The units of one layer: slot s holds unit part[s] of row owner[s]. */
class LayerPool {
  owner: RowId[] = [];
  part: number[] = [];
  cap = 0;
  bufs: MapBuf[] = [];
  readonly dirty = new Set<number>();

  constructor(
    readonly cfg: ModelConfig,
    readonly layer: number,
    readonly w: number,
  ) {}

  get size(): number {
    return this.owner.length;
  }

  get bytes(): number {
    return this.bufs.reduce((s, m) => s + m.a.byteLength + m.b.byteLength, 0);
  }

  push(id: RowId, part: number, hint: number): void {
    if (this.owner.length === this.cap) this.grow(Math.max(hint, 2 * this.cap, 1));
    this.owner.push(id);
    this.part.push(part);
    this.dirty.add(this.owner.length - 1);
  }

  /** Remove every unit of row `id`, filling each hole with the current last unit. */
  removeRow(id: RowId, stats: RowPoolStats): void {
    const w = this.w;
    for (let s = this.owner.length - 1; s >= 0; s--) {
      if (this.owner[s] !== id) continue;
      const last = this.owner.length - 1;
      if (s !== last) {
        if (this.dirty.has(last)) this.dirty.add(s);
        else {
          this.dirty.delete(s);
          for (const m of this.bufs) {
            m.a.copyWithin(s * w * m.inF, last * w * m.inF, (last + 1) * w * m.inF);
            m.b.copyWithin(s * w * m.outF, last * w * m.outF, (last + 1) * w * m.outF);
          }
          stats.unitMoves += 1;
        }
        this.owner[s] = this.owner[last];
        this.part[s] = this.part[last];
      }
      this.owner.pop();
      this.part.pop();
      this.dirty.delete(last);
    }
    if (this.owner.length === 0 && this.bytes > KEEP_BYTES) {
      this.bufs = [];
      this.cap = 0;
    }
  }

  private grow(cap: number): void {
    const w = this.w;
    const old = new Map(this.bufs.map((m) => [m.map, m]));
    this.bufs = LORA_MAPS[this.cfg.family].map((map) => {
      const { inFeatures: inF, outFeatures: outF } = mapFeatures(this.cfg, map);
      const m: MapBuf = { map, inF, outF, a: new Float32Array(cap * w * inF), b: new Float32Array(cap * w * outF) };
      const prev = old.get(map);
      if (prev) {
        m.a.set(prev.a.subarray(0, this.owner.length * inF * w));
        m.b.set(prev.b.subarray(0, this.owner.length * w * outF));
      }
      return m;
    });
    this.cap = cap;
  }

  /** Write slot s: rows [k W, (k+1) W) of its row's A and of its B^T (two block copies), zeros past the rank. */
  write(s: number, row: Row): void {
    const w = this.w;
    const j0 = this.part[s] * w;
    for (const m of this.bufs) {
      const p = row.pairs.get(`${this.layer}.${m.map}`)!;
      const n = Math.min(w, p.rank - j0); // live rank rows of this unit
      copyRows(m.a, s * w, p.A, j0, n, w, m.inF);
      copyRows(m.b, s * w, pairBt(p), j0, n, w, m.outF);
    }
  }
}

const adaptsAny = (row: Row): boolean => row.ranks.some((r) => r > 0);

/** Rows [from, from + n) of src ([*, width]) into rows [at, at + n) of dst, zeros for the next w - n. */
function copyRows(dst: Float32Array, at: number, src: Float32Array, from: number, n: number, w: number, width: number): void {
  dst.set(src.subarray(from * width, (from + n) * width), at * width);
  if (n < w) dst.fill(0, (at + n) * width, (at + w) * width);
}

export class RowPool {
  private rowsList: Row[] = [];
  private readonly layerPools: LayerPool[];
  private readonly rowHint: number;
  private readonly fpr: number;
  /** The input of all rows, handed out again until the next add or remove (which drop it). */
  private lastInput?: { input: LoraInput | undefined };
  /** Unit width W. */
  readonly unit: number;
  readonly stats: RowPoolStats = { unitWrites: 0, unitMoves: 0 };

  constructor(
    readonly cfg: ModelConfig,
    /** maxRows: rows to allocate a layer pool for when it is first used (the batch limit); unit: W. */
    opts: { maxRows?: number; unit?: number } = {},
  ) {
    this.unit = opts.unit ?? DEFAULT_UNIT;
    if (!Number.isInteger(this.unit) || this.unit < 1) throw new LoraFeedError('bad_unit', `unit width must be a positive integer, got ${opts.unit}`, { unit: opts.unit });
    this.rowHint = Math.max(1, opts.maxRows ?? 4) * 2;
    this.fpr = floatsPerRank(cfg);
    this.layerPools = Array.from({ length: cfg.nLayers }, (_, l) => new LayerPool(cfg, l, this.unit));
  }

  /**
   * Bytes an adapter's units occupy in the pool (each layer's rank rounded up to the unit), after
   * checking the adapter against the model (throws LoraFeedError when it does not fit); 0 for none.
   */
  rowBytes(adapter: AdapterLike | null): number {
    if (!adapter) return 0;
    const units = this.checked(adapter).ranks.reduce((s, r) => s + unitsFor(r, this.unit), 0);
    return units * this.unit * this.fpr * 4;
  }

  /** The adapter's pairs after checking them against the model, and its rank on each layer (0: none). */
  private checked(adapter: AdapterLike): { pairs: Map<string, CheckedPair>; ranks: number[] } {
    const { pairs } = checkAdapter(this.cfg, adapter);
    const ranks: number[] = Array(this.cfg.nLayers).fill(0);
    for (const p of pairs.values()) ranks[p.layer] = p.rank;
    return { pairs, ranks };
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

  /** Bytes allocated for all layer pools. */
  get bytes(): number {
    return this.layerPools.reduce((s, p) => s + p.bytes, 0);
  }

  /** Bytes the live rows' units occupy: what the engine budgets. */
  get liveBytes(): number {
    return this.rankLayers * this.fpr * 4;
  }

  /** The LoRA work of a step over all rows: the sum over layers of units x unit width. */
  get rankLayers(): number {
    return this.layerPools.reduce((s, p) => s + p.size, 0) * this.unit;
  }

  /** Append a row (null: no adapter). Validates the adapter now; the write happens at the next input(). */
  add(id: RowId, adapter: AdapterLike | null): void {
    if (this.indexOf(id) >= 0) throw new LoraFeedError('duplicate_row', `row ${String(id)} is already in the pool`, { id });
    const row: Row = adapter ? { id, scaling: adapter.scaling, ...this.checked(adapter) } : { id, scaling: 1, ranks: Array(this.cfg.nLayers).fill(0), pairs: new Map() };
    this.rowsList.push(row);
    this.lastInput = undefined;
    row.ranks.forEach((r, l) => {
      for (let k = 0; k < unitsFor(r, this.unit); k++) this.layerPools[l].push(id, k, this.rowHint);
    });
  }

  /** Remove a row; the last row takes its place in batch order (as KvBatch.remove does). */
  remove(id: RowId): void {
    const r = this.indexOf(id);
    if (r < 0) throw new LoraFeedError('unknown_row', `no row ${String(id)} in the pool`, { id });
    const row = this.rowsList[r];
    this.lastInput = undefined;
    row.ranks.forEach((rank, l) => {
      if (rank > 0) this.layerPools[l].removeRow(id, this.stats);
    });
    const last = this.rowsList.length - 1;
    this.rowsList[r] = this.rowsList[last];
    this.rowsList.pop();
  }

  /**
   * LoRA input for rows [from, to) of the batch (a prefill of the rows just added, or all rows for a
   * decode step): mode `rows` on every layer, so that one prefill and one decode graph serve every
   * mix of layer sets (a graph per layer mask would mean up to 2^L compiles while serving); a layer
   * none of them adapts gets one all-zero unit that no row selects. Undefined when no row has an
   * adapter. Per layer l: `rows.{l}` int64 [U] (the call's row of each unit), `sel.{l}` [n, 1, U]
   * (row b's scaling where unit u belongs to row b, else 0) and the units' `unit.{l}.{map}.A`
   * [U, W, in] and `unit.{l}.{map}.Bt` [U, W, out].
   * The units of all rows are views of the pools; those of a sub-range are views where they lie
   * together and a copy where earlier rows' removals scattered them. The input of all rows is built
   * once per change: until the next add or remove, the same object is handed out again (a decode
   * step of an unchanged batch builds nothing).
   */
  input(from = 0, to = this.rowsList.length): LoraInput | undefined {
    if (from < 0 || to > this.rowsList.length || from >= to) throw new LoraFeedError('bad_rows', `rows ${from}..${to} of a pool of ${this.rowsList.length}`, { from, to });
    const all = from === 0 && to === this.rowsList.length;
    if (all && this.lastInput) return this.lastInput.input;
    const input = this.build(from, to);
    if (all) this.lastInput = { input };
    return input;
  }

  private build(from: number, to: number): LoraInput | undefined {
    // No row of the range adapts a layer: the plain model, with nothing written or built.
    if (!this.rowsList.slice(from, to).some(adaptsAny)) return undefined;
    const at = new Map<RowId, number>();
    this.rowsList.forEach((row, i) => at.set(row.id, i));
    for (const p of this.layerPools) {
      for (const s of p.dirty) p.write(s, this.rowsList[at.get(p.owner[s])!]);
      this.stats.unitWrites += p.dirty.size;
      p.dirty.clear();
    }
    const n = to - from;
    const w = this.unit;
    const feeds: Record<string, HostTensor> = {};
    for (const p of this.layerPools) {
      const slots: number[] = [];
      p.owner.forEach((id, s) => {
        const i = at.get(id)!;
        if (i >= from && i < to) slots.push(s);
      });
      if (slots.length === 0) {
        this.zeroUnit(p.layer, n, feeds);
        continue;
      }
      const u = slots.length;
      const sel = new Float32Array(n * u);
      const rows = new BigInt64Array(u);
      slots.forEach((s, k) => {
        const b = at.get(p.owner[s])! - from;
        rows[k] = BigInt(b);
        sel[b * u + k] = this.rowsList[b + from].scaling;
      });
      feeds[`rows.${p.layer}`] = { dtype: 'int64', dims: [u], data: rows };
      feeds[`sel.${p.layer}`] = { dtype: 'float32', dims: [n, 1, u], data: sel };
      const together = slots[u - 1] - slots[0] === u - 1;
      for (const m of p.bufs) {
        const aLen = w * m.inF;
        const bLen = w * m.outF;
        let a: Float32Array;
        let b: Float32Array;
        if (together) {
          a = m.a.subarray(slots[0] * aLen, (slots[0] + u) * aLen);
          b = m.b.subarray(slots[0] * bLen, (slots[0] + u) * bLen);
        } else {
          a = new Float32Array(u * aLen);
          b = new Float32Array(u * bLen);
          slots.forEach((s, k) => {
            a.set(m.a.subarray(s * aLen, (s + 1) * aLen), k * aLen);
            b.set(m.b.subarray(s * bLen, (s + 1) * bLen), k * bLen);
          });
        }
        feeds[`unit.${p.layer}.${m.map}.A`] = { dtype: 'float32', dims: [u, w, m.inF], data: a };
        feeds[`unit.${p.layer}.${m.map}.Bt`] = { dtype: 'float32', dims: [u, w, m.outF], data: b };
      }
    }
    return { lora: { mode: 'rows', layers: Array(this.cfg.nLayers).fill(true) }, feeds };
  }

  private readonly zeros = new Map<number, Float32Array>();

  /** Feeds of a layer no row of the call adapts: one all-zero unit that no row selects. */
  private zeroUnit(layer: number, n: number, feeds: Record<string, HostTensor>): void {
    const w = this.unit;
    const zeros = (len: number): Float32Array => {
      let z = this.zeros.get(len);
      if (!z) this.zeros.set(len, (z = new Float32Array(len)));
      return z;
    };
    feeds[`rows.${layer}`] = { dtype: 'int64', dims: [1], data: new BigInt64Array(1) };
    feeds[`sel.${layer}`] = { dtype: 'float32', dims: [n, 1, 1], data: zeros(n) };
    for (const map of LORA_MAPS[this.cfg.family]) {
      const { inFeatures: inF, outFeatures: outF } = mapFeatures(this.cfg, map);
      feeds[`unit.${layer}.${map}.A`] = { dtype: 'float32', dims: [1, w, inF], data: zeros(w * inF) };
      feeds[`unit.${layer}.${map}.Bt`] = { dtype: 'float32', dims: [1, w, outF], data: zeros(w * outF) };
    }
  }
}
