/**
 * Runs the service: opens the database (applying migrations), wires services into the app, listens,
 * and shuts down gracefully (stop accepting, let in-flight requests finish up to a deadline, close
 * services, close the database).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { createServer, STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { getRequestListener, RequestError } from '@hono/node-server';
import type { Hono } from 'hono';
import type { Config } from './config.js';
import { openDb, type Db } from './db/client.js';
import { diskAdapterFiles } from './http/adapter-files.js';
import { createApp } from './http/app.js';
import type { AppEnv, Lifecycle } from './http/context.js';
import { errorBody } from './http/errors.js';
import { jsonLogger } from './http/logger.js';
import type { Logger, Services } from './http/services.js';
import { Registry, registerProcessMetrics } from './metrics.js';
import { startJobService } from './inject/jobs.js';
import { createServeServices } from './serve/services.js';
import { startRetentionSweep } from './retention.js';

/** What a service factory gets: everything opened by the server before the app is built. */
export interface ServiceContext {
  config: Config;
  db: Db;
  metrics: Registry;
  logger: Logger;
}

/** Builds the engine, job runner, adapter store... once the db is open. Missing entries get defaults. */
export type ServiceFactory = (ctx: ServiceContext) => Partial<Services> | Promise<Partial<Services>>;

/**
 * The services `memlora serve` runs: the generation engine over the model at MEMLORA_MODEL_PATH with
 * the adapter store and cache (loading in the background; /readyz says when it is ready), user
 * deletion through the store and cache, and the injection job service (worker threads; it resumes
 * queued and interrupted jobs at start). Without a model, generation and jobs are absent (503 for
 * generation; inject requests stay queued until a server with a model starts).
 */
export const defaultServices: ServiceFactory = async (ctx) => {
  const serve = await createServeServices(ctx);
  if (!serve) return {};
  const jobs = await startJobService({ config: ctx.config, db: ctx.db, logger: ctx.logger, metrics: ctx.metrics });
  return { generate: serve.generate, adapterFiles: serve.adapterFiles, jobs };
};

export interface StartOptions {
  /** The services to run; default `defaultServices` (the real engine over config.modelPath). */
  services?: Partial<Services> | ServiceFactory;
  metrics?: Registry;
  logger?: Logger;
  /** How long shutdown waits for in-flight requests before cutting connections (default 10 s). */
  shutdownTimeoutMs?: number;
  /** Install SIGTERM/SIGINT handlers that shut down and exit (default true; tests pass false). */
  handleSignals?: boolean;
  /** Where the generated admin token is printed when none is configured (default stderr). */
  print?: (line: string) => void;
}

export interface RunningServer {
  url: string;
  port: number;
  /** The admin token in force (configured, or generated for this run). */
  adminToken: string;
  app: Hono<AppEnv>;
  db: Db;
  metrics: Registry;
  /** Graceful shutdown; resolves when everything is closed. Safe to call more than once. */
  close(): Promise<void>;
}

/**
 * Requests that never reach the app (unparseable HTTP, a backslash in the path, a bad Host) still
 * get the API's error shape and a request id instead of node's bare status line.
 */
const CLIENT_ERRORS: Readonly<Record<string, [number, string, string]>> = {
  HPE_HEADER_OVERFLOW: [431, 'headers_too_large', 'request headers are too large'],
  HPE_CHUNK_EXTENSIONS_OVERFLOW: [413, 'body_too_large', 'chunk extensions are too large'],
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'request_timeout', 'the request did not arrive in time'],
};
const BAD_REQUEST: [number, string, string] = [400, 'bad_request', 'malformed HTTP request'];

function rawErrorResponse([status, code, message]: [number, string, string]): string {
  const body = JSON.stringify(errorBody(code, message));
  const head = [`HTTP/1.1 ${status} ${STATUS_CODES[status]}`, 'content-type: application/json', `content-length: ${Buffer.byteLength(body)}`, `x-request-id: ${randomUUID()}`, 'connection: close'];
  return `${head.join('\r\n')}\r\n\r\n${body}`;
}

function onClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  // As node's default does: answer only if no response has started on this socket (else we would
  // corrupt it), and not at all to a peer that reset the connection.
  const current = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
  if (err.code === 'ECONNRESET' || !socket.writable || current?.headersSent) {
    socket.destroy();
    return;
  }
  // Destroy once flushed: the peer may never close its side, and this connection has no parser left.
  socket.end(rawErrorResponse(CLIENT_ERRORS[err.code ?? ''] ?? BAD_REQUEST), () => socket.destroy());
}

/** The adapter's errorHandler: its RequestError is the client's fault; anything else (the app threw synchronously) is ours. */
function requestErrorResponse(err: unknown): Response {
  const [status, code, message] = err instanceof RequestError ? BAD_REQUEST : [500, 'internal', 'internal server error'];
  return new Response(JSON.stringify(errorBody(code, message)), {
    status,
    headers: { 'content-type': 'application/json', 'x-request-id': randomUUID(), connection: 'close' },
  });
}

function listen(server: Server, port: number, host: string): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve(server.address() as AddressInfo);
    });
  });
}

/** 127.0.0.0/8, ::1 and the IPv4-mapped loopback. */
function isLoopback(address: string): boolean {
  return address === '::1' || /^(::ffff:)?127\./.test(address);
}

export async function startServer(config: Config, opts: StartOptions = {}): Promise<RunningServer> {
  const logger = opts.logger ?? jsonLogger();
  const metrics = opts.metrics ?? new Registry();
  const print = opts.print ?? ((line: string) => process.stderr.write(`${line}\n`));
  const stopProcessMetrics = registerProcessMetrics(metrics);

  let adminToken = config.adminToken;
  if (adminToken === null) {
    adminToken = randomBytes(24).toString('base64url');
    print(`memlora: MEMLORA_ADMIN_TOKEN is not set; admin token for this run: ${adminToken}`);
  }
  const cfg: Config = { ...config, adminToken };

  mkdirSync(cfg.adapterDir, { recursive: true });
  const db = openDb(cfg.dbFile);
  let services: Services;
  try {
    const factory = opts.services ?? defaultServices;
    const given = typeof factory === 'function' ? await factory({ config: cfg, db, metrics, logger }) : factory;
    services = { adapterFiles: diskAdapterFiles(cfg.adapterDir), ...given };
  } catch (err) {
    db.close();
    stopProcessMetrics();
    throw err;
  }

  const lifecycle: Lifecycle = { draining: false };
  const app = createApp({ config: cfg, db, services, metrics, logger, lifecycle });
  const retention = startRetentionSweep({ db, config: cfg, logger, metrics });
  // The adapter refuses some request targets before the app sees them; errorHandler gives those our shape.
  const server = createServer(getRequestListener(app.fetch, { errorHandler: requestErrorResponse }));
  server.on('clientError', onClientError);

  let inFlight = 0;
  let drained: (() => void) | undefined;
  // A pipelined request queued behind another never gets a response (so no res 'close') when its
  // connection closes first; the socket's close settles every request still pending on it, so the
  // drain does not wait the whole deadline for them. One socket listener, however deep the pipeline.
  const pendingOn = new WeakMap<Socket, Set<() => void>>();
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    inFlight += 1;
    let pending = pendingOn.get(req.socket);
    if (!pending) {
      const created = new Set<() => void>();
      pendingOn.set(req.socket, created);
      req.socket.once('close', () => {
        for (const settle of [...created]) settle();
      });
      pending = created;
    }
    const settle = () => {
      if (!pending.delete(settle)) return;
      inFlight -= 1;
      if (inFlight === 0) drained?.();
    };
    pending.add(settle);
    res.once('close', settle);
  });

  let address: AddressInfo;
  try {
    address = await listen(server, cfg.port, cfg.host);
  } catch (err) {
    // Nothing was served: stop what the factory started (a model loading in the background...).
    for (const svc of [services.generate, services.jobs]) await svc?.close?.().catch(() => undefined);
    await retention.stop();
    db.close();
    stopProcessMetrics();
    throw err;
  }
  // Background responses an earlier run left unfinished run again once the model is ready.
  lifecycle.resume?.().catch((err: unknown) => logger.error('background responses not resumed', { err: err instanceof Error ? err.message : String(err) }));
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${host}:${address.port}`;
  logger.info('memlora listening', { url, docs: `${url}/docs`, db: cfg.dbFile, adapters: cfg.adapterDir, model: services.generate ? 'wired' : 'none', apiKey: cfg.apiKey !== null });
  if (cfg.apiKey === null && !isLoopback(address.address)) {
    logger.warn('the client routes are open on a non-loopback interface: set MEMLORA_API_KEY, or put the service behind a gateway that authenticates', { url });
  }

  const shutdownTimeoutMs = opts.shutdownTimeoutMs ?? 10_000;
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      lifecycle.draining = true;
      logger.info('shutting down', { inFlight });
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      // Requests in flight and background responses get until the deadline to finish.
      const background = lifecycle.settled?.();
      if (inFlight > 0 || background !== undefined) {
        const idle = Promise.all([inFlight > 0 ? new Promise<void>((resolve) => (drained = resolve)) : undefined, background]);
        let timer: NodeJS.Timeout | undefined;
        const deadline = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), shutdownTimeoutMs)));
        const outcome = await Promise.race([idle, deadline]);
        clearTimeout(timer);
        if (outcome === 'timeout') logger.warn('shutdown deadline passed; closing open connections', { inFlight });
      }
      server.closeAllConnections();
      await closed;
      for (const svc of [services.generate, services.jobs]) {
        try {
          await svc?.close?.();
        } catch (err) {
          logger.error('service close failed', { err: String(err) });
        }
      }
      // Closing the engine ended the background responses still running: they are stored back in the
      // queue, for the next start, before the database closes (bounded, should a service not end them).
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([lifecycle.settled?.(), new Promise<void>((resolve) => (timer = setTimeout(resolve, shutdownTimeoutMs)))]);
      clearTimeout(timer);
      await retention.stop();
      db.close();
      stopProcessMetrics();
      logger.info('stopped');
    })());

  if (opts.handleSignals ?? true) {
    let signalled = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (signalled) {
        // A second signal means "now": skip the drain.
        process.exit(130);
      }
      signalled = true;
      logger.info('signal received', { signal });
      close().then(
        () => process.exit(0),
        (err) => {
          logger.error('shutdown failed', { err: String(err) });
          process.exit(1);
        },
      );
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  }

  return { url, port: address.port, adminToken, app, db, metrics, close };
}
