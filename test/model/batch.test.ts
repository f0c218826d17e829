import { describe, expect, it } from 'vitest';
import { BatchError, IGNORE_INDEX, MASKED, nextTokenBatch, packLm, packRows } from '../../src/model/batch.js';

const allowed = (bias: ArrayLike<number>, seq: number, r: number): string[] =>
  Array.from({ length: seq }, (_, q) => Array.from({ length: seq }, (_, k) => (bias[r * seq * seq + q * seq + k] === 0 ? '1' : '.')).join(''));

describe('packRows', () => {
  it('right padding: causal within each row, pads attend only to themselves', () => {
    const p = packRows([[5, 6, 7], [8]], { padId: 0 });
    expect(p.seq).toBe(3);
    expect([...(p.feeds.input_ids.data as BigInt64Array)]).toEqual([5n, 6n, 7n, 8n, 0n, 0n]);
    expect([...(p.feeds.positions.data as BigInt64Array)]).toEqual([0n, 1n, 2n, 0n, 0n, 0n]);
    expect(allowed(p.feeds.attn_bias.data as Float32Array, 3, 0)).toEqual(['1..', '11.', '111']);
    expect(allowed(p.feeds.attn_bias.data as Float32Array, 3, 1)).toEqual(['1..', '.1.', '..1']);
    expect([...(p.feeds.last_index.data as BigInt64Array)]).toEqual([2n, 3n]);
    expect(Math.min(...(p.feeds.attn_bias.data as Float32Array))).toBe(MASKED);
  });

  it('left padding: positions still count from each row start', () => {
    const p = packRows([[5, 6, 7], [8, 9]], { padding: 'left' });
    expect([...(p.feeds.positions.data as BigInt64Array)]).toEqual([0n, 1n, 2n, 0n, 0n, 1n]);
    expect(allowed(p.feeds.attn_bias.data as Float32Array, 3, 1)).toEqual(['1..', '.1.', '.11']);
    expect(p.starts).toEqual([0, 1]);
    expect([...(p.feeds.last_index.data as BigInt64Array)]).toEqual([2n, 5n]);
  });

  it('packs labels with padding ignored, and builds next-token batches', () => {
    const b = nextTokenBatch([[1, 2, 3, 4], [5, 6]]);
    expect(b).toEqual({ inputIds: [[1, 2, 3], [5]], labels: [[2, 3, 4], [6]] });
    const p = packLm(b);
    expect([...(p.feeds.labels.data as BigInt64Array)].map(Number)).toEqual([2, 3, 4, 6, IGNORE_INDEX, IGNORE_INDEX]);
    expect(() => packLm({ inputIds: [[1, 2]], labels: [[1]] })).toThrow(BatchError);
    expect(() => packRows([[1], []])).toThrow(/at least one token/);
  });
});
