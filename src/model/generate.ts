/**
 * Generation over a batch of requests: one batched prefill of all prompts (different lengths), then
 * KV-cache decode steps of every unfinished row together, each row with its own positions, mask,
 * sampling options, seed and stop conditions. Finished rows leave the batch between steps. Tokens
 * are streamed as they come (async iterator, or a callback with `generate`).
 */
import type { Tokenizer } from './tokenizer.js';
import { KvBatch } from './kv.js';
import type { AdapterLike, LoraInput, SlotPool } from './lora-feeds.js';
import type { Model } from './model.js';
import { type GenerateRequest, type GenerateResult, GenerateError, Sequence, type TokenEvent } from './sequence.js';

export type { FinishReason, GenerateRequest, GenerateResult, TokenEvent } from './sequence.js';
export { GenerateError, Sequence } from './sequence.js';

export interface GenerateOptions {
  /** Needed for text, streaming text and stop strings; without it only ids come back. */
  tokenizer?: Tokenizer;
  /** One adapter for every row, or a slot pool (each request's `slot`, default 0). */
  lora?: { adapter: AdapterLike } | { pool: SlotPool };
  /** Stop early: unfinished rows end with finishReason 'cancelled'. */
  signal?: AbortSignal;
  /** KV capacity bucket (positions). */
  bucket?: number;
}

export type GenerateEvent = ({ type: 'token' } & TokenEvent) | { type: 'done'; result: GenerateResult };

function loraFor(opts: GenerateOptions, rows: Sequence[]): LoraInput | undefined {
  const l = opts.lora;
  if (!l) return undefined;
  if ('adapter' in l) return l;
  return { pool: l.pool, slots: rows.map((s) => s.request.slot ?? 0) };
}

/**
 * Generate for every request, yielding each token as it is chosen and each result as its row ends.
 * Rows are independent: a request gets the same tokens alone or batched (same seed).
 */
export async function* generateStream(model: Model, requests: readonly GenerateRequest[], opts: GenerateOptions = {}): AsyncGenerator<GenerateEvent> {
  if (requests.length === 0) return;
  const cfg = model.config;
  const eosIds = [cfg.eosId, ...(opts.tokenizer ? [opts.tokenizer.eosId] : [])];
  const seqs = requests.map((r, i) => new Sequence(i, r, { tokenizer: opts.tokenizer, eosIds, vocabSize: cfg.vocabSize }));
  for (const s of seqs) {
    if (s.request.prompt.length >= cfg.maxPositions) {
      throw new GenerateError('prompt_too_long', `request ${s.index}: prompt of ${s.request.prompt.length} tokens leaves no room in ${cfg.maxPositions} positions`, { index: s.index });
    }
  }
  const cancelled = (): boolean => opts.signal?.aborted ?? false;

  const pre = await model.prefill(
    seqs.map((s) => s.request.prompt),
    loraFor(opts, seqs),
  );
  const batch = new KvBatch(model.kvShape, { bucket: opts.bucket, maxLength: cfg.maxPositions });
  const live = new Map<number, Sequence>();
  for (const s of seqs) {
    const e = s.next(pre.logits[s.index]);
    yield { type: 'token', ...e };
    if (s.finished) yield { type: 'done', result: s.result() };
    else {
      batch.add(s.index, pre.kv[s.index]);
      live.set(s.index, s);
    }
  }
  while (live.size > 0) {
    if (cancelled()) {
      for (const s of live.values()) {
        const text = s.finish('cancelled');
        if (text) yield { type: 'token', index: s.index, token: null, text };
        yield { type: 'done', result: s.result() };
      }
      return;
    }
    // A row whose next token would sit past the last position ends here.
    for (const id of [...batch.rows]) {
      if (batch.length(id) >= cfg.maxPositions) {
        const s = live.get(id as number)!;
        const text = s.finish('length');
        if (text) yield { type: 'token', index: s.index, token: null, text };
        yield { type: 'done', result: s.result() };
        batch.remove(id);
        live.delete(id as number);
      }
    }
    if (live.size === 0) break;
    const rows = batch.rows.map((id) => live.get(id as number)!);
    const logits = await model.decodeStep(
      batch,
      rows.map((s) => s.tokens[s.tokens.length - 1]),
      loraFor(opts, rows),
    );
    for (let i = 0; i < rows.length; i++) {
      const s = rows[i];
      const e = s.next(logits[i]);
      yield { type: 'token', ...e };
      if (s.finished) {
        yield { type: 'done', result: s.result() };
        batch.remove(s.index);
        live.delete(s.index);
      }
    }
  }
}

/** Generate for every request; `onToken` sees each token as it comes. Results in request order. */
export async function generate(
  model: Model,
  requests: readonly GenerateRequest[],
  opts: GenerateOptions & { onToken?: (e: TokenEvent) => void } = {},
): Promise<GenerateResult[]> {
  const results: GenerateResult[] = [];
  for await (const e of generateStream(model, requests, opts)) {
    if (e.type === 'token') opts.onToken?.({ index: e.index, token: e.token, text: e.text });
    else results[e.result.index] = e.result;
  }
  return results;
}
