/**
 * zod schemas of every request the API accepts and every response it returns. openapi.yaml names
 * them with `x-zod-schema` / `x-zod-query`, and test/http/openapi.test.ts validates the documented
 * examples against them, so the document and the code cannot drift apart silently.
 */
import { z } from 'zod';
import { dayPlus, daysBetween, usageDay } from '../db/queries/usage.js';
import { HISTORY_KINDS, HISTORY_ROLES, JOB_STATES } from '../db/schema.js';

// ---------------------------------------------------------------------------------------------
// Shared pieces

const USER_ID_RE = /^[A-Za-z0-9._-]{1,128}$/;

/** 1-128 chars of [A-Za-z0-9._-], and not made of dots only ("." and ".." name directories). */
export function isValidUserId(id: string): boolean {
  return USER_ID_RE.test(id) && !/^\.+$/.test(id);
}

export const userIdSchema = z.string().refine(isValidUserId, {
  message: 'user ids are 1-128 characters of A-Z a-z 0-9 . _ - and not only dots',
});

export const jobIdSchema = z.string().regex(/^job_[a-z0-9]{10,64}$/, { message: 'not a job id' });

/** Deepest nesting a request body may have (guards recursive validators and serialisers). */
export const MAX_JSON_DEPTH = 32;
const MAX_METADATA_BYTES = 16 * 1024;

export const jsonObjectSchema = z.record(z.string(), z.json());

export const metadataSchema = jsonObjectSchema.refine((m) => Buffer.byteLength(JSON.stringify(m), 'utf8') <= MAX_METADATA_BYTES, {
  message: `metadata must serialise to at most ${MAX_METADATA_BYTES} bytes`,
});

const isoTimestamp = z.iso.datetime({ offset: true });

/** Query-string integer in [min, max] (query values arrive as strings). */
const queryInt = (min: number, max: number) =>
  z
    .string()
    .regex(/^\d{1,9}$/, { message: 'must be a non-negative integer' })
    .transform(Number)
    .pipe(z.number().int().min(min).max(max));

const cursorSchema = z.string().min(1).max(1024);

export const pageSchema = <T extends z.ZodType>(item: T) => z.object({ items: z.array(item), nextCursor: z.string().nullable() });

// ---------------------------------------------------------------------------------------------
// Errors

export const errorBodySchema = z.object({
  error: z.object({ code: z.string().min(1), message: z.string().min(1), details: z.unknown() }),
});

// ---------------------------------------------------------------------------------------------
// Users

export const putUserBody = z.strictObject({ metadata: metadataSchema.nullable().optional() });

export const listUsersQuery = z.strictObject({
  limit: queryInt(1, 1000).optional(),
  cursor: cursorSchema.optional(),
});

export const userSchema = z.object({
  id: userIdSchema,
  metadata: jsonObjectSchema.nullable(),
  createdAt: isoTimestamp,
  updatedAt: isoTimestamp,
});

export const userPageSchema = pageSchema(userSchema);

export const deleteUserResponse = z.object({
  userId: userIdSchema,
  removed: z.object({
    historyItems: z.int().min(0),
    jobs: z.int().min(0),
    trials: z.int().min(0),
    adapterVersions: z.int().min(0),
    usageDays: z.int().min(0),
    /** Stored responses of the Responses API. */
    responses: z.int().min(0),
    /** Conversations they owned (with their items). */
    conversations: z.int().min(0),
    adapterFiles: z.int().min(0),
    adapterBytes: z.int().min(0),
  }),
});

// ---------------------------------------------------------------------------------------------
// History

export const MAX_HISTORY_BATCH = 1000;
export const MAX_HISTORY_TEXT = 65_536;

export const historyItemInput = z.strictObject({
  kind: z.enum(HISTORY_KINDS),
  role: z.enum(HISTORY_ROLES).nullable().optional(),
  text: z
    .string()
    .max(MAX_HISTORY_TEXT)
    .refine((t) => t.trim().length > 0, { message: 'text must not be blank' })
    .refine((t) => !t.includes('\u0000'), { message: 'text must not contain NUL characters' }),
  conversationId: z.string().min(1).max(128).regex(/^[A-Za-z0-9._:-]+$/).nullable().optional(),
  createdAt: isoTimestamp.optional(),
});

export const historyAppendBody = z.strictObject({
  items: z.array(historyItemInput).min(1).max(MAX_HISTORY_BATCH),
});

export const historyAppendResponse = z.object({
  userId: userIdSchema,
  inserted: z.int().min(1),
  ids: z.array(z.int()),
});

/**
 * Query of DELETE /v1/users/{userId}/history/{itemId}: what to do with the adapter versions trained
 * on deleted history: keep them, stop the active one serving (deactivate), or that and delete every
 * one of them, files and all (delete).
 */
export const historyDeleteQuery = z.strictObject({ adapter: z.enum(['keep', 'deactivate', 'delete']).optional() });

/**
 * Query of DELETE /v1/users/{userId}/history: the items to delete (one conversation's, those written
 * before a time, or all: at least one of them, every one given holding), and what to do with an
 * active adapter trained on them.
 */
export const historyBulkDeleteQuery = historyDeleteQuery
  .extend({
    conversationId: historyItemInput.shape.conversationId.unwrap().unwrap(),
    before: isoTimestamp,
    all: z.literal('true'),
  })
  .partial()
  .refine((q) => q.conversationId !== undefined || q.before !== undefined || q.all !== undefined, { message: 'give conversationId, before, or all=true', path: ['all'] });

const forgottenShape = {
  /** The user's prefix-cache conversations dropped (they may hold the items' text, retrieved as memory). */
  prefixCacheDropped: z.int().min(0),
  /** The user's adapter versions (with files) trained on history they deleted, these items or earlier ones. */
  trainedOnDeleted: z.array(z.object({ version: z.int().min(1), active: z.boolean(), deletedItems: z.int().min(1) })),
  /** The version deactivated by adapter=deactivate or delete (the active one, trained on deleted history), or null. */
  deactivated: z.int().min(1).nullable(),
  /** The versions adapter=delete deleted (files removed; the rows stay with status deleted), oldest first. */
  deletedVersions: z.array(z.int().min(1)),
};

export const historyBulkDeleteResponse = z.object({ userId: userIdSchema, deleted: z.int().min(0), itemIds: z.array(z.int().min(1)), ...forgottenShape });

export const historyDeleteResponse = z.object({ userId: userIdSchema, itemId: z.int().min(1), ...forgottenShape });

export const historyQuery = z
  .strictObject({
    limit: queryInt(1, 1000).optional(),
    cursor: cursorSchema.optional(),
    kind: z.enum(HISTORY_KINDS).optional(),
    q: z.string().min(1).max(1000).optional(),
    match: z.enum(['any', 'all']).optional(),
  })
  .superRefine((v, ctx) => {
    if (v.q !== undefined && v.cursor !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['cursor'], message: 'search results (q) are not paginated; drop cursor' });
    }
    if (v.q === undefined && v.match !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['match'], message: 'match only applies to a search (q)' });
    }
  });

export const historyItemSchema = z.object({
  id: z.int().min(1),
  userId: userIdSchema,
  kind: z.enum(HISTORY_KINDS),
  role: z.enum(HISTORY_ROLES).nullable(),
  text: z.string(),
  conversationId: z.string().nullable(),
  createdAt: isoTimestamp,
});

export const historyPageSchema = pageSchema(historyItemSchema);

export const historySearchSchema = z.object({
  items: z.array(historyItemSchema.extend({ score: z.number() })),
  nextCursor: z.null(),
});

// ---------------------------------------------------------------------------------------------
// Adapters

export const adapterSchema = z.object({
  userId: userIdSchema,
  version: z.int().min(1),
  status: z.string(),
  config: jsonObjectSchema,
  metrics: jsonObjectSchema,
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  /** Whether this version serves the user now (at most one per user). */
  active: z.boolean(),
  createdAt: isoTimestamp,
});

export const adapterListSchema = z.object({
  items: z.array(
    adapterSchema.extend({
      /** History items the user deleted since this version was trained on them: it carries them in its weights (0: none). */
      deletedItemsTrainedOn: z.int().min(0),
    }),
  ),
});

/** POST /v1/admin/users/{userId}/adapters: whether the uploaded version serves the user at once (default true). */
export const importAdapterQuery = z.strictObject({ activate: z.enum(['true', 'false']).default('true').transform((v) => v === 'true') });

export const adapterImportSchema = z.object({
  /** The new version, as GET /v1/users/{userId}/adapters lists it. */
  adapter: adapterSchema,
  /** The version that was active before the call (null: none). */
  previousVersion: z.int().min(1).nullable(),
  /** Bytes written to the store: the weights and the two JSON files memlora writes beside them. */
  bytes: z.int().min(1),
});

/** The files of an adapter version an operator may download, by name in the path. */
export const ADAPTER_DOWNLOADS = ['adapter_model.safetensors', 'adapter_config.json', 'memlora_adapter.json'] as const;

/** PUT /v1/admin/users/{userId}/adapter: which version serves the user (null: none, serve without). */
export const activateAdapterBody = z.strictObject({ version: z.int().min(1).max(2 ** 31 - 1).nullable() });

export const adapterActivationSchema = z.object({
  userId: userIdSchema,
  /** The version active now (null: none). */
  active: adapterSchema.nullable(),
  /** The version that was active before the call (null: none). */
  previousVersion: z.int().min(1).nullable(),
});

export const adapterDeletionSchema = z.object({
  /** The version as it is now (status deleted). */
  adapter: adapterSchema,
  /** Files and bytes removed by this call (0 when they were gone already). */
  removed: z.object({ files: z.int().min(0), bytes: z.int().min(0) }),
});

// ---------------------------------------------------------------------------------------------
// Adapter cache (admin)

/** The adapter cache's occupancy (bytes count cached plus leased adapters). */
export const cacheStatsSchema = z.object({
  bytes: z.int().min(0),
  maxBytes: z.int().min(0),
  entries: z.int().min(0),
  leasedBytes: z.int().min(0),
  leasedEntries: z.int().min(0),
  loading: z.int().min(0),
});

/** POST /v1/admin/cache/warm: users whose active adapters to load (duplicates are warmed once). */
export const warmBody = z.strictObject({ userIds: z.array(userIdSchema).min(1).max(1000) });

export const WARM_OUTCOMES = ['loaded', 'cached', 'no_adapter', 'unknown_user', 'failed'] as const;

export const warmResultSchema = z.object({
  results: z.array(
    z.object({
      userId: userIdSchema,
      outcome: z.enum(WARM_OUTCOMES),
      version: z.int().min(1).nullable(),
      /** Why a load failed (failed only). */
      reason: z.enum(['adapter_corrupt', 'adapter_missing', 'adapter_unavailable']).optional(),
      resident: z.boolean(),
    }),
  ),
  counts: z.object(Object.fromEntries(WARM_OUTCOMES.map((o) => [o, z.int().min(0)])) as Record<(typeof WARM_OUTCOMES)[number], z.ZodInt>),
  cache: cacheStatsSchema,
});

/** GET /v1/admin/cache: how many held adapters to list. */
export const cacheContentsQuery = z.strictObject({ limit: queryInt(1, 1000).optional() });

export const cacheContentsSchema = z.object({
  cache: cacheStatsSchema,
  /** Since the server started. */
  counters: z.object({
    hits: z.int().min(0),
    misses: z.int().min(0),
    loads: z.int().min(0),
    loadFailures: z.int().min(0),
    evictions: z.int().min(0),
    hitRate: z.number().min(0).max(1).nullable(),
  }),
  adapters: z.array(z.object({ userId: userIdSchema, version: z.int().min(1), bytes: z.int().min(0), leases: z.int().min(0) })),
  truncated: z.boolean(),
});

/** GET /v1/admin/cache/curve: JSON (default) or the plot. */
export const cacheCurveQuery = z.strictObject({ format: z.enum(['json', 'svg']).optional() });

export const cacheCurveSchema = z.object({
  since: isoTimestamp,
  lookups: z.int().min(0),
  coldLookups: z.int().min(0),
  bestHitRate: z.number().min(0).max(1).nullable(),
  maxBytes: z.int().min(0),
  hitRateAtMaxBytes: z.number().min(0).max(1).nullable(),
  sizeFor: z.array(z.object({ hitRate: z.number().min(0).max(1), bytes: z.int().min(1).nullable() })),
  points: z.array(z.object({ bytes: z.int().min(1), hitRate: z.number().min(0).max(1) })),
});

/** DELETE /v1/admin/cache: one user's adapters, or (without userId) every one. */
export const cacheDropQuery = z.strictObject({ userId: userIdSchema.optional() });

export const cacheDropSchema = z.object({
  dropped: z.object({ adapters: z.int().min(0), bytes: z.int().min(0), leased: z.int().min(0) }),
  cache: cacheStatsSchema,
});

/** GET /v1/admin/prefix-cache: the prefix cache's occupancy and what it saved since start. */
export const prefixCacheSchema = z.object({
  enabled: z.boolean(),
  entries: z.int().min(0),
  users: z.int().min(0),
  tokens: z.int().min(0),
  bytes: z.int().min(0),
  maxBytes: z.int().min(0),
  bytesPerToken: z.int().min(1).nullable(),
  capacityTokens: z.int().min(0).nullable(),
  minTokens: z.int().min(1).nullable(),
  perScope: z.int().min(1).nullable(),
  counters: z.object({
    lookups: z.int().min(0),
    hits: z.int().min(0),
    hitRate: z.number().min(0).max(1).nullable(),
    reusedTokens: z.int().min(0),
    evictions: z.int().min(0),
    retired: z.int().min(0),
  }),
});

/** DELETE /v1/admin/prefix-cache: one user's conversations, or (without userId) every one. */
export const prefixCacheDropQuery = z.strictObject({ userId: userIdSchema.optional() });

export const prefixCacheDropSchema = z.object({
  dropped: z.object({ entries: z.int().min(0), bytes: z.int().min(0) }),
  prefixCache: prefixCacheSchema,
});

// ---------------------------------------------------------------------------------------------
// Injection jobs (admin)

export const injectBody = z
  .strictObject({
    budget: z.int().min(1).max(512).optional(),
    initialPoints: z.int().min(1).max(128).optional(),
    seed: z.int().optional(),
    force: z.boolean().optional(),
  })
  .superRefine((v, ctx) => {
    if (v.budget !== undefined && v.initialPoints !== undefined && v.initialPoints > v.budget) {
      ctx.addIssue({ code: 'custom', path: ['initialPoints'], message: 'initialPoints must not exceed budget' });
    }
  });

export const listJobsQuery = z.strictObject({
  state: z.enum(JOB_STATES).optional(),
  userId: userIdSchema.optional(),
  limit: queryInt(1, 500).optional(),
  cursor: cursorSchema.optional(),
});

export const jobSchema = z.object({
  id: jobIdSchema,
  userId: userIdSchema,
  state: z.enum(JOB_STATES),
  params: jsonObjectSchema,
  progress: jsonObjectSchema.nullable(),
  result: jsonObjectSchema.nullable(),
  error: jsonObjectSchema.nullable(),
  createdAt: isoTimestamp,
  startedAt: isoTimestamp.nullable(),
  finishedAt: isoTimestamp.nullable(),
  updatedAt: isoTimestamp,
});

export const jobPageSchema = pageSchema(jobSchema);

/** Query of GET /v1/admin/stale-users: users with at least minNewItems history items their adapter has not seen. */
export const staleUsersQuery = z.strictObject({
  minNewItems: queryInt(1, 1_000_000).optional(),
  limit: queryInt(1, 1000).optional(),
});

/** A bulk re-injection leaves out users with this many failed jobs since their last injection, unless told otherwise. */
export const DEFAULT_MAX_FAILURES = 3;

/**
 * Body of POST /v1/admin/stale-users/inject: re-inject the stalest users (each job with `params`, as
 * POST .../inject takes them), leaving out users with `maxFailures` or more failed jobs since their last injection.
 */
export const staleInjectBody = z.strictObject({
  minNewItems: z.int().min(1).max(1_000_000).optional(),
  limit: z.int().min(1).max(1000).optional(),
  maxFailures: z.int().min(1).max(1000).optional(),
  params: injectBody.optional(),
});

export const staleUserSchema = z.object({
  userId: userIdSchema,
  newItems: z.int().min(0),
  historyItems: z.int().min(0),
  lastInjection: z.object({ jobId: jobIdSchema, state: z.enum(['succeeded', 'rejected']), finishedAt: isoTimestamp, historyUpTo: z.int().min(0) }).nullable(),
  activeJobId: jobIdSchema.nullable(),
  forgottenItems: z.int().min(0),
  failures: z
    .object({
      count: z.int().min(1),
      lastJobId: jobIdSchema,
      lastFinishedAt: isoTimestamp,
      lastError: z.object({ code: z.string(), message: z.string() }),
    })
    .nullable(),
});

export const staleUsersSchema = z.object({ minNewItems: z.int().min(1), total: z.int().min(0), items: z.array(staleUserSchema) });

export const staleInjectResultSchema = z.object({
  minNewItems: z.int().min(1),
  /** Stale users in all; those past `limit` are left for the next call. */
  total: z.int().min(0),
  queued: z.array(z.object({ userId: userIdSchema, newItems: z.int().min(0), jobId: jobIdSchema })),
  maxFailures: z.int().min(1),
  /** Users who already had a queued or running job (`active`), or whose jobs kept failing (`failing`). */
  skipped: z.array(
    z.discriminatedUnion('reason', [
      z.object({ userId: userIdSchema, newItems: z.int().min(0), reason: z.literal('active'), activeJobId: jobIdSchema }),
      z.object({ userId: userIdSchema, newItems: z.int().min(0), reason: z.literal('failing'), failures: z.int().min(1), lastJobId: jobIdSchema }),
    ]),
  ),
});

/** Query of GET /v1/admin/users/{userId}/trials. */
export const trialsQuery = z.strictObject({
  jobId: jobIdSchema.optional(),
  format: z.enum(['json', 'svg']).optional(),
});

const loraConfigSchema = z.object({ layers: z.array(z.boolean()), n: z.int().min(0), r: z.int().min(1) });

export const trialSchema = z.object({
  jobId: jobIdSchema,
  index: z.int().min(0),
  config: loraConfigSchema,
  key: z.string(),
  phase: z.enum(['warm-start', 'initial', 'bo']),
  status: z.enum(['ok', 'failed']),
  valLoss: z.number().nullable(),
  valRougeL: z.number().nullable(),
  cost: z.record(z.string(), z.number()),
  durationMs: z.number().min(0),
  error: z.string().nullable(),
  adapterKept: z.boolean(),
  startedAt: isoTimestamp,
});

export const trialsResponseSchema = z.object({
  userId: userIdSchema,
  /** The job whose Pareto front `front` is (the newest with a successful trial, or the one asked for). */
  frontJobId: jobIdSchema.nullable(),
  trials: z.array(trialSchema),
  front: z.array(trialSchema),
  /** How a job picks its configuration from the front. */
  chosenRule: z.string(),
});

/** Data of the Server-Sent Events of GET /v1/admin/jobs/{jobId}/events, by event name. */
export const jobStateEventSchema = z.object({ job: jobSchema });
export const jobProgressEventSchema = z.object({ jobId: jobIdSchema, state: z.enum(JOB_STATES), progress: jsonObjectSchema.nullable(), updatedAt: isoTimestamp });
export const jobTrialEventSchema = z.object({ trial: trialSchema });
export const jobDoneEventSchema = z.object({ job: jobSchema, reason: z.enum(['finished', 'not_following', 'deleted']) });

// ---------------------------------------------------------------------------------------------
// Generation

export const MAX_PROMPT_CHARS = 200_000;
/** Most token ids one prompt, text or /detokenize request may carry (the model's window refuses longer ones first). */
export const MAX_TOKEN_IDS = 65_536;

/** Token ids as POST /tokenize gives them, fed to the model as they are; ids outside the vocabulary are 422 token_out_of_range. */
export const tokenIdsSchema = z.array(z.int().min(0)).min(1).max(MAX_TOKEN_IDS);
/** A raw prompt: text, or token ids. */
const rawPromptSchema = z.union([z.string().min(1).max(MAX_PROMPT_CHARS), tokenIdsSchema]);

export const chatMessageSchema = z.strictObject({
  role: z.enum(['system', 'user', 'assistant']),
  content: z.string().max(MAX_PROMPT_CHARS),
});

const stopSchema = z
  .union([z.string().min(1).max(256), z.array(z.string().min(1).max(256)).max(4)])
  .optional()
  .transform((s): string[] => (s === undefined ? [] : typeof s === 'string' ? [s] : s));

export const GENERATE_MODES = ['auto', 'injected', 'memory', 'vanilla'] as const;
export const SERVED_MODES = ['injected', 'memory', 'vanilla'] as const;

/** OpenAI's bounds of the frequency and presence penalties and of a logit bias. */
const penaltySchema = z.number().min(-2).max(2);
/** A JSON schema for structured outputs, as OpenAI's response_format carries it (strict or not, it is enforced). */
const jsonSchemaSpec = z.looseObject({
  name: z.string().min(1).max(64).regex(/^[\w-]+$/),
  description: z.string().max(4096).optional(),
  schema: z.record(z.string(), z.unknown()),
  strict: z.boolean().nullable().optional(),
});
const textFormats = z.looseObject({ type: z.enum(['text', 'json_object']) });
/**
 * /v1/generate's responseFormat: plain text, one JSON object (JSON mode), or one document of a JSON
 * schema (structured outputs; a schema guided decoding cannot enforce is 422 unsupported_schema).
 */
const responseFormatSchema = z.discriminatedUnion('type', [textFormats, z.looseObject({ type: z.literal('json_schema'), jsonSchema: jsonSchemaSpec })]);
/** OpenAI's response_format: as responseFormat, the schema under json_schema. */
const openAiResponseFormatSchema = z.discriminatedUnion('type', [textFormats, z.looseObject({ type: z.literal('json_schema'), json_schema: jsonSchemaSpec })]);
/** vLLM's guided_regex: the reply matches this ECMAScript pattern whole. */
const guidedRegexSchema = z.string().min(1).max(4096);
/** vLLM's guided_grammar: the reply is a string of this grammar (GBNF's rule root, or Lark's start rule). */
const guidedGrammarSchema = z.string().min(1).max(65_536);
/** vLLM's guided_json: a JSON schema, or its JSON text. */
const guidedJsonSchema = z.union([z.record(z.string(), z.unknown()), z.string().max(65_536)]);
/** Most strings a guided choice may offer. */
export const MAX_GUIDED_CHOICES = 64;
/** vLLM's guided_choice: the reply is one of these strings. */
const guidedChoiceSchema = z.array(z.string().min(1).max(1024)).min(1).max(MAX_GUIDED_CHOICES);
/**
 * vLLM's structured_outputs (from v0.12 on, where it replaced the guided_* fields): one of json, regex,
 * choice, grammar or json_object, as guided_json, guided_regex, guided_choice, guided_grammar and
 * JSON mode. disable_fallback and disable_additional_properties change nothing here (memlora never
 * falls back to another backend, and writes only the named properties of an object that names any;
 * one that names none takes free keys either way); structural_tag,
 * whitespace_pattern and disable_any_whitespace: true are refused, never silently ignored.
 */
const structuredOutputsSchema = z.looseObject({
  json: guidedJsonSchema.nullable().optional(),
  regex: guidedRegexSchema.nullable().optional(),
  choice: guidedChoiceSchema.nullable().optional(),
  grammar: guidedGrammarSchema.nullable().optional(),
  json_object: z.boolean().nullable().optional(),
  disable_fallback: z.boolean().nullable().optional(),
  disable_additional_properties: z.boolean().nullable().optional(),
  disable_any_whitespace: z.boolean().nullable().optional(),
  whitespace_pattern: z.string().nullable().optional(),
  structural_tag: z.unknown().optional(),
});
/** structured_outputs' fields that guide a reply. */
const STRUCTURED_OUTPUT_GUIDES = ['json', 'regex', 'choice', 'grammar', 'json_object'] as const;
/** Most stop token ids one request may name. */
export const MAX_STOP_TOKEN_IDS = 64;
/** Most token ids a request may restrict its reply to (allowedTokenIds). */
export const MAX_ALLOWED_TOKEN_IDS = 8192;
const allowedTokenIdsSchema = z.array(z.int().min(0)).min(1).max(MAX_ALLOWED_TOKEN_IDS);
/** vLLM's truncate_prompt_tokens: the prompt read as its last k tokens; -1: the context window less one token. */
const truncatePromptSchema = z.union([z.literal(-1), z.int().min(1).max(1_000_000)]);
/** Which end a truncated prompt keeps (vLLM's truncation_side): left cuts the start, right the end. */
const truncationSideSchema = z.enum(['left', 'right']);
/** Words a reply never writes (vLLM's bad_words). */
const badWordsSchema = z
  .array(
    z
      .string()
      .max(256)
      .refine((w) => w.trim() !== '', { message: 'a bad word is not empty or only white space' }),
  )
  .max(256);
/**
 * The user's adapter version a request is served with, active or not (an upload kept inactive tried
 * before it is activated, an older version before a rollback, two versions compared): refused, never
 * a fallback, where it cannot serve. Only with mode auto or injected.
 */
const adapterVersionSchema = z.int().min(1);

/** An adapter version named with a mode that uses no adapter. */
function refineAdapterVersion(v: { mode?: string | null; version?: number | null }, ctx: z.RefinementCtx, names: { version: string }): void {
  if (v.version != null && (v.mode === 'memory' || v.mode === 'vanilla')) {
    ctx.addIssue({ code: 'custom', path: [names.version], message: `an adapter version (${names.version}) is served with mode auto or injected; mode ${v.mode} uses no adapter` });
  }
}

/** Most token ids one request may bias. */
export const MAX_LOGIT_BIAS = 1024;
const logitBiasSchema = z
  .record(z.string().regex(/^(0|[1-9][0-9]{0,8})$/, 'a token id: a whole number written in decimal'), z.number().min(-100).max(100))
  .refine((r) => Object.keys(r).length <= MAX_LOGIT_BIAS, { message: `at most ${MAX_LOGIT_BIAS} token ids` });

/** Most alternatives per token a request may ask log-probabilities of (OpenAI's bound). */
export const MAX_TOP_LOGPROBS = 20;

/** A token's log-probability under the model that served the request (src/serve/logprobs.ts). */
export const tokenAlternativeSchema = z.object({
  token: z.string(),
  tokenId: z.int().min(0),
  logprob: z.number().max(0),
  bytes: z.array(z.int().min(0).max(255)).nullable(),
});

export const tokenLogprobSchema = tokenAlternativeSchema.extend({
  /** The token's place among all tokens at this position, most likely first (1: the most likely; ties in id order, as `top` lists them). */
  rank: z.int().min(1),
  top: z.array(tokenAlternativeSchema).max(MAX_TOP_LOGPROBS),
});

/**
 * vLLM's continue_final_message: the last message must be the assistant's (the reply continues it),
 * and no generation prompt may open a new one; a generation prompt switched off alone (a reply with
 * no assistant opening) is not served.
 */
function refineContinue(
  v: { messages?: ReadonlyArray<{ role: string }>; continued?: boolean | null; addGenerationPrompt?: boolean | null },
  ctx: z.RefinementCtx,
  names: { continued: string; addGenerationPrompt: string },
): void {
  if (v.continued) {
    if (v.messages?.[v.messages.length - 1]?.role !== 'assistant') {
      ctx.addIssue({ code: 'custom', path: [names.continued], message: 'continuing the final message needs messages whose last one is the assistant\'s' });
    }
    if (v.addGenerationPrompt === true) ctx.addIssue({ code: 'custom', path: [names.addGenerationPrompt], message: `${names.addGenerationPrompt} opens a new message; it cannot be true with ${names.continued}` });
  } else if (v.addGenerationPrompt === false) {
    ctx.addIssue({ code: 'custom', path: [names.addGenerationPrompt], message: `${names.addGenerationPrompt} false is served only with ${names.continued}` });
  }
}

export const generateRequestSchema = z
  .strictObject({
    userId: userIdSchema,
    messages: z.array(chatMessageSchema).min(1).max(256).optional(),
    /** The last message, the assistant's, is continued by the reply (a prefilled reply). */
    continueFinalMessage: z.boolean().optional(),
    prompt: rawPromptSchema.optional(),
    maxTokens: z.int().min(1).max(2048).default(128),
    minTokens: z.int().min(0).max(2048).optional(),
    ignoreEos: z.boolean().optional(),
    temperature: z.number().min(0).max(5).default(0),
    topP: z.number().gt(0).max(1).default(1),
    topK: z.int().min(0).optional(),
    /** Keep the tokens at least minP times as likely as the most likely one (after temperature, top-k and top-p); 0 or absent: all. */
    minP: z.number().min(0).max(1).optional(),
    repetitionPenalty: z.number().gt(0).max(10).optional(),
    frequencyPenalty: penaltySchema.optional(),
    presencePenalty: penaltySchema.optional(),
    logitBias: logitBiasSchema.optional(),
    stop: stopSchema,
    stopTokenIds: z.array(z.int().min(0)).max(MAX_STOP_TOKEN_IDS).optional(),
    /** The stop string that ends the reply stays at its end (vLLM's include_stop_str_in_output). */
    includeStopStrInOutput: z.boolean().optional(),
    /** Only these tokens may be drawn (vLLM's allowed_token_ids; end tokens only if listed); not with a guide. */
    allowedTokenIds: allowedTokenIdsSchema.optional(),
    /** Words never written (vLLM's bad_words): their tokens, as written and after a space, held back where they would complete; not with a guide. */
    badWords: badWordsSchema.optional(),
    /** The prompt read as its last k tokens (vLLM's truncate_prompt_tokens; -1: the context window less one); memory only as far as it fits within them. */
    truncatePromptTokens: truncatePromptSchema.optional(),
    /** Which end truncatePromptTokens keeps (vLLM's truncation_side): left (default) the last tokens, right the first. */
    truncationSide: truncationSideSchema.optional(),
    responseFormat: responseFormatSchema.optional(),
    guidedChoice: guidedChoiceSchema.optional(),
    guidedRegex: guidedRegexSchema.optional(),
    guidedGrammar: guidedGrammarSchema.optional(),
    seed: z.int().optional(),
    stream: z.boolean().default(false),
    mode: z.enum(GENERATE_MODES).default('auto'),
    /** Serve with this adapter version of the user, active or not (mode auto or injected); refused where it cannot serve, never a fallback. */
    adapterVersion: adapterVersionSchema.optional(),
    logprobs: z.boolean().default(false),
    topLogprobs: z.int().min(0).max(MAX_TOP_LOGPROBS).optional(),
    /** The prompt's token ids as the model read them (memory included) and the reply's, in the result and the token events (vLLM's return_token_ids). */
    returnTokenIds: z.boolean().optional(),
    /** A control token the model draws mid-reply leaves no text (vLLM's skip_special_tokens); absent or false: its text is kept. */
    skipSpecialTokens: z.boolean().optional(),
  })
  .superRefine((v, ctx) => {
    if ((v.messages === undefined) === (v.prompt === undefined)) {
      ctx.addIssue({ code: 'custom', path: ['messages'], message: 'give exactly one of messages or prompt' });
    }
    if (v.topLogprobs !== undefined && !v.logprobs) {
      ctx.addIssue({ code: 'custom', path: ['topLogprobs'], message: 'topLogprobs needs logprobs: true' });
    }
    if (v.minTokens !== undefined && v.minTokens > v.maxTokens) {
      ctx.addIssue({ code: 'custom', path: ['minTokens'], message: `minTokens (${v.minTokens}) exceeds maxTokens (${v.maxTokens})` });
    }
    refineContinue({ messages: v.messages, continued: v.continueFinalMessage }, ctx, { continued: 'continueFinalMessage', addGenerationPrompt: 'addGenerationPrompt' });
    refineAdapterVersion({ mode: v.mode, version: v.adapterVersion }, ctx, { version: 'adapterVersion' });
    const guides = [v.responseFormat !== undefined && v.responseFormat.type !== 'text' && 'responseFormat', v.guidedChoice !== undefined && 'guidedChoice', v.guidedRegex !== undefined && 'guidedRegex', v.guidedGrammar !== undefined && 'guidedGrammar'].filter(
      (g): g is string => typeof g === 'string',
    );
    if (guides.length > 1) ctx.addIssue({ code: 'custom', path: [guides[1]], message: `give one of ${guides.join(', ')}, not both` });
    for (const field of ['allowedTokenIds', 'badWords'] as const) {
      if (isAsked(v[field]) && guides.length > 0) ctx.addIssue({ code: 'custom', path: [field], message: `${field} cannot be combined with ${guides[0]}: a guide chooses the tokens` });
    }
  });

/** cachedTokens: the prompt tokens whose keys and values came from the prefix cache (the conversation so far), not computed again. */
export const usageSchema = z.object({ promptTokens: z.int().min(0), completionTokens: z.int().min(0), cachedTokens: z.int().min(0) });

/** Why a request was served with less than it asked for (see the engine's personalize.ts). */
export const FALLBACK_REASONS = ['no_adapter', 'adapter_corrupt', 'adapter_missing', 'adapter_unavailable', 'no_memory'] as const;

export const personalizationSchema = z.object({
  mode: z.enum(SERVED_MODES),
  adapterVersion: z.int().min(1).nullable(),
  /** The request named the version (adapterVersion): served whether or not it is the active one. */
  pinned: z.literal(true).optional(),
  memoryItems: z.int().min(0).optional(),
  fallback: z.object({ from: z.enum(['injected', 'memory']), reason: z.enum(FALLBACK_REASONS) }).optional(),
});

export const generateResultSchema = z.object({
  id: z.string().min(1),
  userId: userIdSchema,
  text: z.string(),
  finishReason: z.enum(['stop', 'length', 'cancelled']),
  usage: usageSchema,
  timings: z.object({
    queueMs: z.number().min(0),
    prefillMs: z.number().min(0),
    decodeMs: z.number().min(0),
    totalMs: z.number().min(0),
  }),
  personalization: personalizationSchema,
  /** With logprobs: one entry per completion token, a final end or stop token (not in `text`) included. */
  logprobs: z.array(tokenLogprobSchema).optional(),
  /** With returnTokenIds: the reply's token ids, one per completion token (a final end or stop token included). */
  tokenIds: z.array(z.int().min(0)).optional(),
  /** With returnTokenIds: the prompt's token ids as the model read them (memory included), one per prompt token. */
  promptTokenIds: z.array(z.int().min(0)).optional(),
});

/**
 * POST /v1/score: how likely `text` is after a context (messages with the assistant's opening, a raw
 * prompt, or neither) under the user's model; `compare` adds the base model's figures.
 */
export const scoreRequestSchema = z
  .strictObject({
    userId: userIdSchema,
    messages: z.array(chatMessageSchema).min(1).max(256).optional(),
    prompt: rawPromptSchema.optional(),
    text: rawPromptSchema,
    mode: z.enum(GENERATE_MODES).default('auto'),
    /** Score under this adapter version of the user, active or not, as /v1/generate's. */
    adapterVersion: adapterVersionSchema.optional(),
    topLogprobs: z.int().min(0).max(MAX_TOP_LOGPROBS).default(0),
    compare: z.boolean().default(false),
  })
  .superRefine((v, ctx) => {
    if (v.messages !== undefined && v.prompt !== undefined) ctx.addIssue({ code: 'custom', path: ['messages'], message: 'give at most one of messages or prompt' });
    refineAdapterVersion({ mode: v.mode, version: v.adapterVersion }, ctx, { version: 'adapterVersion' });
  });

const likelihoodShape = { logprob: z.number().max(0), meanLogprob: z.number().max(0), perplexity: z.number().min(1) };

export const scoreResultSchema = z.object({
  id: z.string().min(1),
  userId: userIdSchema,
  ...likelihoodShape,
  tokens: z.array(tokenLogprobSchema),
  usage: z.object({ contextTokens: z.int().min(1), scoredTokens: z.int().min(1), baseContextTokens: z.int().min(1).optional() }),
  personalization: personalizationSchema,
  base: z.object({ ...likelihoodShape, logprobs: z.array(z.number().max(0)) }).optional(),
  timings: z.object({ queueMs: z.number().min(0), scoreMs: z.number().min(0), totalMs: z.number().min(0) }),
});

// ---------------------------------------------------------------------------------------------
// Metering and quotas (GET /v1/admin/users/{userId}/usage, GET /v1/admin/usage/users, /v1/admin/users/{userId}/quota)

/** A UTC calendar day, YYYY-MM-DD. */
export const daySchema = z
  .string()
  .regex(/^\d{4}-\d{2}-\d{2}$/, 'a day as YYYY-MM-DD')
  .refine((d) => !Number.isNaN(Date.parse(`${d}T00:00:00Z`)) && new Date(`${d}T00:00:00Z`).toISOString().startsWith(d), { message: 'not a calendar day' });

/** Most days one usage request may span. */
export const MAX_USAGE_DAYS = 366;



/**
 * A range of days in a query: `to` today (UTC) unless given, `from` the `defaultDays`-th day back to
 * it unless given; from <= to, at most MAX_USAGE_DAYS days.
 */
function usageRange(v: { from?: string; to?: string }, defaultDays: number, ctx: z.RefinementCtx): { from: string; to: string } {
  const to = v.to ?? usageDay(Date.now());
  const from = v.from ?? dayPlus(to, 1 - defaultDays);
  const n = daysBetween(from, to);
  if (n < 1) ctx.addIssue({ code: 'custom', path: ['from'], message: `from (${from}) is after to (${to})` });
  else if (n > MAX_USAGE_DAYS) ctx.addIssue({ code: 'custom', path: ['from'], message: `at most ${MAX_USAGE_DAYS} days at a time (asked ${n})` });
  return { from, to };
}

/** A user's days: the last 30 by default. */
export const userUsageQuery = z
  .strictObject({ from: daySchema.optional(), to: daySchema.optional(), format: z.enum(['json', 'svg']).optional() })
  .transform((v, ctx) => ({ ...v, ...usageRange(v, 30, ctx) }));

/** The users' sums over a range: today by default (a month for billing). */
export const usersUsageQuery = z
  .strictObject({ from: daySchema.optional(), to: daySchema.optional(), limit: queryInt(1, 1000).optional() })
  .transform((v, ctx) => ({ ...v, ...usageRange(v, 1, ctx) }));

const usageCountsSchema = z.object({
  requests: z.int().min(0),
  promptTokens: z.int().min(0),
  cachedTokens: z.int().min(0),
  completionTokens: z.int().min(0),
  scoredTokens: z.int().min(0),
});

export const userUsageSchema = z.object({
  userId: userIdSchema,
  from: daySchema,
  to: daySchema,
  /** The days with requests, oldest first. */
  days: z.array(usageCountsSchema.extend({ day: daySchema })),
  total: usageCountsSchema,
});

export const usersUsageSchema = z.object({
  from: daySchema,
  to: daySchema,
  /** Users with requests in the range; `users` lists the most tokens first, at most the limit. */
  usersTotal: z.int().min(0),
  total: usageCountsSchema,
  users: z.array(usageCountsSchema.extend({ userId: userIdSchema })),
});

/** PUT /v1/admin/users/{userId}/quota: the user's own daily token quota (0 blocks them), or null for the server's default. */
export const quotaBody = z.strictObject({ dailyTokens: z.int().min(0).max(Number.MAX_SAFE_INTEGER).nullable() });

export const quotaSchema = z.object({
  userId: userIdSchema,
  /** The user's own quota; null: the server's default applies. */
  dailyTokens: z.int().min(0).nullable(),
  /** MEMLORA_USER_DAILY_TOKENS; null: none. */
  serverDailyTokens: z.int().min(1).nullable(),
  /** The quota that applies; null: no limit. */
  effectiveDailyTokens: z.int().min(0).nullable(),
  /** Tokens served today (UTC), as metered. */
  usedToday: z.int().min(0),
  remainingToday: z.int().min(0).nullable(),
  /** Tokens the user's unfinished requests hold against the quota now (prompt and reply budget each, until it ends). */
  heldTokens: z.int().min(0),
  /** When today's count starts again (midnight UTC). */
  resetsAt: z.string(),
});

/** GET /v1/admin/queue: users listed at most (default 100). */
export const queueQuery = z.strictObject({ limit: queryInt(1, 1000).optional() });

export const queueReportSchema = z.object({
  scheduling: z.enum(['fair', 'fifo']),
  maxBatch: z.int().min(1),
  maxQueue: z.int().min(1),
  maxQueuePerUser: z.int().min(1),
  rows: z.array(
    z.object({
      id: z.string().min(1),
      userId: userIdSchema,
      state: z.enum(['prefill', 'decode']),
      mode: z.enum(SERVED_MODES),
      adapterVersion: z.int().min(1).nullable(),
      /** The request named its adapter version, active or not. */
      pinned: z.literal(true).optional(),
      promptTokens: z.int().min(0),
      promptTokensRead: z.int().min(0),
      generatedTokens: z.int().min(0),
      runningMs: z.number().min(0),
    }),
  ),
  waiting: z.int().min(0),
  compiling: z.int().min(0),
  users: z.array(z.object({ userId: userIdSchema, rows: z.int().min(0), waiting: z.int().min(0), oldestWaitMs: z.number().min(0).nullable() })),
  usersTotal: z.int().min(0),
});

/** The data of the two SSE event types of a streamed /v1/generate. */
export const generateTokenEventSchema = z.object({
  text: z.string(),
  logprobs: z.array(tokenLogprobSchema).optional(),
  /** With returnTokenIds: the step's token; the first such event also has the prompt's ids. */
  tokenIds: z.array(z.int().min(0)).optional(),
  promptTokenIds: z.array(z.int().min(0)).optional(),
});
export const generateDoneEventSchema = z.object({ result: generateResultSchema });

// ---------------------------------------------------------------------------------------------
// OpenAI-compatible chat completions. Unknown fields are ignored (clients send many), known ones
// are validated; unsupported values (n > 16, image parts) and vLLM's fields memlora does not do
// (VLLM_REFUSED) are rejected.

const chatContentPart = z.looseObject({ type: z.literal('text'), text: z.string().max(MAX_PROMPT_CHARS) });

/** A function's name, as OpenAI allows it. */
const toolNameSchema = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/);

/** A tool call an assistant message made (sent back in the conversation). */
const openAiToolCall = z.looseObject({
  id: z.string().max(256),
  type: z.literal('function'),
  function: z.looseObject({ name: toolNameSchema, arguments: z.string().max(MAX_PROMPT_CHARS) }),
});

/** A streamed tool call's piece, as OpenAI's: the call's first has its id, type and name; arguments come in pieces. */
const toolCallDelta = z.strictObject({
  index: z.int().min(0),
  id: z.string().optional(),
  type: z.literal('function').optional(),
  function: z.strictObject({ name: toolNameSchema.optional(), arguments: z.string() }),
});

export const openAiMessageSchema = z
  .looseObject({
    role: z.enum(['system', 'developer', 'user', 'assistant', 'tool']),
    content: z.union([z.string().max(MAX_PROMPT_CHARS), z.array(chatContentPart).min(1).max(64)]).nullable().optional(),
    name: z.string().max(256).optional(),
    /** An assistant's calls of functions; a tool message answers one by its id. */
    tool_calls: z.array(openAiToolCall).max(64).nullable().optional(),
    tool_call_id: z.string().max(256).optional(),
  })
  .superRefine((m, ctx) => {
    if (m.content == null && !(m.role === 'assistant' && m.tool_calls?.length)) ctx.addIssue({ code: 'custom', path: ['content'], message: 'content is required (only an assistant message with tool_calls may go without)' });
    if (m.role === 'tool' && m.tool_call_id === undefined) ctx.addIssue({ code: 'custom', path: ['tool_call_id'], message: 'a tool message answers a tool call: give its tool_call_id' });
    if (m.tool_calls?.length && m.role !== 'assistant') ctx.addIssue({ code: 'custom', path: ['tool_calls'], message: 'only an assistant message makes tool calls' });
  });

/** Most tools one chat completion may offer. */
export const MAX_TOOLS = 128;

/** OpenAI's function tools: a chat completion may be made to call one (tool_choice required, or a named function). */
const openAiTool = z.looseObject({
  type: z.literal('function'),
  function: z.looseObject({
    name: toolNameSchema,
    description: z.string().max(8192).optional(),
    /** A JSON schema of the arguments (absent: none). */
    parameters: z.record(z.string(), z.unknown()).optional(),
    strict: z.boolean().nullable().optional(),
  }),
});

const namedTool = z.looseObject({ type: z.literal('function'), function: z.looseObject({ name: toolNameSchema }) });
/** none, auto, required, a named function, or OpenAI's allowed_tools: auto or required among a subset of the tools. */
const openAiToolChoice = z.union([
  z.enum(['none', 'auto', 'required']),
  namedTool,
  z.looseObject({ type: z.literal('allowed_tools'), allowed_tools: z.looseObject({ mode: z.enum(['auto', 'required']), tools: z.array(namedTool).min(1).max(MAX_TOOLS) }) }),
]);

/**
 * A user's own model as OpenAI clients name it, for tools that send `model` but cannot send `user`
 * (as vLLM names a LoRA adapter by the model id): `memlora:<user id>`, or `memlora:<user id>@<version>`
 * for one of their adapter versions, active or not (as adapter_version; `@` is never in a user id).
 */
export const USER_MODEL_PREFIX = 'memlora:';

/** The user and adapter version (null: the one that serves them) a model id names, or null where it names none. */
export function modelRef(model: string | undefined): { userId: string; version: number | null } | null {
  if (!model?.startsWith(USER_MODEL_PREFIX)) return null;
  const m = /^(.*?)(?:@([1-9][0-9]{0,8}))?$/.exec(model.slice(USER_MODEL_PREFIX.length))!;
  return isValidUserId(m[1]) ? { userId: m[1], version: m[2] === undefined ? null : Number(m[2]) } : null;
}

/** The user id a model id names (`memlora:<user id>`, with or without `@<version>`), or null. */
export function userOfModel(model: string | undefined): string | null {
  return modelRef(model)?.userId ?? null;
}

/** Whether a field a client may send empty asks for something: not null, false, an empty list, or an object of nulls. */
const isAsked = (x: unknown): boolean => x != null && x !== false && !(Array.isArray(x) && x.length === 0) && !(typeof x === 'object' && !Array.isArray(x) && Object.values(x as object).every((y) => y == null));

/** vLLM's fields of the OpenAI routes that would change the reply and that memlora does not do: refused when asked, never ignored. */
const VLLM_REFUSED: Record<string, string> = {
  use_beam_search: 'beam search is not supported',
  logits_processors: 'logits_processors are not supported',
  logprob_token_ids: 'logprob_token_ids is not supported: score chosen tokens with POST /v1/score',
};
/** The same, of chat completions alone. */
const VLLM_CHAT_REFUSED: Record<string, string> = {
  chat_template: "chat_template is not supported: the model's own chat template is used",
};

/** vLLM's prompt_logprobs: not in a stream (vLLM refuses it there too), and -1 (every token of the vocabulary) is past memlora's bound. */
function refinePromptLogprobs(v: { prompt_logprobs?: number | null; stream?: boolean | null }, ctx: z.RefinementCtx): void {
  if (v.prompt_logprobs == null) return;
  if (v.prompt_logprobs === -1) ctx.addIssue({ code: 'custom', path: ['prompt_logprobs'], message: `-1 (every token of the vocabulary) is more than memlora reports: at most ${MAX_TOP_LOGPROBS}` });
  if (v.stream) ctx.addIssue({ code: 'custom', path: ['prompt_logprobs'], message: 'prompt_logprobs are not available when stream is true' });
}

/** 422 for each refused field the body asks for; vLLM's priority other than 0 too (vLLM refuses it without priority scheduling, which memlora does not do). */
function refineRefused(v: Record<string, unknown>, ctx: z.RefinementCtx, refused: Record<string, string>): void {
  for (const [field, why] of Object.entries(refused)) {
    if (isAsked(v[field])) ctx.addIssue({ code: 'custom', path: [field], message: why });
  }
  if (v.priority != null && v.priority !== 0) ctx.addIssue({ code: 'custom', path: ['priority'], message: 'priority scheduling is not supported (the batch is shared fairly between users): send 0 or nothing' });
}

/**
 * The adapter version an OpenAI request names: adapter_version, or its model's `@<version>` (both
 * given, they must agree), only with mode auto or injected.
 */
function refineOpenAiVersion(v: { model?: string; mode?: string; adapter_version?: number | null }, ctx: z.RefinementCtx): void {
  const named = modelRef(v.model)?.version ?? null;
  if (named !== null && v.adapter_version != null && named !== v.adapter_version) {
    ctx.addIssue({ code: 'custom', path: ['model'], message: `model names adapter version ${named}, adapter_version says ${v.adapter_version}` });
  }
  refineAdapterVersion({ mode: v.mode, version: v.adapter_version ?? named }, ctx, { version: v.adapter_version != null ? 'adapter_version' : 'model' });
}

/** The memlora user of an OpenAI request: `user`, or the one its model names; both must agree. */
function refineOpenAiUser(v: { user?: string; model?: string }, ctx: z.RefinementCtx): void {
  const named = userOfModel(v.model);
  if (v.user === undefined && named === null) {
    ctx.addIssue({ code: 'custom', path: ['user'], message: `give user (the memlora user id), or model "${USER_MODEL_PREFIX}<user id>"` });
  } else if (v.user !== undefined && named !== null && named !== v.user) {
    ctx.addIssue({ code: 'custom', path: ['model'], message: `model names user "${named}", user says "${v.user}"` });
  }
}

type OpenAiGuides = {
  response_format?: { type: string } | null;
  guided_choice?: unknown;
  guided_json?: unknown;
  guided_regex?: unknown;
  guided_grammar?: unknown;
  structured_outputs?: z.output<typeof structuredOutputsSchema> | null;
  guided_whitespace_pattern?: string | null;
  allowed_token_ids?: number[] | null;
  bad_words?: string[] | null;
};

/** The fields that choose the tokens a reply may draw, which a guide chooses itself. */
const TOKEN_CHOOSERS = ['allowed_token_ids', 'bad_words'] as const;

/** The guides an OpenAI body gives, by path: a JSON response_format, vLLM's guided_* fields and its structured_outputs' guides. */
function openAiGuides(v: OpenAiGuides): string[] {
  const so = v.structured_outputs;
  return [
    v.response_format != null && v.response_format.type !== 'text' && 'response_format',
    v.guided_choice != null && 'guided_choice',
    v.guided_json != null && 'guided_json',
    v.guided_regex != null && 'guided_regex',
    v.guided_grammar != null && 'guided_grammar',
    ...STRUCTURED_OUTPUT_GUIDES.map((k) => so?.[k] != null && so[k] !== false && `structured_outputs.${k}`),
  ].filter((g): g is string => typeof g === 'string');
}

/** At most one guide of an OpenAI body; a JSON schema given as text is a JSON object; structured_outputs asks nothing memlora cannot do. */
function refineOpenAiGuides(v: OpenAiGuides, ctx: z.RefinementCtx): void {
  const given = openAiGuides(v);
  if (given.length > 1) ctx.addIssue({ code: 'custom', path: given[1].split('.'), message: `give one of ${given.join(', ')}, not both` });
  for (const field of TOKEN_CHOOSERS) {
    if (isAsked(v[field]) && given.length > 0) ctx.addIssue({ code: 'custom', path: [field], message: `${field} cannot be combined with ${given[0]}: a guide chooses the tokens` });
  }
  const texts: Array<[string[], unknown]> = [
    [['guided_json'], v.guided_json],
    [['structured_outputs', 'json'], v.structured_outputs?.json],
  ];
  for (const [path, text] of texts) {
    if (typeof text === 'string' && !isJsonObjectText(text)) ctx.addIssue({ code: 'custom', path, message: `${path.join('.')} must be a JSON schema: an object, or its JSON text` });
  }
  const so = v.structured_outputs;
  if (so?.structural_tag != null) ctx.addIssue({ code: 'custom', path: ['structured_outputs', 'structural_tag'], message: 'structural_tag is not supported' });
  const spaces: Array<[string[], boolean]> = [
    [['structured_outputs', 'whitespace_pattern'], so?.whitespace_pattern != null],
    [['guided_whitespace_pattern'], v.guided_whitespace_pattern != null],
    [['structured_outputs', 'disable_any_whitespace'], so?.disable_any_whitespace === true],
  ];
  for (const [path, given] of spaces) {
    if (given) ctx.addIssue({ code: 'custom', path, message: `${path.at(-1)} is not supported: white space in JSON replies is bounded by memlora (16 bytes, one line break)` });
  }
}

function isJsonObjectText(text: string): boolean {
  try {
    const v: unknown = JSON.parse(text);
    return typeof v === 'object' && v !== null && !Array.isArray(v);
  } catch {
    return false;
  }
}

type ToolChoice = z.output<typeof openAiToolChoice>;

/**
 * A tool_choice that names tools (a function, allowed_tools) names tools the body has; one that makes
 * the reply a call (required, a named function, allowed_tools in mode required) needs tools and is
 * the request's only guide.
 */
function refineTools(v: OpenAiGuides & { tools?: Array<{ function: { name: string } }> | null; tool_choice?: ToolChoice | null }, ctx: z.RefinementCtx): void {
  const names = (v.tools ?? []).map((t) => t.function.name);
  const twice = names.find((n, i) => names.indexOf(n) !== i);
  if (twice !== undefined) ctx.addIssue({ code: 'custom', path: ['tools'], message: `two tools are named "${twice}"` });
  const choice = v.tool_choice;
  for (const field of TOKEN_CHOOSERS) {
    if (isAsked(v[field]) && names.length > 0 && choice !== 'none') ctx.addIssue({ code: 'custom', path: [field], message: `${field} cannot be combined with tools (unless tool_choice is none): calls are guided` });
  }
  if (choice == null || choice === 'none' || choice === 'auto') return;
  if (typeof choice === 'object' && choice.type === 'allowed_tools') {
    if (names.length === 0) ctx.addIssue({ code: 'custom', path: ['tool_choice'], message: 'allowed_tools names tools: give them' });
    for (const t of choice.allowed_tools.tools) {
      if (names.length > 0 && !names.includes(t.function.name)) ctx.addIssue({ code: 'custom', path: ['tool_choice', 'allowed_tools', 'tools'], message: `no tool is named "${t.function.name}"` });
    }
    if (choice.allowed_tools.mode === 'auto') return;
  } else {
    if (names.length === 0) ctx.addIssue({ code: 'custom', path: ['tool_choice'], message: 'tool_choice asks for a call: give tools' });
    if (typeof choice === 'object' && names.length > 0 && !names.includes(choice.function.name)) {
      ctx.addIssue({ code: 'custom', path: ['tool_choice'], message: `no tool is named "${choice.function.name}"` });
    }
  }
  const other = openAiGuides(v)[0];
  if (other) ctx.addIssue({ code: 'custom', path: other.split('.'), message: `a reply that is a tool call cannot also follow ${other}` });
}

/** Most choices (`n`) one OpenAI request may ask for; each is a generation request of its own. */
export const MAX_CHOICES = 16;

/** The sampling fields OpenAI's chat and legacy completions APIs share (with vLLM's extensions), and memlora's mode. */
const openAiSamplingShape = {
  model: z.string().max(256).optional(),
  /** The memlora user id; absent, the model must name the user (USER_MODEL_PREFIX). */
  user: userIdSchema.optional(),
  temperature: z.number().min(0).max(5).nullable().optional(),
  top_p: z.number().gt(0).max(1).nullable().optional(),
  stop: z
    .union([z.string().min(1).max(256), z.array(z.string().min(1).max(256)).max(4)])
    .nullable()
    .optional(),
  seed: z.int().nullable().optional(),
  stream: z.boolean().nullable().optional(),
  /** include_usage: a last chunk with the usage; with it, vLLM's continuous_usage_stats: the usage so far on every chunk. */
  stream_options: z.looseObject({ include_usage: z.boolean().optional(), continuous_usage_stats: z.boolean().nullable().optional() }).nullable().optional(),
  /** Choices per prompt; with a seed, choice j samples with seed + j. */
  n: z.int().min(1).max(MAX_CHOICES).nullable().optional(),
  frequency_penalty: penaltySchema.nullable().optional(),
  presence_penalty: penaltySchema.nullable().optional(),
  logit_bias: logitBiasSchema.nullable().optional(),
  /** vLLM's extensions of the OpenAI body, as /v1/generate's topK, minP, repetitionPenalty, minTokens, ignoreEos, stopTokenIds, includeStopStrInOutput, allowedTokenIds, badWords, truncatePromptTokens and truncationSide. */
  top_k: z.int().min(-1).nullable().optional(),
  min_p: z.number().min(0).max(1).nullable().optional(),
  repetition_penalty: z.number().gt(0).max(10).nullable().optional(),
  min_tokens: z.int().min(0).max(2048).nullable().optional(),
  ignore_eos: z.boolean().nullable().optional(),
  stop_token_ids: z.array(z.int().min(0)).max(MAX_STOP_TOKEN_IDS).nullable().optional(),
  include_stop_str_in_output: z.boolean().nullable().optional(),
  allowed_token_ids: allowedTokenIdsSchema.nullable().optional(),
  bad_words: badWordsSchema.nullable().optional(),
  truncate_prompt_tokens: truncatePromptSchema.nullable().optional(),
  truncation_side: truncationSideSchema.nullable().optional(),
  /** vLLM's: each prompt token's log-probability, rank and this many most likely tokens at its place (src/http/prompt-logprobs.ts); not with stream. */
  prompt_logprobs: z.int().min(-1).max(MAX_TOP_LOGPROBS).nullable().optional(),
  /** vLLM's: tokens in logprobs named "token_id:<id>" (their bytes and text offsets stay the token's own). */
  return_tokens_as_token_ids: z.boolean().nullable().optional(),
  /** vLLM's: the prompt's token ids as the model read them (memory included) and each choice's (prompt_token_ids, token_ids). */
  return_token_ids: z.boolean().nullable().optional(),
  /** vLLM's, true unless false (as vLLM's default): a control token drawn mid-reply leaves no text. */
  skip_special_tokens: z.boolean().nullable().optional(),
  response_format: openAiResponseFormatSchema.nullable().optional(),
  guided_choice: guidedChoiceSchema.nullable().optional(),
  guided_json: guidedJsonSchema.nullable().optional(),
  guided_regex: guidedRegexSchema.nullable().optional(),
  guided_grammar: guidedGrammarSchema.nullable().optional(),
  structured_outputs: structuredOutputsSchema.nullable().optional(),
  /** vLLM's (before v0.12): refused, as structured_outputs.whitespace_pattern is. */
  guided_whitespace_pattern: z.string().nullable().optional(),
  /** memlora extension: the personalisation mode, as in /v1/generate. */
  mode: z.enum(GENERATE_MODES).optional(),
  /** memlora extension: the adapter version to serve with, active or not, as /v1/generate's adapterVersion. */
  adapter_version: adapterVersionSchema.nullable().optional(),
};

export const chatCompletionRequestSchema = z.looseObject({
  ...openAiSamplingShape,
  messages: z.array(openAiMessageSchema).min(1).max(256),
  max_tokens: z.int().min(1).max(2048).nullable().optional(),
  max_completion_tokens: z.int().min(1).max(2048).nullable().optional(),
  logprobs: z.boolean().nullable().optional(),
  top_logprobs: z.int().min(0).max(MAX_TOP_LOGPROBS).nullable().optional(),
  /** vLLM's: the reply continues the last message, the assistant's (then add_generation_prompt must not be true). */
  continue_final_message: z.boolean().nullable().optional(),
  /** vLLM's: each choice's content starts with the last message's text, where that message is the assistant's. */
  echo: z.boolean().nullable().optional(),
  add_generation_prompt: z.boolean().nullable().optional(),
  tools: z.array(openAiTool).max(MAX_TOOLS).nullable().optional(),
  tool_choice: openAiToolChoice.nullable().optional(),
  /** Whether a reply may make several calls at once (true unless false, as OpenAI's). */
  parallel_tool_calls: z.boolean().nullable().optional(),
}).superRefine((v, ctx) => {
  refineOpenAiUser(v, ctx);
  refineOpenAiVersion(v, ctx);
  refineOpenAiGuides(v, ctx);
  refinePromptLogprobs(v, ctx);
  refineRefused(v, ctx, { ...VLLM_REFUSED, ...VLLM_CHAT_REFUSED });
  if (v.best_of != null && v.best_of !== 1) ctx.addIssue({ code: 'custom', path: ['best_of'], message: 'best_of above 1 is not supported: ask for n choices' });
  refineTools(v, ctx);
  refineContinue({ messages: v.messages, continued: v.continue_final_message, addGenerationPrompt: v.add_generation_prompt }, ctx, { continued: 'continue_final_message', addGenerationPrompt: 'add_generation_prompt' });
  if (v.top_logprobs != null && !v.logprobs) ctx.addIssue({ code: 'custom', path: ['top_logprobs'], message: 'top_logprobs needs logprobs: true' });
});

const openAiUsage = z.object({
  prompt_tokens: z.int().min(0),
  completion_tokens: z.int().min(0),
  total_tokens: z.int().min(0),
  /** As OpenAI reports prompt caching: the prompt tokens read from the prefix cache. */
  prompt_tokens_details: z.object({ cached_tokens: z.int().min(0) }),
});

/** OpenAI's log-probabilities of a choice: the content tokens, each with its most likely alternatives. */
const openAiAlternative = z.object({ token: z.string(), logprob: z.number().max(0), bytes: z.array(z.int().min(0).max(255)).nullable() });
const openAiLogprobs = z.object({ content: z.array(openAiAlternative.extend({ top_logprobs: z.array(openAiAlternative) })) }).nullable();

/** A stream chunk's usage: the last chunk's (include_usage), or the usage so far (vLLM's continuous_usage_stats: no cached tokens, known at the end). */
const streamUsage = openAiUsage.partial({ prompt_tokens_details: true });

/** Token ids in an OpenAI response (vLLM's return_token_ids). */
const tokenIdListSchema = z.array(z.int().min(0));

/** vLLM's prompt_logprobs: per prompt token, null for the first (nothing precedes it), else token ids (the prompt's own, and the most likely) to their figures. */
export const promptLogprobsSchema = z.array(
  z.record(z.string().regex(/^(0|[1-9][0-9]*)$/), z.object({ logprob: z.number().max(0), rank: z.int().min(1), decoded_token: z.string() })).nullable(),
);

const memloraField = z.object({
  personalization: personalizationSchema,
  timings: generateResultSchema.shape.timings,
});

export const chatCompletionResponseSchema = z.object({
  id: z.string(),
  object: z.literal('chat.completion'),
  created: z.int(),
  model: z.string(),
  choices: z
    .array(
      z.object({
        index: z.int().min(0),
        message: z.object({ role: z.literal('assistant'), content: z.string().nullable(), tool_calls: z.array(openAiToolCall).optional() }),
        logprobs: openAiLogprobs,
        finish_reason: z.enum(['stop', 'length', 'tool_calls']),
        /** With return_token_ids (vLLM's): the reply's token ids. */
        token_ids: tokenIdListSchema.optional(),
      }),
    )
    .min(1),
  usage: openAiUsage,
  /** With return_token_ids (vLLM's): the prompt's token ids as the model read them. */
  prompt_token_ids: tokenIdListSchema.optional(),
  /** With prompt_logprobs (vLLM's): the prompt's tokens. */
  prompt_logprobs: promptLogprobsSchema.optional(),
  /** The first choice's personalisation and timings; `choices` has every choice's when n > 1. */
  memlora: memloraField.extend({ choices: z.array(memloraField).optional() }),
});

export const chatCompletionChunkSchema = z.object({
  id: z.string(),
  object: z.literal('chat.completion.chunk'),
  created: z.int(),
  model: z.string(),
  choices: z.array(
    z.object({
      index: z.int().min(0),
      delta: z.object({ role: z.literal('assistant').optional(), content: z.string().optional(), tool_calls: z.array(toolCallDelta).optional() }),
      logprobs: openAiLogprobs.optional(),
      finish_reason: z.enum(['stop', 'length', 'tool_calls']).nullable(),
      /** With return_token_ids: the token ids of this chunk's piece of the reply. */
      token_ids: tokenIdListSchema.optional(),
    }),
  ),
  /** With return_token_ids: the prompt's token ids, on the first chunk. */
  prompt_token_ids: tokenIdListSchema.optional(),
  usage: streamUsage.nullable().optional(),
  memlora: memloraField.optional(),
});

// ---------------------------------------------------------------------------------------------
// OpenAI's legacy completions (POST /v1/completions), as evaluation tools call it: raw prompts, and
// with echo and logprobs the prompt's own tokens scored.

/** Most prompts one completions request may carry (each becomes one choice). */
export const MAX_COMPLETION_PROMPTS = 16;

/** OpenAI's four forms of a completions `prompt` (a text, texts, token ids, lists of token ids) as a list of prompts. */
export function completionPrompts(prompt: string | Array<string | number | number[]>): Array<string | number[]> {
  if (typeof prompt === 'string') return [prompt];
  if (prompt.every((p) => typeof p === 'number')) return [prompt as number[]];
  return prompt.filter((p) => typeof p !== 'number');
}

export const completionRequestSchema = z
  .looseObject({
    ...openAiSamplingShape,
    /** OpenAI's four forms: a text, texts, token ids, or lists of token ids (one choice per prompt). */
    prompt: z.union([
      z.string().min(1).max(MAX_PROMPT_CHARS),
      z.array(z.string().min(1).max(MAX_PROMPT_CHARS)).min(1).max(MAX_COMPLETION_PROMPTS),
      tokenIdsSchema,
      z.array(tokenIdsSchema).min(1).max(MAX_COMPLETION_PROMPTS),
    ]),
    /** OpenAI's default is 16; 0 (with echo) scores the prompt and generates nothing. */
    max_tokens: z.int().min(0).max(2048).nullable().optional(),
    echo: z.boolean().nullable().optional(),
    /** The legacy API's logprobs: how many alternatives per token (OpenAI allows up to 5, vLLM 20). */
    logprobs: z.int().min(0).max(MAX_TOP_LOGPROBS).nullable().optional(),
    best_of: z.literal(1).nullable().optional(),
    suffix: z.null().optional(),
  })
  .superRefine((v, ctx) => {
    refineOpenAiUser(v, ctx);
    refineOpenAiVersion(v, ctx);
    refineOpenAiGuides(v, ctx);
    refinePromptLogprobs(v, ctx);
    refineRefused(v, ctx, VLLM_REFUSED);
    if (v.max_tokens === 0 && !v.echo) ctx.addIssue({ code: 'custom', path: ['max_tokens'], message: 'max_tokens 0 needs echo: true (nothing would be returned)' });
    const prompts = completionPrompts(v.prompt);
    if (v.stream && prompts.length > 1) ctx.addIssue({ code: 'custom', path: ['stream'], message: 'a stream serves one prompt' });
    if (v.max_tokens === 0 && prompts.some((p) => typeof p !== 'string' && p.length < 2)) {
      ctx.addIssue({ code: 'custom', path: ['prompt'], message: 'max_tokens 0 scores a prompt of token ids after its first token: give at least two' });
    }
  });

const legacyLogprobs = z
  .object({
    tokens: z.array(z.string()),
    /** null for a prompt's first token of ids: nothing precedes it. */
    token_logprobs: z.array(z.number().max(0).nullable()),
    top_logprobs: z.array(z.record(z.string(), z.number().max(0)).nullable()),
    text_offset: z.array(z.int().min(0)),
  })
  .nullable();

export const completionResponseSchema = z.object({
  id: z.string(),
  object: z.literal('text_completion'),
  created: z.int(),
  model: z.string(),
  choices: z
    .array(
      z.object({
        index: z.int().min(0),
        text: z.string(),
        logprobs: legacyLogprobs,
        finish_reason: z.enum(['stop', 'length']),
        /** With prompt_logprobs (vLLM's): the tokens of the choice's prompt. */
        prompt_logprobs: promptLogprobsSchema.optional(),
        /** With return_token_ids (vLLM's): the choice's prompt's token ids as the model read them, and its reply's. */
        prompt_token_ids: tokenIdListSchema.optional(),
        token_ids: tokenIdListSchema.optional(),
      }),
    )
    .min(1),
  usage: openAiUsage,
  memlora: z.object({ personalization: personalizationSchema }),
});

export const completionChunkSchema = z.object({
  id: z.string(),
  object: z.literal('text_completion'),
  created: z.int(),
  model: z.string(),
  choices: z.array(
    z.object({
      index: z.int().min(0),
      text: z.string(),
      logprobs: legacyLogprobs,
      finish_reason: z.enum(['stop', 'length']).nullable(),
      /** With return_token_ids: the prompt's token ids on the choice's first chunk, the piece's on each. */
      prompt_token_ids: tokenIdListSchema.optional(),
      token_ids: tokenIdListSchema.optional(),
    }),
  ),
  usage: streamUsage.nullable().optional(),
  memlora: z.object({ personalization: personalizationSchema }).optional(),
});

// ---------------------------------------------------------------------------------------------
// OpenAI's Responses API (POST /v1/responses), the API OpenAI's newer clients and agents call: one
// reply to an input (a text, or messages) with instructions, as a response object or a stream of
// typed events. Responses are stored (unless `store: false`) for MEMLORA_RESPONSES_RETENTION_DAYS, so
// that a request may continue one (previous_response_id) and clients may read them back.

/** A part of an input message's content: text (the assistant's earlier output text too). */
const responsesContentPart = z.looseObject({ type: z.enum(['input_text', 'output_text']), text: z.string().max(MAX_PROMPT_CHARS) });

/** An input item: a message, a function call the model made, or its output (images, files and other items are refused). */
/** OpenAI's metadata: up to 16 key-value pairs, keys up to 64 characters, values up to 512. */
const openAiMetadata = z.record(z.string().min(1).max(64), z.string().max(512)).refine((m) => Object.keys(m).length <= 16, { message: 'metadata holds at most 16 pairs' });

const conversationIdSchema = z.string().min(1).max(256);

const responsesInputItem = z.union([
  z.looseObject({
    type: z.literal('message').optional(),
    role: z.enum(['system', 'developer', 'user', 'assistant']),
    content: z.union([z.string().max(MAX_PROMPT_CHARS), z.array(responsesContentPart).min(1).max(64)]),
  }),
  z.looseObject({ type: z.literal('function_call'), call_id: z.string().min(1).max(256), name: toolNameSchema, arguments: z.string().max(MAX_PROMPT_CHARS) }),
  z.looseObject({
    type: z.literal('function_call_output'),
    call_id: z.string().min(1).max(256),
    /** Its text, or text parts (images and files are refused). */
    output: z.union([z.string().max(MAX_PROMPT_CHARS), z.array(z.looseObject({ type: z.literal('input_text'), text: z.string().max(MAX_PROMPT_CHARS) })).min(1).max(64)]),
  }),
]);

/** A function tool, in the Responses API's flat form (other tool types are refused). */
const responsesFunctionTool = z.looseObject({
  type: z.literal('function'),
  name: toolNameSchema,
  description: z.string().max(8192).nullable().optional(),
  parameters: z.record(z.string(), z.unknown()).nullable().optional(),
  strict: z.boolean().nullable().optional(),
});
const responsesNamedTool = z.looseObject({ type: z.literal('function'), name: toolNameSchema });
/** none, auto, required, a named function, or allowed_tools: auto or required among a subset. */
const responsesToolChoice = z.union([
  z.enum(['none', 'auto', 'required']),
  responsesNamedTool,
  z.looseObject({ type: z.literal('allowed_tools'), mode: z.enum(['auto', 'required']), tools: z.array(responsesNamedTool).min(1).max(MAX_TOOLS) }),
]);

/** text.format: plain text, JSON mode, or one document of a JSON schema (its name, schema and strict beside the type). */
const responsesTextFormat = z.discriminatedUnion('type', [textFormats, jsonSchemaSpec.extend({ type: z.literal('json_schema') })]);

/** Fields of the Responses API that need what memlora does not do here, each refused when it asks for it. */
const RESPONSES_REFUSED: Record<string, string> = {
  prompt: 'prompt templates are not supported',
  reasoning: 'reasoning is not supported',
};
/** What include may ask for: the output text's log-probabilities. */
const RESPONSES_INCLUDES = ['message.output_text.logprobs'] as const;
/** A query's list of includes: one value, or the key repeated. */
const includesQuery = z.preprocess((v) => (typeof v === 'string' ? [v] : v), z.array(z.enum(RESPONSES_INCLUDES)).max(16));
/**
 * include in the query of a route that reads stored responses or items, as OpenAI's clients send it
 * (include[], the key repeated for several; or include): what a request may include. Taken, it adds
 * nothing: what is stored holds what its request included.
 */
const includeQuery = { 'include[]': includesQuery.optional(), include: includesQuery.optional() };
/** The keys of includeQuery, which may repeat (parseQuery's lists). */
export const INCLUDE_QUERY_LISTS = ['include[]', 'include'] as const;
/** A route whose only query is include (a conversation's item read or added). */
export const includeOnlyQuery = z.strictObject(includeQuery);

/** A request's `input`: a text, or items. */
const responsesInput = z.union([z.string().min(1).max(MAX_PROMPT_CHARS), z.array(responsesInputItem).min(1).max(256)]);

const responsesRequestObject = z.looseObject({
  model: z.string().max(256).optional(),
  /** The memlora user id; absent, the model must name the user (memlora:<user id>). */
  user: userIdSchema.optional(),
  input: responsesInput,
  /** Store the response (true unless false): a later request may continue it and clients may read it back. */
  store: z.boolean().nullable().optional(),
  /** Run it apart from the request: answered at once as queued, then read (GET, maybe streamed) or cancelled by its id; stored, so store may not be false. */
  background: z.boolean().nullable().optional(),
  /** Continue a stored response of the same user: its conversation (input and output, not its instructions) comes before the input. */
  previous_response_id: z.string().min(1).max(256).nullable().optional(),
  /** Up to 16 key-value pairs (keys up to 64 characters, values up to 512), echoed in the response and stored with it. */
  metadata: openAiMetadata.nullable().optional(),
  /** A conversation (POST /v1/conversations) whose items come before the input, and to which the input and output are added. */
  conversation: z.union([conversationIdSchema, z.looseObject({ id: conversationIdSchema })]).nullable().optional(),
  /** auto: drop the conversation's oldest items until it fits the context window (and 256 messages); disabled (the default): refuse it. */
  truncation: z.enum(['auto', 'disabled']).nullable().optional(),
  /** A system message before the input (not carried to the responses that continue this one). */
  instructions: z.string().max(MAX_PROMPT_CHARS).nullable().optional(),
  max_output_tokens: z.int().min(1).max(2048).nullable().optional(),
  temperature: z.number().min(0).max(5).nullable().optional(),
  top_p: z.number().gt(0).max(1).nullable().optional(),
  stream: z.boolean().nullable().optional(),
  text: z.looseObject({ format: responsesTextFormat.optional() }).nullable().optional(),
  tools: z.array(responsesFunctionTool).max(MAX_TOOLS).nullable().optional(),
  tool_choice: responsesToolChoice.nullable().optional(),
  /** Whether a reply may make several calls at once (true unless false). */
  parallel_tool_calls: z.boolean().nullable().optional(),
  /** message.output_text.logprobs: each output token's log-probability (with top_logprobs alternatives). */
  include: z.array(z.string().max(256)).max(16).nullable().optional(),
  top_logprobs: z.int().min(0).max(MAX_TOP_LOGPROBS).nullable().optional(),
  /** memlora extension, as in chat completions: the same seed samples the same reply. A background response without one is given one, stored with its request. */
  seed: z.int().nullable().optional(),
  /** memlora extension: the personalisation mode, as in /v1/generate. */
  mode: z.enum(GENERATE_MODES).optional(),
  /** memlora extension: the adapter version to serve with, active or not, as /v1/generate's adapterVersion. */
  adapter_version: adapterVersionSchema.nullable().optional(),
});

/** What a Responses API request may not ask: unsupported includes and fields, both a previous response and a conversation, background without storing. */
function refineResponses(
  v: {
    user?: string;
    model?: string;
    mode?: string;
    adapter_version?: number | null;
    include?: string[] | null;
    previous_response_id?: string | null;
    conversation?: unknown;
    background?: boolean | null;
    store?: boolean | null;
  },
  ctx: z.RefinementCtx,
): void {
  refineOpenAiUser(v, ctx);
  refineOpenAiVersion(v, ctx);
  for (const [i, x] of (v.include ?? []).entries()) {
    if (!(RESPONSES_INCLUDES as readonly string[]).includes(x)) ctx.addIssue({ code: 'custom', path: ['include', i], message: `include "${x}" is not supported (only ${RESPONSES_INCLUDES.join(', ')})` });
  }
  if (v.previous_response_id != null && v.conversation != null) ctx.addIssue({ code: 'custom', path: ['conversation'], message: 'give previous_response_id or conversation, not both' });
  if (v.background === true && v.store === false) ctx.addIssue({ code: 'custom', path: ['store'], message: 'a background response is stored: store may not be false' });
  for (const [field, why] of Object.entries(RESPONSES_REFUSED)) {
    if (isAsked((v as Record<string, unknown>)[field])) ctx.addIssue({ code: 'custom', path: [field], message: why });
  }
}

export const responsesRequestSchema = responsesRequestObject.superRefine(refineResponses);

/**
 * POST /v1/responses/input_tokens (OpenAI's responses.inputTokens.count): a request as POST
 * /v1/responses takes it, its input optional (a previous response or a conversation alone), counted
 * instead of answered.
 */
export const responsesInputTokensSchema = responsesRequestObject
  .extend({ input: responsesInput.nullable().optional() })
  .superRefine(refineResponses)
  .refine((v) => v.input != null || v.previous_response_id != null || v.conversation != null, { path: ['input'], message: 'nothing to count: give input, previous_response_id or conversation' });

export const responsesInputTokensResultSchema = z.object({ object: z.literal('response.input_tokens'), input_tokens: z.int().min(0) });

const responsesUsage = z.object({
  input_tokens: z.int().min(0),
  input_tokens_details: z.object({ cached_tokens: z.int().min(0) }),
  output_tokens: z.int().min(0),
  output_tokens_details: z.object({ reasoning_tokens: z.literal(0) }),
  total_tokens: z.int().min(0),
});

const responsesOutputText = z.object({
  type: z.literal('output_text'),
  text: z.string(),
  annotations: z.array(z.never()),
  /** With include message.output_text.logprobs, each token's (a reply that made calls has none). */
  logprobs: z.array(openAiAlternative.extend({ top_logprobs: z.array(openAiAlternative) })),
});
const responsesItemStatus = z.enum(['in_progress', 'completed', 'incomplete']);
const responsesOutputItem = z.discriminatedUnion('type', [
  z.object({ type: z.literal('message'), id: z.string(), status: responsesItemStatus, role: z.literal('assistant'), content: z.array(responsesOutputText) }),
  z.object({ type: z.literal('function_call'), id: z.string(), call_id: z.string(), name: toolNameSchema, arguments: z.string(), status: responsesItemStatus }),
]);

export const responsesResponseSchema = z.object({
  id: z.string(),
  object: z.literal('response'),
  created_at: z.int(),
  /** queued (a background response waiting for a batch row), in_progress, then completed, incomplete (cut by max_output_tokens), cancelled or failed (error says why). */
  status: z.enum(['queued', 'in_progress', 'completed', 'incomplete', 'cancelled', 'failed']),
  /** Whether it runs apart from its request (background: true). */
  background: z.boolean(),
  error: z.object({ code: z.string(), message: z.string() }).nullable(),
  incomplete_details: z.object({ reason: z.literal('max_output_tokens') }).nullable(),
  instructions: z.string().nullable(),
  max_output_tokens: z.int().nullable(),
  model: z.string(),
  output: z.array(responsesOutputItem),
  parallel_tool_calls: z.boolean(),
  temperature: z.number(),
  top_p: z.number(),
  tool_choice: z.unknown(),
  tools: z.array(z.record(z.string(), z.unknown())),
  text: z.object({ format: z.record(z.string(), z.unknown()) }),
  /** Whether the response is stored (it may be continued and read back until the retention ends). */
  store: z.boolean(),
  previous_response_id: z.string().nullable(),
  truncation: z.enum(['auto', 'disabled']),
  metadata: z.record(z.string(), z.string()),
  conversation: z.object({ id: z.string() }).nullable(),
  /** Null until the response is done (in the stream's first events). */
  usage: responsesUsage.nullable(),
  memlora: z.object({ personalization: personalizationSchema, timings: generateResultSchema.shape.timings }).nullable(),
});

/** An item a stored response's model read (GET /v1/responses/{id}/input_items), with its id. */
const responsesStoredItemStatus = z.enum(['completed', 'incomplete']);
export const responsesStoredItemSchema = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('message'),
    id: z.string(),
    status: responsesStoredItemStatus,
    role: z.enum(['system', 'developer', 'user', 'assistant']),
    content: z.array(z.object({ type: z.enum(['input_text', 'output_text']), text: z.string() })),
  }),
  z.object({ type: z.literal('function_call'), id: z.string(), call_id: z.string(), name: toolNameSchema, arguments: z.string(), status: responsesStoredItemStatus }),
  z.object({ type: z.literal('function_call_output'), id: z.string(), call_id: z.string(), output: z.string(), status: responsesStoredItemStatus }),
]);

/** A query that takes no parameters (a stored response or conversation read or deleted): any is refused. */
export const noQuery = z.strictObject({});

/** GET /v1/responses/{id}: the response, or with stream=true a background response's events after starting_after (all without it). */
export const responsesGetQuery = z.strictObject({
  stream: z.enum(['true', 'false']).optional(),
  starting_after: queryInt(0, 999_999_999).optional(),
  ...includeQuery,
  /** OpenAI's padding of streamed events: taken, it has no effect (memlora pads no event). */
  include_obfuscation: z.enum(['true', 'false']).optional(),
});

/** GET /v1/responses/{id}/input_items (and a conversation's items): a page of the items, newest first unless order=asc. */
export const responsesInputItemsQuery = z.strictObject({
  ...includeQuery,
  limit: queryInt(1, 100).optional(),
  order: z.enum(['asc', 'desc']).optional(),
  /** The id of the last item of the previous page. */
  after: z.string().min(1).max(256).optional(),
});

export const responsesInputItemListSchema = z.object({
  object: z.literal('list'),
  data: z.array(responsesStoredItemSchema),
  first_id: z.string().nullable(),
  last_id: z.string().nullable(),
  has_more: z.boolean(),
});

/** DELETE /v1/responses/{id}. */
export const responsesDeletedSchema = z.object({ id: z.string(), object: z.literal('response'), deleted: z.literal(true) });

// ---------------------------------------------------------------------------------------------
// OpenAI's Conversations API (/v1/conversations): lists of items that responses read before their
// input and add their input and output to.

/** POST /v1/conversations: up to 20 first items, metadata, and (memlora) the user who owns it. */
export const conversationCreateSchema = z.looseObject({
  items: z.array(responsesInputItem).max(20).nullable().optional(),
  metadata: openAiMetadata.nullable().optional(),
  /** memlora extension: the owner; absent, the user of the first response that uses it. */
  user: userIdSchema.optional(),
});

/** POST /v1/conversations/{id}: its metadata replaced. */
export const conversationUpdateSchema = z.looseObject({ metadata: openAiMetadata });

/** POST /v1/conversations/{id}/items: 1-20 items added at its end. */
export const conversationItemsAddSchema = z.looseObject({ items: z.array(responsesInputItem).min(1).max(20) });

export const conversationSchema = z.object({
  id: z.string(),
  object: z.literal('conversation'),
  created_at: z.int(),
  metadata: z.record(z.string(), z.string()),
  /** The owner: null until a response uses the conversation (unless named at its creation). */
  memlora: z.object({ userId: userIdSchema.nullable() }),
});

export const conversationDeletedSchema = z.object({ id: z.string(), object: z.literal('conversation.deleted'), deleted: z.literal(true) });

/** A page of a conversation's items (GET and POST /v1/conversations/{id}/items). */
export const conversationItemListSchema = responsesInputItemListSchema;

/** GET /v1/admin/users/{userId}/responses: what the user's stored responses and conversations hold. */
export const userStoredSchema = z.object({
  userId: userIdSchema,
  responses: z.object({ count: z.int().min(0), bytes: z.int().min(0), oldest: isoTimestamp.nullable(), newest: isoTimestamp.nullable() }),
  conversations: z.object({ count: z.int().min(0), items: z.int().min(0), bytes: z.int().min(0) }),
});

/** DELETE /v1/admin/users/{userId}/responses: what was erased. */
export const userStoredDeletedSchema = z.object({
  userId: userIdSchema,
  deleted: z.object({ responses: z.int().min(0), conversations: z.int().min(0), conversationItems: z.int().min(0) }),
});

/** GET /v1/models/{model}: an OpenAI model object, with the base model's directory name. */
export const modelSchema = z.object({
  id: z.string(),
  object: z.literal('model'),
  created: z.int().min(0),
  owned_by: z.string(),
  /**
   * userId: a user's own model (memlora:<user id>): the base model through their personalisation;
   * adapterVersion: one of their adapter versions (memlora:<user id>@<version>), active or not.
   */
  memlora: z.object({ baseModel: z.string(), userId: userIdSchema.optional(), adapterVersion: z.int().min(1).optional() }),
});

/** GET /v1/models: the OpenAI model list (memlora serves one model; users are chosen by `user`). */
export const modelListSchema = z.object({ object: z.literal('list'), data: z.array(modelSchema) });

// ---------------------------------------------------------------------------------------------
// vLLM's tokenizer endpoints (POST /tokenize, /detokenize): the model's tokens, no user involved.
// Unknown fields are ignored, as in the OpenAI routes (vLLM clients send `model`).

export const tokenizeRequestSchema = z
  .looseObject({
    model: z.string().max(256).optional(),
    prompt: z.string().max(MAX_PROMPT_CHARS).optional(),
    messages: z.array(openAiMessageSchema).min(1).max(256).optional(),
    /** Messages: the tools a chat completion would offer, described in the system message as it would be fed. */
    tools: z.array(openAiTool).max(MAX_TOOLS).nullable().optional(),
    tool_choice: openAiToolChoice.nullable().optional(),
    /** A raw prompt: BOS first where the model's chat template uses one, as /v1/generate feeds it (default true). */
    add_special_tokens: z.boolean().nullable().optional(),
    /** Messages: end with the assistant's opening, where a reply starts (default true). */
    add_generation_prompt: z.boolean().nullable().optional(),
    /** Messages: leave the last one, the assistant's, open (vLLM's continue_final_message). */
    continue_final_message: z.boolean().nullable().optional(),
    return_token_strs: z.boolean().nullable().optional(),
  })
  .superRefine((v, ctx) => {
    if ((v.messages === undefined) === (v.prompt === undefined)) ctx.addIssue({ code: 'custom', path: ['prompt'], message: 'give exactly one of prompt or messages' });
    if (v.tools?.length && v.messages === undefined) ctx.addIssue({ code: 'custom', path: ['tools'], message: 'tools go with messages' });
    refineTools(v, ctx);
    // Tokenizing without a generation prompt is fine (a conversation as stored); only continuing is checked.
    if (v.continue_final_message) refineContinue({ messages: v.messages, continued: true, addGenerationPrompt: v.add_generation_prompt }, ctx, { continued: 'continue_final_message', addGenerationPrompt: 'add_generation_prompt' });
  });

export const tokenizeResponseSchema = z.object({
  count: z.int().min(0),
  /** The model's context window: prompt and reply together. */
  max_model_len: z.int().min(1),
  tokens: z.array(z.int().min(0)),
  /** Each token's text (its bytes read as UTF-8), with return_token_strs. */
  token_strs: z.array(z.string()).nullable(),
});

export const detokenizeRequestSchema = z.looseObject({
  model: z.string().max(256).optional(),
  tokens: z.array(z.int().min(0)).max(MAX_TOKEN_IDS),
});

export const detokenizeResponseSchema = z.object({ prompt: z.string() });

// ---------------------------------------------------------------------------------------------
// Operations

export const healthSchema = z.object({ status: z.literal('ok') });

export const readySchema = z.object({
  status: z.enum(['ready', 'not_ready']),
  checks: z.object({
    db: z.enum(['ok', 'error']),
    model: z.enum(['loaded', 'loading', 'failed', 'absent']),
    draining: z.boolean(),
  }),
  /** Why the model failed to load (model `failed` only): it will not come up without a restart. */
  modelError: z.string().optional(),
});
