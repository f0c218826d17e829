import { describe, expect, it } from 'vitest';
import { JsonGuide, MAX_WHITESPACE } from '../../src/model/json-guide.js';
import { Sequence } from '../../src/model/sequence.js';
import type { Tokenizer } from '../../src/model/tokenizer.js';
import { Rng } from '../../src/util/rng.js';

const enc = (s: string) => new TextEncoder().encode(s);
/** Every byte a token of its own, then a few multi-byte tokens. */
const MULTI = ['{"', '":', '", "', '"}', '}}', '[1', ', ', 'true', 'null', ' {', '\n  ', '1.5e', '-0', 'é', '\\u00', 'ab"', '"]}'];
const vocab: Array<Uint8Array | null> = [null, ...Array.from({ length: 255 }, (_, i) => Uint8Array.of(i + 1)), ...MULTI.map(enc)];

/** Whether a guide takes `text` whole, byte by byte (advancing), and ends done. */
function walk(text: string): { accepted: number; done: boolean } {
  const g = new JsonGuide(vocab);
  const bytes = enc(text);
  for (let i = 0; i < bytes.length; i++) {
    if (!g.accepts([bytes[i]])) return { accepted: i, done: false };
    g.advance(bytes[i]); // token id b is the byte b
  }
  return { accepted: bytes.length, done: g.done };
}

describe('JsonGuide', () => {
  it('takes JSON object documents whole and is done exactly at their end', () => {
    for (const doc of [
      '{}',
      '{"a":1}',
      ' {"a": [1, -2.5e+3, 0.25, 0, -0, 1E9, true, false, null, {"b": "x\\n\\"\\u00e9\\/"}, []], "c": {}}',
      '{\n  "name": "Ann",\n  "age": 37\n}',
      '{"é": "ünïcode ✓"}',
    ]) {
      expect(JSON.parse(doc)).toBeTypeOf('object');
      expect(walk(doc), doc).toEqual({ accepted: enc(doc).length, done: true });
      expect(walk(doc.slice(0, -1)).done, doc).toBe(false);
    }
  });

  it('refuses the first byte that no JSON object document can continue with', () => {
    for (const [bad, at] of [
      ['[1]', 0],
      ['"x"', 0],
      ['{"a" 1}', 5],
      ['{"a":01}', 6],
      ['{"a":1.}', 7],
      ['{"a":1e}', 7],
      ['{"a":--1}', 6],
      ['{"a":tru3}', 8],
      ['{"a":"x\u0001"}', 7],
      ['{"a":"\\x"}', 7],
      ['{"a":"\\u12g4"}', 10],
      ['{,}', 1],
      ['{"a":1,}', 7],
      ['{"a":[1,]}', 8],
      ['{"a":1]', 6],
      ['{a:1}', 1],
      ['{} ', 2],
      ['{}}', 2],
    ] as const) {
      expect(walk(bad), bad).toEqual({ accepted: at, done: false });
    }
    // Whitespace between tokens is bounded: a run of at most MAX_WHITESPACE bytes with one line break.
    expect(walk('{\r\n  "a": 1\n}').done).toBe(true);
    expect(walk('{\n\n"a": 1}').accepted).toBe(2);
    expect(walk(`{${' '.repeat(MAX_WHITESPACE)}}`).done).toBe(true);
    expect(walk(`{${' '.repeat(MAX_WHITESPACE + 1)}}`).accepted).toBe(1 + MAX_WHITESPACE);
  });

  it('masks the vocabulary: a token is allowed exactly when all its bytes continue the document', () => {
    const g = new JsonGuide(vocab);
    for (const b of enc('{"key": "va')) g.advance(b);
    const mask = g.allowed();
    expect(mask[0]).toBe(0); // a token without bytes is never drawn
    vocab.forEach((bytes, id) => {
      if (bytes) expect(mask[id], `token ${id}`).toBe(g.accepts(bytes) ? 1 : 0);
    });
    const allowed = (s: string) => mask[vocab.findIndex((v) => v !== null && new TextDecoder().decode(v) === s)];
    expect([allowed('ab"'), allowed('"}'), allowed('"]}'), allowed('", "'), allowed('\\u00')]).toEqual([1, 1, 0, 1, 1]);
    expect(() => g.advance(vocab.findIndex((v) => v !== null && new TextDecoder().decode(v) === '"]}'))).toThrow(/does not continue/);
    // The mask depends on the state alone: another guide in the same state, reached by other tokens, gets the same one.
    const other = new JsonGuide(vocab);
    for (const t of ['{"', 'k', 'e', 'y', '":', ' ', '"', 'v', 'a']) other.advance(vocab.findIndex((v) => v !== null && new TextDecoder().decode(v) === t));
    expect(other.allowed()).toBe(mask);
  });

  it('random walks through the mask only ever write JSON: every finished one parses as an object', () => {
    let finished = 0;
    for (let seed = 1; seed <= 200; seed++) {
      const rng = new Rng(seed);
      const g = new JsonGuide(vocab);
      const out: number[] = [];
      for (let step = 0; step < 400 && !g.done; step++) {
        const mask = g.allowed();
        const ids = [...mask.keys()].filter((id) => mask[id]);
        expect(ids.length).toBeGreaterThan(0);
        // Closing tokens grow likelier as the walk goes on, so that walks end.
        const closers = ids.filter((id) => [0x7d, 0x5d, 0x22].includes(vocab[id]![0]));
        const pool = closers.length > 0 && rng.uniform() < step / 100 ? closers : ids;
        const id = pool[Math.floor(rng.uniform() * pool.length)];
        g.advance(id);
        out.push(...vocab[id]!);
      }
      if (!g.done) continue;
      finished++;
      const parsed: unknown = JSON.parse(new TextDecoder().decode(Uint8Array.from(out)));
      expect(parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)).toBe(true);
    }
    expect(finished).toBeGreaterThan(100);
  });
});

describe('a Sequence guided to JSON', () => {
  /** A tokenizer of `pieces` (id 0: EOS, special); each piece's bytes are its text. */
  function tokenizerOf(pieces: string[]): Tokenizer {
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

  it('draws only tokens that continue the document, and ends when the object closes; the model\'s favourite is taken where allowed', () => {
    const tok = tokenizerOf(['a', '{', '"', 'k', ':', '1', '}', '{"k":1}']);
    const seq = new Sequence(0, { prompt: [1], maxTokens: 20, guide: { type: 'json_object' }, sampling: { temperature: 0 } }, { tokenizer: tok, eosIds: [0], vocabSize: tok.vocabSize });
    // The model always prefers 'a', then EOS, then the whole document in one token: the document wins.
    const logits = Float32Array.from([5, 9, 0, 0, 0, 0, 0, 0, 1]);
    const ev = seq.next(logits);
    expect(ev.token).toBe(8);
    expect(seq.finishReason).toBe('stop');
    expect(seq.result().text).toBe('{"k":1}');
  });

  it('a vocabulary that cannot continue the document lets the end tokens end it', () => {
    const tok = tokenizerOf(['a', 'b']);
    const seq = new Sequence(0, { prompt: [1], maxTokens: 5, guide: { type: 'json_object' }, sampling: { temperature: 0 } }, { tokenizer: tok, eosIds: [0], vocabSize: tok.vocabSize });
    expect(seq.next(Float32Array.from([-3, 5, 4])).token).toBe(0);
    expect(seq.finishReason).toBe('eos');
  });
});
