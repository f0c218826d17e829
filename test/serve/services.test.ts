/** The server's generation services built from a configuration: no model, loading, consistency at start, deletion, adapters off, the adapter and prefix caches across restarts. */
import { mkdirSync, mkdtempSync, rmSync, existsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createRequire } from 'node:module';
import { basename, dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { openDb } from '../../src/db/client.js';
import { createAdapterVersion, getAdapterVersion } from '../../src/db/queries/adapters.js';
import { createUser, deleteUser } from '../../src/db/queries/users.js';
import { memoryLogger } from '../../src/http/logger.js';
import { adapterKey } from '../../src/lora/cache.js';
import { encodeAdapter } from '../../src/lora/format.js';
import { AdapterStore } from '../../src/lora/store.js';
import { Registry } from '../../src/metrics.js';
import { CACHE_SNAPSHOT_FILE, readCacheSnapshot } from '../../src/serve/cache-snapshot.js';
import { PREFIX_SNAPSHOT_FILE } from '../../src/serve/prefix-snapshot.js';
import { DEFAULT_SERVE_THREADS, createServeServices, explainLoadFailure, servingThreads } from '../../src/serve/services.js';
import { forcingAdapter, never, req, tokenOf, writeModelDir } from './fixtures.js';

const root = mkdtempSync(join(tmpdir(), 'memlora-serve-svc-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const md = writeModelDir(root);

function setup(modelPath: string, name: string) {
  const config = loadConfig({ MEMLORA_DATA_DIR: join(root, name), MEMLORA_ADAPTER_DIR: join(root, name, 'adapters'), MEMLORA_MODEL_PATH: modelPath });
  mkdirSync(config.dataDir, { recursive: true });
  const db = openDb(config.dbFile);
  return { config, db, metrics: new Registry(), logger: memoryLogger() };
}

// Where onnxruntime-node keeps the CUDA provider when it was installed with it (a GPU host).
const cudaProvider = join(dirname(createRequire(import.meta.url).resolve('onnxruntime-node/package.json')), 'bin', 'napi-v6', process.platform, process.arch, 'libonnxruntime_providers_cuda.so');

describe('createServeServices', () => {
  it.skipIf(existsSync(cudaProvider))('with the CUDA provider configured but not installed: the load fails, and says what to run', async () => {
    const s = setup(md.dir, 'cuda');
    const svc = (await createServeServices({ ...s, config: { ...s.config, executionProvider: 'cuda' } }))!;
    expect(await svc.loaded).toBeNull();
    expect(svc.generate!.ready()).toBe(false);
    expect(svc.generate!.loadError()).toMatch(/^the CUDA execution provider is configured \(MEMLORA_EXECUTION_PROVIDER=cuda\) but not installed: on a GPU host run ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node/);
    expect(s.logger.lines.find((l) => l.level === 'error')?.fields.err).toBe(svc.generate!.loadError());
    await svc.generate!.close();
    s.db.close();
  });

  it('explains a missing CUDA provider, and passes other load failures through', () => {
    expect(explainLoadFailure({ executionProvider: 'cuda' }, 'OrtSessionOptionsAppendExecutionProvider_Cuda: Failed to load shared library')).toMatch(/npm rebuild onnxruntime-node/);
    expect(explainLoadFailure({ executionProvider: 'cpu' }, 'Failed to load shared library')).toBe('Failed to load shared library');
    expect(explainLoadFailure({ executionProvider: 'cuda' }, 'bad config.json')).toBe('bad config.json');
  });

  it('is null without a model directory (generation absent, everything else served)', async () => {
    const s = setup(join(root, 'no-model'), 'none');
    expect(await createServeServices(s)).toBeNull();
    expect(s.logger.lines.map((l) => l.msg)).toContain('no base model; /v1/generate answers 503 model_unavailable');
    s.db.close();
  });

  it('checks the store at start, loads in the background, serves, deletes users through store and cache', async () => {
    const s = setup(md.dir, 'full');
    const store = new AdapterStore(s.config.adapterDir, { config: md.cfg, name: basename(md.dir) });
    createUser(s.db, { id: 'alice' });
    createUser(s.db, { id: 'ghost' });
    const w = await store.write('alice', forcingAdapter(md.cfg, md.weights, tokenOf(md.tokenizer, 'q')));
    createAdapterVersion(s.db, { userId: 'alice', config: {}, filePath: w.path, sha256: w.sha256, metrics: {}, status: 'ready', activate: true });
    // a row whose files never made it to disk: the start-up check marks it missing and deactivates it
    const lost = await store.write('ghost', forcingAdapter(md.cfg, md.weights, 9));
    createAdapterVersion(s.db, { userId: 'ghost', config: {}, filePath: lost.path, sha256: lost.sha256, metrics: {}, status: 'ready', activate: true });
    rmSync(join(s.config.adapterDir, lost.path), { recursive: true });

    const svc = (await createServeServices(s))!;
    expect(getAdapterVersion(s.db, 'ghost', 1)).toMatchObject({ status: 'missing', active: 0 });
    expect(svc.generate!.ready()).toBe(false);
    await expect(svc.generate!.generate(req('alice'), never())).rejects.toMatchObject({ code: 'model_unavailable' });
    expect(await svc.loaded).not.toBeNull();
    expect(svc.generate!.ready()).toBe(true);
    // The adapter-load thread booted before the server was ready, and the first miss is read on it.
    const thread = svc.reader!.threadId;
    expect(thread).not.toBeNull();
    expect(s.logger.lines.find((l) => l.msg === 'adapter load thread started')).toMatchObject({ level: 'info' });
    expect(s.logger.lines.find((l) => l.msg === 'guide compile thread started')).toMatchObject({ level: 'info' }); // booted as well, before ready
    expect((await svc.generate!.generate(req('alice', { maxTokens: 3 }), never())).text).toBe('qqq');
    expect(svc.reader!.threadId).toBe(thread);
    expect(svc.cache!.has(adapterKey('alice', 1))).toBe(true);
    // An operator's upload is checked and written on the load thread: its buffer is handed over there.
    const upload = encodeAdapter(forcingAdapter(md.cfg, md.weights, tokenOf(md.tokenizer, 'z')), store.model).weights;
    const uploaded = await svc.adapterFiles.importAdapter!('ghost', { body: upload, contentType: 'application/octet-stream' });
    expect(upload.byteLength).toBe(0);
    expect(svc.reader!.threadId).toBe(thread);
    expect((await store.read(uploaded.path, uploaded.sha256, { userId: 'ghost' })).spec).toMatchObject({ n: 1 });

    expect(await svc.adapterFiles.removeUserAdapters('alice')).toMatchObject({ files: 3 });
    expect(svc.cache!.has(adapterKey('alice', 1))).toBe(false);
    expect(existsSync(join(s.config.adapterDir, w.path))).toBe(false);
    await svc.generate!.close();
    expect(svc.generate!.ready()).toBe(false);
    s.db.close();
  });

  it('with adapters off every request is served without one; close() while loading is clean', async () => {
    const s = setup(md.dir, 'off');
    const store = new AdapterStore(s.config.adapterDir, { config: md.cfg, name: basename(md.dir) });
    createUser(s.db, { id: 'alice' });
    const w = await store.write('alice', forcingAdapter(md.cfg, md.weights, tokenOf(md.tokenizer, 'q')));
    createAdapterVersion(s.db, { userId: 'alice', config: {}, filePath: w.path, sha256: w.sha256, metrics: {}, status: 'ready', activate: true });
    const svc = (await createServeServices(s, { adapters: false }))!;
    await svc.loaded;
    const r = await svc.generate!.generate(req('alice', { maxTokens: 3 }), never());
    expect(r.personalization).toEqual({ mode: 'vanilla', adapterVersion: null });
    expect(svc.reader!.threadId).toBeNull(); // no adapters to load: no load thread
    // No adapter cache to read, empty or warm.
    expect(() => svc.generate!.cacheContents(10)).toThrow(expect.objectContaining({ code: 'adapters_disabled' }));
    expect(() => svc.generate!.dropCached()).toThrow(expect.objectContaining({ code: 'adapters_disabled' }));
    expect(() => svc.generate!.cacheCurve()).toThrow(expect.objectContaining({ code: 'adapters_disabled' }));
    await expect(svc.generate!.warm(['alice'], never())).rejects.toMatchObject({ code: 'adapters_disabled' });
    // The prefix cache serves vanilla requests too.
    expect(svc.generate!.prefixCache()).toMatchObject({ enabled: true, maxBytes: s.config.prefixCacheBytes });
    // Sized at start against the context window: the default budget is ample for this model.
    const perToken = 2 * md.cfg.nLayers * md.cfg.nKvHeads * md.cfg.headDim * 4 + 4;
    expect(s.logger.lines.find((l) => l.msg === 'prefix cache sized')).toMatchObject({ level: 'info', fields: { bytesPerToken: perToken, capacityTokens: Math.floor(s.config.prefixCacheBytes / perToken), contextTokens: md.cfg.maxPositions, tooSmall: false } });
    await svc.generate!.close();

    // A budget under four full-context conversations of this model: a warning at start that says what to set.
    const small = setup(md.dir, 'small-prefix');
    const tight = (await createServeServices({ ...small, config: { ...small.config, prefixCacheBytes: 3 * md.cfg.maxPositions * perToken } }, { consistency: false, adapters: false }))!;
    await tight.loaded;
    const warned = small.logger.lines.find((l) => l.level === 'warn' && /prefix cache holds fewer than 4 conversations/.test(l.msg));
    expect(warned?.fields).toMatchObject({ capacityTokens: 3 * md.cfg.maxPositions, fullContexts: 3, advisedBytes: 4 * md.cfg.maxPositions * perToken, tooSmall: true });
    expect(small.logger.lines.map((l) => l.msg)).not.toContain('prefix cache sized');
    await tight.generate!.close();
    small.db.close();

    // MEMLORA_PREFIX_CACHE_BYTES=0: reported as off, and dropping from it drops nothing.
    const noPrefix = setup(md.dir, 'no-prefix');
    const plain = (await createServeServices({ ...noPrefix, config: { ...noPrefix.config, prefixCacheBytes: 0 } }, { consistency: false }))!;
    await plain.loaded;
    const long = 'I walk my dog every morning before work, and I like hiking on weekends.';
    createUser(noPrefix.db, { id: 'carl' });
    for (let i = 0; i < 2; i++) expect((await plain.generate!.generate(req('carl', { prompt: long, maxTokens: 2 }), never())).usage).toMatchObject({ cachedTokens: 0 });
    expect(plain.generate!.prefixCache()).toEqual({ enabled: false, entries: 0, users: 0, tokens: 0, bytes: 0, maxBytes: 0, bytesPerToken: null, capacityTokens: null, minTokens: null, perScope: null, counters: { lookups: 0, hits: 0, hitRate: null, reusedTokens: 0, evictions: 0, retired: 0 } });
    expect(plain.generate!.dropPrefixCache('carl').dropped).toEqual({ entries: 0, bytes: 0 });
    await plain.generate!.close();
    noPrefix.db.close();

    const early = (await createServeServices(setup(md.dir, 'early'), { consistency: false }))!;
    // The cache is there before the model loads.
    expect(early.generate!.cacheContents(10)).toMatchObject({ adapters: [], truncated: false, cache: { entries: 0 } });
    // The prefix cache is not: it is sized by the model's shape.
    expect(() => early.generate!.prefixCache()).toThrow(expect.objectContaining({ code: 'model_unavailable' }));
    expect(() => early.generate!.dropPrefixCache()).toThrow(expect.objectContaining({ code: 'model_unavailable' }));
    await early.generate!.close(); // before the model finished loading
    expect(await early.loaded).toBeNull();
    s.db.close();
  });

  it('restarts with the adapters its cache held: saved at close, warmed again at the next start, hottest last', async () => {
    const s = setup(md.dir, 'restart');
    const store = new AdapterStore(s.config.adapterDir, { config: md.cfg, name: basename(md.dir) });
    for (const [u, t] of [['alice', 'q'], ['bob', 'z'], ['carol', 'k']] as const) {
      createUser(s.db, { id: u });
      const w = await store.write(u, forcingAdapter(md.cfg, md.weights, tokenOf(md.tokenizer, t)));
      createAdapterVersion(s.db, { userId: u, config: {}, filePath: w.path, sha256: w.sha256, metrics: {}, status: 'ready', activate: true });
    }
    const first = (await createServeServices(s))!;
    expect(await first.restored()).toBeNull(); // no snapshot yet
    for (const u of ['alice', 'bob']) await first.generate!.generate(req(u, { maxTokens: 2 }), never());
    await first.generate!.close();
    const file = join(s.config.dataDir, CACHE_SNAPSHOT_FILE);
    expect(readCacheSnapshot(file)!.users).toEqual(['bob', 'alice']); // most recent first; carol never served
    expect(s.logger.lines.find((l) => l.msg === 'adapter cache saved for the next start')?.fields).toMatchObject({ users: 2 });

    const again = { ...s, metrics: new Registry() };
    const second = (await createServeServices(again))!;
    expect(await second.restored()).toMatchObject({ users: 2, loaded: 2, failed: 0, resident: 2 });
    expect(second.cache!.cachedKeys()).toEqual([adapterKey('bob', 1), adapterKey('alice', 1)]); // bob warmed last: most recent
    const before = second.cache!.counters();
    expect((await second.generate!.generate(req('alice', { maxTokens: 3 }), never())).text).toBe('qqq');
    expect(second.cache!.counters()).toMatchObject({ loads: before.loads, hits: before.hits + 1 }); // no disk read
    expect(second.cache!.curve.lookups).toBe(1); // the restore's loads are warming, not traffic
    await second.generate!.close();
    expect(readCacheSnapshot(file)!.users).toEqual(['alice', 'bob']);

    // Off: nothing restored, nothing saved.
    const off = { ...s, metrics: new Registry(), config: { ...s.config, cacheRestore: false } };
    const third = (await createServeServices(off))!;
    expect(await third.restored()).toBeNull();
    expect(third.cache!.stats().entries).toBe(0);
    await third.generate!.generate(req('carol', { maxTokens: 1 }), never());
    await third.generate!.close();
    expect(readCacheSnapshot(file)!.users).toEqual(['alice', 'bob']);

    // A file that is not a snapshot: logged, not restored, served as usual, replaced at close.
    writeFileSync(file, '{"version": 7}');
    const logger = memoryLogger();
    const fourth = (await createServeServices({ ...s, metrics: new Registry(), logger }))!;
    expect(await fourth.restored()).toBeNull();
    expect(logger.lines.find((l) => l.msg === 'adapter cache snapshot unreadable; not restored')?.level).toBe('error');
    expect((await fourth.generate!.generate(req('carol', { maxTokens: 2 }), never())).text).toBe('kk');
    await fourth.generate!.close();
    expect(readCacheSnapshot(file)!.users).toEqual(['carol']);
    s.db.close();
  });

  it('a restore cut short by shutdown keeps the previous snapshot', async () => {
    const s = setup(md.dir, 'restart-cut');
    const store = new AdapterStore(s.config.adapterDir, { config: md.cfg, name: basename(md.dir) });
    const users = Array.from({ length: 30 }, (_, i) => `user-${i}`);
    for (const u of users) {
      createUser(s.db, { id: u });
      const w = await store.write(u, forcingAdapter(md.cfg, md.weights, tokenOf(md.tokenizer, 'q')));
      createAdapterVersion(s.db, { userId: u, config: {}, filePath: w.path, sha256: w.sha256, metrics: {}, status: 'ready', activate: true });
    }
    const file = join(s.config.dataDir, CACHE_SNAPSHOT_FILE);
    writeFileSync(file, JSON.stringify({ version: 1, savedAt: new Date().toISOString(), users }));
    const svc = (await createServeServices(s))!;
    await svc.loaded;
    await svc.generate!.close(); // at once: the restore is stopped between loads
    const report = await svc.restored();
    expect(report!.loaded).toBeLessThan(users.length);
    expect(s.logger.lines.map((l) => l.msg)).toContain('adapter cache restore stopped at shutdown');
    expect(readCacheSnapshot(file)!.users).toEqual(users); // not replaced by the partial cache
    s.db.close();
  });

  it('restarts with the prefix cache\'s conversations: saved at close, read back before serving, those no longer served left out', async () => {
    const s = setup(md.dir, 'prefix-restart');
    const store = new AdapterStore(s.config.adapterDir, { config: md.cfg, name: basename(md.dir) });
    const give = async (user: string, char: string) => {
      const w = await store.write(user, forcingAdapter(md.cfg, md.weights, tokenOf(md.tokenizer, char)));
      createAdapterVersion(s.db, { userId: user, config: {}, filePath: w.path, sha256: w.sha256, metrics: {}, status: 'ready', activate: true });
    };
    for (const u of ['alice', 'bob', 'carol']) createUser(s.db, { id: u });
    await give('alice', 'q');
    const opening = { role: 'user' as const, content: 'My sister plays the violin in an orchestra, and I go to every concert.' };
    const turn = (user: string, reply?: string) =>
      req(user, { prompt: undefined, maxTokens: 4, messages: reply === undefined ? [opening] : [opening, { role: 'assistant', content: reply }, { role: 'user', content: 'Which piece?' }] });
    const file = join(s.config.dataDir, PREFIX_SNAPSHOT_FILE);
    const start = async (config = s.config) => {
      const logger = memoryLogger();
      const svc = (await createServeServices({ ...s, config, metrics: new Registry(), logger }))!;
      await svc.loaded;
      return { svc, logger, log: (msg: string) => logger.lines.find((l) => l.msg === msg) };
    };

    const first = await start();
    const replies = new Map<string, string>();
    for (const u of ['alice', 'bob', 'carol']) replies.set(u, (await first.svc.generate!.generate(turn(u), never())).text);
    expect(replies.get('alice')).toBe('qqqq');
    await first.svc.generate!.close();
    expect(first.log('prefix cache saved for the next start')?.fields).toMatchObject({ conversations: 3 });
    expect(existsSync(file)).toBe(true);

    // While the server is down carol is erased: her conversation is not restored.
    deleteUser(s.db, 'carol');
    const second = await start();
    expect(existsSync(file)).toBe(false); // read, then deleted: no conversations on disk while serving
    expect(second.log('prefix cache restored')?.fields).toMatchObject({ saved: 3, restored: 2, stale: 1, overBudget: 0 });
    expect(second.svc.generate!.prefixCache()).toMatchObject({ entries: 2, users: 2 });
    for (const u of ['alice', 'bob']) {
      const next = await second.svc.generate!.generate(turn(u, replies.get(u)), never());
      expect(next.usage.cachedTokens, u).toBeGreaterThan(0);
      // The same turn with its prompt computed whole replies the same.
      second.svc.generate!.dropPrefixCache(u);
      const whole = await second.svc.generate!.generate(turn(u, replies.get(u)), never());
      expect(whole.usage.cachedTokens, u).toBe(0);
      expect(next.text, u).toBe(whole.text);
    }
    await second.svc.generate!.close();

    // A new adapter version of alice while down: her version-1 conversation is not restored.
    await give('alice', 'z');
    const third = await start();
    expect(third.log('prefix cache restored')?.fields).toMatchObject({ saved: 2, restored: 1, stale: 1 });
    await third.svc.generate!.close();

    // Off: the file left is deleted at start, and nothing is written at close.
    expect(existsSync(file)).toBe(true);
    const off = await start({ ...s.config, prefixCacheRestore: false });
    expect(existsSync(file)).toBe(false);
    expect(off.svc.generate!.prefixCache().entries).toBe(0);
    await off.svc.generate!.generate(turn('bob'), never());
    await off.svc.generate!.close();
    expect(existsSync(file)).toBe(false);
    s.db.close();
  });

  it('serves with MEMLORA_INTRA_OP_THREADS, or the measured default when it is 0', () => {
    expect(servingThreads({ intraOpThreads: 0 })).toBe(DEFAULT_SERVE_THREADS);
    expect(servingThreads({ intraOpThreads: 2 })).toBe(2);
  });
});
