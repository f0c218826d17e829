/**
 * The prefix cache's bookkeeping: longest common prefix by token ids within one user and scope, the
 * last token always left to run, a continued conversation replacing its earlier entry, the per-scope
 * and byte bounds, forgetting a user, and retiring a replaced adapter version's conversations.
 */
import { describe, expect, it } from 'vitest';
import type { KvShape, RowKv } from '../../src/model/kv.js';
import { prefixCacheSizing, SIZING_CONVERSATIONS } from '../../src/serve/prefix-admin.js';
import { PrefixCache } from '../../src/serve/prefix-cache.js';

const shape: KvShape = { nLayers: 2, nKvHeads: 1, headDim: 2 };

/** A cache whose value at position p is p + offset, so a slice shows which positions it kept. */
function kvOf(length: number, offset = 0): RowKv {
  const layer = (): Float32Array => Float32Array.from({ length: length * 2 }, (_, i) => Math.floor(i / 2) + offset);
  return { length, k: [layer(), layer()], v: [layer(), layer()] };
}

const seq = (from: number, n: number): number[] => Array.from({ length: n }, (_, i) => from + i);

describe('PrefixCache', () => {
  it('returns the longest common prefix of the same user and scope, leaving the last prompt token to run', () => {
    const c = new PrefixCache({ maxBytes: 1 << 20, shape, minTokens: 4 });
    c.store('alice', 'v1', seq(0, 10), kvOf(10));
    // A prompt continuing the conversation: all 10 cached tokens reused.
    const hit = c.match('alice', 'v1', seq(0, 14))!;
    expect(hit.tokens).toBe(10);
    expect(hit.kv.length).toBe(10);
    // A prompt diverging at 6: 6 reused, of the cached conversation as it is (not copied).
    const cut = c.match('alice', 'v1', [...seq(0, 6), 99, 98])!;
    expect(cut.tokens).toBe(6);
    expect(cut.kv).toBe(hit.kv);
    // The same prompt again: its last token still runs.
    expect(c.match('alice', 'v1', seq(0, 10))!.tokens).toBe(9);
    // Below minTokens, another scope, another user: nothing.
    expect(c.match('alice', 'v1', [0, 1, 2, 77, 5])).toBeNull();
    expect(c.match('alice', 'v2', seq(0, 14))).toBeNull();
    expect(c.match('bob', 'v1', seq(0, 14))).toBeNull();
    expect(c.stats()).toMatchObject({ entries: 1, lookups: 6, hits: 3, reusedTokens: 25 });
  });

  it('a continued conversation replaces the entry it extends; other conversations stay, up to perScope', () => {
    const c = new PrefixCache({ maxBytes: 1 << 20, shape, minTokens: 2, perScope: 2 });
    c.store('alice', 'base', seq(0, 5), kvOf(5));
    c.store('alice', 'base', seq(0, 9), kvOf(9)); // continues the first
    expect(c.stats().entries).toBe(1);
    c.store('alice', 'base', seq(100, 6), kvOf(6)); // a second conversation
    expect(c.stats().entries).toBe(2);
    expect(c.match('alice', 'base', seq(0, 12))!.tokens).toBe(9); // the first is now the more recent
    c.store('alice', 'base', seq(200, 4), kvOf(4)); // a third: the least recent (the second) leaves
    expect(c.stats().entries).toBe(2);
    expect(c.match('alice', 'base', seq(100, 8))).toBeNull();
    expect(c.match('alice', 'base', seq(0, 12))!.tokens).toBe(9);
    // A later turn whose re-tokenised reply differs from the tokens generated: it repeats the
    // earlier prompt (10 tokens), so it replaces that conversation all the same.
    c.store('carol', 'base', [...seq(0, 10), 50, 51], kvOf(12), 10);
    c.store('carol', 'base', [...seq(0, 10), 60, 61, 62, 63], kvOf(14), 14);
    expect(c.entriesOf('carol')).toBe(1);
    expect(c.match('carol', 'base', [...seq(0, 10), 50, 51, 7])!.tokens).toBe(10);
    c.store('carol', 'base', [...seq(0, 9), 70, 71], kvOf(11), 11); // diverges inside that prompt: a new conversation
    expect(c.entriesOf('carol')).toBe(2);
    // Keeps only the tokens the cache holds: an entry of 3 positions for 5 ids matches 3.
    c.store('bob', 'base', seq(0, 5), kvOf(3));
    expect(c.match('bob', 'base', seq(0, 8))!.tokens).toBe(3);
  });

  it('stays within its bytes (least recently used first), skips what cannot fit, and forgets a user', () => {
    const probe = new PrefixCache({ maxBytes: 1, shape, minTokens: 1 });
    const per10 = probe.entryBytes(10);
    expect(per10).toBe(2 * 2 * 1 * 2 * 10 * 4 + 10 * 4);
    const c = new PrefixCache({ maxBytes: 3 * per10 + probe.entryBytes(5), shape, minTokens: 1 });
    for (const u of ['a', 'b', 'c']) c.store(u, 'base', seq(0, 10), kvOf(10));
    expect(c.match('a', 'base', seq(0, 11))).not.toBeNull(); // a is now the most recent
    c.store('d', 'base', seq(0, 10), kvOf(10)); // evicts b
    expect(c.stats()).toMatchObject({ entries: 3, bytes: 3 * per10, evictions: 1 });
    expect(c.match('b', 'base', seq(0, 11))).toBeNull();
    c.store('e', 'base', seq(0, 40), kvOf(40)); // larger than the whole cache: not kept, nothing evicted
    expect(c.stats()).toMatchObject({ entries: 3, evictions: 1 });
    c.store('a', 'v2', seq(0, 5), kvOf(5)); // fits beside the three
    expect(c.stats()).toMatchObject({ entries: 4, users: 3, evictions: 1 });
    expect(c.drop('a')).toEqual({ entries: 2, bytes: per10 + probe.entryBytes(5) });
    expect(c.drop('a')).toEqual({ entries: 0, bytes: 0 });
    expect(c.stats()).toMatchObject({ entries: 2, users: 2, bytes: 2 * per10 });
    expect(c.match('a', 'base', seq(0, 11))).toBeNull();
    expect(c.match('c', 'base', seq(0, 11))).not.toBeNull();
    expect(c.drop()).toEqual({ entries: 2, bytes: 2 * per10 }); // c and d
    expect(c.stats()).toMatchObject({ entries: 0, users: 0, bytes: 0 });
    // Indexes are clean: storing again works.
    c.store('c', 'base', seq(0, 10), kvOf(10));
    expect(c.match('c', 'base', seq(0, 11))!.tokens).toBe(10);
  });

  it('retires one user\'s conversations of one scope: bytes freed, counted as retired, other scopes and users kept', () => {
    const c = new PrefixCache({ maxBytes: 1 << 20, shape, minTokens: 2 });
    c.store('alice', 'v1', seq(0, 10), kvOf(10));
    c.store('alice', 'v1', seq(100, 6), kvOf(6));
    c.store('alice', 'v2', seq(0, 10), kvOf(10));
    c.store('alice', 'base', seq(0, 10), kvOf(10));
    c.store('bob', 'v1', seq(0, 10), kvOf(10));
    const before = c.stats().bytes;
    expect(c.retire('alice', 'v1')).toEqual({ entries: 2, bytes: c.entryBytes(10) + c.entryBytes(6) });
    expect(c.stats()).toMatchObject({ entries: 3, users: 2, bytes: before - c.entryBytes(10) - c.entryBytes(6), retired: 2, evictions: 0 });
    expect(c.match('alice', 'v1', seq(0, 12))).toBeNull();
    expect(c.match('alice', 'v2', seq(0, 12))!.tokens).toBe(10);
    expect(c.match('alice', 'base', seq(0, 12))!.tokens).toBe(10);
    expect(c.match('bob', 'v1', seq(0, 12))!.tokens).toBe(10);
    expect(c.retire('alice', 'v1')).toEqual({ entries: 0, bytes: 0 });
    expect(c.retire('nobody', 'v1')).toEqual({ entries: 0, bytes: 0 });
    expect(c.stats().retired).toBe(2);
    // The scope's index is clean: a conversation stored in it again is found.
    c.store('alice', 'v1', seq(0, 10), kvOf(10));
    expect(c.match('alice', 'v1', seq(0, 12))!.tokens).toBe(10);
  });

  it('sizing: the budget against a full context window, warned about below four conversations of it', () => {
    const perToken = 2 * 2 * 1 * 2 * 4 + 4; // keys and values of 2 layers x 1 head x 2 dims, float32, and the id
    const context = 32;
    const enough = SIZING_CONVERSATIONS * context * perToken;
    expect(SIZING_CONVERSATIONS).toBe(4);
    expect(prefixCacheSizing(new PrefixCache({ maxBytes: enough, shape }), context)).toEqual({ bytesPerToken: perToken, capacityTokens: 128, fullContexts: 4, advisedBytes: enough, tooSmall: false });
    expect(prefixCacheSizing(new PrefixCache({ maxBytes: enough - 1, shape }), context)).toEqual({ bytesPerToken: perToken, capacityTokens: 127, fullContexts: 3.96, advisedBytes: enough, tooSmall: true });
  });
});
