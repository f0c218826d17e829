/** A migrated SQLite file in a fresh temp directory. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDb, type Db } from '../../src/db/client.js';

export function tempDb(): { db: Db; file: string; dir: string; reopen(): Db; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'memlora-db-'));
  const file = join(dir, 'memlora.db');
  const t = {
    db: openDb(file),
    file,
    dir,
    reopen() {
      t.db.close();
      t.db = openDb(file);
      return t.db;
    },
    cleanup() {
      t.db.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return t;
}
