/**
 * The prefix cache as operators see it (GET and DELETE /v1/admin/prefix-cache): what it holds, its
 * lookups since start with the hit rate and the prompt tokens it saved, and dropping conversations
 * from it (one user's, or all of them: a cold start for the next load test without a restart).
 * Dropping frees the entries' bytes at once; requests running meanwhile still keep their conversation
 * when they finish, as any request does (erasing a user, engine.forgetUser, is what stops that).
 */
import type { PrefixCache, PrefixDrop } from './prefix-cache.js';

export interface PrefixCacheReport {
  /** false with MEMLORA_PREFIX_CACHE_BYTES=0: nothing is kept, every figure is 0. */
  enabled: boolean;
  /** Conversations kept, over `users` users. */
  entries: number;
  users: number;
  /** Token positions kept, over all conversations. */
  tokens: number;
  bytes: number;
  /** MEMLORA_PREFIX_CACHE_BYTES. */
  maxBytes: number;
  /**
   * What a token of conversation takes on this model (its keys and values in every layer, and its
   * id), and so how many tokens `maxBytes` holds: what to size MEMLORA_PREFIX_CACHE_BYTES by, as the
   * conversations to keep times their length. null when disabled.
   */
  bytesPerToken: number | null;
  capacityTokens: number | null;
  /** Shortest match reused, and conversations kept per user and scope (null when disabled). */
  minTokens: number | null;
  perScope: number | null;
  /** Since the server started (the counts of /metrics). */
  counters: {
    lookups: number;
    hits: number;
    /** hits / lookups; null before the first lookup. */
    hitRate: number | null;
    /** Prompt tokens whose keys and values were reused instead of computed. */
    reusedTokens: number;
    evictions: number;
    /** Conversations dropped because a new adapter version of their user became active (PrefixCache.retire). */
    retired: number;
  };
}

export interface PrefixCacheDrop {
  dropped: PrefixDrop;
  prefixCache: PrefixCacheReport;
}

export function prefixCacheReport(cache: PrefixCache | null): PrefixCacheReport {
  if (!cache) {
    return { enabled: false, entries: 0, users: 0, tokens: 0, bytes: 0, maxBytes: 0, bytesPerToken: null, capacityTokens: null, minTokens: null, perScope: null, counters: { lookups: 0, hits: 0, hitRate: null, reusedTokens: 0, evictions: 0, retired: 0 } };
  }
  const s = cache.stats();
  const { bytesPerToken, capacityTokens } = capacity(cache);
  return {
    enabled: true,
    entries: s.entries,
    users: s.users,
    // An entry's bytes are linear in its tokens (PrefixCache.entryBytes), so the sum divides exactly.
    tokens: s.bytes / bytesPerToken,
    bytes: s.bytes,
    maxBytes: s.maxBytes,
    bytesPerToken,
    capacityTokens,
    minTokens: cache.minTokens,
    perScope: cache.perScope,
    counters: { lookups: s.lookups, hits: s.hits, hitRate: s.lookups > 0 ? s.hits / s.lookups : null, reusedTokens: s.reusedTokens, evictions: s.evictions, retired: s.retired },
  };
}

/** What a token of conversation takes, and how many the budget holds. */
function capacity(cache: PrefixCache): { bytesPerToken: number; capacityTokens: number } {
  const bytesPerToken = cache.entryBytes(1);
  return { bytesPerToken, capacityTokens: Math.floor(cache.maxBytes / bytesPerToken) };
}

/** Drop the conversations of `userId`, or all of them (nothing on a disabled cache). */
export function dropPrefixCache(cache: PrefixCache | null, userId?: string): PrefixCacheDrop {
  const dropped = cache ? cache.drop(userId) : { entries: 0, bytes: 0 };
  return { dropped, prefixCache: prefixCacheReport(cache) };
}

/** A prefix cache should hold at least this many conversations of a full context window. */
export const SIZING_CONVERSATIONS = 4;

export interface PrefixCacheSizing {
  bytesPerToken: number;
  capacityTokens: number;
  /** Conversations of `contextTokens` tokens the budget holds. */
  fullContexts: number;
  /** The budget of SIZING_CONVERSATIONS full-context conversations. */
  advisedBytes: number;
  /** fewer than SIZING_CONVERSATIONS fit: the server warns at start. */
  tooSmall: boolean;
}

/**
 * How the prefix cache's budget compares with the model's context window. Bytes per token grow with
 * layers and width (12 KiB on the default model, 72 KiB on GPT-2 small's shape), so a budget that is
 * ample on one model keeps a few conversations on another, which shows only as a falling hit rate.
 */
export function prefixCacheSizing(cache: PrefixCache, contextTokens: number): PrefixCacheSizing {
  const { bytesPerToken, capacityTokens } = capacity(cache);
  return {
    bytesPerToken,
    capacityTokens,
    fullContexts: Math.floor((capacityTokens / contextTokens) * 100) / 100,
    advisedBytes: SIZING_CONVERSATIONS * contextTokens * bytesPerToken,
    tooSmall: capacityTokens < SIZING_CONVERSATIONS * contextTokens,
  };
}
