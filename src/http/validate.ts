/**
 * Reading and validating what a request carries: the JSON body (size-limited, strict UTF-8, depth
 * bounded), the query string and the user id path parameter. Each failure is an ApiError with the
 * documented code.
 */
import type { Context } from 'hono';
import type { z } from 'zod';
import { ApiError } from './errors.js';
import { isValidUserId, MAX_JSON_DEPTH } from './schemas.js';

export function bodyTooLarge(limit: number): ApiError {
  return new ApiError(413, 'body_too_large', `request body exceeds ${limit} bytes`, { limitBytes: limit });
}

/** Reads the raw body, stopping as soon as it passes `limit` bytes (Content-Length may be absent or lie). */
export async function readLimited(c: Context, limit: number): Promise<Uint8Array> {
  const declared = c.req.header('content-length');
  if (declared !== undefined && Number(declared) > limit) throw bodyTooLarge(limit);
  const body = c.req.raw.body;
  if (!body) return new Uint8Array(0);
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    let step: Awaited<ReturnType<typeof reader.read>>;
    try {
      step = await reader.read();
    } catch {
      // The connection closed mid-body (a client giving up, or a lying Content-Length): not a server fault.
      throw new ApiError(499, 'cancelled', 'the request body ended before its declared length');
    }
    const { done, value } = step;
    if (done) break;
    total += value.byteLength;
    if (total > limit) {
      await reader.cancel().catch(() => {});
      throw bodyTooLarge(limit);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks);
}

/** Iterative depth check: recursive validators and JSON.stringify overflow the stack on deep input. */
export function jsonDepthExceeds(value: unknown, maxDepth: number): boolean {
  const stack: Array<[unknown, number]> = [[value, 1]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    if (depth > maxDepth) return true;
    for (const child of Array.isArray(v) ? v : Object.values(v)) stack.push([child, depth + 1]);
  }
  return false;
}

const LONE_SURROGATE = /[\uD800-\uDFFF]/u;

/**
 * The first key or string that cannot be stored faithfully: a `__proto__` key (object builders
 * downstream turn it into a prototype and drop it silently) or a lone surrogate escape such as
 * "\ud800" (not representable in UTF-8: SQLite would store U+FFFD instead of what was acknowledged).
 */
export function unstorableJson(value: unknown): { path: string; code: 'forbidden_key' | 'ill_formed_unicode'; message: string } | null {
  const stack: Array<[unknown, string[]]> = [[value, []]];
  while (stack.length > 0) {
    const [v, path] = stack.pop()!;
    if (typeof v === 'string') {
      if (LONE_SURROGATE.test(v)) return { path: path.join('.'), code: 'ill_formed_unicode', message: 'string contains a lone UTF-16 surrogate' };
      continue;
    }
    if (v === null || typeof v !== 'object') continue;
    for (const [k, child] of Object.entries(v)) {
      const p = [...path, k];
      if (!Array.isArray(v)) {
        if (k === '__proto__') return { path: p.join('.'), code: 'forbidden_key', message: 'the key "__proto__" is not allowed' };
        if (LONE_SURROGATE.test(k)) return { path: p.join('.'), code: 'ill_formed_unicode', message: 'key contains a lone UTF-16 surrogate' };
      }
      stack.push([child, p]);
    }
  }
  return null;
}

/** Issues reported per response; a batch of 1,000 bad items should not answer with a megabyte of errors. */
const MAX_ISSUES = 100;

export function zodDetails(error: z.ZodError): { issues: Array<{ path: string; message: string; code: string }>; truncated?: number } {
  const issues = error.issues.slice(0, MAX_ISSUES).map((i) => ({
    path: i.path.map(String).join('.'),
    message: i.message,
    code: i.code,
  }));
  const dropped = error.issues.length - issues.length;
  return dropped > 0 ? { issues, truncated: dropped } : { issues };
}

export function validationFailed(error: z.ZodError, where: 'body' | 'query'): ApiError {
  const paths = [...new Set(error.issues.map((i) => i.path.map(String).join('.') || `(${where})`))];
  const shown = paths.length > 10 ? `${paths.slice(0, 10).join(', ')} and ${paths.length - 10} more` : paths.join(', ');
  return new ApiError(422, 'validation_failed', `invalid ${where}: ${shown}`, zodDetails(error));
}

/**
 * Parses the JSON body and validates it. An empty body counts as `emptyAs` when given (routes whose
 * body is optional), otherwise it is `invalid_json`.
 */
export async function readJson<S extends z.ZodType>(
  c: Context,
  schema: S,
  limit: number,
  emptyAs?: unknown,
): Promise<z.output<S>> {
  const bytes = await readLimited(c, limit);
  let value: unknown;
  if (bytes.byteLength === 0 || (emptyAs !== undefined && /^\s*$/.test(Buffer.from(bytes).toString('latin1')))) {
    if (emptyAs === undefined) throw new ApiError(400, 'invalid_json', 'request body is empty; expected a JSON object');
    value = emptyAs;
  } else {
    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(bytes);
    } catch {
      throw new ApiError(400, 'invalid_json', 'request body is not valid UTF-8');
    }
    try {
      value = JSON.parse(text);
    } catch (err) {
      throw new ApiError(400, 'invalid_json', `request body is not valid JSON: ${(err as Error).message}`);
    }
  }
  if (jsonDepthExceeds(value, MAX_JSON_DEPTH)) {
    throw new ApiError(422, 'validation_failed', `request body nests deeper than ${MAX_JSON_DEPTH} levels`, {
      issues: [{ path: '', message: `nesting deeper than ${MAX_JSON_DEPTH}`, code: 'too_deep' }],
    });
  }
  const unstorable = unstorableJson(value);
  if (unstorable) {
    throw new ApiError(422, 'validation_failed', `invalid body: ${unstorable.path} (${unstorable.message})`, { issues: [unstorable] });
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw validationFailed(parsed.error, 'body');
  return parsed.data;
}

/** Parses the query: a key in `lists` as all its values (the key repeated, as OpenAI's clients send `include[]`), any other as its first. */
export function parseQuery<S extends z.ZodType>(c: Context, schema: S, lists: readonly string[] = []): z.output<S> {
  const query: Record<string, string | string[]> = { ...c.req.query() };
  for (const key of lists) {
    const all = c.req.queries(key);
    if (all !== undefined) query[key] = all;
  }
  const parsed = schema.safeParse(query);
  if (!parsed.success) throw validationFailed(parsed.error, 'query');
  return parsed.data;
}

/** The {userId} path parameter, validated: 422 `invalid_user_id` otherwise. */
export function userIdParam(c: Context): string {
  const id = c.req.param('userId') ?? '';
  if (!isValidUserId(id)) {
    throw new ApiError(
      422,
      'invalid_user_id',
      'user ids are 1-128 characters of A-Z a-z 0-9 . _ - and not only dots',
      { userId: id.length > 200 ? `${id.slice(0, 200)}…` : id },
    );
  }
  return id;
}
