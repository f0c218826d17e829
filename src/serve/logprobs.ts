/**
 * Log-probabilities as the API reports them. Each token is described by its bytes (the tokenizer's
 * own: a token may be part of a UTF-8 character, and a client joins the bytes of several tokens to
 * get the character) and its text (those bytes read as UTF-8, U+FFFD for a partial character; the
 * token decoded alone where the tokenizer cannot give bytes; '' for an id past the tokenizer's
 * vocabulary, in a model whose embedding table is padded). Texts and bytes are memoised per token
 * id; a description shares its token's bytes array with every other description of that token.
 */
import type { TokenLogprobs } from '../model/sampling.js';
import type { Tokenizer } from '../model/tokenizer.js';
import type { TokenAlternative, TokenLogprob } from './types.js';

interface TokenText {
  token: string;
  bytes: number[] | null;
}

export class TokenTexts {
  private readonly memo = new Map<number, TokenText>();

  constructor(private readonly tokenizer: Tokenizer) {}

  of(id: number): TokenText {
    let t = this.memo.get(id);
    if (!t) {
      // A model's vocabulary may be padded past its tokenizer's: such an id has no text.
      const bytes = id < this.tokenizer.vocabSize ? this.tokenizer.tokenBytes(id) : null;
      t = bytes ? { token: Buffer.from(bytes).toString('utf8'), bytes: Array.from(bytes) } : { token: id < this.tokenizer.vocabSize ? this.tokenizer.decode([id]) : '', bytes: null };
      this.memo.set(id, t);
    }
    return t;
  }

  describe(lp: TokenLogprobs): TokenLogprob {
    const t = this.of(lp.tokenId);
    const top: TokenAlternative[] = new Array(lp.top.length);
    for (let k = 0; k < lp.top.length; k++) {
      const a = lp.top[k];
      const at = this.of(a.tokenId);
      top[k] = { token: at.token, tokenId: a.tokenId, logprob: a.logprob, bytes: at.bytes };
    }
    return { token: t.token, tokenId: lp.tokenId, logprob: lp.logprob, rank: lp.rank, bytes: t.bytes, top };
  }
}
