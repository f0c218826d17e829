import { afterEach, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { MIGRATIONS_DIR, openDb } from '../../src/db/client.js';
import { tempDb } from './helpers.js';

let t: ReturnType<typeof tempDb> | undefined;
afterEach(() => {
  t?.cleanup();
  t = undefined;
});

const insertUser = (db: ReturnType<typeof tempDb>['db'], id: string) =>
  db.sqlite.prepare('INSERT INTO users (id, created_at, updated_at) VALUES (?, 1, 1)').run(id);

describe('openDb', () => {
  it('sets WAL, foreign keys, busy timeout and NORMAL sync', () => {
    t = tempDb();
    const { sqlite } = t.db;
    expect(sqlite.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(sqlite.pragma('foreign_keys', { simple: true })).toBe(1);
    expect(sqlite.pragma('busy_timeout', { simple: true })).toBe(5000);
    expect(sqlite.pragma('synchronous', { simple: true })).toBe(1); // 1 = NORMAL
  });

  it('applies every migration in the journal, once, and reopening is a no-op', () => {
    t = tempDb();
    const journal = JSON.parse(readFileSync(join(MIGRATIONS_DIR, 'meta', '_journal.json'), 'utf8')) as { entries: unknown[] };
    const applied = () => (t!.db.sqlite.prepare('SELECT count(*) AS n FROM __drizzle_migrations').get() as { n: number }).n;
    expect(applied()).toBe(journal.entries.length);
    t.reopen();
    expect(applied()).toBe(journal.entries.length);
    const names = (t.db.sqlite.prepare("SELECT name FROM sqlite_master WHERE type IN ('table','trigger')").all() as Array<{ name: string }>).map((r) => r.name);
    for (const n of ['users', 'history_items', 'injection_jobs', 'trials', 'adapter_versions', 'history_fts', 'history_items_fts_ai', 'history_items_fts_ad', 'history_items_fts_au']) {
      expect(names).toContain(n);
    }
  });

  it('keeps data across close and reopen', () => {
    t = tempDb();
    insertUser(t.db, 'alice');
    t.reopen();
    expect(t.db.sqlite.prepare('SELECT id FROM users').all()).toEqual([{ id: 'alice' }]);
  });

  it('opens an in-memory database', () => {
    const db = openDb(':memory:');
    insertUser({ ...db } as never, 'x');
    expect(db.sqlite.prepare('SELECT count(*) AS n FROM users').get()).toEqual({ n: 1 });
    db.close();
  });

  it('fails with a coded error when the file cannot be opened', () => {
    const temp = (t = tempDb());
    // A directory path below a regular file can never be created.
    expect(() => openDb(join(temp.file, 'sub', 'memlora.db'))).toThrow(expect.objectContaining({ code: 'db_open_failed' }));
  });
});

describe('constraints', () => {
  it('rejects unknown kinds, roles, states and active flags', () => {
    t = tempDb();
    const { sqlite } = t.db;
    insertUser(t.db, 'u');
    expect(() => sqlite.prepare("INSERT INTO history_items (user_id, kind, text, created_at) VALUES ('u', 'diary', 'x', 1)").run()).toThrow(/CHECK/);
    expect(() => sqlite.prepare("INSERT INTO history_items (user_id, kind, role, text, created_at) VALUES ('u', 'post', 'bot', 'x', 1)").run()).toThrow(/CHECK/);
    expect(() => sqlite.prepare("INSERT INTO injection_jobs (id, user_id, state, params, created_at, updated_at) VALUES ('j', 'u', 'paused', '{}', 1, 1)").run()).toThrow(/CHECK/);
    expect(() =>
      sqlite.prepare("INSERT INTO adapter_versions (user_id, version, config, file_path, sha256, metrics, status, active, created_at) VALUES ('u', 1, '{}', 'f', 's', '{}', 'ready', 2, 1)").run(),
    ).toThrow(/CHECK/);
  });

  it('allows one active job per user but any number of finished ones', () => {
    t = tempDb();
    const { sqlite } = t.db;
    insertUser(t.db, 'u');
    const job = sqlite.prepare("INSERT INTO injection_jobs (id, user_id, state, params, created_at, updated_at) VALUES (?, 'u', ?, '{}', 1, 1)");
    job.run('j1', 'queued');
    expect(() => job.run('j2', 'running')).toThrow(/UNIQUE/);
    job.run('j3', 'succeeded');
    job.run('j4', 'failed');
    sqlite.prepare("UPDATE injection_jobs SET state = 'cancelled' WHERE id = 'j1'").run();
    job.run('j5', 'running');
  });

  it('allows one active adapter version per user', () => {
    t = tempDb();
    const { sqlite } = t.db;
    insertUser(t.db, 'u');
    const v = sqlite.prepare("INSERT INTO adapter_versions (user_id, version, config, file_path, sha256, metrics, status, active, created_at) VALUES ('u', ?, '{}', 'f', 's', '{}', 'ready', ?, 1)");
    v.run(1, 1);
    v.run(2, 0);
    expect(() => v.run(3, 1)).toThrow(/UNIQUE/);
    expect(() => v.run(2, 0)).toThrow(/UNIQUE/);
  });

  it('cascades a user delete to every owned row and keeps the FTS index consistent', () => {
    t = tempDb();
    const { sqlite } = t.db;
    insertUser(t.db, 'u');
    insertUser(t.db, 'keep');
    sqlite.prepare("INSERT INTO history_items (user_id, kind, text, created_at) VALUES ('u', 'post', 'zebra crossing', 1)").run();
    sqlite.prepare("INSERT INTO history_items (user_id, kind, text, created_at) VALUES ('keep', 'post', 'zebra stripes', 1)").run();
    sqlite.prepare("INSERT INTO injection_jobs (id, user_id, state, params, created_at, updated_at) VALUES ('j', 'u', 'queued', '{}', 1, 1)").run();
    sqlite.prepare("INSERT INTO trials (job_id, user_id, idx, config, status, created_at) VALUES ('j', 'u', 0, '{}', 'done', 1)").run();
    sqlite.prepare("DELETE FROM users WHERE id = 'u'").run();
    for (const table of ['history_items', 'injection_jobs', 'trials']) {
      expect(sqlite.prepare(`SELECT count(*) AS n FROM ${table} WHERE user_id = 'u'`).get()).toEqual({ n: 0 });
    }
    const hits = sqlite.prepare("SELECT rowid FROM history_fts WHERE history_fts MATCH 'zebra'").all();
    expect(hits).toHaveLength(1);
    sqlite.prepare("INSERT INTO history_fts(history_fts) VALUES ('integrity-check')").run();
  });

  it('re-indexes updated text', () => {
    t = tempDb();
    const { sqlite } = t.db;
    insertUser(t.db, 'u');
    sqlite.prepare("INSERT INTO history_items (user_id, kind, text, created_at) VALUES ('u', 'post', 'old words', 1)").run();
    sqlite.prepare("UPDATE history_items SET text = 'new words'").run();
    const match = (q: string) => sqlite.prepare('SELECT rowid FROM history_fts WHERE history_fts MATCH ?').all(q).length;
    expect(match('old')).toBe(0);
    expect(match('new')).toBe(1);
    sqlite.prepare("INSERT INTO history_fts(history_fts) VALUES ('integrity-check')").run();
  });
});
