import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openDb } from '../../src/db/client.js';
import { createAdapterVersion, getActiveAdapter, getAdapterVersion, listAdapterVersions, setAdapterStatus } from '../../src/db/queries/adapters.js';
import { createUser } from '../../src/db/queries/users.js';
import { ADAPTER_STATUS, checkAdapterStore, checkVersionFiles, markAdapterBad } from '../../src/lora/consistency.js';
import { ADAPTER_WEIGHTS_FILE } from '../../src/lora/format.js';
import { userDirName } from '../../src/lora/paths.js';
import { AdapterStore } from '../../src/lora/store.js';
import { tempDb } from '../db/helpers.js';
import { defaultShape, gpt2Tiny, modelOf, trainedAdapter } from './fixtures/models.js';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, '..', '..');
const spec = { layers: [true, false, true], n: 1, r: 8 as const };

let t: ReturnType<typeof tempDb>;
let root: string;
let store: AdapterStore;

beforeEach(() => {
  t = tempDb();
  root = join(t.dir, 'adapters');
  store = new AdapterStore(root, modelOf(gpt2Tiny));
  for (const id of ['alice', 'bob', 'carol']) createUser(t.db, { id });
});
afterEach(() => t.cleanup());

/** Write an adapter and commit its row, as the job runner does. */
async function commit(userId: string, activate = true, seed = 1) {
  const w = await store.write(userId, trainedAdapter(spec, gpt2Tiny, seed));
  const row = createAdapterVersion(t.db, { userId, config: { ...spec }, filePath: w.path, sha256: w.sha256, metrics: {}, status: ADAPTER_STATUS.ready, activate });
  return { ...w, row };
}

const abs = (p: string): string => join(root, ...p.split('/'));

describe('checkAdapterStore', () => {
  it('a healthy store is left exactly as it is', async () => {
    const a = await commit('alice');
    const b = await commit('bob');
    const report = await checkAdapterStore(t.db, store);
    expect(report).toMatchObject({ rowsChecked: 2, rowsOk: 2, temps: [], orphans: [], missing: [], corrupt: [], deactivated: [], errors: [] });
    expect(getActiveAdapter(t.db, 'alice')?.filePath).toBe(a.path);
    expect(getActiveAdapter(t.db, 'bob')?.filePath).toBe(b.path);
  });

  it('removes temp leftovers and orphans (a directory no row names)', async () => {
    const kept = await commit('alice');
    const orphan = await store.write('alice', trainedAdapter(spec, gpt2Tiny, 9)); // died before the db commit
    const tmpInUser = join(root, userDirName('alice'), '.tmp-0b9c2f3e-8a44-4c55-9d1a-3f1e2b7c6d5e');
    mkdirSync(tmpInUser);
    writeFileSync(join(tmpInUser, ADAPTER_WEIGHTS_FILE), 'half a file');
    mkdirSync(join(root, '.tmp-1b9c2f3e-8a44-4c55-9d1a-3f1e2b7c6d5e'));
    const report = await checkAdapterStore(t.db, store);
    expect(report.orphans).toEqual([orphan.path]);
    expect(report.temps).toHaveLength(2);
    expect(existsSync(abs(orphan.path))).toBe(false);
    expect(existsSync(tmpInUser)).toBe(false);
    expect((await store.scan()).adapters.map((a) => a.path)).toEqual([kept.path]);
    expect(report.rowsOk).toBe(1);
  });

  it('a row whose files are missing becomes `missing` and inactive; the user falls back', async () => {
    const old = await commit('alice', false);
    const gone = await commit('alice', true, 2);
    rmSync(abs(gone.path), { recursive: true });
    const report = await checkAdapterStore(t.db, store);
    expect(report.missing).toMatchObject([{ userId: 'alice', version: gone.row.version, path: gone.path }]);
    expect(report.deactivated).toEqual([{ userId: 'alice', version: gone.row.version }]);
    expect(getAdapterVersion(t.db, 'alice', gone.row.version)).toMatchObject({ status: 'missing', active: 0 });
    expect(getActiveAdapter(t.db, 'alice')).toBeUndefined();
    expect(getAdapterVersion(t.db, 'alice', old.row.version)?.status).toBe('ready');
  });

  it('a corrupt file is quarantined with its reason, its row `quarantined` and inactive; other users untouched', async () => {
    const bad = await commit('alice');
    const good = await commit('bob');
    const file = join(abs(bad.path), ADAPTER_WEIGHTS_FILE);
    const bytes = readFileSync(file);
    bytes[bytes.length - 1] ^= 1;
    writeFileSync(file, bytes);
    const report = await checkAdapterStore(t.db, store);
    expect(report.corrupt).toHaveLength(1);
    expect(report.corrupt[0]).toMatchObject({ userId: 'alice', version: 1, quarantinedTo: `${userDirName('alice')}/quarantine/${bad.path.split('/')[1]}` });
    expect(report.corrupt[0].reason).toMatch(/sha256/);
    expect(getAdapterVersion(t.db, 'alice', 1)).toMatchObject({ status: 'quarantined', active: 0 });
    expect(existsSync(abs(bad.path))).toBe(false);
    const note = JSON.parse(readFileSync(join(abs(report.corrupt[0].quarantinedTo!), 'quarantine.json'), 'utf8'));
    expect(note.reason).toMatch(/sha256/);
    expect(getActiveAdapter(t.db, 'bob')?.filePath).toBe(good.path);
    // the quarantined copy is not an orphan, and a second run finds nothing to do
    const again = await checkAdapterStore(t.db, store);
    expect(again).toMatchObject({ rowsChecked: 1, rowsOk: 1, orphans: [], corrupt: [], missing: [], temps: [], deactivated: [] });
  });

  it('repair: false reports the same findings and changes nothing', async () => {
    const bad = await commit('alice');
    const gone = await commit('bob');
    const orphan = await store.write('carol', trainedAdapter(spec, gpt2Tiny));
    writeFileSync(join(abs(bad.path), ADAPTER_WEIGHTS_FILE), 'garbage');
    rmSync(abs(gone.path), { recursive: true });
    mkdirSync(join(root, '.tmp-1b9c2f3e-8a44-4c55-9d1a-3f1e2b7c6d5e'));
    const report = await checkAdapterStore(t.db, store, { repair: false });
    expect(report.repaired).toBe(false);
    expect(report.corrupt.map((c) => c.path)).toEqual([bad.path]);
    expect(report.missing.map((c) => c.path)).toEqual([gone.path]);
    expect(report.orphans).toEqual([orphan.path]);
    expect(report.temps).toHaveLength(1);
    expect(listAdapterVersions(t.db, 'alice')[0]).toMatchObject({ status: 'ready', active: 1 });
    expect(listAdapterVersions(t.db, 'bob')[0]).toMatchObject({ status: 'ready', active: 1 });
    expect(existsSync(abs(bad.path)) && existsSync(abs(orphan.path))).toBe(true);
    expect((await store.scan()).temps).toHaveLength(1);
  });

  it('a deleted version whose files a crash left behind: its directory is collected as an orphan, its row kept', async () => {
    const a = await commit('alice', false);
    setAdapterStatus(t.db, 'alice', a.row.version, ADAPTER_STATUS.deleted); // the row marked, then death before the removal
    const report = await checkAdapterStore(t.db, store);
    expect(report.orphans).toEqual([a.path]);
    expect(report.rowsChecked).toBe(0); // a deleted row is never loaded or checked
    expect(existsSync(abs(a.path))).toBe(false);
    expect(getAdapterVersion(t.db, 'alice', a.row.version)?.status).toBe('deleted');
  });

  it('adapters of another base model are reported as incompatible and left alone', async () => {
    const w = await commit('alice');
    const other = new AdapterStore(root, modelOf({ ...gpt2Tiny, dFf: 48 }));
    const report = await checkAdapterStore(t.db, other);
    expect(report.incompatible.map((r) => r.path)).toEqual([w.path]);
    expect(report.corrupt).toEqual([]);
    expect(getActiveAdapter(t.db, 'alice')).toMatchObject({ status: 'ready', active: 1 });
    expect(existsSync(abs(w.path))).toBe(true);
  });

  it('checksums: false only checks presence and structure (reads still verify on first load)', async () => {
    const a = await commit('alice');
    const gone = await commit('bob');
    const file = join(abs(a.path), ADAPTER_WEIGHTS_FILE);
    const bytes = readFileSync(file);
    bytes[bytes.length - 1] ^= 1; // inside a tensor: structure intact
    writeFileSync(file, bytes);
    rmSync(abs(gone.path), { recursive: true });
    const quick = await checkAdapterStore(t.db, store, { checksums: false });
    expect(quick.rowsOk).toBe(1);
    expect(quick.missing.map((m) => m.userId)).toEqual(['bob']);
    const full = await checkAdapterStore(t.db, store);
    expect(full.corrupt.map((c) => c.userId)).toEqual(['alice']);
  });

  it('minAgeMs spares entries a live writer may still own', async () => {
    await store.write('alice', trainedAdapter(spec, gpt2Tiny));
    const report = await checkAdapterStore(t.db, store, { minAgeMs: 60_000 });
    expect(report.orphans).toEqual([]);
    expect((await store.scan()).adapters).toHaveLength(1);
  });

  it('markAdapterBad (the serving path) deactivates and marks in one go; dead rows never stay active', async () => {
    const a = await commit('alice');
    const moved = await markAdapterBad(t.db, store, a.row, 'quarantined', 'load failed: adapter_corrupt');
    expect(moved).toMatch(/quarantine/);
    expect(getAdapterVersion(t.db, 'alice', 1)).toMatchObject({ status: 'quarantined', active: 0 });
    // a dead row that is somehow still active (older tooling) is deactivated by the check
    const b = await commit('bob');
    t.db.sqlite.prepare('update adapter_versions set status = ? where user_id = ?').run('missing', 'bob');
    const report = await checkAdapterStore(t.db, store);
    expect(report.deactivated).toEqual([{ userId: 'bob', version: b.row.version }]);
    expect(getActiveAdapter(t.db, 'bob')).toBeUndefined();
  });

  it('markAdapterBad leaves a version an operator deleted as deleted, and its files where they are', async () => {
    const a = await commit('alice', false);
    setAdapterStatus(t.db, 'alice', a.row.version, ADAPTER_STATUS.deleted);
    // A load that had planned it before the deletion found its files gone, or bad half-way through the removal.
    expect(await markAdapterBad(t.db, store, a.row, 'missing', 'load failed: adapter_missing')).toBeUndefined();
    expect(await markAdapterBad(t.db, store, a.row, 'quarantined', 'load failed: adapter_corrupt')).toBeUndefined();
    expect(getAdapterVersion(t.db, 'alice', a.row.version)).toMatchObject({ status: 'deleted', active: 0 });
    expect(existsSync(abs(a.path))).toBe(true); // nothing moved to quarantine: the deletion removes them
    // A user erased meanwhile (rows gone, files being removed): leftovers are not kept in quarantine.
    const b = await commit('bob');
    t.db.sqlite.prepare('delete from adapter_versions where user_id = ?').run('bob');
    expect(await markAdapterBad(t.db, store, b.row, 'quarantined', 'load failed: adapter_corrupt')).toBeUndefined();
    expect(existsSync(abs(b.path))).toBe(true);
  });
});

describe('checkVersionFiles (before an operator activates a version)', () => {
  it('good files pass, even with verification off in the store, and nothing changes', async () => {
    const a = await commit('alice', false);
    const lax = new AdapterStore(root, modelOf(gpt2Tiny), { verify: 'never' });
    expect(await checkVersionFiles(t.db, lax, a.row)).toEqual({ ok: true });
    expect(getAdapterVersion(t.db, 'alice', 1)).toMatchObject({ status: 'ready', active: 0 });
  });

  it('a flipped weight byte is caught by the checksum, hashed whatever the store\'s verify mode: quarantined', async () => {
    const a = await commit('alice', false);
    const file = join(abs(a.path), ADAPTER_WEIGHTS_FILE);
    const bytes = readFileSync(file);
    bytes[bytes.length - 1] ^= 0x55;
    writeFileSync(file, bytes);
    const lax = new AdapterStore(root, modelOf(gpt2Tiny), { verify: 'never' });
    await lax.read(a.path, a.sha256, { userId: 'alice' }); // the store alone does not see it: a float changed
    const checked = await checkVersionFiles(t.db, lax, a.row);
    expect(checked).toMatchObject({ ok: false, code: 'adapter_corrupt', takenOutAs: 'quarantined' });
    expect(getAdapterVersion(t.db, 'alice', 1)?.status).toBe('quarantined');
    expect(existsSync(abs(a.path))).toBe(false);
  });

  it('gone files: marked missing, and deactivated if the version was active', async () => {
    const a = await commit('alice', true);
    rmSync(abs(a.path), { recursive: true });
    expect(await checkVersionFiles(t.db, store, a.row)).toMatchObject({ ok: false, code: 'adapter_missing', takenOutAs: 'missing' });
    expect(getAdapterVersion(t.db, 'alice', 1)).toMatchObject({ status: 'missing', active: 0 });
  });

  it('an adapter of another base model is refused and left alone', async () => {
    const a = await commit('alice', false);
    const other = new AdapterStore(root, modelOf({ ...gpt2Tiny, dFf: 48 }));
    expect(await checkVersionFiles(t.db, other, a.row)).toMatchObject({ ok: false, code: 'adapter_model_mismatch', takenOutAs: null });
    expect(getAdapterVersion(t.db, 'alice', 1)?.status).toBe('ready');
    expect(existsSync(abs(a.path))).toBe(true);
  });
});

describe('crash safety', () => {
  /** Runs the writer child until `until` says when to kill it with SIGKILL. */
  async function runAndKill(dbFile: string, storeRoot: string, until: (line: string, kill: () => void) => void): Promise<string[]> {
    const child = spawn(process.execPath, ['--import', 'tsx', join(here, 'fixtures', 'write-loop.ts'), storeRoot, dbFile], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const lines: string[] = [];
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += String(d)));
    let buf = '';
    const kill = (): void => {
      child.kill('SIGKILL');
    };
    child.stdout.on('data', (d) => {
      buf += String(d);
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        lines.push(line);
        until(line, kill);
      }
    });
    const [code, signal] = await new Promise<[number | null, string | null]>((res) => child.on('exit', (c, s) => res([c, s])));
    if (signal !== 'SIGKILL') throw new Error(`writer exited with ${code}/${signal}: ${stderr}`);
    return lines;
  }

  /** Poll (without blocking the event loop) until a new temp dir appears in the user's directory, then kill. */
  function killWhenTempAppears(userDir: string, kill: () => void): void {
    const deadline = Date.now() + 10_000;
    const before = new Set(existsSync(userDir) ? readdirSync(userDir) : []);
    const poll = (): void => {
      const inFlight = existsSync(userDir) && readdirSync(userDir).some((n) => n.startsWith('.tmp-') && !before.has(n));
      if (inFlight || Date.now() > deadline) kill();
      else setImmediate(poll);
    };
    poll();
  }

  it('SIGKILL in the middle of writes leaves no visible half-written adapter, and the check repairs the rest', async () => {
    const storeRoot = join(t.dir, 'crash-adapters');
    const dbFile = join(t.dir, 'crash.db');
    const big = new AdapterStore(storeRoot, modelOf(defaultShape), { verify: 'always' });
    const userDir = join(storeRoot, userDirName('crash-user'));
    const temps = new Set<string>();
    const orphans = new Set<string>();

    const inspect = async (): Promise<void> => {
      const db = openDb(dbFile);
      try {
        const rows = listAdapterVersions(db, 'crash-user');
        const byPath = new Map(rows.map((r) => [r.filePath, r]));
        const scan = await big.scan();
        for (const tmp of scan.temps) temps.add(tmp.path);
        for (const a of scan.adapters) {
          const row = byPath.get(a.path);
          // every visible adapter is complete: with a row it verifies, without one (orphan) it decodes
          if (row) await big.read(a.path, row.sha256);
          else {
            orphans.add(a.path);
            await big.read(a.path, '0'.repeat(64), { verify: 'never' });
          }
        }
        for (const r of rows) expect(scan.adapters.map((a) => a.path)).toContain(r.filePath);
      } finally {
        db.close();
      }
    };

    // 1. killed between the rename and the db commit: an orphan
    await runAndKill(dbFile, storeRoot, (line, kill) => {
      if (line.startsWith('wrote 1 ')) kill();
    });
    await inspect();
    expect(orphans.size).toBe(1);
    // 2, 3. killed while the temp directory is being filled
    for (let round = 0; round < 2; round++) {
      let armed = false;
      await runAndKill(dbFile, storeRoot, (line, kill) => {
        if (line.startsWith('committed')) armed = true;
        else if (armed && line.startsWith('begin')) killWhenTempAppears(userDir, kill);
      });
      await inspect();
    }
    expect(temps.size).toBeGreaterThanOrEqual(1); // at least one kill landed mid-write

    const db = openDb(dbFile);
    try {
      const report = await checkAdapterStore(db, big);
      expect(report.orphans.sort()).toEqual([...orphans].sort());
      expect(report.temps.sort()).toEqual([...temps].sort());
      expect(report.corrupt).toEqual([]);
      expect(report.missing).toEqual([]);
      const rows = listAdapterVersions(db, 'crash-user');
      expect(report.rowsOk).toBe(rows.length);
      const scan = await big.scan();
      expect(scan.temps).toEqual([]);
      expect(scan.adapters.map((a) => a.path).sort()).toEqual(rows.map((r) => r.filePath).sort());
      expect(getActiveAdapter(db, 'crash-user')?.version).toBe(Math.max(...rows.map((r) => r.version)));
      const clean = await checkAdapterStore(db, big);
      expect(clean).toMatchObject({ orphans: [], temps: [], corrupt: [], missing: [] });
    } finally {
      db.close();
    }
  });
});
