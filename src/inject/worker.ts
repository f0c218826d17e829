/**
 * The injection job worker thread: runs one job (job-exec.ts) off the HTTP and decode thread, with
 * its own SQLite connection and its own model and ORT sessions. Training runs on this thread (ORT's
 * run is synchronous on the calling thread, and job sessions get one intra-op thread), so lowering
 * this thread's OS priority before the model loads lowers all of the job's compute: on Linux
 * setpriority(0) applies to the calling thread, and threads it creates later inherit it.
 *
 * Messages: the parent sends {type: 'stop', reason: 'cancel' | 'pause'}; the worker posts
 * {type: 'event', event} while running and {type: 'done', outcome} at the end, then exits.
 */
import { setPriority } from 'node:os';
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { type JobExecInput, executeJob } from './job-exec.js';
import type { JobEvent, JobOutcome, StopReason } from './job-runner.js';

export interface WorkerInput extends JobExecInput {
  /** OS niceness for this thread (0-19; higher yields more CPU to others); null leaves it. */
  niceness: number | null;
}

export type ToWorker = { type: 'stop'; reason: StopReason };
export type FromWorker = { type: 'event'; event: JobEvent } | { type: 'done'; outcome: JobOutcome } | { type: 'error'; message: string; stack?: string };

async function main(): Promise<void> {
  const port = parentPort!;
  const input = workerData as WorkerInput;
  const stop = new AbortController();
  port.on('message', (m: ToWorker) => {
    if (m?.type === 'stop' && !stop.signal.aborted) stop.abort(m.reason);
  });
  if (input.niceness !== null) {
    try {
      setPriority(0, input.niceness);
    } catch {
      // Not permitted here (some containers): the job still runs, at normal priority.
    }
  }
  try {
    const outcome = await executeJob(input, { signal: stop.signal, onEvent: (event) => port.postMessage({ type: 'event', event } satisfies FromWorker) });
    port.postMessage({ type: 'done', outcome } satisfies FromWorker);
  } catch (e) {
    port.postMessage({ type: 'error', message: (e as Error)?.message ?? String(e), stack: (e as Error)?.stack } satisfies FromWorker);
  }
  // Nothing else may keep the thread alive once the job is over.
  port.close();
}

if (!isMainThread && parentPort) void main();
