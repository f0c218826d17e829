/**
 * The prefix cache across restarts, on its own: a snapshot reads back exactly what was saved, in the
 * same recency order; stale conversations and those past a smaller budget stay out; another model's
 * file, a truncated or foreign file restore nothing and are deleted; a save failing half-way leaves
 * the previous file; the model fingerprint follows the weights and tokenizer, nothing else.
 */
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { KvShape, RowKv } from '../../src/model/kv.js';
import { PrefixCache } from '../../src/serve/prefix-cache.js';
import { modelFingerprint, PrefixSnapshotError, restorePrefixSnapshot, savePrefixSnapshot } from '../../src/serve/prefix-snapshot.js';

const root = mkdtempSync(join(tmpdir(), 'memlora-prefix-snap-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const shape: KvShape = { nLayers: 3, nKvHeads: 2, headDim: 4 };
const MODEL = 'a'.repeat(64);
const all = () => true;

/** A cache of `length` positions with values distinct per layer, key/value and seed. */
function kvOf(length: number, seed: number): RowKv {
  const n = shape.nKvHeads * length * shape.headDim;
  const layer = (l: number, kind: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(seed * 1000 + l * 100 + kind * 10 + i) * 3.5);
  return { length, k: [0, 1, 2].map((l) => layer(l, 0)), v: [0, 1, 2].map((l) => layer(l, 1)) };
}
const seq = (from: number, n: number): number[] => Array.from({ length: n }, (_, i) => from + i);

function filled(maxBytes = 1 << 20): PrefixCache {
  const c = new PrefixCache({ maxBytes, shape, minTokens: 2 });
  c.store('alice', 'v2', seq(0, 10), kvOf(10, 1), 7);
  c.store('bob', 'base', seq(50, 6), kvOf(6, 2));
  c.store('alice', 'base', seq(100, 12), kvOf(12, 3), 9);
  c.match('alice', 'v2', seq(0, 11)); // alice's v2 conversation becomes the most recent
  return c;
}

const plain = (c: PrefixCache) =>
  c.conversations().map((x) => ({ user: x.user, scope: x.scope, prompt: x.prompt, tokens: [...x.tokens], k: x.kv.k.map((a) => [...a]), v: x.kv.v.map((a) => [...a]) }));

let n = 0;
const fileIn = () => join(root, `snap-${n++}`, 'prefix-cache.bin');

describe('prefix cache snapshot', () => {
  it('reads back exactly what was saved, least recently used first, and deletes the file', () => {
    const c = filled();
    const file = fileIn();
    const saved = savePrefixSnapshot(file, c, MODEL);
    expect(saved.conversations).toBe(3);
    expect(saved.bytes).toBe(readFileSync(file).length);
    expect(readdirSync(join(file, '..'))).toEqual(['prefix-cache.bin']); // no temp file left
    const back = new PrefixCache({ maxBytes: 1 << 20, shape, minTokens: 2 });
    const report = restorePrefixSnapshot(file, back, MODEL, all)!;
    expect(report).toEqual({ saved: 3, restored: 3, stale: 0, overBudget: 0, bytes: c.stats().bytes });
    expect(existsSync(file)).toBe(false);
    expect(plain(back)).toEqual(plain(c)); // bit for bit, in the same order
    expect(plain(back).map((x) => `${x.user}/${x.scope}`)).toEqual(['bob/base', 'alice/base', 'alice/v2']);
    // Restored conversations are matched as before, and counted as lookups only from now on.
    expect(back.match('alice', 'v2', seq(0, 14))!.tokens).toBe(10);
    expect(back.stats()).toMatchObject({ lookups: 1, hits: 1, evictions: 0 });
    // Nothing to restore now.
    expect(restorePrefixSnapshot(file, back, MODEL, all)).toBeNull();
  });

  it('leaves out conversations no longer served, and past a smaller budget the least recently used', () => {
    const c = filled();
    const file = fileIn();
    savePrefixSnapshot(file, c, MODEL);
    // Room for the most recent (alice v2, 10 tokens) and bob's (6) but not alice's base (12) too.
    const small = new PrefixCache({ maxBytes: c.entryBytes(10) + c.entryBytes(6) + c.entryBytes(3), shape, minTokens: 2 });
    const report = restorePrefixSnapshot(file, small, MODEL, (user, scope) => !(user === 'bob' && scope === 'base'))!;
    expect(report).toMatchObject({ saved: 3, restored: 1, stale: 1, overBudget: 1 });
    expect(plain(small).map((x) => `${x.user}/${x.scope}`)).toEqual(['alice/v2']);
    expect(small.stats().evictions).toBe(0);
  });

  it('another model or shape, a truncated or foreign file: nothing restored, the file deleted', () => {
    const c = filled();
    const cases: Array<[string, (file: string) => void, KvShape, string, RegExp]> = [
      ['other model', () => {}, shape, 'b'.repeat(64), /another model/],
      ['other shape', () => {}, { ...shape, nKvHeads: 1 }, MODEL, /another model/],
      ['truncated', (f) => writeFileSync(f, readFileSync(f).subarray(0, readFileSync(f).length - 4)), shape, MODEL, /holds \d+ bytes of conversations, its header \d+/],
      ['foreign', (f) => writeFileSync(f, '{"version":1}'), shape, MODEL, /not a prefix cache snapshot: no MLPC mark/],
      ['bad header', (f) => {
        const b = readFileSync(f);
        b.write('}', 9, 'latin1'); // the header's JSON ends at its second byte
        writeFileSync(f, b);
      }, shape, MODEL, /header is not JSON/],
    ];
    for (const [name, spoil, s, model, message] of cases) {
      const file = fileIn();
      savePrefixSnapshot(file, c, MODEL);
      spoil(file);
      const back = new PrefixCache({ maxBytes: 1 << 20, shape: s, minTokens: 2 });
      let err: unknown;
      try {
        restorePrefixSnapshot(file, back, model, all);
      } catch (e) {
        err = e;
      }
      expect(err, name).toBeInstanceOf(PrefixSnapshotError);
      expect((err as Error).message, name).toMatch(message);
      expect(back.stats().entries, name).toBe(0);
      expect(existsSync(file), name).toBe(false);
    }
  });

  it('a save that fails half-way leaves the previous snapshot as it was, and no temp file', () => {
    const file = fileIn();
    savePrefixSnapshot(file, filled(), MODEL);
    const before = readFileSync(file);
    const [good] = filled().conversations();
    // The second conversation's keys cannot be written: the save throws after the first was.
    const broken = { shape, conversations: () => [good, { ...good, kv: { ...good.kv, k: [null] } }] } as unknown as PrefixCache;
    expect(() => savePrefixSnapshot(file, broken, MODEL)).toThrow();
    expect(readFileSync(file).equals(before)).toBe(true);
    expect(readdirSync(join(file, '..'))).toEqual(['prefix-cache.bin']);
    const back = new PrefixCache({ maxBytes: 1 << 20, shape, minTokens: 2 });
    expect(restorePrefixSnapshot(file, back, MODEL, all)).toMatchObject({ restored: 3 });
  });

  it('an empty cache writes no file, and removes an old one', () => {
    const file = fileIn();
    savePrefixSnapshot(file, filled(), MODEL);
    const empty = new PrefixCache({ maxBytes: 1 << 20, shape });
    expect(savePrefixSnapshot(file, empty, MODEL)).toEqual({ conversations: 0, bytes: 0 });
    expect(existsSync(file)).toBe(false);
  });

  it('the model fingerprint follows the config, tokenizer and weights files, nothing else', () => {
    const dir = join(root, 'model');
    mkdirSync(dir);
    for (const [f, text] of [['config.json', '{"d":1}'], ['tokenizer.json', '{"v":[]}'], ['model.safetensors', 'weights'], ['MODEL_CARD.md', 'card']]) writeFileSync(join(dir, f), text);
    const first = modelFingerprint(dir);
    expect(first).toMatch(/^[0-9a-f]{64}$/);
    writeFileSync(join(dir, 'MODEL_CARD.md'), 'another card');
    expect(modelFingerprint(dir)).toBe(first);
    const copy = join(root, 'model-copy');
    mkdirSync(copy);
    for (const f of readdirSync(dir)) copyFileSync(join(dir, f), join(copy, f));
    expect(modelFingerprint(copy)).toBe(first); // the files, not where they are
    writeFileSync(join(dir, 'model.safetensors'), 'weightz');
    const changed = modelFingerprint(dir);
    expect(changed).not.toBe(first);
    writeFileSync(join(dir, 'tokenizer.json'), '{"v":[1]}');
    expect(modelFingerprint(dir)).not.toBe(changed);
  });
});
