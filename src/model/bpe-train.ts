/**
 * Training a byte-level BPE tokenizer (GPT-2 style) and writing it as a Hugging Face tokenizer.json.
 *
 * Byte level: text is UTF-8 bytes, each byte shown as one printable character (GPT-2's
 * bytes-to-unicode table), and all 256 bytes are in the vocabulary, so no input is ever unknown.
 * Text is first cut at special tokens (they never take part in merges), then pre-tokenised with
 * GPT-2's regex; merges never cross a pre-token.
 *
 * Training counts each distinct pre-token once with its frequency, keeps the count of every adjacent
 * symbol pair and, per pair, the words that hold it; a merge only revisits the words holding the
 * merged pair. The next merge is the most frequent pair; ties go to the pair with the smaller
 * (left id, right id), so the result depends only on the texts and the options. A max-heap holds
 * candidate pairs with counts that may be stale (counts only fall, except for pairs with the new
 * token, which are pushed fresh), so a popped entry is checked and re-pushed when it was stale.
 *
 * Vocabulary layout: special tokens first (ids 0..s-1), then the 256 bytes in byte order, then one
 * token per merge in merge order. Training stops at the target size or when the best pair occurs
 * fewer than `minFrequency` times (then the vocabulary is smaller than asked).
 *
 * `encodeBpe`/`decodeBpe` are a plain reference implementation (lowest-rank pair first, all its
 * occurrences left to right), independent of the library that loads the file at run time; tests
 * compare the two.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MEMLORA_SPECIAL_TOKENS } from './chat-format.js';

/** GPT-2's pre-tokenisation pattern, as Hugging Face's ByteLevel pre-tokenizer applies it. */
export const GPT2_PRETOKENIZE_PATTERN = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** GPT-2's bytes-to-unicode table: printable bytes map to themselves, the rest to U+0100 onwards. */
export const BYTE_TO_UNICODE: readonly string[] = (() => {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const table: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) table[b] = String.fromCharCode(printable(b) ? b : 256 + extra++);
  return table;
})();

export const UNICODE_TO_BYTE: ReadonlyMap<string, number> = new Map(BYTE_TO_UNICODE.map((c, b) => [c, b]));

export interface TrainedBpe {
  /** Token strings by id (byte-level characters for ordinary tokens, content for specials). */
  vocab: string[];
  /** Merges in rank order; merge i creates token id `specialTokens.length + 256 + i`. */
  merges: [string, string][];
  specialTokens: string[];
}

export interface BpeProgress {
  phase: 'count' | 'merge' | 'done';
  done: number;
  total: number;
}

export interface TrainBpeOptions {
  /** Target vocabulary size, special tokens included. Default 2048. */
  vocabSize?: number;
  /** Special tokens, in id order. Default: `<|endoftext|>` (id 0), `<|system|>`, `<|user|>`, `<|assistant|>`, `<|end|>`. */
  specialTokens?: readonly string[];
  /** A pair seen fewer times than this is never merged. Default 2. */
  minFrequency?: number;
  onProgress?: (p: BpeProgress) => void;
}

export class BpeError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly value?: unknown,
  ) {
    super(message);
    this.name = 'BpeError';
  }
}

/** Splits text at special-token occurrences (longest first at a position). */
export function splitOnSpecials(text: string, specials: readonly string[]): { text: string; special: boolean }[] {
  if (specials.length === 0) return text.length > 0 ? [{ text, special: false }] : [];
  const sorted = [...specials].sort((a, b) => b.length - a.length);
  const pattern = new RegExp(sorted.map(escapeRegExp).join('|'), 'g');
  const out: { text: string; special: boolean }[] = [];
  let last = 0;
  for (const m of text.matchAll(pattern)) {
    if (m.index > last) out.push({ text: text.slice(last, m.index), special: false });
    out.push({ text: m[0], special: true });
    last = m.index + m[0].length;
  }
  if (last < text.length) out.push({ text: text.slice(last), special: false });
  return out;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** GPT-2 pre-tokens of a text without special tokens. */
export function pretokenize(text: string): string[] {
  return text.match(GPT2_PRETOKENIZE_PATTERN) ?? [];
}

const utf8 = new TextEncoder();

/** A pre-token as byte-level characters. */
export function toByteLevel(piece: string): string {
  let s = '';
  for (const b of utf8.encode(piece)) s += BYTE_TO_UNICODE[b];
  return s;
}

const PAIR_SHIFT = 65536;

/** Trains the merges on `texts`; see the file comment for the rules. */
export function trainBpe(texts: Iterable<string>, opts: TrainBpeOptions = {}): TrainedBpe {
  const specialTokens = [...(opts.specialTokens ?? MEMLORA_SPECIAL_TOKENS)];
  const vocabSize = opts.vocabSize ?? 2048;
  const minFrequency = Math.max(1, opts.minFrequency ?? 2);
  const base = specialTokens.length + 256;
  if (!Number.isInteger(vocabSize) || vocabSize < base || vocabSize > PAIR_SHIFT) {
    throw new BpeError('bad_vocab_size', `vocabSize must be an integer in [${base}, ${PAIR_SHIFT}] (specials + 256 bytes at least)`, vocabSize);
  }
  if (new Set(specialTokens).size !== specialTokens.length || specialTokens.some((s) => s.length === 0)) {
    throw new BpeError('bad_special_tokens', 'special tokens must be distinct non-empty strings', specialTokens);
  }

  // Word frequencies over byte-level pre-tokens.
  const wordFreq = new Map<string, number>();
  let nTexts = 0;
  for (const text of texts) {
    for (const part of splitOnSpecials(text, specialTokens)) {
      if (part.special) continue;
      for (const piece of pretokenize(part.text)) {
        const w = toByteLevel(piece);
        wordFreq.set(w, (wordFreq.get(w) ?? 0) + 1);
      }
    }
    if (++nTexts % 1000 === 0) opts.onProgress?.({ phase: 'count', done: nTexts, total: 0 });
  }

  const vocab: string[] = [...specialTokens, ...BYTE_TO_UNICODE];
  const merges: [string, string][] = [];
  const words: number[][] = [];
  const freqs: number[] = [];
  // Sorted so that the word order (and with it nothing observable, but the run) is reproducible.
  for (const [w, f] of [...wordFreq].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))) {
    const syms = new Array<number>(w.length);
    for (let i = 0; i < w.length; i++) syms[i] = specialTokens.length + UNICODE_TO_BYTE.get(w[i])!;
    words.push(syms);
    freqs.push(f);
  }

  const pairCount = new Map<number, number>();
  const pairWords = new Map<number, Set<number>>();
  const addPair = (key: number, f: number, w: number) => {
    pairCount.set(key, (pairCount.get(key) ?? 0) + f);
    let set = pairWords.get(key);
    if (!set) pairWords.set(key, (set = new Set()));
    set.add(w);
  };
  const removePair = (key: number, f: number) => {
    const c = (pairCount.get(key) ?? 0) - f;
    if (c > 0) pairCount.set(key, c);
    else pairCount.delete(key);
  };
  for (let w = 0; w < words.length; w++) {
    const s = words[w];
    for (let i = 0; i + 1 < s.length; i++) addPair(s[i] * PAIR_SHIFT + s[i + 1], freqs[w], w);
  }

  const heap = new PairHeap();
  for (const [key, count] of pairCount) heap.push(count, key);

  const total = vocabSize - vocab.length;
  while (vocab.length < vocabSize) {
    const top = heap.pop();
    if (!top) break;
    const current = pairCount.get(top.key) ?? 0;
    if (current !== top.count) {
      if (current > 0) heap.push(current, top.key);
      continue;
    }
    if (current < minFrequency) break;

    const a = Math.floor(top.key / PAIR_SHIFT);
    const b = top.key % PAIR_SHIFT;
    const id = vocab.length;
    vocab.push(vocab[a] + vocab[b]);
    merges.push([vocab[a], vocab[b]]);

    const fresh = new Set<number>();
    for (const w of pairWords.get(top.key) ?? []) {
      const s = words[w];
      const f = freqs[w];
      if (!containsPair(s, a, b)) continue;
      for (let i = 0; i + 1 < s.length; i++) removePair(s[i] * PAIR_SHIFT + s[i + 1], f);
      const merged: number[] = [];
      for (let i = 0; i < s.length; i++) {
        if (i + 1 < s.length && s[i] === a && s[i + 1] === b) {
          merged.push(id);
          i++;
        } else merged.push(s[i]);
      }
      words[w] = merged;
      for (let i = 0; i + 1 < merged.length; i++) {
        const key = merged[i] * PAIR_SHIFT + merged[i + 1];
        addPair(key, f, w);
        if (merged[i] === id || merged[i + 1] === id) fresh.add(key);
      }
    }
    pairWords.delete(top.key);
    for (const key of fresh) {
      const c = pairCount.get(key);
      if (c !== undefined) heap.push(c, key);
    }
    if (merges.length % 100 === 0) opts.onProgress?.({ phase: 'merge', done: merges.length, total });
  }
  opts.onProgress?.({ phase: 'done', done: merges.length, total });
  return { vocab, merges, specialTokens };
}

function containsPair(s: number[], a: number, b: number): boolean {
  for (let i = 0; i + 1 < s.length; i++) if (s[i] === a && s[i + 1] === b) return true;
  return false;
}

/** Max-heap on (count desc, key asc): the key order is the deterministic tie-break. */
class PairHeap {
  private counts: number[] = [];
  private keys: number[] = [];

  push(count: number, key: number): void {
    this.counts.push(count);
    this.keys.push(key);
    let i = this.counts.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.before(i, p)) break;
      this.swap(i, p);
      i = p;
    }
  }

  pop(): { count: number; key: number } | undefined {
    const n = this.counts.length;
    if (n === 0) return undefined;
    const out = { count: this.counts[0], key: this.keys[0] };
    this.swap(0, n - 1);
    this.counts.pop();
    this.keys.pop();
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let best = i;
      if (l < this.counts.length && this.before(l, best)) best = l;
      if (r < this.counts.length && this.before(r, best)) best = r;
      if (best === i) break;
      this.swap(i, best);
      i = best;
    }
    return out;
  }

  private before(i: number, j: number): boolean {
    return this.counts[i] > this.counts[j] || (this.counts[i] === this.counts[j] && this.keys[i] < this.keys[j]);
  }

  private swap(i: number, j: number): void {
    [this.counts[i], this.counts[j]] = [this.counts[j], this.counts[i]];
    [this.keys[i], this.keys[j]] = [this.keys[j], this.keys[i]];
  }
}

/** Reference encoder state for one trained tokenizer. */
interface BpeIndex {
  rank: Map<number, number>;
  base: number;
  specialIds: Map<string, number>;
  cache: Map<string, number[]>;
}

const indexes = new WeakMap<TrainedBpe, BpeIndex>();

function indexOf(bpe: TrainedBpe): BpeIndex {
  let idx = indexes.get(bpe);
  if (!idx) {
    const base = bpe.specialTokens.length + 256;
    const ids = new Map(bpe.vocab.map((t, i) => [t, i]));
    const rank = new Map<number, number>();
    bpe.merges.forEach(([l, r], i) => rank.set(ids.get(l)! * PAIR_SHIFT + ids.get(r)!, i));
    idx = { rank, base, specialIds: new Map(bpe.specialTokens.map((s, i) => [s, i])), cache: new Map() };
    indexes.set(bpe, idx);
  }
  return idx;
}

/** Reference encoding: special tokens as their ids, everything else by the merges in rank order. */
export function encodeBpe(bpe: TrainedBpe, text: string): number[] {
  const idx = indexOf(bpe);
  const out: number[] = [];
  for (const part of splitOnSpecials(text, bpe.specialTokens)) {
    if (part.special) {
      out.push(idx.specialIds.get(part.text)!);
      continue;
    }
    for (const piece of pretokenize(part.text)) {
      let ids = idx.cache.get(piece);
      if (!ids) {
        ids = encodeWord(idx, [...utf8.encode(piece)].map((b) => bpe.specialTokens.length + b));
        if (idx.cache.size < 100_000) idx.cache.set(piece, ids);
      }
      out.push(...ids);
    }
  }
  return out;
}

function encodeWord(idx: BpeIndex, syms: number[]): number[] {
  for (;;) {
    let best = -1;
    let bestRank = Infinity;
    for (let i = 0; i + 1 < syms.length; i++) {
      const r = idx.rank.get(syms[i] * PAIR_SHIFT + syms[i + 1]);
      if (r !== undefined && r < bestRank) {
        bestRank = r;
        best = i;
      }
    }
    if (best < 0) return syms;
    const a = syms[best];
    const b = syms[best + 1];
    const id = idx.base + bestRank;
    const merged: number[] = [];
    for (let i = 0; i < syms.length; i++) {
      if (i + 1 < syms.length && syms[i] === a && syms[i + 1] === b) {
        merged.push(id);
        i++;
      } else merged.push(syms[i]);
    }
    syms = merged;
  }
}

/** Reference decoding: specials as their text, bytes as UTF-8 (invalid sequences become U+FFFD). */
export function decodeBpe(bpe: TrainedBpe, ids: readonly number[]): string {
  const nSpecial = bpe.specialTokens.length;
  const decoder = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });
  let out = '';
  let bytes: number[] = [];
  const flush = () => {
    if (bytes.length > 0) out += decoder.decode(new Uint8Array(bytes));
    bytes = [];
  };
  for (const id of ids) {
    const token = bpe.vocab[id];
    if (token === undefined) throw new BpeError('unknown_id', `token id ${id} is outside the vocabulary of ${bpe.vocab.length}`, id);
    if (id < nSpecial) {
      flush();
      out += token;
    } else for (const ch of token) bytes.push(UNICODE_TO_BYTE.get(ch)!);
  }
  flush();
  return out;
}

/** The Hugging Face tokenizer.json object (tokenizers 0.13+ layout, GPT-2 style components). */
export function toTokenizerJson(bpe: TrainedBpe): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  bpe.vocab.forEach((t, i) => (vocab[t] = i));
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: bpe.specialTokens.map((content, id) => ({
      id,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      // "left right" strings: GPT-2's own format, read by every tokenizers version (no byte-level
      // token contains a space, so the split is unambiguous).
      merges: bpe.merges.map(([l, r]) => `${l} ${r}`),
    },
  };
}

export interface TokenizerConfigOptions {
  modelMaxLength?: number;
  chatTemplate?: string;
}

/** tokenizer_config.json: which special token is BOS/EOS/pad, no clean-up of spaces on decode. */
export function toTokenizerConfigJson(bpe: TrainedBpe, opts: TokenizerConfigOptions = {}): Record<string, unknown> {
  const [first, ...rest] = bpe.specialTokens;
  return {
    tokenizer_class: 'PreTrainedTokenizerFast',
    bos_token: first,
    eos_token: first,
    pad_token: first,
    additional_special_tokens: rest,
    add_prefix_space: false,
    clean_up_tokenization_spaces: false,
    model_max_length: opts.modelMaxLength ?? 1024,
    ...(opts.chatTemplate ? { chat_template: opts.chatTemplate } : {}),
  };
}

/** Writes tokenizer.json and tokenizer_config.json into `dir` (created if missing). */
export function saveTokenizer(dir: string, bpe: TrainedBpe, opts: TokenizerConfigOptions = {}): { tokenizerJson: string; configJson: string } {
  mkdirSync(dir, { recursive: true });
  const tokenizerJson = join(dir, 'tokenizer.json');
  const configJson = join(dir, 'tokenizer_config.json');
  writeFileSync(tokenizerJson, JSON.stringify(toTokenizerJson(bpe), null, 2) + '\n');
  writeFileSync(configJson, JSON.stringify(toTokenizerConfigJson(bpe, opts), null, 2) + '\n');
  return { tokenizerJson, configJson };
}
