/** DELETE /v1/users/{userId}/history/{itemId} through the real app and a real SQLite file: forgetting an item, and the adapters trained on it. */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createAdapterVersion } from '../../src/db/queries/adapters.js';
import { createJob, updateJob } from '../../src/db/queries/jobs.js';
import { historyBulkDeleteResponse, historyDeleteResponse, staleUsersSchema } from '../../src/http/schemas.js';
import { userDirName } from '../../src/lora/paths.js';
import { expectError, json, makeHarness, type Harness } from './helpers.js';

let h: Harness;
afterEach(() => h?.cleanup());

async function userWith(id: string, texts: string[]): Promise<number[]> {
  await h.req('PUT', `/v1/users/${id}`);
  return ((await json(await h.req('POST', `/v1/users/${id}/history`, { items: texts.map((text) => ({ kind: 'post', text })) }))) as { ids: number[] }).ids;
}

/** An adapter version of the user made by a job that started at `startedAt` and read the history up to `upTo`. */
function jobVersion(userId: string, upTo: number, startedAt: number, activate = true, filePath = `${userId}/v`): number {
  const job = createJob(h.db, { userId, params: {} }, startedAt - 5);
  updateJob(h.db, job.id, { state: 'succeeded', startedAt, finishedAt: startedAt + 10, progress: { phase: 'succeeded', data: { historyUpTo: upTo, train: 1, val: 1, test: 1 } } });
  return createAdapterVersion(h.db, { userId, config: { layers: [true], n: 1, r: 8 }, sha256: 'x', metrics: { jobId: job.id }, status: 'ready', activate, filePath }, startedAt + 10).version;
}

const del = async (userId: string, itemId: number | string, query = '') => h.req('DELETE', `/v1/users/${userId}/history/${itemId}${query}`);

describe('deleting a history item', () => {
  it('removes it from listing, search and memory at once, and refuses unknown items, users and ids', async () => {
    h = makeHarness();
    const [bees, garden] = await userWith('ann', ['I keep bees on the roof.', 'My garden has roses.']);
    const [other] = await userWith('ben', ['Bees sting me.']);
    const res = await del('ann', bees);
    expect(res.status).toBe(200);
    expect(historyDeleteResponse.parse(await json(res))).toEqual({ userId: 'ann', itemId: bees, prefixCacheDropped: 0, trainedOnDeleted: [], deactivated: null, deletedVersions: [] });
    const items = (await json(await h.req('GET', '/v1/users/ann/history'))).items as Array<{ id: number }>;
    expect(items.map((i) => i.id)).toEqual([garden]);
    // FTS5 forgets it too: memory mode retrieves by this search.
    expect((await json(await h.req('GET', '/v1/users/ann/history?q=bees'))).items).toEqual([]);
    expect((await json(await h.req('GET', '/v1/users/ben/history?q=bees'))).items).toHaveLength(1);
    await expectError(await del('ann', bees), 404, 'history_item_not_found');
    await expectError(await del('ann', other), 404, 'history_item_not_found'); // another user's item
    await expectError(await del('nobody', garden), 404, 'user_not_found');
    for (const bad of ['0', '-1', 'x', '1.5', '99999999999999999999']) await expectError(await del('ann', bad), 422, 'invalid_item_id');
    await expectError(await del('ann', garden, '?adapter=maybe'), 422, 'validation_failed');
    // Nothing was lost by the refusals.
    expect(((await json(await h.req('GET', '/v1/users/ben/history'))).items as unknown[]).length).toBe(1);
    expect(h.db.sqlite.prepare('SELECT count(*) AS n FROM history_deletions').get()).toEqual({ n: 1 });
    // Erasing the user erases the record of their deletions.
    await h.req('DELETE', '/v1/users/ann');
    expect(h.db.sqlite.prepare('SELECT count(*) AS n FROM history_deletions').get()).toEqual({ n: 0 });
  });

  it('names the adapter versions trained on deleted items, deactivates the active one on request, and makes the user stale until re-injected', async () => {
    h = makeHarness();
    const ids = await userWith('cat', ['one', 'two', 'three', 'four']);
    const t0 = Date.now() - 60_000;
    // v1 read items 1-2; v2 (active) read 1-3; item 4 came after both.
    const v1 = jobVersion('cat', ids[1], t0, false);
    const v2 = jobVersion('cat', ids[2], t0 + 1000);
    // An item no version read: none is trained on it, the user is not stale for it.
    let r = historyDeleteResponse.parse(await json(await del('cat', ids[3])));
    expect(r.trainedOnDeleted).toEqual([]);
    expect((await json(await h.admin('GET', '/v1/admin/stale-users?minNewItems=100'))).items).toEqual([]);
    // An item both read: both named; the user is stale (first, whatever the threshold).
    r = historyDeleteResponse.parse(await json(await del('cat', ids[0])));
    expect(r.trainedOnDeleted).toEqual([
      { version: v1, active: false, deletedItems: 1 },
      { version: v2, active: true, deletedItems: 1 },
    ]);
    expect(r.deactivated).toBeNull();
    const stale = staleUsersSchema.parse(await json(await h.admin('GET', '/v1/admin/stale-users?minNewItems=100')));
    expect(stale.items).toMatchObject([{ userId: 'cat', forgottenItems: 1 }]);
    // An item only v2 read, with adapter=deactivate: v2 stops serving at once.
    r = historyDeleteResponse.parse(await json(await del('cat', ids[2], '?adapter=deactivate')));
    expect(r.deactivated).toBe(v2);
    expect(r.trainedOnDeleted).toEqual([
      { version: v1, active: false, deletedItems: 1 },
      { version: v2, active: false, deletedItems: 2 },
    ]);
    await expectError(await h.req('GET', '/v1/users/cat/adapter'), 404, 'adapter_not_found');
    // The version list says so at any time.
    const listed = (await json(await h.req('GET', '/v1/users/cat/adapters'))).items as Array<{ version: number; deletedItemsTrainedOn: number }>;
    expect(listed.map((v) => [v.version, v.deletedItemsTrainedOn]).sort()).toEqual([
      [v1, 1],
      [v2, 2],
    ]);
    // With no active adapter trained on deleted items, the user is no longer stale for them.
    expect((await json(await h.admin('GET', '/v1/admin/stale-users?minNewItems=100'))).items).toEqual([]);
    // A new version made by a job that started after the deletions did not read them.
    jobVersion('cat', ids[2], Date.now() + 1000);
    expect(historyDeleteResponse.parse(await json(await del('cat', ids[1]))).trainedOnDeleted.map((v) => v.version)).toEqual([v1, v2]);
  });

  it('deletes in bulk: one conversation\'s items, those written before a time, or all of them (every condition given holding); at least one is needed', async () => {
    h = makeHarness();
    await h.req('PUT', '/v1/users/fay');
    const items = [
      { kind: 'dialogue', role: 'user', text: 'first chat', conversationId: 'c1', createdAt: '2026-01-01T10:00:00Z' },
      { kind: 'dialogue', role: 'assistant', text: 'first reply', conversationId: 'c1', createdAt: '2026-01-01T10:00:05Z' },
      { kind: 'dialogue', role: 'user', text: 'second chat', conversationId: 'c2', createdAt: '2026-03-01T10:00:00Z' },
      { kind: 'post', text: 'an old post', createdAt: '2025-06-01T00:00:00Z' },
      { kind: 'post', text: 'a new post', createdAt: '2026-06-01T00:00:00Z' },
    ];
    const ids = ((await json(await h.req('POST', '/v1/users/fay/history', { items }))) as { ids: number[] }).ids;
    const bulk = async (query: string) => {
      const res = await h.req('DELETE', `/v1/users/fay/history${query}`);
      expect(res.status, query).toBe(200);
      return historyBulkDeleteResponse.parse(await json(res));
    };
    const left = async () => ((await json(await h.req('GET', '/v1/users/fay/history'))).items as Array<{ id: number }>).map((i) => i.id);
    expect(await bulk('?conversationId=c1')).toMatchObject({ userId: 'fay', deleted: 2, itemIds: [ids[0], ids[1]], trainedOnDeleted: [], deactivated: null });
    expect(await left()).toEqual([ids[2], ids[3], ids[4]]);
    // Before a time and within a conversation: only what both take.
    expect((await bulk('?conversationId=c2&before=2026-02-01T00:00:00Z')).itemIds).toEqual([]);
    expect((await bulk('?before=2026-04-01T00:00:00Z')).itemIds).toEqual([ids[2], ids[3]]);
    expect(await left()).toEqual([ids[4]]);
    expect((await bulk('?all=true')).itemIds).toEqual([ids[4]]);
    expect(await left()).toEqual([]);
    expect(h.db.sqlite.prepare("SELECT count(*) AS n FROM history_deletions WHERE user_id = 'fay'").get()).toEqual({ n: 5 });
    // Counted for operators.
    expect(await (await h.req('GET', '/metrics')).text()).toMatch(/^memlora_history_deleted_items_total 5$/m);
    // Nothing chosen, or something malformed: 422, nothing deleted.
    for (const q of ['', '?adapter=deactivate', '?all=yes', '?before=yesterday', '?conversationId=a%20b', '?other=1']) {
      await expectError(await h.req('DELETE', `/v1/users/fay/history${q}`), 422, 'validation_failed');
    }
    await expectError(await h.req('DELETE', '/v1/users/nobody/history?all=true'), 404, 'user_not_found');
  });

  it('adapter=delete stops the active version trained on deleted history and deletes every such version, files and all; the others keep theirs', async () => {
    h = makeHarness();
    const ids = await userWith('eve', ['a', 'b', 'c']);
    // Store-shaped directories, as the adapter store writes them.
    const stored = (name: string) => {
      const rel = `${userDirName('eve')}/${name}`;
      mkdirSync(join(h.config.adapterDir, rel), { recursive: true });
      writeFileSync(join(h.config.adapterDir, rel, 'adapter_model.safetensors'), Buffer.alloc(100, 1));
      return rel;
    };
    const has = (rel: string) => existsSync(join(h.config.adapterDir, rel));
    const t0 = Date.now() - 60_000;
    // v1 read item a only; v2 read a-b; v3 (active) read a-c.
    const files = ['a-1736100000000-0123456789ab', 'a-1736200000000-0123456789ab', 'a-1736300000000-0123456789ab'].map(stored);
    const v1 = jobVersion('eve', ids[0], t0, false, files[0]);
    const v2 = jobVersion('eve', ids[1], t0 + 1000, false, files[1]);
    const v3 = jobVersion('eve', ids[2], t0 + 2000, true, files[2]);
    // Deleting b and keeping the adapters names v2 and v3; a bulk deletion that deletes nothing may still act on them.
    expect(historyDeleteResponse.parse(await json(await del('eve', ids[1]))).trainedOnDeleted.map((v) => v.version)).toEqual([v2, v3]);
    const r = historyBulkDeleteResponse.parse(await json(await h.req('DELETE', '/v1/users/eve/history?conversationId=none&adapter=delete')));
    expect(r).toMatchObject({ deleted: 0, prefixCacheDropped: 0, deactivated: v3, deletedVersions: [v2, v3], trainedOnDeleted: [] });
    expect(files.map(has)).toEqual([true, false, false]);
    await expectError(await h.req('GET', '/v1/users/eve/adapter'), 404, 'adapter_not_found');
    const listed = (await json(await h.req('GET', '/v1/users/eve/adapters'))).items as Array<{ version: number; status: string; active: boolean }>;
    expect(listed.map((v) => [v.version, v.status, v.active]).sort()).toEqual([
      [v1, 'ready', false],
      [v2, 'deleted', false],
      [v3, 'deleted', false],
    ]);
    // Deleted versions are not deleted again; v1 never read c, so it stays.
    const again = historyDeleteResponse.parse(await json(await del('eve', ids[2], '?adapter=delete')));
    expect([again.deletedVersions, again.deactivated, again.trainedOnDeleted]).toEqual([[], null, []]);
    expect(has(files[0])).toBe(true);
    const metrics = await (await h.req('GET', '/metrics')).text();
    expect(metrics).toMatch(/^memlora_history_forget_version_deletions_total 2$/m);
    expect(metrics).toMatch(/^memlora_history_forget_deactivations_total 1$/m);
    await expectError(await del('eve', ids[0], '?adapter=purge'), 422, 'validation_failed');
    expect(has(files[0])).toBe(true);
  });

  it('takes a version no job made (the CLI\'s) to be trained on every item deleted after it was made', async () => {
    h = makeHarness();
    const [a, b] = await userWith('dan', ['a', 'b']);
    const old = createAdapterVersion(h.db, { userId: 'dan', config: { layers: [true], n: 1, r: 8 }, filePath: 'dan/v1', sha256: 'x', metrics: {}, status: 'ready', activate: true }, Date.now() - 1000).version;
    expect(historyDeleteResponse.parse(await json(await del('dan', a))).trainedOnDeleted).toEqual([{ version: old, active: true, deletedItems: 1 }]);
    // A version deleted by an operator has no files left to carry anything.
    h.db.sqlite.prepare("UPDATE adapter_versions SET status = 'deleted', active = 0 WHERE user_id = 'dan'").run();
    expect(historyDeleteResponse.parse(await json(await del('dan', b))).trainedOnDeleted).toEqual([]);
  });
});
