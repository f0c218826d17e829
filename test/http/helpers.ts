/** Test harness: a real app over a real SQLite file in a fresh temp directory. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, type Config } from '../../src/config.js';
import { openDb, type Db } from '../../src/db/client.js';
import { diskAdapterFiles } from '../../src/http/adapter-files.js';
import { createApp } from '../../src/http/app.js';
import type { Lifecycle } from '../../src/http/context.js';
import { memoryLogger } from '../../src/http/logger.js';
import type { AdapterFiles, Services } from '../../src/http/services.js';
import { Registry } from '../../src/metrics.js';

export const ADMIN_TOKEN = 'test-admin-token-0123456789';

export interface Harness {
  dir: string;
  config: Config;
  db: Db;
  app: ReturnType<typeof createApp>;
  metrics: Registry;
  logger: ReturnType<typeof memoryLogger>;
  lifecycle: Lifecycle;
  /** JSON request helper; `body` objects are serialised, strings sent as-is. */
  req(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<Response>;
  admin(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<Response>;
  /** Close the db and rebuild the app over the same file (a restart). */
  restart(): void;
  cleanup(): void;
}

/** `adapterFiles`: the adapter store as the routes use it, made for the harness's adapter directory (default: the disk's, no base model). */
export function makeHarness(opts: { services?: Partial<Services>; env?: Record<string, string>; adapterFiles?: (adapterDir: string) => AdapterFiles } = {}): Harness {
  const dir = mkdtempSync(join(tmpdir(), 'memlora-test-'));
  const config = loadConfig({
    MEMLORA_DATA_DIR: join(dir, 'data'),
    MEMLORA_ADAPTER_DIR: join(dir, 'adapters'),
    MEMLORA_ADMIN_TOKEN: ADMIN_TOKEN,
    ...opts.env,
  });
  const h = {} as Harness;
  const build = () => {
    h.db = openDb(config.dbFile);
    h.metrics = new Registry();
    h.logger = memoryLogger();
    h.lifecycle = { draining: false };
    h.app = createApp({
      config,
      db: h.db,
      services: { adapterFiles: (opts.adapterFiles ?? diskAdapterFiles)(config.adapterDir), ...opts.services },
      metrics: h.metrics,
      logger: h.logger,
      lifecycle: h.lifecycle,
    });
  };
  build();
  Object.assign(h, {
    dir,
    config,
    req: (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) =>
      h.app.request(path, {
        method,
        headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
        body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
      }),
    admin: (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) =>
      h.req(method, path, body, { authorization: `Bearer ${ADMIN_TOKEN}`, ...headers }),
    restart: () => {
      h.db.close();
      build();
    },
    cleanup: () => {
      h.db.close();
      rmSync(dir, { recursive: true, force: true });
    },
  });
  return h;
}

export async function json<T = any>(res: Response): Promise<T> {
  return (await res.json()) as T;
}

/** Asserts the documented error shape and returns the error object. */
export async function expectError(res: Response, status: number, code: string): Promise<{ code: string; message: string; details: any }> {
  const text = await res.text();
  if (res.status !== status) throw new Error(`expected ${status} ${code}, got ${res.status}: ${text}`);
  const body = JSON.parse(text);
  if (!body || typeof body.error !== 'object' || body.error.code !== code || typeof body.error.message !== 'string' || !('details' in body.error)) {
    throw new Error(`expected error code ${code}, got ${text}`);
  }
  if (!res.headers.get('x-request-id')) throw new Error('missing x-request-id');
  return body.error;
}

/** Waits until cond() holds (async work settling), failing after a generous bound. */
export async function until(cond: () => boolean, maxMs = 5000): Promise<void> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > maxMs) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 5));
  }
}
