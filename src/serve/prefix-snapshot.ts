/**
 * The prefix cache across restarts. At shutdown the server writes the conversations the prefix cache
 * holds (their token ids and keys and values, least recently used first) to
 * `<dataDir>/prefix-cache.bin`, whole or not at all (writeFileAtomic); at the next start,
 * once the model is loaded, it reads them back before serving, so the chats under way when a deploy
 * restarts the server go on without recomputing their prompts. MEMLORA_PREFIX_CACHE_RESTORE=off turns
 * it off (and deletes a file an earlier run left).
 *
 * What is restored must be what this server would have computed:
 *   - the file names the model it was computed by (modelFingerprint: sha256 over the model's config,
 *     tokenizer and weights files) and its cache shape; another model's file restores nothing;
 *   - a conversation comes back only if its user still exists and its scope is still served: `base`,
 *     or the version that is the user's active, ready adapter now (an erased user, or a version
 *     replaced or rolled back while the server was down, is dropped);
 *   - if the budget is now smaller, the most recently used conversations that fit come back.
 * The file is deleted once read, so conversations do not stay on disk while the server runs (an
 * erasure then has nothing left to miss); the next shutdown writes a new one.
 *
 * Format: "MLPC", u32 LE header length, the header (JSON, padded with spaces to 4 bytes), then per
 * conversation in the header's order its token ids (int32) and per layer its keys, then its values
 * (float32, [Hkv, length, Dh] as RowKv holds them), in the host's byte order (little-endian on every
 * platform onnxruntime-node ships for).
 */
import { createHash } from 'node:crypto';
import { closeSync, existsSync, fstatSync, mkdirSync, openSync, readdirSync, readSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import type { Db } from '../db/client.js';
import { getActiveAdapter } from '../db/queries/adapters.js';
import { userExists } from '../db/queries/users.js';
import { ADAPTER_STATUS } from '../lora/consistency.js';
import type { KvShape, RowKv } from '../model/kv.js';
import { readFully, writeFileAtomic } from '../model/safetensors.js';
import type { PrefixCache, PrefixConversation } from './prefix-cache.js';
import type { ServeLogger } from './types.js';

export const PREFIX_SNAPSHOT_FILE = 'prefix-cache.bin';
export const prefixSnapshotPath = (dataDir: string): string => join(dataDir, PREFIX_SNAPSHOT_FILE);

const MAGIC = 'MLPC';

const headerSchema = z.object({
  version: z.literal(1),
  savedAt: z.string(),
  model: z.string().regex(/^[0-9a-f]{64}$/),
  shape: z.object({ nLayers: z.int().min(1), nKvHeads: z.int().min(1), headDim: z.int().min(1) }),
  /** Least recently used first. */
  conversations: z.array(
    z.object({
      user: z.string().min(1).max(128),
      scope: z.string().regex(/^(base|v[1-9][0-9]*)$/),
      length: z.int().min(1),
      prompt: z.int().min(0),
    }),
  ),
});

/**
 * What identifies the weights that computed a cache: sha256 over the model directory's config,
 * tokenizer and weights files (name, size and bytes, in name order).
 */
export function modelFingerprint(modelDir: string): string {
  const h = createHash('sha256');
  const files = readdirSync(modelDir)
    .filter((f) => f === 'config.json' || f === 'tokenizer.json' || f === 'tokenizer_config.json' || f.endsWith('.safetensors'))
    .sort();
  const buf = Buffer.allocUnsafe(8 * 1024 * 1024);
  for (const name of files) {
    const fd = openSync(join(modelDir, name), 'r');
    try {
      let size = 0;
      const part = createHash('sha256');
      for (let n = readSync(fd, buf); n > 0; n = readSync(fd, buf)) {
        part.update(buf.subarray(0, n));
        size += n;
      }
      h.update(`${name}\n${size}\n${part.digest('hex')}\n`);
    } finally {
      closeSync(fd);
    }
  }
  return h.digest('hex');
}

export interface PrefixSnapshotSaved {
  conversations: number;
  bytes: number;
}

/** Write the cache's conversations to `file` (nothing, and no file, when it holds none). */
export function savePrefixSnapshot(file: string, cache: PrefixCache, model: string): PrefixSnapshotSaved {
  const held = cache.conversations();
  if (held.length === 0) {
    rmSync(file, { force: true });
    return { conversations: 0, bytes: 0 };
  }
  const { nLayers, nKvHeads, headDim } = cache.shape;
  const header = {
    version: 1,
    savedAt: new Date().toISOString(),
    model,
    shape: { nLayers, nKvHeads, headDim },
    conversations: held.map((c) => ({ user: c.user, scope: c.scope, length: c.kv.length, prompt: c.prompt })),
  };
  let json = JSON.stringify(header);
  json += ' '.repeat((4 - ((MAGIC.length + 4 + Buffer.byteLength(json)) % 4)) % 4);
  const head = Buffer.alloc(MAGIC.length + 4 + Buffer.byteLength(json));
  head.write(MAGIC, 0, 'latin1');
  head.writeUInt32LE(Buffer.byteLength(json), MAGIC.length);
  head.write(json, MAGIC.length + 4, 'utf8');
  let bytes = 0;
  function* chunks(): Generator<Uint8Array> {
    const bytesOf = (a: Uint8Array | Int32Array | Float32Array): Uint8Array => {
      bytes += a.byteLength;
      return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    };
    yield bytesOf(head);
    for (const c of held) {
      yield bytesOf(c.tokens.subarray(0, c.kv.length));
      for (const layer of [...c.kv.k, ...c.kv.v]) yield bytesOf(layer);
    }
  }
  mkdirSync(dirname(file), { recursive: true });
  writeFileAtomic(file, chunks(), 0o600);
  return { conversations: held.length, bytes };
}

export interface PrefixRestoreReport {
  /** Conversations in the file. */
  saved: number;
  /** Stored again in the cache. */
  restored: number;
  /** Dropped because their user is gone or their scope is no longer served. */
  stale: number;
  /** Dropped because the budget is now smaller (the least recently used ones). */
  overBudget: number;
  /** Bytes of keys, values and ids restored. */
  bytes: number;
}

export class PrefixSnapshotError extends Error {
  constructor(
    readonly code: 'unreadable' | 'other_model',
    message: string,
  ) {
    super(message);
    this.name = 'PrefixSnapshotError';
  }
}

/**
 * Read `file` back into `cache` and delete it. Null without a file. Throws PrefixSnapshotError (the
 * file deleted all the same) when it is not a snapshot or was computed by another model or shape (and
 * readFully's `truncated` error should the file shrink while it is read);
 * `served(user, scope)` says whether a conversation is still served. Conversations are read straight
 * into the arrays the cache keeps (no copy of the whole file in memory), and only those restored.
 */
export function restorePrefixSnapshot(file: string, cache: PrefixCache, model: string, served: (user: string, scope: string) => boolean): PrefixRestoreReport | null {
  if (!existsSync(file)) return null;
  const fd = openSync(file, 'r');
  try {
    return restoreFrom(fd, file, cache, model, served);
  } finally {
    closeSync(fd);
    rmSync(file, { force: true });
  }
}

function restoreFrom(fd: number, file: string, cache: PrefixCache, model: string, served: (user: string, scope: string) => boolean): PrefixRestoreReport {
  const { header, bodyAt } = readHeader(fd, file);
  const shape = cache.shape;
  const same = header.shape.nLayers === shape.nLayers && header.shape.nKvHeads === shape.nKvHeads && header.shape.headDim === shape.headDim;
  if (header.model !== model || !same) throw new PrefixSnapshotError('other_model', `${file} was saved by another model (${header.model.slice(0, 12)}…, this one ${model.slice(0, 12)}…)`);
  // A conversation takes in the file what it takes in the cache: its ids, keys and values.
  const sizes = header.conversations.map((c) => cache.entryBytes(c.length));
  const expected = sizes.reduce((a, b) => a + b, 0);
  const body = fstatSync(fd).size - bodyAt;
  if (body !== expected) throw new PrefixSnapshotError('unreadable', `${file} holds ${body} bytes of conversations, its header ${expected}`);
  // Which to keep: served ones, the most recent that fit the budget.
  const keep: boolean[] = header.conversations.map(() => false);
  const report: PrefixRestoreReport = { saved: header.conversations.length, restored: 0, stale: 0, overBudget: 0, bytes: 0 };
  let room = cache.maxBytes;
  for (let i = header.conversations.length - 1; i >= 0; i--) {
    const c = header.conversations[i];
    if (!served(c.user, c.scope)) {
      report.stale += 1;
      continue;
    }
    const need = sizes[i];
    if (need > room) {
      report.overBudget += 1;
      continue;
    }
    room -= need;
    keep[i] = true;
  }
  const before = cache.stats();
  let at = bodyAt;
  for (const [i, c] of header.conversations.entries()) {
    const from = at;
    at += sizes[i];
    if (!keep[i]) continue;
    const conv = readConversation(fd, from, c, shape);
    cache.store(conv.user, conv.scope, conv.tokens, conv.kv, conv.prompt);
  }
  const after = cache.stats();
  report.restored = after.entries - before.entries;
  report.bytes = after.bytes - before.bytes;
  return report;
}

function readHeader(fd: number, file: string): { header: z.output<typeof headerSchema>; bodyAt: number } {
  const bad = (why: string) => new PrefixSnapshotError('unreadable', `${file} is not a prefix cache snapshot: ${why}`);
  const size = fstatSync(fd).size;
  const start = MAGIC.length + 4;
  if (size < start) throw bad('no MLPC mark');
  const lead = Buffer.alloc(start);
  readFully(fd, lead, 0);
  if (lead.toString('latin1', 0, MAGIC.length) !== MAGIC) throw bad('no MLPC mark');
  const n = lead.readUInt32LE(MAGIC.length);
  if (start + n > size || (start + n) % 4 !== 0) throw bad(`header of ${n} bytes`);
  const json = Buffer.alloc(n);
  readFully(fd, json, start);
  let raw: unknown;
  try {
    raw = JSON.parse(json.toString('utf8'));
  } catch (e) {
    throw bad(`header is not JSON (${e instanceof Error ? e.message : String(e)})`);
  }
  const parsed = headerSchema.safeParse(raw);
  if (!parsed.success) throw bad(parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '));
  for (const c of parsed.data.conversations) if (c.prompt > c.length) throw bad(`a conversation of ${c.length} tokens with a prompt of ${c.prompt}`);
  return { header: parsed.data, bodyAt: start + n };
}

/** One conversation, read from the file at `from` into arrays of its own. */
function readConversation(fd: number, from: number, c: { user: string; scope: string; length: number; prompt: number }, shape: KvShape): PrefixConversation {
  let at = from;
  const fill = <T extends Int32Array | Float32Array>(a: T): T => {
    readFully(fd, new Uint8Array(a.buffer, a.byteOffset, a.byteLength), at);
    at += a.byteLength;
    return a;
  };
  const tokens = fill(new Int32Array(c.length));
  const n = c.length * shape.nKvHeads * shape.headDim;
  const k = Array.from({ length: shape.nLayers }, () => fill(new Float32Array(n)));
  const v = Array.from({ length: shape.nLayers }, () => fill(new Float32Array(n)));
  const kv: RowKv = { length: c.length, k, v };
  return { user: c.user, scope: c.scope, tokens, prompt: c.prompt, kv };
}

/**
 * Whether a saved conversation is still served: its user exists, and its scope is the base model or
 * the user's active, ready adapter version.
 */
export function stillServed(db: Db): (user: string, scope: string) => boolean {
  return (user, scope) => {
    if (!userExists(db, user)) return false;
    if (scope === 'base') return true;
    const active = getActiveAdapter(db, user);
    return active !== undefined && active.status === ADAPTER_STATUS.ready && scope === `v${active.version}`;
  };
}

/** At start, once the model is loaded: restore the snapshot into `cache`, logging what happened; the model's fingerprint, to save with at close. */
export function restorePrefixAtStart(file: string, cache: PrefixCache, modelDir: string, db: Db, logger: ServeLogger): string {
  const model = modelFingerprint(modelDir);
  try {
    const report = restorePrefixSnapshot(file, cache, model, stillServed(db));
    if (report) logger.info('prefix cache restored', { file, ...report });
  } catch (e) {
    const fields = { file, err: e instanceof Error ? e.message : String(e) };
    if (e instanceof PrefixSnapshotError && e.code === 'other_model') logger.warn('prefix cache snapshot is of another model; not restored', fields);
    else logger.error('prefix cache snapshot unreadable; not restored', fields);
  }
  return model;
}

/** At close: save the cache's conversations for the next start, logging what happened (never throws). */
export function savePrefixAtClose(file: string, cache: PrefixCache, model: string, logger: ServeLogger): void {
  try {
    const saved = savePrefixSnapshot(file, cache, model);
    if (saved.conversations > 0) logger.info('prefix cache saved for the next start', { file, ...saved });
  } catch (e) {
    logger.error('prefix cache snapshot not saved', { file, err: e instanceof Error ? e.message : String(e) });
  }
}
