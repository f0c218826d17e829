/**
 * A real memlora server for the HTTP benches: `src/cli.ts serve` with the serving node flags as a
 * child process on 127.0.0.1 over a bench workspace (swap-workspace.ts), its adapter cache sized to
 * hold every adapter and warmed through the server's own POST /v1/admin/cache/warm before the load,
 * so adapter loads play no part in what is measured. No restore of an earlier run's caches.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { SERVE_NODE_FLAGS } from '../src/serve/node-flags.js';
import { warmOrder, type Workspace } from './swap-workspace.js';

const repo = join(import.meta.dirname, '..');
export const BENCH_ADMIN_TOKEN = 'bench-admin-token-0123456789';

export interface ServeProcess {
  url: string;
  proc: ChildProcess;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** Starts the server named `name` (for messages) with `env` over the defaults below, waits until ready, warms every adapter. */
export async function startWorkspaceServer(ws: Workspace, name: string, env: Record<string, string>, seed: number): Promise<ServeProcess> {
  const port = await freePort();
  const proc = spawn(process.execPath, [...SERVE_NODE_FLAGS, '--import', 'tsx', join(repo, 'src/cli.ts'), 'serve'], {
    cwd: repo,
    env: {
      ...process.env,
      MEMLORA_PORT: String(port),
      MEMLORA_HOST: '127.0.0.1',
      MEMLORA_DATA_DIR: ws.dataDir,
      MEMLORA_ADAPTER_DIR: ws.adapterDir,
      MEMLORA_MODEL_PATH: ws.modelPath,
      MEMLORA_CACHE_BYTES: String(ws.totalBytes + 2 ** 20),
      MEMLORA_CACHE_RESTORE: 'off',
      // Every run starts from an empty prefix cache, not from the conversations of the last one.
      MEMLORA_PREFIX_CACHE_RESTORE: 'off',
      MEMLORA_ADMIN_TOKEN: BENCH_ADMIN_TOKEN,
      ...env,
    },
    stdio: ['ignore', 'ignore', 'ignore'],
  });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    if (proc.exitCode !== null) throw new Error(`the ${name} server exited (${proc.exitCode})`);
    const ok = await fetch(`${url}/readyz`).then((r) => r.status === 200, () => false);
    if (ok) break;
    if (i > 1200) throw new Error(`the ${name} server never became ready`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const order = warmOrder(ws.users.map((u) => u.id), seed);
  const res = await fetch(`${url}/v1/admin/cache/warm`, { method: 'POST', headers: { authorization: `Bearer ${BENCH_ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify({ userIds: order }) });
  if (!res.ok) throw new Error(`warming the ${name} server: ${res.status} ${await res.text()}`);
  return { url, proc };
}
