/** The real server on an ephemeral loopback port, called with fetch and raw HTTP. */
import { mkdtempSync, rmSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../../src/config.js';
import { memoryLogger } from '../../src/http/logger.js';
import type { GenerateService } from '../../src/http/services.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { fakeGenerate } from './fake-generate.js';
import { ADMIN_TOKEN, until } from './helpers.js';

let dir: string;
let running: RunningServer | undefined;
afterEach(async () => {
  await running?.close();
  running = undefined;
  rmSync(dir, { recursive: true, force: true });
});

function config(extra: Record<string, string> = {}): Config {
  return loadConfig({ MEMLORA_PORT: '0', MEMLORA_HOST: '127.0.0.1', MEMLORA_DATA_DIR: join(dir, 'data'), MEMLORA_ADAPTER_DIR: join(dir, 'adapters'), ...extra });
}

function rawGet(url: string, path: string): Promise<number> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: u.hostname, port: u.port, path, method: 'GET' }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end();
  });
}

describe('startServer', () => {
  it('serves the API over HTTP on loopback and keeps data across a restart', async () => {
    dir = mkdtempSync(join(tmpdir(), 'memlora-server-'));
    running = await startServer(config({ MEMLORA_ADMIN_TOKEN: ADMIN_TOKEN }), { handleSignals: false, logger: memoryLogger() });
    expect(running.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const { url } = running;
    const health = await fetch(`${url}/healthz`);
    expect(health.status).toBe(200);
    expect(health.headers.get('x-request-id')).toBeTruthy();
    expect((await fetch(`${url}/v1/users/alice`, { method: 'PUT' })).status).toBe(201);
    const post = await fetch(`${url}/v1/users/alice/history`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ items: [{ kind: 'post', text: 'over the wire' }] }),
    });
    expect(post.status).toBe(201);
    expect((await fetch(`${url}/v1/admin/jobs`)).status).toBe(401);
    expect((await fetch(`${url}/v1/admin/jobs`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).status).toBe(200);
    // Dot segments and encoded slashes sent raw never reach a handler as a user id.
    for (const path of ['/v1/users/..', '/v1/users/%2e%2e', '/v1/users/..%2f..%2fetc', '/v1/users/a%00b']) {
      const status = await rawGet(url, path);
      expect(status, path).toBeGreaterThanOrEqual(400);
      expect(status, path).toBeLessThan(500);
    }
    await running.close();
    await expect(fetch(`${url}/healthz`)).rejects.toThrow();

    running = await startServer(config({ MEMLORA_ADMIN_TOKEN: ADMIN_TOKEN }), { handleSignals: false, logger: memoryLogger() });
    const items = (await (await fetch(`${running.url}/v1/users/alice/history`)).json()) as { items: Array<{ text: string }> };
    expect(items.items.map((i) => i.text)).toEqual(['over the wire']);
  });

  it('with MEMLORA_API_KEY the client routes need it over the wire; open on a non-loopback interface without one, it warns', async () => {
    dir = mkdtempSync(join(tmpdir(), 'memlora-server-'));
    const key = 'client-key-0123456789';
    const quiet = memoryLogger();
    running = await startServer(config({ MEMLORA_ADMIN_TOKEN: ADMIN_TOKEN, MEMLORA_API_KEY: key }), { handleSignals: false, logger: quiet });
    expect((await fetch(`${running.url}/v1/users/alice`, { method: 'PUT' })).status).toBe(401);
    expect((await fetch(`${running.url}/v1/users/alice`, { method: 'PUT', headers: { authorization: `Bearer ${key}` } })).status).toBe(201);
    expect((await fetch(`${running.url}/healthz`)).status).toBe(200);
    expect(quiet.lines.filter((l) => l.level === 'warn')).toEqual([]);
    await running.close();
    const logger = memoryLogger();
    running = await startServer(config({ MEMLORA_ADMIN_TOKEN: ADMIN_TOKEN, MEMLORA_HOST: '0.0.0.0' }), { handleSignals: false, logger });
    expect(logger.lines.filter((l) => l.level === 'warn').map((l) => l.msg)).toEqual([expect.stringContaining('MEMLORA_API_KEY')]);
  });

  it('generates an admin token when none is configured and prints it once', async () => {
    dir = mkdtempSync(join(tmpdir(), 'memlora-server-'));
    const printed: string[] = [];
    running = await startServer(config(), { handleSignals: false, logger: memoryLogger(), print: (l) => printed.push(l) });
    expect(printed).toHaveLength(1);
    expect(running.adminToken.length).toBeGreaterThanOrEqual(16);
    expect(printed[0]).toContain(running.adminToken);
    const ok = await fetch(`${running.url}/v1/admin/jobs`, { headers: { authorization: `Bearer ${running.adminToken}` } });
    expect(ok.status).toBe(200);
  });

  it('shuts down gracefully: refuses new connections, finishes in-flight requests, then closes the db', async () => {
    dir = mkdtempSync(join(tmpdir(), 'memlora-server-'));
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const fake = fakeGenerate();
    let started = false;
    const slow: GenerateService = {
      ...fake,
      generate: async (req, signal) => {
        started = true;
        await gate;
        return fake.generate(req, signal);
      },
    };
    let closedServices = 0;
    running = await startServer(config({ MEMLORA_ADMIN_TOKEN: ADMIN_TOKEN }), {
      handleSignals: false,
      logger: memoryLogger(),
      services: () => ({ generate: { ...slow, close: async () => void closedServices++ } }),
    });
    const { url, db } = running;
    await fetch(`${url}/v1/users/alice`, { method: 'PUT' });
    const inflight = fetch(`${url}/v1/generate`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ userId: 'alice', prompt: 'still answered' }),
    });
    await until(() => started);
    const closing = running.close();
    await expect(fetch(`${url}/healthz`)).rejects.toThrow();
    expect(db.sqlite.open).toBe(true);
    release();
    const res = await inflight;
    expect(res.status).toBe(200);
    expect(((await res.json()) as { text: string }).text).toBe('echo still answered');
    await closing;
    expect(closedServices).toBe(1);
    expect(db.sqlite.open).toBe(false);
    running = undefined;
  });

  it('reports a port already in use as an error', async () => {
    dir = mkdtempSync(join(tmpdir(), 'memlora-server-'));
    running = await startServer(config({ MEMLORA_ADMIN_TOKEN: ADMIN_TOKEN }), { handleSignals: false, logger: memoryLogger() });
    await expect(
      startServer(config({ MEMLORA_ADMIN_TOKEN: ADMIN_TOKEN, MEMLORA_PORT: String(running.port), MEMLORA_DATA_DIR: join(dir, 'data2') }), {
        handleSignals: false,
        logger: memoryLogger(),
      }),
    ).rejects.toThrow(/EADDRINUSE/);
  });
});
