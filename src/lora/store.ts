/**
 * The adapter store: one directory per adapter version under `<root>/<userDirName>/`.
 *
 *   <root>/<userDirName(userId)>/a-<ms>-<hex>/          adapter_model.safetensors, adapter_config.json,
 *                                                       memlora_adapter.json (format.ts)
 *   <root>/<userDirName(userId)>/.tmp-<uuid>/           a write in progress (or one a crash interrupted)
 *   <root>/<userDirName(userId)>/quarantine/a-.../      a corrupt adapter moved aside, with quarantine.json
 *
 * A write fills a temp directory, fsyncs every file and the directory, renames it to its final name
 * and fsyncs the parent: a crash at any point leaves either nothing visible or a complete adapter.
 * The db row is the caller's, committed after write() returns; an adapter directory without a row is
 * an orphan that consistency.ts removes at start-up.
 *
 * Paths handed back (and stored in the db) are relative to the root; every path that comes back in is
 * checked against the exact shape we produce and, on disk, against symlinks leading out of the root.
 *
 * Checksums: sha256 over the safetensors file. Hashing (~1.7 GB/s here) is slower than a warm read,
 * so hashing every load measured 1.6-3.2x a raw read (bench/adapter-load.ts) against the 2x target,
 * while a load without the hash is ~1x. With `verify: 'once'` (default)
 * a file is hashed on its first load, and later loads skip the hash while the file's identity (device,
 * inode, size, mtime, ctime, all in ns) is unchanged: any write to the file, replacing it, or
 * renaming another file over it changes ctime or the inode. Only silent media corruption under an
 * unchanged inode escapes, until the process restarts. `verify: 'always'` hashes every load.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { closeSync, constants, fstatSync, openSync, readSync, realpathSync, type BigIntStats } from 'node:fs';
import { lstat, mkdir, open, readdir, realpath, rename, rm, rmdir } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { LRUCache } from 'lru-cache';
import type { Adapter } from './adapter.js';
import { ADAPTER_FILES, type AdapterModel, AdapterFormatError, decodeAdapter, encodeAdapter, type EncodedAdapter } from './format.js';
import { userDirName } from './paths.js';

/** 'never' skips the checksum (the consistency check's quick mode); serving uses 'once' or 'always'. */
export type VerifyMode = 'always' | 'once' | 'never';

export type AdapterStoreErrorCode =
  /** Checksum mismatch, or content that fails validation although the file is there: quarantine it. */
  | 'adapter_corrupt'
  /** The adapter directory or one of its files does not exist. */
  | 'adapter_missing'
  /** A valid adapter for a different base model (family or config): not corrupt, just not ours. */
  | 'adapter_model_mismatch'
  /** A path that is not one the store produced, leaves the root, or belongs to another user. */
  | 'bad_adapter_path'
  | 'bad_checksum'
  | 'adapter_write_failed'
  /** Any other I/O failure while reading (EIO, EACCES, ...). */
  | 'adapter_io';

export class AdapterStoreError extends Error {
  constructor(
    readonly code: AdapterStoreErrorCode,
    message: string,
    readonly details?: Record<string, unknown>,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'AdapterStoreError';
  }
}

export interface WrittenAdapter {
  /** Relative to the store root; what the db row records. */
  path: string;
  /** Hex sha256 of adapter_model.safetensors. */
  sha256: string;
  /** Bytes of all three files. */
  bytes: number;
}

export interface ReadOptions {
  /** Refuse a path outside this user's directory (a row can never hand out another user's adapter). */
  userId?: string;
  verify?: VerifyMode;
}

export interface StoreEntry {
  /** Relative to the root. */
  path: string;
  mtimeMs: number;
}

export interface StoreScan {
  /** Complete adapter directories (`<user>/a-*`). */
  adapters: StoreEntry[];
  /** `.tmp-*` leftovers, at the root or in a user directory. */
  temps: StoreEntry[];
  /** User directories (`<32 hex>`). */
  userDirs: string[];
  /** Anything else (symlinks included): reported, never touched. */
  unknown: string[];
}

export interface AdapterStoreOptions {
  verify?: VerifyMode;
}

const USER_DIR_RE = /^[0-9a-f]{32}$/;
const ADAPTER_DIR_RE = /^a-\d{13,}-[0-9a-f]{12}$/;
const ADAPTER_PATH_RE = /^([0-9a-f]{32})\/(?:quarantine\/)?a-\d{13,}-[0-9a-f]{12}$/;
const TEMP_PATH_RE = /^(?:[0-9a-f]{32}\/)?\.tmp-[0-9a-f-]{36}$/;
const SHA_RE = /^[0-9a-f]{64}$/;
const QUARANTINE_DIR = 'quarantine';
export const QUARANTINE_REASON_FILE = 'quarantine.json';

/** Hash in slices, yielding between them, so a 100 MB adapter does not stall other requests for 60 ms. */
const HASH_SLICE = 4 << 20;

export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const h = createHash('sha256');
  for (let off = 0; off < bytes.byteLength; off += HASH_SLICE) {
    h.update(bytes.subarray(off, off + HASH_SLICE));
    if (off + HASH_SLICE < bytes.byteLength) await yieldToLoop();
  }
  return h.digest('hex');
}

const errno = (e: unknown): string | undefined => (e as NodeJS.ErrnoException)?.code;

/** fsync a directory so a rename or create inside it survives power loss; some filesystems refuse, and then the rename is still atomic. */
async function fsyncDir(dir: string): Promise<void> {
  let fh;
  try {
    fh = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
    await fh.sync();
  } catch (e) {
    if (!['EINVAL', 'EISDIR', 'EPERM', 'ENOTSUP', 'EBADF'].includes(errno(e) ?? '')) throw e;
  } finally {
    await fh?.close();
  }
}

async function writeDurably(path: string, bytes: Uint8Array): Promise<void> {
  const fh = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o644);
  try {
    let done = 0;
    while (done < bytes.byteLength) done += (await fh.write(bytes, done, bytes.byteLength - done)).bytesWritten;
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Read a whole regular file (never through a symlink) into one exactly sized buffer: one read call when warm. */
async function readWhole(path: string): Promise<{ bytes: Uint8Array; stat: BigIntStats }> {
  const fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const stat = await fh.stat({ bigint: true });
    if (!stat.isFile()) throw Object.assign(new Error(`${path} is not a regular file`), { code: 'EISDIR' });
    const size = Number(stat.size);
    // A fresh ArrayBuffer at offset 0: the float32 views decodeAdapter makes need no copy.
    const bytes = new Uint8Array(Buffer.allocUnsafeSlow(size).buffer, 0, size);
    let done = 0;
    while (done < size) {
      const { bytesRead } = await fh.read(bytes, done, size - done, done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return { bytes: done === size ? bytes : bytes.subarray(0, done), stat };
  } finally {
    await fh.close();
  }
}

/** readWhole with blocking calls, for a thread that only loads adapters (serve/load-worker.ts). */
function readWholeSync(path: string): { bytes: Uint8Array; stat: BigIntStats } {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const stat = fstatSync(fd, { bigint: true });
    if (!stat.isFile()) throw Object.assign(new Error(`${path} is not a regular file`), { code: 'EISDIR' });
    const size = Number(stat.size);
    const bytes = new Uint8Array(Buffer.allocUnsafeSlow(size).buffer, 0, size);
    let done = 0;
    while (done < size) {
      const n = readSync(fd, bytes, done, size - done, done);
      if (n === 0) break;
      done += n;
    }
    return { bytes: done === size ? bytes : bytes.subarray(0, done), stat };
  } finally {
    closeSync(fd);
  }
}

/** An adapter's three files as read from its directory. */
interface AdapterFiles {
  weights: { bytes: Uint8Array; stat: BigIntStats };
  adapterConfig: Uint8Array;
  memlora: Uint8Array;
}

function checkShaArg(sha256: string): void {
  if (typeof sha256 !== 'string' || !SHA_RE.test(sha256)) throw new AdapterStoreError('bad_checksum', `expected sha256 ${JSON.stringify(sha256)} is not 64 lower-case hex digits`, { sha256 });
}

/** The store error for weights whose checksum is not the record's. */
function checksumError(path: string, got: string, expected: string): AdapterStoreError {
  return new AdapterStoreError('adapter_corrupt', `adapter ${path}: ${ADAPTER_FILES.weights} has sha256 ${got}, the record says ${expected}`, { path, got, expected });
}

/** The store error for a failed realpath of an adapter directory. */
function locateError(path: string, e: unknown): AdapterStoreError {
  if (errno(e) === 'ENOENT' || errno(e) === 'ENOTDIR') return new AdapterStoreError('adapter_missing', `adapter ${path} does not exist`, { path }, { cause: e });
  return new AdapterStoreError('adapter_io', `cannot resolve adapter ${path}: ${(e as Error).message}`, { path, errno: errno(e) }, { cause: e });
}

/** The store error for a failed read of an adapter's files. */
function readError(path: string, e: unknown): AdapterStoreError {
  const code = errno(e);
  if (code === 'ENOENT') return new AdapterStoreError('adapter_missing', `adapter ${path} is incomplete: ${(e as Error).message}`, { path }, { cause: e });
  if (code === 'ELOOP') return new AdapterStoreError('bad_adapter_path', `adapter ${path} holds a symlink: ${(e as Error).message}`, { path }, { cause: e });
  if (code === 'EISDIR') return new AdapterStoreError('adapter_corrupt', `adapter ${path}: ${(e as Error).message}`, { path }, { cause: e });
  return new AdapterStoreError('adapter_io', `cannot read adapter ${path}: ${(e as Error).message}`, { path, errno: code }, { cause: e });
}

export class AdapterStore {
  readonly verifyMode: VerifyMode;
  /** Files whose checksum has been verified, by identity (see the file comment). */
  private readonly verified = new LRUCache<string, true>({ max: 100_000 });
  private rootReal: string | undefined;

  constructor(
    readonly root: string,
    readonly model: AdapterModel,
    options: AdapterStoreOptions = {},
  ) {
    this.verifyMode = options.verify ?? 'once';
  }

  /** Absolute directory of a relative adapter path, after checking its shape (no I/O). */
  resolve(path: string, userId?: string): string {
    const m = typeof path === 'string' ? ADAPTER_PATH_RE.exec(path) : null;
    if (!m) throw new AdapterStoreError('bad_adapter_path', `not an adapter path of this store: ${JSON.stringify(path)}`, { path });
    if (userId !== undefined && m[1] !== userDirName(userId)) {
      throw new AdapterStoreError('bad_adapter_path', `adapter path ${JSON.stringify(path)} is not in the directory of user ${JSON.stringify(userId)}`, { path, userId });
    }
    return join(this.root, ...path.split('/'));
  }

  /** resolve() plus the on-disk check: the real path (symlinks followed) must stay inside the root. */
  private async locate(path: string, userId?: string): Promise<string> {
    const abs = this.resolve(path, userId);
    let real: string;
    try {
      real = await realpath(abs);
    } catch (e) {
      throw locateError(path, e);
    }
    this.rootReal ??= await realpath(this.root);
    return this.inside(path, abs, real);
  }

  /** locate() with blocking calls. */
  private locateSync(path: string, userId?: string): string {
    const abs = this.resolve(path, userId);
    let real: string;
    try {
      real = realpathSync.native(abs);
    } catch (e) {
      throw locateError(path, e);
    }
    this.rootReal ??= realpathSync.native(this.root);
    return this.inside(path, abs, real);
  }

  /** `abs` when its real path is its place under the real root; bad_adapter_path otherwise. */
  private inside(path: string, abs: string, real: string): string {
    if (real !== join(this.rootReal!, ...path.split('/'))) {
      throw new AdapterStoreError('bad_adapter_path', `adapter ${path} resolves to ${real}, outside its place in the store (symlink?)`, { path, real });
    }
    return abs;
  }

  /**
   * Encode and write one adapter version of a user. Returns the relative path and checksum for the
   * db row, which the caller commits afterwards. On failure nothing is left behind (best effort
   * cleanup of the temp directory; a crash leaves only `.tmp-*`).
   */
  async write(userId: string, adapter: Adapter): Promise<WrittenAdapter> {
    const files = encodeAdapter(adapter, this.model);
    const sha256 = await sha256Hex(files.weights);
    const userDir = join(this.root, userDirName(userId));
    const tmp = join(userDir, `.tmp-${randomUUID()}`);
    const name = `a-${Date.now()}-${randomBytes(6).toString('hex')}`;
    try {
      await mkdir(this.root, { recursive: true });
      const created = await mkdir(userDir, { recursive: true });
      if (created !== undefined) await fsyncDir(this.root);
      await mkdir(tmp);
      let bytes = 0;
      for (const key of Object.keys(ADAPTER_FILES) as (keyof EncodedAdapter)[]) {
        await writeDurably(join(tmp, ADAPTER_FILES[key]), files[key]);
        bytes += files[key].byteLength;
      }
      await fsyncDir(tmp);
      await rename(tmp, join(userDir, name));
      await fsyncDir(userDir);
      return { path: `${userDirName(userId)}/${name}`, sha256, bytes };
    } catch (e) {
      await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
      throw new AdapterStoreError('adapter_write_failed', `cannot write adapter for user ${JSON.stringify(userId)} under ${this.root}: ${(e as Error).message}`, {
        userId,
        root: this.root,
        errno: errno(e),
      }, { cause: e });
    }
  }

  /**
   * Load an adapter version: the three files, the checksum (see `verify`), then full validation
   * against the model. Throws AdapterStoreError: adapter_corrupt (quarantine it), adapter_missing,
   * adapter_model_mismatch, bad_adapter_path, adapter_io.
   */
  async read(path: string, sha256: string, options: ReadOptions = {}): Promise<Adapter> {
    checkShaArg(sha256);
    const dir = await this.locate(path, options.userId);
    let files: AdapterFiles;
    try {
      const [weights, adapterConfig, memlora] = await Promise.all([
        readWhole(join(dir, ADAPTER_FILES.weights)),
        readWhole(join(dir, ADAPTER_FILES.adapterConfig)),
        readWhole(join(dir, ADAPTER_FILES.memlora)),
      ]);
      files = { weights, adapterConfig: adapterConfig.bytes, memlora: memlora.bytes };
    } catch (e) {
      throw readError(path, e);
    }
    const identity = this.identityToVerify(path, files.weights.stat, sha256, options.verify ?? this.verifyMode);
    if (identity) this.acceptChecksum(path, identity, await sha256Hex(files.weights.bytes), sha256);
    return this.decode(path, files);
  }

  /**
   * read() with blocking file calls and the hash in one go: for a thread that does nothing but load
   * adapters (serve/load-worker.ts), where it spares the thread-pool round trips of a dozen small
   * file operations: a served load of a 1.5 MiB adapter took 0.85 ms at the median, 1.3-2.2 ms with
   * the asynchronous calls. Same checks, same errors.
   */
  readSync(path: string, sha256: string, options: ReadOptions = {}): Adapter {
    checkShaArg(sha256);
    const dir = this.locateSync(path, options.userId);
    let files: AdapterFiles;
    try {
      files = {
        weights: readWholeSync(join(dir, ADAPTER_FILES.weights)),
        adapterConfig: readWholeSync(join(dir, ADAPTER_FILES.adapterConfig)).bytes,
        memlora: readWholeSync(join(dir, ADAPTER_FILES.memlora)).bytes,
      };
    } catch (e) {
      throw readError(path, e);
    }
    const identity = this.identityToVerify(path, files.weights.stat, sha256, options.verify ?? this.verifyMode);
    if (identity) this.acceptChecksum(path, identity, createHash('sha256').update(files.weights.bytes).digest('hex'), sha256);
    return this.decode(path, files);
  }

  /**
   * One file of an adapter version as it lies on disk (an operator downloading it); the weights
   * checked against `sha256` (adapter_corrupt where they differ). Errors as read()'s.
   */
  async readFile(path: string, file: keyof EncodedAdapter, sha256: string, options: Pick<ReadOptions, 'userId'> = {}): Promise<Uint8Array> {
    checkShaArg(sha256);
    const dir = await this.locate(path, options.userId);
    let bytes: Uint8Array;
    try {
      bytes = (await readWhole(join(dir, ADAPTER_FILES[file]))).bytes;
    } catch (e) {
      throw readError(path, e);
    }
    if (file === 'weights') {
      const got = await sha256Hex(bytes);
      if (got !== sha256) throw checksumError(path, got, sha256);
    }
    return bytes;
  }

  /** The identity to verify the weights file under, or null when `mode` lets this load skip the hash. */
  private identityToVerify(path: string, st: BigIntStats, expected: string, mode: VerifyMode): string | null {
    const identity = `${path}|${st.dev}|${st.ino}|${st.size}|${st.mtimeNs}|${st.ctimeNs}|${expected}`;
    return mode === 'never' || (mode === 'once' && this.verified.has(identity)) ? null : identity;
  }

  /** Compare a computed checksum with the record's; remember the identity when they agree. */
  private acceptChecksum(path: string, identity: string, got: string, expected: string): void {
    if (got !== expected) throw checksumError(path, got, expected);
    this.verified.set(identity, true);
  }

  /** Full validation of the files against the model (format.ts), as store errors. */
  private decode(path: string, files: AdapterFiles): Adapter {
    try {
      return decodeAdapter({ weights: files.weights.bytes, adapterConfig: files.adapterConfig, memlora: files.memlora }, this.model.config);
    } catch (e) {
      if (e instanceof AdapterFormatError) {
        const code = e.code === 'model_mismatch' ? 'adapter_model_mismatch' : 'adapter_corrupt';
        throw new AdapterStoreError(code, `adapter ${path}: ${e.message}`, { path, formatCode: e.code }, { cause: e });
      }
      throw e;
    }
  }

  /**
   * Move an adapter directory to `<user>/quarantine/` with a quarantine.json saying why. Returns the
   * new relative path. The db status is the caller's (consistency.ts markAdapterBad does both).
   */
  async quarantine(path: string, reason: string): Promise<string> {
    const src = await this.locate(path);
    const [user, name] = [path.split('/')[0], basename(path)];
    const qdir = join(this.root, user, QUARANTINE_DIR);
    await mkdir(qdir, { recursive: true });
    let destName = name;
    try {
      await lstat(join(qdir, destName));
      destName = `a-${Date.now()}-${randomBytes(6).toString('hex')}`; // a second quarantine of one name
    } catch {
      // free: keep the original name, so the row's path still tells where it went
    }
    await rename(src, join(qdir, destName));
    await fsyncDir(dirname(src));
    await fsyncDir(qdir);
    const note = new TextEncoder().encode(`${JSON.stringify({ reason, from: path, quarantinedAt: new Date().toISOString() }, null, 2)}\n`);
    await writeDurably(join(qdir, destName, QUARANTINE_REASON_FILE), note).catch(() => undefined);
    for (const k of [...this.verified.keys()]) if (k.startsWith(`${path}|`)) this.verified.delete(k);
    return `${user}/${QUARANTINE_DIR}/${destName}`;
  }

  /**
   * Delete one adapter directory: renamed to a temp name first, so a crash never leaves half of one
   * visible. With `userId`, a path outside that user's directory is refused (bad_adapter_path). Returns
   * what was removed (nothing when it was gone already).
   */
  async remove(path: string, userId?: string): Promise<{ files: number; bytes: number }> {
    let src: string;
    try {
      src = await this.locate(path, userId);
    } catch (e) {
      if (e instanceof AdapterStoreError && e.code === 'adapter_missing') return { files: 0, bytes: 0 };
      throw e;
    }
    // In the user directory even for a quarantined one: scan() finds leftovers there, not in quarantine/.
    const doomed = join(this.root, path.split('/')[0], `.tmp-${randomUUID()}`);
    await rename(src, doomed);
    await fsyncDir(dirname(src));
    const counts = await tally(doomed);
    await rm(doomed, { recursive: true, force: true });
    for (const k of [...this.verified.keys()]) if (k.startsWith(`${path}|`)) this.verified.delete(k);
    return counts;
  }

  /** Delete every adapter (and quarantined one) of a user; returns what was removed. */
  async removeUser(userId: string): Promise<{ files: number; bytes: number }> {
    const dir = join(this.root, userDirName(userId));
    const doomed = join(this.root, `.tmp-${randomUUID()}`);
    try {
      const st = await lstat(dir);
      if (!st.isDirectory()) throw new AdapterStoreError('bad_adapter_path', `${dir} is not a directory`, { userId });
      await rename(dir, doomed);
    } catch (e) {
      if (errno(e) === 'ENOENT') return { files: 0, bytes: 0 };
      throw e;
    }
    await fsyncDir(this.root);
    const counts = await tally(doomed);
    await rm(doomed, { recursive: true, force: true });
    this.verified.clear();
    return counts;
  }

  /** Delete a `.tmp-*` leftover that scan() reported. */
  async removeTemp(path: string): Promise<void> {
    if (typeof path !== 'string' || !TEMP_PATH_RE.test(path)) throw new AdapterStoreError('bad_adapter_path', `not a temp path of this store: ${JSON.stringify(path)}`, { path });
    await rm(join(this.root, ...path.split('/')), { recursive: true, force: true });
  }

  /** Remove a user directory if it has nothing left (no adapters, no quarantine). */
  async pruneUserDir(userDir: string): Promise<boolean> {
    if (!USER_DIR_RE.test(userDir)) throw new AdapterStoreError('bad_adapter_path', `not a user directory: ${JSON.stringify(userDir)}`, { path: userDir });
    try {
      await rmdir(join(this.root, userDir));
      return true;
    } catch {
      return false;
    }
  }

  /** Everything under the root, classified without following symlinks. A missing root is an empty store. */
  async scan(): Promise<StoreScan> {
    const out: StoreScan = { adapters: [], temps: [], userDirs: [], unknown: [] };
    const entries = await readdir(this.root, { withFileTypes: true }).catch((e) => {
      if (errno(e) === 'ENOENT') return [];
      throw e;
    });
    const mtime = async (rel: string): Promise<number> => (await lstat(join(this.root, rel))).mtimeMs;
    for (const e of entries) {
      if (e.name.startsWith('.tmp-') && !e.isSymbolicLink()) out.temps.push({ path: e.name, mtimeMs: await mtime(e.name) });
      else if (USER_DIR_RE.test(e.name) && e.isDirectory()) {
        out.userDirs.push(e.name);
        for (const f of await readdir(join(this.root, e.name), { withFileTypes: true })) {
          const rel = `${e.name}/${f.name}`;
          if (f.isSymbolicLink()) out.unknown.push(rel);
          else if (f.name.startsWith('.tmp-')) out.temps.push({ path: rel, mtimeMs: await mtime(rel) });
          else if (ADAPTER_DIR_RE.test(f.name) && f.isDirectory()) out.adapters.push({ path: rel, mtimeMs: await mtime(rel) });
          else if (f.name !== QUARANTINE_DIR || !f.isDirectory()) out.unknown.push(rel);
        }
      } else out.unknown.push(e.name);
    }
    for (const list of [out.adapters, out.temps]) list.sort((a, b) => (a.path < b.path ? -1 : 1));
    out.userDirs.sort();
    out.unknown.sort();
    return out;
  }
}

/** Regular files and their bytes below dir, not following symlinks (a link counts as one file). */
export async function tally(dir: string): Promise<{ files: number; bytes: number }> {
  let files = 0;
  let bytes = 0;
  const stack = [dir];
  while (stack.length > 0) {
    const d = stack.pop()!;
    for (const entry of await readdir(d, { withFileTypes: true })) {
      const p = join(d, entry.name);
      if (entry.isDirectory()) stack.push(p);
      else {
        files += 1;
        if (entry.isFile()) bytes += (await lstat(p)).size;
      }
    }
  }
  return { files, bytes };
}

/** Whether a string has the shape of an adapter path this store produces (no I/O). */
export const isAdapterPath = (path: string): boolean => ADAPTER_PATH_RE.test(path);
