/**
 * A worker thread running a module of this project. Built code (dist/) runs the module's .js. Under
 * tsx or vitest the module is TypeScript, and Node 20 does not apply `--import tsx` from a worker's
 * execArgv to the worker's entry module, so a small evaluated bootstrap registers tsx's ESM hooks in
 * the worker first and then imports the .ts.
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';

/** A thread running module `name` (no extension) of the folder of `from` (the caller's import.meta.url), given `workerData`. */
export function spawnModuleWorker(from: string, name: string, workerData: unknown): Worker {
  if (!from.endsWith('.ts')) return new Worker(new URL(`./${name}.js`, from), { workerData });
  const tsxDir = dirname(createRequire(from).resolve('tsx/package.json'));
  const api = pathToFileURL(join(tsxDir, 'dist', 'esm', 'api', 'index.mjs')).href;
  const entry = new URL(`./${name}.ts`, from).href;
  const boot = `import(${JSON.stringify(api)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); });`;
  return new Worker(boot, { eval: true, workerData });
}
