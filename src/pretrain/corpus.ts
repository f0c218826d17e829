/**
 * The pretraining corpus as token blocks: documents are tokenised (BOS first), split into training
 * and held-out documents by a seeded hash, concatenated per split and cut into blocks of seqLen + 1
 * tokens, so that block[t + 1] is the target of position t and no token is wasted on padding.
 */
import type { Tokenizer } from '../model/tokenizer.js';
import { Rng, hashString } from '../util/rng.js';

export interface Document {
  id: string;
  /** Rendered text (chat template applied); special tokens are parsed. */
  text: string;
}

export interface TokenBlocks {
  seqLen: number;
  /** Each block holds seqLen + 1 token ids. */
  blocks: Int32Array[];
  documents: number;
  tokens: number;
}

export interface Corpus {
  train: TokenBlocks;
  heldOut: TokenBlocks;
  heldOutDocumentIds: string[];
}

/** True for the documents held out of training (a seeded hash, so the split is stable as data grows). */
export function isHeldOut(id: string, fraction: number, seed: number): boolean {
  // FNV alone leaves similar ids (d2-0000, d2-0001, ...) with correlated high bits: mix through the RNG.
  return new Rng(hashString(id) ^ seed).uniform() < fraction;
}

export function tokenizeDocuments(docs: readonly Document[], tokenizer: Tokenizer): number[][] {
  return docs.map((d) => [tokenizer.bosId, ...tokenizer.encode(d.text)]);
}

/** Concatenate token sequences and cut them into blocks of seqLen + 1 (the tail shorter than a block is dropped). */
export function packBlocks(seqs: readonly number[][], seqLen: number): TokenBlocks {
  const total = seqs.reduce((s, q) => s + q.length, 0);
  const stream = new Int32Array(total);
  let off = 0;
  for (const q of seqs) {
    stream.set(q, off);
    off += q.length;
  }
  const blocks: Int32Array[] = [];
  // Consecutive blocks overlap by one token: the last token of a block is the first input of the next.
  for (let start = 0; start + seqLen + 1 <= total; start += seqLen) blocks.push(stream.subarray(start, start + seqLen + 1));
  return { seqLen, blocks, documents: seqs.length, tokens: total };
}

export function buildCorpus(docs: readonly Document[], tokenizer: Tokenizer, opts: { seqLen: number; heldOutFraction: number; seed: number }): Corpus {
  const train: Document[] = [];
  const held: Document[] = [];
  for (const d of docs) (isHeldOut(d.id, opts.heldOutFraction, opts.seed) ? held : train).push(d);
  return {
    train: packBlocks(tokenizeDocuments(train, tokenizer), opts.seqLen),
    heldOut: packBlocks(tokenizeDocuments(held, tokenizer), opts.seqLen),
    heldOutDocumentIds: held.map((d) => d.id),
  };
}

/**
 * Cross-entropy (nats per token) of an add-one-smoothed unigram model fitted on the training blocks,
 * measured on exactly the targets the language model is scored on (positions 1..seqLen of each block).
 */
export function unigramCrossEntropy(train: TokenBlocks, heldOut: TokenBlocks, vocabSize: number): number {
  const counts = new Float64Array(vocabSize).fill(1);
  let n = vocabSize;
  for (const b of train.blocks) {
    for (let i = 1; i < b.length; i++) {
      counts[b[i]]++;
      n++;
    }
  }
  let nll = 0;
  let m = 0;
  for (const b of heldOut.blocks) {
    for (let i = 1; i < b.length; i++) {
      nll -= Math.log(counts[b[i]] / n);
      m++;
    }
  }
  return nll / Math.max(1, m);
}
