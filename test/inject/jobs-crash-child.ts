/**
 * Child process of the crash test (jobs.test.ts): starts the job service inline over the given
 * environment, logs every job event as a JSON line, and once trial `killAt` is training, logs
 * `{"type":"ready-to-die"}` and blocks, so the parent's SIGKILL lands in the middle of that trial.
 *
 *   node --import tsx jobs-crash-child.ts <config.json> <log file> <killAt>
 */
import { appendFileSync, readFileSync } from 'node:fs';
import type { Config } from '../../src/config.js';
import { openDb } from '../../src/db/client.js';
import { JobService } from '../../src/inject/jobs.js';
import type { JobRunSettings } from '../../src/inject/job-runner.js';
import type { InjectorOptions } from '../../src/inject/injector.js';

const [configFile, logFile, killAtText] = process.argv.slice(2);
const { config, settings, injector } = JSON.parse(readFileSync(configFile, 'utf8')) as { config: Config; settings: Partial<JobRunSettings>; injector: Partial<InjectorOptions> };
const killAt = Number(killAtText);
const db = openDb(config.dbFile, { migrate: false });
const svc = new JobService({ config, db, mode: 'inline', settings, injector });
const block = new Int32Array(new SharedArrayBuffer(4));
svc.on('event', (jobId, e) => {
  appendFileSync(logFile, `${JSON.stringify({ jobId, ...e })}\n`);
  if (e.type === 'training' && e.trial >= killAt) {
    appendFileSync(logFile, `${JSON.stringify({ type: 'ready-to-die', trial: e.trial })}\n`);
    Atomics.wait(block, 0, 0, 60_000);
  }
});
await svc.start();
await svc.idle();
appendFileSync(logFile, `${JSON.stringify({ type: 'finished-without-being-killed' })}\n`);
