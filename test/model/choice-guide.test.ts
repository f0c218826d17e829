import { describe, expect, it } from 'vitest';
import { ChoiceGuide } from '../../src/model/choice-guide.js';
import { Rng } from '../../src/util/rng.js';

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: ArrayLike<number>) => Buffer.from(Uint8Array.from(b)).toString('latin1');
// id 0: an end token (no bytes); then every byte; then some multi-byte tokens.
const MULTI = ['yes', 'ye', 's p', 'no', 'may', 'be', ' please', 'né', 'nope'];
const vocab: Array<Uint8Array | null> = [null, ...Array.from({ length: 255 }, (_, i) => Uint8Array.of(i + 1)), ...MULTI.map(enc)];
const CHOICES = ['yes', 'no', 'yes please', 'maybe', 'né'];

describe('ChoiceGuide', () => {
  it('allows exactly the tokens that keep the reply a prefix of some choice (and the end where a choice is whole), on random walks', () => {
    const choices = CHOICES.map((c) => dec(enc(c)));
    for (let seed = 1; seed <= 60; seed++) {
      const rng = new Rng(seed);
      const g = new ChoiceGuide(CHOICES, vocab, [0]);
      let sofar = '';
      for (;;) {
        const mask = g.allowed();
        // An independent oracle: string prefixes of the choices, byte for byte.
        vocab.forEach((bytes, id) => {
          const want = bytes ? choices.some((c) => c.startsWith(sofar + dec(bytes))) : choices.includes(sofar);
          expect(mask[id], `after ${JSON.stringify(sofar)}, token ${id}`).toBe(want ? 1 : 0);
        });
        if (g.done) break;
        const ids = [...mask.keys()].filter((id) => mask[id]);
        const id = ids[Math.floor(rng.uniform() * ids.length)];
        g.advance(id);
        if (id === 0) break; // the end token ended a reply that was a whole choice
        sofar += dec(vocab[id]!);
      }
      expect(choices).toContain(sofar);
    }
  });

  it('is done when the reply is a whole choice no other extends; a choice that others extend may be ended by an end token', () => {
    const g = new ChoiceGuide(CHOICES, vocab, [0]);
    g.advance(vocab.findIndex((v) => v !== null && dec(v) === 'yes'));
    expect(g.done).toBe(false); // 'yes please' goes on
    expect(g.allowed()[0]).toBe(1);
    g.advance(vocab.findIndex((v) => v !== null && dec(v) === ' please'));
    expect(g.done).toBe(true);
    const no = new ChoiceGuide(CHOICES, vocab, [0]);
    expect(no.allowed()[vocab.findIndex((v) => v !== null && dec(v) === 'nope')]).toBe(0);
    no.advance(vocab.findIndex((v) => v !== null && dec(v) === 'no'));
    expect(no.done).toBe(true);
    expect(() => new ChoiceGuide(CHOICES, vocab, [0]).advance(vocab.findIndex((v) => v !== null && dec(v) === 'be'))).toThrow(/none of the choices/);
    expect(() => new ChoiceGuide([], vocab, [0])).toThrow();
  });
});
