/**
 * Packing rows of different lengths into one batch: token ids, per-token positions and the additive
 * attention bias, so that padded rows never see each other's padding. Pad queries attend only to
 * themselves, which keeps every softmax row finite.
 */
import type { HostTensor } from '../graph/types.js';

/** Additive bias of a masked key: exp() of it underflows to exactly 0 in float32, and it stays finite. */
export const MASKED = -1e9;
export const IGNORE_INDEX = -100;

export type Padding = 'left' | 'right';

export interface PackedRows {
  /** Padded length T. */
  seq: number;
  /** Where each row's tokens start in its padded row. */
  starts: number[];
  lengths: number[];
  feeds: {
    input_ids: HostTensor;
    positions: HostTensor;
    attn_bias: HostTensor;
    /** Flat index b*T + t of each row's last token. */
    last_index: HostTensor;
  };
}

export class BatchError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = 'BatchError';
  }
}

/**
 * Pack token rows (each non-empty) into [B, T] feeds. Positions count from 0 at each row's first
 * token; pad slots hold token `padId` at position 0. `seq` pads to at least that length.
 */
export function packRows(rows: readonly (readonly number[])[], opts: { padding?: Padding; padId?: number; seq?: number } = {}): PackedRows {
  if (rows.length === 0) throw new BatchError('empty_batch', 'a batch needs at least one row');
  const padding = opts.padding ?? 'right';
  const lengths = rows.map((r) => r.length);
  if (lengths.some((n) => n === 0)) throw new BatchError('empty_row', 'every row needs at least one token', { lengths });
  const seq = Math.max(opts.seq ?? 0, ...lengths);
  const b = rows.length;
  const ids = new BigInt64Array(b * seq).fill(BigInt(opts.padId ?? 0));
  const pos = new BigInt64Array(b * seq);
  const bias = new Float32Array(b * seq * seq).fill(MASKED);
  const last = new BigInt64Array(b);
  const starts: number[] = [];
  rows.forEach((row, r) => {
    const start = padding === 'left' ? seq - row.length : 0;
    starts.push(start);
    for (let i = 0; i < row.length; i++) {
      ids[r * seq + start + i] = BigInt(row[i]);
      pos[r * seq + start + i] = BigInt(i);
    }
    for (let q = 0; q < seq; q++) {
      const rowBias = r * seq * seq + q * seq;
      if (q < start || q >= start + row.length) bias[rowBias + q] = 0;
      else bias.fill(0, rowBias + start, rowBias + q + 1);
    }
    last[r] = BigInt(r * seq + start + row.length - 1);
  });
  return {
    seq,
    starts,
    lengths,
    feeds: {
      input_ids: { dtype: 'int64', dims: [b, seq], data: ids },
      positions: { dtype: 'int64', dims: [b, seq], data: pos },
      attn_bias: { dtype: 'float32', dims: [b, 1, seq, seq], data: bias },
      last_index: { dtype: 'int64', dims: [b], data: last },
    },
  };
}

export interface ExtendRow {
  /** Tokens of the row's cached prefix (the cache fed as `past`). */
  past: number;
  /** The new tokens after it (at least one). */
  ids: readonly number[];
}

/**
 * Feeds of an extend graph (a prompt's new tokens after its cached prefix): the new tokens
 * right-padded to T, their positions counted on from each row's prefix, and the bias
 * [B, 1, T, P + T] over the `pastSeq` = P cache slots fed (row b's first `past` of them hold its
 * prefix, the rest are padding) and then the new tokens, causally. Pad queries attend only to
 * themselves.
 */
export function packExtend(rows: readonly ExtendRow[], pastSeq: number): Omit<PackedRows, 'starts'> {
  if (rows.length === 0) throw new BatchError('empty_batch', 'a batch needs at least one row');
  const lengths = rows.map((r) => r.ids.length);
  if (lengths.some((n) => n === 0)) throw new BatchError('empty_row', 'every row needs at least one new token', { lengths });
  for (const r of rows) {
    if (!Number.isInteger(r.past) || r.past < 0 || r.past > pastSeq) throw new BatchError('bad_past', `a row's prefix of ${r.past} tokens does not fit ${pastSeq} cache slots`, { past: r.past, pastSeq });
  }
  const seq = Math.max(...lengths);
  const keys = pastSeq + seq;
  const b = rows.length;
  const ids = new BigInt64Array(b * seq);
  const pos = new BigInt64Array(b * seq);
  const bias = new Float32Array(b * seq * keys).fill(MASKED);
  const last = new BigInt64Array(b);
  rows.forEach((row, r) => {
    for (let i = 0; i < row.ids.length; i++) {
      ids[r * seq + i] = BigInt(row.ids[i]);
      pos[r * seq + i] = BigInt(row.past + i);
    }
    for (let q = 0; q < seq; q++) {
      const at = (r * seq + q) * keys;
      if (q >= row.ids.length) bias[at + pastSeq + q] = 0;
      else {
        bias.fill(0, at, at + row.past);
        bias.fill(0, at + pastSeq, at + pastSeq + q + 1);
      }
    }
    last[r] = BigInt(r * seq + row.ids.length - 1);
  });
  return {
    seq,
    lengths,
    feeds: {
      input_ids: { dtype: 'int64', dims: [b, seq], data: ids },
      positions: { dtype: 'int64', dims: [b, seq], data: pos },
      attn_bias: { dtype: 'float32', dims: [b, 1, seq, keys], data: bias },
      last_index: { dtype: 'int64', dims: [b], data: last },
    },
  };
}

export interface LmBatch {
  inputIds: readonly (readonly number[])[];
  /** Per row, the token expected after each input token (IGNORE_INDEX where none is scored). */
  labels: readonly (readonly number[])[];
}

/** Right-padded train feeds: packRows plus `labels` [B, T] with padding ignored. */
export function packLm(batch: LmBatch, opts: { padId?: number; seq?: number } = {}): PackedRows & { feeds: PackedRows['feeds'] & { labels: HostTensor } } {
  if (batch.labels.length !== batch.inputIds.length) {
    throw new BatchError('label_rows', `${batch.labels.length} label rows for ${batch.inputIds.length} input rows`);
  }
  const packed = packRows(batch.inputIds, { padding: 'right', ...opts });
  const labels = new BigInt64Array(batch.inputIds.length * packed.seq).fill(BigInt(IGNORE_INDEX));
  batch.labels.forEach((row, r) => {
    if (row.length !== batch.inputIds[r].length) {
      throw new BatchError('label_length', `row ${r}: ${row.length} labels for ${batch.inputIds[r].length} tokens`, { row: r });
    }
    row.forEach((t, i) => (labels[r * packed.seq + i] = BigInt(t)));
  });
  return { ...packed, feeds: { ...packed.feeds, labels: { dtype: 'int64', dims: [batch.inputIds.length, packed.seq], data: labels } } };
}

/** Next-token batch from whole sequences: inputs seq[0..n-2], labels seq[1..n-1]. */
export function nextTokenBatch(sequences: readonly (readonly number[])[]): LmBatch {
  for (const s of sequences) if (s.length < 2) throw new BatchError('short_sequence', 'a sequence needs two tokens to have a next-token label', { length: s.length });
  return { inputIds: sequences.map((s) => s.slice(0, -1)), labels: sequences.map((s) => s.slice(1)) };
}
