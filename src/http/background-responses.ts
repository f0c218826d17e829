/**
 * Background responses of the Responses API (POST /v1/responses with background: true) while they
 * run: the response as it stands (queued, in progress, then done), the events of its stream numbered
 * as sent, and its cancellation. The response object is stored when the request is taken and again
 * when it is done (response-runs.ts); the registry lets GET /v1/responses/{id} read one that is
 * running, stream its events to any number of readers from any point (?stream=true&starting_after),
 * and cancel it. A finished run's events stay readable for KEEP_MS (the last KEEP_RUNS runs). A
 * stored background response neither running nor done waits to run again (response-runs.ts), or,
 * stored without its request (before memlora kept it), reads as failed.
 */
import { failedResponse, type ResponseObject } from './response-object.js';

/** How long a finished run's events can still be streamed, and how many finished runs keep theirs. */
export const KEEP_MS = 5 * 60_000;
export const KEEP_RUNS = 32;

const PENDING = new Set(['queued', 'in_progress']);

/** Whether a response object is still waiting for its reply. */
export const isPending = (response: { status?: unknown }) => PENDING.has(response.status as string);

/** What a stored background response cut off by a stop of the server reads as. */
export const cutOff = <T extends object>(response: T) =>
  failedResponse(response, { code: 'server_error', message: 'the server stopped before this background response finished; create it again' });

/** An event as sent: its type, and its JSON data (type, sequence_number, fields). */
export interface SentEvent {
  event: string;
  data: string;
}

export class Run {
  /** The response as it stands: replaced as the run moves on. */
  response: ResponseObject;
  /** The events sent so far, each numbered by its place. */
  readonly events: SentEvent[] = [];
  finishedAt: number | null = null;
  /** Whether a client cancelled it (POST /v1/responses/{id}/cancel, or a DELETE). */
  cancelRequested = false;
  /** Settles once the run is done and its response stored. */
  done: Promise<void> = Promise.resolve();
  private waiters = new Set<() => void>();

  constructor(
    readonly id: string,
    readonly userId: string,
    response: ResponseObject,
    readonly controller: AbortController,
  ) {
    this.response = response;
  }

  /** Sends an event to every reader, numbered by its place. */
  push(type: string, fields: Record<string, unknown>): void {
    this.events.push({ event: type, data: JSON.stringify({ type, sequence_number: this.events.length, ...fields }) });
    this.wake();
  }

  finish(response: ResponseObject): void {
    this.response = response;
    this.finishedAt = Date.now();
    this.wake();
  }

  /** The events after sequence number `after` (-1: all), as they come, until the run is done or `signal` aborts. */
  async *from(after: number, signal: AbortSignal): AsyncGenerator<SentEvent> {
    let next = after + 1;
    while (!signal.aborted) {
      while (next < this.events.length) yield this.events[next++];
      if (this.finishedAt !== null) return;
      await new Promise<void>((resolve) => {
        const wake = () => {
          this.waiters.delete(wake);
          signal.removeEventListener('abort', wake);
          resolve();
        };
        this.waiters.add(wake);
        signal.addEventListener('abort', wake, { once: true });
      });
    }
  }

  private wake(): void {
    for (const wake of [...this.waiters]) wake();
  }
}

export class BackgroundResponses {
  private readonly runs = new Map<string, Run>();

  constructor(private readonly keep = { ms: KEEP_MS, runs: KEEP_RUNS }) {}

  /** Registers a run and starts `work` on it; the run is done when `work` settles. */
  start(run: Run, work: (run: Run) => Promise<void>): Run {
    this.prune();
    this.runs.set(run.id, run);
    run.done = work(run);
    return run;
  }

  /** The run of the response `id` (the response object's id), running or finished within KEEP_MS. */
  get(id: string): Run | undefined {
    const run = this.runs.get(id);
    if (run?.finishedAt != null && Date.now() - run.finishedAt > this.keep.ms) {
      this.runs.delete(id);
      return undefined;
    }
    return run;
  }

  /**
   * The stored response `stored` as it stands: its run's, or as stored; stored pending with neither a
   * run nor its request (to run it again at a start), cut off. Responses stored before background
   * responses existed say background: false.
   */
  current(stored: { id: string; response: Record<string, unknown>; request?: unknown }): Record<string, unknown> {
    const run = this.get(stored.id);
    if (run !== undefined) return run.response;
    const response = stored.response.background === undefined ? { ...stored.response, background: false } : stored.response;
    return isPending(response) && stored.request == null ? cutOff(response) : response;
  }

  /** Cancels the run `id` if it is running, and waits until it is done and stored. */
  async cancel(id: string): Promise<void> {
    const run = this.runs.get(id);
    if (run === undefined || run.finishedAt !== null) return;
    run.cancelRequested = true;
    run.controller.abort(new Error('cancelled by the client'));
    await run.done;
  }

  /** Cancels every running run of the user and waits until they are done; how many. */
  async cancelUser(userId: string): Promise<number> {
    const theirs = [...this.runs.values()].filter((run) => run.userId === userId && run.finishedAt === null);
    await Promise.all(theirs.map((run) => this.cancel(run.id)));
    return theirs.length;
  }

  /** Forgets the run `id` (its response was deleted). */
  forget(id: string): void {
    this.runs.delete(id);
  }

  /** Runs not yet done. */
  get running(): number {
    let n = 0;
    for (const run of this.runs.values()) if (run.finishedAt === null) n++;
    return n;
  }

  /** Settles once every run started so far is done (the server's shutdown waits for it before closing the database). */
  async settled(): Promise<void> {
    await Promise.all([...this.runs.values()].map((run) => run.done));
  }

  /** Drops finished runs past KEEP_MS, and the oldest finished past KEEP_RUNS. */
  private prune(now = Date.now()): void {
    const finished = [...this.runs.values()].filter((run) => run.finishedAt !== null).sort((x, y) => x.finishedAt! - y.finishedAt!);
    for (const [i, run] of finished.entries()) {
      if (now - run.finishedAt! > this.keep.ms || finished.length - i > this.keep.runs) this.runs.delete(run.id);
    }
  }
}
