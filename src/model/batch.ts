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
