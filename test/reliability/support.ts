/**
 * Shared pieces of the reliability suites: a raw-socket HTTP client (for what fetch refuses to send),
 * a snapshot of everything the service can write (row counts, a content digest, the adapter files),
 * and a GenerateService double with a context window and slow modes.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { join, relative } from 'node:path';
import type { Db } from '../../src/db/client.js';
import { generateRequestSchema } from '../../src/http/schemas.js';
import { ServiceError, type GenerateRequest, type GenerateService } from '../../src/http/services.js';
import { fakeGenerate, type FakeGenerate } from '../http/fake-generate.js';

// ---------------------------------------------------------------------------------------------
// Raw HTTP over a socket

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/**
 * Writes `data` to host:port and collects what comes back until the server closes the connection
 * or `idleMs` pass without a byte. `halfClose` ends our side after writing (a client that gives up).
 */
export function rawExchange(
  port: number,
  data: string | Buffer,
  opts: { idleMs?: number; halfClose?: boolean } = {},
): Promise<{ text: string; responses: RawResponse[]; closedByServer: boolean }> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let closedByServer = false;
    let timer: NodeJS.Timeout | undefined;
    const finish = () => {
      clearTimeout(timer);
      socket.destroy();
      const text = Buffer.concat(chunks).toString('latin1');
      resolve({ text, responses: parseResponses(text), closedByServer });
    };
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(finish, opts.idleMs ?? 400);
    };
    socket.on('data', (d) => {
      chunks.push(d);
      arm();
    });
    socket.on('end', () => (closedByServer = true));
    socket.on('close', finish);
    socket.on('error', () => {});
    socket.write(data);
    if (opts.halfClose) socket.end();
    arm();
  });
}

/** Splits a byte stream of HTTP/1.1 responses (Content-Length or chunked bodies). */
export function parseResponses(text: string): RawResponse[] {
  const out: RawResponse[] = [];
  let rest = text;
  while (rest.startsWith('HTTP/1.')) {
    const headEnd = rest.indexOf('\r\n\r\n');
    if (headEnd < 0) break;
    const [statusLine, ...lines] = rest.slice(0, headEnd).split('\r\n');
    const headers: Record<string, string> = {};
    for (const l of lines) {
      const i = l.indexOf(':');
      headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
    }
    rest = rest.slice(headEnd + 4);
    let body = '';
    if (headers['transfer-encoding'] === 'chunked') {
      for (;;) {
        const lineEnd = rest.indexOf('\r\n');
        if (lineEnd < 0) break;
        const size = parseInt(rest.slice(0, lineEnd), 16);
        rest = rest.slice(lineEnd + 2);
        if (!(size > 0)) {
          rest = rest.slice(2);
          break;
        }
        body += rest.slice(0, size);
        rest = rest.slice(size + 2);
      }
    } else {
      const n = Number(headers['content-length'] ?? 0);
      body = rest.slice(0, n);
      rest = rest.slice(n);
    }
    out.push({ status: Number(statusLine.split(' ')[1]), headers, body: Buffer.from(body, 'latin1').toString('utf8') });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// What the service has written

export interface Snapshot {
  /** Rows per table (base tables, plus the FTS index's per-document table). */
  counts: Record<string, number>;
  /** SHA-256 over every row of every base table, in rowid order. */
  digest: string;
  /** Every file below the adapter root, relative to it. */
  files: string[];
}

function baseTables(db: Db): string[] {
  return (
    db.sqlite
      .prepare(
        `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'
           AND name NOT LIKE 'history_fts%' AND name NOT LIKE '__drizzle%' ORDER BY name`,
      )
      .all() as Array<{ name: string }>
  ).map((r) => r.name);
}

export function listFiles(root: string): string[] {
  if (!existsSync(root)) return [];
  const out: string[] = [];
  const stack = [root];
  while (stack.length > 0) {
    const dir = stack.pop()!;
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) stack.push(p);
      else out.push(`${relative(root, p)}:${statSync(p).size}`);
    }
  }
  return out.sort();
}

export function snapshot(db: Db, adapterDir: string): Snapshot {
  const counts: Record<string, number> = {};
  const hash = createHash('sha256');
  for (const t of baseTables(db)) {
    const rows = db.sqlite.prepare(`SELECT * FROM "${t}" ORDER BY rowid`).raw().all();
    counts[t] = rows.length;
    hash.update(`${t}\u0000${JSON.stringify(rows)}\u0000`);
  }
  counts.history_fts_docsize = (db.sqlite.prepare('SELECT count(*) AS n FROM history_fts_docsize').get() as { n: number }).n;
  return { counts, digest: hash.digest('hex'), files: listFiles(adapterDir) };
}

/** PRAGMA integrity_check, foreign keys and the FTS index's own check, as one list of problems. */
export function dbProblems(db: Db): string[] {
  const problems: string[] = [];
  const integrity = db.sqlite.pragma('integrity_check', { simple: true });
  if (integrity !== 'ok') problems.push(`integrity_check: ${String(integrity)}`);
  const fk = db.sqlite.pragma('foreign_key_check') as unknown[];
  if (fk.length > 0) problems.push(`foreign_key_check: ${JSON.stringify(fk)}`);
  try {
    db.sqlite.prepare(`INSERT INTO history_fts(history_fts) VALUES ('integrity-check')`).run();
  } catch (err) {
    problems.push(`fts integrity-check: ${(err as Error).message}`);
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------
// A generation double with a context window

export interface ContextFake extends FakeGenerate {
  /** Requests that reached the service although the HTTP layer should have refused them. */
  violations: string[];
  contextTokens: number;
}

/** Whitespace-separated words, plus a few tokens of chat template per message. */
export function promptTokens(req: GenerateRequest): number {
  const words = (s: string) => s.split(/\s+/).filter(Boolean).length;
  if (typeof req.prompt === 'string') return words(req.prompt);
  if (req.prompt !== undefined) return req.prompt.length;
  return (req.messages ?? []).reduce((n, m) => n + 4 + words(m.content), 0);
}

/**
 * The contract the real engine follows for prompts longer than its context window: it refuses the
 * request with ServiceError `prompt_too_long` (422), before generating anything. It also checks that
 * whatever reaches it passed the request schema (the HTTP layer's job).
 */
export function contextFake(contextTokens = 512): ContextFake {
  const base = fakeGenerate();
  const fake = base as ContextFake;
  fake.violations = [];
  fake.contextTokens = contextTokens;
  const check = (req: GenerateRequest) => {
    // toolCalls is set by the routes that offer tools (chat completions, responses), never by a /v1/generate body.
    const { toolCalls, ...asked } = req;
    if (toolCalls !== undefined && (typeof toolCalls.schema !== 'object' || typeof toolCalls.several !== 'boolean')) fake.violations.push(`service received malformed toolCalls: ${JSON.stringify(toolCalls).slice(0, 300)}`);
    const again = generateRequestSchema.safeParse(asked);
    if (!again.success) fake.violations.push(`service received an invalid request: ${JSON.stringify(again.error.issues).slice(0, 300)}`);
    for (const [k, v] of Object.entries(req)) {
      if (typeof v === 'number' && !Number.isFinite(v)) fake.violations.push(`service received ${k}=${v}`);
    }
    const n = promptTokens(req);
    if (n > contextTokens) {
      throw new ServiceError('prompt_too_long', `prompt has ${n} tokens; the context window holds ${contextTokens}`, {
        details: { promptTokens: n, contextTokens },
      });
    }
  };
  const generate = base.generate.bind(base);
  const stream = base.stream.bind(base);
  fake.generate = async (req, signal) => {
    check(req);
    return generate(req, signal);
  };
  fake.stream = (req, signal) => {
    check(req);
    return stream(req, signal);
  };
  return fake;
}

/** A GenerateService whose replies take `delayMs` (or wait for abort when delayMs is Infinity). */
export function slowGenerate(delayMs: number): GenerateService & { started: number; aborted: number; finished: number } {
  const base = fakeGenerate();
  const svc = {
    ...base,
    started: 0,
    aborted: 0,
    finished: 0,
    generate: async (req: GenerateRequest, signal: AbortSignal) => {
      svc.started += 1;
      await new Promise<void>((resolve) => {
        const onAbort = () => {
          svc.aborted += 1;
          clearTimeout(timer);
          resolve();
        };
        const timer = Number.isFinite(delayMs)
          ? setTimeout(() => {
              signal.removeEventListener('abort', onAbort);
              resolve();
            }, delayMs)
          : undefined;
        signal.addEventListener('abort', onAbort, { once: true });
      });
      if (signal.aborted) throw new ServiceError('cancelled', 'client went away');
      svc.finished += 1;
      return base.generate(req, signal);
    },
  };
  return svc;
}
