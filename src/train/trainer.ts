/**
 * The one trainer: pretraining the default model and injecting a user's memory both run through it.
 * The caller supplies the parameters, the batches of an epoch, and a step that returns loss and
 * gradients (an ONNX Runtime train-step graph); the trainer owns AdamW, the schedule, clipping,
 * evaluation with early stopping, checkpoints, progress and cancellation.
 */
import type { Feeds } from '../graph/runner.js';
import { withDefaults } from '../util/options.js';
import { Rng } from '../util/rng.js';
import { AdamW, type AdamWState } from './adamw.js';
import { TrainCancelled, TrainError } from './errors.js';
import { type Grads, type Param, clipGradients, cloneParams, restoreParams } from './params.js';
import { type ScheduleKind, learningRate } from './schedule.js';

export interface TrainBatch {
  feeds: Feeds;
  /** Supervised tokens in the batch (throughput and weighting). */
  tokens: number;
}

export interface StepResult {
  loss: number;
  grads: Grads;
}

export interface TrainProblem {
  params: Param[];
  /** The batches of one epoch, in the order to train them; shuffle with the given generator. */
  batches(epoch: number, rng: Rng): TrainBatch[];
  step(batch: TrainBatch): Promise<StepResult>;
  /** Validation loss with the current parameters. */
  evaluate?(): Promise<number>;
}

export interface TrainerOptions {
  lr: number;
  warmupFrac: number;
  schedule: ScheduleKind;
  minLrFrac: number;
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** Max global gradient norm; 0 disables clipping. */
  clipNorm: number;
  epochs: number;
  /** Stop after this many steps even if epochs remain (also sets the schedule's length). */
  maxSteps?: number;
  /** Evaluate every this many steps; 0 = at the end of each epoch. */
  evalEvery: number;
  /** Stop after this many evaluations without improving the best validation loss by minDelta. */
  patience: number;
  minDelta: number;
  /** Put back the parameters of the best evaluation at the end. */
  restoreBest: boolean;
  seed: number;
  signal?: AbortSignal;
  onProgress?: (p: TrainProgress) => void;
  /** Report progress every this many steps (and at every evaluation). */
  progressEvery: number;
  checkpointEvery?: number;
  onCheckpoint?: (s: TrainerState) => Promise<void> | void;
  resume?: TrainerState;
}

export const defaultTrainerOptions: TrainerOptions = {
  lr: 5e-4,
  warmupFrac: 0.1,
  schedule: 'linear',
  minLrFrac: 0,
  weightDecay: 1e-4,
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-8,
  clipNorm: 1.0,
  epochs: 1,
  evalEvery: 0,
  patience: Number.POSITIVE_INFINITY,
  minDelta: 0,
  restoreBest: true,
  seed: 0,
  progressEvery: 10,
};

export interface TrainProgress {
  step: number;
  totalSteps: number;
  epoch: number;
  loss: number;
  /** Exponential moving average of the training loss. */
  smoothLoss: number;
  lr: number;
  gradNorm: number;
  valLoss?: number;
  bestValLoss?: number;
  tokensPerSec: number;
  elapsedMs: number;
  etaMs: number;
}

export interface TrainerState {
  step: number;
  epoch: number;
  /** Batches of `epoch` already trained. */
  batchInEpoch: number;
  params: Map<string, Float32Array>;
  optimizer: AdamWState;
  best: { valLoss: number; step: number; params: Map<string, Float32Array> } | null;
  evalsWithoutImprovement: number;
  history: { step: number; loss: number; valLoss?: number }[];
}

export type StopReason = 'completed' | 'max_steps' | 'early_stopped';

export interface TrainResult {
  steps: number;
  stopReason: StopReason;
  finalLoss: number;
  bestValLoss: number | null;
  bestStep: number | null;
  history: { step: number; loss: number; valLoss?: number }[];
  tokens: number;
  elapsedMs: number;
}

export async function train(problem: TrainProblem, options: Partial<TrainerOptions> = {}): Promise<TrainResult> {
  const o: TrainerOptions = withDefaults(defaultTrainerOptions, options);
  const { params } = problem;
  if (params.length === 0) throw new TrainError('no_params', 'nothing to train');
  const epochBatches = (epoch: number): TrainBatch[] => problem.batches(epoch, new Rng(o.seed * 1_000_003 + epoch));
  let current = epochBatches(0);
  if (current.length === 0) throw new TrainError('no_data', 'the training set produced no batches');
  const perEpoch = current.length;
  const totalSteps = Math.min(o.maxSteps ?? Number.POSITIVE_INFINITY, perEpoch * o.epochs);
  const schedule = { peak: o.lr, totalSteps, warmupFrac: o.warmupFrac, kind: o.schedule, minFrac: o.minLrFrac };
  const opt = new AdamW(params, o);

  let step = 0;
  let epoch = 0;
  let batchInEpoch = 0;
  let best: TrainerState['best'] = null;
  let stale = 0;
  let history: TrainerState['history'] = [];
  if (o.resume) {
    const r = o.resume;
    restoreParams(params, r.params);
    opt.load(r.optimizer);
    ({ step, epoch, batchInEpoch, best } = r);
    stale = r.evalsWithoutImprovement;
    history = [...r.history];
    if (epoch !== 0) current = epochBatches(epoch);
  }

  const t0 = performance.now();
  let tokens = 0;
  let smooth = Number.NaN;
  let lastLoss = Number.NaN;
  let stopReason: StopReason = 'completed';

  let lastEvalStep = -1;
  const snapshot = (nextBatch: number): TrainerState => ({
    step,
    epoch,
    batchInEpoch: nextBatch,
    params: cloneParams(params),
    optimizer: opt.state(),
    best,
    evalsWithoutImprovement: stale,
    history: [...history],
  });

  const evaluate = async (): Promise<boolean> => {
    if (!problem.evaluate) return false;
    const val = await problem.evaluate();
    lastEvalStep = step;
    if (!Number.isFinite(val)) throw new TrainError('non_finite', `validation loss is ${val} at step ${step}`, { step });
    history.push({ step, loss: lastLoss, valLoss: val });
    if (!best || val < best.valLoss - o.minDelta) {
      best = { valLoss: val, step, params: cloneParams(params) };
      stale = 0;
    } else stale++;
    report(val);
    return stale >= o.patience;
  };

  const report = (valLoss?: number): void => {
    if (!o.onProgress) return;
    const elapsedMs = performance.now() - t0;
    const done = Math.max(1, step - (o.resume?.step ?? 0));
    o.onProgress({
      step,
      totalSteps,
      epoch,
      loss: lastLoss,
      smoothLoss: smooth,
      lr: learningRate(Math.max(0, step - 1), schedule),
      gradNorm: lastNorm,
      valLoss,
      bestValLoss: best?.valLoss,
      tokensPerSec: tokens / Math.max(1e-9, elapsedMs / 1000),
      elapsedMs,
      etaMs: ((totalSteps - step) * elapsedMs) / done,
    });
  };

  let lastNorm = 0;
  outer: while (step < totalSteps && epoch < o.epochs) {
    for (; batchInEpoch < current.length; batchInEpoch++) {
      if (step >= totalSteps) {
        stopReason = 'max_steps';
        break outer;
      }
      if (o.signal?.aborted) throw new TrainCancelled(step);
      const batch = current[batchInEpoch];
      const { loss, grads } = await problem.step(batch);
      if (o.signal?.aborted) throw new TrainCancelled(step);
      if (!Number.isFinite(loss)) throw new TrainError('non_finite', `training loss is ${loss} at step ${step}`, { step });
      lastNorm = clipGradients(grads, o.clipNorm);
      opt.step(grads, learningRate(step, schedule));
      step++;
      tokens += batch.tokens;
      lastLoss = loss;
      smooth = Number.isNaN(smooth) ? loss : 0.95 * smooth + 0.05 * loss;
      if (o.evalEvery > 0 && step % o.evalEvery === 0) {
        if (await evaluate()) {
          stopReason = 'early_stopped';
          batchInEpoch++;
          break outer;
        }
      } else if (step % o.progressEvery === 0) {
        history.push({ step, loss });
        report();
      }
      if (o.checkpointEvery && o.onCheckpoint && step % o.checkpointEvery === 0) {
        await o.onCheckpoint(snapshot(batchInEpoch + 1));
      }
    }
    if (o.evalEvery === 0 && (await evaluate())) {
      stopReason = 'early_stopped';
      epoch++;
      batchInEpoch = 0;
      break;
    }
    epoch++;
    batchInEpoch = 0;
    if (epoch < o.epochs && step < totalSteps) current = epochBatches(epoch);
  }
  if (stopReason === 'completed' && step >= totalSteps && totalSteps < perEpoch * o.epochs) stopReason = 'max_steps';
  // A final evaluation when the last step was not evaluated, so "best" covers the end state too.
  if (problem.evaluate && lastEvalStep !== step) await evaluate();
  const finalBest = best as TrainerState['best'];
  if (o.restoreBest && finalBest) restoreParams(params, finalBest.params);
  return {
    steps: step,
    stopReason,
    finalLoss: lastLoss,
    bestValLoss: finalBest?.valLoss ?? null,
    bestStep: finalBest?.step ?? null,
    history,
    tokens,
    elapsedMs: performance.now() - t0,
  };
}
