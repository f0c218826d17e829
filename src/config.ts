/**
 * Service configuration, read once from the environment at start-up and validated with zod.
 * The result is a plain typed object; nothing else in the code reads process.env for settings.
 */
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';

/** The repository root: this file is src/config.ts or dist/config.js, one level below it. */
export const repoRoot: string = resolve(dirname(fileURLToPath(import.meta.url)), '..');

export type ExecutionProvider = 'cpu' | 'cuda';

export interface Config {
  /** TCP port; 0 asks the OS for a free one. */
  port: number;
  host: string;
  /** Absolute directory holding the SQLite database. */
  dataDir: string;
  /** Absolute path of the SQLite file, `<dataDir>/memlora.db`. */
  dbFile: string;
  /** Absolute root of the adapter store. */
  adapterDir: string;
  /** Byte budget of the in-memory adapter cache. */
  cacheBytes: number;
  /** Byte budget of the prefix (KV) cache of users' last conversations; 0 turns prefix caching off. */
  prefixCacheBytes: number;
  /** Save the cached users at shutdown and warm them again at the next start (serve/cache-snapshot.ts). */
  cacheRestore: boolean;
  /** Save the prefix cache's conversations at shutdown and read them back at the next start (serve/prefix-snapshot.ts). */
  prefixCacheRestore: boolean;
  /** Bearer token for /v1/admin; null means "not configured" (serve then generates one). */
  adminToken: string | null;
  /** Bearer key the client routes (the rest of /v1, /tokenize, /detokenize) require; null: they are open. */
  apiKey: string | null;
  /** Absolute path of the base model directory. */
  modelPath: string;
  executionProvider: ExecutionProvider;
  /** ONNX Runtime intra-op threads; 0 leaves ORT's default. */
  intraOpThreads: number;
  /** Serving graphs carry the base weights as constants (packed once by ONNX Runtime): on, off, or auto by model size. */
  constWeights: 'auto' | 'on' | 'off';
  jobConcurrency: number;
  maxQueue: number;
  maxQueuePerUser: number;
  /** Tokens (prompt + completion + scored) one user may be served per UTC day unless their own quota says otherwise; 0: no limit. */
  userDailyTokens: number;
  /** Days the Responses API keeps stored responses; 0: responses are not stored. */
  responsesRetentionDays: number;
  scheduling: 'fair' | 'fifo';
  maxBatch: number;
  /** Chunked prefill: prompts with more new tokens than this are read this many at a time between decode steps; 0: whole. */
  prefillChunk: number;
  bodyLimitBytes: number;
  /** Absolute path of the shared data directory (models, data sets, docs). */
  sharedDir: string;
}

/** One environment variable: its default (as the raw string a user would write) and what it means. */
export interface EnvVarDoc {
  name: string;
  default: string | null;
  describe: string;
}

/** The documented variables; README's Configuration table mirrors this list (a test checks it). */
export const ENV_VARS: readonly EnvVarDoc[] = [
  { name: 'MEMLORA_PORT', default: '8080', describe: 'TCP port to listen on (0 = any free port).' },
  { name: 'MEMLORA_HOST', default: '127.0.0.1', describe: 'Interface to bind; use 0.0.0.0 to accept remote clients.' },
  { name: 'MEMLORA_DATA_DIR', default: './data', describe: 'Directory of the SQLite database `memlora.db` (created if missing).' },
  { name: 'MEMLORA_ADAPTER_DIR', default: './adapters', describe: 'Root of the per-user adapter store (created if missing).' },
  { name: 'MEMLORA_CACHE_BYTES', default: '256MiB', describe: 'Adapter cache budget in bytes; suffixes KiB, MiB, GiB (and KB, MB, GB) accepted.' },
  { name: 'MEMLORA_PREFIX_CACHE_BYTES', default: '64MiB', describe: 'Prefix cache budget: the keys and values of users\' last conversations (per user and adapter version), so that a chat\'s next turn runs only its new tokens; same suffixes as the cache size; 0 turns prefix caching off.' },
  { name: 'MEMLORA_CACHE_RESTORE', default: 'on', describe: 'At shutdown, record which users\' adapters the cache holds (`<dataDir>/adapter-cache.json`, user ids only); at the next start, warm them again in the background once the model is loaded: `on` or `off`.' },
  { name: 'MEMLORA_PREFIX_CACHE_RESTORE', default: 'on', describe: 'At shutdown, write the prefix cache\'s conversations (token ids, keys and values) to `<dataDir>/prefix-cache.bin`; at the next start, read back those of the same model whose user and adapter version are still served, and delete the file: `on` or `off` (off also deletes a file left by an earlier run).' },
  { name: 'MEMLORA_ADMIN_TOKEN', default: null, describe: 'Bearer token for /v1/admin routes, at least 16 characters. When unset, `serve` generates one and prints it once to stderr.' },
  { name: 'MEMLORA_API_KEY', default: null, describe: 'Bearer key the client routes require (every /v1 route outside /v1/admin, /tokenize, /detokenize; the admin token is taken too), at least 16 characters, as OpenAI clients send their API key. Unset: those routes are open (bind to loopback, or put them behind your own gateway).' },
  { name: 'MEMLORA_MODEL_PATH', default: 'models/default', describe: 'Base model directory (default relative to the repository root).' },
  { name: 'MEMLORA_EXECUTION_PROVIDER', default: 'cpu', describe: 'ONNX Runtime execution provider: `cpu` or `cuda`.' },
  { name: 'MEMLORA_INTRA_OP_THREADS', default: '0', describe: 'ONNX Runtime intra-op threads; 0 keeps ORT\'s default.' },
  { name: 'MEMLORA_CONST_WEIGHTS', default: 'auto', describe: 'Bake the base weights into the serving graphs as constants, so ONNX Runtime packs them once per graph instead of at every call: `on`, `off`, or `auto` (on for models up to 64 MiB of weights). On the default model plain requests are served about 1.4x faster and injected ones 1.3x; each serving graph (five; eight with prefix caching or chunked prefill) holds its own copy of the weights.' },
  { name: 'MEMLORA_JOB_CONCURRENCY', default: '1', describe: 'Injection jobs run at the same time.' },
  { name: 'MEMLORA_MAX_QUEUE', default: '256', describe: 'Generation requests waiting before new ones get 429.' },
  { name: 'MEMLORA_MAX_QUEUE_PER_USER', default: '64', describe: 'Generation requests of one user waiting before their new ones get 429 user_queue_full (others are still queued).' },
  { name: 'MEMLORA_USER_DAILY_TOKENS', default: '0', describe: 'Tokens (prompt + completion + scored) one user may be served per UTC day, as metered; past it their requests get 429 quota_exceeded with Retry-After until midnight UTC. A user\'s own quota (PUT /v1/admin/users/{userId}/quota) overrides it; 0 means no limit.' },
  { name: 'MEMLORA_RESPONSES_RETENTION_DAYS', default: '30', describe: 'Days POST /v1/responses keeps the responses it stores (store, true unless false) for previous_response_id and GET /v1/responses/{id}; 0 stores none.' },
  { name: 'MEMLORA_SCHEDULING', default: 'fair', describe: 'How free batch rows are shared between users\' waiting requests: `fair` (the user holding the fewest rows, then round robin between users) or `fifo` (arrival order).' },
  { name: 'MEMLORA_MAX_BATCH', default: '8', describe: 'Rows in one decode batch.' },
  { name: 'MEMLORA_PREFILL_CHUNK', default: '128', describe: 'Chunked prefill: a prompt with more new tokens than this is read this many tokens at a time, one chunk before each decode step, so that a long prompt holds up the replies already streaming for one chunk at a time instead of its whole length (a scoring request\'s context and text too); 0 reads every prompt in one call.' },
  { name: 'MEMLORA_BODY_LIMIT_BYTES', default: '1MiB', describe: 'Largest accepted request body (413 above it); same suffixes as the cache size.' },
  { name: 'MEMLORA_SHARED_DIR', default: '../shared', describe: 'Shared models/data directory (default relative to the repository root).' },
];

const BYTE_UNITS: Record<string, number> = {
  '': 1, b: 1,
  k: 1024, kb: 1000, kib: 1024,
  m: 1024 ** 2, mb: 1000 ** 2, mib: 1024 ** 2,
  g: 1024 ** 3, gb: 1000 ** 3, gib: 1024 ** 3,
};

/** Parses "268435456", "256MiB", "1.5 GB"; returns NaN when the text is not a byte size. */
export function parseBytes(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  if (!m) return Number.NaN;
  const unit = BYTE_UNITS[m[2].toLowerCase()];
  if (unit === undefined) return Number.NaN;
  return Math.floor(Number(m[1]) * unit);
}

const intVar = (min: number, max: number) =>
  z
    .string()
    .trim()
    .regex(/^-?\d+$/, { message: 'must be an integer' })
    .transform(Number)
    .pipe(z.number().int().min(min, { message: `must be >= ${min}` }).max(max, { message: `must be <= ${max}` }));

const bytesVar = (min: number) =>
  z
    .string()
    .transform((s, ctx) => {
      const n = parseBytes(s);
      if (!Number.isFinite(n)) {
        ctx.addIssue({ code: 'custom', message: 'must be a byte size such as 1048576 or 256MiB' });
        return z.NEVER;
      }
      return n;
    })
    .pipe(z.number().int().min(min, { message: `must be at least ${min} bytes` }).max(Number.MAX_SAFE_INTEGER));

const nonEmpty = z.string().trim().min(1, { message: 'must not be empty' });

/** A bearer secret: 16-512 printable ASCII characters without spaces. */
const secretVar = (unsetHint: string) =>
  z
    .string()
    .min(16, { message: `must be at least 16 characters (${unsetHint})` })
    .max(512, { message: 'must be at most 512 characters' })
    .regex(/^[\x21-\x7e]+$/, { message: 'must be printable ASCII without spaces' })
    .optional();

const envSchema = z.object({
  MEMLORA_PORT: intVar(0, 65535).default(8080),
  MEMLORA_HOST: nonEmpty.default('127.0.0.1'),
  MEMLORA_DATA_DIR: nonEmpty.default('./data'),
  MEMLORA_ADAPTER_DIR: nonEmpty.default('./adapters'),
  MEMLORA_CACHE_BYTES: bytesVar(0).default(256 * 1024 ** 2),
  MEMLORA_PREFIX_CACHE_BYTES: bytesVar(0).default(64 * 1024 ** 2),
  MEMLORA_CACHE_RESTORE: z.enum(['on', 'off'], { message: 'must be "on" or "off"' }).default('on'),
  MEMLORA_PREFIX_CACHE_RESTORE: z.enum(['on', 'off'], { message: 'must be "on" or "off"' }).default('on'),
  MEMLORA_ADMIN_TOKEN: secretVar('or unset it to have serve generate one'),
  MEMLORA_API_KEY: secretVar('or unset it to leave the client routes open'),
  MEMLORA_MODEL_PATH: nonEmpty.optional(),
  MEMLORA_EXECUTION_PROVIDER: z.enum(['cpu', 'cuda'], { message: 'must be "cpu" or "cuda"' }).default('cpu'),
  MEMLORA_INTRA_OP_THREADS: intVar(0, 1024).default(0),
  MEMLORA_CONST_WEIGHTS: z.enum(['auto', 'on', 'off'], { message: 'must be "auto", "on" or "off"' }).default('auto'),
  MEMLORA_JOB_CONCURRENCY: intVar(1, 64).default(1),
  MEMLORA_MAX_QUEUE: intVar(1, 1_000_000).default(256),
  MEMLORA_MAX_QUEUE_PER_USER: intVar(1, 1_000_000).default(64),
  MEMLORA_USER_DAILY_TOKENS: intVar(0, Number.MAX_SAFE_INTEGER).default(0),
  MEMLORA_RESPONSES_RETENTION_DAYS: intVar(0, 36_500).default(30),
  MEMLORA_SCHEDULING: z.enum(['fair', 'fifo'], { message: 'must be "fair" or "fifo"' }).default('fair'),
  MEMLORA_MAX_BATCH: intVar(1, 1024).default(8),
  MEMLORA_PREFILL_CHUNK: intVar(0, 1_000_000).default(128),
  MEMLORA_BODY_LIMIT_BYTES: bytesVar(1024).default(1024 ** 2),
  MEMLORA_SHARED_DIR: nonEmpty.optional(),
});

/** Thrown by loadConfig; `issues` name each offending variable, its value and what was expected. */
export class ConfigError extends Error {
  readonly code = 'invalid_config';
  constructor(readonly issues: ReadonlyArray<{ variable: string; value: string | undefined; message: string }>) {
    super(`invalid configuration: ${issues.map((i) => `${i.variable}: ${i.message}`).join('; ')}`);
    this.name = 'ConfigError';
  }
}

// The admin token is a secret: never echo it back in an error message.
const SECRET_VARS = new Set(['MEMLORA_ADMIN_TOKEN', 'MEMLORA_API_KEY']);

function absolute(p: string, base: string): string {
  return isAbsolute(p) ? p : resolve(base, p);
}

/**
 * Reads and validates the configuration. Empty strings count as unset (shells often export VAR= ).
 * User-given relative paths resolve against the working directory; the model and shared-dir defaults
 * resolve against the repository root so they work from any directory.
 */
export function loadConfig(env: Record<string, string | undefined> = process.env, cwd: string = process.cwd()): Config {
  const raw: Record<string, string | undefined> = {};
  for (const v of ENV_VARS) {
    const value = env[v.name];
    raw[v.name] = value === undefined || value === '' ? undefined : value;
  }
  const parsed = envSchema.safeParse(raw);
  if (!parsed.success) {
    throw new ConfigError(
      parsed.error.issues.map((issue) => {
        const variable = String(issue.path[0] ?? '(environment)');
        return { variable, value: SECRET_VARS.has(variable) ? '<hidden>' : raw[variable], message: issue.message };
      }),
    );
  }
  const e = parsed.data;
  const dataDir = absolute(e.MEMLORA_DATA_DIR, cwd);
  return {
    port: e.MEMLORA_PORT,
    host: e.MEMLORA_HOST,
    dataDir,
    dbFile: join(dataDir, 'memlora.db'),
    adapterDir: absolute(e.MEMLORA_ADAPTER_DIR, cwd),
    cacheBytes: e.MEMLORA_CACHE_BYTES,
    prefixCacheBytes: e.MEMLORA_PREFIX_CACHE_BYTES,
    cacheRestore: e.MEMLORA_CACHE_RESTORE === 'on',
    prefixCacheRestore: e.MEMLORA_PREFIX_CACHE_RESTORE === 'on',
    adminToken: e.MEMLORA_ADMIN_TOKEN ?? null,
    apiKey: e.MEMLORA_API_KEY ?? null,
    modelPath: e.MEMLORA_MODEL_PATH ? absolute(e.MEMLORA_MODEL_PATH, cwd) : join(repoRoot, 'models', 'default'),
    executionProvider: e.MEMLORA_EXECUTION_PROVIDER,
    intraOpThreads: e.MEMLORA_INTRA_OP_THREADS,
    constWeights: e.MEMLORA_CONST_WEIGHTS,
    jobConcurrency: e.MEMLORA_JOB_CONCURRENCY,
    maxQueue: e.MEMLORA_MAX_QUEUE,
    maxQueuePerUser: e.MEMLORA_MAX_QUEUE_PER_USER,
    userDailyTokens: e.MEMLORA_USER_DAILY_TOKENS,
    responsesRetentionDays: e.MEMLORA_RESPONSES_RETENTION_DAYS,
    scheduling: e.MEMLORA_SCHEDULING,
    maxBatch: e.MEMLORA_MAX_BATCH,
    prefillChunk: e.MEMLORA_PREFILL_CHUNK,
    bodyLimitBytes: e.MEMLORA_BODY_LIMIT_BYTES,
    sharedDir: e.MEMLORA_SHARED_DIR ? absolute(e.MEMLORA_SHARED_DIR, cwd) : resolve(repoRoot, '..', 'shared'),
  };
}

/** A message for people: one line per bad variable with the value given, no stack trace. */
export function formatConfigError(err: unknown): string {
  if (!(err instanceof ConfigError)) return `memlora: ${err instanceof Error ? err.message : String(err)}`;
  const lines = err.issues.map((i) => {
    const given = i.value === undefined ? 'unset' : JSON.stringify(i.value);
    return `  ${i.variable} ${i.message} (got ${given})`;
  });
  return ['memlora: invalid configuration', ...lines, 'See README "Configuration" for every variable and its default.'].join('\n');
}
