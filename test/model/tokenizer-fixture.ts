/**
 * A small byte-level BPE trained on a fixed English corpus, saved to a temp dir and loaded through
 * the library: the tokenizer the model, chat-format and dataset tests share.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { saveTokenizer, trainBpe, type TrainedBpe } from '../../src/model/bpe-train.js';
import { loadTokenizer, type Tokenizer } from '../../src/model/tokenizer.js';

export const FIXTURE_CORPUS: string[] = [
  "Hello, how can I help you today? What seems to be the problem?",
  "I've had a headache for three days and it's worse in the morning.",
  'Please take 500 mg of paracetamol every 6 hours, and drink plenty of water.',
  "The patient's blood pressure was 140/90 mmHg; we'll check it again next week.",
  'Thank you, doctor. Should I avoid coffee and alcohol while taking the medication?',
  'Yes, it is best to avoid caffeine and alcohol until your symptoms improve.',
  '<|user|>My stomach hurts after meals.<|end|><|assistant|>How long has this been going on?<|end|>',
  'Walking for 30 minutes a day can help with blood sugar and blood pressure.',
];

export function fixtureTexts(repeat = 20): string[] {
  const out: string[] = [];
  for (let i = 0; i < repeat; i++) out.push(...FIXTURE_CORPUS);
  return out;
}

export interface TokenizerFixture {
  bpe: TrainedBpe;
  tokenizer: Tokenizer;
  dir: string;
  cleanup(): void;
}

export function makeTokenizerFixture(vocabSize = 400): TokenizerFixture {
  const dir = mkdtempSync(join(tmpdir(), 'memlora-tok-'));
  const bpe = trainBpe(fixtureTexts(), { vocabSize });
  saveTokenizer(dir, bpe);
  return { bpe, tokenizer: loadTokenizer(dir), dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** True when the string has no lone surrogate (only such strings survive UTF-8). */
export function isWellFormed(s: string): boolean {
  return !/\p{Cs}/u.test(s);
}

/** A tokenizer of `pieces` (id 0: EOS, special; then each piece, whose bytes are its text): for guides driven through a Sequence. */
export function piecesTokenizer(pieces: string[]): Tokenizer {
  const all = ['<eos>', ...pieces];
  return {
    encode: () => [],
    decode: (ids) => ids.map((i) => (i === 0 ? '' : all[i])).join(''),
    vocabSize: all.length,
    bosId: 0,
    eosId: 0,
    padId: 0,
    specialIds: { '<eos>': 0 },
    tokenToId: (t) => all.indexOf(t),
    idToToken: (i) => all[i],
    tokenBytes: (i) => (i === 0 ? null : new TextEncoder().encode(all[i])),
  };
}
