import { afterAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeBpe, encodeBpe } from '../../src/model/bpe-train.js';
import { createStreamDecoder, loadTokenizer, tokenizerFromJson, TokenizerError, type Tokenizer } from '../../src/model/tokenizer.js';
import { FIXTURE_CORPUS, isWellFormed, makeTokenizerFixture } from './tokenizer-fixture.js';

const fx = makeTokenizerFixture(400);
const tok = fx.tokenizer;
afterAll(() => fx.cleanup());

const wellFormed = fc.string({ unit: 'binary', maxLength: 80 }).filter(isWellFormed);

const TRICKY = [
  '',
  ' ',
  'a',
  '  leading and trailing  ',
  'emoji 😀👍🏽 family 👨‍👩‍👧 flag 🇳🇱',
  'CJK 日本語のテキスト, Hangul 한국어, Arabic العربية, Devanagari हिन्दी',
  'combining e\u0301 vs \u00e9, zero-width\u200bjoiner',
  'controls \u0000\u0001\u0007\u001b[0m\u007f and\ttabs\r\nCRLF\n\n\n',
  "it's the patient's 2nd visit: BP 140/90 mmHg (≈ high)!",
  '\uFEFFBOM at start',
  'a<|end|>b<|user|>',
];

function streamed(t: Tokenizer, ids: number[], skipSpecial = false): { pieces: string[]; rest: string } {
  const d = createStreamDecoder(t, { skipSpecial });
  const pieces = ids.map((id) => d.push(id));
  return { pieces, rest: d.flush() };
}

describe('loadTokenizer (our trained tokenizer.json through @huggingface/tokenizers)', () => {
  it('encodes exactly as the trainer reference does', () => {
    for (const text of [...FIXTURE_CORPUS, ...TRICKY]) expect(tok.encode(text)).toEqual(encodeBpe(fx.bpe, text));
    fc.assert(
      fc.property(wellFormed, (s) => {
        expect(tok.encode(s)).toEqual(encodeBpe(fx.bpe, s));
      }),
      { numRuns: 300 },
    );
  });

  it('round-trips any well-formed text, including emoji and control characters', () => {
    for (const text of TRICKY) expect(tok.decode(tok.encode(text))).toBe(text);
    fc.assert(
      fc.property(wellFormed, (s) => {
        expect(tok.decode(tok.encode(s))).toBe(s);
        expect(decodeBpe(fx.bpe, tok.encode(s))).toBe(s);
      }),
      { numRuns: 300 },
    );
  });

  it('never cleans up spaces before punctuation (the library default would)', () => {
    expect(tok.decode(tok.encode("word . word , n't"))).toBe("word . word , n't");
  });

  it('makes every special token a single id and knows BOS/EOS/pad', () => {
    expect(tok.specialIds).toEqual({ '<|endoftext|>': 0, '<|system|>': 1, '<|user|>': 2, '<|assistant|>': 3, '<|end|>': 4 });
    for (const [s, id] of Object.entries(tok.specialIds)) {
      expect(tok.encode(s)).toEqual([id]);
      expect(tok.tokenToId(s)).toBe(id);
      expect(tok.idToToken(id)).toBe(s);
    }
    expect([tok.bosId, tok.eosId, tok.padId]).toEqual([0, 0, 0]);
    expect(tok.vocabSize).toBe(400);
    expect(tok.encode('hi<|end|>there')).toContain(4);
  });

  it('with parseSpecial false encodes special-token strings as plain characters', () => {
    const text = 'I typed <|end|> and <|endoftext|><|user|>';
    const ids = tok.encode(text, { parseSpecial: false });
    for (const id of Object.values(tok.specialIds)) expect(ids).not.toContain(id);
    expect(tok.decode(ids)).toBe(text);
    expect(tok.encode('no specials here', { parseSpecial: false })).toEqual(tok.encode('no specials here'));
  });

  it('skips special tokens on request', () => {
    expect(tok.decode(tok.encode('<|user|>Hi<|end|>'), { skipSpecial: true })).toBe('Hi');
    expect(tok.decode(tok.encode('<|user|>Hi<|end|>'))).toBe('<|user|>Hi<|end|>');
  });

  it('decodes the empty list and rejects ids outside the vocabulary', () => {
    expect(tok.decode([])).toBe('');
    expect(() => tok.decode([400])).toThrow(TokenizerError);
    try {
      tok.decode([1, -1]);
    } catch (e) {
      expect((e as TokenizerError).code).toBe('unknown_id');
      expect((e as TokenizerError).value).toBe(-1);
    }
  });

  it('loads from the directory or the file path, and says when there is none', () => {
    expect(loadTokenizer(join(fx.dir, 'tokenizer.json')).encode('blood pressure')).toEqual(tok.encode('blood pressure'));
    expect(() => loadTokenizer(join(fx.dir, 'missing'))).toThrow(expect.objectContaining({ code: 'tokenizer_not_found' }));
    const bad = mkdtempSync(join(tmpdir(), 'memlora-badtok-'));
    try {
      writeFileSync(join(bad, 'tokenizer.json'), '{ not json');
      expect(() => loadTokenizer(bad)).toThrow(expect.objectContaining({ code: 'bad_tokenizer_file' }));
    } finally {
      rmSync(bad, { recursive: true, force: true });
    }
  });
});

/** The tokens' bytes joined, as a client joins the `bytes` of reported log-probabilities. */
const joinedBytes = (t: Tokenizer, ids: number[]): Buffer => Buffer.concat(ids.map((id) => t.tokenBytes(id)!));

describe('tokenBytes (a token\'s own bytes, for log-probabilities)', () => {
  it('byte-level: every token has bytes, and the bytes of a text\'s tokens are its UTF-8, characters split between tokens included', () => {
    for (const text of TRICKY) {
      const ids = tok.encode(text);
      expect(joinedBytes(tok, ids).equals(Buffer.from(tok.decode(ids), 'utf8')), JSON.stringify(text)).toBe(true);
    }
    let partial = 0;
    for (let id = 0; id < tok.vocabSize; id++) {
      const bytes = tok.tokenBytes(id);
      expect(bytes, `token ${id}`).not.toBeNull();
      const alone = tok.decode([id]);
      if (alone.includes('\uFFFD')) partial++;
      else expect(Buffer.from(bytes!).toString('utf8')).toBe(alone);
    }
    // The fixture's vocabulary holds single bytes of multi-byte characters: the case bytes exist for.
    expect(partial).toBeGreaterThan(0);
    expect(tok.tokenBytes(-1)).toBeNull();
    expect(tok.tokenBytes(tok.vocabSize)).toBeNull();
  });

  it('holds for any text (property)', () => {
    fc.assert(
      fc.property(wellFormed, (text) => {
        const ids = tok.encode(text, { parseSpecial: false });
        return joinedBytes(tok, ids).equals(Buffer.from(text, 'utf8'));
      }),
      { numRuns: 200 },
    );
  });
});

describe('createStreamDecoder', () => {
  it('emits whole characters only, and the pieces add up to the full decode', () => {
    const text = 'Hi 😀 café 日本 👨‍👩‍👧!';
    const ids = tok.encode(text);
    const { pieces, rest } = streamed(tok, ids);
    // The small vocabulary spells the emoji byte by byte: some pushes must hold their bytes back.
    expect(pieces.some((p) => p === '')).toBe(true);
    for (const p of pieces) expect(p).not.toContain('\uFFFD');
    expect(pieces.join('') + rest).toBe(text);
  });

  it('holds for any text (property)', () => {
    fc.assert(
      fc.property(wellFormed, (s) => {
        const { pieces, rest } = streamed(tok, tok.encode(s));
        expect(pieces.join('') + rest).toBe(s);
        if (!s.includes('\uFFFD')) for (const p of pieces) expect(p).not.toContain('\uFFFD');
      }),
      { numRuns: 200 },
    );
  });

  it('flushes a dangling partial character as U+FFFD', () => {
    const ids = tok.encode('😀');
    expect(ids.length).toBeGreaterThan(1);
    const { pieces, rest } = streamed(tok, ids.slice(0, -1));
    expect(pieces.join('')).toBe('');
    expect(rest).toContain('\uFFFD');
  });

  it('can leave special tokens out of the stream', () => {
    const { pieces, rest } = streamed(tok, tok.encode('<|assistant|>Take care.<|end|>'), true);
    expect(pieces.join('') + rest).toBe('Take care.');
  });
});

/**
 * A Llama-2-style tokenizer.json written by hand (Metaspace via normalizer, BPE with byte fallback,
 * a TemplateProcessing post-processor that adds <s>, the Replace/ByteFallback/Fuse/Strip decoder),
 * with no tokenizer_config: BOS/EOS come from the usual names.
 */
function llamaStyleTokenizer(): Tokenizer {
  const vocab: Record<string, number> = { '<unk>': 0, '<s>': 1, '</s>': 2 };
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`] = 3 + b;
  const pieces = ['▁', ...'abcdefghijklmnopqrstuvwxyz', 'he', 'll', 'llo', 'hello', '▁hello', 'or', 'ld', 'wor', 'world', '▁world'];
  for (const p of pieces) vocab[p] = Object.keys(vocab).length;
  const merges = ['h e', 'l l', 'll o', 'he llo', '▁ hello', 'o r', 'l d', 'w or', 'wor ld', '▁ world'];
  const json = {
    version: '1.0',
    added_tokens: [
      { id: 0, content: '<unk>', special: true, normalized: false },
      { id: 1, content: '<s>', special: true, normalized: false },
      { id: 2, content: '</s>', special: true, normalized: false },
    ],
    normalizer: {
      type: 'Sequence',
      normalizers: [
        { type: 'Prepend', prepend: '▁' },
        { type: 'Replace', pattern: { String: ' ' }, content: '▁' },
      ],
    },
    pre_tokenizer: null,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 0 } }],
      special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
    },
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ],
    },
    model: { type: 'BPE', dropout: null, unk_token: '<unk>', byte_fallback: true, fuse_unk: true, ignore_merges: false, vocab, merges },
  };
  return tokenizerFromJson(json);
}

describe('an imported Llama-style tokenizer', () => {
  const llama = llamaStyleTokenizer();

  it('finds BOS and EOS by their usual names and encodes with byte fallback', () => {
    expect([llama.bosId, llama.eosId, llama.padId]).toEqual([1, 2, 2]);
    const ids = llama.encode('hello world é');
    expect(ids.slice(0, 2)).toEqual([llama.tokenToId('▁hello'), llama.tokenToId('▁world')]);
    // é is not in the vocabulary: its two UTF-8 bytes 0xC3 0xA9.
    expect(ids.slice(-2)).toEqual([3 + 0xc3, 3 + 0xa9]);
    expect(llama.decode(ids)).toBe('hello world é');
  });

  it('adds BOS through its post-processor only when asked, also for literal specials', () => {
    expect(llama.encode('hello', { addSpecialTokens: true })).toEqual([1, llama.tokenToId('▁hello')]);
    expect(llama.encode('hello')).toEqual([llama.tokenToId('▁hello')]);
    const literal = llama.encode('hello </s>', { addSpecialTokens: true, parseSpecial: false });
    expect(literal[0]).toBe(1);
    expect(literal).not.toContain(2);
    expect(llama.decode(literal, { skipSpecial: true })).toBe('hello </s>');
  });

  it('gives each token its bytes: ▁ as a space, <0xNN> as that byte (a character split over two tokens)', () => {
    const ids = llama.encode('hello world é world');
    // The decoder strips the leading space of the prepended ▁; the bytes keep it.
    expect(joinedBytes(llama, ids).toString('utf8')).toBe(' hello world é world');
    expect(Array.from(llama.tokenBytes(3 + 0xc3)!)).toEqual([0xc3]);
    expect(Buffer.from(llama.tokenBytes(llama.tokenToId('▁world')!)!).toString()).toBe(' world');
    expect(Buffer.from(llama.tokenBytes(2)!).toString()).toBe('</s>');
  });

  it('streams with the right spacing and whole characters', () => {
    const ids = llama.encode('hello world é world');
    const { pieces, rest } = streamed(llama, ids);
    expect(pieces.join('') + rest).toBe('hello world é world');
    expect(pieces).toContain('');
    expect(pieces).toContain(' world');
    for (const p of pieces) expect(p).not.toContain('\uFFFD');
  });
});
