/** Test helpers of guided grammars: whether a compiled grammar's guide takes a text whole, byte by byte. */
import type { CompiledGrammar } from '../../src/model/grammar.js';
import { GrammarGuide } from '../../src/model/grammar-guide.js';

const enc = new TextEncoder();

/** id 0: an end token; id 1 + b: the byte b. */
export const BYTES: Array<Uint8Array | null> = [null, ...Array.from({ length: 256 }, (_, b) => Uint8Array.of(b))];

/** Whether the grammar's guide takes `bytes` byte by byte and then allows the end token. */
export function accepts(grammar: CompiledGrammar, bytes: Uint8Array | string): boolean {
  const g = new GrammarGuide(grammar, BYTES, [0]);
  for (const b of typeof bytes === 'string' ? enc.encode(bytes) : bytes) {
    if (!g.allowed()[1 + b]) return false;
    g.advance(1 + b);
  }
  return g.allowed()[0] === 1;
}
