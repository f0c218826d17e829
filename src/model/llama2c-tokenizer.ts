/**
 * The tokenizer of llama2.c checkpoints (tok*.bin), behaving as run.c's encode/decode:
 * - file: uint32 max_token_length, then per token float32 score, uint32 byte length, bytes;
 * - ids 0 <unk>, 1 BOS, 2 EOS, 3..258 byte-fallback tokens <0x00>..<0xFF>;
 * - encode: a dummy-prefix " " token for non-empty text, each UTF-8 character looked up whole (bytes
 *   + 3 when absent), then repeatedly merge the adjacent pair whose concatenation is in the
 *   vocabulary with the highest score (leftmost on ties);
 * - decode: a piece right after BOS loses its leading space, <0xXX> pieces are raw bytes, and the
 *   bytes of all pieces are read as UTF-8 together.
 */
import { readFileSync } from 'node:fs';
import { type DecodeOptions, type EncodeOptions, type Tokenizer, TokenizerError } from './tokenizer.js';

const UNK = 0;
const BOS = 1;
const EOS = 2;
const BYTE0 = 3;

export class Llama2cTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bosId = BOS;
  readonly eosId = EOS;
  readonly padId = UNK;
  readonly specialIds: Readonly<Record<string, number>>;
  private readonly pieces: Uint8Array[];
  private readonly text: string[];
  private readonly ids = new Map<string, number>();

  constructor(
    pieces: Uint8Array[],
    private readonly scores: Float32Array,
  ) {
    if (pieces.length < BYTE0 + 256) throw new TokenizerError('bad_tokenizer_file', `a llama2.c vocabulary needs at least 259 tokens, got ${pieces.length}`, pieces.length);
    this.vocabSize = pieces.length;
    this.pieces = pieces;
    // Vocabulary lookup by byte string: latin1 maps bytes 1:1 onto a JS string key.
    this.text = pieces.map((p) => Buffer.from(p).toString('latin1'));
    this.text.forEach((t, i) => {
      if (!this.ids.has(t)) this.ids.set(t, i);
    });
    this.specialIds = Object.freeze({ [this.text[UNK]]: UNK, [this.text[BOS]]: BOS, [this.text[EOS]]: EOS });
  }

  /** Merge-score lookup of a byte string (latin1 key); -1 when absent. */
  private lookup(key: string): number {
    return this.ids.get(key) ?? -1;
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    const tokens: number[] = [];
    if (opts.addSpecialTokens) tokens.push(BOS);
    if (text.length > 0) {
      const space = this.lookup(' ');
      if (space >= 0) tokens.push(space);
    }
    const bytes = Buffer.from(text, 'utf8');
    let i = 0;
    while (i < bytes.length) {
      // One UTF-8 character: a lead byte and its continuation bytes (at most 4 bytes, as run.c).
      let j = i + 1;
      while (j < bytes.length && (bytes[j] & 0xc0) === 0x80 && j - i < 4) j++;
      const id = this.lookup(bytes.subarray(i, j).toString('latin1'));
      if (id >= 0) tokens.push(id);
      else for (let k = i; k < j; k++) tokens.push(bytes[k] + BYTE0);
      i = j;
    }
    for (;;) {
      let best = -1e10;
      let bestId = -1;
      let bestAt = -1;
      for (let k = 0; k + 1 < tokens.length; k++) {
        const id = this.lookup(this.text[tokens[k]] + this.text[tokens[k + 1]]);
        if (id >= 0 && this.scores[id] > best) {
          best = this.scores[id];
          bestId = id;
          bestAt = k;
        }
      }
      if (bestAt < 0) break;
      tokens.splice(bestAt, 2, bestId);
    }
    return tokens;
  }

  /** The bytes a token contributes after `prev` (run.c's decode()). */
  private pieceBytes(prev: number | undefined, id: number): Uint8Array {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
      throw new TokenizerError('unknown_id', `token id ${id} is outside the vocabulary of ${this.vocabSize}`, id);
    }
    let piece = this.pieces[id];
    if (prev === BOS && piece[0] === 0x20) piece = piece.subarray(1);
    if (id >= BYTE0 && id < BYTE0 + 256) return Uint8Array.of(id - BYTE0);
    return piece;
  }

  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    const parts: Uint8Array[] = [];
    let prev: number | undefined;
    for (const id of ids) {
      const special = id === UNK || id === BOS || id === EOS;
      const bytes = this.pieceBytes(prev, id);
      if (!(special && opts.skipSpecial)) parts.push(bytes);
      prev = id;
    }
    return Buffer.concat(parts).toString('utf8');
  }

  tokenBytes(id: number): Uint8Array | null {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) return null;
    return this.pieceBytes(undefined, id);
  }

  tokenToId(token: string): number | undefined {
    const id = this.lookup(Buffer.from(token, 'utf8').toString('latin1'));
    return id >= 0 ? id : undefined;
  }

  idToToken(id: number): string | undefined {
    return id >= 0 && id < this.vocabSize ? Buffer.from(this.pieces[id]).toString('utf8') : undefined;
  }
}

/** Read a llama2.c tokenizer file holding `vocabSize` tokens (the size comes from the model header). */
export function loadLlama2cTokenizer(path: string, vocabSize: number): Llama2cTokenizer {
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch (e) {
    throw new TokenizerError('tokenizer_not_found', `cannot read ${path}: ${(e as Error).message}`, path);
  }
  const pieces: Uint8Array[] = [];
  const scores = new Float32Array(vocabSize);
  let at = 4;
  for (let i = 0; i < vocabSize; i++) {
    if (at + 8 > buf.length) throw new TokenizerError('bad_tokenizer_file', `${path} ends at token ${i} of ${vocabSize}`, path);
    scores[i] = buf.readFloatLE(at);
    const n = buf.readUInt32LE(at + 4);
    at += 8;
    if (at + n > buf.length) throw new TokenizerError('bad_tokenizer_file', `${path}: token ${i} runs past the end of the file`, path);
    pieces.push(Uint8Array.from(buf.subarray(at, at + n)));
    at += n;
  }
  return new Llama2cTokenizer(pieces, scores);
}
