import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Adapter } from '../../src/lora/adapter.js';
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, MEMLORA_ADAPTER_FILE } from '../../src/lora/format.js';
import { userDirName } from '../../src/lora/paths.js';
import { AdapterStore, AdapterStoreError, QUARANTINE_REASON_FILE } from '../../src/lora/store.js';
import { gpt2Tiny, llamaTiny, modelOf, trainedAdapter } from './fixtures/models.js';

let dir: string;
let root: string;
let store: AdapterStore;
const spec = { layers: [true, false, true], n: 2, r: 8 as const };

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'memlora-store-'));
  root = join(dir, 'adapters');
  store = new AdapterStore(root, modelOf(gpt2Tiny));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

async function expectStoreError(p: Promise<unknown>, code: string): Promise<AdapterStoreError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AdapterStoreError);
  expect((err as AdapterStoreError).code).toBe(code);
  return err as AdapterStoreError;
}

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** Flip one byte of a file in place (same size). */
function flipByte(path: string, at: number): void {
  const b = readFileSync(path);
  b[at] ^= 0x40;
  writeFileSync(path, b);
}

describe('AdapterStore.write', () => {
  it('writes the three files into a fresh directory of the hashed user dir and returns path, checksum and size', async () => {
    const a = trainedAdapter(spec, gpt2Tiny);
    const w = await store.write('alice', a);
    expect(w.path).toMatch(new RegExp(`^${userDirName('alice')}/a-\\d+-[0-9a-f]{12}$`));
    const abs = join(root, ...w.path.split('/'));
    expect(readdirSync(abs).sort()).toEqual([ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, MEMLORA_ADAPTER_FILE].sort());
    expect(w.sha256).toBe(sha(readFileSync(join(abs, ADAPTER_WEIGHTS_FILE))));
    expect(w.bytes).toBe(readdirSync(abs).reduce((s, f) => s + statSync(join(abs, f)).size, 0));
    expect(readdirSync(join(root, userDirName('alice')))).toEqual([w.path.split('/')[1]]); // no temp left
    const back = await store.read(w.path, w.sha256);
    expect(back.spec).toEqual(a.spec);
    expect(back.pairs.every((p) => p.A.buffer === back.pairs[0].A.buffer && p.B.buffer === p.A.buffer)).toBe(true); // views of one read buffer
    expect(back.pairs.map((p) => [...p.B.slice(0, 4)])).toEqual(a.pairs.map((p) => [...p.B.slice(0, 4)]));
    expect(back.pairs.every((p, i) => Buffer.compare(Buffer.from(p.A.buffer, p.A.byteOffset, p.A.byteLength), Buffer.from(a.pairs[i].A.buffer, a.pairs[i].A.byteOffset, a.pairs[i].A.byteLength)) === 0)).toBe(true);
  });

  it('gives every version its own directory; hostile user ids stay inside the root', async () => {
    const a = trainedAdapter(spec, gpt2Tiny);
    const w1 = await store.write('alice', a);
    const w2 = await store.write('alice', a);
    expect(w1.path).not.toBe(w2.path);
    const w3 = await store.write('../../etc/passwd', a);
    expect(w3.path.startsWith(`${userDirName('../../etc/passwd')}/`)).toBe(true);
    expect(readdirSync(dir)).toEqual(['adapters']);
  });

  it('fails with adapter_write_failed and leaves nothing when the store cannot be written', async () => {
    const a = trainedAdapter(spec, gpt2Tiny);
    writeFileSync(root, 'not a directory');
    const e = await expectStoreError(store.write('alice', a), 'adapter_write_failed');
    expect(e.details?.errno).toMatch(/^(EEXIST|ENOTDIR)$/);
    rmSync(root);
    mkdirSync(root);
    writeFileSync(join(root, userDirName('bob')), 'in the way');
    await expectStoreError(store.write('bob', a), 'adapter_write_failed');
    expect(readdirSync(root)).toEqual([userDirName('bob')]);
  });

  it('refuses an adapter the model cannot load before touching the disk', async () => {
    const foreign = trainedAdapter({ layers: [true, true, true, true], n: 1, r: 8 }, llamaTiny);
    await expect(store.write('alice', foreign)).rejects.toMatchObject({ code: 'invalid_adapter_spec' });
    expect(existsSync(root)).toBe(false);
  });
});

// read() (async, the main thread's) and readSync() (blocking calls, the load thread's) answer alike.
describe.each([['read'], ['readSync']] as const)('AdapterStore.%s', (method) => {
  const load = (st: AdapterStore, path: string, sha256: string, options?: Parameters<AdapterStore['read']>[2]): Promise<unknown> =>
    method === 'read' ? st.read(path, sha256, options) : Promise.resolve().then(() => st.readSync(path, sha256, options));

  it('returns the adapter written, its tensors views of one read buffer', async () => {
    const a = trainedAdapter(spec, gpt2Tiny);
    const w = await store.write('alice', a);
    const back = (await load(store, w.path, w.sha256)) as Adapter;
    expect(back.spec).toEqual(a.spec);
    expect(back.scaling).toBe(a.scaling);
    expect(back.pairs.every((p) => p.A.buffer === back.pairs[0].A.buffer && p.B.buffer === p.A.buffer)).toBe(true);
    back.pairs.forEach((p, i) => {
      expect(p.target).toEqual(a.pairs[i].target);
      expect(Array.from(p.A)).toEqual(Array.from(a.pairs[i].A));
      expect(Array.from(p.B)).toEqual(Array.from(a.pairs[i].B));
    });
  });

  it('detects a wrong checksum, and a file corrupted in place after a verified load (verify once)', async () => {
    const w = await store.write('alice', trainedAdapter(spec, gpt2Tiny));
    await expectStoreError(load(store, w.path, 'f'.repeat(64)), 'adapter_corrupt');
    await load(store, w.path, w.sha256); // verified and remembered
    const file = join(root, ...w.path.split('/'), ADAPTER_WEIGHTS_FILE);
    const before = statSync(file);
    flipByte(file, before.size - 3); // inside a tensor: still decodes, checksum differs
    utimesSync(file, before.atime, before.mtime); // same size and mtime: only ctime tells
    const e = await expectStoreError(load(store, w.path, w.sha256), 'adapter_corrupt');
    expect(e.details).toMatchObject({ expected: w.sha256 });
    // 'never' skips the checksum (consistency quick mode): the damaged tensor decodes.
    await expect(load(store, w.path, w.sha256, { verify: 'never' })).resolves.toBeDefined();
  });

  it('verify always catches the same corruption with a fresh store', async () => {
    const w = await store.write('alice', trainedAdapter(spec, gpt2Tiny));
    flipByte(join(root, ...w.path.split('/'), ADAPTER_WEIGHTS_FILE), 200);
    await expectStoreError(load(new AdapterStore(root, modelOf(gpt2Tiny), { verify: 'always' }), w.path, w.sha256), 'adapter_corrupt');
  });

  it('reports damaged side files as corrupt, and another base model as a mismatch (not corrupt)', async () => {
    const w = await store.write('alice', trainedAdapter(spec, gpt2Tiny));
    const abs = join(root, ...w.path.split('/'));
    const peft = JSON.parse(readFileSync(join(abs, ADAPTER_CONFIG_FILE), 'utf8'));
    writeFileSync(join(abs, ADAPTER_CONFIG_FILE), JSON.stringify({ ...peft, r: 4 }));
    const e = await expectStoreError(load(store, w.path, w.sha256), 'adapter_corrupt');
    expect(e.details?.formatCode).toBe('config_mismatch');
    const w2 = await store.write('alice', trainedAdapter(spec, gpt2Tiny));
    const other = new AdapterStore(root, modelOf({ ...gpt2Tiny, dFf: 48 }));
    await expectStoreError(load(other, w2.path, w2.sha256), 'adapter_model_mismatch');
  });

  it('reports a missing directory or file as adapter_missing', async () => {
    const w = await store.write('alice', trainedAdapter(spec, gpt2Tiny));
    await expectStoreError(load(store, `${userDirName('alice')}/a-1700000000000-000000000000`, w.sha256), 'adapter_missing');
    rmSync(join(root, ...w.path.split('/'), MEMLORA_ADAPTER_FILE));
    await expectStoreError(load(store, w.path, w.sha256), 'adapter_missing');
  });

  it('accepts only paths of the shape it writes, inside the root, in the right user directory', async () => {
    const w = await store.write('alice', trainedAdapter(spec, gpt2Tiny));
    const name = w.path.split('/')[1];
    for (const bad of ['../x', `/${w.path}`, `${userDirName('alice')}/../${w.path}`, `${userDirName('alice')}/${name}/..`, name, `${userDirName('alice')}\\${name}`, '', `${w.path}/`]) {
      await expectStoreError(load(store, bad, w.sha256), 'bad_adapter_path');
    }
    await expectStoreError(load(store, w.path, w.sha256, { userId: 'bob' }), 'bad_adapter_path');
    await expect(load(store, w.path, w.sha256, { userId: 'alice' })).resolves.toBeDefined();
    await expectStoreError(load(store, w.path, 'not-a-sha'), 'bad_checksum');
  });

  it('refuses symlinks that lead out of the root, for a directory or a file', async () => {
    const w = await store.write('alice', trainedAdapter(spec, gpt2Tiny));
    const outside = join(dir, 'outside');
    cpSync(join(root, userDirName('alice')), outside, { recursive: true });
    // bob's directory is a link to a copy of alice's adapters outside the root
    symlinkSync(outside, join(root, userDirName('bob')));
    const forged = `${userDirName('bob')}/${w.path.split('/')[1]}`;
    await expectStoreError(load(store, forged, w.sha256), 'bad_adapter_path');
    // a weights file that is a symlink to a valid copy
    const abs = join(root, ...w.path.split('/'));
    rmSync(join(abs, ADAPTER_WEIGHTS_FILE));
    symlinkSync(join(outside, w.path.split('/')[1], ADAPTER_WEIGHTS_FILE), join(abs, ADAPTER_WEIGHTS_FILE));
    await expectStoreError(load(store, w.path, w.sha256), 'bad_adapter_path');
  });
});

describe('quarantine, remove, scan', () => {
  it('quarantine moves the directory aside with the reason, and the old path is gone', async () => {
    const w = await store.write('alice', trainedAdapter(spec, gpt2Tiny));
    const q = await store.quarantine(w.path, 'checksum mismatch');
    expect(q).toBe(`${userDirName('alice')}/quarantine/${w.path.split('/')[1]}`);
    await expectStoreError(store.read(w.path, w.sha256), 'adapter_missing');
    const note = JSON.parse(readFileSync(join(root, ...q.split('/'), QUARANTINE_REASON_FILE), 'utf8'));
    expect(note).toMatchObject({ reason: 'checksum mismatch', from: w.path });
    // the evidence is intact: the quarantined copy still verifies
    await expect(store.read(q, w.sha256)).resolves.toBeDefined();
    const scan = await store.scan();
    expect(scan.adapters).toEqual([]);
    expect(scan.unknown).toEqual([]);
  });

  it('remove and removeUser delete without leaving temp directories', async () => {
    const a = trainedAdapter(spec, gpt2Tiny);
    const w1 = await store.write('alice', a);
    const w2 = await store.write('alice', a);
    const w3 = await store.write('bob', a);
    await expectStoreError(store.remove(w3.path, 'alice'), 'bad_adapter_path'); // bob's, asked for alice
    expect(await store.remove(w1.path, 'alice')).toEqual({ files: 3, bytes: w1.bytes });
    expect(await store.remove(w1.path)).toEqual({ files: 0, bytes: 0 }); // already gone: no error
    expect((await store.scan()).adapters.map((e) => e.path).sort()).toEqual([w2.path, w3.path].sort());
    const removed = await store.removeUser('alice');
    expect(removed).toEqual({ files: 3, bytes: w2.bytes });
    expect(await store.removeUser('alice')).toEqual({ files: 0, bytes: 0 });
    const scan = await store.scan();
    expect(scan.userDirs).toEqual([userDirName('bob')]);
    expect(scan.temps).toEqual([]);
    expect(readdirSync(root)).toEqual([userDirName('bob')]);
  });

  it('scan classifies adapters, temp leftovers and strangers without following links', async () => {
    const w = await store.write('alice', trainedAdapter(spec, gpt2Tiny));
    const user = userDirName('alice');
    mkdirSync(join(root, user, '.tmp-0b9c2f3e-8a44-4c55-9d1a-3f1e2b7c6d5e'));
    mkdirSync(join(root, '.tmp-1b9c2f3e-8a44-4c55-9d1a-3f1e2b7c6d5e'));
    writeFileSync(join(root, 'README'), 'x');
    symlinkSync('/tmp', join(root, user, 'a-1700000000000-000000000000'));
    const scan = await store.scan();
    expect(scan.adapters.map((e) => e.path)).toEqual([w.path]);
    expect(scan.temps.map((e) => e.path).sort()).toEqual([`${user}/.tmp-0b9c2f3e-8a44-4c55-9d1a-3f1e2b7c6d5e`, '.tmp-1b9c2f3e-8a44-4c55-9d1a-3f1e2b7c6d5e'].sort());
    expect(scan.unknown.sort()).toEqual(['README', `${user}/a-1700000000000-000000000000`].sort());
    for (const t of scan.temps) await store.removeTemp(t.path);
    expect((await store.scan()).temps).toEqual([]);
    await expectStoreError(store.removeTemp('../x'), 'bad_adapter_path');
  });

  it('an empty store root (not yet created) scans as empty', async () => {
    expect(await store.scan()).toEqual({ adapters: [], temps: [], userDirs: [], unknown: [] });
  });
});

describe('AdapterStore.readFile', () => {
  it('hands back one file as it lies on disk, the weights only when their checksum is the record\'s', async () => {
    const w = await store.write('alice', trainedAdapter(spec, gpt2Tiny));
    const abs = join(root, ...w.path.split('/'));
    for (const [key, file] of [['weights', ADAPTER_WEIGHTS_FILE], ['adapterConfig', ADAPTER_CONFIG_FILE], ['memlora', MEMLORA_ADAPTER_FILE]] as const) {
      expect(Buffer.compare(await store.readFile(w.path, key, w.sha256, { userId: 'alice' }), readFileSync(join(abs, file)))).toBe(0);
    }
    await expectStoreError(store.readFile(w.path, 'weights', w.sha256, { userId: 'bob' }), 'bad_adapter_path');
    await expectStoreError(store.readFile(w.path, 'weights', 'nope', { userId: 'alice' }), 'bad_checksum');
    flipByte(join(abs, ADAPTER_WEIGHTS_FILE), 200);
    await expectStoreError(store.readFile(w.path, 'weights', w.sha256, { userId: 'alice' }), 'adapter_corrupt');
    // The JSON files carry no checksum of their own: they are read as they are.
    expect((await store.readFile(w.path, 'memlora', w.sha256, { userId: 'alice' })).byteLength).toBe(statSync(join(abs, MEMLORA_ADAPTER_FILE)).size);
    rmSync(join(abs, ADAPTER_CONFIG_FILE));
    await expectStoreError(store.readFile(w.path, 'adapterConfig', w.sha256, { userId: 'alice' }), 'adapter_missing');
    rmSync(abs, { recursive: true });
    await expectStoreError(store.readFile(w.path, 'memlora', w.sha256, { userId: 'alice' }), 'adapter_missing');
  });
});
