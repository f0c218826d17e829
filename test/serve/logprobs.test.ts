/**
 * How log-probabilities describe tokens (src/serve/logprobs.ts): text from the token's own bytes
 * (U+FFFD where it holds part of a character, the bytes exact), ids past the tokenizer's vocabulary
 * in a padded model, and the memo.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { TokenTexts } from '../../src/serve/logprobs.js';
import { makeTokenizerFixture } from '../model/tokenizer-fixture.js';

const fx = makeTokenizerFixture(400);
afterAll(() => fx.cleanup());

describe('TokenTexts', () => {
  const tok = fx.tokenizer;
  const texts = new TokenTexts(tok);

  it('describes a token and its alternatives by text, id, bytes and log-probability', () => {
    const [a, b] = tok.encode(' blood');
    const d = texts.describe({ tokenId: a, logprob: -0.5, rank: 2, top: [{ tokenId: b ?? a, logprob: -0.25 }] });
    expect(d).toEqual({
      token: tok.decode([a]),
      tokenId: a,
      logprob: -0.5,
      rank: 2,
      bytes: [...Buffer.from(tok.decode([a]))],
      top: [{ token: tok.decode([b ?? a]), tokenId: b ?? a, logprob: -0.25, bytes: [...Buffer.from(tok.decode([b ?? a]))] }],
    });
  });

  it('gives a character split between tokens as bytes that join, and U+FFFD text for each part', () => {
    const ids = tok.encode('é€'); // characters the fixture corpus never saw: one token per byte
    expect(ids.length).toBe(5);
    const described = ids.map((id) => texts.of(id));
    expect(described.every((d) => d.token === '\uFFFD')).toBe(true);
    expect(Buffer.from(described.flatMap((d) => d.bytes!)).toString('utf8')).toBe('é€');
  });

  it('an id past the tokenizer\'s vocabulary (a padded model) has no text and no bytes; descriptions are memoised', () => {
    expect(texts.of(tok.vocabSize + 3)).toEqual({ token: '', bytes: null });
    expect(texts.of(5)).toBe(texts.of(5));
  });
});
