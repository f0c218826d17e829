/**
 * Hostile input at every route of openapi.yaml (read from the document, so a new route is fuzzed
 * the day it is documented). Each case goes through the real app over a real SQLite file, and after
 * each one the suite checks: no 5xx, the documented error shape and an x-request-id, a status the
 * document lists for the route, a 2xx body that validates, no error logged, Object.prototype intact,
 * and that the database and the adapter directory changed exactly as a success of that route would
 * change them (nothing at all for a 4xx). The seed is fixed and printed; MEMLORA_FUZZ_SEED and
 * MEMLORA_FUZZ_RUNS override it and the number of runs per route.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { createAdapterVersion } from '../../src/db/queries/adapters.js';
import { appendHistory, countHistory } from '../../src/db/queries/history.js';
import { createJob } from '../../src/db/queries/jobs.js';
import { storeResponse } from '../../src/db/queries/responses.js';
import { createConversation } from '../../src/db/queries/conversations.js';
import { createUser, userExists } from '../../src/db/queries/users.js';
import { diskAdapterFiles } from '../../src/http/adapter-files.js';
import { OPENAPI_FILE } from '../../src/http/app.js';
import * as schemas from '../../src/http/schemas.js';
import { ADAPTER_FILES, type EncodedAdapter, encodeAdapter, maxAdapterWeightsBytes } from '../../src/lora/format.js';
import { userAdapterDir, userDirName } from '../../src/lora/paths.js';
import { AdapterStore } from '../../src/lora/store.js';
import { type UploadBody, uploadAdapterBody } from '../../src/serve/adapter-upload.js';
import { randomStoredAdapter, serveConfig } from '../serve/fixtures.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { memoryLogger } from '../../src/http/logger.js';
import { parseSse } from '../http/fake-generate.js';
import { ADMIN_TOKEN, makeHarness, type Harness } from '../http/helpers.js';
import { contextFake, dbProblems, listFiles, rawExchange, snapshot, type ContextFake, type Snapshot } from './support.js';

const SEED = Number(process.env.MEMLORA_FUZZ_SEED ?? 20_250_107);
const RUNS = Number(process.env.MEMLORA_FUZZ_RUNS ?? 100);
console.log(`fuzz-routes: fast-check seed ${SEED}, ${RUNS} runs per route (MEMLORA_FUZZ_SEED / MEMLORA_FUZZ_RUNS to change)`);

const BODY_LIMIT = 32 * 1024;

/**
 * The base model the adapter routes check files against: the serving tests' tiny GPT-2, its config
 * alone (nothing runs). Uploads are checked and written by the real code, against a real store.
 */
const FUZZ_MODEL = { config: serveConfig(), name: 'fuzz' };
/** A valid weights file of that model: the upload route's well-formed body. */
const UPLOAD_WEIGHTS = encodeAdapter(randomStoredAdapter(FUZZ_MODEL.config, [1], 1, 3), FUZZ_MODEL).weights;
let fuzzStore: AdapterStore;

/** An adapter version's files as the store writes them, synchronously (the seed is): its path and checksum for the row. */
function writeStoredSync(userId: string, seed: number): { path: string; sha256: string } {
  const files = encodeAdapter(randomStoredAdapter(FUZZ_MODEL.config, [0, 1], 1, seed), FUZZ_MODEL);
  const path = `${userDirName(userId)}/a-${Date.now()}-${randomBytes(6).toString('hex')}`;
  const dir = join(h.config.adapterDir, ...path.split('/'));
  mkdirSync(dir, { recursive: true });
  for (const key of Object.keys(ADAPTER_FILES) as Array<keyof EncodedAdapter>) writeFileSync(join(dir, ADAPTER_FILES[key]), files[key]);
  return { path, sha256: createHash('sha256').update(files.weights).digest('hex') };
}
const CONTEXT_TOKENS = 512;

// ---------------------------------------------------------------------------------------------
// The routes, from the document

type Obj = Record<string, any>;
const doc = parseYaml(readFileSync(OPENAPI_FILE, 'utf8')) as Obj;
const METHODS = ['get', 'put', 'post', 'delete', 'patch'] as const;

function deref(v: Obj): Obj {
  if (v && typeof v.$ref === 'string') {
    let cur: any = doc;
    for (const p of v.$ref.slice(2).split('/')) cur = cur[p];
    return deref(cur);
  }
  return v;
}

interface Operation {
  key: string;
  method: string;
  template: string;
  pathParams: string[];
  queryParams: string[];
  /** Each documented query parameter's example as a query string (with the parameters it goes with). */
  queryExamples: string[];
  admin: boolean;
  /** Documented request examples (JSON values); empty when the route takes no body. */
  examples: unknown[];
  /** The body is a file sent as it is (application/octet-stream): an adapter's weights. */
  binary: boolean;
  bodyRequired: boolean;
  statuses: Set<number>;
  /** zod schemas the document names for each 2xx JSON response (any one must accept the body). */
  success: Map<number, z.ZodType[]>;
}

function schemaNamed(name: unknown): z.ZodType {
  const s = (schemas as Record<string, unknown>)[String(name)];
  if (!s) throw new Error(`openapi names schema ${String(name)} that src/http/schemas.ts lacks`);
  return s as z.ZodType;
}

function operationsOf(d: Obj): Operation[] {
  const ops: Operation[] = [];
  for (const [template, item] of Object.entries(d.paths as Obj)) {
    for (const m of METHODS) {
      const op = item[m];
      if (!op) continue;
      const params = [...(item.parameters ?? []), ...(op.parameters ?? [])].map(deref);
      const body = op.requestBody ? deref(op.requestBody).content?.['application/json'] : undefined;
      const examples: unknown[] = [];
      if (body?.example !== undefined) examples.push(body.example);
      for (const ex of Object.values((body?.examples ?? {}) as Obj)) examples.push(ex.value);
      const success = new Map<number, z.ZodType[]>();
      for (const [status, r] of Object.entries(op.responses as Obj)) {
        const media = deref(r).content?.['application/json'];
        if (Number(status) >= 300 || !media) continue;
        const names = [media['x-zod-schema'], ...Object.values((media.examples ?? {}) as Obj).map((e) => e['x-zod-schema'])].filter(Boolean);
        success.set(Number(status), names.map(schemaNamed));
      }
      ops.push({
        key: `${m.toUpperCase()} ${template}`,
        method: m.toUpperCase(),
        template,
        pathParams: [...template.matchAll(/\{(\w+)\}/g)].map((x) => x[1]),
        queryParams: params.filter((p) => p.in === 'query').map((p) => p.name),
        queryExamples: params
          .filter((p) => p.in === 'query' && p.example !== undefined)
          .map((p) => `?${new URLSearchParams({ ...((p['x-example-with'] ?? {}) as Record<string, string>), [p.name]: String(p.example) })}`),
        admin: Array.isArray(op.security) && op.security.length > 0,
        examples,
        binary: Boolean(op.requestBody && deref(op.requestBody).content?.['application/octet-stream']),
        bodyRequired: Boolean(op.requestBody && deref(op.requestBody).required),
        statuses: new Set(Object.keys(op.responses).map(Number)),
        success,
      });
    }
  }
  return ops;
}

const operations = operationsOf(doc);

/** Error codes each status may carry; a new code must be added here on purpose. */
const CODES_BY_STATUS: Record<number, string[]> = {
  400: ['invalid_json', 'bad_request', 'invalid_adapter'],
  408: ['request_timeout'],
  431: ['headers_too_large'],
  401: ['unauthorized'],
  404: ['not_found', 'user_not_found', 'job_not_found', 'adapter_not_found', 'model_not_found', 'history_item_not_found', 'response_not_found', 'conversation_not_found', 'item_not_found', 'adapter_file_not_found'],
  405: ['method_not_allowed'],
  409: ['job_active', 'job_finished', 'adapter_unusable', 'adapter_active', 'adapters_disabled', 'conversations_disabled', 'background_disabled', 'response_in_progress', 'response_not_cancellable', 'stream_unavailable', 'conversation_locked'],
  413: ['body_too_large'],
  422: ['validation_failed', 'invalid_user_id', 'invalid_cursor', 'prompt_too_long', 'token_out_of_range', 'unsupported_schema', 'unsupported_regex', 'unsupported_grammar', 'invalid_version', 'invalid_item_id', 'invalid_adapter', 'adapter_model_mismatch'],
  429: ['queue_full', 'user_queue_full', 'quota_exceeded'],
};
/** Statuses the document promises for every route (info.description): routing errors and the body limit. */
const GLOBAL_STATUSES = new Set([404, 405, 413]);

// ---------------------------------------------------------------------------------------------
// Building hostile requests

/** A JSON token written verbatim: lets bodies hold 1e999, NaN or a 40,000-deep array. */
class Raw {
  constructor(readonly text: string) {}
}

function toJsonText(v: unknown): string {
  if (v instanceof Raw) return v.text;
  if (typeof v === 'number') return Number.isNaN(v) ? 'NaN' : Number.isFinite(v) ? JSON.stringify(v) : v > 0 ? 'Infinity' : '-Infinity';
  if (Array.isArray(v)) return `[${v.map(toJsonText).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    return `{${Object.entries(v)
      .map(([k, x]) => `${JSON.stringify(k)}:${toJsonText(x)}`)
      .join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}

const pct = (bytes: Uint8Array): string => [...bytes].map((b) => `%${b.toString(16).padStart(2, '0').toUpperCase()}`).join('');
/** Percent-encodes every UTF-8 byte (a lone surrogate becomes EF BF BD, as a browser would send it). */
const encodeAll = (s: string): string => pct(Buffer.from(s, 'utf8'));

/** Path segments as they appear on the wire: traversal, encodings, lookalikes, collisions, injection. */
const HOSTILE_SEGMENTS = [
  '..', '.', '...', '%2e%2e', '%2E%2E', '.%2e', '%2e.', '..%2f..%2fetc%2fpasswd', '%2f', 'a%2fb', '%2fetc%2fpasswd',
  '..%5c..%5cwindows', 'a%5cb', '%5c', '%c0%ae%c0%ae', '%c0%af', '%e0%80%ae', '%f0%80%80%ae', '%c1%9c', '%ff', '%fe%ff',
  '%00', 'alice%00', 'alice%00.json', '%20alice', 'alice%20', 'alice%09', 'alice.', 'alice..', 'ALICE', 'Alice', 'alice~1',
  '%EF%BD%81%EF%BD%8C%EF%BD%89%EF%BD%83%EF%BD%85', '%D0%B0lice', 'alic%C3%A9', 'alice%CC%81', '%E2%80%AEecila', 'alice%E2%80%8B',
  '%EF%AC%81', '%0d%0aSet-Cookie:%20x=1', '%0aX-Injected:1', 'x'.repeat(129), 'a'.repeat(4000), '%25', '%', '%%', '%2', '%u002e',
  '%252e%252e', '~', '*', '$(id)', "'%20OR%201=1--", '%3Cscript%3E', 'con', 'aux.txt', 'job_0000000000aaaaaaaaaaaaaaaa',
  'job_%2e%2e', 'job_', '%3F', '%23', 'a;b', 'a%3Bb',
];

const idChar = fc.constantFrom(...'ABCXYZabcxyz0189._-');
const validishId = fc.string({ unit: idChar, minLength: 1, maxLength: 130 });
/** Any UTF-16 code unit, lone surrogates included. */
const anyCodeUnit = fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c));

const KNOWN_JOB = '{{job}}';
const KNOWN_ITEM = '{{item}}';
const KNOWN_RESPONSE = '{{response}}';
const KNOWN_CONVERSATION = '{{conversation}}';
const KNOWN_CONVERSATION_ITEM = '{{conversation-item}}';

/** The segment naming what the fixtures keep (the latest job, item, response, conversation; alice or bob), for a well-formed case. */
function fixtureSegment(param: string, conversationRoute: boolean): fc.Arbitrary<string> {
  const one: Record<string, string> = { jobId: KNOWN_JOB, responseId: KNOWN_RESPONSE, conversationId: KNOWN_CONVERSATION, model: 'memlora', version: '2' };
  if (param === 'itemId') return fc.constant(conversationRoute ? KNOWN_CONVERSATION_ITEM : KNOWN_ITEM);
  if (param === 'file') return fc.constantFrom(...schemas.ADAPTER_DOWNLOADS);
  return param in one ? fc.constant(one[param]) : fc.constantFrom('alice', 'bob');
}

function segmentArb(param: string, conversationRoute: boolean): fc.Arbitrary<string> {
  // The fixtures' segment; a history item and a version also as ids that name nothing or are not ids.
  const known =
    param === 'itemId' && !conversationRoute
      ? fc.constantFrom(KNOWN_ITEM, KNOWN_ITEM, KNOWN_ITEM, '1', '0', '-1', '99999999999')
      : param === 'version'
        ? fc.constantFrom('2', '2', '2', '1', '01', '-1', '1.0', '99999999999')
        : fixtureSegment(param, conversationRoute);
  return fc.oneof(
    { weight: 5, arbitrary: known as fc.Arbitrary<string> },
    { weight: 2, arbitrary: validishId.map(encodeURIComponent) },
    { weight: 1, arbitrary: fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: 10, maxLength: 40 }).map((x) => `job_${x}`) },
    { weight: 3, arbitrary: fc.constantFrom(...HOSTILE_SEGMENTS) },
    { weight: 1, arbitrary: fc.string({ unit: anyCodeUnit, minLength: 1, maxLength: 24 }).map(encodeAll) },
    { weight: 1, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 12 }).map(pct) },
  );
}

const HOSTILE_QUERY_VALUES = [
  '1', '0', '-1', '1.5', '1e3', '1e999', 'NaN', 'Infinity', '-0', '%2B1', '%201', '1%20', '0x10', '9'.repeat(40), '%D9%A1%D9%A2',
  '', 'all', 'any', 'none', 'dialogue', 'profile', 'queued', 'running', 'alice', '..', '%2e%2e', '%ff', '%00', 'a%0d%0ab',
  'vegetarian%20dinner', '%22a%22%20OR%20b', 'NEAR(a%20b)', 'a*', '%5E', 'MTAx', 'ImFsaWNlIg', 'WzEsImpvYl8iXQ', 'W10', 'eyJ9',
  'x'.repeat(1025), '1000', '1001', '500', '501',
];

function queryArb(op: Operation): fc.Arbitrary<string> {
  const names = [...op.queryParams, 'limit', 'cursor', 'q', 'extra', '__proto__', 'constructor'];
  const key = fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...names) }, { weight: 1, arbitrary: fc.string({ maxLength: 6 }).map(encodeURIComponent) });
  const value = fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(...HOSTILE_QUERY_VALUES) },
    { weight: 1, arbitrary: fc.string({ unit: anyCodeUnit, maxLength: 12 }).map(encodeAll) },
    { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }).map((v) => Buffer.from(JSON.stringify(v) ?? 'null').toString('base64url')) },
  );
  const random = fc.array(fc.tuple(key, value), { maxLength: 4 }).map((pairs) => (pairs.length === 0 ? '' : `?${pairs.map(([k, v]) => `${k}=${v}`).join('&')}`));
  // The documented examples too: a route whose query is required is reached past its validation.
  return op.queryExamples.length === 0 ? random : fc.oneof({ weight: 4, arbitrary: random }, { weight: 1, arbitrary: fc.constantFrom(...op.queryExamples) });
}

const CONTENT_TYPES = [
  'application/json', 'application/json; charset=utf-8', 'application/json; charset=latin1', 'application/json; charset=utf-16',
  'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/xml', 'application/octet-stream',
  '', 'json', 'application/json, text/html', 'application/merge-patch+json',
];

interface Headers0 {
  [name: string]: string;
}

function headersArb(op: Operation): fc.Arbitrary<Headers0> {
  const auth = op.admin
    ? fc.oneof(
        { weight: 8, arbitrary: fc.constant(`Bearer ${ADMIN_TOKEN}`) },
        { weight: 1, arbitrary: fc.constantFrom('', 'Bearer', `Bearer ${ADMIN_TOKEN}x`, `Basic ${ADMIN_TOKEN}`, ADMIN_TOKEN) },
      )
    : fc.constantFrom('', `Bearer ${ADMIN_TOKEN}`, 'Bearer nope');
  const requestId = fc.oneof(
    fc.constantFrom('', 'abc-1', 'x'.repeat(129), 'a b', '../../etc/passwd', '<script>', 'id\u00ff', '%0d%0aSet-Cookie: a=b', 'a,b', 'a;b'),
    fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 140 }),
  );
  return fc
    .record({
      'content-type': fc.constantFrom(...CONTENT_TYPES),
      authorization: auth,
      'x-request-id': requestId,
      accept: fc.constantFrom('', 'application/json', 'text/event-stream', '*/*', 'text/html'),
      'x-forwarded-for': fc.constantFrom('', '127.0.0.1', '::1, 10.0.0.1', 'a'.repeat(300)),
    })
    .map((h) => Object.fromEntries(Object.entries(h).filter(([, v]) => v !== '')));
}

/** Values to put where a field of a valid body was. */
const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.constantFrom(
      ...[
        '1e308', '1e999', '-1e999', '-1', '0', '-0', '0.5', '1.5', '2048', '2049', '1e4', '9007199254740991', '9007199254740993',
        '-9007199254740993', '1e-400', '1E2', 'NaN', 'Infinity', '-Infinity', '0x10', '01', '.5', '+1', 'null', 'true', 'false', '[]',
        '{}', '""', '"1"', '"NaN"', '"Infinity"', '"\\u0000"', '"a\\u0000b"', '"\\ud800"', '"x\\udc00y"', '"\\u001b[31m\\u0007"',
        '"\\r\\nX-Injected: 1"', '"alice"', '"ALICE"', '"alice."', '"\\uff41lice"', '"\\u0430lice"', '"../../etc/passwd"',
        '"..\\\\..\\\\win"', '"%2e%2e"', '"__proto__"', '[null]', '[1,2,3]', '{"__proto__":{"polluted":1}}',
        '{"constructor":{"prototype":{"polluted":1}}}',
      ].map((t) => new Raw(t)),
    ),
  },
  { weight: 2, arbitrary: fc.double() },
  { weight: 1, arbitrary: fc.bigInt({ min: -(10n ** 30n), max: 10n ** 30n }).map((b) => new Raw(b.toString())) },
  { weight: 2, arbitrary: fc.string({ unit: anyCodeUnit, maxLength: 40 }) },
  // Long text: a prompt past the model's context window, or text past the history item limit.
  { weight: 2, arbitrary: fc.constantFrom(600, 3000, 5500).map((n) => 'word '.repeat(n)) },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
);

/** Field names worth trying on any body: sampling parameters, limits, identities, known keys. */
const EXTRA_FIELDS = [
  'maxTokens', 'temperature', 'topP', 'topK', 'seed', 'repetitionPenalty', 'stop', 'stream', 'mode', 'limit', 'max_tokens',
  'max_completion_tokens', 'top_p', 'n', 'user', 'userId', 'prompt', 'messages', 'budget', 'initialPoints', 'force', 'metadata',
  'items', '__proto__', 'constructor', 'prototype',
];

type PathStep = string | number;

function pathsOf(v: unknown, prefix: PathStep[] = [], out: PathStep[][] = []): PathStep[][] {
  if (v !== null && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      const p = [...prefix, Array.isArray(v) ? Number(k) : k];
      out.push(p);
      pathsOf(x, p, out);
    }
  }
  return out;
}

function setAt(root: unknown, path: PathStep[], value: unknown, remove: boolean): unknown {
  if (path.length === 0) return value;
  const copy: any = Array.isArray(root) ? [...root] : root !== null && typeof root === 'object' ? { ...(root as object) } : {};
  const [head, ...rest] = path;
  if (rest.length === 0) {
    if (remove) delete copy[head];
    else Object.defineProperty(copy, head, { value, enumerable: true, writable: true, configurable: true });
  } else {
    copy[head] = setAt(copy[head], rest, value, remove);
  }
  return copy;
}

/** A documented example with one to three fields replaced, removed or added. */
function mutatedBody(op: Operation): fc.Arbitrary<string> {
  return fc
    .tuple(fc.constantFrom(...op.examples), fc.array(fc.tuple(fc.nat(), fc.constantFrom(...EXTRA_FIELDS), hostileValue, fc.nat(9)), { minLength: 1, maxLength: 3 }))
    .map(([example, edits]) => {
      let body: unknown = example;
      for (const [pick, extra, value, how] of edits) {
        const paths = pathsOf(body);
        if (how < 4 && paths.length > 0) body = setAt(body, paths[pick % paths.length], value, false);
        else if (how < 6 && paths.length > 0) body = setAt(body, paths[pick % paths.length], undefined, true);
        else {
          // An added field: at the top level or inside a nested object (an item, a message, metadata).
          const objects = [[], ...paths].filter((p) => {
            let cur: any = body;
            for (const s of p) cur = cur?.[s];
            return cur !== null && typeof cur === 'object' && !Array.isArray(cur);
          });
          body = setAt(body, [...objects[pick % objects.length], extra], value, false);
        }
      }
      return toJsonText(body);
    });
}

/** Nesting, duplicate keys, prototype keys: what JSON parsers and object builders trip on. */
function structureBody(op: Operation): fc.Arbitrary<string> {
  const example = fc.constantFrom(...op.examples);
  const deep = fc.tuple(example, fc.constantFrom(31, 33, 200, 40_000), fc.boolean(), fc.nat()).map(([ex, depth, arrays, pick]) => {
    const nest = arrays ? new Raw(`${'['.repeat(depth)}${']'.repeat(depth)}`) : new Raw(`${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`);
    const paths = pathsOf(ex);
    return toJsonText(paths.length === 0 ? nest : setAt(ex, paths[pick % paths.length], nest, false));
  });
  const duplicate = fc.tuple(example, fc.nat(), hostileValue, fc.boolean()).map(([ex, pick, value, before]) => {
    const text = toJsonText(ex);
    const keys = ex !== null && typeof ex === 'object' ? Object.keys(ex) : [];
    if (keys.length === 0 || !text.startsWith('{')) return text;
    const dup = `${JSON.stringify(keys[pick % keys.length])}:${toJsonText(value)}`;
    return before ? `{${dup},${text.slice(1)}` : `${text.slice(0, -1)},${dup}}`;
  });
  const proto = fc
    .tuple(example, fc.nat(), fc.constantFrom('__proto__', 'constructor', 'prototype', '__defineGetter__', 'hasOwnProperty', 'toString'))
    .map(([ex, pick, key]) => {
      const objects = [[], ...pathsOf(ex)].filter((p) => {
        let cur: any = ex;
        for (const s of p) cur = cur?.[s];
        return cur !== null && typeof cur === 'object' && !Array.isArray(cur);
      });
      const payload = key === 'constructor' ? new Raw('{"prototype":{"polluted":"yes"}}') : new Raw('{"polluted":"yes","isAdmin":true}');
      return toJsonText(setAt(ex, [...objects[pick % objects.length], key], payload, false));
    });
  return fc.oneof(deep, duplicate, proto);
}

/** Bytes that are not (UTF-8) JSON, or almost are. */
function byteBody(op: Operation): fc.Arbitrary<Uint8Array | string> {
  const bad = fc.constantFrom(
    [0xc0, 0xae], [0xff], [0xfe, 0xff], [0xed, 0xa0, 0x80], [0xf8, 0x88, 0x80, 0x80, 0x80], [0xe2, 0x82], [0x80], [0x00], [0xf4, 0x90, 0x80, 0x80],
  );
  const corrupted = fc.tuple(fc.constantFrom(...op.examples), bad, fc.nat()).map(([ex, seq, pick]) => {
    const text = Buffer.from(toJsonText(ex), 'utf8');
    const quotes = [...text.keys()].filter((i) => text[i] === 0x22);
    const at = quotes.length > 0 ? quotes[pick % quotes.length] + 1 : 0;
    return new Uint8Array(Buffer.concat([text.subarray(0, at), Buffer.from(seq), text.subarray(at)]));
  });
  const encodings = fc.constantFrom(...op.examples).chain((ex) =>
    fc.constantFrom(
      new Uint8Array(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(toJsonText(ex))])),
      new Uint8Array(Buffer.from(toJsonText(ex), 'utf16le')),
      new Uint8Array(Buffer.from(toJsonText(ex).replace(/"([^"]*)"/, '"$1\u0000"'))),
      new Uint8Array(Buffer.from(toJsonText(ex).replace(/"([^"]*)"/, '"$1\n\t"'))),
    ),
  );
  const texts = fc.constantFrom('', ' ', '\n', 'null', 'NaN', 'Infinity', '[]', '"str"', '{', '{}}', '{"a":1}garbage', '{"a":1}\u0000', '\u0000', '{,}', "{'a':1}", '{a:1}');
  return fc.oneof(corrupted, encodings, texts, fc.uint8Array({ maxLength: 64 }));
}

/** A valid example padded to just over the limit, or far over it; sometimes with a lying Content-Length. */
function sizeBody(op: Operation): fc.Arbitrary<{ body: string; contentLength?: string }> {
  return fc
    .tuple(fc.constantFrom(...op.examples), fc.constantFrom(1, 2, 1024, BODY_LIMIT * 32), fc.constantFrom('none', 'true', 'small', 'huge', 'junk'))
    .map(([ex, over, cl]) => {
      const base = toJsonText(ex);
      const body = `${' '.repeat(BODY_LIMIT + over - Buffer.byteLength(base))}${base}`;
      const contentLength = { none: undefined, true: String(Buffer.byteLength(body)), small: '10', huge: '99999999999', junk: 'abc' }[cl];
      return { body, contentLength };
    });
}

interface Case {
  path: string;
  query: string;
  headers: Headers0;
  body: string | Uint8Array | undefined;
}

/** The route's path with each parameter's segment drawn from `segment`. */
function pathArb(op: Operation, segment: (param: string, conversationRoute: boolean) => fc.Arbitrary<string>): fc.Arbitrary<string> {
  return fc.tuple(...op.pathParams.map((p) => segment(p, op.template.startsWith('/v1/conversations')))).map((segs) => {
    let p = op.template;
    op.pathParams.forEach((name, i) => (p = p.replace(`{${name}}`, segs[i])));
    return p;
  });
}

/**
 * A well-formed case: the fixtures' ids, a documented query or none, a documented body, plain JSON
 * headers. One case in five, so that whatever the seed the handler's success path is reached too
 * (the hostile cases alone reach it in a few percent of runs on routes with two ids, a query and a body).
 */
function wellFormedArb(op: Operation): fc.Arbitrary<Case> {
  const body: fc.Arbitrary<string | Uint8Array | undefined> = op.binary
    ? fc.constant(UPLOAD_WEIGHTS)
    : op.method !== 'GET' && op.examples.length > 0
      ? fc.constantFrom(...op.examples).map(toJsonText)
      : fc.constant(undefined);
  const auth = op.admin ? fc.constant(`Bearer ${ADMIN_TOKEN}`) : fc.constantFrom('', `Bearer ${ADMIN_TOKEN}`);
  const type = op.binary ? 'application/octet-stream' : 'application/json';
  return fc.tuple(pathArb(op, fixtureSegment), fc.constantFrom('', ...op.queryExamples), auth, body).map(([path, query, authorization, b]) => ({
    path,
    query,
    headers: Object.fromEntries(Object.entries({ 'content-type': type, authorization }).filter(([, v]) => v !== '')),
    body: b,
  }));
}

function caseArb(op: Operation): fc.Arbitrary<Case> {
  return fc.oneof({ weight: 1, arbitrary: wellFormedArb(op) }, { weight: 4, arbitrary: hostileCaseArb(op) });
}

function hostileCaseArb(op: Operation): fc.Arbitrary<Case> {
  const path = pathArb(op, segmentArb);
  const takesBody = op.method !== 'GET';
  const body: fc.Arbitrary<{ body: string | Uint8Array | undefined; contentLength?: string }> = !takesBody
    ? fc.constant({ body: undefined })
    : op.binary
      ? fc.oneof(
          fc.constant({ body: undefined }),
          fc.jsonValue({ maxDepth: 2 }).map((v) => ({ body: JSON.stringify(v) })),
          byteBody({ ...op, examples: [{}] }).map((b) => ({ body: b })),
          // A valid file with a byte changed (its header or a weight) or cut short.
          fc.tuple(fc.nat(UPLOAD_WEIGHTS.byteLength - 1), fc.integer({ min: 1, max: 255 }), fc.boolean()).map(([at, xor, cut]) => {
            const b = UPLOAD_WEIGHTS.slice(0, cut ? at : undefined);
            if (!cut) b[at] ^= xor;
            return { body: b };
          }),
        )
    : op.examples.length === 0
      ? fc.oneof(fc.constant({ body: undefined }), fc.jsonValue({ maxDepth: 2 }).map((v) => ({ body: JSON.stringify(v) })), byteBody({ ...op, examples: [{}] }).map((b) => ({ body: b })))
      : fc.oneof(
          { weight: 3, arbitrary: fc.constantFrom(...op.examples).map((ex) => ({ body: toJsonText(ex) })) },
          { weight: 6, arbitrary: mutatedBody(op).map((b) => ({ body: b })) },
          { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 4 }).map((v) => ({ body: JSON.stringify(v) })) },
          { weight: 2, arbitrary: structureBody(op).map((b) => ({ body: b })) },
          { weight: 2, arbitrary: byteBody(op).map((b) => ({ body: b })) },
          { weight: 1, arbitrary: sizeBody(op) },
          { weight: 1, arbitrary: fc.constant({ body: undefined }) },
        );
  return fc.tuple(path, queryArb(op), headersArb(op), body).map(([p, query, headers, b]) => ({
    path: p,
    query,
    headers: b.contentLength === undefined ? headers : { ...headers, 'content-length': b.contentLength },
    body: b.body,
  }));
}

// ---------------------------------------------------------------------------------------------
// The service under test and its fixtures

let h: Harness;
let gen: ContextFake;
/** Status counts per route, printed at the end: shows what the generators reached. */
const outcomes = new Map<string, Map<number, number>>();
const prototypeKeys = Object.getOwnPropertyNames(Object.prototype).sort();

/** alice: history, an active adapter with files on disk, a job; bob: one history item. Recreated when a case deleted them. */
function seed(): void {
  if (!userExists(h.db, 'alice')) {
    createUser(h.db, { id: 'alice', metadata: { plan: 'pro' } });
    appendHistory(h.db, 'alice', [
      { kind: 'profile', text: 'I live in Lyon and I am vegetarian.' },
      { kind: 'dialogue', role: 'user', text: 'Any idea for dinner tonight?', conversationId: 'c1' },
    ]);
    const dir = userAdapterDir(h.config.adapterDir, 'alice');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'v1.safetensors'), Buffer.alloc(256, 7));
    writeFileSync(join(dir, 'v1.json'), '{"n":2,"r":8}');
    createAdapterVersion(h.db, {
      userId: 'alice',
      config: { n: 2, r: 8 },
      filePath: join(dir, 'v1.safetensors'),
      sha256: 'a'.repeat(64),
      metrics: { valLoss: 2.5 },
      status: 'ready',
      activate: true,
    });
    createJob(h.db, { userId: 'alice', params: { budget: 4 } });
  }
  // A history deletion with adapter=deactivate stops alice's adapter serving: it serves again.
  if (userExists(h.db, 'alice') && !h.db.sqlite.prepare("SELECT 1 FROM adapter_versions WHERE user_id = 'alice' AND active = 1").get()) {
    h.db.sqlite.prepare("UPDATE adapter_versions SET active = 1 WHERE user_id = 'alice' AND version = 1 AND status = 'ready'").run();
  }
  // A stored background response of alice's for the stored-response routes (DELETE /v1/responses/{id} deletes them one by one; cancel needs a background one).
  if (userExists(h.db, 'alice') && !h.db.sqlite.prepare("SELECT 1 FROM stored_responses WHERE json_extract(response, '$.background') = 1").get()) {
    const id = `resp_seed${Date.now()}${Math.random().toString(16).slice(2, 8)}`;
    const items = [{ type: 'message', id: `msg_${id}_in0`, status: 'completed', role: 'user', content: [{ type: 'input_text', text: 'hello' }] }];
    const response = {
      id, object: 'response', created_at: 1, status: 'completed', background: true, error: null, incomplete_details: null, instructions: null, max_output_tokens: 16, model: 'memlora',
      output: [{ type: 'message', id: `msg_${id}`, status: 'completed', role: 'assistant', content: [{ type: 'output_text', text: 'hi', annotations: [], logprobs: [] }] }],
      parallel_tool_calls: true, temperature: 0, top_p: 1, tool_choice: 'auto', tools: [], text: { format: { type: 'text' } }, store: true, previous_response_id: null, truncation: 'disabled', metadata: {}, conversation: null,
      usage: { input_tokens: 2, input_tokens_details: { cached_tokens: 0 }, output_tokens: 1, output_tokens_details: { reasoning_tokens: 0 }, total_tokens: 3 },
      memlora: { personalization: { mode: 'vanilla', adapterVersion: null }, timings: { queueMs: 0, prefillMs: 1, decodeMs: 1, totalMs: 2 } },
    };
    storeResponse(h.db, { id, userId: 'alice', createdAt: Date.now(), previousResponseId: null, response, items }, 0);
  }
  // A conversation with items, for the conversation routes (their DELETE cases delete them one by one).
  if (!h.db.sqlite.prepare('SELECT 1 FROM conversation_items').get()) {
    const id = `conv_seed${Date.now()}${Math.random().toString(16).slice(2, 8)}`;
    const items = [0, 1].map((i) => ({ type: 'message', id: `msg_${id}_in${i}`, status: 'completed', role: 'user', content: [{ type: 'input_text', text: `hello ${i}` }] }));
    createConversation(h.db, { id, userId: null, createdAt: Date.now(), updatedAt: Date.now(), metadata: {} }, items, 0);
  }
  // Deleted items are put back, for both users the cases name.
  if (countHistory(h.db, 'alice') < 2) appendHistory(h.db, 'alice', [{ kind: 'post', text: 'alice again' }, { kind: 'post', text: 'and again' }]);
  if (userExists(h.db, 'bob') && countHistory(h.db, 'bob') < 1) appendHistory(h.db, 'bob', [{ kind: 'post', text: 'bob again' }]);
  if (!userExists(h.db, 'bob')) {
    createUser(h.db, { id: 'bob' });
    appendHistory(h.db, 'bob', [{ kind: 'post', text: 'bob writes about climbing' }]);
    // Stored versions that are not active: v1 for PUT .../adapter to switch on and off, v2 for its
    // files to download and for DELETE.
    for (const v of [1, 2]) {
      const w = writeStoredSync('bob', v);
      createAdapterVersion(h.db, { userId: 'bob', config: { layers: [true, true], n: 1, r: 8, alpha: 16 }, filePath: w.path, sha256: w.sha256, metrics: {}, status: 'ready' });
    }
  }
}

/** The latest history item of the user a path names (any user's when it names none of them). */
function latestItemId(path: string): string {
  let userId = '';
  try {
    userId = decodeURIComponent(path.split('/')[3] ?? '');
  } catch {
    // A malformed escape: no user.
  }
  const row = (h.db.sqlite.prepare('SELECT id FROM history_items WHERE user_id = ? ORDER BY id DESC LIMIT 1').get(userId) ??
    h.db.sqlite.prepare('SELECT id FROM history_items ORDER BY id DESC LIMIT 1').get()) as { id: number } | undefined;
  return String(row?.id ?? 1);
}

/** The latest stored response (a background one for the routes that need one). */
function latestResponseId(background: boolean): string {
  const row = h.db.sqlite.prepare("SELECT id FROM stored_responses WHERE ? = 0 OR json_extract(response, '$.background') = 1 ORDER BY created_at DESC LIMIT 1").get(background ? 1 : 0) as { id: string } | undefined;
  return row?.id ?? 'resp_none';
}

/** The latest conversation, and the latest item of the latest conversation that has any. */
function latestConversationId(): string {
  const row = h.db.sqlite.prepare('SELECT id FROM conversations ORDER BY created_at DESC, rowid DESC LIMIT 1').get() as { id: string } | undefined;
  return row?.id ?? 'conv_none';
}
function latestConversationItem(): { conversationId: string; itemId: string } | undefined {
  const row = h.db.sqlite.prepare('SELECT conversation_id AS c, id FROM conversation_items ORDER BY seq DESC LIMIT 1').get() as { c: string; id: string } | undefined;
  return row && { conversationId: row.c, itemId: row.id };
}

function latestJobId(): string {
  const row = h.db.sqlite.prepare('SELECT id FROM injection_jobs ORDER BY created_at DESC, id DESC LIMIT 1').get() as { id: string } | undefined;
  return row?.id ?? 'job_none';
}

beforeAll(() => {
  gen = contextFake(CONTEXT_TOKENS);
  // The adapter routes' files: the disk's, plus downloads and uploads through a store of FUZZ_MODEL.
  const files = (root: string) => ({
    ...diskAdapterFiles(root),
    readFile: (row: { userId: string; filePath: string; sha256: string }, file: keyof EncodedAdapter) => fuzzStore.readFile(row.filePath, file, row.sha256, { userId: row.userId }),
    importAdapter: (userId: string, upload: UploadBody) => uploadAdapterBody(fuzzStore, userId, upload),
    maxImportBytes: maxAdapterWeightsBytes(FUZZ_MODEL.config),
  });
  h = makeHarness({ services: { generate: gen }, adapterFiles: files, env: { MEMLORA_BODY_LIMIT_BYTES: String(BODY_LIMIT) } });
  fuzzStore = new AdapterStore(h.config.adapterDir, FUZZ_MODEL);
  seed();
});

afterAll(() => {
  const table = [...outcomes].map(([k, m]) => `  ${k.padEnd(40)} ${[...m].sort((a, b) => a[0] - b[0]).map(([st, n]) => `${st}x${n}`).join(' ')}`);
  console.log(`fuzz-routes: statuses per route (property runs and targeted cases)\n${table.join('\n')}`);
  expect(dbProblems(h.db)).toEqual([]);
  h.cleanup();
});

// ---------------------------------------------------------------------------------------------
// The oracle

function fail(c: { method: string; url: string }, res: { status: number }, text: string, why: string): never {
  throw new Error(`${c.method} ${c.url.slice(0, 300)} -> ${res.status}: ${why}\n  body: ${text.slice(0, 400)}`);
}

function sameCountsExcept(before: Snapshot, after: Snapshot, delta: Record<string, number>): string | null {
  for (const t of new Set([...Object.keys(before.counts), ...Object.keys(after.counts)])) {
    const want = (before.counts[t] ?? 0) + (delta[t] ?? 0);
    if (after.counts[t] !== want) return `table ${t}: ${before.counts[t]} rows before, ${after.counts[t]} after, expected ${want}`;
  }
  return null;
}

function decoded(segment: string): string | undefined {
  try {
    return decodeURIComponent(segment);
  } catch {
    return undefined;
  }
}

/** What a success of each writing route changes; GETs and generation must change nothing. */
function checkEffects(op: Operation, status: number, json: any, sentBody: unknown, before: Snapshot, after: Snapshot, segs: Record<string, string>): string | null {
  const unchanged = () =>
    after.digest !== before.digest ? 'database content changed' : after.files.join() !== before.files.join() ? 'adapter files changed' : null;
  if (status >= 400 || op.method === 'GET') return unchanged();
  switch (op.key) {
    case 'PUT /v1/users/{userId}': {
      if (json?.id !== decoded(segs.userId)) return `answered for user ${JSON.stringify(json?.id)}, asked for ${segs.userId}`;
      return sameCountsExcept(before, after, { users: status === 201 ? 1 : 0 }) ?? (after.files.join() !== before.files.join() ? 'adapter files changed' : null);
    }
    case 'DELETE /v1/users/{userId}': {
      const r = json?.removed ?? {};
      const problem = sameCountsExcept(before, after, {
        users: -1,
        history_items: -r.historyItems,
        history_fts_docsize: -r.historyItems,
        injection_jobs: -r.jobs,
        trials: -r.trials,
        adapter_versions: -r.adapterVersions,
        stored_responses: -r.responses,
        conversations: -r.conversations,
      });
      if (problem) return problem;
      const dir = `${userDirName(json.userId)}/`;
      const expected = before.files.filter((f) => !f.startsWith(dir));
      if (after.files.join() !== expected.join()) return `adapter files: expected only ${dir} removed`;
      if (before.files.length - expected.length !== r.adapterFiles) return `reported ${r.adapterFiles} files removed, ${before.files.length - expected.length} were`;
      return null;
    }
    case 'POST /v1/users/{userId}/history': {
      const items = (sentBody as { items: Array<Record<string, unknown>> }).items;
      const problem = sameCountsExcept(before, after, { history_items: items.length, history_fts_docsize: items.length });
      if (problem) return problem;
      // What was acknowledged is exactly what was sent: no silent rewriting of the text.
      const stored = h.db.sqlite.prepare(`SELECT kind, role, text, conversation_id AS c FROM history_items WHERE id IN (${json.ids.map(Number).join(',')}) ORDER BY id`).all() as Array<Record<string, unknown>>;
      for (let i = 0; i < items.length; i++) {
        const want = { kind: items[i].kind, role: items[i].role ?? null, text: items[i].text, c: items[i].conversationId ?? null };
        if (JSON.stringify(stored[i]) !== JSON.stringify(want)) return `item ${i} stored as ${JSON.stringify(stored[i]).slice(0, 200)}, sent ${JSON.stringify(want).slice(0, 200)}`;
      }
      return after.files.join() !== before.files.join() ? 'adapter files changed' : null;
    }
    case 'DELETE /v1/users/{userId}/history': {
      const n = json?.deleted ?? 0;
      const problem = sameCountsExcept(before, after, { history_items: -n, history_fts_docsize: -n, history_deletions: n });
      if (problem) return problem;
      const still = (json?.itemIds ?? []).filter((id: number) => h.db.sqlite.prepare('SELECT 1 FROM history_items WHERE id = ?').get(id));
      if (still.length > 0) return `items ${still.join(',')} are still there`;
      return after.files.join() !== before.files.join() ? 'adapter files changed' : null;
    }
    case 'DELETE /v1/users/{userId}/history/{itemId}': {
      // One item gone (and its FTS5 row), one deletion recorded; with adapter=deactivate, an active flag cleared.
      const problem = sameCountsExcept(before, after, { history_items: -1, history_fts_docsize: -1, history_deletions: 1 });
      if (problem) return problem;
      if (json?.userId !== decoded(segs.userId) || String(json?.itemId) !== segs.itemId) return `answered for ${json?.userId}/${json?.itemId}, asked for ${segs.userId}/${segs.itemId}`;
      if (h.db.sqlite.prepare('SELECT 1 FROM history_items WHERE id = ?').get(json.itemId)) return 'the item is still there';
      return after.files.join() !== before.files.join() ? 'adapter files changed' : null;
    }
    case 'POST /v1/admin/users/{userId}/inject':
      return sameCountsExcept(before, after, { injection_jobs: 1 }) ?? (after.files.join() !== before.files.join() ? 'adapter files changed' : null);
    case 'POST /v1/admin/stale-users/inject':
      return sameCountsExcept(before, after, { injection_jobs: json.queued.length }) ?? (after.files.join() !== before.files.join() ? 'adapter files changed' : null);
    case 'POST /v1/admin/jobs/{jobId}/cancel':
      return sameCountsExcept(before, after, {}) ?? (after.files.join() !== before.files.join() ? 'adapter files changed' : null);
    case 'PUT /v1/admin/users/{userId}/adapter': {
      // Only the active flags move: the version asked for (or none) is the one active now, as answered.
      const userId = decoded(segs.userId);
      const want = (sentBody as { version: number | null }).version;
      const active = h.db.sqlite.prepare('SELECT version FROM adapter_versions WHERE user_id = ? AND active = 1').all(userId) as Array<{ version: number }>;
      if (JSON.stringify(active.map((r) => r.version)) !== JSON.stringify(want === null ? [] : [want])) return `active versions ${JSON.stringify(active)} after asking for ${want}`;
      if ((json?.active?.version ?? null) !== want) return `answered active ${JSON.stringify(json?.active?.version)}, asked for ${want}`;
      return sameCountsExcept(before, after, {}) ?? (after.files.join() !== before.files.join() ? 'adapter files changed' : null);
    }
    case 'POST /v1/admin/users/{userId}/adapters': {
      // One row, the version answered, with the weights' checksum; its three files in the user's directory, nothing else on disk.
      const userId = decoded(segs.userId)!;
      const row = h.db.sqlite.prepare('SELECT version, sha256, active, status FROM adapter_versions WHERE user_id = ? ORDER BY version DESC LIMIT 1').get(userId) as { version: number; sha256: string; active: number; status: string } | undefined;
      if (row?.version !== json?.adapter?.version || row?.sha256 !== json?.adapter?.sha256 || row?.status !== 'ready' || Boolean(row?.active) !== json?.adapter?.active) return `latest row ${JSON.stringify(row)}, answered ${JSON.stringify(json?.adapter)}`;
      const added = after.files.filter((f) => !before.files.includes(f));
      if (added.length !== 3 || added.some((f) => !f.startsWith(`${userDirName(userId)}/a-`))) return `files added: ${added.join(', ')}`;
      if (before.files.some((f) => !after.files.includes(f))) return 'adapter files removed';
      return sameCountsExcept(before, after, { adapter_versions: 1 });
    }
    case 'DELETE /v1/admin/users/{userId}/adapters/{version}': {
      // The version's row stays (status deleted, never active); only its own directory left the disk.
      const userId = decoded(segs.userId)!;
      const row = h.db.sqlite.prepare('SELECT status, active, file_path AS path FROM adapter_versions WHERE user_id = ? AND version = ?').get(userId, Number(segs.version)) as { status: string; active: number; path: string } | undefined;
      if (row?.status !== 'deleted' || row.active !== 0) return `version row after delete: ${JSON.stringify(row)}`;
      const problem = sameCountsExcept(before, after, {});
      if (problem) return problem;
      const gone = before.files.filter((f) => !after.files.includes(f));
      if (gone.some((f) => !f.startsWith(`${userDirName(userId)}/`))) return `files of another user removed: ${gone.join(', ')}`;
      if (after.files.some((f) => !before.files.includes(f))) return 'adapter files appeared';
      return json?.removed?.files === gone.length ? null : `reported ${json?.removed?.files} files removed, ${gone.length} were`;
    }
    case 'PUT /v1/admin/users/{userId}/quota': {
      // Only the user's quota row moves: present with the value sent, or gone for null.
      const userId = decoded(segs.userId)!;
      const want = (sentBody as { dailyTokens: number | null }).dailyTokens;
      const row = h.db.sqlite.prepare('SELECT daily_tokens AS n FROM user_quotas WHERE user_id = ?').get(userId) as { n: number } | undefined;
      if ((row?.n ?? null) !== want) return `quota row ${JSON.stringify(row)} after setting ${want}`;
      if (json?.dailyTokens !== want) return `answered dailyTokens ${JSON.stringify(json?.dailyTokens)}, set ${want}`;
      const moved = (after.counts.user_quotas ?? 0) - (before.counts.user_quotas ?? 0);
      if (want === null ? moved > 0 || moved < -1 : moved < 0 || moved > 1) return `user_quotas moved by ${moved}`;
      return sameCountsExcept(before, after, { user_quotas: moved }) ?? (after.files.join() !== before.files.join() ? 'adapter files changed' : null);
    }
    case 'POST /v1/responses': {
      // A stored response adds its row, as answered (a stream's last event is not read here); nothing else moves.
      const moved = (after.counts.stored_responses ?? 0) - (before.counts.stored_responses ?? 0);
      const storing = (sentBody as { store?: unknown })?.store !== false;
      if (json !== undefined ? moved !== (json.store ? 1 : 0) : moved !== (storing ? 1 : 0)) return `stored_responses moved by ${moved}, store asked ${storing}, answered ${json?.store}`;
      if (json?.store) {
        const row = h.db.sqlite.prepare('SELECT response FROM stored_responses WHERE id = ?').get(json.id) as { response: string } | undefined;
        // A background response is answered queued and stored again when done: it may be done by now.
        if (json.background ? row === undefined : row?.response !== JSON.stringify(json)) return 'the stored response is not the one answered';
      }
      return sameCountsExcept(before, after, { stored_responses: moved }) ?? (after.files.join() !== before.files.join() ? 'adapter files changed' : null);
    }
    case 'POST /v1/conversations': {
      const added = (after.counts.conversation_items ?? 0) - (before.counts.conversation_items ?? 0);
      const want = ((sentBody as { items?: unknown[] } | undefined)?.items ?? []).length;
      if (added !== want) return `conversation_items moved by ${added}, ${want} sent`;
      const row = h.db.sqlite.prepare('SELECT metadata FROM conversations WHERE id = ?').get(json?.id) as { metadata: string } | undefined;
      if (row?.metadata !== JSON.stringify(json.metadata)) return 'the conversation is not stored as answered';
      // Creation purges conversations past the retention: none here.
      return sameCountsExcept(before, after, { conversations: 1, conversation_items: added }) ?? (after.files.join() !== before.files.join() ? 'adapter files changed' : null);
    }
    case 'POST /v1/conversations/{conversationId}': {
      const row = h.db.sqlite.prepare('SELECT metadata FROM conversations WHERE id = ?').get(decoded(segs.conversationId)) as { metadata: string } | undefined;
      if (row?.metadata !== JSON.stringify((sentBody as { metadata: unknown }).metadata)) return `metadata ${row?.metadata} after setting ${JSON.stringify((sentBody as { metadata: unknown }).metadata)}`;
      return sameCountsExcept(before, after, {}) ?? (after.files.join() !== before.files.join() ? 'adapter files changed' : null);
    }
    case 'DELETE /v1/conversations/{conversationId}': {
      const gone = (before.counts.conversation_items ?? 0) - (after.counts.conversation_items ?? 0);
      if (h.db.sqlite.prepare('SELECT 1 FROM conversations WHERE id = ?').get(decoded(segs.conversationId))) return 'the conversation is still there';
      return sameCountsExcept(before, after, { conversations: -1, conversation_items: -gone }) ?? (after.files.join() !== before.files.join() ? 'adapter files changed' : null);
    }
    case 'POST /v1/conversations/{conversationId}/items':
      return sameCountsExcept(before, after, { conversation_items: (sentBody as { items: unknown[] }).items.length }) ?? (after.files.join() !== before.files.join() ? 'adapter files changed' : null);
    case 'DELETE /v1/conversations/{conversationId}/items/{itemId}':
      if (h.db.sqlite.prepare('SELECT 1 FROM conversation_items WHERE conversation_id = ? AND id = ?').get(decoded(segs.conversationId), decoded(segs.itemId))) return 'the item is still there';
      return sameCountsExcept(before, after, { conversation_items: -1 }) ?? (after.files.join() !== before.files.join() ? 'adapter files changed' : null);
    case 'DELETE /v1/admin/users/{userId}/responses': {
      const d = json?.deleted ?? {};
      const userId = decoded(segs.userId);
      if (h.db.sqlite.prepare('SELECT 1 FROM stored_responses WHERE user_id = ? UNION ALL SELECT 1 FROM conversations WHERE user_id = ?').get(userId, userId)) return 'the user still has stored responses or conversations';
      return sameCountsExcept(before, after, { stored_responses: -d.responses, conversations: -d.conversations, conversation_items: -d.conversationItems }) ?? (after.files.join() !== before.files.join() ? 'adapter files changed' : null);
    }
    case 'POST /v1/responses/{responseId}/cancel': {
      // The response is stored as done (cancelled, or as it had ended); a run that ended meanwhile may have added to its conversation.
      const row = h.db.sqlite.prepare('SELECT response FROM stored_responses WHERE id = ?').get(decoded(segs.responseId)) as { response: string } | undefined;
      const stored = row && (JSON.parse(row.response) as { status: string });
      if (!stored || stored.status === 'queued' || stored.status === 'in_progress') return `the response is stored ${stored?.status ?? 'nowhere'}`;
      if (json?.status !== stored.status) return `answered ${json?.status}, stored ${stored.status}`;
      const added = (after.counts.conversation_items ?? 0) - (before.counts.conversation_items ?? 0);
      return sameCountsExcept(before, after, { conversation_items: added }) ?? (after.files.join() !== before.files.join() ? 'adapter files changed' : null);
    }
    case 'DELETE /v1/responses/{responseId}': {
      if (h.db.sqlite.prepare('SELECT 1 FROM stored_responses WHERE id = ?').get(decoded(segs.responseId))) return 'the response is still there';
      return sameCountsExcept(before, after, { stored_responses: -1 }) ?? (after.files.join() !== before.files.join() ? 'adapter files changed' : null);
    }
    case 'POST /v1/responses/input_tokens': // counts, writes nothing
    case 'POST /v1/generate':
    case 'POST /v1/chat/completions':
    case 'POST /v1/score':
    case 'POST /v1/completions':
    case 'POST /tokenize':
    case 'POST /detokenize':
    case 'POST /v1/admin/cache/warm':
    case 'DELETE /v1/admin/cache': // the caches are memory only
    case 'DELETE /v1/admin/prefix-cache':
      return unchanged();
    default:
      return `${op.key} answered ${status}: the fuzz does not know what this route writes; add it to checkEffects`;
  }
}

/**
 * Activation is refused while a job of the user is active (alice's always is): for the activation
 * route's cases, bob's active jobs (left by the inject route's cases) are put aside, and put back
 * afterwards for the job routes' cases.
 */
async function runCase(op: Operation, c: Case): Promise<void> {
  seed();
  if (op.key !== 'PUT /v1/admin/users/{userId}/adapter') return runSeededCase(op, c);
  const aside = h.db.sqlite.prepare("SELECT id, state FROM injection_jobs WHERE user_id = 'bob' AND state IN ('queued', 'running')").all() as Array<{ id: string; state: string }>;
  const setState = h.db.sqlite.prepare('UPDATE injection_jobs SET state = ? WHERE id = ?');
  for (const j of aside) setState.run('cancelled', j.id);
  try {
    await runSeededCase(op, c);
  } finally {
    for (const j of aside) setState.run(j.state, j.id);
  }
}

async function runSeededCase(op: Operation, c: Case): Promise<void> {
  const segs: Record<string, string> = {};
  let path = c.path.replace(KNOWN_JOB, latestJobId()).replace(KNOWN_ITEM, latestItemId(c.path)).replace(KNOWN_RESPONSE, latestResponseId(op.key === 'POST /v1/responses/{responseId}/cancel'));
  if (path.includes(KNOWN_CONVERSATION_ITEM)) {
    // An item and its own conversation, when the case names the known conversation.
    const latest = latestConversationItem();
    path = path.replace(KNOWN_CONVERSATION_ITEM, latest?.itemId ?? 'msg_none').replace(KNOWN_CONVERSATION, latest?.conversationId ?? latestConversationId());
  }
  path = path.replace(KNOWN_CONVERSATION, latestConversationId());
  for (const [i, seg] of path.split('/').entries()) {
    const name = op.template.split('/')[i]?.match(/^\{(\w+)\}$/)?.[1];
    if (name) segs[name] = seg;
  }
  const url = `http://localhost${path}${c.query}`;
  let req: Request;
  try {
    req = new Request(url, { method: op.method, headers: c.headers, body: c.body as string | Uint8Array | undefined });
  } catch {
    return; // fetch itself refuses to send this (not a server concern)
  }
  const where = { method: op.method, url };
  const before = snapshot(h.db, h.config.adapterDir);
  const logged = h.logger.lines.length;
  const calls = gen.calls.length;
  const res = await h.app.request(req);
  const text = await res.text();
  // A background response the case started is stored again when done: its effects are the case's.
  await h.lifecycle.settled?.();
  const after = snapshot(h.db, h.config.adapterDir);

  if (res.status >= 500) fail(where, res, text, 'a 5xx');
  if (!res.headers.get('x-request-id')) fail(where, res, text, 'no x-request-id header');
  const allowed = new Set([...op.statuses, ...GLOBAL_STATUSES]);
  if (!allowed.has(res.status)) fail(where, res, text, `status not documented for ${op.key} (documented: ${[...op.statuses].join(', ')})`);
  let json: any;
  const type = res.headers.get('content-type') ?? '';
  if (type.startsWith('application/json')) {
    try {
      json = JSON.parse(text);
    } catch {
      fail(where, res, text, 'content-type says JSON, body is not');
    }
  }
  if (res.status >= 400) {
    if (!schemas.errorBodySchema.safeParse(json).success) fail(where, res, text, 'not the documented error shape');
    if (!(CODES_BY_STATUS[res.status] ?? []).includes(json.error.code)) fail(where, res, text, `code ${json.error.code} is not one of ${res.status}'s codes`);
    if (res.status === 401 && !res.headers.get('www-authenticate')) fail(where, res, text, '401 without WWW-Authenticate');
    if (res.status === 405 && !res.headers.get('allow')) fail(where, res, text, '405 without Allow');
  } else if (type.startsWith('text/event-stream')) {
    const events = parseSse(text);
    const last = events[events.length - 1];
    // Ours end with done, OpenAI's chat with [DONE], its Responses API with the response done.
    const ended = last && (last.event === 'done' || last.data === '[DONE]' || last.event === 'response.completed' || last.event === 'response.incomplete');
    if (!ended) fail(where, res, text, 'stream did not end with done');
    if (events.some((e) => e.event === 'error')) fail(where, res, text, 'stream carried an error event');
  } else if (type.startsWith('application/octet-stream')) {
    // A file as stored (an adapter's weights): bytes, nothing to parse.
  } else if (type.startsWith('image/svg+xml')) {
    // A plot (?format=svg): an SVG document, not JSON.
    if (!/^(<\?xml[^>]*>\s*)?<svg[\s>]/.test(text.trimStart()) || !text.trimEnd().endsWith('</svg>')) fail(where, res, text, 'an SVG answer that is not an SVG document');
  } else {
    const candidates = op.success.get(res.status) ?? [];
    if (candidates.length > 0 && !candidates.some((s) => s.safeParse(json).success)) fail(where, res, text, 'a 2xx body that its documented schema rejects');
  }

  let sent: unknown;
  try {
    sent = c.body === undefined ? undefined : JSON.parse(typeof c.body === 'string' ? c.body : new TextDecoder('utf-8', { fatal: true }).decode(c.body));
  } catch {
    sent = undefined;
  }
  const seen = outcomes.get(op.key) ?? new Map<number, number>();
  seen.set(res.status, (seen.get(res.status) ?? 0) + 1);
  outcomes.set(op.key, seen);
  const problem = checkEffects(op, res.status, json, sent, before, after, segs);
  if (problem) fail(where, res, text, problem);

  const errors = h.logger.lines.slice(logged).filter((l) => l.level === 'error');
  if (errors.length > 0) fail(where, res, text, `logged an error: ${JSON.stringify(errors[0]).slice(0, 300)}`);
  if (Object.getOwnPropertyNames(Object.prototype).sort().join() !== prototypeKeys.join() || ({} as Obj).polluted !== undefined) {
    fail(where, res, text, 'Object.prototype was polluted');
  }
  if (gen.violations.length > 0) fail(where, res, text, gen.violations.join('; '));
  // A request the HTTP layer refused never reaches the engine.
  if (res.status >= 400 && res.status !== 422 && gen.calls.length !== calls) fail(where, res, text, 'a refused request reached the engine');
}

// ---------------------------------------------------------------------------------------------

describe('openapi routes under hostile input', () => {
  it('finds the routes in the document', () => {
    expect(operations.length).toBeGreaterThanOrEqual(14);
    expect(operations.map((o) => o.key)).toContain('POST /v1/generate');
  });

  for (const op of operations) {
    it(`${op.key}: random and adversarial requests`, async () => {
      await fc.assert(
        fc.asyncProperty(caseArb(op), (c) => runCase(op, c)),
        { seed: SEED, numRuns: RUNS, endOnFailure: true },
      );
      // The generators must reach the handler, not only the edges: some case succeeded and some was refused.
      const seen = [...(outcomes.get(op.key)?.keys() ?? [])];
      expect(seen.some((st) => st < 300), `${op.key}: no 2xx in ${RUNS} runs`).toBe(true);
      if (op.method !== 'GET' || op.pathParams.length > 0 || op.queryParams.length > 0) {
        expect(seen.some((st) => st >= 400), `${op.key}: no 4xx in ${RUNS} runs`).toBe(true);
      }
    });
  }
});

describe('targeted hostile input', () => {
  const op = (key: string) => operations.find((o) => o.key === key)!;
  const send = (key: string, path: string, body?: string | Uint8Array, headers: Headers0 = { 'content-type': 'application/json' }, query = '') =>
    runCase(op(key), { path, query, headers, body });

  it('traversal and encoding tricks in every path parameter of every route', async () => {
    for (const o of operations.filter((x) => x.pathParams.length > 0)) {
      for (const seg of HOSTILE_SEGMENTS) {
        let path = o.template;
        for (const p of o.pathParams) path = path.replace(`{${p}}`, seg);
        const body = o.examples.length > 0 ? toJsonText(o.examples[0]) : undefined;
        await runCase(o, { path, query: '', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body });
      }
    }
    // Nothing was created outside the adapter root's hashed user directories.
    for (const f of listFiles(h.config.adapterDir)) expect(f).toMatch(/^[0-9a-f]{32}\//);
  });

  it('oversized bodies: one byte over, far over, and lying Content-Length, on every body route', async () => {
    for (const o of operations.filter((x) => x.examples.length > 0)) {
      const base = toJsonText(o.examples[0]);
      for (const over of [1, BODY_LIMIT * 64]) {
        const body = `${' '.repeat(BODY_LIMIT + over - Buffer.byteLength(base))}${base}`;
        for (const cl of [undefined, String(Buffer.byteLength(body)), '10', '1e12', '-1', 'abc']) {
          const headers: Headers0 = { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_TOKEN}` };
          if (cl !== undefined) headers['content-length'] = cl;
          const res = await h.app.request(o.template.replace('{userId}', 'alice').replace('{jobId}', latestJobId()), { method: o.method, headers, body });
          expect(res.status, `${o.key} over=${over} cl=${cl}`).toBe(413);
          expect(((await res.json()) as Obj).error.code).toBe('body_too_large');
        }
      }
      // Exactly at the limit is not too large.
      const exact = `${' '.repeat(BODY_LIMIT - Buffer.byteLength(base))}${base}`;
      const res = await h.app.request(o.template.replace('{userId}', 'bob').replace('{jobId}', 'job_none'), {
        method: o.method,
        headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_TOKEN}` },
        body: exact,
      });
      expect(res.status, o.key).not.toBe(413);
    }
  });

  it('sampling parameters: huge, NaN, Infinity, negative and fractional values never reach the engine', async () => {
    const fields: Record<string, string[]> = {
      maxTokens: ['0', '-1', '1.5', '2049', '1e308', '1e999', '9007199254740993', 'NaN', '"10"', 'null'],
      temperature: ['-0.1', '5.0001', '1e999', '-1e999', 'NaN', '"0.7"', '[]'],
      topP: ['0', '-0', '1.0000001', '-1', '1e999', 'NaN'],
      topK: ['-1', '0.5', '1e999', '9007199254740993', '"5"'],
      seed: ['0.5', '1e999', '9007199254740993', '-9007199254740993', 'NaN', 'true'],
      repetitionPenalty: ['0', '-1', '10.5', '1e999'],
    };
    for (const [field, values] of Object.entries(fields)) {
      for (const v of values) {
        const calls = gen.calls.length;
        await send('POST /v1/generate', '/v1/generate', `{"userId":"alice","prompt":"hi","${field}":${v}}`);
        const res = await h.req('POST', '/v1/generate', `{"userId":"alice","prompt":"hi","${field}":${v}}`);
        expect(res.status, `${field}=${v}`).toBeGreaterThanOrEqual(400);
        expect(res.status, `${field}=${v}`).toBeLessThan(500);
        expect(gen.calls.length, `${field}=${v} reached the engine`).toBe(calls);
      }
    }
    const chat: Record<string, string[]> = {
      max_tokens: ['0', '-5', '2.5', '1e999', 'NaN'],
      max_completion_tokens: ['0', '99999'],
      temperature: ['-1', '1e999'],
      top_p: ['0', '2'],
      seed: ['1.5', '1e999'],
      n: ['17', '0', '1.5', '1e999'],
      frequency_penalty: ['2.5', 'NaN'],
      logit_bias: ['{"-1":1}', '{"5":1e999}'],
    };
    for (const [field, values] of Object.entries(chat)) {
      for (const v of values) {
        const calls = gen.calls.length;
        await send('POST /v1/chat/completions', '/v1/chat/completions', `{"user":"alice","messages":[{"role":"user","content":"hi"}],"${field}":${v}}`);
        expect(gen.calls.length, `${field}=${v} reached the engine`).toBe(calls);
      }
    }
    // The limits of the query: limit must be a plain integer in range.
    for (const q of ['?limit=0', '?limit=-1', '?limit=1.5', '?limit=1e3', '?limit=NaN', '?limit=Infinity', '?limit=1001', `?limit=${'9'.repeat(20)}`, '?limit=%2B1', '?limit=']) {
      await send('GET /v1/users', '/v1/users', undefined, {}, q);
      await send('GET /v1/users/{userId}/history', '/v1/users/alice/history', undefined, {}, q);
      const res = await h.req('GET', `/v1/users${q}`);
      expect(res.status, q).toBe(422);
    }
  });

  it('prompts longer than the context window: 422 prompt_too_long from the engine, nothing generated', async () => {
    const words = (n: number) => 'word '.repeat(n).trim();
    const cases: Array<[string, string, unknown]> = [
      ['POST /v1/generate', '/v1/generate', { userId: 'alice', prompt: words(CONTEXT_TOKENS + 1) }],
      ['POST /v1/generate', '/v1/generate', { userId: 'alice', prompt: words(CONTEXT_TOKENS * 10), stream: true }],
      ['POST /v1/generate', '/v1/generate', { userId: 'alice', messages: Array.from({ length: 40 }, () => ({ role: 'user', content: words(20) })) }],
      ['POST /v1/chat/completions', '/v1/chat/completions', { user: 'alice', messages: [{ role: 'user', content: words(CONTEXT_TOKENS * 2) }] }],
      ['POST /v1/chat/completions', '/v1/chat/completions', { user: 'alice', messages: [{ role: 'user', content: words(CONTEXT_TOKENS * 2) }], stream: true }],
      ['POST /v1/responses', '/v1/responses', { user: 'alice', input: words(CONTEXT_TOKENS * 2) }],
      ['POST /v1/responses', '/v1/responses', { user: 'alice', input: words(CONTEXT_TOKENS * 2), stream: true }],
    ];
    for (const [key, path, body] of cases) {
      await send(key, path, JSON.stringify(body));
      const res = await h.req('POST', path, body);
      const err = (await res.json()) as any;
      expect(res.status, key).toBe(422);
      expect(err.error.code).toBe('prompt_too_long');
      expect(err.error.details.contextTokens).toBe(CONTEXT_TOKENS);
      expect(err.error.details.promptTokens).toBeGreaterThan(CONTEXT_TOKENS);
    }
    // Longer than the schema allows (200,000 characters) is refused by the HTTP layer before the engine.
    const big = makeHarness({ services: { generate: gen } });
    try {
      await big.req('PUT', '/v1/users/alice');
      const calls = gen.calls.length;
      const res = await big.req('POST', '/v1/generate', { userId: 'alice', prompt: 'x'.repeat(schemas.MAX_PROMPT_CHARS + 1) });
      expect(res.status).toBe(422);
      expect(((await res.json()) as any).error.code).toBe('validation_failed');
      expect(gen.calls.length).toBe(calls);
    } finally {
      big.cleanup();
    }
  });

  it('invalid UTF-8, NUL and control characters in bodies', async () => {
    const enc = (s: string) => new Uint8Array(Buffer.from(s, 'utf8'));
    const cat = (...parts: Array<string | number[]>) => new Uint8Array(Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : Buffer.from(p)))));
    const bodies: Uint8Array[] = [
      cat('{"items":[{"kind":"post","text":"', [0xc0, 0xae], '"}]}'),
      cat('{"items":[{"kind":"post","text":"', [0xed, 0xa0, 0x80], '"}]}'),
      cat('{"items":[{"kind":"post","text":"', [0xff, 0xfe], '"}]}'),
      cat('{"items":[{"kind":"post","text":"a', [0x00], 'b"}]}'),
      enc('{"items":[{"kind":"post","text":"a\\u0000b"}]}'),
      enc('{"items":[{"kind":"post","text":"\\ud800 lone surrogate"}]}'),
      enc('{"items":[{"kind":"post","text":"\\udfff\\ud800 reversed pair"}]}'),
      enc('{"items":[{"kind":"post","text":"ok"}],"\\ud800":1}'),
      cat([0xef, 0xbb, 0xbf], '{"items":[{"kind":"post","text":"bom"}]}'),
      enc('{"items":[{"kind":"post","text":"bell \\u0007 escape \\u001b[2J del \\u007f"}]}'),
      enc('{"items":[{"kind":"post","text":"\\u202eRTL override and \\u200b zero width"}]}'),
    ];
    for (const b of bodies) await send('POST /v1/users/{userId}/history', '/v1/users/alice/history', b);
    // Well-formed control characters other than NUL are text; lone surrogates are not.
    const ok = await h.req('POST', '/v1/users/bob/history', '{"items":[{"kind":"post","text":"bell \\u0007 escape \\u001b[2J"}]}');
    expect(ok.status).toBe(201);
    const lone = await h.req('POST', '/v1/users/bob/history', '{"items":[{"kind":"post","text":"\\ud800"}]}');
    expect(lone.status).toBe(422);
    for (const b of [enc('{"userId":"alice","prompt":"\\ud800"}'), cat('{"userId":"alice","prompt":"', [0xc3], '"}')]) await send('POST /v1/generate', '/v1/generate', b);
    for (const b of [enc('{"metadata":{"k":"\\udc00"}}'), enc('{"metadata":{"\\u0000":"\\u0000"}}')]) await send('PUT /v1/users/{userId}', '/v1/users/carol', b);
  });

  it('duplicate keys: the last one wins and is validated like any other', async () => {
    const before = gen.calls.length;
    await send('POST /v1/generate', '/v1/generate', '{"userId":"alice","userId":"../bob","prompt":"x"}');
    await send('POST /v1/generate', '/v1/generate', '{"userId":"../bob","userId":"alice","prompt":"dup ok"}');
    expect(gen.calls.length).toBe(before + 1);
    expect(gen.calls[gen.calls.length - 1].req.userId).toBe('alice');
    await send('POST /v1/users/{userId}/history', '/v1/users/alice/history', '{"items":[{"kind":"post","text":"a"}],"items":[{"kind":"nope","text":"b"}]}');
    await send('POST /v1/users/{userId}/history', '/v1/users/alice/history', '{"items":[{"kind":"post","text":"a","text":"second wins"}]}');
  });

  it('prototype-pollution keys are refused, not silently dropped', async () => {
    const bodies: Array<[string, string, string]> = [
      ['PUT /v1/users/{userId}', '/v1/users/dave', '{"metadata":{"__proto__":{"polluted":"yes"},"a":1}}'],
      ['PUT /v1/users/{userId}', '/v1/users/dave', '{"__proto__":{"metadata":{"isAdmin":true}}}'],
      ['POST /v1/users/{userId}/history', '/v1/users/alice/history', '{"items":[{"kind":"post","text":"x","__proto__":{"role":"system"}}]}'],
      ['POST /v1/generate', '/v1/generate', '{"userId":"alice","prompt":"x","__proto__":{"maxTokens":99999}}'],
      ['POST /v1/chat/completions', '/v1/chat/completions', '{"user":"alice","messages":[{"role":"user","content":"x"}],"__proto__":{"model":{"evil":1}}}'],
      ['POST /v1/admin/users/{userId}/inject', '/v1/admin/users/alice/inject', '{"__proto__":{"budget":100000}}'],
    ];
    for (const [key, path, body] of bodies) {
      await send(key, path, body, { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_TOKEN}` });
      const res = await h.admin(op(key).method, path, body);
      expect(res.status, `${key} ${body}`).toBe(422);
      expect(((await res.json()) as any).error.details.issues[0].code).toBe('forbidden_key');
    }
    // `constructor` and `prototype` are ordinary keys: stored and returned as sent.
    const res = await h.req('PUT', '/v1/users/erin', '{"metadata":{"constructor":{"prototype":{"polluted":"yes"}},"prototype":1}}');
    expect(res.status).toBe(201);
    expect(((await (await h.req('GET', '/v1/users/erin')).json()) as any).metadata).toEqual({ constructor: { prototype: { polluted: 'yes' } }, prototype: 1 });
    expect(({} as Obj).polluted).toBeUndefined();
  });

  it('wrong content types: the body is parsed as JSON whatever the label (documented: bodies are JSON)', async () => {
    for (const type of CONTENT_TYPES) {
      await send('POST /v1/users/{userId}/history', '/v1/users/bob/history', '{"items":[{"kind":"post","text":"typed"}]}', { 'content-type': type });
      await send('POST /v1/users/{userId}/history', '/v1/users/bob/history', 'items=1&kind=post', { 'content-type': type });
      await send('POST /v1/users/{userId}/history', '/v1/users/bob/history', '--x\r\nContent-Disposition: form-data; name="items"\r\n\r\n1\r\n--x--', { 'content-type': type });
    }
  });

  it('ids that collide after normalisation are distinct users whose data never mixes', async () => {
    const ids = ['zed', 'Zed', 'ZED', 'zed.', 'zed..', '.zed', 'zed_', 'zed-', 'zed.json'];
    for (const id of ids) {
      expect((await h.req('PUT', `/v1/users/${id}`, { metadata: { owner: id } })).status).toBe(201);
      expect((await h.req('POST', `/v1/users/${id}/history`, { items: [{ kind: 'post', text: `secret of ${id}` }] })).status).toBe(201);
      const dir = userAdapterDir(h.config.adapterDir, id);
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'v1.safetensors'), id);
    }
    expect(new Set(ids.map(userDirName)).size).toBe(ids.length);
    for (const id of ids) {
      const user = (await (await h.req('GET', `/v1/users/${id}`)).json()) as any;
      expect(user.metadata).toEqual({ owner: id });
      const items = ((await (await h.req('GET', `/v1/users/${id}/history`)).json()) as any).items;
      expect(items.map((i: any) => i.text)).toEqual([`secret of ${id}`]);
      const hits = ((await (await h.req('GET', `/v1/users/${id}/history?q=secret`)).json()) as any).items;
      expect(hits.map((i: any) => i.text)).toEqual([`secret of ${id}`]);
    }
    const before = snapshot(h.db, h.config.adapterDir);
    const del = (await (await h.req('DELETE', '/v1/users/zed.')).json()) as any;
    expect(del.removed).toMatchObject({ historyItems: 1, adapterFiles: 1 });
    const after = snapshot(h.db, h.config.adapterDir);
    expect(after.files).toEqual(before.files.filter((f) => !f.startsWith(`${userDirName('zed.')}/`)));
    for (const id of ids.filter((x) => x !== 'zed.')) expect((await h.req('GET', `/v1/users/${id}/history`)).status).toBe(200);
    // Lookalikes and whitespace variants are not ids at all, wherever an id appears.
    const lookalikes = ['ｚｅｄ', 'zеd', 'zed\u200b', 'ze\u0301d', 'zé', 'ﬁ', 'zed ', ' zed', 'zed\t', 'zed\n', 'zed/', 'zed\\'];
    for (const id of lookalikes) {
      await send('GET /v1/users/{userId}', `/v1/users/${encodeURIComponent(id)}`);
      const res = await h.req('GET', `/v1/users/${encodeURIComponent(id)}`);
      expect(res.status, JSON.stringify(id)).toBe(422);
      await send('POST /v1/generate', '/v1/generate', JSON.stringify({ userId: id, prompt: 'x' }));
      await send('POST /v1/chat/completions', '/v1/chat/completions', JSON.stringify({ user: id, messages: [{ role: 'user', content: 'x' }] }));
      await send('GET /v1/admin/jobs', '/v1/admin/jobs', undefined, { authorization: `Bearer ${ADMIN_TOKEN}` }, `?userId=${encodeURIComponent(id)}`);
    }
  });
});

describe('raw HTTP the fetch API cannot send', () => {
  let server: RunningServer;
  let dir: Harness;
  beforeAll(async () => {
    dir = makeHarness();
    dir.db.close();
    server = await startServer(
      { ...dir.config, port: 0, host: '127.0.0.1', bodyLimitBytes: BODY_LIMIT },
      { handleSignals: false, logger: memoryLogger(), services: { generate: contextFake(CONTEXT_TOKENS) } },
    );
    await fetch(`${server.url}/v1/users/alice`, { method: 'PUT' });
  });
  afterAll(async () => {
    await server.close();
    dir.cleanup();
  });

  const historyRows = () => (server.db.sqlite.prepare('SELECT count(*) AS n FROM history_items').get() as { n: number }).n;

  /** Every response the server wrote back has the error shape (for 4xx) and a request id. */
  function expectShaped(responses: Array<{ status: number; headers: Record<string, string>; body: string }>, label: string) {
    expect(responses.length, `${label}: no response`).toBeGreaterThan(0);
    for (const r of responses) {
      expect(r.status, label).toBeGreaterThanOrEqual(400);
      expect(r.status, label).toBeLessThan(500);
      expect(r.headers['x-request-id'], `${label}: x-request-id`).toBeTruthy();
      const body = JSON.parse(r.body);
      expect(schemas.errorBodySchema.safeParse(body).success, `${label}: ${r.body}`).toBe(true);
      expect(CODES_BY_STATUS[r.status], `${label}: ${r.body}`).toContain(body.error.code);
    }
  }

  it('header injection and malformed requests get the documented error shape, and the server keeps serving', async () => {
    const rows = historyRows();
    const h1 = 'Host: x\r\n';
    const attempts = [
      `GET /healthz HTTP/1.1\r\n${h1}X-Request-Id: a\rSet-Cookie: b\r\n\r\n`,
      `GET /healthz HTTP/1.1\r\n${h1}X-Request-Id: a\nSet-Cookie: b\r\n\r\n`,
      `GET /healthz HTTP/1.1\r\n${h1}X-Request-Id: a\r\n Set-Cookie: folded\r\n\r\n`,
      `GET /healthz HTTP/1.1\r\n${h1}Bad Header: x\r\n\r\n`,
      `GET /healthz HTTP/1.1\r\n${h1}X-Nul: a\u0000b\r\n\r\n`,
      `GET /v1/users/a\\b HTTP/1.1\r\n${h1}\r\n`,
      `GET /v1/users/..\\..\\etc HTTP/1.1\r\n${h1}\r\n`,
      `GET * HTTP/1.1\r\n${h1}\r\n`,
      `GET /healthz HTTP/1.1\r\nHost: evil host\r\n\r\n`,
      `GET /healthz HTTP/1.1\r\n${h1}X-Big: ${'a'.repeat(20_000)}\r\n\r\n`,
      `GARBAGE\r\n\r\n`,
      `POST /v1/users/alice/history HTTP/1.1\r\n${h1}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
      `POST /v1/users/alice/history HTTP/1.1\r\n${h1}Content-Length: 10\r\nContent-Length: 20\r\n\r\n{"items":[]}`,
      `POST /v1/users/alice/history HTTP/1.1\r\n${h1}Content-Length: -1\r\n\r\n`,
      `POST /v1/users/alice/history HTTP/1.1\r\n${h1}Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n`,
      // A lying Content-Length that is too small: the rest of the body is read as the next request.
      `POST /v1/users/alice/history HTTP/1.1\r\n${h1}Content-Length: 3\r\n\r\n{"items":[{"kind":"post","text":"smuggled"}]}`,
    ];
    for (const a of attempts) {
      const { responses } = await rawExchange(server.port, a);
      expectShaped(responses, JSON.stringify(a.slice(0, 80)));
      for (const r of responses) expect(r.headers['set-cookie']).toBeUndefined();
    }
    expect(historyRows()).toBe(rows);
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
  });

  it('a client that sends less body than its Content-Length and goes away is not a server error', async () => {
    const rows = historyRows();
    await rawExchange(server.port, `POST /v1/users/alice/history HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"items":`, { halfClose: true });
    await rawExchange(server.port, `POST /v1/users/alice/history HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"items":`, { idleMs: 100 });
    await new Promise((r) => setTimeout(r, 100));
    expect(historyRows()).toBe(rows);
    expect(server.metrics.expose()).not.toMatch(/http_requests_total\{[^}]*status="5\d\d"\}/);
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
  });

  it('oversized bodies over the wire: 413, whether declared or streamed', async () => {
    for (const size of [BODY_LIMIT + 1, BODY_LIMIT * 128]) {
      const res = await fetch(`${server.url}/v1/users/alice/history`, { method: 'POST', body: 'x'.repeat(size) });
      expect(res.status).toBe(413);
      const stream = new ReadableStream({
        start(ctrl) {
          ctrl.enqueue(new TextEncoder().encode('x'.repeat(size)));
          ctrl.close();
        },
      });
      const chunked = await fetch(`${server.url}/v1/users/alice/history`, { method: 'POST', body: stream, duplex: 'half' } as RequestInit);
      expect(chunked.status).toBe(413);
    }
    const { responses } = await rawExchange(server.port, `POST /v1/users/alice/history HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n{}`);
    expectShaped(responses, 'huge declared length');
    expect(responses[0].status).toBe(413);
  });

  it('raw dot segments and encoded separators never reach a handler as an id, nor an admin route without a token', async () => {
    const paths = [
      '/v1/users/../admin/jobs', '/v1/users/%2e%2e/admin/jobs', '/v1/users/..%2fadmin%2fjobs', '/v1//admin/jobs', '/v1/admin%2fjobs',
      '/v1/%61dmin/jobs', '/v1/admin/./jobs', '//v1/admin/jobs', '/v1/admin/jobs;x', '/v1/admin/jobs%00', '/V1/admin/jobs',
      '/v1/users/%c0%ae%c0%ae/history', '/v1/users/..%5c..%5c/history', '/v1/users/%2e%2e%2f%2e%2e%2fetc%2fpasswd',
    ];
    for (const p of paths) {
      const { responses } = await rawExchange(server.port, `GET ${p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      expectShaped(responses, p);
    }
  });
});
