/**
 * The quality gate of an injection job: the adapter a search chose replaces what serves the user
 * now (their active adapter, or the base model when they have none) only if it is better on the
 * user's current validation split, both measured on that same split by the same code.
 *
 * Rule: the candidate's validation loss must be lower by at least `minLossGain` nats per target
 * token, and its ROUGE-L F must not fall more than `rougeTolerance` below the current one. Loss is
 * the primary objective (it is smooth and measured on every target token); ROUGE-L of greedy replies
 * on a small validation split is noisy, so it only vetoes a clear loss of reply quality. A tie on
 * loss is a rejection: a new version that is not measurably better is churn, not an improvement.
 */

export interface GateFigures {
  valLoss: number;
  valRougeL: number;
}

export interface GateOptions {
  /** Least loss improvement that counts (nats per target token). */
  minLossGain: number;
  /** Largest ROUGE-L drop tolerated (absolute F-measure). */
  rougeTolerance: number;
}

export const DEFAULT_GATE: GateOptions = { minLossGain: 1e-3, rougeTolerance: 0.02 };

export interface GateDecision {
  accepted: boolean;
  forced: boolean;
  /** Why, in words, with the figures. */
  reason: string;
  rule: string;
}

export function gateRule(o: GateOptions = DEFAULT_GATE): string {
  return (
    `accept when the candidate's validation loss is at least ${o.minLossGain} nats/token below the current serving mode's ` +
    `and its validation ROUGE-L is not more than ${o.rougeTolerance} below it (both on the user's current validation split); ` +
    `force skips the gate`
  );
}

const f = (v: number): string => (Number.isFinite(v) ? v.toFixed(4) : String(v));

export function gateDecision(candidate: GateFigures, current: GateFigures, opts: { force?: boolean; gate?: Partial<GateOptions> } = {}): GateDecision {
  const o: GateOptions = { ...DEFAULT_GATE, ...opts.gate };
  const rule = gateRule(o);
  if (!Number.isFinite(candidate.valLoss) || !Number.isFinite(candidate.valRougeL)) {
    return { accepted: Boolean(opts.force), forced: Boolean(opts.force), reason: `candidate figures are not finite (loss ${f(candidate.valLoss)}, ROUGE-L ${f(candidate.valRougeL)})`, rule };
  }
  const lossGain = current.valLoss - candidate.valLoss;
  const rougeDrop = current.valRougeL - candidate.valRougeL;
  // A current figure that is not finite (nothing to compare with) cannot be beaten on that objective.
  const lossOk = Number.isFinite(current.valLoss) ? lossGain >= o.minLossGain : true;
  const rougeOk = Number.isFinite(current.valRougeL) ? rougeDrop <= o.rougeTolerance : true;
  const figures = `loss ${f(candidate.valLoss)} vs ${f(current.valLoss)}, ROUGE-L ${f(candidate.valRougeL)} vs ${f(current.valRougeL)}`;
  const passed = lossOk && rougeOk;
  let reason: string;
  if (passed) reason = `better: ${figures}`;
  else if (!lossOk) reason = `validation loss not lower by ${o.minLossGain}: ${figures}`;
  else reason = `ROUGE-L drops by more than ${o.rougeTolerance}: ${figures}`;
  if (opts.force) return { accepted: true, forced: true, reason: `forced; the gate would have ${passed ? 'accepted' : 'rejected'} it (${reason})`, rule };
  return { accepted: passed, forced: false, reason, rule };
}
