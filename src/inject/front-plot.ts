/** The Pareto front of a search as an SVG scatter: every trial, the front as a staircase. */
import { scatterChart } from '../plot/svg.js';
import { type Trial, isOk, paretoTrials } from './search/index.js';

export function frontSvg(trials: readonly Trial[], title: string): string {
  const ok = trials.filter(isOk);
  const front = paretoTrials(trials);
  return scatterChart({
    title,
    x: { label: 'validation loss (nats/token, lower is better)' },
    y: { label: 'validation ROUGE-L F (higher is better)' },
    series: [{ name: `trials (${ok.length})`, points: ok.map((t) => [t.loss, t.rougeL] as const) }],
    front: { name: `Pareto front (${front.length})`, points: front.map((t) => [t.loss, t.rougeL] as const), xSense: 'min' },
  });
}
