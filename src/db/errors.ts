/** Errors the query modules throw; each carries a stable code the HTTP layer maps to a status. */

export class NotFoundError extends Error {
  constructor(
    readonly code: 'user_not_found' | 'job_not_found' | 'adapter_not_found',
    readonly id: string,
  ) {
    super(`${code.replace(/_not_found$/, '')} ${JSON.stringify(id)} not found`);
    this.name = 'NotFoundError';
  }
}

/** A user already has a queued or running injection job. */
export class JobActiveError extends Error {
  readonly code = 'job_active';
  constructor(
    readonly userId: string,
    readonly jobId: string,
    readonly state: string,
  ) {
    super(`user ${JSON.stringify(userId)} already has an active injection job ${jobId} (${state})`);
    this.name = 'JobActiveError';
  }
}

/** The version serves the user now: it cannot be deleted until another one (or none) is active. */
export class AdapterActiveError extends Error {
  readonly code = 'adapter_active';
  readonly details: { userId: string; version: number };
  constructor(userId: string, version: number) {
    super(`adapter version ${version} of ${JSON.stringify(userId)} is active; make another version (or none) active first`);
    this.name = 'AdapterActiveError';
    this.details = { userId, version };
  }
}
