/**
 * KV caches for decoding.
 *
 * `RowKv` is one sequence's cache on its own: per layer K and V as [Hkv, length, Dh], dense (no
 * padding), position p of the sequence at index p. Prefill produces them; they can be kept, moved
 * between batches, or dropped.
 *
 * `KvBatch` is the live cache of a decode batch, laid out as the decode graph reads it: per layer one
 * buffer [rows, Hkv, capacity, Dh]. Rows are independent: each has its own length, its slots past
 * that length are masked in the attention bias, and its next token's position is its length. Rows
 * join (`add`, one copy of their cache) and leave (`remove`, the last row moves into the hole) between
 * steps; the graph is fed views of the buffers, so a step copies nothing but the new token's K/V.
 * Capacity grows in buckets as rows get longer, and shrinks when the long rows leave, so attention
 * cost follows the longest live row.
 */
import type { HostTensor } from '../graph/types.js';
import { MASKED } from './batch.js';

export interface KvShape {
  nLayers: number;
  nKvHeads: number;
  headDim: number;
}

export interface RowKv {
  length: number;
  /** Per layer, [Hkv, length, Dh]. */
  k: Float32Array[];
  v: Float32Array[];
}

export type RowId = string | number;

export class KvError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = 'KvError';
  }
}

/**
 * Cut one row out of a [B, Hkv, T, Dh] present tensor per layer: positions start..start+length of
 * batch row b (prefill outputs, where row b's tokens sit at start..start+length of the padded row).
 */
export function rowKvFromPresents(shape: KvShape, presents: { k: HostTensor[]; v: HostTensor[] }, b: number, start: number, length: number): RowKv {
  const { nKvHeads: hkv, headDim: dh } = shape;
  const cut = (t: HostTensor): Float32Array => {
    const [, h, seq, d] = t.dims;
    if (h !== hkv || d !== dh) throw new KvError('bad_present', `present has dims [${t.dims}], expected [B, ${hkv}, T, ${dh}]`, { dims: t.dims });
    if (start + length > seq) throw new KvError('bad_present', `row ${b} spans ${start}..${start + length} of ${seq} positions`);
    const src = t.data as Float32Array;
    const out = new Float32Array(hkv * length * dh);
    for (let hh = 0; hh < hkv; hh++) {
      const from = ((b * hkv + hh) * seq + start) * dh;
      out.set(src.subarray(from, from + length * dh), hh * length * dh);
    }
    return out;
  };
  return { length, k: presents.k.map(cut), v: presents.v.map(cut) };
}

/** A row's cache extended by more tokens (per layer [Hkv, n, Dh] each): for multi-turn reuse. */
export function concatRowKv(shape: KvShape, a: RowKv, b: RowKv): RowKv {
  const { nKvHeads: hkv, headDim: dh } = shape;
  const len = a.length + b.length;
  const join = (x: Float32Array, y: Float32Array): Float32Array => {
    const out = new Float32Array(hkv * len * dh);
    for (let h = 0; h < hkv; h++) {
      out.set(x.subarray(h * a.length * dh, (h + 1) * a.length * dh), h * len * dh);
      out.set(y.subarray(h * b.length * dh, (h + 1) * b.length * dh), (h * len + a.length) * dh);
    }
    return out;
  };
  return { length: len, k: a.k.map((x, l) => join(x, b.k[l])), v: a.v.map((x, l) => join(x, b.v[l])) };
}

/** The first `length` positions of a row's cache (a copy; the row itself when it has exactly that many). */
export function sliceRowKv(shape: KvShape, row: RowKv, length: number): RowKv {
  if (!Number.isInteger(length) || length < 0 || length > row.length) throw new KvError('bad_slice', `cannot cut ${length} positions from a cache of ${row.length}`, { length, rowLength: row.length });
  if (length === row.length) return row;
  const { nKvHeads: hkv, headDim: dh } = shape;
  const cut = (x: Float32Array): Float32Array => {
    const out = new Float32Array(hkv * length * dh);
    for (let h = 0; h < hkv; h++) out.set(x.subarray(h * row.length * dh, (h * row.length + length) * dh), h * length * dh);
    return out;
  };
  return { length, k: row.k.map(cut), v: row.v.map(cut) };
}

/** A row's cache of which the first `length` positions are used (default: all). */
export interface PastRow {
  kv: RowKv;
  length?: number;
}

/** The positions of a PastRow in use, checked against its cache. */
function usedLength(p: PastRow): number {
  const used = p.length ?? p.kv.length;
  if (!Number.isInteger(used) || used < 0 || used > p.kv.length) throw new KvError('bad_slice', `cannot use ${used} positions of a cache of ${p.kv.length}`, { length: used, rowLength: p.kv.length });
  return used;
}

/**
 * Rows' caches as the `past_k.{l}`/`past_v.{l}` feeds [B, Hkv, P, Dh] of an extend graph, and the
 * positions each row uses (`lengths`; the bias masks the rest). A single row is fed as it is, without
 * a copy (P its whole cache, even where it uses fewer positions); several are copied into one buffer,
 * P the longest used length, shorter rows zero-padded.
 */
export function pastFeeds(shape: KvShape, rows: readonly PastRow[]): { pastSeq: number; lengths: number[]; feeds: Record<string, HostTensor> } {
  const { nLayers, nKvHeads: hkv, headDim: dh } = shape;
  const lengths = rows.map(usedLength);
  const p = rows.length === 1 ? rows[0].kv.length : Math.max(...lengths);
  const feeds: Record<string, HostTensor> = {};
  for (let l = 0; l < nLayers; l++) {
    for (const kind of ['k', 'v'] as const) {
      let data: Float32Array;
      if (rows.length === 1) data = rows[0].kv[kind][l];
      else {
        data = new Float32Array(rows.length * hkv * p * dh);
        rows.forEach(({ kv }, b) => {
          const src = kv[kind][l];
          for (let h = 0; h < hkv; h++) data.set(src.subarray(h * kv.length * dh, (h * kv.length + lengths[b]) * dh), (b * hkv + h) * p * dh);
        });
      }
      if (data.length !== rows.length * hkv * p * dh) throw new KvError('bad_row', `layer ${l} ${kind}: ${data.length} values, expected ${rows.length * hkv * p * dh}`);
      feeds[`past_${kind}.${l}`] = { dtype: 'float32', dims: [rows.length, hkv, p, dh], data };
    }
  }
  return { pastSeq: p, lengths, feeds };
}

export interface KvBatchOptions {
  /** Capacity grows and shrinks in multiples of this many positions (default 32). */
  bucket?: number;
  /** Largest capacity (the model's maxPositions): a row may not grow past it. */
  maxLength?: number;
}

/** The most bytes of buffers a KvBatch keeps once it needs less of them (KvBatch.whole). */
const KEEP_BYTES = 512 * 1024 * 1024;

export class KvBatch {
  private ids: RowId[] = [];
  private lengths: number[] = [];
  private cap = 0;
  private rowCap = 0;
  /** Per layer, views of `whole` of rowCap x Hkv x cap x Dh. */
  private k: Float32Array[] = [];
  private v: Float32Array[] = [];
  /**
   * The buffers themselves, kept as the batch shrinks or empties (up to KEEP_BYTES) and relaid in
   * place as it grows again within them. Fresh memory costs a page fault per 4 KiB page at its first
   * touch: on the default model, a 460-token row joining 7 short ones grew the buffers to 47 MB, and
   * the first decode step that read fresh ones took 55-95 ms instead of 5.
   */
  private whole: { k: Float32Array[]; v: Float32Array[] } = { k: [], v: [] };
  private readonly bucket: number;
  private readonly maxLength: number;

  constructor(
    readonly shape: KvShape,
    opts: KvBatchOptions = {},
  ) {
    this.bucket = opts.bucket ?? 32;
    this.maxLength = opts.maxLength ?? Number.MAX_SAFE_INTEGER;
  }

  /** Rows in batch order (the order of decode feeds and outputs). */
  get rows(): readonly RowId[] {
    return this.ids;
  }

  get size(): number {
    return this.ids.length;
  }

  /** Positions per row in the buffers: the Past dim fed to the decode graph. */
  get capacity(): number {
    return this.cap;
  }

  indexOf(id: RowId): number {
    return this.ids.indexOf(id);
  }

  has(id: RowId): boolean {
    return this.ids.includes(id);
  }

  length(id: RowId): number {
    const i = this.mustIndex(id);
    return this.lengths[i];
  }

  private mustIndex(id: RowId): number {
    const i = this.ids.indexOf(id);
    if (i < 0) throw new KvError('unknown_row', `no row ${String(id)} in the batch`, { id });
    return i;
  }

  private get rowStride(): number {
    return this.shape.nKvHeads * this.cap * this.shape.headDim;
  }

  /**
   * Lay the buffers out as `rowCap` rows x `cap` positions, keeping every live row: in place where
   * the buffers hold that many (positions past a row's length then hold stale values, which the
   * attention bias masks as it masks the zeros of fresh memory), else into fresh buffers; buffers
   * past KEEP_BYTES are not kept larger than needed.
   */
  private relayout(rowCap: number, cap: number): void {
    const { nKvHeads: hkv, headDim: dh, nLayers } = this.shape;
    const size = rowCap * hkv * cap * dh;
    const held = this.whole.k[0]?.length ?? 0;
    if (held >= size && (2 * nLayers * held * 4 <= KEEP_BYTES || 2 * size > held)) {
      this.relayInPlace(rowCap, cap);
      return;
    }
    const oldCap = this.cap;
    const move = (old: Float32Array | undefined): Float32Array => {
      const buf = new Float32Array(size);
      if (old) {
        for (let r = 0; r < this.ids.length; r++) {
          const n = this.lengths[r] * dh;
          for (let h = 0; h < hkv; h++) {
            const from = (r * hkv + h) * oldCap * dh;
            buf.set(old.subarray(from, from + n), (r * hkv + h) * cap * dh);
          }
        }
      }
      return buf;
    };
    const k: Float32Array[] = [];
    const v: Float32Array[] = [];
    for (let l = 0; l < nLayers; l++) {
      k.push(move(this.k[l]));
      v.push(move(this.v[l]));
    }
    this.whole = { k, v };
    this.k = k;
    this.v = v;
    this.cap = cap;
    this.rowCap = rowCap;
  }

  /** relayout within the buffers held: each row's heads moved to their places at the new capacity. */
  private relayInPlace(rowCap: number, cap: number): void {
    const { nKvHeads: hkv, headDim: dh } = this.shape;
    const oldCap = this.cap;
    const segments = this.ids.length * hkv; // (row, head) s at s * cap * dh
    const moveAll = (buf: Float32Array): void => {
      if (cap === oldCap) return;
      // Growing moves segments up (the last first), shrinking down (the first first): none overwrites one not moved yet.
      for (let i = 0; i < segments; i++) {
        const s = cap > oldCap ? segments - 1 - i : i;
        const from = s * oldCap * dh;
        buf.copyWithin(s * cap * dh, from, from + this.lengths[Math.floor(s / hkv)] * dh);
      }
    };
    const size = rowCap * hkv * cap * dh;
    this.whole.k.forEach(moveAll);
    this.whole.v.forEach(moveAll);
    this.k = this.whole.k.map((b) => b.subarray(0, size));
    this.v = this.whole.v.map((b) => b.subarray(0, size));
    this.cap = cap;
    this.rowCap = rowCap;
  }

  /** Capacity for a longest row of `longest` tokens: one free slot for the next token's K/V, in buckets. */
  private capFor(longest: number): number {
    return Math.min(Math.ceil((longest + 1) / this.bucket) * this.bucket, this.maxLength);
  }

  /**
   * Add a row with its cache (copied in): `row`, or the first `parts[0].length` positions of one
   * cache followed by the next part (a cached prefix and the tokens run after it), without joining
   * them first.
   */
  add(id: RowId, row: RowKv | readonly PastRow[]): void {
    if (this.ids.includes(id)) throw new KvError('duplicate_row', `row ${String(id)} is already in the batch`, { id });
    const { nKvHeads: hkv, headDim: dh, nLayers } = this.shape;
    const parts = (Array.isArray(row) ? (row as readonly PastRow[]) : [{ kv: row as RowKv }]).map((p) => ({ kv: p.kv, length: usedLength(p) }));
    for (const { kv } of parts) {
      if (kv.k.length !== nLayers || kv.v.length !== nLayers) throw new KvError('bad_row', `row cache has ${kv.k.length} layers, expected ${nLayers}`);
      const n = kv.length * dh;
      for (let l = 0; l < nLayers; l++) {
        if (kv.k[l].length !== hkv * n || kv.v[l].length !== hkv * n) throw new KvError('bad_row', `row cache layer ${l} has ${kv.k[l].length} values, expected ${hkv * n}`);
      }
    }
    const length = parts.reduce((a, p) => a + p.length, 0);
    if (length >= this.maxLength) throw new KvError('row_too_long', `row of ${length} tokens leaves no room below ${this.maxLength} positions`, { length });
    const need = length + 1 > this.cap ? this.capFor(Math.max(length, ...this.lengths)) : this.cap;
    const rows = this.ids.length + 1 > this.rowCap ? Math.max(4, this.rowCap * 2) : this.rowCap;
    if (need !== this.cap || rows !== this.rowCap) this.relayout(rows, need);
    const r = this.ids.length;
    this.ids.push(id);
    this.lengths.push(length);
    let at = 0;
    for (const { kv, length: used } of parts) {
      for (let l = 0; l < nLayers; l++) {
        for (let h = 0; h < hkv; h++) {
          const to = ((r * hkv + h) * this.cap + at) * dh;
          const from = h * kv.length * dh;
          this.k[l].set(kv.k[l].subarray(from, from + used * dh), to);
          this.v[l].set(kv.v[l].subarray(from, from + used * dh), to);
        }
      }
      at += used;
    }
  }

  /** A copy of a row's cache. */
  extract(id: RowId): RowKv {
    const r = this.mustIndex(id);
    const { nKvHeads: hkv, headDim: dh } = this.shape;
    const len = this.lengths[r];
    const cut = (buf: Float32Array): Float32Array => {
      const out = new Float32Array(hkv * len * dh);
      for (let h = 0; h < hkv; h++) {
        const from = (r * hkv + h) * this.cap * dh;
        out.set(buf.subarray(from, from + len * dh), h * len * dh);
      }
      return out;
    };
    return { length: len, k: this.k.map(cut), v: this.v.map(cut) };
  }

  /** Remove a row; the last row takes its place (batch order changes, ids stay right). */
  remove(id: RowId): void {
    const r = this.mustIndex(id);
    const last = this.ids.length - 1;
    if (r !== last) {
      const stride = this.rowStride;
      for (const buf of [...this.k, ...this.v]) buf.copyWithin(r * stride, last * stride, (last + 1) * stride);
      this.ids[r] = this.ids[last];
      this.lengths[r] = this.lengths[last];
    }
    this.ids.pop();
    this.lengths.pop();
    if (this.ids.length === 0) {
      if (2 * this.shape.nLayers * (this.whole.k[0]?.length ?? 0) * 4 > KEEP_BYTES) this.whole = { k: [], v: [] };
      this.k = [];
      this.v = [];
      this.cap = 0;
      this.rowCap = 0;
      return;
    }
    const fit = this.capFor(Math.max(...this.lengths));
    if (fit <= this.cap / 2) this.relayout(this.rowCap, fit);
  }

  /**
   * Feeds of a decode step for the rows in batch order: `past_k.{l}`/`past_v.{l}` [B, Hkv, cap, Dh]
   * (views), `attn_bias` [B, 1, 1, cap + 1] and `positions` [B, 1]. The caller adds `input_ids`.
   */
  decodeFeeds(): Record<string, HostTensor> {
    const b = this.ids.length;
    if (b === 0) throw new KvError('empty_batch', 'no rows to decode');
    this.lengths.forEach((len, r) => {
      if (len >= this.maxLength) throw new KvError('row_too_long', `row ${String(this.ids[r])} has reached the model's ${this.maxLength} positions`, { id: this.ids[r] });
    });
    const { nKvHeads: hkv, headDim: dh, nLayers } = this.shape;
    const cap = this.cap;
    const feeds: Record<string, HostTensor> = {};
    const n = b * hkv * cap * dh;
    for (let l = 0; l < nLayers; l++) {
      feeds[`past_k.${l}`] = { dtype: 'float32', dims: [b, hkv, cap, dh], data: this.k[l].subarray(0, n) };
      feeds[`past_v.${l}`] = { dtype: 'float32', dims: [b, hkv, cap, dh], data: this.v[l].subarray(0, n) };
    }
    const bias = new Float32Array(b * (cap + 1)).fill(MASKED);
    const pos = new BigInt64Array(b);
    for (let r = 0; r < b; r++) {
      bias.fill(0, r * (cap + 1), r * (cap + 1) + this.lengths[r]);
      bias[r * (cap + 1) + cap] = 0; // the new token itself
      pos[r] = BigInt(this.lengths[r]);
    }
    feeds.attn_bias = { dtype: 'float32', dims: [b, 1, 1, cap + 1], data: bias };
    feeds.positions = { dtype: 'int64', dims: [b, 1], data: pos };
    return feeds;
  }

  /** Append a decode step's `present_k.{l}`/`present_v.{l}` ([B, Hkv, 1, Dh]) to every row. */
  append(outputs: Record<string, HostTensor>): void {
    const b = this.ids.length;
    const { nKvHeads: hkv, headDim: dh, nLayers } = this.shape;
    for (let r = 0; r < b; r++) {
      if (this.lengths[r] >= this.cap) throw new KvError('row_too_long', `row ${String(this.ids[r])} is full at ${this.lengths[r]} positions`, { id: this.ids[r] });
    }
    for (let l = 0; l < nLayers; l++) {
      for (const [name, buf] of [
        [`present_k.${l}`, this.k[l]],
        [`present_v.${l}`, this.v[l]],
      ] as const) {
        const t = outputs[name];
        if (!t || t.dims.length !== 4 || t.dims[0] !== b || t.dims[1] !== hkv || t.dims[2] !== 1 || t.dims[3] !== dh) {
          throw new KvError('bad_present', `decode output ${name} ${t ? `[${t.dims}]` : 'missing'}, expected [${b}, ${hkv}, 1, ${dh}]`);
        }
        const src = t.data as Float32Array;
        for (let r = 0; r < b; r++) {
          for (let h = 0; h < hkv; h++) {
            const to = ((r * hkv + h) * this.cap + this.lengths[r]) * dh;
            buf.set(src.subarray((r * hkv + h) * dh, (r * hkv + h + 1) * dh), to);
          }
        }
      }
    }
    for (let r = 0; r < b; r++) this.lengths[r]++;
    const longest = Math.max(...this.lengths);
    // Grow by at least a quarter, so that long generations copy the cache a logarithmic number of times.
    if (longest + 1 > this.cap && longest < this.maxLength) this.relayout(this.rowCap, this.capFor(Math.max(longest, Math.floor(this.cap * 1.25))));
  }
}
