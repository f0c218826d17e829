/** Errors of the trainer carry a machine-readable code. */
export class TrainError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = 'TrainError';
  }
}

/** Thrown when a run is cancelled through its AbortSignal; the step in progress is not applied. */
export class TrainCancelled extends TrainError {
  constructor(readonly step: number) {
    super('cancelled', `training cancelled at step ${step}`, { step });
    this.name = 'TrainCancelled';
  }
}
