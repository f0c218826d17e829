/**
 * For the benches that run the serving engine inside their own process (serve-breakdown.ts,
 * logprobs.ts): run under the serving node flags, as `npm start` runs the server, and time the calls
 * of chosen methods while the engine runs.
 */
import { spawnSync } from 'node:child_process';
import { missingServeNodeFlags } from '../src/serve/node-flags.js';

/** Re-runs this script under the serving node flags when they are missing, and exits with its status. */
export function runUnderServeFlags(): void {
  const missing = missingServeNodeFlags();
  if (missing.length > 0) process.exit(spawnSync(process.execPath, [...missing, ...process.execArgv, ...process.argv.slice(1)], { stdio: 'inherit' }).status ?? 1);
}

/** Wraps `proto[method]` so that every call reports its arguments and its milliseconds (for an async method, until it settles successfully). */
export function timeCalls<T extends object>(proto: T, method: keyof T & string, record: (args: unknown[], ms: number) => void): void {
  const original = proto[method] as unknown as (...args: unknown[]) => unknown;
  (proto as Record<string, unknown>)[method] = function (this: unknown, ...args: unknown[]): unknown {
    const t0 = performance.now();
    const out = original.apply(this, args);
    if (out instanceof Promise) return out.then((v) => (record(args, performance.now() - t0), v));
    record(args, performance.now() - t0);
    return out;
  };
}
