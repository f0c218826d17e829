import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  BYTE_TO_UNICODE,
  BpeError,
  decodeBpe,
  encodeBpe,
  pretokenize,
  splitOnSpecials,
  toByteLevel,
  toTokenizerJson,
  toTokenizerConfigJson,
  trainBpe,
  type BpeProgress,
} from '../../src/model/bpe-train.js';
import { MEMLORA_SPECIAL_TOKENS } from '../../src/model/chat-format.js';
import { fixtureTexts, isWellFormed } from './tokenizer-fixture.js';

/**
 * Naive reference trainer: recounts every pair over every word at each step. Same rules as the
 * real one (most frequent pair, ties to the smaller (left id, right id), stop below minFrequency),
 * none of its bookkeeping.
 */
function naiveMerges(texts: string[], vocabSize: number, minFrequency: number): [string, string][] {
  const specials = MEMLORA_SPECIAL_TOKENS;
  const vocab = [...specials, ...BYTE_TO_UNICODE];
  const ids = new Map(vocab.map((t, i) => [t, i]));
  const freq = new Map<string, number>();
  for (const t of texts) {
    for (const part of splitOnSpecials(t, specials)) {
      if (part.special) continue;
      for (const p of pretokenize(part.text)) freq.set(toByteLevel(p), (freq.get(toByteLevel(p)) ?? 0) + 1);
    }
  }
  let words = [...freq].map(([w, f]) => ({ syms: [...w].map((c) => ids.get(c)!), f }));
  const merges: [string, string][] = [];
  while (vocab.length < vocabSize) {
    const counts = new Map<string, number>();
    for (const { syms, f } of words) for (let i = 0; i + 1 < syms.length; i++) counts.set(`${syms[i]},${syms[i + 1]}`, (counts.get(`${syms[i]},${syms[i + 1]}`) ?? 0) + f);
    let best: [number, number] | null = null;
    let bestCount = 0;
    for (const [k, c] of counts) {
      const [a, b] = k.split(',').map(Number);
      if (c > bestCount || (c === bestCount && best && (a < best[0] || (a === best[0] && b < best[1])))) {
        best = [a, b];
        bestCount = c;
      }
    }
    if (!best || bestCount < minFrequency) break;
    const [a, b] = best;
    const id = vocab.length;
    vocab.push(vocab[a] + vocab[b]);
    merges.push([vocab[a], vocab[b]]);
    words = words.map(({ syms, f }) => {
      const out: number[] = [];
      for (let i = 0; i < syms.length; i++) {
        if (i + 1 < syms.length && syms[i] === a && syms[i + 1] === b) {
          out.push(id);
          i++;
        } else out.push(syms[i]);
      }
      return { syms: out, f };
    });
  }
  return merges;
}

describe('byte-level alphabet', () => {
  it('maps the 256 bytes to 256 distinct printable characters, printable ASCII to itself', () => {
    expect(new Set(BYTE_TO_UNICODE).size).toBe(256);
    expect(BYTE_TO_UNICODE[0x41]).toBe('A');
    // GPT-2's table: space (0x20) is the 33rd non-printable byte -> U+0120 'Ġ', newline U+010A 'Ċ'.
    expect(BYTE_TO_UNICODE[0x20]).toBe('Ġ');
    expect(BYTE_TO_UNICODE[0x0a]).toBe('Ċ');
    for (const c of BYTE_TO_UNICODE) expect(/\s/.test(c)).toBe(false);
  });

  it('pre-tokenises as GPT-2: contractions, leading spaces, digits, punctuation runs', () => {
    expect(pretokenize("I'm fine,  they've 123abc!!")).toEqual(['I', "'m", ' fine', ',', ' ', ' they', "'ve", ' 123', 'abc', '!!']);
  });

  it('splits special tokens out of the text', () => {
    expect(splitOnSpecials('a<|user|>b<|end|>', MEMLORA_SPECIAL_TOKENS)).toEqual([
      { text: 'a', special: false },
      { text: '<|user|>', special: true },
      { text: 'b', special: false },
      { text: '<|end|>', special: true },
    ]);
  });
});

describe('trainBpe', () => {
  it('learns the hand-computed merges of a tiny corpus', () => {
    // Pre-tokens: "ab", " ab", " ab", " cd" -> pair counts (a,b)=3, (Ġ,a)=2, (Ġ,c)=1, (c,d)=1.
    // Merge 1: (a,b). Then words [ab], [Ġ,ab]x2, [Ġ,c,d]: (Ġ,ab)=2, others 1. Merge 2: (Ġ,ab).
    // Every remaining pair occurs once < minFrequency 2: stop.
    const bpe = trainBpe(['ab ab ab cd'], { vocabSize: 1000 });
    expect(bpe.merges).toEqual([
      ['a', 'b'],
      ['Ġ', 'ab'],
    ]);
    expect(bpe.vocab.length).toBe(5 + 256 + 2);
    expect(bpe.vocab.slice(0, 5)).toEqual([...MEMLORA_SPECIAL_TOKENS]);
    expect(bpe.vocab[5 + 256]).toBe('ab');
  });

  it('merges overlapping runs left to right: "aaaa" -> aa aa -> aaaa', () => {
    // Words "aaaa" and "Ġaaaa": (a,a) = 3 + 3 = 6 -> merge. Words [aa,aa], [Ġ,aa,aa]: (aa,aa) = 2 -> merge.
    // (Ġ,aaaa) = 1 < 2: stop.
    expect(trainBpe(['aaaa aaaa'], { vocabSize: 1000 }).merges).toEqual([
      ['a', 'a'],
      ['aa', 'aa'],
    ]);
  });

  it('breaks ties by the smaller (left id, right id), not by input order', () => {
    // Words "xy" x2 and "uv" x2: (x,y) and (u,v) both occur twice; byte 'u' = 0x75 < 'x' = 0x78,
    // so (u,v) goes first although "xy" comes first in the input.
    expect(trainBpe(['xy', 'xy', 'uv', 'uv'], { vocabSize: 1000 }).merges).toEqual([
      ['u', 'v'],
      ['x', 'y'],
    ]);
  });

  it('never merges across or into special tokens', () => {
    const bpe = trainBpe(Array(50).fill('<|user|>hi<|end|><|user|>hi<|end|>'), { vocabSize: 1000 });
    for (const [l, r] of bpe.merges) expect(`${l}${r}`).not.toMatch(/<\||\|>/);
    expect(bpe.merges).toEqual([['h', 'i']]);
  });

  it('agrees merge for merge with a naive recounting trainer on random corpora', () => {
    const word = fc.stringMatching(/^[a-d]{1,7}$/);
    fc.assert(
      fc.property(fc.array(fc.array(word, { minLength: 1, maxLength: 12 }).map((ws) => ws.join(' ')), { minLength: 1, maxLength: 8 }), (texts) => {
        expect(trainBpe(texts, { vocabSize: 5 + 256 + 40 }).merges).toEqual(naiveMerges(texts, 5 + 256 + 40, 2));
      }),
      { numRuns: 60 },
    );
  });

  it('agrees with the naive trainer on real text too', () => {
    const texts = fixtureTexts(3);
    expect(trainBpe(texts, { vocabSize: 360 }).merges).toEqual(naiveMerges(texts, 360, 2));
  });

  it('reaches the target size when the text allows, and reports progress', () => {
    const seen: BpeProgress[] = [];
    const bpe = trainBpe(fixtureTexts(), { vocabSize: 400, onProgress: (p) => seen.push(p) });
    expect(bpe.vocab.length).toBe(400);
    expect(new Set(bpe.vocab).size).toBe(400);
    expect(seen.at(-1)).toEqual({ phase: 'done', done: 400 - 261, total: 400 - 261 });
  });

  it('is deterministic', () => {
    expect(trainBpe(fixtureTexts(), { vocabSize: 350 })).toEqual(trainBpe(fixtureTexts(), { vocabSize: 350 }));
  });

  it('rejects a vocabulary too small for specials and bytes, and duplicate specials', () => {
    expect(() => trainBpe(['x'], { vocabSize: 100 })).toThrow(BpeError);
    try {
      trainBpe(['x'], { vocabSize: 100 });
    } catch (e) {
      expect((e as BpeError).code).toBe('bad_vocab_size');
      expect((e as BpeError).value).toBe(100);
    }
    expect(() => trainBpe(['x'], { specialTokens: ['<a>', '<a>'] })).toThrow(/distinct/);
  });
});

describe('reference encode/decode', () => {
  const bpe = trainBpe(fixtureTexts(), { vocabSize: 400 });

  it('round-trips any well-formed text, specials included', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 60 }), fc.constantFrom('', '<|user|>', '<|end|>'), (s, sp) => {
        fc.pre(isWellFormed(s));
        const text = s + sp + s;
        expect(decodeBpe(bpe, encodeBpe(bpe, text))).toBe(text);
      }),
      { numRuns: 200 },
    );
  });

  it('uses learned merges: a frequent word becomes one token', () => {
    const ids = encodeBpe(bpe, ' blood');
    expect(ids).toHaveLength(1);
    expect(bpe.vocab[ids[0]]).toBe('Ġblood');
  });

  it('rejects ids outside the vocabulary', () => {
    expect(() => decodeBpe(bpe, [400])).toThrow(/outside the vocabulary/);
  });
});

describe('tokenizer.json', () => {
  const bpe = trainBpe(fixtureTexts(), { vocabSize: 300 });
  const json = toTokenizerJson(bpe) as {
    added_tokens: { id: number; content: string; special: boolean }[];
    pre_tokenizer: { type: string; add_prefix_space: boolean };
    decoder: { type: string };
    model: { type: string; vocab: Record<string, number>; merges: string[]; byte_fallback: boolean };
  };

  it('holds a BPE model with ByteLevel components and the special tokens as added tokens', () => {
    expect(json.model.type).toBe('BPE');
    expect(json.pre_tokenizer).toMatchObject({ type: 'ByteLevel', add_prefix_space: false });
    expect(json.decoder.type).toBe('ByteLevel');
    expect(json.added_tokens.map((t) => [t.id, t.content, t.special])).toEqual(MEMLORA_SPECIAL_TOKENS.map((s, i) => [i, s, true]));
    expect(Object.keys(json.model.vocab)).toHaveLength(300);
    expect(json.model.vocab['<|endoftext|>']).toBe(0);
    expect(json.model.merges).toHaveLength(bpe.merges.length);
    json.model.merges.forEach((m, i) => {
      const [l, r] = m.split(' ');
      expect(json.model.vocab[l + r]).toBe(261 + i);
    });
  });

  it('names <|endoftext|> as BOS, EOS and pad and turns off space clean-up', () => {
    expect(toTokenizerConfigJson(bpe)).toMatchObject({
      bos_token: '<|endoftext|>',
      eos_token: '<|endoftext|>',
      pad_token: '<|endoftext|>',
      clean_up_tokenization_spaces: false,
    });
  });
});
