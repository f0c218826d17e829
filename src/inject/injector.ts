/**
 * Memory injection for one configuration: LoRA tensors on the chosen feed-forward layers are trained
 * on a user's training pairs (train-step graph: loss and the LoRA gradients from our autodiff), with
 * the one trainer; the two objectives of the search are measured on the validation pairs: mean
 * target cross-entropy and ROUGE-L F of greedy replies.
 */
import { TrainCancelled } from '../train/errors.js';
import { grad } from '../graph/autodiff.js';
import type { CompiledGraph } from '../graph/runner.js';
import type { HostTensor } from '../graph/types.js';
import { type Adapter, type LoraInit, initAdapter } from '../lora/adapter.js';
import { type AdapterSpec, isVanilla, scalingOf } from '../lora/spec.js';
import { packLm } from '../model/batch.js';
import { buildGraph, loraInputs, sessionKey } from '../model/builder.js';
import { type ChatTemplateName, stopTokenIds } from '../model/chat-format.js';
import { generate } from '../model/generate.js';
import { adapterFeeds } from '../model/lora-feeds.js';
import type { Model } from '../model/model.js';
import type { Tokenizer } from '../model/tokenizer.js';
import { loraTargets } from '../model/weights.js';
import { rougeL } from '../eval/metrics.js';
import type { Param } from '../train/params.js';
import { type TrainProgress, type TrainResult, type TrainerOptions, train } from '../train/trainer.js';
import { withDefaults } from '../util/options.js';
import { type TrainingPair, encodePair } from './dataset.js';
import { type Example, batchExamples, toExample } from './examples.js';

export interface InjectTrainOptions {
  /** Paper defaults: lr 5e-4, 10% warm-up then linear decay, weight decay 1e-4, batch 8. */
  lr: number;
  warmupFrac: number;
  weightDecay: number;
  batchSize: number;
  epochs: number;
  clipNorm: number;
  /** Early stopping on validation loss, in evaluations (one per epoch). */
  patience: number;
  seed: number;
  init: LoraInit;
  /**
   * Start from these tensors instead of a fresh initialisation (re-injection warm start: the user's
   * previous adapter when its layers, n and r equal the spec's). Copied, never trained in place.
   */
  initFrom?: Adapter;
  signal?: AbortSignal;
  onProgress?: (p: TrainProgress) => void;
}

export const defaultInjectTrainOptions: InjectTrainOptions = {
  lr: 5e-4,
  warmupFrac: 0.1,
  weightDecay: 1e-4,
  batchSize: 8,
  epochs: 4,
  clipNorm: 1,
  patience: 2,
  seed: 0,
  init: 'kaiming',
};

export interface InjectorOptions {
  template: ChatTemplateName;
  /** Tokens a training row may hold (context is cut from the left). */
  maxLen: number;
  /** Longest generated reply when scoring ROUGE-L. */
  maxNewTokens: number;
}

export interface TrainedAdapter {
  adapter: Adapter;
  result: TrainResult;
  /** Mean target cross-entropy on the validation pairs with the final (best) adapter. */
  valLoss: number;
  seconds: number;
}

export class Injector {
  readonly opts: InjectorOptions;
  /** Trainings in progress per train-step session key (the session is released when none is left). */
  private readonly training = new Map<string, number>();

  constructor(
    readonly model: Model,
    readonly tokenizer: Tokenizer,
    opts: Partial<InjectorOptions> = {},
  ) {
    this.opts = withDefaults<InjectorOptions>({ template: 'memlora', maxLen: 384, maxNewTokens: 96 }, opts);
  }

  examples(pairs: readonly TrainingPair[]): Example[] {
    return pairs.map((p) => toExample(this.tokenizer, p, this.opts.maxLen, this.opts.template));
  }

  private trainStepKey(layers: readonly boolean[]): string {
    return `${sessionKey(this.model.config, { kind: 'train' as const, lora: { mode: 'single' as const, layers } })}#grad-lora`;
  }

  /** The train-step graph for a layer mask: loss plus gradients w.r.t. every LoRA input (rank is symbolic). */
  private trainStep(layers: readonly boolean[]): Promise<CompiledGraph> {
    const cfg = this.model.config;
    const spec = { kind: 'train' as const, lora: { mode: 'single' as const, layers } };
    return this.model.runner.compile(this.trainStepKey(layers), () => {
      const g = buildGraph(cfg, spec);
      const params = loraInputs(g);
      const loss = g.outputs.find((o) => o.name === 'loss')!.value;
      grad(loss, params).forEach((gv, i) => g.output(`grad.${params[i].name}`, gv));
      return g;
    });
  }

  /** Train one adapter of `spec` on `trainSet`, early-stopped on `val` loss. */
  async train(spec: AdapterSpec, trainSet: readonly Example[], val: readonly Example[], options: Partial<InjectTrainOptions> = {}): Promise<TrainedAdapter> {
    const o = withDefaults(defaultInjectTrainOptions, options);
    const t0 = performance.now();
    const cfg = this.model.config;
    const adapter = o.initFrom && sameShape(o.initFrom.spec, spec) ? copyAdapter(o.initFrom, spec) : initAdapter(spec, loraTargets(cfg), o.seed, o.init);
    if (isVanilla(spec)) {
      const valLoss = await this.loss(val);
      return { adapter, result: emptyResult(valLoss), valLoss, seconds: (performance.now() - t0) / 1000 };
    }
    const { lora, feeds: loraFeeds } = adapterFeeds(cfg, adapter);
    // A train-step session's arena holds about a GiB after a run at batch 8 x 384 tokens, and a
    // search trains a new layer mask nearly every trial: release it when the last training that
    // uses it ends (recompiling costs about a second; a trial takes tens).
    const key = this.trainStepKey(lora!.layers);
    this.training.set(key, (this.training.get(key) ?? 0) + 1);
    try {
      return await this.trainWith(await this.trainStep(lora!.layers), adapter, loraFeeds, trainSet, val, o, t0);
    } finally {
      const left = (this.training.get(key) ?? 1) - 1;
      if (left > 0) this.training.set(key, left);
      else {
        this.training.delete(key);
        await this.model.runner.release(key);
      }
    }
  }

  private async trainWith(
    step: CompiledGraph,
    adapter: Adapter,
    loraFeeds: Record<string, HostTensor>,
    trainSet: readonly Example[],
    val: readonly Example[],
    o: InjectTrainOptions,
    t0: number,
  ): Promise<TrainedAdapter> {
    const params: Param[] = Object.entries(loraFeeds)
      .filter(([name]) => name.startsWith('lora.'))
      .map(([name, t]) => ({ name, data: t.data as Float32Array, dims: t.dims, decay: true }));
    const fetch = ['loss', ...params.map((p) => `grad.${p.name}`)];
    const base = this.model.baseFeeds();
    const trainerOptions: Partial<TrainerOptions> = {
      lr: o.lr,
      warmupFrac: o.warmupFrac,
      schedule: 'linear',
      weightDecay: o.weightDecay,
      clipNorm: o.clipNorm,
      epochs: o.epochs,
      evalEvery: 0,
      patience: o.patience,
      seed: o.seed,
      signal: o.signal,
      onProgress: o.onProgress,
      progressEvery: 5,
    };
    const result = await train(
      {
        params,
        batches: (_epoch, rng) =>
          batchExamples(trainSet, o.batchSize, rng).map(({ batch, scored }) => ({ feeds: packLm(batch).feeds as Record<string, HostTensor>, tokens: scored })),
        step: async (batch) => {
          const out = await step.run([batch.feeds, loraFeeds, base], fetch);
          return { loss: (out.loss.data as Float32Array)[0], grads: new Map(params.map((p) => [p.name, out[`grad.${p.name}`].data as Float32Array])) };
        },
        evaluate: val.length > 0 ? () => this.loss(val, adapter, 8, o.signal) : undefined,
      },
      trainerOptions,
    );
    const valLoss = result.bestValLoss ?? (val.length > 0 ? await this.loss(val, adapter) : Number.NaN);
    return { adapter, result, valLoss, seconds: (performance.now() - t0) / 1000 };
  }

  /**
   * Mean cross-entropy per scored token over `examples` (batched), with or without an adapter.
   * With a signal, stops between batches once it aborts (TrainCancelled), so a job asked to pause
   * or cancel is never held by an evaluation.
   */
  async loss(examples: readonly Example[], adapter?: Adapter, batchSize = 8, signal?: AbortSignal): Promise<number> {
    let sum = 0;
    let n = 0;
    const lora = adapter && !isVanilla(adapter.spec) ? { adapter } : undefined;
    for (const { batch, scored } of batchExamples(examples, batchSize)) {
      if (signal?.aborted) throw new TrainCancelled(-1);
      if (scored === 0) continue;
      sum += (await this.model.loss(batch, lora)) * scored;
      n += scored;
    }
    return n > 0 ? sum / n : Number.NaN;
  }

  /** Prompt ids for a pair: its context and the generation prompt, cut from the left to leave room for the reply. */
  promptIds(pair: TrainingPair): number[] {
    const room = this.opts.maxLen - this.opts.maxNewTokens;
    const enc = encodePair(this.tokenizer, { ...pair, target: '' }, room + 1, this.opts.template);
    const first = enc.lossMask.indexOf(1);
    return enc.ids.slice(0, first < 0 ? enc.ids.length : first);
  }

  /** Greedy replies for the pairs' contexts; with a signal, stops between decode steps once it aborts (TrainCancelled). */
  async replies(pairs: readonly TrainingPair[], adapter?: Adapter, batchSize = 8, signal?: AbortSignal): Promise<string[]> {
    const stops = stopTokenIds(this.tokenizer, this.opts.template);
    const lora = adapter && !isVanilla(adapter.spec) ? { adapter } : undefined;
    const out: string[] = [];
    for (let i = 0; i < pairs.length; i += batchSize) {
      const chunk = pairs.slice(i, i + batchSize);
      const res = await generate(
        this.model,
        chunk.map((p) => ({ prompt: this.promptIds(p), maxTokens: this.opts.maxNewTokens, stopTokenIds: stops, sampling: GREEDY })),
        { tokenizer: this.tokenizer, lora, signal },
      );
      if (signal?.aborted) throw new TrainCancelled(-1);
      out.push(...res.map((r) => r.text.trim()));
    }
    return out;
  }

  /** Mean ROUGE-L F of greedy replies against the pairs' targets. */
  async rougeL(pairs: readonly TrainingPair[], adapter?: Adapter, signal?: AbortSignal): Promise<number> {
    if (pairs.length === 0) return Number.NaN;
    const replies = await this.replies(pairs, adapter, 8, signal);
    return replies.reduce((s, r, i) => s + rougeL(pairs[i].target, r).fmeasure, 0) / pairs.length;
  }
}

/** Same injected layers, module count and rank: the tensors of one fit the other (alpha only scales). */
export function sameShape(a: AdapterSpec, b: AdapterSpec): boolean {
  return a.n === b.n && a.r === b.r && a.layers.length === b.layers.length && a.layers.every((on, i) => on === b.layers[i]);
}

function copyAdapter(from: Adapter, spec: AdapterSpec): Adapter {
  return { spec, scaling: scalingOf(spec), pairs: from.pairs.map((p) => ({ ...p, A: p.A.slice(), B: p.B.slice() })) };
}

/** Replies are greedy: the sampler's own default is temperature 1. */
const GREEDY = { temperature: 0 } as const;

function emptyResult(valLoss: number): TrainResult {
  return { steps: 0, stopReason: 'completed', finalLoss: Number.NaN, bestValLoss: valLoss, bestStep: 0, history: [], tokens: 0, elapsedMs: 0 };
}
