/**
 * What the server runs for generation, built from its configuration: the adapter store and cache
 * (ready at once, so user deletion can remove adapters while the model still loads), the start-up
 * consistency check of store and db, then, in the background, the base model, its tokenizer, the
 * engine and a warm-up compile of the plain graphs; `ready()` turns true when that is done.
 *
 * Without a model (no config.json under MEMLORA_MODEL_PATH, e.g. while the default model is still
 * being trained) there is no generation service: /v1/generate answers 503 model_unavailable and
 * everything else works.
 */
import { existsSync, rmSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { Config } from '../config.js';
import type { Db } from '../db/client.js';
import { AdapterCache, adapterKey } from '../lora/cache.js';
import { type ConsistencyOptions, type VersionFilesCheck, checkAdapterStore, checkVersionFiles } from '../lora/consistency.js';
import { type EncodedAdapter, maxAdapterWeightsBytes } from '../lora/format.js';
import { AdapterStore } from '../lora/store.js';
import type { Registry } from '../metrics.js';
import { readHfConfig } from '../model/import.js';
import { Model } from '../model/model.js';
import { loadTokenizer } from '../model/tokenizer.js';
import { Engine, type EngineOptions } from './engine.js';
import { WorkerAdapterLoader } from './loader.js';
import { ServeError } from './errors.js';
import type { UploadBody, UploadedAdapter } from './adapter-upload.js';
import type { QueueReport, ScoreRequest, ScoreResult, ServeEvent, ServeLogger, ServeRequest, ServeResult, TokenizeRequest, TokenizeResult } from './types.js';
import type { WarmReport } from './warm.js';
import { type CacheContents, type CacheCurve, type CacheDrop, cacheContents, cacheCurve, dropCached } from './cache-admin.js';
import { type RestoreReport, restoreCache, saveCacheSnapshot, snapshotPath } from './cache-snapshot.js';
import { PrefixCache } from './prefix-cache.js';
import { prefixSnapshotPath, restorePrefixAtStart, savePrefixAtClose } from './prefix-snapshot.js';
import { type PrefixCacheDrop, type PrefixCacheReport, SIZING_CONVERSATIONS, dropPrefixCache, prefixCacheReport, prefixCacheSizing } from './prefix-admin.js';

/**
 * ONNX Runtime intra-op threads for serving when MEMLORA_INTRA_OP_THREADS is 0: 0 = ONNX Runtime's
 * default, one per core. On the quiet 2-core development machine under HTTP load (bench/swap.ts,
 * results/swap.json), two threads served vanilla requests 1.14x and injected ones 1.54x faster than
 * one. (An earlier run on the same machine while other heavy jobs ran found the reverse for injected
 * rows, 0.83x: a host shared with unrelated work should set MEMLORA_INTRA_OP_THREADS=1. Injection
 * jobs run at nice 19, so they do not count as such work.)
 */
export const DEFAULT_SERVE_THREADS = 0;

export interface ServeSetup {
  config: Config;
  db: Db;
  metrics: Registry;
  logger: ServeLogger;
}

export interface ServeOptions {
  /** Serve adapters (default true). false: every request is served as if no user had one (the bench's baseline). */
  adapters?: boolean;
  /** Engine settings beyond the configuration (memory k, pool budget). */
  engine?: Partial<Pick<EngineOptions, 'memoryItems' | 'poolBudgetBytes' | 'template' | 'guideThread' | 'prefillChunk'>>;
  /** Prefix cache settings beyond MEMLORA_PREFIX_CACHE_BYTES (tests: a shorter minimum match). */
  prefixCache?: { minTokens?: number; perScope?: number };
  /** Options of the start-up consistency check; false skips it. Default: quick (no checksums), 60 s grace for writers. */
  consistency?: ConsistencyOptions | false;
}

/** The generation service as the HTTP layer sees it (structurally its GenerateService). */
export interface GenerationService {
  /** Why the model failed to load (null while loading or loaded). */
  loadError(): string | null;
  generate(req: ServeRequest, signal: AbortSignal): Promise<ServeResult>;
  stream(req: ServeRequest, signal: AbortSignal): AsyncIterable<ServeEvent>;
  score(req: ScoreRequest, signal: AbortSignal): Promise<ScoreResult>;
  /** A raw prompt or messages as the model's token ids (no memory); model_unavailable while loading. */
  tokenize(req: TokenizeRequest): TokenizeResult;
  /** Token ids as text; token_out_of_range outside the vocabulary. */
  detokenize(tokens: readonly number[]): string;
  warm(userIds: readonly string[], signal: AbortSignal): Promise<WarmReport>;
  /** What the adapter cache holds (at most `limit` adapters listed); adapters_disabled without adapters. */
  cacheContents(limit: number): CacheContents;
  /** Drops the adapters of `userId`, or every one, from the cache; adapters_disabled without adapters. */
  dropCached(userId?: string): CacheDrop;
  /** The cache's hit rate at every size, from the lookups served; adapters_disabled without adapters. */
  cacheCurve(): CacheCurve;
  /** What the prefix cache holds and saved since start (enabled: false when it is off); model_unavailable while loading. */
  prefixCache(): PrefixCacheReport;
  /** Drops the conversations of `userId`, or every one, from the prefix cache; model_unavailable while loading. */
  dropPrefixCache(userId?: string): PrefixCacheDrop;
  /** The generation queue and batch now (at most `limit` users listed); model_unavailable while loading. */
  queue(limit: number): QueueReport;
  /** Tokens the user's unfinished requests hold against their daily quota (0 while the model loads). */
  heldTokens(userId: string): number;
  /**
   * Erasing a user: forget their conversations in the prefix cache, and keep none of their requests
   * in flight (while the model loads nothing is cached).
   */
  forgetUser(userId: string): void;
  ready(): boolean;
  close(): Promise<void>;
}

export interface ServeServices {
  generate?: GenerationService;
  adapterFiles: {
    removeUserAdapters(userId: string): Promise<{ files: number; bytes: number }>;
    checkVersion(row: Parameters<typeof checkVersionFiles>[2]): Promise<VersionFilesCheck>;
    removeVersion(row: { userId: string; version: number; filePath: string }): Promise<{ files: number; bytes: number }>;
    readFile(row: { userId: string; filePath: string; sha256: string }, file: keyof EncodedAdapter): Promise<Uint8Array>;
    importAdapter(userId: string, upload: UploadBody): Promise<UploadedAdapter>;
    maxImportBytes: number;
  };
  store?: AdapterStore;
  cache?: AdapterCache;
  /** Where cache misses are read (a worker thread). */
  reader?: WorkerAdapterLoader;
  /** Resolves when the model is loaded and warmed up (the engine), or with null when loading failed. */
  loaded: Promise<Engine | null>;
  /** Resolves once the cache is warmed from the last shutdown's snapshot (null: nothing to restore, or off). */
  restored(): Promise<RestoreReport | null>;
}

/**
 * The load failure as an operator should read it: ONNX Runtime's own message, and for the CUDA
 * provider missing from this install (onnxruntime-node installs without it here) what to run.
 */
export function explainLoadFailure(config: Pick<Config, 'executionProvider'>, message: string): string {
  if (config.executionProvider === 'cuda' && /Failed to load (shared )?library|providers_shared|providers_cuda/i.test(message)) {
    return `the CUDA execution provider is configured (MEMLORA_EXECUTION_PROVIDER=cuda) but not installed: on a GPU host run ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node (README, GPU hosts). ONNX Runtime: ${message}`;
  }
  return message;
}

export function servingThreads(config: Pick<Config, 'intraOpThreads'>): number {
  return config.intraOpThreads > 0 ? config.intraOpThreads : DEFAULT_SERVE_THREADS;
}

export async function createServeServices(setup: ServeSetup, opts: ServeOptions = {}): Promise<ServeServices | null> {
  const { config, db, metrics, logger } = setup;
  if (!existsSync(join(config.modelPath, 'config.json'))) {
    logger.info('no base model; /v1/generate answers 503 model_unavailable', { modelPath: config.modelPath });
    return null;
  }
  const modelName = basename(config.modelPath);
  const store = new AdapterStore(config.adapterDir, { config: readHfConfig(config.modelPath), name: modelName });
  const cache = new AdapterCache({ maxBytes: config.cacheBytes, registry: metrics });
  const reader = new WorkerAdapterLoader(config.adapterDir, { config: readHfConfig(config.modelPath), name: modelName });
  if (opts.consistency !== false) {
    const report = await checkAdapterStore(db, store, { checksums: false, minAgeMs: 60_000, ...opts.consistency });
    const fields = {
      rowsChecked: report.rowsChecked,
      rowsOk: report.rowsOk,
      temps: report.temps.length,
      orphans: report.orphans.length,
      missing: report.missing.length,
      corrupt: report.corrupt.length,
      incompatible: report.incompatible.length,
      deactivated: report.deactivated.length,
      errors: report.errors,
    };
    if (report.missing.length + report.corrupt.length + report.errors.length > 0) logger.error('adapter store repaired at start-up', fields);
    else logger.info('adapter store checked', fields);
  }

  let engine: Engine | null = null;
  let model: Model | null = null;
  /** The engine's prefix cache, once the model has loaded (null also with MEMLORA_PREFIX_CACHE_BYTES=0). */
  let prefix: PrefixCache | null = null;
  let closed = false;
  let loadError: string | null = null;
  // The cache across restarts (cache-snapshot.ts): warmed from the last shutdown's snapshot once the
  // model is loaded, saved again at close, unless the restore did not finish (the old file stays).
  const restoreOn = config.cacheRestore && opts.adapters !== false;
  const snapshotFile = snapshotPath(config.dataDir);
  const stopRestore = new AbortController();
  let restoreFinished = !restoreOn;
  let restored: Promise<RestoreReport | null> = Promise.resolve(null);
  // The prefix cache across restarts (prefix-snapshot.ts): read back before serving, saved at close
  // with the fingerprint of the model that computed it.
  const prefixFile = prefixSnapshotPath(config.dataDir);
  let prefixModel: string | null = null;
  const loaded = (async (): Promise<Engine | null> => {
    // Off the factory's path: the server listens (and answers /readyz "loading") meanwhile.
    await new Promise((r) => setImmediate(r));
    try {
      model = Model.load(config.modelPath, {
        runnerOptions: { executionProvider: config.executionProvider, intraOpThreads: servingThreads(config), maxSessions: 256 },
        constWeights: config.constWeights,
      });
      const tokenizer = loadTokenizer(config.modelPath);
      const prefixCache = config.prefixCacheBytes > 0 ? new PrefixCache({ maxBytes: config.prefixCacheBytes, shape: model.kvShape, registry: metrics, ...opts.prefixCache }) : null;
      const built = new Engine({
        model,
        tokenizer,
        db,
        adapters: opts.adapters === false ? null : { store, cache, reader },
        maxQueue: config.maxQueue,
        maxQueuePerUser: config.maxQueuePerUser,
        userDailyTokens: config.userDailyTokens,
        scheduling: config.scheduling,
        maxBatch: config.maxBatch,
        prefillChunk: config.prefillChunk,
        prefixCache,
        // Guides compile on a thread of their own (started below).
        guideThread: true,
        registry: metrics,
        logger,
        ...opts.engine,
      });
      // First requests should not pay the compiles: the plain graphs, the adapter-row graphs and the
      // prefill of one joiner through its adapter as served (all with LoRA on every layer, so these
      // five are all that serving compiles), and with prefix caching or chunked prefill (a long
      // prompt's chunks after its first extend the tokens read before) the same three prefills as
      // extend graphs (eight).
      const every = Array(model.config.nLayers).fill(true);
      const rows = { mode: 'rows' as const, layers: every };
      const served = { mode: 'single' as const, layers: every, bt: true };
      const starts = prefixCache || (opts.engine?.prefillChunk ?? config.prefillChunk) > 0 ? (['prefill', 'extend'] as const) : (['prefill'] as const);
      const specs = [
        { kind: 'decode' as const },
        { kind: 'decode' as const, lora: rows },
        ...starts.flatMap((kind) => [{ kind }, { kind, lora: rows }, { kind, lora: served }]),
      ];
      for (const spec of specs) {
        if (closed) break;
        await model.session(spec);
      }
      // Nor the first cache miss the adapter-load thread's boot (its module imports: ~150 ms), nor the
      // first request with a new guide the guide-compile thread's (both at once). Should one fail, the
      // server still starts: its first use starts a thread again and reports its own error.
      if (!closed) {
        const t0 = performance.now();
        const started = (what: string) => () => logger.info(`${what} thread started`, { ms: Math.round(performance.now() - t0) });
        await Promise.all([
          opts.adapters === false
            ? undefined
            : reader.start().then(started('adapter load'), (e: unknown) => logger.warn('adapter load thread failed to start; the first cache miss starts it again', { err: e instanceof Error ? e.message : String(e) })),
          built.startGuideThread().then(started('guide compile'), (e: unknown) => logger.warn('guide compile thread failed to start; the first new guide starts it again', { err: e instanceof Error ? e.message : String(e) })),
        ]);
      }
      if (closed) {
        await built.close(); // its guide-compile thread
        return null;
      }
      if (prefixCache && config.prefixCacheRestore) prefixModel = restorePrefixAtStart(prefixFile, prefixCache, config.modelPath, db, logger);
      else rmSync(prefixFile, { force: true }); // conversations are not kept on disk unless they will be read back
      engine = built;
      prefix = prefixCache;
      logger.info('model loaded', { modelPath: config.modelPath, family: model.config.family, layers: model.config.nLayers, threads: servingThreads(config) });
      if (prefixCache) {
        const sizing = prefixCacheSizing(prefixCache, model.config.maxPositions);
        const fields = { maxBytes: prefixCache.maxBytes, ...sizing, contextTokens: model.config.maxPositions };
        if (sizing.tooSmall) logger.warn(`prefix cache holds fewer than ${SIZING_CONVERSATIONS} conversations of a full context window on this model; raise MEMLORA_PREFIX_CACHE_BYTES to advisedBytes`, fields);
        else logger.info('prefix cache sized', fields);
      }
      if (restoreOn) {
        restored = restoreCache(snapshotFile, (ids, signal) => built.warm(ids, signal), stopRestore.signal, logger).then(
          (r) => {
            restoreFinished = r.finished;
            return r.report;
          },
          (err: unknown) => {
            logger.error('adapter cache restore failed', { err: err instanceof Error ? err.message : String(err) });
            return null;
          },
        );
      }
      return engine;
    } catch (e) {
      loadError = explainLoadFailure(config, e instanceof Error ? e.message : String(e));
      logger.error('model failed to load; /v1/generate answers 503', { modelPath: config.modelPath, err: loadError });
      return null;
    }
  })();

  const withAdapters = (): AdapterCache => {
    if (opts.adapters === false) throw new ServeError('adapters_disabled', 'this server serves without adapters');
    return cache;
  };
  const current = (): Engine => {
    if (!engine) throw new ServeError('model_unavailable', 'the model is still loading', { retryAfterS: 5 });
    return engine;
  };
  const generate: GenerationService = {
    ready: () => engine !== null && engine.ready(),
    loadError: () => loadError,
    generate: async (req, signal) => current().generate(req, signal),
    async *stream(req, signal) {
      yield* current().stream(req, signal);
    },
    score: async (req, signal) => current().score(req, signal),
    tokenize: (req) => current().tokenize(req),
    detokenize: (tokens) => current().detokenize(tokens),
    warm: async (userIds, signal) => current().warm(userIds, signal),
    // The cache exists before the model loads: an operator can read or empty it meanwhile.
    cacheContents: (limit) => cacheContents(withAdapters(), limit),
    cacheCurve: () => cacheCurve(withAdapters()),
    dropCached: (userId) => {
      const report = dropCached(withAdapters(), userId);
      logger.info('adapter cache dropped', { userId: userId ?? null, ...report.dropped });
      return report;
    },
    prefixCache: () => {
      current();
      return prefixCacheReport(prefix);
    },
    dropPrefixCache: (userId) => {
      current();
      const report = dropPrefixCache(prefix, userId);
      logger.info('prefix cache dropped', { userId: userId ?? null, ...report.dropped });
      return report;
    },
    queue: (limit) => current().queue(limit),
    heldTokens: (userId) => engine?.heldTokens(userId) ?? 0,
    forgetUser: (userId) => {
      const dropped = engine?.forgetUser(userId) ?? 0;
      if (dropped > 0) logger.info('prefix cache: user forgotten', { userId, entries: dropped });
    },
    async close() {
      closed = true;
      stopRestore.abort();
      await loaded;
      await restored;
      if (engine && restoreOn && restoreFinished) {
        try {
          const users = saveCacheSnapshot(snapshotFile, cache);
          if (users > 0) logger.info('adapter cache saved for the next start', { file: snapshotFile, users });
        } catch (err) {
          logger.error('adapter cache snapshot not saved', { file: snapshotFile, err: err instanceof Error ? err.message : String(err) });
        }
      }
      await engine?.close();
      if (prefix && prefixModel) savePrefixAtClose(prefixFile, prefix, prefixModel, logger);
      await (model as Model | null)?.close();
      await reader.close();
    },
  };
  return {
    generate,
    store,
    cache,
    reader,
    loaded,
    restored: async () => {
      await loaded;
      return restored;
    },
    adapterFiles: {
      async removeUserAdapters(userId: string) {
        // Forget cached versions before and after: a load racing the removal must not stay cached.
        cache.invalidateUser(userId);
        const removed = await store.removeUser(userId);
        cache.invalidateUser(userId);
        return removed;
      },
      async removeVersion(row) {
        cache.invalidate(adapterKey(row.userId, row.version));
        // Nothing is removed when the files are gone already (a repeated delete, a quarantined version).
        return store.remove(row.filePath, row.userId);
      },
      async checkVersion(row) {
        const checked = await checkVersionFiles(db, store, row);
        // A version taken out of service must not be served from the cache either.
        if (!checked.ok && checked.takenOutAs) cache.invalidate(adapterKey(row.userId, row.version));
        return checked;
      },
      readFile: (row, file) => store.readFile(row.filePath, file, row.sha256, { userId: row.userId }),
      // Read apart, checked, encoded and written on the load thread, not the serving thread.
      importAdapter: (userId, upload) => reader.upload(userId, upload),
      maxImportBytes: maxAdapterWeightsBytes(store.model.config),
    },
  };
}
