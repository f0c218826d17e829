/**
 * The serving engine's request, result and event shapes. They mirror the HTTP layer's GenerateService
 * contract field for field (src/http/services.ts checks the engine against it where server.ts wires
 * it in), without serve importing anything from http.
 */

export type RequestedMode = 'auto' | 'injected' | 'memory' | 'vanilla';
export type ServedMode = 'injected' | 'memory' | 'vanilla';

/** Why a request was served with less than it asked for (or than `auto` would have given it). */
export type FallbackReason =
  /** injected asked for, the user has no active adapter version */
  | 'no_adapter'
  /** the adapter file failed its checksum or validation: quarantined, the version deactivated */
  | 'adapter_corrupt'
  /** the adapter's files are gone: the version is marked missing and deactivated */
  | 'adapter_missing'
  /** the adapter could not be loaded now (I/O error, another base model): nothing changed on disk */
  | 'adapter_unavailable'
  /** memory asked for (or fallen back to), nothing in the user's history matched */
  | 'no_memory';

export interface Fallback {
  /** The mode that could not be served. */
  from: 'injected' | 'memory';
  reason: FallbackReason;
}

export interface Personalization {
  mode: ServedMode;
  /** The adapter version used (null unless injected). */
  adapterVersion: number | null;
  /** The request named the version (adapterVersion): served whether or not it is the active one. */
  pinned?: true;
  /** History items prepended (memory mode). */
  memoryItems?: number;
  fallback?: Fallback;
}

export interface ServeMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

/**
 * Tool calls under tool_choice auto: the reply is free text, or, when it opens with `{` (or with
 * `several`, `[` then `{`), one document of `schema` (a call, or an array of calls) and ends when
 * it closes. With `orFormat` (beside a JSON schema response format) the reply is instead one document
 * of it: calls, or a document of the format. A schema that cannot guide a reply is refused
 * (unsupported_schema) when `strict` (a tool asked for strict adherence), and otherwise leaves the
 * reply to the request's own guide, or unguided.
 */
export interface ToolCallGuide {
  schema: Record<string, unknown>;
  several: boolean;
  strict: boolean;
  orFormat?: Record<string, unknown>;
}

export interface ServeRequest {
  userId: string;
  messages?: ServeMessage[];
  /** The last message, the assistant's, is left open and the reply continues it (vLLM's continue_final_message). */
  continueFinalMessage?: boolean;
  /** A raw prompt: text (after BOS where the chat template has one), or token ids fed as they are (POST /tokenize's). */
  prompt?: string | number[];
  maxTokens: number;
  /** End tokens cannot end the reply before this many tokens, nor stop strings in their text (vLLM's min_tokens). */
  minTokens?: number;
  /** End tokens never end the reply: it runs to maxTokens unless a stop string ends it (for load tests; vLLM's ignore_eos). */
  ignoreEos?: boolean;
  temperature: number;
  topP: number;
  topK?: number;
  /** Keep the tokens at least this times as likely as the most likely one (vLLM's min_p); 0 or absent: all. */
  minP?: number;
  repetitionPenalty?: number;
  /** Minus count × this on each token the reply has generated count times (OpenAI's frequency_penalty). */
  frequencyPenalty?: number;
  /** Minus this on each token the reply has generated at all (OpenAI's presence_penalty). */
  presencePenalty?: number;
  /** Added to the logits of token ids (keys, decimal strings) before sampling (OpenAI's logit_bias). */
  logitBias?: Record<string, number>;
  stop: string[];
  /** Token ids that end the reply besides EOS and the chat template's (vLLM's stop_token_ids); held back before minTokens. */
  stopTokenIds?: number[];
  /** The request's stop strings stay at the end of the reply when they end it (vLLM's include_stop_str_in_output); the chat template's never show. */
  includeStopStrInOutput?: boolean;
  /** Only these tokens may be drawn (vLLM's allowed_token_ids): end tokens only if listed; with a guide, those of both. */
  allowedTokenIds?: number[];
  /** Words never written (vLLM's bad_words): their token sequences, as written and after a space, are held back where they would complete. */
  badWords?: string[];
  /**
   * The prompt is read as its last this many tokens (vLLM's truncate_prompt_tokens; -1: the context
   * window less one token); memory is added only as far as the prompt with it stays within them.
   */
  truncatePromptTokens?: number;
  /** Which end truncatePromptTokens keeps (vLLM's truncation_side): left (the default) cuts the start and keeps the last k; right keeps the first k. */
  truncationSide?: TruncationSide;
  /**
   * json_object: the reply is guided to one JSON object and ends when it closes (OpenAI's JSON mode);
   * json_schema: to one document of the schema (OpenAI's structured outputs, vLLM's guided_json).
   */
  responseFormat?: { type: 'text' | 'json_object' } | { type: 'json_schema'; jsonSchema: { name: string; schema: Record<string, unknown> } };
  /** The reply is guided to one of these strings and ends when it is whole (vLLM's guided_choice); not with json_object. */
  guidedChoice?: string[];
  /** The reply is guided to match this regular expression whole (vLLM's guided_regex); one guide per request. */
  guidedRegex?: string;
  /** The reply is guided to a string of this GBNF grammar's rule root (vLLM's guided_grammar); one guide per request. */
  guidedGrammar?: string;
  /** Set by the chat route, never by a /v1/generate body: the calls a free reply may open (tools under tool_choice auto). */
  toolCalls?: ToolCallGuide;
  seed?: number;
  stream: boolean;
  mode: RequestedMode;
  /**
   * Serve with this adapter version of the user, active or not (an upload kept inactive tried before
   * it is activated, an older version before a rollback, two versions compared): no fallback; an
   * unknown version, one not ready, or one whose files fail is refused. Only with mode auto or injected.
   */
  adapterVersion?: number;
  /** Report each generated token's log-probability (see TokenLogprob). */
  logprobs?: boolean;
  /** With logprobs: this many most likely alternatives per token (0-20). */
  topLogprobs?: number;
  /** Report the token ids: the prompt's as the model read them and the reply's (vLLM's return_token_ids). */
  returnTokenIds?: boolean;
  /** A control token drawn mid-reply leaves no text (vLLM's skip_special_tokens; the OpenAI routes' default); absent: its text is kept. */
  skipSpecialTokens?: boolean;
}

/** A token's log-probability under the model that served the request (its adapter included). */
export interface TokenAlternative {
  /** The token's text: its bytes read as UTF-8 (U+FFFD where it holds part of a character). */
  token: string;
  tokenId: number;
  /** ln p(token), before logit bias, penalties, a guide's mask, temperature, top-k and top-p; at least -9999. */
  logprob: number;
  /** The token's UTF-8 bytes (null where the tokenizer cannot say). */
  bytes: number[] | null;
}

export interface TokenLogprob extends TokenAlternative {
  /** The token's place among all tokens at this position, most likely first (1: the most likely; ties in id order, as `top` lists them). */
  rank: number;
  /** The most likely tokens at this position, most likely first (topLogprobs of them). */
  top: TokenAlternative[];
}

export type ServeFinishReason = 'stop' | 'length' | 'cancelled';

export interface ServeResult {
  id: string;
  userId: string;
  text: string;
  finishReason: ServeFinishReason;
  /** cachedTokens: prompt tokens whose keys and values came from the prefix cache (not run again). */
  usage: { promptTokens: number; completionTokens: number; cachedTokens: number };
  timings: { queueMs: number; prefillMs: number; decodeMs: number; totalMs: number };
  personalization: Personalization;
  /** With logprobs: one entry per completion token, a final end or stop token (not in `text`) included. */
  logprobs?: TokenLogprob[];
  /** With returnTokenIds: the reply's token ids, one per completion token (a final end or stop token included). */
  tokenIds?: number[];
  /** With returnTokenIds: the prompt's token ids as the model read them (memory included), one per prompt token. */
  promptTokenIds?: number[];
}

/**
 * Scoring: how likely `text` is as the continuation of a context (`messages`, rendered with the chat
 * template and ending with the assistant's opening; or a raw `prompt`; or neither: the text from the
 * start) under the user's model, personalised as `mode` asks (memory retrieved by the context, or
 * with no context by the text). The text is tokenized on its own.
 */
export interface ScoreRequest {
  userId: string;
  messages?: ServeMessage[];
  /** A raw prompt as context: text, or token ids fed as they are. */
  prompt?: string | number[];
  /** What is scored: text (tokenized on its own), or token ids. */
  text: string | number[];
  mode: RequestedMode;
  /** Score under this adapter version of the user, active or not (as ServeRequest's). */
  adapterVersion?: number;
  /** This many most likely alternatives per token (0-20; default 0). */
  topLogprobs?: number;
  /** Score the text under the base model too (no adapter, no memory, the request's own context). */
  compare?: boolean;
}

/** A sequence's log-likelihood: the sum over its tokens, their mean, and the perplexity exp(-mean). */
export interface Likelihood {
  logprob: number;
  meanLogprob: number;
  perplexity: number;
}

export interface ScoreResult extends Likelihood {
  id: string;
  userId: string;
  /** Each token of the text with its log-probability (and alternatives) under the served model. */
  tokens: TokenLogprob[];
  /**
   * Tokens before the text and of the text; with compare, through an adapter or memory,
   * `baseContextTokens`: those before the same text in the base model's own pass (metered as a
   * second pass: its context as prompt tokens, the text scored again).
   */
  usage: { contextTokens: number; scoredTokens: number; baseContextTokens?: number };
  personalization: Personalization;
  /** With compare: the base model's figures for the same tokens (`logprobs` per token, in order). */
  base?: Likelihood & { logprobs: number[] };
  timings: { queueMs: number; scoreMs: number; totalMs: number };
}

/**
 * A token event: the text it releases and, with logprobs or returnTokenIds, the token chosen at this
 * step (text may be '' while held back); with returnTokenIds the first also has the prompt's ids.
 */
export type ServeEvent = { type: 'token'; text: string; logprobs?: TokenLogprob[]; tokenIds?: number[]; promptTokenIds?: number[] } | { type: 'done'; result: ServeResult };

/** Structured logging, as the server's logger provides it. */
export interface ServeLogger {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

/** The generation queue and batch as operators see them (GET /v1/admin/queue). */
export interface QueueReport {
  scheduling: 'fair' | 'fifo';
  maxBatch: number;
  maxQueue: number;
  maxQueuePerUser: number;
  /** Requests holding a batch row (being prefilled or decoding), longest running first. */
  rows: Array<{
    id: string;
    userId: string;
    state: 'prefill' | 'decode';
    mode: ServedMode;
    adapterVersion: number | null;
    /** The request named its adapter version (adapterVersion), active or not. */
    pinned?: true;
    promptTokens: number;
    /** Prompt tokens read so far (from the prefix cache or computed): all of them once it decodes; a long prompt read a chunk at a time shows its progress. */
    promptTokensRead: number;
    generatedTokens: number;
    runningMs: number;
  }>;
  /** Requests waiting for a row. */
  waiting: number;
  /** Requests waiting for their new guide (a JSON schema, pattern, grammar, tools' calls) to compile on the guide-compile thread before they queue (at most maxQueue). */
  compiling: number;
  /** Users with requests waiting or running, most waiting first (then most rows, then longest wait); at most the limit asked. */
  users: Array<{ userId: string; rows: number; waiting: number; oldestWaitMs: number | null }>;
  /** Users with requests waiting or running, listed or not. */
  usersTotal: number;
}

/** POST /tokenize: a raw prompt or messages as the token ids the model is fed (memory aside). */
export interface TokenizeRequest {
  /** A text, or token ids (taken as they are; /v1/completions' prompts of ids). */
  prompt?: string | number[];
  messages?: ServeMessage[];
  /** Raw prompt: BOS first where the chat template uses one, as /v1/generate feeds it (default true). */
  addSpecialTokens?: boolean;
  /** Messages: end with the assistant's opening, where the reply starts (default true). */
  addGenerationPrompt?: boolean;
  /** Messages: leave the last one, the assistant's, open (then addGenerationPrompt must not be true). */
  continueFinalMessage?: boolean;
  /** Each token's text as well. */
  returnTokenStrings?: boolean;
  /** The ids cut to k, as a generation with truncatePromptTokens k (and truncationSide) reads its prompt (-1: the window less one). */
  truncatePromptTokens?: number;
  truncationSide?: TruncationSide;
}

/** The end of a prompt truncatePromptTokens keeps: left cuts the start (the last k kept), right cuts the end (the first k kept). */
export type TruncationSide = 'left' | 'right';

export interface TokenizeResult {
  tokens: number[];
  count: number;
  /** The model's context window, prompt and reply together. */
  maxModelLen: number;
  /** Each token's text (its bytes read as UTF-8), when asked for. */
  tokenStrings: string[] | null;
}
