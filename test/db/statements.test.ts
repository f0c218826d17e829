/** Statements prepared once per connection: reused, per connection, and always reading current rows. */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openDb } from '../../src/db/client.js';
import { activateAdapterVersion, createAdapterVersion, getActiveAdapter } from '../../src/db/queries/adapters.js';
import { createUser, userExists } from '../../src/db/queries/users.js';
import { preparedQuery, statement } from '../../src/db/statements.js';
import { tempDb } from './helpers.js';

let t: ReturnType<typeof tempDb>;
beforeEach(() => {
  t = tempDb();
});
afterEach(() => t.cleanup());

describe('prepared statements', () => {
  it('prepares a statement once per connection and SQL text', () => {
    const q = 'SELECT 1 FROM users WHERE id = ?';
    const s = statement(t.db, q);
    expect(statement(t.db, q)).toBe(s);
    expect(statement(t.db, 'SELECT 2')).not.toBe(s);
    const other = openDb(t.file);
    try {
      expect(statement(other, q)).not.toBe(s);
    } finally {
      other.close();
    }
    let made = 0;
    const make = () => ({ n: ++made });
    expect(preparedQuery(t.db, 'k', make)).toBe(preparedQuery(t.db, 'k', make));
    expect(made).toBe(1);
  });

  it('sees rows written after it was prepared, also through another connection (another process activating a version)', () => {
    expect(userExists(t.db, 'alice')).toBe(false);
    expect(getActiveAdapter(t.db, 'alice')).toBeUndefined();
    createUser(t.db, { id: 'alice' });
    expect(userExists(t.db, 'alice')).toBe(true);
    const v = { userId: 'alice', config: { rank: 8 }, filePath: 'f', sha256: 'a'.repeat(64), metrics: {}, status: 'ready', activate: true };
    createAdapterVersion(t.db, v);
    expect(getActiveAdapter(t.db, 'alice')?.version).toBe(1);
    const other = openDb(t.file);
    try {
      createAdapterVersion(other, v);
      expect(getActiveAdapter(t.db, 'alice')?.version).toBe(2);
      activateAdapterVersion(other, 'alice', null);
      expect(getActiveAdapter(t.db, 'alice')).toBeUndefined();
    } finally {
      other.close();
    }
  });
});
