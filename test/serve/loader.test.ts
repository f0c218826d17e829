import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { encodeAdapter } from '../../src/lora/format.js';
import { AdapterStoreError } from '../../src/lora/store.js';
import { type UploadBody, uploadAdapterBody } from '../../src/serve/adapter-upload.js';
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

  it("reads apart, checks and writes an upload on its thread as uploadAdapterBody does here: the same files and checksum, the same refusals; the body's buffer is handed over, not copied", async () => {
    const a = randomStoredAdapter(f.cfg, [0, 2], 2, 4);
    const weights = encodeAdapter(a, f.store.model).weights;
    const raw = (body: Uint8Array): UploadBody => ({ body, contentType: 'application/octet-stream' });
    const here = await uploadAdapterBody(f.store, 'up', raw(weights.slice()));
    const sent = weights.slice();
    const there = await loader.upload('up', raw(sent));
    expect(sent.byteLength).toBe(0); // transferred to the thread
    expect(there).toMatchObject({ sha256: here.sha256, bytes: here.bytes, config: here.config, source: 'memlora' });
    expect(there.path).not.toBe(here.path);
    expect(there.path.startsWith(here.path.split('/')[0])).toBe(true); // the user's directory
    for (const file of ['adapter_model.safetensors', 'adapter_config.json']) expect(readFileSync(join(f.store.root, there.path, file))).toEqual(readFileSync(join(f.store.root, here.path, file)));
    expect((await f.store.read(there.path, there.sha256, { userId: 'up' })).spec).toEqual(a.spec);
    // The same weights as a multipart part: read apart on the thread, the same files.
    const form = new FormData();
    form.append('adapter_model.safetensors', new Blob([weights.slice()]));
    const request = new Request('http://upload/', { method: 'POST', body: form });
    const multipart = { body: new Uint8Array(await request.arrayBuffer()), contentType: request.headers.get('content-type')! };
    expect((await loader.upload('up', multipart)).sha256).toBe(here.sha256);
    // Refused as here: the same errors, codes, messages and details; nothing written.
    const refusals: UploadBody[] = [
      raw(weights.slice(0, 100)), // not an adapter: ServeError invalid_adapter
      raw(new Uint8Array(0)), // empty: UploadBodyError empty_body
      { body: new TextEncoder().encode('--x\r\nnot a part'), contentType: 'multipart/form-data; boundary=x' }, // UploadBodyError bad_multipart
    ];
    for (const upload of refusals) {
      const refusedHere = (await uploadAdapterBody(f.store, 'up', { ...upload, body: upload.body.slice() }).then(() => null, (e: unknown) => e)) as Error;
      const refusedThere = await loader.upload('up', upload).then(() => null, (e: unknown) => e);
      expect(refusedHere).toBeInstanceOf(Error);
      expect(refusedThere?.constructor).toBe(refusedHere.constructor);
      expect(refusedThere).toMatchObject({ message: refusedHere.message, details: (refusedHere as ServeError).details, ...('code' in refusedHere ? { code: refusedHere.code } : {}) });
    }
    expect(refusals.map((u) => u.body.byteLength)).toEqual([0, 0, 0]); // handed over too
    // A view on a larger buffer is copied, and stays the caller's.
    const view = new Uint8Array(weights.byteLength + 8);
    view.set(weights, 8);
    const part = view.subarray(8);
    expect((await loader.upload('up', raw(part))).sha256).toBe(here.sha256);
    expect(part.byteLength).toBe(weights.byteLength);
  });

  it('refuses reads after close', async () => {
    const other = new WorkerAdapterLoader(f.store.root, f.store.model);
    await other.close();
    await expect(other.read('x', 'y', { userId: 'u' })).rejects.toMatchObject({ code: 'adapter_io' });
  });
});
