import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PURGE_BATCH, deleteStoredResponse, getStoredResponse, storeResponse, type StoredResponse, unfinishedBackgroundResponses, updateStoredResponse } from '../../../src/db/queries/responses.js';
import { createUser, deleteUser } from '../../../src/db/queries/users.js';
import { tempDb } from '../helpers.js';

let t: ReturnType<typeof tempDb>;
beforeEach(() => (t = tempDb()));
afterEach(() => t.cleanup());

const row = (id: string, createdAt: number, userId = 'alice'): StoredResponse => ({
  id,
  userId,
  createdAt,
  previousResponseId: null,
  response: { id, output: [{ type: 'message', text: `reply ${id}` }] },
  items: [{ type: 'message', id: `msg_${id}_in0`, role: 'user', content: [{ type: 'input_text', text: `hi ${id}` }] }],
});
const count = () => (t.db.sqlite.prepare('SELECT count(*) AS n FROM stored_responses').get() as { n: number }).n;

describe('stored responses', () => {
  it('reads back what was stored, as long as it is within the retention; deletes one; erasing the user erases them', () => {
    createUser(t.db, { id: 'alice' });
    createUser(t.db, { id: 'bob' });
    storeResponse(t.db, row('r1', 1000), 0);
    storeResponse(t.db, row('r2', 2000, 'bob'), 0);
    expect(getStoredResponse(t.db, 'r1', 1000)).toEqual({ ...row('r1', 1000), request: null });
    expect(getStoredResponse(t.db, 'r1', 1001)).toBeUndefined(); // past the retention: gone for readers, purged or not
    expect(deleteStoredResponse(t.db, 'r1', 1001)).toBe(false);
    expect(deleteStoredResponse(t.db, 'r1', 0)).toBe(true);
    expect(deleteStoredResponse(t.db, 'r1', 0)).toBe(false);
    expect(deleteUser(t.db, 'bob')?.responses).toBe(1);
    expect(count()).toBe(0);
  });

  it('a background response keeps its request until it is done: the unfinished ones, oldest first, within the retention', () => {
    createUser(t.db, { id: 'alice' });
    storeResponse(t.db, { ...row('b2', 2000), request: { input: 'two' } }, 0);
    storeResponse(t.db, { ...row('b1', 1000), request: { input: 'one' } }, 0);
    storeResponse(t.db, row('plain', 1500), 0);
    expect(unfinishedBackgroundResponses(t.db, 0).map((r) => [r.id, r.request])).toEqual([['b1', { input: 'one' }], ['b2', { input: 'two' }]]);
    expect(unfinishedBackgroundResponses(t.db, 1001).map((r) => r.id)).toEqual(['b2']);
    // Put back in the queue: kept; done: dropped.
    expect(updateStoredResponse(t.db, 'b1', { id: 'b1', status: 'queued' }, 'keep')).toBe(true);
    expect(getStoredResponse(t.db, 'b1', 0)?.request).toEqual({ input: 'one' });
    expect(updateStoredResponse(t.db, 'b1', { id: 'b1', status: 'completed' }, 'drop')).toBe(true);
    expect(getStoredResponse(t.db, 'b1', 0)).toMatchObject({ response: { status: 'completed' }, request: null });
    expect(unfinishedBackgroundResponses(t.db, 0).map((r) => r.id)).toEqual(['b2']);
    expect(updateStoredResponse(t.db, 'gone', { id: 'gone' }, 'drop')).toBe(false);
  });

  it('a write purges at most PURGE_BATCH expired rows, oldest first; a backlog is worked off by the next writes', () => {
    createUser(t.db, { id: 'alice' });
    for (let i = 0; i < PURGE_BATCH + 10; i++) storeResponse(t.db, row(`old${i}`, 100 + i), 0);
    storeResponse(t.db, row('kept', 5000), 0);
    storeResponse(t.db, row('new1', 6000), 1000);
    expect(count()).toBe(10 + 2);
    // The oldest went first: old0..old63 purged, old64.. left (and unreadable).
    expect(t.db.sqlite.prepare('SELECT 1 FROM stored_responses WHERE id = ?').get(`old${PURGE_BATCH - 1}`)).toBeUndefined();
    expect(t.db.sqlite.prepare('SELECT 1 FROM stored_responses WHERE id = ?').get(`old${PURGE_BATCH}`)).toBeDefined();
    expect(getStoredResponse(t.db, `old${PURGE_BATCH}`, 1000)).toBeUndefined();
    storeResponse(t.db, row('new2', 7000), 1000);
    expect(count()).toBe(3);
    expect(getStoredResponse(t.db, 'kept', 1000)?.items).toEqual(row('kept', 5000).items);
  });

  it('a failed insert (an id stored twice) leaves the purge undone too: one transaction', () => {
    createUser(t.db, { id: 'alice' });
    storeResponse(t.db, row('old', 1), 0);
    storeResponse(t.db, row('dup', 5000), 0);
    expect(() => storeResponse(t.db, row('dup', 6000), 1000)).toThrow();
    expect(t.db.sqlite.prepare('SELECT 1 FROM stored_responses WHERE id = ?').get('old')).toBeDefined();
    expect(getStoredResponse(t.db, 'dup', 0)?.createdAt).toBe(5000);
  });
});
