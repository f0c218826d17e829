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

  it('refuses reads after close', async () => {
    const other = new WorkerAdapterLoader(f.store.root, f.store.model);
    await other.close();
    await expect(other.read('x', 'y', { userId: 'u' })).rejects.toMatchObject({ code: 'adapter_io' });
  });
});
