/**
 * The database schema, single source of truth: `npm run db:generate` turns changes here into SQL
 * migrations under migrations/. Timestamps are integer milliseconds since the Unix epoch; JSON
 * columns hold plain objects whose shape the owning module defines. The FTS5 index over history
 * text lives in a custom migration (drizzle-kit has no virtual tables), see migrations/.
 */
import { sql } from 'drizzle-orm';
import { check, index, integer, primaryKey, sqliteTable, text, uniqueIndex } from 'drizzle-orm/sqlite-core';

export const HISTORY_KINDS = ['profile', 'dialogue', 'post', 'qa'] as const;
export type HistoryKind = (typeof HISTORY_KINDS)[number];

export const HISTORY_ROLES = ['user', 'assistant', 'system', 'other'] as const;
export type HistoryRole = (typeof HISTORY_ROLES)[number];

export const JOB_STATES = ['queued', 'running', 'succeeded', 'rejected', 'failed', 'cancelled'] as const;
export type JobState = (typeof JOB_STATES)[number];
export const ACTIVE_JOB_STATES = ['queued', 'running'] as const satisfies readonly JobState[];
export const FINISHED_JOB_STATES = ['succeeded', 'rejected', 'failed', 'cancelled'] as const satisfies readonly JobState[];

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

const inList = (values: readonly string[]) => sql.raw(values.map((v) => `'${v}'`).join(', '));

export const users = sqliteTable('users', {
  id: text('id').primaryKey(),
  createdAt: integer('created_at').notNull(),
  updatedAt: integer('updated_at').notNull(),
  metadata: text('metadata', { mode: 'json' }).$type<JsonObject>(),
});

export const historyItems = sqliteTable(
  'history_items',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    userId: text('user_id')
      .notNull()
      .references(() => users.id, { onDelete: 'cascade' }),
    kind: text('kind', { enum: HISTORY_KINDS }).notNull(),
    role: text('role', { enum: HISTORY_ROLES }),
    text: text('text').notNull(),
    /** Groups the turns of one dialogue (one session); datasets split by it so no dialogue leaks. */
    conversationId: text('conversation_id'),
    createdAt: integer('created_at').notNull(),
  },
  (t) => [
    index('history_items_user_id_id_idx').on(t.userId, t.id),
    check('history_items_kind_check', sql`${t.kind} in (${inList(HISTORY_KINDS)})`),
    check('history_items_role_check', sql`${t.role} is null or ${t.role} in (${inList(HISTORY_ROLES)})`),
  ],
);

/**
 * History items a user deleted: which item and when. An adapter whose training read an item deleted
 * since still carries it in its weights, so these tell which versions were trained on deleted history
 * (queries/forgetting.ts) and which users need re-injecting to forget it (queries/staleness.ts).
 */
export const historyDeletions = sqliteTable(
  'history_deletions',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    userId: text('user_id')
      .notNull()
      .references(() => users.id, { onDelete: 'cascade' }),
    itemId: integer('item_id').notNull(),
    deletedAt: integer('deleted_at').notNull(),
  },
  (t) => [index('history_deletions_user_id_deleted_at_idx').on(t.userId, t.deletedAt)],
);

export const injectionJobs = sqliteTable(
  'injection_jobs',
  {
    id: text('id').primaryKey(),
    userId: text('user_id')
      .notNull()
      .references(() => users.id, { onDelete: 'cascade' }),
    state: text('state', { enum: JOB_STATES }).notNull(),
    params: text('params', { mode: 'json' }).$type<JsonObject>().notNull(),
    progress: text('progress', { mode: 'json' }).$type<JsonObject>(),
    result: text('result', { mode: 'json' }).$type<JsonObject>(),
    error: text('error', { mode: 'json' }).$type<JsonObject>(),
    createdAt: integer('created_at').notNull(),
    startedAt: integer('started_at'),
    finishedAt: integer('finished_at'),
    updatedAt: integer('updated_at').notNull(),
  },
  (t) => [
    index('injection_jobs_user_id_created_at_idx').on(t.userId, t.createdAt),
    index('injection_jobs_state_created_at_idx').on(t.state, t.createdAt),
    // At most one queued-or-running job per user, enforced by the database itself.
    uniqueIndex('injection_jobs_one_active_per_user')
      .on(t.userId)
      .where(sql`state in ('queued', 'running')`),
    check('injection_jobs_state_check', sql`${t.state} in (${inList(JOB_STATES)})`),
  ],
);

export const trials = sqliteTable(
  'trials',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    jobId: text('job_id')
      .notNull()
      .references(() => injectionJobs.id, { onDelete: 'cascade' }),
    userId: text('user_id')
      .notNull()
      .references(() => users.id, { onDelete: 'cascade' }),
    idx: integer('idx').notNull(),
    config: text('config', { mode: 'json' }).$type<JsonObject>().notNull(),
    objectives: text('objectives', { mode: 'json' }).$type<JsonObject>(),
    cost: text('cost', { mode: 'json' }).$type<JsonObject>(),
    /** Owned by the job runner (e.g. running, completed, failed). */
    status: text('status').notNull(),
    adapterPath: text('adapter_path'),
    createdAt: integer('created_at').notNull(),
  },
  (t) => [uniqueIndex('trials_job_id_idx_unique').on(t.jobId, t.idx), index('trials_user_id_idx').on(t.userId, t.id)],
);

export const adapterVersions = sqliteTable(
  'adapter_versions',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    userId: text('user_id')
      .notNull()
      .references(() => users.id, { onDelete: 'cascade' }),
    version: integer('version').notNull(),
    config: text('config', { mode: 'json' }).$type<JsonObject>().notNull(),
    filePath: text('file_path').notNull(),
    sha256: text('sha256').notNull(),
    metrics: text('metrics', { mode: 'json' }).$type<JsonObject>().notNull(),
    /** Owned by the adapter store (e.g. ready, quarantined). */
    status: text('status').notNull(),
    active: integer('active').notNull().default(0),
    createdAt: integer('created_at').notNull(),
  },
  (t) => [
    uniqueIndex('adapter_versions_user_id_version_unique').on(t.userId, t.version),
    // At most one active version per user.
    uniqueIndex('adapter_versions_one_active_per_user')
      .on(t.userId)
      .where(sql`active = 1`),
    check('adapter_versions_active_check', sql`${t.active} in (0, 1)`),
  ],
);

/**
 * Metering: the tokens served to each user per UTC day. Every request that ran adds to its row (a
 * generation once prefilled, cancelled or not; a scoring request once scored); erasing the user
 * erases the rows.
 */
export const usageDaily = sqliteTable(
  'usage_daily',
  {
    userId: text('user_id')
      .notNull()
      .references(() => users.id, { onDelete: 'cascade' }),
    /** YYYY-MM-DD, UTC. */
    day: text('day').notNull(),
    requests: integer('requests').notNull(),
    /** Prompt tokens read (memory included); cachedTokens of them came from the prefix cache. */
    promptTokens: integer('prompt_tokens').notNull(),
    cachedTokens: integer('cached_tokens').notNull(),
    completionTokens: integer('completion_tokens').notNull(),
    /** Tokens of scored texts (POST /v1/score, echoed completions prompts). */
    scoredTokens: integer('scored_tokens').notNull(),
  },
  (t) => [primaryKey({ columns: [t.userId, t.day] }), index('usage_daily_day_idx').on(t.day)],
);

/** A user's own daily token quota, overriding the server's MEMLORA_USER_DAILY_TOKENS (0 blocks the user). */
export const userQuotas = sqliteTable('user_quotas', {
  userId: text('user_id')
    .primaryKey()
    .references(() => users.id, { onDelete: 'cascade' }),
  dailyTokens: integer('daily_tokens').notNull(),
  updatedAt: integer('updated_at').notNull(),
});

/**
 * Responses of OpenAI's Responses API kept for a later request to continue (previous_response_id)
 * and for clients to read back (GET /v1/responses/{id}): the response object as answered and the
 * items the model read for it (the conversation of the responses it continued, then its own input;
 * instructions are not carried). Kept MEMLORA_RESPONSES_RETENTION_DAYS; erasing the user erases them.
 */
export const storedResponses = sqliteTable(
  'stored_responses',
  {
    id: text('id').primaryKey(),
    userId: text('user_id')
      .notNull()
      .references(() => users.id, { onDelete: 'cascade' }),
    createdAt: integer('created_at').notNull(),
    previousResponseId: text('previous_response_id'),
    /** The response object (JSON), as the request was answered. */
    response: text('response').notNull(),
    /** The input items the model read (JSON array, each with its id). */
    items: text('items').notNull(),
    /**
     * A background response's request (JSON) while it is not done, so that a server that stopped
     * before finishing it runs it again at its next start; null once done, and for the others.
     */
    request: text('request'),
  },
  (t) => [
    index('stored_responses_created_at_idx').on(t.createdAt),
    index('stored_responses_user_id_idx').on(t.userId),
    // The few background responses not done, read as a server starts, without a scan of the rest.
    index('stored_responses_unfinished_idx')
      .on(t.createdAt)
      .where(sql`${t.request} is not null`),
  ],
);

/**
 * Conversations of OpenAI's Conversations API: a list of items that responses read before their
 * input and add their input and output to (POST /v1/responses with `conversation`). Owned by the
 * user of the first response that used it (or the one named at creation); erasing that user erases
 * it. Kept until MEMLORA_RESPONSES_RETENTION_DAYS after its last change.
 */
export const conversations = sqliteTable(
  'conversations',
  {
    id: text('id').primaryKey(),
    userId: text('user_id').references(() => users.id, { onDelete: 'cascade' }),
    createdAt: integer('created_at').notNull(),
    updatedAt: integer('updated_at').notNull(),
    metadata: text('metadata', { mode: 'json' }).$type<Record<string, string>>().notNull(),
  },
  (t) => [index('conversations_updated_at_idx').on(t.updatedAt), index('conversations_user_id_idx').on(t.userId)],
);

/** A conversation's items in order (seq), each the JSON of an input item with its id. */
export const conversationItems = sqliteTable(
  'conversation_items',
  {
    seq: integer('seq').primaryKey({ autoIncrement: true }),
    id: text('id').notNull(),
    conversationId: text('conversation_id')
      .notNull()
      .references(() => conversations.id, { onDelete: 'cascade' }),
    item: text('item').notNull(),
  },
  (t) => [uniqueIndex('conversation_items_conversation_id_id_unique').on(t.conversationId, t.id), index('conversation_items_conversation_id_seq_idx').on(t.conversationId, t.seq)],
);

export type UserRow = typeof users.$inferSelect;
export type HistoryItemRow = typeof historyItems.$inferSelect;
export type JobRow = typeof injectionJobs.$inferSelect;
export type TrialRow = typeof trials.$inferSelect;
export type AdapterVersionRow = typeof adapterVersions.$inferSelect;
