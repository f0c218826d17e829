import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { Llama2cTokenizer, loadLlama2cTokenizer } from '../../src/model/llama2c-tokenizer.js';
import { sharedDir, tempDir } from './fixtures.js';

/** A small vocabulary in llama2.c's layout: <unk>, BOS, EOS, 256 byte tokens, then pieces by score. */
function tiny(pieces: [string, number][]): Llama2cTokenizer {
  const all: [string, number][] = [['<unk>', 0], ['\n<s>\n', 0], ['\n</s>\n', 0]];
  for (let b = 0; b < 256; b++) all.push([`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`, 0]);
  all.push(...pieces);
  return new Llama2cTokenizer(
    all.map(([p]) => new TextEncoder().encode(p)),
    Float32Array.from(all.map(([, s]) => s)),
  );
}

const base = 259;

describe('Llama2cTokenizer', () => {
  // ids: ' ' 259, 'a' 260, 'b' 261, 'c' 262, 'ab' 263, 'bc' 264, ' a' 265, 'abc' 266, 'é' 267
  const tok = tiny([
    [' ', -10],
    ['a', -10],
    ['b', -10],
    ['c', -10],
    ['ab', -2],
    ['bc', -1],
    [' a', -3],
    ['abc', -0.5],
    ['é', -10],
  ]);

  it('merges the best-scoring adjacent pair first', () => {
    // ' ' a b c: candidates ' a'(-3), ab(-2), bc(-1) -> bc; then ' a'(-3) vs 'abc'(-0.5) -> abc; then ' abc' absent.
    expect(tok.encode('abc')).toEqual([base, base + 7]);
    // ' ' a b ' ' a b: both 'ab' (-2) beat ' a' (-3), the left one first; ' ab' is not a piece
    expect(tok.encode('ab ab')).toEqual([base, base + 4, base, base + 4]);
  });

  it('adds BOS on request and falls back to UTF-8 bytes (+3) for unknown characters', () => {
    expect(tok.encode('é😀', { addSpecialTokens: true })).toEqual([1, base, base + 8, 0xf0 + 3, 0x9f + 3, 0x98 + 3, 0x80 + 3]);
    expect(tok.encode('')).toEqual([]);
  });

  it('decodes bytes together and strips the space after BOS only', () => {
    const ids = tok.encode('a😀 abc', { addSpecialTokens: true });
    expect(tok.decode(ids)).toBe('\n<s>\na😀 abc');
    expect(tok.decode(ids, { skipSpecial: true })).toBe('a😀 abc');
    expect(tok.decode(ids.slice(1))).toBe(' a😀 abc');
    expect(() => tok.decode([9999])).toThrow(/outside the vocabulary/);
  });

  it('looks tokens up both ways', () => {
    expect(tok.tokenToId('abc')).toBe(base + 7);
    expect(tok.idToToken(base + 8)).toBe('é');
    expect(tok.tokenToId('zzz')).toBeUndefined();
    expect([tok.bosId, tok.eosId, tok.vocabSize]).toEqual([1, 2, base + 9]);
  });

  it("reads tok512.bin and round-trips text through llama2.c's conventions", () => {
    const t = loadLlama2cTokenizer(join(sharedDir(), 'models', 'stories260K', 'tok512.bin'), 512);
    const text = 'Tom and Lily found a shiny stone — naïve 🦄!\nThe end.';
    const ids = t.encode(text, { addSpecialTokens: true });
    expect(ids[0]).toBe(1);
    expect(t.decode(ids, { skipSpecial: true })).toBe(text);
    expect(ids.length).toBeLessThan(Buffer.byteLength(text));
  });

  it("gives each token its own bytes (byte tokens one byte, BOS's space strip left to decode)", () => {
    const t = loadLlama2cTokenizer(join(sharedDir(), 'models', 'stories260K', 'tok512.bin'), 512);
    const text = 'Tom saw a naïve 🦄.';
    const ids = t.encode(text);
    const joined = Buffer.concat(ids.map((id) => t.tokenBytes(id)!));
    expect(joined.toString('utf8')).toBe(t.decode(ids));
    expect(joined.toString('utf8')).toBe(` ${text}`);
    expect(Array.from(t.tokenBytes(3 + 0xf0)!)).toEqual([0xf0]);
    expect(t.tokenBytes(512)).toBeNull();
  });

  it('names a truncated file', () => {
    const p = join(tempDir('tok'), 'tok.bin');
    writeFileSync(p, Buffer.alloc(20));
    expect(() => loadLlama2cTokenizer(p, 512)).toThrow(/ends at token/);
  });
});
