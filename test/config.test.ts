import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, ENV_VARS, formatConfigError, loadConfig, parseBytes, repoRoot } from '../src/config.js';

describe('loadConfig', () => {
  it('has the documented defaults', () => {
    expect(loadConfig({}, '/srv/app')).toEqual({
      port: 8080,
      host: '127.0.0.1',
      dataDir: '/srv/app/data',
      dbFile: '/srv/app/data/memlora.db',
      adapterDir: '/srv/app/adapters',
      cacheBytes: 256 * 1024 * 1024,
      prefixCacheBytes: 64 * 1024 * 1024,
      cacheRestore: true,
      prefixCacheRestore: true,
      adminToken: null,
      apiKey: null,
      modelPath: join(repoRoot, 'models', 'default'),
      executionProvider: 'cpu',
      intraOpThreads: 0,
      constWeights: 'auto',
      jobConcurrency: 1,
      maxQueue: 256,
      maxQueuePerUser: 64,
      userDailyTokens: 0,
      responsesRetentionDays: 30,
      scheduling: 'fair',
      maxBatch: 8,
      prefillChunk: 128,
      bodyLimitBytes: 1024 * 1024,
      sharedDir: resolve(repoRoot, '..', 'shared'),
    });
  });

  it('reads every variable, resolving relative paths against the working directory', () => {
    const c = loadConfig(
      {
        MEMLORA_PORT: '9000',
        MEMLORA_HOST: '0.0.0.0',
        MEMLORA_DATA_DIR: 'var/db',
        MEMLORA_ADAPTER_DIR: '/abs/adapters',
        MEMLORA_CACHE_BYTES: '1.5GiB',
        MEMLORA_PREFIX_CACHE_BYTES: '0',
        MEMLORA_CACHE_RESTORE: 'off',
        MEMLORA_PREFIX_CACHE_RESTORE: 'off',
        MEMLORA_ADMIN_TOKEN: 'sixteen-chars-ok',
        MEMLORA_API_KEY: 'client-key-0123456789',
        MEMLORA_MODEL_PATH: 'models/tiny',
        MEMLORA_EXECUTION_PROVIDER: 'cuda',
        MEMLORA_INTRA_OP_THREADS: '4',
        MEMLORA_CONST_WEIGHTS: 'on',
        MEMLORA_JOB_CONCURRENCY: '2',
        MEMLORA_MAX_QUEUE: '10',
        MEMLORA_MAX_QUEUE_PER_USER: '3',
        MEMLORA_RESPONSES_RETENTION_DAYS: '0',
        MEMLORA_SCHEDULING: 'fifo',
        MEMLORA_MAX_BATCH: '16',
        MEMLORA_PREFILL_CHUNK: '0',
        MEMLORA_BODY_LIMIT_BYTES: '65536',
        MEMLORA_SHARED_DIR: '/data/shared',
      },
      '/w',
    );
    expect(c).toMatchObject({
      port: 9000,
      host: '0.0.0.0',
      dataDir: '/w/var/db',
      dbFile: '/w/var/db/memlora.db',
      adapterDir: '/abs/adapters',
      cacheBytes: 1.5 * 1024 ** 3,
      prefixCacheBytes: 0,
      cacheRestore: false,
      prefixCacheRestore: false,
      adminToken: 'sixteen-chars-ok',
      apiKey: 'client-key-0123456789',
      modelPath: '/w/models/tiny',
      executionProvider: 'cuda',
      intraOpThreads: 4,
      constWeights: 'on',
      jobConcurrency: 2,
      maxQueue: 10,
      responsesRetentionDays: 0,
      maxQueuePerUser: 3,
      scheduling: 'fifo',
      maxBatch: 16,
      prefillChunk: 0,
      bodyLimitBytes: 65536,
      sharedDir: '/data/shared',
    });
  });

  it('treats empty values as unset', () => {
    expect(loadConfig({ MEMLORA_PORT: '', MEMLORA_ADMIN_TOKEN: '' }, '/x')).toMatchObject({ port: 8080, adminToken: null });
  });

  it('parses byte sizes', () => {
    expect(parseBytes('1048576')).toBe(1048576);
    expect(parseBytes('256MiB')).toBe(268435456);
    expect(parseBytes('1 GB')).toBe(1e9);
    expect(parseBytes('2k')).toBe(2048);
    expect(parseBytes('12 parsecs')).toBeNaN();
    expect(parseBytes('-1')).toBeNaN();
  });

  it('names every bad variable, its value and the rule', () => {
    let err: unknown;
    try {
      loadConfig({
        MEMLORA_PORT: 'eighty',
        MEMLORA_CACHE_BYTES: 'lots',
        MEMLORA_ADMIN_TOKEN: 'short',
        MEMLORA_API_KEY: 'a key with spaces in it',
        MEMLORA_EXECUTION_PROVIDER: 'tpu',
        MEMLORA_MAX_BATCH: '0',
        MEMLORA_PREFILL_CHUNK: '-1',
        MEMLORA_BODY_LIMIT_BYTES: '10',
        MEMLORA_CONST_WEIGHTS: 'yes',
        MEMLORA_CACHE_RESTORE: 'true',
        MEMLORA_PREFIX_CACHE_RESTORE: 'no',
        MEMLORA_MAX_QUEUE_PER_USER: '0',
        MEMLORA_SCHEDULING: 'round-robin',
      });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const issues = (err as ConfigError).issues;
    expect(issues.map((i) => i.variable).sort()).toEqual(
      ['MEMLORA_ADMIN_TOKEN', 'MEMLORA_API_KEY', 'MEMLORA_BODY_LIMIT_BYTES', 'MEMLORA_CACHE_BYTES', 'MEMLORA_CACHE_RESTORE', 'MEMLORA_CONST_WEIGHTS', 'MEMLORA_EXECUTION_PROVIDER', 'MEMLORA_MAX_BATCH', 'MEMLORA_MAX_QUEUE_PER_USER', 'MEMLORA_PORT', 'MEMLORA_PREFILL_CHUNK', 'MEMLORA_PREFIX_CACHE_RESTORE', 'MEMLORA_SCHEDULING'],
    );
    const text = formatConfigError(err);
    expect(text).toContain('memlora: invalid configuration');
    expect(text).toContain('MEMLORA_PORT must be an integer (got "eighty")');
    expect(text).toContain('MEMLORA_EXECUTION_PROVIDER must be "cpu" or "cuda" (got "tpu")');
    expect(text).toContain('MEMLORA_CONST_WEIGHTS must be "auto", "on" or "off" (got "yes")');
    expect(text).toContain('MEMLORA_CACHE_RESTORE must be "on" or "off" (got "true")');
    expect(text).toContain('MEMLORA_PREFIX_CACHE_RESTORE must be "on" or "off" (got "no")');
    expect(text).toContain('MEMLORA_SCHEDULING must be "fair" or "fifo" (got "round-robin")');
    expect(text).toContain('MEMLORA_ADMIN_TOKEN must be at least 16 characters');
    expect(text).toContain('MEMLORA_API_KEY must be printable ASCII without spaces');
    // The token and the key are secrets, even bad ones.
    expect(text).not.toContain('short');
    expect(text).not.toContain('with spaces in it');
    expect(text).not.toMatch(/\n\s+at /);
  });

  it('rejects out-of-range ports', () => {
    expect(() => loadConfig({ MEMLORA_PORT: '70000' })).toThrow(ConfigError);
    expect(() => loadConfig({ MEMLORA_PORT: '-1' })).toThrow(ConfigError);
  });
});

describe('README', () => {
  it('documents every environment variable in the Configuration table', () => {
    const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
    const section = readme.split('## Configuration')[1]?.split('\n## ')[0] ?? '';
    for (const v of ENV_VARS) expect(section, v.name).toContain(`\`${v.name}\``);
  });
});

describe('memlora serve with a bad configuration', () => {
  it('exits with code 2 and a clear message, no stack trace', () => {
    const child = spawnSync(process.execPath, ['--import', 'tsx', join(repoRoot, 'src', 'cli.ts'), 'serve'], {
      cwd: repoRoot,
      env: { PATH: process.env.PATH, MEMLORA_PORT: 'not-a-port', MEMLORA_EXECUTION_PROVIDER: 'gpu' },
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(child.status).toBe(2);
    expect(child.stderr).toContain('memlora: invalid configuration');
    expect(child.stderr).toContain('MEMLORA_PORT must be an integer (got "not-a-port")');
    expect(child.stderr).toContain('MEMLORA_EXECUTION_PROVIDER');
    expect(child.stderr).not.toMatch(/^\s+at /m);
    expect(child.stdout).toBe('');
  });
});
