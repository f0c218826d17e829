/** The rule that turns a Pareto front into the one configuration a user gets. */
import { paretoFront, toMinimization } from './pareto.js';
import { isOk, type OkTrial, type Trial } from './trial.js';

export function chosenRule(lossTolerance: number): string {
  const pct = +(lossTolerance * 100).toFixed(4);
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
 * Best ROUGE-L among the Pareto points whose loss is close to the best loss: ROUGE-L is what users
 * read, but it is noisy on small validation splits, so a configuration must also fit the held-out
 * responses nearly as well as the best one does.
 */
export function chooseTrial(trials: readonly Trial[], lossTolerance = 0.02): { trial: OkTrial | null; rule: string } {
  const rule = chosenRule(lossTolerance);
  const front = paretoTrials(trials);
  if (front.length === 0) return { trial: null, rule };
  const bestLoss = front[0].loss;
  const limit = bestLoss + lossTolerance * Math.abs(bestLoss);
  const eligible = front.filter((t) => t.loss <= limit);
  eligible.sort((a, b) => b.rougeL - a.rougeL || a.loss - b.loss || a.index - b.index);
  return { trial: eligible[0], rule };
}
