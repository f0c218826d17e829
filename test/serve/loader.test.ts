import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { encodeAdapter } from '../../src/lora/format.js';
import { AdapterStoreError } from '../../src/lora/store.js';
import { uploadAdapter } from '../../src/serve/adapter-upload.js';
import { ServeError } from '../../src/serve/errors.js';
import { WorkerAdapterLoader } from '../../src/serve/loader.js';
import { makeServeFixture, randomStoredAdapter } from './fixtures.js';

const f = makeServeFixture();
const loader = new WorkerAdapterLoader(f.store.root, f.store.model);
afterAll(async () => {
  await loader.close();
  await f.cleanup();
});

describe('WorkerAdapterLoader', () => {
  it('reads an adapter on its thread exactly as the store does', async () => {
    const a = randomStoredAdapter(f.cfg, [0, 1], 2, 1);
    const w = await f.store.write('wa', a);
    const got = await loader.read(w.path, w.sha256, { userId: 'wa' });
    const ref = await f.store.read(w.path, w.sha256, { userId: 'wa' });
    expect(got.spec).toEqual(ref.spec);
    expect(got.scaling).toBe(ref.scaling);
    expect(got.pairs.map((p) => [p.target, p.rank, [...p.A], [...p.B]])).toEqual(ref.pairs.map((p) => [p.target, p.rank, [...p.A], [...p.B]]));
    expect(got.pairs[0].A).toBeInstanceOf(Float32Array);
  });

  it("fails with the store's error codes: corrupt, missing, another user's path", async () => {
    const w = await f.store.write('wb', randomStoredAdapter(f.cfg, [0], 1, 2));
    const file = join(f.store.root, w.path, 'adapter_model.safetensors');
    const bytes = readFileSync(file);
    bytes[bytes.length - 2] ^= 0x0f;
    writeFileSync(file, bytes);
    const corrupt = await loader.read(w.path, w.sha256, { userId: 'wb' }).catch((e: unknown) => e);
    expect(corrupt).toBeInstanceOf(AdapterStoreError);
    expect(corrupt).toMatchObject({ code: 'adapter_corrupt' });
    await expect(loader.read(w.path, w.sha256, { userId: 'someone-else' })).rejects.toMatchObject({ code: 'bad_adapter_path' });
    rmSync(join(f.store.root, w.path), { recursive: true });
    await expect(loader.read(w.path, w.sha256, { userId: 'wb' })).rejects.toMatchObject({ code: 'adapter_missing' });
    await expect(loader.read(w.path, w.sha256)).rejects.toMatchObject({ code: 'bad_adapter_path' });
  });

  it('start() boots the thread before any read; later starts and reads use that thread', async () => {
    const l = new WorkerAdapterLoader(f.store.root, f.store.model);
    expect(l.threadId).toBeNull();
    await l.start();
    const thread = l.threadId;
    expect(thread).toEqual(expect.any(Number));
    await l.start();
    const w = await f.store.write('wc', randomStoredAdapter(f.cfg, [1], 2, 3));
    expect((await l.read(w.path, w.sha256, { userId: 'wc' })).spec).toEqual((await f.store.read(w.path, w.sha256, { userId: 'wc' })).spec);
    expect(l.threadId).toBe(thread);
    await l.close();
    expect(l.threadId).toBeNull();
    await expect(l.start()).rejects.toMatchObject({ code: 'adapter_io' });
  });

  it('a thread that dies is started again by the next start or read', async () => {
    const l = new WorkerAdapterLoader(f.store.root, f.store.model);
    await l.start();
    const first = l.threadId;
    // The private thread, ended from outside as a crash would end it.
    await (l as unknown as { worker: import('node:worker_threads').Worker }).worker.terminate();
    await new Promise((r) => setImmediate(r));
    expect(l.threadId).toBeNull();
    await l.start();
    expect(l.threadId).not.toBeNull();
    expect(l.threadId).not.toBe(first);
    await l.close();
  });

  it("checks and writes an upload on its thread as uploadAdapter does here: the same files and checksum, the same refusals; the upload's buffer is handed over, not copied", async () => {
    const a = randomStoredAdapter(f.cfg, [0, 2], 2, 4);
    const weights = encodeAdapter(a, f.store.model).weights;
    const here = await uploadAdapter(f.store, 'up', weights.slice());
    const sent = weights.slice();
    const there = await loader.upload('up', sent);
    expect(sent.byteLength).toBe(0); // transferred to the thread
    expect(there).toMatchObject({ sha256: here.sha256, bytes: here.bytes, config: here.config, source: 'memlora' });
    expect(there.path).not.toBe(here.path);
    expect(there.path.startsWith(here.path.split('/')[0])).toBe(true); // the user's directory
    for (const file of ['adapter_model.safetensors', 'adapter_config.json']) expect(readFileSync(join(f.store.root, there.path, file))).toEqual(readFileSync(join(f.store.root, here.path, file)));
    expect((await f.store.read(there.path, there.sha256, { userId: 'up' })).spec).toEqual(a.spec);
    // Refused as here: with the ServeError's code and details; nothing written.
    const broken = weights.slice(0, 100);
    const refusedHere = (await uploadAdapter(f.store, 'up', broken.slice()).then(() => null, (e: unknown) => e)) as ServeError;
    const refusedThere = await loader.upload('up', broken.slice()).catch((e: unknown) => e);
    expect(refusedHere).toBeInstanceOf(ServeError);
    expect(refusedThere).toBeInstanceOf(ServeError);
    expect(refusedThere).toMatchObject({ code: refusedHere.code, message: refusedHere.message, details: refusedHere.details });
    // A view on a larger buffer is copied, and stays the caller's.
    const view = new Uint8Array(weights.byteLength + 8);
    view.set(weights, 8);
    const part = view.subarray(8);
    expect((await loader.upload('up', part)).sha256).toBe(here.sha256);
    expect(part.byteLength).toBe(weights.byteLength);
  });

  it('refuses reads after close', async () => {
    const other = new WorkerAdapterLoader(f.store.root, f.store.model);
    await other.close();
    await expect(other.read('x', 'y', { userId: 'u' })).rejects.toMatchObject({ code: 'adapter_io' });
  });
});
