/** The rule that turns a Pareto front into the one configuration a user gets. */
import { paretoFront, toMinimization } from './pareto.js';
import { isOk, type OkTrial, type Trial } from './trial.js';

/**
 * The default tolerance: none, so the choice is the lowest validation loss. Over 16 MedDia users x 12
 * trials each scored on test afterwards (bench/search-selection.ts), validation loss rank-correlated
 * with test ROUGE-L (Spearman 0.23, positive for 14 of 16 users) and validation ROUGE-L did not
 * (-0.03, 7 of 16): on 5-10 validation pairs, ROUGE-L mostly measures noise.
 */
export const DEFAULT_LOSS_TOLERANCE = 0;

export function chosenRule(lossTolerance = DEFAULT_LOSS_TOLERANCE): string {
  const pct = +(lossTolerance * 100).toFixed(4);
  if (pct === 0) {
    return 'The trial with the lowest validation loss (ties go to the higher validation ROUGE-L, then to the earlier trial).';
  }
  return (
    `Among the Pareto-optimal trials (minimise validation loss, maximise ROUGE-L; observed values), keep those ` +
    `whose loss is within ${pct}% of the best observed loss (loss <= best + ${pct}% of |best|), and choose the ` +
    `one with the highest ROUGE-L; ties go to the lower loss, then to the earlier trial.`
  );
}

/** The Pareto-optimal successful trials, sorted by loss ascending. */
export function paretoTrials(trials: readonly Trial[]): OkTrial[] {
  const ok = trials.filter(isOk);
  const idx = paretoFront(ok.map((t) => toMinimization(t)));
  return idx.map((i) => ok[i]).sort((a, b) => a.loss - b.loss || b.rougeL - a.rougeL || a.index - b.index);
}

/**
 * Best ROUGE-L among the Pareto points whose loss is within `lossTolerance` of the best loss; with
 * the default tolerance 0, the lowest validation loss (see DEFAULT_LOSS_TOLERANCE for why).
 */
export function chooseTrial(trials: readonly Trial[], lossTolerance = DEFAULT_LOSS_TOLERANCE): { trial: OkTrial | null; rule: string } {
  const rule = chosenRule(lossTolerance);
  const front = paretoTrials(trials);
  if (front.length === 0) return { trial: null, rule };
  const bestLoss = front[0].loss;
  const limit = bestLoss + lossTolerance * Math.abs(bestLoss);
  const eligible = front.filter((t) => t.loss <= limit);
  eligible.sort((a, b) => b.rougeL - a.rougeL || a.loss - b.loss || a.index - b.index);
  return { trial: eligible[0], rule };
}
