/**
 * For the benches that run the serving engine inside their own process (serve-breakdown.ts,
 * sampling-options.ts, score.ts): run under the serving node flags, as `npm start` runs the server,
 * configure it on a swap workspace, drive the engine with closed-loop clients, and time the calls of
 * chosen methods while it runs.
 */
import { spawnSync } from 'node:child_process';
import type { Workspace } from './swap-workspace.js';
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

/**
 * `connections` closed-loop clients, each calling `request` again as soon as its last call resolves;
 * after `warmupS` seconds a window of `seconds` is measured. Returns the sum of what `request`
 * returned for calls answered inside the window (requests, tokens) and the window's length.
 * `onWindow(true)` / `onWindow(false)` mark the window's start and end (to attribute timed calls).
 */
export async function closedLoop(opts: { connections: number; warmupS: number; seconds: number; request: () => Promise<number>; onWindow?: (open: boolean) => void }): Promise<{ count: number; seconds: number }> {
  let stop = false;
  let counting = false;
  let count = 0;
  const client = async (): Promise<void> => {
    while (!stop) {
      const n = await opts.request();
      if (counting) count += n;
    }
  };
  const clients = Array.from({ length: opts.connections }, client);
  await new Promise((r) => setTimeout(r, opts.warmupS * 1000));
  opts.onWindow?.(true);
  counting = true;
  const start = performance.now();
  await new Promise((r) => setTimeout(r, opts.seconds * 1000));
  counting = false;
  opts.onWindow?.(false);
  const seconds = (performance.now() - start) / 1000;
  stop = true;
  await Promise.all(clients);
  return { count, seconds };
}

/**
 * Point this process's serving configuration at a swap workspace (bench/swap-workspace.ts): its data,
 * adapters and model, a cache that holds every adapter (filled by the bench itself, not restored from
 * another run's snapshot), whole prompts (no prefix cache, as bench/swap.ts measures them) and room
 * in the queue for the bench's clients.
 */
export function serveWorkspace(ws: Workspace): void {
  Object.assign(process.env, {
    MEMLORA_DATA_DIR: ws.dataDir,
    MEMLORA_ADAPTER_DIR: ws.adapterDir,
    MEMLORA_MODEL_PATH: ws.modelPath,
    MEMLORA_CACHE_BYTES: String(ws.totalBytes + 2 ** 20),
    MEMLORA_CACHE_RESTORE: 'off',
    MEMLORA_PREFIX_CACHE_BYTES: '0',
    MEMLORA_MAX_QUEUE: '256',
  });
}
