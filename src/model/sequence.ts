/**
 * The per-request state of generation, independent of batching: its own seeded generator, the
 * tokens so far, streaming text (whole UTF-8 characters only, stop strings held back and trimmed)
 * and the finish decision. A decode loop, static (generate.ts) or continuous (the serving engine),
 * feeds each row's logits to its Sequence and feeds back the token it returns until it finishes.
 */
import { Rng } from '../util/rng.js';
import { type SamplingOptions, type TokenLogprobs, bannedAfter, checkSampling, countsTokens, sampleToken, tokenLogprobs } from './sampling.js';
import { type Guide, type GuideSpec, createGuide, guideVocabulary } from './guide.js';
import { StopMatcher } from './stop.js';
import { type StreamDecoder, type Tokenizer, createStreamDecoder } from './tokenizer.js';

/** stop: a stop string; eos: an end token; length: maxTokens or the context; cancelled: stopped by the caller. */
export type FinishReason = 'stop' | 'eos' | 'length' | 'cancelled';

export interface GenerateRequest {
  /** Prompt token ids (non-empty; include BOS if the model wants one). */
  prompt: readonly number[];
  /** Most tokens to generate (>= 1). */
  maxTokens: number;
  /**
   * End tokens (EOS and stopTokenIds) cannot be drawn before this many tokens, and stop strings are
   * looked for only from the text of this token on (vLLM's min_tokens; default 0).
   */
  minTokens?: number;
  /**
   * The model's end tokens are never drawn, so only a stop string, one of stopTokenIds or maxTokens ends
   * the reply (load tests; vLLM's ignore_eos).
   */
  ignoreEos?: boolean;
  /** Guide the reply (guide.ts): to JSON, a schema's documents, a pattern or one of given strings, or free text that may open a document; it ends when whole (needs a tokenizer). */
  guide?: GuideSpec;
  sampling?: SamplingOptions;
  /** Seed of this request's generator; the same seed gives the same tokens alone or in any batch. */
  seed?: number;
  /** Stop strings, matched on the decoded text and cut from it (needs a tokenizer). */
  stop?: readonly string[];
  /** Stop strings of `stop` left at the end of the text when they end it (vLLM's include_stop_str_in_output). */
  keepStops?: readonly string[];
  /**
   * Only these tokens may be drawn (vLLM's allowed_token_ids): end tokens only if listed, and then,
   * listed alone, not held back by minTokens or ignoreEos; with a guide, the tokens both allow (none
   * left: the end tokens end the reply, as a guide stuck does).
   */
  allowedTokenIds?: readonly number[];
  /** Tokens that end the sequence besides the model's EOS. */
  stopTokenIds?: readonly number[];
  /** Adapter slot of this row when generating with a slot pool (default 0, the vanilla slot). */
  slot?: number;
  /**
   * Record each chosen token's log-probability under the model (before bias, penalties, temperature, top-k
   * and top-p) with this many most likely alternatives (0 = the chosen token's only); absent = off.
   */
  logprobs?: number;
  /**
   * A control token drawn in the reply (the tokenizer's special tokens, other than the ones that end
   * it) leaves no text, as vLLM's skip_special_tokens (true there by default); absent or false: its
   * text is kept. The tokens around it read as if it were not there.
   */
  skipSpecialTokens?: boolean;
}

export interface TokenEvent {
  /** Index of the request. */
  index: number;
  /** The chosen token; null when the event only releases held-back text at the end. */
  token: number | null;
  /** Newly released text ('' while a character or a possible stop string is incomplete). */
  text: string;
  /** The chosen token's log-probabilities, when the request asked for them. */
  logprobs?: TokenLogprobs;
}

export interface GenerateResult {
  index: number;
  /** Generated ids, including a final EOS or stop token. */
  tokens: number[];
  /** Generated text, without EOS and without the stop string (unless it is one of keepStops). */
  text: string;
  finishReason: FinishReason;
  promptTokens: number;
  completionTokens: number;
  /** One entry per generated token (`tokens`), when the request asked for log-probabilities. */
  logprobs?: TokenLogprobs[];
}

export class GenerateError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = 'GenerateError';
  }
}

export interface SequenceContext {
  tokenizer?: Tokenizer;
  /** The model's EOS (and any other ids that always end a sequence). */
  eosIds: readonly number[];
  vocabSize: number;
}

export class Sequence {
  readonly tokens: number[] = [];
  private reason: FinishReason | null = null;
  private readonly rng: Rng;
  private readonly seen: Set<number>;
  /** How often each token was generated (only when a frequency or presence penalty reads it). */
  private readonly counts: Map<number, number> | undefined;
  private readonly ends: Set<number>;
  /** The model's end tokens only: what ignoreEos holds back. */
  private readonly eos: Set<number>;
  private readonly decoder: StreamDecoder | null;
  /** With skipSpecialTokens: the special tokens, which are not decoded into the text. */
  private readonly silent: ReadonlySet<number> | null;
  private readonly stopper: StopMatcher;
  private readonly guide: Guide | null;
  private released = '';
  private readonly logprobs: TokenLogprobs[] | null;
  /** allowedTokenIds as a mask over the vocabulary, and whether it holds end tokens alone. */
  private readonly allowed: Uint8Array | null;
  private readonly onlyEnds: boolean;

  constructor(
    readonly index: number,
    readonly request: GenerateRequest,
    private readonly ctx: SequenceContext,
  ) {
    const { prompt, maxTokens } = request;
    if (prompt.length === 0) throw new GenerateError('empty_prompt', `request ${index} has an empty prompt`, { index });
    if (!Number.isInteger(maxTokens) || maxTokens < 1) throw new GenerateError('bad_max_tokens', `request ${index}: maxTokens ${maxTokens} must be a positive integer`, { index, maxTokens });
    if (request.stop?.length && !ctx.tokenizer) throw new GenerateError('no_tokenizer', 'stop strings need a tokenizer', { index });
    checkSampling(request.sampling ?? {});
    if (request.minTokens !== undefined && !(Number.isInteger(request.minTokens) && request.minTokens >= 0)) {
      throw new GenerateError('bad_min_tokens', `request ${index}: minTokens ${request.minTokens} must be a whole number >= 0`, { index, minTokens: request.minTokens });
    }
    for (const word of request.sampling?.badWords ?? []) {
      const id = word.find((t) => t >= ctx.vocabSize);
      if (id !== undefined) throw new GenerateError('bad_bad_words', `request ${index}: a bad word's token ${id} is past the vocabulary of ${ctx.vocabSize}`, { index, tokenId: id, vocabSize: ctx.vocabSize });
    }
    for (const id of request.sampling?.logitBias?.keys() ?? []) {
      if (id >= ctx.vocabSize) throw new GenerateError('bad_logit_bias', `request ${index}: logit bias on token ${id}, past the vocabulary of ${ctx.vocabSize}`, { index, tokenId: id, vocabSize: ctx.vocabSize });
    }
    if (request.logprobs !== undefined && !(Number.isInteger(request.logprobs) && request.logprobs >= 0)) {
      throw new GenerateError('bad_logprobs', `request ${index}: logprobs ${request.logprobs} must be a whole number of alternatives >= 0`, { index, logprobs: request.logprobs });
    }
    this.logprobs = request.logprobs === undefined ? null : [];
    this.rng = new Rng(request.seed ?? Math.floor(Math.random() * 2 ** 31));
    this.seen = new Set(prompt);
    this.counts = countsTokens(request.sampling ?? {}) ? new Map() : undefined;
    this.eos = new Set(ctx.eosIds);
    this.ends = new Set([...ctx.eosIds, ...(request.stopTokenIds ?? [])]);
    this.stopper = new StopMatcher(request.stop ?? [], new Set(request.keepStops ?? []));
    this.decoder = ctx.tokenizer ? seededDecoder(ctx.tokenizer, prompt[prompt.length - 1]) : null;
    this.silent = request.skipSpecialTokens && ctx.tokenizer ? new Set(Object.values(ctx.tokenizer.specialIds)) : null;
    if (request.guide && !ctx.tokenizer) throw new GenerateError('no_tokenizer', 'a guided reply needs a tokenizer', { index });
    this.guide = request.guide ? createGuide(request.guide, guideVocabulary(ctx.tokenizer!, ctx.vocabSize), [...this.ends]) : null;
    const ids = request.allowedTokenIds;
    if (ids !== undefined) {
      const bad = ids.find((id) => !(Number.isInteger(id) && id >= 0 && id < ctx.vocabSize));
      if (bad !== undefined || ids.length === 0) throw new GenerateError('bad_allowed_tokens', `request ${index}: allowedTokenIds must be token ids of the vocabulary of ${ctx.vocabSize}`, { index, tokenId: bad });
      this.allowed = new Uint8Array(ctx.vocabSize);
      for (const id of ids) this.allowed[id] = 1;
    } else this.allowed = null;
    this.onlyEnds = ids !== undefined && ids.every((id) => this.ends.has(id));
  }

  get finished(): boolean {
    return this.reason !== null;
  }

  get finishReason(): FinishReason | null {
    return this.reason;
  }

  /** Choose the next token from this row's logits, record it, and decide whether the sequence ends. */
  next(logits: Float32Array): TokenEvent {
    if (this.reason) throw new GenerateError('finished', `request ${this.index} has already finished (${this.reason})`);
    if (logits.length !== this.ctx.vocabSize) throw new GenerateError('bad_logits', `${logits.length} logits for a vocabulary of ${this.ctx.vocabSize}`);
    const sampling = this.request.sampling ?? {};
    const early = this.tokens.length < (this.request.minTokens ?? 0);
    let allow = this.guide?.allowed() ?? undefined;
    if (this.allowed) allow = allow ? allow.map((a, id) => a & this.allowed![id]) : this.allowed;
    // A vocabulary with no token that continues the guided reply (no byte tokens), or none of them
    // allowed: the end tokens end it.
    const stuck = allow !== undefined && !allow.includes(1);
    if (stuck) {
      allow = new Uint8Array(allow!.length);
      for (const e of this.ends) allow[e] = 1;
    }
    let suppress: ReadonlySet<number> | undefined = stuck || this.onlyEnds ? undefined : early ? this.ends : this.request.ignoreEos ? this.eos : undefined;
    const banned = sampling.badWords ? bannedAfter(sampling.badWords, this.tokens) : undefined;
    if (banned) suppress = suppress ? new Set([...suppress, ...banned]) : banned;
    // Bad words that leave none of the allowed tokens: the end tokens end the reply, as a guide stuck.
    if (banned && allow && !allow.some((a, id) => a === 1 && !suppress!.has(id))) {
      allow = new Uint8Array(allow.length);
      for (const e of this.ends) allow[e] = 1;
      suppress = undefined;
    }
    const token = sampleToken(logits, sampling, this.rng, { seen: this.seen, counts: this.counts, suppress, allow });
    const logprobs = this.logprobs ? tokenLogprobs(logits, token, this.request.logprobs!) : undefined;
    if (logprobs) this.logprobs!.push(logprobs);
    this.tokens.push(token);
    this.seen.add(token);
    this.counts?.set(token, (this.counts.get(token) ?? 0) + 1);
    let text = '';
    if (this.ends.has(token)) {
      this.reason = 'eos';
      text = this.release(this.decoder?.flush() ?? '', true);
    } else {
      this.guide?.advance(token);
      const piece = this.silent?.has(token) ? '' : (this.decoder?.push(token) ?? '');
      const r = this.stopper.push(piece, this.armed);
      text = r.text;
      this.released += text;
      if (r.stopped) this.reason = 'stop';
      else if (this.guide?.done) {
        this.reason = 'stop';
        text += this.release(this.decoder?.flush() ?? '', true);
      } else if (this.tokens.length >= this.request.maxTokens) {
        this.reason = 'length';
        text += this.release(this.decoder?.flush() ?? '', true);
      }
    }
    return logprobs ? { index: this.index, token, text, logprobs } : { index: this.index, token, text };
  }

  /** Whether stop strings are looked for: from the minTokens-th token on. */
  private get armed(): boolean {
    return this.tokens.length >= (this.request.minTokens ?? 0);
  }

  private release(piece: string, final: boolean): string {
    const r = this.stopper.push(piece, this.armed);
    let text = r.text;
    if (r.stopped) this.reason = 'stop';
    else if (final) text += this.stopper.flush();
    this.released += text;
    return text;
  }

  /** End the sequence from outside (the context is full, the request was cancelled); returns held-back text. */
  finish(reason: FinishReason): string {
    if (this.reason) return '';
    this.reason = reason;
    const r = this.stopper.push(this.decoder?.flush() ?? '', this.armed);
    const text = r.stopped ? r.text : r.text + this.stopper.flush();
    this.released += text;
    return text;
  }

  result(): GenerateResult {
    if (!this.reason) throw new GenerateError('not_finished', `request ${this.index} has not finished`);
    return {
      index: this.index,
      tokens: [...this.tokens],
      text: this.released,
      finishReason: this.reason,
      promptTokens: this.request.prompt.length,
      completionTokens: this.tokens.length,
      ...(this.logprobs ? { logprobs: [...this.logprobs] } : {}),
    };
  }
}

/**
 * A stream decoder that has already seen the prompt's last token, so that decoders treating a
 * sequence's first token specially (SentencePiece's leading-space strip after BOS) space the reply as
 * a continuation. If that token is an incomplete character on its own, start clean instead.
 */
function seededDecoder(tokenizer: Tokenizer, last: number): StreamDecoder {
  const d = createStreamDecoder(tokenizer);
  const seedText = d.push(last);
  return seedText === '' && tokenizer.decode([last]).endsWith('\uFFFD') ? createStreamDecoder(tokenizer) : d;
}
