import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AdapterStoreError } from '../../src/lora/store.js';
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
    // @ts-expect-error: the private thread, ended from outside as a crash would end it
    await (l.worker as import('node:worker_threads').Worker).terminate();
    await new Promise((r) => setImmediate(r));
    expect(l.threadId).toBeNull();
    await l.start();
    expect(l.threadId).not.toBeNull();
    expect(l.threadId).not.toBe(first);
    await l.close();
  });

  it('refuses reads after close', async () => {
    const other = new WorkerAdapterLoader(f.store.root, f.store.model);
    await other.close();
    await expect(other.read('x', 'y', { userId: 'u' })).rejects.toMatchObject({ code: 'adapter_io' });
  });
});
