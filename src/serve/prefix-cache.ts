/**
 * Prefix caching for multi-turn chats: the keys and values of a user's last conversations, so that
 * the next turn, whose prompt repeats the conversation so far, runs only its new tokens (an extend
 * graph, Model.extend) instead of the whole prompt.
 *
 * Entries belong to one user and one *scope*, the weights that computed them: an adapter version
 * (`v3`), or the base model (`base`, for memory and vanilla requests). A prompt is matched against the
 * entries of its user and scope by the longest common prefix of token ids, so whatever the chat
 * template, the re-tokenised reply or the stop string, a match is exactly the tokens whose keys and
 * values are reused. Users never share entries (no other user's prompt can be probed through the
 * timings), and a new adapter version starts without any: the engine retires the previous version's
 * conversations when the swap is seen (retire), rather than leaving them to age out of the LRU. A
 * match shorter than `minTokens` is not used (a separate extend call would cost more than the prefill
 * it saves).
 *
 * Bytes-bounded LRU (lru-cache) over entries; each user and scope keeps its `perScope` most recent
 * conversations, and an entry whose tokens a newer one continues is replaced by it.
 */
import { LRUCache } from 'lru-cache';
import type { Counter } from '../metrics.js';
import { Registry } from '../metrics.js';
import type { KvShape, RowKv } from '../model/kv.js';

export interface PrefixCacheOptions {
  /** Bytes of keys, values and token ids the entries may take. */
  maxBytes: number;
  shape: KvShape;
  /** Conversations kept per user and scope (default 4). */
  perScope?: number;
  /** Shortest match worth reusing (default 16 tokens). */
  minTokens?: number;
  /** Where its metrics go (memlora_prefix_cache_*). */
  registry?: Registry;
}

export interface PrefixHit {
  /** A cached conversation whose first `tokens` positions are the prompt's first tokens (it may hold more: not copied here). */
  kv: RowKv;
  tokens: number;
}

export interface PrefixCacheStats {
  entries: number;
  /** Users with at least one conversation kept. */
  users: number;
  bytes: number;
  maxBytes: number;
  lookups: number;
  hits: number;
  /** Prompt tokens whose keys and values were reused. */
  reusedTokens: number;
  evictions: number;
  /** Conversations dropped because the weights that computed them are no longer served (retire). */
  retired: number;
}

export interface PrefixDrop {
  entries: number;
  bytes: number;
}

/** A conversation as held (what a snapshot saves across restarts, prefix-snapshot.ts). */
export interface PrefixConversation {
  user: string;
  scope: string;
  /** The ids whose keys and values kv holds (kv.length of them). */
  tokens: Int32Array;
  /** How many of them were the prompt. */
  prompt: number;
  kv: RowKv;
}

interface Entry {
  id: number;
  user: string;
  scope: string;
  key: string;
  tokens: Int32Array;
  /** How many of the tokens were the prompt (the rest, the reply as generated, may come back re-tokenised otherwise). */
  prompt: number;
  kv: RowKv;
  bytes: number;
}

export class PrefixCache {
  readonly maxBytes: number;
  readonly minTokens: number;
  readonly perScope: number;
  readonly shape: KvShape;
  private readonly lru: LRUCache<number, Entry>;
  /** Entry ids by user-and-scope key, oldest first. */
  private readonly byKey = new Map<string, number[]>();
  /** Keys by user. */
  private readonly byUser = new Map<string, Set<string>>();
  private nextId = 1;
  private counts = { lookups: 0, hits: 0, reusedTokens: 0, evictions: 0, retired: 0 };
  private readonly m: { lookups: Counter; evictions: Counter; retired: Counter };

  constructor(opts: PrefixCacheOptions) {
    if (!Number.isInteger(opts.maxBytes) || opts.maxBytes < 1) throw new RangeError(`maxBytes must be a positive integer, got ${opts.maxBytes}`);
    this.maxBytes = opts.maxBytes;
    this.shape = opts.shape;
    this.perScope = opts.perScope ?? 4;
    this.minTokens = opts.minTokens ?? 16;
    this.lru = new LRUCache<number, Entry>({
      maxSize: this.maxBytes,
      sizeCalculation: (e) => e.bytes,
      dispose: (e, _id, reason) => {
        if (reason === 'evict') {
          this.counts.evictions += 1;
          this.m.evictions.inc();
        }
        this.unindex(e);
      },
    });
    const reg = opts.registry ?? new Registry();
    this.m = {
      lookups: reg.counter('memlora_prefix_cache_lookups_total', 'Prompts looked up in the prefix cache: hit (a cached prefix of at least the minimum length was reused) or miss.', ['result']),
      evictions: reg.counter('memlora_prefix_cache_evictions_total', 'Conversations dropped from the prefix cache to respect its byte bound.'),
      retired: reg.counter('memlora_prefix_cache_retired_total', 'Conversations dropped from the prefix cache because a new adapter version of their user became active.'),
    };
    const bytes = reg.gauge('memlora_prefix_cache_bytes', 'Bytes of keys, values and token ids the prefix cache holds (MEMLORA_PREFIX_CACHE_BYTES bounds it).');
    const entries = reg.gauge('memlora_prefix_cache_entries', 'Conversations the prefix cache holds.');
    reg.onCollect(() => {
      bytes.set(undefined, this.lru.calculatedSize);
      entries.set(undefined, this.lru.size);
    });
  }

  /** Bytes an entry of `length` tokens takes. */
  entryBytes(length: number): number {
    const { nLayers, nKvHeads, headDim } = this.shape;
    return 2 * nLayers * nKvHeads * headDim * length * 4 + length * 4;
  }

  /**
   * The longest cached prefix of `ids` for this user and scope, leaving at least one token to run
   * (the prompt's last token gives the first reply token's logits); null below minTokens.
   */
  match(user: string, scope: string, ids: readonly number[]): PrefixHit | null {
    this.counts.lookups += 1;
    const key = keyOf(user, scope);
    let best: Entry | null = null;
    let bestLen = 0;
    for (const id of this.byKey.get(key) ?? []) {
      const e = this.lru.peek(id)!;
      const n = commonPrefix(e.tokens, ids, Math.min(e.kv.length, ids.length - 1));
      if (n > bestLen) {
        best = e;
        bestLen = n;
      }
    }
    if (!best || bestLen < this.minTokens) {
      this.m.lookups.inc({ result: 'miss' });
      return null;
    }
    this.m.lookups.inc({ result: 'hit' });
    this.lru.get(best.id); // most recently used
    this.touch(best);
    this.counts.hits += 1;
    this.counts.reusedTokens += bestLen;
    return { kv: best.kv, tokens: bestLen };
  }

  /**
   * Keep a conversation's cache: `tokens` are the ids whose keys and values `kv` holds (the first
   * kv.length of them are used), the first `prompt` of them the request's prompt (default: all).
   * Entries of the same user and scope whose prompt it repeats are replaced: the conversation they
   * began, continued (a later turn repeats the earlier turn's prompt, its reply perhaps re-tokenised
   * differently), or the same prompt answered again.
   */
  store(user: string, scope: string, tokens: readonly number[] | Int32Array, kv: RowKv, prompt = kv.length): void {
    if (kv.length < this.minTokens || tokens.length < kv.length) return;
    const bytes = this.entryBytes(kv.length);
    if (bytes > this.maxBytes) return;
    const key = keyOf(user, scope);
    const ids = Int32Array.from(tokens.slice(0, kv.length));
    for (const id of [...(this.byKey.get(key) ?? [])]) {
      const e = this.lru.peek(id)!;
      if (commonPrefix(e.tokens, ids, e.prompt) === e.prompt) this.lru.delete(id);
    }
    const list = this.byKey.get(key) ?? [];
    // Deleting disposes (unindex takes the id off this list); an id the LRU no longer holds is taken off here.
    while (list.length >= this.perScope) if (!this.lru.delete(list[0])) list.shift();
    const e: Entry = { id: this.nextId++, user, scope, key, tokens: ids, prompt: Math.min(prompt, kv.length), kv, bytes };
    this.lru.set(e.id, e);
    if (!this.lru.has(e.id)) return; // larger than what may be evicted for it
    const now = this.byKey.get(key) ?? [];
    now.push(e.id);
    this.byKey.set(key, now);
    let keys = this.byUser.get(user);
    if (!keys) this.byUser.set(user, (keys = new Set()));
    keys.add(key);
  }

  /** Forget a user's conversations (all scopes), or everything: the entries dropped and the bytes freed. */
  drop(user?: string): PrefixDrop {
    if (user === undefined) {
      const dropped = { entries: this.lru.size, bytes: this.lru.calculatedSize };
      this.lru.clear();
      return dropped;
    }
    const dropped = { entries: 0, bytes: 0 };
    for (const key of [...(this.byUser.get(user) ?? [])]) {
      const d = this.dropKey(key);
      dropped.entries += d.entries;
      dropped.bytes += d.bytes;
    }
    return dropped;
  }

  /**
   * Drop a user's conversations of one scope whose weights are no longer served (the adapter version
   * a hot swap replaced): their bytes go to other conversations at once instead of when the LRU
   * reaches them. Counted as retired, not as dropped by an operator or evicted.
   */
  retire(user: string, scope: string): PrefixDrop {
    const dropped = this.dropKey(keyOf(user, scope));
    this.counts.retired += dropped.entries;
    this.m.retired.inc(undefined, dropped.entries);
    return dropped;
  }

  /** The conversations held, least recently used first (the order in which to store them again). */
  conversations(): PrefixConversation[] {
    return [...this.lru.rvalues()].filter((e) => e !== undefined).map((e) => ({ user: e.user, scope: e.scope, tokens: e.tokens, prompt: e.prompt, kv: e.kv }));
  }

  /** Conversations kept for a user (all scopes). */
  entriesOf(user: string): number {
    let n = 0;
    for (const key of this.byUser.get(user) ?? []) n += this.byKey.get(key)?.length ?? 0;
    return n;
  }

  stats(): PrefixCacheStats {
    return { entries: this.lru.size, users: this.byUser.size, bytes: this.lru.calculatedSize, maxBytes: this.maxBytes, ...this.counts };
  }

  /** Delete the conversations of one user-and-scope key: what went. */
  private dropKey(key: string): PrefixDrop {
    const dropped = { entries: 0, bytes: 0 };
    for (const id of [...(this.byKey.get(key) ?? [])]) {
      dropped.bytes += this.lru.peek(id)?.bytes ?? 0;
      if (this.lru.delete(id)) dropped.entries += 1;
    }
    return dropped;
  }

  private touch(e: Entry): void {
    const list = this.byKey.get(e.key)!;
    list.splice(list.indexOf(e.id), 1);
    list.push(e.id);
  }

  private unindex(e: Entry): void {
    const list = this.byKey.get(e.key);
    if (!list) return;
    const i = list.indexOf(e.id);
    if (i >= 0) list.splice(i, 1);
    if (list.length > 0) return;
    this.byKey.delete(e.key);
    const keys = this.byUser.get(e.user)!;
    keys.delete(e.key);
    if (keys.size === 0) this.byUser.delete(e.user);
  }
}

const keyOf = (user: string, scope: string): string => `${user}\n${scope}`;

/** Length of the common prefix of a and b, at most `max`. */
function commonPrefix(a: ArrayLike<number>, b: ArrayLike<number>, max: number): number {
  const n = Math.min(max, a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}
