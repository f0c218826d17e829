/**
 * A thin runner over onnxruntime-node: sessions cached by graph signature (one compile per signature,
 * however many callers ask at once), host tensors in and out, CPU or CUDA execution provider.
 */
import * as ort from 'onnxruntime-node';
import type { Graph } from './ir.js';
import { type EmitOptions, emitOnnx } from './onnx.js';
import { type AnyTypedArray, type DType, GraphError, type HostTensor } from './types.js';

export type ExecutionProvider = 'cpu' | 'cuda';

export interface RunnerOptions {
  executionProvider?: ExecutionProvider;
  /** 0 lets ONNX Runtime choose (one thread per core). */
  intraOpThreads?: number;
  optimization?: 'disabled' | 'basic' | 'extended' | 'all';
  /** Most sessions kept; the least recently used is released past it. */
  maxSessions?: number;
  /**
   * Let idle intra-op threads spin-wait for work. Off by default: on a small shared machine spinning
   * threads steal the cores that other sessions (serving, injection jobs) need.
   */
  allowSpinning?: boolean;
}

export type Feeds = Record<string, HostTensor | ort.Tensor>;
/**
 * One set of feeds, or several searched in order (the first that names an input feeds it): a
 * model's weights and a call's own tensors are handed over side by side, not spread into one object
 * per call (a decode step with adapters has about 130 inputs; spreading them cost 0.17 ms a step).
 */
export type FeedSources = Feeds | readonly Feeds[];

/** The sources of `feeds` as a list, in search order. */
export function feedSources(feeds: FeedSources): readonly Feeds[] {
  return Array.isArray(feeds) ? (feeds as readonly Feeds[]) : [feeds as Feeds];
}

function toOrt(t: HostTensor | ort.Tensor): ort.Tensor {
  if (!('dtype' in t)) return t;
  return new ort.Tensor(t.dtype as ort.Tensor.Type, t.data as ort.Tensor.DataType, t.dims);
}

function fromOrt(t: ort.Tensor): HostTensor {
  return { dtype: t.type as DType, dims: [...t.dims], data: t.data as AnyTypedArray };
}

/** A compiled graph. Feeds may be a superset of its inputs: surplus names are ignored. */
export class CompiledGraph {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  private readonly inputSet: Set<string>;

  constructor(
    readonly key: string,
    private readonly session: ort.InferenceSession,
  ) {
    this.inputNames = session.inputNames;
    this.outputNames = session.outputNames;
    this.inputSet = new Set(session.inputNames);
  }

  async run(feeds: FeedSources, fetch?: string[]): Promise<Record<string, HostTensor>> {
    const sources = feedSources(feeds);
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const name of this.inputNames) {
      let t: HostTensor | ort.Tensor | undefined;
      for (let i = 0; t === undefined && i < sources.length; i++) t = sources[i][name];
      if (!t) throw new GraphError('missing_feed', `graph ${this.key}: no tensor fed for input "${name}"`, { input: name });
      ortFeeds[name] = toOrt(t);
    }
    const res = fetch ? await this.session.run(ortFeeds, fetch) : await this.session.run(ortFeeds);
    const out: Record<string, HostTensor> = {};
    for (const [k, v] of Object.entries(res)) out[k] = fromOrt(v);
    return out;
  }

  has(input: string): boolean {
    return this.inputSet.has(input);
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

export class Runner {
  private readonly sessions = new Map<string, Promise<CompiledGraph>>();
  readonly options: Required<RunnerOptions>;
  compiles = 0;

  constructor(opts: RunnerOptions = {}) {
    this.options = {
      executionProvider: opts.executionProvider ?? 'cpu',
      intraOpThreads: opts.intraOpThreads ?? 0,
      optimization: opts.optimization ?? 'all',
      // Each session keeps its own memory arena (an inference session at batch 8 holds 100-300 MiB):
      // the bound is on memory as much as on compiles. Serving asks for more.
      maxSessions: opts.maxSessions ?? 24,
      allowSpinning: opts.allowSpinning ?? false,
    };
  }

  private sessionOptions(): ort.InferenceSession.SessionOptions {
    const o = this.options;
    const so: ort.InferenceSession.SessionOptions = {
      executionProviders: o.executionProvider === 'cuda' ? ['cuda', 'cpu'] : ['cpu'],
      interOpNumThreads: 1,
      graphOptimizationLevel: o.optimization,
      executionMode: 'sequential',
    };
    if (o.intraOpThreads > 0) so.intraOpNumThreads = o.intraOpThreads;
    so.extra = { session: { intra_op: { allow_spinning: o.allowSpinning ? '1' : '0' } } };
    return so;
  }

  /**
   * The session for `key`, compiled from `build()` on first use. Concurrent callers share one compile;
   * a failed compile is not cached.
   */
  compile(key: string, build: () => Graph, emit: EmitOptions = {}): Promise<CompiledGraph> {
    const hit = this.sessions.get(key);
    if (hit) {
      this.sessions.delete(key); // refresh LRU position
      this.sessions.set(key, hit);
      return hit;
    }
    const p = (async () => {
      const bytes = emitOnnx(build(), emit);
      this.compiles++;
      try {
        return new CompiledGraph(key, await ort.InferenceSession.create(bytes, this.sessionOptions()));
      } catch (e) {
        throw new GraphError('compile_failed', `ONNX Runtime rejected graph ${key}: ${(e as Error).message}`, { key });
      }
    })();
    this.sessions.set(key, p);
    p.catch(() => this.sessions.delete(key));
    this.evict();
    return p;
  }

  private evict(): void {
    while (this.sessions.size > this.options.maxSessions) {
      const [oldest, p] = this.sessions.entries().next().value as [string, Promise<CompiledGraph>];
      this.sessions.delete(oldest);
      p.then((s) => s.release()).catch(() => undefined);
    }
  }

  get size(): number {
    return this.sessions.size;
  }

  /**
   * Release the session for `key` now; a later compile builds it again. A session's memory arena
   * grows to its largest run and keeps that memory until release (a LoRA train step at batch 8 x 384
   * tokens: about 1.8 GiB), so callers drop big sessions they will not reuse soon (injector.ts).
   */
  async release(key: string): Promise<void> {
    const p = this.sessions.get(key);
    if (!p) return;
    this.sessions.delete(key);
    await p.then((s) => s.release()).catch(() => undefined);
  }

  async close(): Promise<void> {
    const all = [...this.sessions.values()];
    this.sessions.clear();
    await Promise.allSettled(all.map(async (p) => (await p).release()));
  }
}

/** Run a graph once without caching (tests, one-off evaluation). */
export async function runOnce(g: Graph, feeds: Feeds, opts: RunnerOptions = {}): Promise<Record<string, HostTensor>> {
  const r = new Runner(opts);
  try {
    const s = await r.compile(g.name, () => g);
    return await s.run(feeds);
  } finally {
    await r.close();
  }
}
