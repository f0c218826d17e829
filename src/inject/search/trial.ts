/** A trial of the search: one configuration, trained and scored once, and what it cost. */
import type { LoraConfig } from './space.js';

export type TrialPhase = 'warm-start' | 'initial' | 'bo';

export interface Trial {
  /** 0-based position in the search's evaluation order. */
  index: number;
  /** Canonical key of the configuration (see SearchSpace.key). */
  key: string;
  config: LoraConfig;
  phase: TrialPhase;
  status: 'ok' | 'failed';
  /** Validation cross-entropy loss (null when the trial failed). */
  loss: number | null;
  /** Validation ROUGE-L F-measure (null when the trial failed). */
  rougeL: number | null;
  /** Whatever the evaluator reports: seconds, steps, parameters, bytes… */
  cost?: Record<string, number>;
  error?: string;
  /** NEHVI value of the configuration when BO proposed it. */
  acquisition?: number;
  /** ISO time the evaluation started. */
  startedAt: string;
  durationMs: number;
}

export type OkTrial = Trial & { status: 'ok'; loss: number; rougeL: number };

export function isOk(t: Trial): t is OkTrial {
  return t.status === 'ok' && typeof t.loss === 'number' && typeof t.rougeL === 'number';
}
