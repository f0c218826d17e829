import { afterAll, describe, expect, it } from 'vitest';
import { buildCorpus, isHeldOut, packBlocks, unigramCrossEntropy } from '../../src/pretrain/corpus.js';
import { FIXTURE_CORPUS, makeTokenizerFixture } from '../model/tokenizer-fixture.js';

const fx = makeTokenizerFixture();
afterAll(() => fx.cleanup());

describe('pretraining corpus', () => {
  it('packs sequences into overlapping blocks of seqLen + 1 and drops the short tail', () => {
    const b = packBlocks([[1, 2, 3, 4], [5, 6, 7], [8, 9, 10, 11, 12]], 4);
    expect(b.tokens).toBe(12);
    expect(b.blocks.map((x) => Array.from(x))).toEqual([
      [1, 2, 3, 4, 5],
      [5, 6, 7, 8, 9],
    ]);
  });

  it('holds out a stable, seeded, roughly proportional set of documents', () => {
    const ids = Array.from({ length: 4000 }, (_, i) => `d2-${String(i).padStart(4, '0')}`);
    const held = ids.filter((id) => isHeldOut(id, 0.05, 1));
    expect(held.length).toBeGreaterThan(4000 * 0.04);
    expect(held.length).toBeLessThan(4000 * 0.06);
    // Sequential ids must not cluster (a weak hash would hold out none of the first few hundred).
    expect(ids.slice(0, 400).filter((id) => isHeldOut(id, 0.05, 1)).length).toBeGreaterThan(5);
    expect(ids.filter((id) => isHeldOut(id, 0.05, 1))).toEqual(held);
    expect(ids.filter((id) => isHeldOut(id, 0.05, 2))).not.toEqual(held);
  });

  it('never puts a held-out document into the training blocks', () => {
    const docs = Array.from({ length: 200 }, (_, i) => ({ id: `doc-${i}`, text: `${FIXTURE_CORPUS[i % FIXTURE_CORPUS.length]} (${i})` }));
    const c = buildCorpus(docs, fx.tokenizer, { seqLen: 16, heldOutFraction: 0.2, seed: 3 });
    expect(c.heldOutDocumentIds.length).toBeGreaterThan(20);
    expect(c.train.documents + c.heldOut.documents).toBe(200);
    for (const b of [...c.train.blocks, ...c.heldOut.blocks]) expect(b.length).toBe(17);
  });

  it('computes the unigram cross-entropy by hand on a toy vocabulary', () => {
    // Train targets (positions 1..) are [1, 1, 2]; add-one smoothing over V = 3.
    const train = { seqLen: 3, blocks: [Int32Array.from([0, 1, 1, 2])], documents: 1, tokens: 4 };
    const held = { seqLen: 3, blocks: [Int32Array.from([0, 1, 2, 0])], documents: 1, tokens: 4 };
    // counts: id0 = 1, id1 = 3, id2 = 2, total 6. Held-out targets 1, 2, 0.
    const expected = -(Math.log(3 / 6) + Math.log(2 / 6) + Math.log(1 / 6)) / 3;
    expect(unigramCrossEntropy(train, held, 3)).toBeCloseTo(expected, 12);
  });
});
