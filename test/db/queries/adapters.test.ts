import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  activateAdapterVersion,
  createAdapterVersion,
  getActiveAdapter,
  getAdapterVersion,
  listAdapterVersions,
  setAdapterStatus,
} from '../../../src/db/queries/adapters.js';
import { createUser } from '../../../src/db/queries/users.js';
import { tempDb } from '../helpers.js';

let t: ReturnType<typeof tempDb>;
beforeEach(() => {
  t = tempDb();
  createUser(t.db, { id: 'alice' });
  createUser(t.db, { id: 'bob' });
});
afterEach(() => t.cleanup());

const v = (userId: string, activate = false) => ({ userId, config: { rank: 8 }, filePath: 'f', sha256: 'a'.repeat(64), metrics: { valLoss: 1 }, status: 'ready', activate });

describe('adapter versions', () => {
  it('numbers versions per user from 1', () => {
    expect(createAdapterVersion(t.db, v('alice')).version).toBe(1);
    expect(createAdapterVersion(t.db, v('alice')).version).toBe(2);
    expect(createAdapterVersion(t.db, v('bob')).version).toBe(1);
    expect(listAdapterVersions(t.db, 'alice').map((a) => a.version)).toEqual([2, 1]);
    expect(() => createAdapterVersion(t.db, v('carol'))).toThrow(expect.objectContaining({ code: 'user_not_found' }));
  });

  it('keeps exactly one active version per user', () => {
    expect(getActiveAdapter(t.db, 'alice')).toBeUndefined();
    createAdapterVersion(t.db, v('alice', true));
    createAdapterVersion(t.db, v('alice', true));
    expect(getActiveAdapter(t.db, 'alice')?.version).toBe(2);
    expect(activateAdapterVersion(t.db, 'alice', 1)?.version).toBe(1);
    expect(getActiveAdapter(t.db, 'alice')?.version).toBe(1);
    expect(listAdapterVersions(t.db, 'alice').filter((a) => a.active === 1)).toHaveLength(1);
    expect(() => activateAdapterVersion(t.db, 'alice', 7)).toThrow(expect.objectContaining({ code: 'adapter_not_found' }));
    expect(getActiveAdapter(t.db, 'alice')?.version).toBe(1);
    activateAdapterVersion(t.db, 'alice', null);
    expect(getActiveAdapter(t.db, 'alice')).toBeUndefined();
  });

  it('changes status without touching the active flag', () => {
    createAdapterVersion(t.db, v('alice', true));
    expect(setAdapterStatus(t.db, 'alice', 1, 'quarantined')).toMatchObject({ status: 'quarantined', active: 1 });
    expect(getAdapterVersion(t.db, 'alice', 1)?.status).toBe('quarantined');
  });
});
