/**
 * Tokenizers at run time: any Hugging Face tokenizer.json (our own byte-level BPE, GPT-2/DialoGPT,
 * Llama) loaded through `@huggingface/tokenizers`, behind one small interface.
 *
 * Decisions:
 * - `decode` never "cleans up tokenization spaces" (the library's default would turn " ." into "."),
 *   so decode(encode(x)) === x for byte-level tokenizers, and streamed pieces add up to the whole.
 * - `encode` adds no BOS/EOS unless asked (`addSpecialTokens`): chat templates place them.
 * - `parseSpecial: false` encodes special-token strings inside the text as plain characters, exactly
 *   as a tokenizer without those added tokens would (a twin built without them). Used for user
 *   content, so that nobody can type a control token.
 * - BOS/EOS/pad come from tokenizer_config.json when present, else from well-known token names.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';

export interface EncodeOptions {
  /** Let the tokenizer's post-processor add its special tokens (e.g. Llama's BOS). Default false. */
  addSpecialTokens?: boolean;
  /** Recognise special-token strings in the text as the tokens themselves. Default true. */
  parseSpecial?: boolean;
}

export interface DecodeOptions {
  /** Leave special tokens out of the text. Default false. */
  skipSpecial?: boolean;
}

export interface Tokenizer {
  encode(text: string, opts?: EncodeOptions): number[];
  decode(ids: readonly number[], opts?: DecodeOptions): string;
  /** One more than the largest id (the size of an embedding table for this tokenizer). */
  readonly vocabSize: number;
  readonly bosId: number;
  readonly eosId: number;
  readonly padId: number;
  /** Every special added token by its text. */
  readonly specialIds: Readonly<Record<string, number>>;
  tokenToId(token: string): number | undefined;
  idToToken(id: number): string | undefined;
  /**
   * The bytes one token stands for in decoded text (a byte-fallback or byte-level token may be part
   * of a UTF-8 character), without a decoder's position-dependent touches (SentencePiece's strip of
   * a leading space after BOS); null when the tokenizer cannot say.
   */
  tokenBytes(id: number): Uint8Array | null;
}

export class TokenizerError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly value?: unknown,
  ) {
    super(message);
    this.name = 'TokenizerError';
  }
}

interface AddedTokenJson {
  id: number;
  content: string;
  special?: boolean;
}

/**
 * Loads `tokenizer.json` from a directory (with its `tokenizer_config.json` when present) or from a
 * path to the JSON file itself.
 */
export function loadTokenizer(path: string): Tokenizer {
  if (!existsSync(path)) throw new TokenizerError('tokenizer_not_found', `no tokenizer at ${path}`, path);
  const file = statSync(path).isDirectory() ? join(path, 'tokenizer.json') : path;
  if (!existsSync(file)) throw new TokenizerError('tokenizer_not_found', `no tokenizer.json in ${path}`, path);
  const configFile = join(dirname(file), 'tokenizer_config.json');
  const json = readJson(file);
  const config = existsSync(configFile) ? readJson(configFile) : {};
  return tokenizerFromJson(json, config);
}

function readJson(file: string): Record<string, unknown> {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new TokenizerError('bad_tokenizer_file', `cannot read ${file}: ${(err as Error).message}`, file);
  }
}

/** A tokenizer from parsed tokenizer.json (and tokenizer_config.json) objects. */
export function tokenizerFromJson(json: Record<string, unknown>, config: Record<string, unknown> = {}): Tokenizer {
  const cfg = normaliseConfig(config);
  // The library insists on these keys; files written by older tokenizers versions may omit some.
  const full = { normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null, added_tokens: [], ...json };
  let hf: HfTokenizer;
  try {
    hf = new HfTokenizer(full, cfg);
  } catch (err) {
    throw new TokenizerError('bad_tokenizer_file', `tokenizer.json not understood: ${(err as Error).message}`, (json.model as { type?: string } | undefined)?.type);
  }
  return new HfBackedTokenizer(hf, full, full.added_tokens as AddedTokenJson[], cfg);
}

/** Token fields may be written as `{content: "..."}` objects; the library wants strings. */
function normaliseConfig(config: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...config };
  for (const key of ['bos_token', 'eos_token', 'pad_token', 'unk_token']) {
    const v = out[key];
    if (v && typeof v === 'object' && 'content' in v) out[key] = (v as { content: string }).content;
  }
  return out;
}

class HfBackedTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number;
  readonly eosId: number;
  readonly padId: number;
  readonly specialIds: Readonly<Record<string, number>>;

  constructor(
    private readonly hf: HfTokenizer,
    private readonly json: Record<string, unknown>,
    private readonly added: AddedTokenJson[],
    private readonly config: Record<string, unknown>,
  ) {
    let max = -1;
    for (const id of hf.get_vocab(true).values()) if (id > max) max = id;
    this.vocabSize = max + 1;
    const specialIds: Record<string, number> = {};
    for (const t of added) if (t.special) specialIds[t.content] = t.id;
    this.specialIds = Object.freeze(specialIds);

    const named = (key: string): number | undefined => {
      const v = config[key];
      return typeof v === 'string' ? hf.token_to_id(v) : undefined;
    };
    const firstKnown = (...names: string[]): number | undefined => {
      for (const n of names) {
        const id = hf.token_to_id(n);
        if (id !== undefined) return id;
      }
      return undefined;
    };
    const eos = named('eos_token') ?? firstKnown('<|endoftext|>', '</s>', '<|end_of_text|>', '<eos>');
    if (eos === undefined) throw new TokenizerError('no_eos_token', 'the tokenizer names no EOS token and has none of the usual ones', config.eos_token);
    this.eosId = eos;
    this.bosId = named('bos_token') ?? firstKnown('<|endoftext|>', '<s>', '<|begin_of_text|>', '<bos>') ?? eos;
    this.padId = named('pad_token') ?? firstKnown('<pad>', '<|pad|>') ?? eos;
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    const hf = (opts.parseSpecial ?? true) ? this.hf : this.literalTokenizer();
    return hf.encode(text, { add_special_tokens: opts.addSpecialTokens ?? false }).ids;
  }

  private literal: HfTokenizer | undefined;

  /**
   * A twin that knows no added tokens, so nothing in the text is matched as one. Added tokens go
   * into its model vocabulary instead, so that a post-processor that adds them still finds their ids.
   */
  private literalTokenizer(): HfTokenizer {
    if (!this.literal) {
      const model = this.json.model as Record<string, unknown>;
      const vocab = model.vocab;
      const withAdded =
        vocab && typeof vocab === 'object' && !Array.isArray(vocab)
          ? { ...model, vocab: { ...(vocab as Record<string, number>), ...Object.fromEntries(this.added.map((t) => [t.content, t.id])) } }
          : model;
      this.literal = new HfTokenizer({ ...this.json, model: withAdded, added_tokens: [] }, this.config);
    }
    return this.literal;
  }

  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    if (ids.length === 0) return '';
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw new TokenizerError('unknown_id', `token id ${id} is outside the vocabulary of ${this.vocabSize}`, id);
      }
    }
    return this.hf.decode([...ids], { skip_special_tokens: opts.skipSpecial ?? false, clean_up_tokenization_spaces: false });
  }

  tokenToId(token: string): number | undefined {
    return this.hf.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.hf.id_to_token(id);
  }

  private pieceKind: PieceKind | undefined;

  tokenBytes(id: number): Uint8Array | null {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) return null;
    const added = this.added.find((t) => t.id === id);
    if (added) return utf8(added.content);
    const piece = this.hf.id_to_token(id);
    if (piece === undefined) return null;
    this.pieceKind ??= pieceKindOf(this.json.decoder);
    if (this.pieceKind === 'byte_level') return byteLevelBytes(piece);
    if (this.pieceKind === 'metaspace') {
      const byte = /^<0x([0-9A-Fa-f]{2})>$/.exec(piece);
      return byte ? Uint8Array.of(parseInt(byte[1], 16)) : utf8(piece.replaceAll('\u2581', ' '));
    }
    const text = this.decode([id]);
    return text.includes('\uFFFD') ? null : utf8(text);
  }
}

/** How a tokenizer.json's vocabulary spells bytes: GPT-2's byte-level alphabet, SentencePiece's ▁ and <0xNN>, or unknown. */
type PieceKind = 'byte_level' | 'metaspace' | 'other';

function pieceKindOf(decoder: unknown): PieceKind {
  const types: string[] = [];
  const walk = (d: unknown): void => {
    if (!d || typeof d !== 'object') return;
    const o = d as { type?: unknown; decoders?: unknown; pattern?: { String?: unknown } };
    if (typeof o.type === 'string') types.push(o.type === 'Replace' && o.pattern?.String === '\u2581' ? 'ReplaceMetaspace' : o.type);
    if (Array.isArray(o.decoders)) o.decoders.forEach(walk);
  };
  walk(decoder);
  if (types.includes('ByteLevel')) return 'byte_level';
  if (types.includes('Metaspace') || types.includes('ReplaceMetaspace')) return 'metaspace';
  return 'other';
}

const utf8 = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, 'utf8'));

/**
 * GPT-2's byte-level alphabet read back: printable Latin-1 bytes stand for themselves, the other 68
 * bytes for the code points from 256 on, in byte order. A character outside it: null.
 */
let byteOfChar: Map<number, number> | undefined;
function byteLevelBytes(piece: string): Uint8Array | null {
  if (!byteOfChar) {
    byteOfChar = new Map();
    const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    let next = 256;
    for (let b = 0; b < 256; b++) byteOfChar.set(printable(b) ? b : next++, b);
  }
  const out: number[] = [];
  for (const ch of piece) {
    const b = byteOfChar.get(ch.codePointAt(0)!);
    if (b === undefined) return null;
    out.push(b);
  }
  return Uint8Array.from(out);
}

export interface StreamDecoder {
  /** Adds one generated id; returns the text it completes ('' while a character is still partial). */
  push(id: number): string;
  /** Returns whatever is left (a trailing partial character becomes U+FFFD). */
  flush(): string;
}

/**
 * Incremental decoding for token streaming. Decodes a short window (the last emitted token plus the
 * pending ones) and emits the new text only when it does not end in U+FFFD, i.e. when the pending
 * bytes form whole UTF-8 characters. Keeping one emitted token as prefix lets decoders that treat the
 * first token specially (Llama's leading-space strip) produce the right spacing. Works for any
 * tokenizer, byte-level or byte-fallback.
 */
export function createStreamDecoder(tokenizer: Tokenizer, opts: DecodeOptions = {}): StreamDecoder {
  const ids: number[] = [];
  let prefixOffset = 0;
  let readOffset = 0;
  const pending = (): { prefix: string; text: string } => ({
    prefix: readOffset > prefixOffset ? tokenizer.decode(ids.slice(prefixOffset, readOffset), opts) : '',
    text: tokenizer.decode(ids.slice(prefixOffset), opts),
  });
  return {
    push(id: number): string {
      ids.push(id);
      const { prefix, text } = pending();
      if (text.length > prefix.length && !text.endsWith('\uFFFD')) {
        prefixOffset = readOffset;
        readOffset = ids.length;
        return text.slice(prefix.length);
      }
      return '';
    },
    flush(): string {
      if (readOffset === ids.length) return '';
      const { prefix, text } = pending();
      prefixOffset = readOffset = ids.length;
      return text.slice(prefix.length);
    },
  };
}
