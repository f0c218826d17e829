/**
 * A loaded base model: config, the weights as ONNX Runtime tensors (created once and fed to every
 * session, or, with `constWeights`, baked into each inference session as constants), and a Runner
 * whose sessions are cached by graph signature.
 */
import * as ort from 'onnxruntime-node';
import type { CompiledGraph, FeedSources, RunnerOptions } from '../graph/runner.js';
import { Runner, feedSources } from '../graph/runner.js';
import type { HostTensor } from '../graph/types.js';
import { type LmBatch, type Padding, packExtend, packLm, packRows } from './batch.js';
import { type GraphSpec, buildGraph, ROPE_COS, ROPE_SIN, ropeTables, sessionKey } from './builder.js';
import { type ModelConfig, validateConfig } from './config.js';
import { importCheckpoint } from './import.js';
import { type KvBatch, type KvShape, pastFeeds, type RowKv, rowKvFromPresents } from './kv.js';
import { type LoraInput, loraInputFeeds } from './lora-feeds.js';
import { type Weights, validateWeights } from './weights.js';

/**
 * `auto` bakes the weights into the inference graphs for models up to this many bytes of weights:
 * each baked session holds its own copy (serving compiles five, eight with prefix caching), so the bound keeps that to a few
 * hundred MiB.
 */
export const CONST_WEIGHTS_AUTO_MAX_BYTES = 64 * 1024 ** 2;

export type ConstWeights = 'auto' | 'on' | 'off';

/** Whether a `constWeights` setting bakes the weights of a model with `weightBytes` bytes of them. */
export function bakesWeights(mode: ConstWeights, weightBytes: number): boolean {
  return mode === 'on' || (mode === 'auto' && weightBytes <= CONST_WEIGHTS_AUTO_MAX_BYTES);
}

export interface ModelOptions {
  /** Share a runner (and its session cache) with other users; otherwise the model makes its own. */
  runner?: Runner;
  runnerOptions?: RunnerOptions;
  /**
   * Bake the base weights into the inference graphs (prefill, decode) as constants: ONNX Runtime
   * packs each weight matrix once per session instead of at every call (a decode step of the default
   * model 1.4-1.6x faster), and each such session holds its own copy of the weights. Training graphs
   * always take the weights as inputs. Default `off`; `auto`: on for models up to
   * CONST_WEIGHTS_AUTO_MAX_BYTES of weights.
   */
  constWeights?: ConstWeights;
}

export interface PrefillResult {
  /** Per row, the logits [V] after its last token. */
  logits: Float32Array[];
  /** Per row, its cache (its tokens only, no padding). */
  kv: RowKv[];
}

export interface ExtendResult {
  /** Per row, the logits [V] after its last token. */
  logits: Float32Array[];
  /** Per row, the cache of the tokens it ran (its `ids`). */
  added: RowKv[];
}

export class Model {
  readonly config: ModelConfig;
  readonly runner: Runner;
  readonly kvShape: KvShape;
  private readonly base: Record<string, ort.Tensor> = {};
  private readonly ownsRunner: boolean;
  /** Whether inference graphs carry the weights as constants (ModelOptions.constWeights, resolved). */
  readonly constWeights: boolean;

  constructor(config: ModelConfig, weights: Weights, opts: ModelOptions = {}) {
    this.config = validateConfig(config);
    validateWeights(config, weights);
    for (const [name, t] of weights) this.base[name] = new ort.Tensor('float32', t.data as Float32Array, t.dims);
    if (config.family === 'llama') {
      const { cos, sin } = ropeTables(config);
      const dims = [config.maxPositions, config.headDim / 2];
      this.base[ROPE_COS] = new ort.Tensor('float32', cos, dims);
      this.base[ROPE_SIN] = new ort.Tensor('float32', sin, dims);
    }
    const mode = opts.constWeights ?? 'off';
    this.constWeights = bakesWeights(mode, this.weightBytes);
    this.ownsRunner = !opts.runner;
    this.runner = opts.runner ?? new Runner(opts.runnerOptions);
    this.kvShape = { nLayers: config.nLayers, nKvHeads: config.nKvHeads, headDim: config.headDim };
  }

  /** Import a Hugging Face checkpoint folder. */
  static load(dir: string, opts: ModelOptions = {}): Model {
    const { config, weights } = importCheckpoint(dir);
    return new Model(config, weights, opts);
  }

  /** The weight (and RoPE table) feeds every graph of this model takes. */
  baseFeeds(): Readonly<Record<string, ort.Tensor>> {
    return this.base;
  }

  session(spec: GraphSpec): Promise<CompiledGraph> {
    const baked = this.constWeights && spec.kind !== 'train';
    if (!baked) return this.runner.compile(sessionKey(this.config, spec), () => buildGraph(this.config, spec));
    const weights = (name: string): Float32Array | undefined => this.base[name]?.data as Float32Array | undefined;
    return this.runner.compile(sessionKey(this.config, spec, { constWeights: true }), () => buildGraph(this.config, spec, { constWeights: weights }));
  }

  /** Bytes of the base weights (not the RoPE tables). */
  get weightBytes(): number {
    let n = 0;
    for (const [name, t] of Object.entries(this.base)) if (name !== ROPE_COS && name !== ROPE_SIN) n += (t.data as Float32Array).byteLength;
    return n;
  }

  /** Run a graph of this model: the call's own feeds (searched first), then the base weights; fetching only `fetch`. */
  async run(spec: GraphSpec, feeds: FeedSources, fetch?: string[]): Promise<Record<string, HostTensor>> {
    const s = await this.session(spec);
    return s.run([...feedSources(feeds), this.base], fetch);
  }

  private checkTokens(rows: readonly (readonly number[])[]): void {
    const v = this.config.vocabSize;
    for (const row of rows) {
      if (row.length > this.config.maxPositions) {
        throw new ModelError('too_long', `a row of ${row.length} tokens exceeds the model's ${this.config.maxPositions} positions`, { length: row.length });
      }
      for (const t of row) if (!Number.isInteger(t) || t < 0 || t >= v) throw new ModelError('bad_token', `token id ${t} is outside the vocabulary of ${v}`, { token: t });
    }
  }

  /** Logits at every position of every row ([length x V] per row), one full forward pass. */
  async forwardLogits(rows: readonly (readonly number[])[], lora?: LoraInput): Promise<Float32Array[]> {
    this.checkTokens(rows);
    const packed = packRows(rows);
    const l = loraInputFeeds(this.config, lora, rows.length);
    const out = await this.run({ kind: 'prefill', allLogits: true, lora: l.lora }, [packed.feeds, l.feeds], ['logits_all']);
    const all = out.logits_all.data as Float32Array;
    const v = this.config.vocabSize;
    return rows.map((row, r) => all.slice((r * packed.seq + packed.starts[r]) * v, (r * packed.seq + packed.starts[r] + row.length) * v));
  }

  /** Run prompts through the model: last-token logits and a cache per row. */
  async prefill(rows: readonly (readonly number[])[], lora?: LoraInput, padding: Padding = 'right'): Promise<PrefillResult> {
    this.checkTokens(rows);
    const packed = packRows(rows, { padding });
    const l = loraInputFeeds(this.config, lora, rows.length);
    return this.runPrompts({ kind: 'prefill', lora: l.lora }, [packed.feeds, l.feeds], rows.map((row, r) => ({ start: packed.starts[r], length: row.length })));
  }

  /**
   * Run prompts on from their cached prefixes (prefix caching): each row's `past` is a cache whose
   * first `pastLength` positions (default all, at least one) hold its prompt's first tokens, `ids`
   * the tokens after them (at least one). The same logits as a prefill of the whole prompts (up to
   * float rounding: the prefix's keys and values were computed in another call), for the work of the
   * new tokens only. Returns per row the last-token logits and the new tokens' cache (`added`); the
   * whole cache is the past's first pastLength positions, then those (KvBatch.add takes both parts).
   */
  async extend(rows: readonly { past: RowKv; pastLength?: number; ids: readonly number[] }[], lora?: LoraInput): Promise<ExtendResult> {
    const l = loraInputFeeds(this.config, lora, rows.length);
    const out = await this.runPrompts({ kind: 'extend', lora: l.lora }, [...this.extendFeeds(rows), l.feeds], rows.map((row) => ({ start: 0, length: row.ids.length })));
    return { logits: out.logits, added: out.kv };
  }

  /** The token and past feeds of an extend call, each row checked. */
  private extendFeeds(rows: readonly { past: RowKv; pastLength?: number; ids: readonly number[] }[]): Record<string, HostTensor>[] {
    const past = pastFeeds(this.kvShape, rows.map((r) => ({ kv: r.past, length: r.pastLength })));
    rows.forEach((r, i) => {
      if (past.lengths[i] < 1) throw new ModelError('empty_past', 'extend needs a cached prefix of at least one token; use prefill');
      if (past.lengths[i] + r.ids.length > this.config.maxPositions) {
        throw new ModelError('too_long', `a row of ${past.lengths[i] + r.ids.length} tokens exceeds the model's ${this.config.maxPositions} positions`, { length: past.lengths[i] + r.ids.length });
      }
    });
    this.checkTokens(rows.map((r) => r.ids));
    return [packExtend(rows.map((r, i) => ({ past: past.lengths[i], ids: r.ids })), past.pastSeq).feeds, past.feeds];
  }

  /**
   * Every position's logits of one row's tokens ([ids.length x V]) and their cache: a prefill of
   * `ids`, or with `past` an extend after its first `pastLength` positions (default all). A long
   * sequence read in pieces this way (chunked scoring) gives a whole forwardLogits' logits, up to
   * float rounding.
   */
  async readLogits(row: { past?: RowKv; pastLength?: number; ids: readonly number[] }, lora?: LoraInput): Promise<{ logits: Float32Array; kv: RowKv }> {
    const n = this.config.nLayers;
    const fetch = ['logits_all', ...Array.from({ length: n }, (_, i) => [`present_k.${i}`, `present_v.${i}`]).flat()];
    const l = loraInputFeeds(this.config, lora, 1);
    let out: Record<string, HostTensor>;
    if (row.past) {
      out = await this.run({ kind: 'extend', allLogits: true, lora: l.lora }, [...this.extendFeeds([{ past: row.past, pastLength: row.pastLength, ids: row.ids }]), l.feeds], fetch);
    } else {
      this.checkTokens([row.ids]);
      const packed = packRows([row.ids]);
      out = await this.run({ kind: 'prefill', allLogits: true, lora: l.lora }, [packed.feeds, l.feeds], fetch);
    }
    const presents = { k: Array.from({ length: n }, (_, i) => out[`present_k.${i}`]), v: Array.from({ length: n }, (_, i) => out[`present_v.${i}`]) };
    const all = out.logits_all.data as Float32Array;
    return { logits: all.subarray(0, row.ids.length * this.config.vocabSize), kv: rowKvFromPresents(this.kvShape, presents, 0, 0, row.ids.length) };
  }

  /**
   * Run a prefill or extend graph: each row's last-token logits, and the cache of the positions
   * `start`..`start + length` of each row's padded presents.
   */
  private async runPrompts(spec: GraphSpec, feeds: FeedSources, spans: readonly { start: number; length: number }[]): Promise<PrefillResult> {
    const n = this.config.nLayers;
    const fetch = ['logits', ...Array.from({ length: n }, (_, i) => [`present_k.${i}`, `present_v.${i}`]).flat()];
    const out = await this.run(spec, feeds, fetch);
    const presents = { k: Array.from({ length: n }, (_, i) => out[`present_k.${i}`]), v: Array.from({ length: n }, (_, i) => out[`present_v.${i}`]) };
    const logits = out.logits.data as Float32Array;
    const v = this.config.vocabSize;
    return {
      logits: spans.map((_, r) => logits.slice(r * v, (r + 1) * v)),
      kv: spans.map((s, r) => rowKvFromPresents(this.kvShape, presents, r, s.start, s.length)),
    };
  }

  /**
   * One decode step for every row of `batch` (in batch order): feed one token per row, append the
   * new keys/values to the batch's caches, return each row's next-token logits.
   */
  async decodeStep(batch: KvBatch, tokens: readonly number[], lora?: LoraInput): Promise<Float32Array[]> {
    if (tokens.length !== batch.size) throw new ModelError('token_count', `${tokens.length} tokens for ${batch.size} rows`);
    this.checkTokens([tokens]);
    const l = loraInputFeeds(this.config, lora, tokens.length);
    const ids: Record<string, HostTensor> = { input_ids: { dtype: 'int64', dims: [tokens.length, 1], data: BigInt64Array.from(tokens, (t) => BigInt(t)) } };
    const out = await this.run({ kind: 'decode', lora: l.lora }, [batch.decodeFeeds(), l.feeds, ids]);
    batch.append(out);
    const logits = out.logits.data as Float32Array;
    const v = this.config.vocabSize;
    return tokens.map((_, r) => logits.subarray(r * v, (r + 1) * v));
  }

  /** Mean next-token cross-entropy of a batch (labels IGNORE_INDEX where unscored). */
  async loss(batch: LmBatch, lora?: LoraInput): Promise<number> {
    this.checkTokens(batch.inputIds);
    const packed = packLm(batch);
    const l = loraInputFeeds(this.config, lora, batch.inputIds.length);
    const out = await this.run({ kind: 'train', lora: l.lora }, [packed.feeds, l.feeds], ['loss']);
    return (out.loss.data as Float32Array)[0];
  }

  /** Release the sessions (when the model made its own runner). */
  async close(): Promise<void> {
    if (this.ownsRunner) await this.runner.close();
  }
}

export class ModelError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = 'ModelError';
  }
}
