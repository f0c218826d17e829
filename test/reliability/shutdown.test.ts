/**
 * Graceful shutdown through the real server on a loopback port, and through a real `memlora serve`
 * process sent SIGTERM: new connections are refused, requests in flight finish, requests that
 * arrive while draining get 503 `shutting_down`, a request past the deadline is cut without
 * stopping the shutdown, and the SQLite file is left consistent and checkpointed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig, repoRoot, type Config } from '../../src/config.js';
import { memoryLogger } from '../../src/http/logger.js';
import type { GenerateService } from '../../src/http/services.js';
import { SERVE_NODE_FLAGS } from '../../src/serve/node-flags.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { fakeGenerate } from '../http/fake-generate.js';
import { ADMIN_TOKEN, until } from '../http/helpers.js';
import { parseResponses, rawExchange, slowGenerate } from './support.js';

let dir: string;
let running: RunningServer | undefined;
let child: ChildProcess | undefined;
afterEach(async () => {
  await running?.close();
  running = undefined;
  if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  child = undefined;
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function config(): Config {
  dir = mkdtempSync(join(tmpdir(), 'memlora-shutdown-'));
  return loadConfig({ MEMLORA_PORT: '0', MEMLORA_HOST: '127.0.0.1', MEMLORA_DATA_DIR: join(dir, 'data'), MEMLORA_ADAPTER_DIR: join(dir, 'adapters'), MEMLORA_ADMIN_TOKEN: ADMIN_TOKEN });
}

/** A raw connection whose bytes we control, recording what comes back and whether the server closed it. */
function rawSocket(port: number): { socket: Socket; received: () => string; closed: () => boolean } {
  const socket = connect(port, '127.0.0.1');
  let text = '';
  let closed = false;
  socket.on('data', (d) => (text += d.toString('latin1')));
  socket.on('close', () => (closed = true));
  socket.on('error', () => {});
  return { socket, received: () => text, closed: () => closed };
}

/** Fails with a message instead of hanging the suite when something never settles. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms)))]).finally(() =>
    clearTimeout(timer),
  );
}

/**
 * Returns once the server has accepted every connection opened before this call: it accepts its
 * backlog in order, so a fresh connection answered means the earlier ones are in. (Connections that
 * are open but have not completed a request survive server.close(); that is how requests can still
 * arrive while draining.)
 */
async function accepted(port: number): Promise<void> {
  const { responses } = await rawExchange(port, 'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  expect(responses[0]?.status).toBe(200);
}

const json = (body: unknown) => ({ method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

describe('graceful shutdown of the in-process server', () => {
  it('finishes the slow request in flight, refuses new connections, answers late arrivals 503 shutting_down', async () => {
    const slow = slowGenerate(500);
    let closedServices = 0;
    const logger = memoryLogger();
    running = await startServer(config(), {
      handleSignals: false,
      logger,
      shutdownTimeoutMs: 10_000,
      services: { generate: { ...slow, close: async () => void closedServices++ } },
    });
    const { url, port, db } = running;
    expect((await fetch(`${url}/v1/users/alice`, { method: 'PUT' })).status).toBe(201);

    const inflight = fetch(`${url}/v1/generate`, json({ userId: 'alice', prompt: 'still answered' }));
    // A connection that has begun a request (headers half sent) and one that is open but silent.
    const late = rawSocket(port);
    late.socket.write('POST /v1/users/alice/history HTTP/1.1\r\nHost: x\r\n');
    const silent = rawSocket(port);
    await until(() => slow.started === 1);
    await accepted(port);

    const closing = running.close();
    await expect(fetch(`${url}/healthz`)).rejects.toThrow();

    const item = JSON.stringify({ items: [{ kind: 'post', text: 'arrived while draining' }] });
    late.socket.write(`Content-Type: application/json\r\nContent-Length: ${item.length}\r\n\r\n${item}`);
    const post = JSON.stringify({ items: [{ kind: 'post', text: 'also late' }] });
    silent.socket.write(`POST /v1/users/alice/history HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${post.length}\r\n\r\n${post}`);
    await until(() => late.closed() && silent.closed());
    for (const conn of [late, silent]) {
      const [r] = parseResponses(conn.received());
      expect(r.status).toBe(503);
      expect(JSON.parse(r.body).error.code).toBe('shutting_down');
      expect(r.headers['retry-after']).toBe('5');
      expect(r.headers.connection).toBe('close');
      expect(r.headers['x-request-id']).toBeTruthy();
    }

    const res = await inflight;
    expect(res.status).toBe(200);
    expect(res.headers.get('connection')).toBe('close');
    expect(((await res.json()) as { text: string }).text).toBe('echo still answered');
    await within(closing, 10_000, 'close()');
    expect(slow.finished).toBe(1);
    expect(slow.aborted).toBe(0);
    expect(closedServices).toBe(1);
    expect(db.sqlite.open).toBe(false);
    const check = new Database(join(dir, 'data', 'memlora.db'), { readonly: true });
    expect(check.prepare('SELECT count(*) AS n FROM history_items').get()).toEqual({ n: 0 });
    check.close();
    const msgs = logger.lines.map((l) => l.msg);
    expect(msgs).toContain('stopped');
    expect(msgs).not.toContain('shutdown deadline passed; closing open connections');
    expect(logger.lines.filter((l) => l.level === 'error')).toEqual([]);
    running = undefined;
  });

  it('readiness turns 503 while draining; liveness stays 200', async () => {
    const slow = slowGenerate(400);
    running = await startServer(config(), { handleSignals: false, logger: memoryLogger(), services: { generate: slow } });
    const { url, port } = running;
    await fetch(`${url}/v1/users/alice`, { method: 'PUT' });
    const inflight = fetch(`${url}/v1/generate`, json({ userId: 'alice', prompt: 'x' }));
    const readiness = rawSocket(port);
    const liveness = rawSocket(port);
    await until(() => slow.started === 1);
    await accepted(port);
    const closing = running.close();
    readiness.socket.write('GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n');
    liveness.socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => readiness.closed() && liveness.closed());
    const [ready] = parseResponses(readiness.received());
    expect(ready.status).toBe(503);
    expect(JSON.parse(ready.body)).toMatchObject({ status: 'not_ready', checks: { draining: true } });
    const [live] = parseResponses(liveness.received());
    expect(live.status).toBe(200);
    expect(live.headers.connection).toBe('close');
    expect((await inflight).status).toBe(200);
    await within(closing, 10_000, 'close()');
    running = undefined;
  });

  it('pipelined requests that never get a response (connection closed first) do not hold the drain to its deadline', async () => {
    const slow = slowGenerate(300);
    const logger = memoryLogger();
    running = await startServer(config(), { handleSignals: false, logger, shutdownTimeoutMs: 60_000, services: { generate: slow } });
    const { url, port } = running;
    await fetch(`${url}/v1/users/alice`, { method: 'PUT' });
    const body = JSON.stringify({ userId: 'alice', prompt: 'x' });
    const generate = `POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
    // A client that pipelines two requests and hangs up before the first answer...
    const gone = rawSocket(port);
    gone.socket.write(`${generate}GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n`);
    await until(() => slow.started === 1);
    gone.socket.destroy();
    await until(() => slow.aborted === 1);
    // ...and one whose second request is dropped because the first answer closes the connection (draining).
    const piped = rawSocket(port);
    piped.socket.write(`${generate}GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n`);
    await until(() => slow.started === 2);
    await within(running.close(), 20_000, 'close() with dropped pipelined requests');
    expect(parseResponses(piped.received()).map((r) => r.status)).toEqual([200]);
    expect(logger.lines.map((l) => l.msg)).not.toContain('shutdown deadline passed; closing open connections');
    running = undefined;
  });

  it('a deep pipeline on one connection is answered in order, without listener-leak warnings', async () => {
    running = await startServer(config(), { handleSignals: false, logger: memoryLogger() });
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(`${w.name}: ${w.message}`);
    process.on('warning', onWarning);
    try {
      // A generous idle window: on a loaded 2-core machine the first answer can take over 400 ms.
      const { responses } = await rawExchange(running.port, 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(50), { idleMs: 5000 });
      expect(responses.map((r) => r.status)).toEqual(Array(50).fill(200));
      await new Promise((r) => setImmediate(r));
    } finally {
      process.off('warning', onWarning);
    }
    expect(warnings).toEqual([]);
    await within(running.close(), 10_000, 'close()');
    running = undefined;
  });

  it('cuts a request that outlives the deadline, and close() still resolves', async () => {
    const endless = slowGenerate(Infinity);
    const logger = memoryLogger();
    running = await startServer(config(), { handleSignals: false, logger, shutdownTimeoutMs: 300, services: { generate: endless } });
    const { url, db } = running;
    await fetch(`${url}/v1/users/alice`, { method: 'PUT' });
    const inflight = fetch(`${url}/v1/generate`, json({ userId: 'alice', prompt: 'never finishes' }));
    await until(() => endless.started === 1);
    await within(running.close(), 10_000, 'close() past the deadline');
    await expect(inflight).rejects.toThrow();
    // The engine is told the client is gone (the connection was cut), so it can free the work.
    await until(() => endless.aborted === 1);
    expect(db.sqlite.open).toBe(false);
    expect(logger.lines.map((l) => l.msg)).toContain('shutdown deadline passed; closing open connections');
    running = undefined;
  });

  it('still resolves when a handler ignores its abort signal for ever', async () => {
    let started = false;
    const deaf: GenerateService = {
      ...fakeGenerate(),
      generate: () => {
        started = true;
        return new Promise(() => {});
      },
    };
    running = await startServer(config(), { handleSignals: false, logger: memoryLogger(), shutdownTimeoutMs: 200, services: { generate: deaf } });
    const { url, db } = running;
    await fetch(`${url}/v1/users/alice`, { method: 'PUT' });
    const inflight = fetch(`${url}/v1/generate`, json({ userId: 'alice', prompt: 'x' })).catch((e: Error) => e);
    await until(() => started);
    await within(running.close(), 10_000, 'close() with a deaf handler');
    expect(await inflight).toBeInstanceOf(Error);
    expect(db.sqlite.open).toBe(false);
    running = undefined;
  });
});

// ---------------------------------------------------------------------------------------------

interface Served {
  proc: ChildProcess;
  url: string;
  port: number;
  lines: Array<Record<string, unknown>>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** `memlora serve` as its own process (tsx loader, no build step), ready once it logs its URL. */
async function serveProcess(dataDir: string, adapterDir: string): Promise<Served> {
  const proc = spawn(process.execPath, [...SERVE_NODE_FLAGS, '--import', 'tsx', join(repoRoot, 'src', 'cli.ts'), 'serve'], {
    cwd: repoRoot,
    env: { ...process.env, MEMLORA_PORT: '0', MEMLORA_HOST: '127.0.0.1', MEMLORA_DATA_DIR: dataDir, MEMLORA_ADAPTER_DIR: adapterDir, MEMLORA_ADMIN_TOKEN: ADMIN_TOKEN },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child = proc;
  const lines: Array<Record<string, unknown>> = [];
  let buffered = '';
  proc.stderr!.on('data', (d: Buffer) => {
    buffered += d.toString('utf8');
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      try {
        lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        lines.push({ level: 'raw', msg: line });
      }
    }
  });
  proc.stdout!.resume();
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  await within(
    (async () => {
      while (!lines.some((l) => l.msg === 'memlora listening')) {
        if (proc.exitCode !== null) throw new Error(`serve exited early: ${JSON.stringify(lines)}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    })(),
    30_000,
    'memlora serve start-up',
  );
  const url = String(lines.find((l) => l.msg === 'memlora listening')!.url);
  return { proc, url, port: Number(new URL(url).port), lines, exited };
}

describe('memlora serve as a process', () => {
  it('on SIGTERM: finishes the request in flight, exits 0 with a clean log, leaves the db consistent and checkpointed', async () => {
    dir = mkdtempSync(join(tmpdir(), 'memlora-sigterm-'));
    const dataDir = join(dir, 'data');
    const s = await serveProcess(dataDir, join(dir, 'adapters'));
    expect((await fetch(`${s.url}/v1/users/alice`, { method: 'PUT' })).status).toBe(201);
    for (let b = 0; b < 3; b++) {
      const items = Array.from({ length: 100 }, (_, i) => ({ kind: 'dialogue', role: 'user', text: `batch ${b} item ${i}` }));
      expect((await fetch(`${s.url}/v1/users/alice/history`, json({ items }))).status).toBe(201);
    }
    // A request in flight at SIGTERM: its headers are parsed (the server said 100 Continue), its body not sent yet.
    const last = JSON.stringify({ items: [{ kind: 'post', text: 'acknowledged during shutdown' }] });
    const conn = rawSocket(s.port);
    conn.socket.write(`POST /v1/users/alice/history HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: ${last.length}\r\n\r\n`);
    await until(() => conn.received().startsWith('HTTP/1.1 100 Continue'));

    s.proc.kill('SIGTERM');
    await until(() => s.lines.some((l) => l.msg === 'shutting down'));
    expect(s.lines.find((l) => l.msg === 'shutting down')).toMatchObject({ inFlight: 1 });
    await expect(fetch(`${s.url}/healthz`)).rejects.toThrow();
    conn.socket.write(last);
    await until(() => conn.closed());
    const ack = parseResponses(conn.received()).find((r) => r.status !== 100);
    expect(ack?.status).toBe(201);

    const exit = await within(s.exited, 15_000, 'exit after SIGTERM');
    expect(exit).toEqual({ code: 0, signal: null });
    const msgs = s.lines.map((l) => l.msg);
    expect(msgs).toEqual(expect.arrayContaining(['memlora listening', 'signal received', 'shutting down', 'stopped']));
    expect(msgs.indexOf('stopped')).toBe(msgs.length - 1);
    expect(s.lines.find((l) => l.msg === 'signal received')).toMatchObject({ level: 'info', signal: 'SIGTERM' });
    expect(s.lines.filter((l) => l.level !== 'info')).toEqual([]);

    // The last connection closed cleanly: SQLite checkpointed the WAL into the main file and removed it.
    const dbFile = join(dataDir, 'memlora.db');
    expect(!existsSync(`${dbFile}-wal`) || statSync(`${dbFile}-wal`).size === 0).toBe(true);
    const db = new Database(dbFile, { readonly: true });
    try {
      expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
      expect(db.pragma('foreign_key_check')).toEqual([]);
      expect(db.prepare('SELECT count(*) AS n FROM history_items').get()).toEqual({ n: 301 });
      expect(db.prepare(`SELECT text FROM history_items ORDER BY id DESC LIMIT 1`).get()).toEqual({ text: 'acknowledged during shutdown' });
    } finally {
      db.close();
    }
  });

  it('on SIGINT while idle: exits 0 at once', async () => {
    dir = mkdtempSync(join(tmpdir(), 'memlora-sigint-'));
    const s = await serveProcess(join(dir, 'data'), join(dir, 'adapters'));
    await fetch(`${s.url}/v1/users/bob`, { method: 'PUT' });
    s.proc.kill('SIGINT');
    expect(await within(s.exited, 15_000, 'exit after SIGINT')).toEqual({ code: 0, signal: null });
    expect(s.lines.find((l) => l.msg === 'shutting down')).toMatchObject({ inFlight: 0 });
    expect(s.lines.filter((l) => l.level !== 'info')).toEqual([]);
  });
});
