export type ScheduleKind = 'linear' | 'cosine' | 'constant';

export interface Schedule {
  peak: number;
  totalSteps: number;
  /** Fraction of steps spent warming up linearly from 0 (the paper: 0.1). */
  warmupFrac: number;
  kind: ScheduleKind;
  /** Floor of the decay as a fraction of the peak. */
  minFrac?: number;
}

/** Learning rate for 0-based `step`: linear warm-up, then linear or cosine decay (or constant). */
export function learningRate(step: number, s: Schedule): number {
  const warm = Math.max(0, Math.round(s.totalSteps * s.warmupFrac));
  if (warm > 0 && step < warm) return (s.peak * (step + 1)) / warm;
  if (s.kind === 'constant') return s.peak;
  const span = Math.max(1, s.totalSteps - warm);
  const p = Math.min(1, Math.max(0, (step - warm) / span));
  const floor = s.minFrac ?? 0;
  const f = s.kind === 'linear' ? 1 - p : 0.5 * (1 + Math.cos(Math.PI * p));
  return s.peak * (floor + (1 - floor) * f);
}
