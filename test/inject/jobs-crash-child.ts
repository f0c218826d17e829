/**
 * Child process of the crash tests (jobs.test.ts): starts the job service inline over the given
 * environment and logs every job event as a JSON line. It then blocks at the chosen moment, so the
 * parent's SIGKILL lands exactly there:
 *   mid-trial     once trial `killAt` (or a later one) is training, after logging `ready-to-die`
 *   after-write   once the final adapter is written (renamed into place) but before the version row
 *                 and the job's new state are committed, after logging `ready-to-die` with its path
 *
 *   node --import tsx jobs-crash-child.ts <config.json> <log file> mid-trial <killAt>
 *   node --import tsx jobs-crash-child.ts <config.json> <log file> after-write
 */
import { appendFileSync, readFileSync } from 'node:fs';
import type { Config } from '../../src/config.js';
import { openDb } from '../../src/db/client.js';
import { openInjectContext } from '../../src/inject/context.js';
import { JobService } from '../../src/inject/jobs.js';
import type { JobRunSettings } from '../../src/inject/job-runner.js';
import type { InjectorOptions } from '../../src/inject/injector.js';

const [configFile, logFile, mode, killAtText] = process.argv.slice(2);
const { config, settings, injector } = JSON.parse(readFileSync(configFile, 'utf8')) as { config: Config; settings: Partial<JobRunSettings>; injector: Partial<InjectorOptions> };
const killAt = Number(killAtText ?? 0);
const note = (line: object) => appendFileSync(logFile, `${JSON.stringify(line)}\n`);
const block = () => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60_000);

const db = openDb(config.dbFile, { migrate: false });
const svc = new JobService({
  config,
  db,
  mode: 'inline',
  settings,
  injector,
  openContext:
    mode === 'after-write'
      ? (cfg, cdb) => {
          const ctx = openInjectContext(cfg, { db: cdb, injector });
          const write = ctx.store.write.bind(ctx.store);
          ctx.store.write = async (userId, adapter) => {
            const w = await write(userId, adapter);
            note({ type: 'ready-to-die', path: w.path });
            block();
            return w;
          };
          return ctx;
        }
      : undefined,
});
svc.on('event', (jobId, e) => {
  note({ jobId, ...e });
  if (mode === 'mid-trial' && e.type === 'training' && e.trial >= killAt) {
    note({ type: 'ready-to-die', trial: e.trial });
    block();
  }
});
await svc.start();
await svc.idle();
note({ type: 'finished-without-being-killed' });
