import { afterEach, describe, expect, it } from 'vitest';
import { appendConversationItems } from '../../src/db/queries/conversations.js';
import { conversationDeletedSchema, conversationItemListSchema, conversationSchema, responsesResponseSchema } from '../../src/http/schemas.js';
import { fakeGenerateApp, parseSse, type FakeGenerate } from './fake-generate.js';
import { expectError, json, type Harness } from './helpers.js';

let h: Harness;
let gen: FakeGenerate;
afterEach(() => h?.cleanup());

async function setup(env: Record<string, string> = {}) {
  ({ h, gen } = await fakeGenerateApp(true, env));
}

const create = async (body?: Record<string, unknown>) => {
  const res = await h.req('POST', '/v1/conversations', body);
  expect(res.status).toBe(200);
  return conversationSchema.parse(await json(res));
};
const respond = async (body: Record<string, unknown>) => {
  const res = await h.req('POST', '/v1/responses', body);
  expect(res.status).toBe(200);
  return responsesResponseSchema.parse(await json(res));
};
const items = async (id: string, query = 'order=asc&limit=100') => conversationItemListSchema.parse(await json(await h.req('GET', `/v1/conversations/${id}/items?${query}`)));
const texts = (list: { data: Array<Record<string, any>> }) => list.data.map((i) => (i.type === 'message' ? i.content.map((p: { text: string }) => p.text).join('') : i.type === 'function_call' ? `call ${i.name}` : `output ${i.output}`));
const sent = () => gen.calls.at(-1)!.req.messages!.map((m) => m.content);
const DAY_MS = 86_400_000;

describe('conversations', () => {
  it('creates one (empty, or with items, metadata and an owner), reads, updates its metadata and deletes it', async () => {
    await setup();
    const empty = await create();
    expect(empty).toMatchObject({ object: 'conversation', metadata: {}, memlora: { userId: null } });
    expect(empty.id).toMatch(/^conv_[0-9a-f]{24}$/);
    const full = await create({ user: 'alice', metadata: { topic: 'food' }, items: [{ role: 'user', content: 'I like soup' }, { type: 'message', role: 'assistant', content: [{ type: 'output_text', text: 'Noted.' }] }] });
    expect(full).toMatchObject({ metadata: { topic: 'food' }, memlora: { userId: 'alice' } });
    expect(await json(await h.req('GET', `/v1/conversations/${full.id}`))).toEqual(full);
    expect(texts(await items(full.id))).toEqual(['I like soup', 'Noted.']);
    const updated = conversationSchema.parse(await json(await h.req('POST', `/v1/conversations/${full.id}`, { metadata: { topic: 'soup' } })));
    expect(updated).toEqual({ ...full, metadata: { topic: 'soup' } });
    expect(conversationDeletedSchema.parse(await json(await h.req('DELETE', `/v1/conversations/${full.id}`)))).toEqual({ id: full.id, object: 'conversation.deleted', deleted: true });
    for (const [method, path] of [['GET', ''], ['DELETE', ''], ['GET', '/items']] as const) await expectError(await h.req(method, `/v1/conversations/${full.id}${path}`), 404, 'conversation_not_found');
    await expectError(await h.req('POST', `/v1/conversations/${full.id}`, { metadata: {} }), 404, 'conversation_not_found');
    expect((h.db.sqlite.prepare('SELECT count(*) AS n FROM conversation_items').get() as { n: number }).n).toBe(0);
    // Refused: an unknown owner, too many first items, bad metadata, an update without metadata.
    await expectError(await h.req('POST', '/v1/conversations', { user: 'bob' }), 404, 'user_not_found');
    await expectError(await h.req('POST', '/v1/conversations', { items: Array.from({ length: 21 }, () => ({ role: 'user', content: 'x' })) }), 422, 'validation_failed');
    await expectError(await h.req('POST', '/v1/conversations', { metadata: { k: 1 } }), 422, 'validation_failed');
    await expectError(await h.req('POST', `/v1/conversations/${empty.id}`, {}), 422, 'validation_failed');
  });

  it('items: added at the end (up to 20 at a time), listed newest first unless asc and paged by after, read and deleted one by one', async () => {
    await setup();
    const conv = await create({ items: [{ role: 'user', content: 'one' }] });
    const added = conversationItemListSchema.parse(
      await json(await h.req('POST', `/v1/conversations/${conv.id}/items`, { items: [{ role: 'assistant', content: 'two' }, { type: 'function_call', call_id: 'c1', name: 'f', arguments: '{}' }, { type: 'function_call_output', call_id: 'c1', output: 'done' }] })),
    );
    expect(added).toMatchObject({ has_more: false, first_id: added.data[0].id, last_id: added.data[2].id });
    expect(texts(added)).toEqual(['two', 'call f', 'output done']);
    const all = await items(conv.id);
    expect(texts(all)).toEqual(['one', 'two', 'call f', 'output done']);
    const ids = all.data.map((i) => i.id);
    expect(new Set(ids).size).toBe(4);
    const newest = await items(conv.id, 'limit=2');
    expect(newest).toMatchObject({ first_id: ids[3], last_id: ids[2], has_more: true });
    expect((await items(conv.id, `limit=2&after=${ids[2]}`)).data.map((i) => i.id)).toEqual([ids[1], ids[0]]);
    expect((await items(conv.id, `order=asc&after=${ids[1]}`)).data.map((i) => i.id)).toEqual([ids[2], ids[3]]);
    await expectError(await h.req('GET', `/v1/conversations/${conv.id}/items?after=nope`), 422, 'invalid_cursor');
    expect(await json(await h.req('GET', `/v1/conversations/${conv.id}/items/${ids[1]}`))).toEqual(all.data[1]);
    // include, as OpenAI's clients send it (items.list, retrieve, create), is taken; what no request may include is 422, and nothing is added.
    const include = 'include[]=message.output_text.logprobs';
    expect(await json(await h.req('GET', `/v1/conversations/${conv.id}/items/${ids[1]}?${include}`))).toEqual(all.data[1]);
    expect(await json(await h.req('GET', `/v1/conversations/${conv.id}/items?${include}`))).toEqual(await json(await h.req('GET', `/v1/conversations/${conv.id}/items`)));
    for (const q of ['include=x', `${include}&include[]=x`, 'limit=1']) {
      await expectError(await h.req('POST', `/v1/conversations/${conv.id}/items?${q}`, { items: [{ role: 'user', content: 'no' }] }), 422, 'validation_failed');
      await expectError(await h.req('GET', `/v1/conversations/${conv.id}/items/${ids[1]}?${q}`), 422, 'validation_failed');
    }
    expect(texts(await items(conv.id))).toEqual(['one', 'two', 'call f', 'output done']);
    const after = conversationSchema.parse(await json(await h.req('DELETE', `/v1/conversations/${conv.id}/items/${ids[1]}`)));
    expect(after.id).toBe(conv.id);
    expect(texts(await items(conv.id))).toEqual(['one', 'call f', 'output done']);
    await expectError(await h.req('GET', `/v1/conversations/${conv.id}/items/${ids[1]}`), 404, 'item_not_found');
    await expectError(await h.req('DELETE', `/v1/conversations/${conv.id}/items/${ids[1]}`), 404, 'item_not_found');
    await expectError(await h.req('POST', `/v1/conversations/${conv.id}/items`, { items: [] }), 422, 'validation_failed');
    await expectError(await h.req('POST', '/v1/conversations/conv_none/items', { items: [{ role: 'user', content: 'x' }] }), 404, 'conversation_not_found');
    // At most 10,000 items: nothing is added past them.
    appendConversationItems(h.db, conv.id, Array.from({ length: 9990 }, (_, i) => ({ id: `bulk${i}`, type: 'message', role: 'user', status: 'completed', content: [{ type: 'input_text', text: 'x' }] })), 0);
    await expectError(await h.req('POST', `/v1/conversations/${conv.id}/items`, { items: Array.from({ length: 8 }, () => ({ role: 'user', content: 'y' })) }), 422, 'validation_failed');
    expect(conversationItemListSchema.parse(await json(await h.req('POST', `/v1/conversations/${conv.id}/items?include[]=message.output_text.logprobs`, { items: Array.from({ length: 7 }, () => ({ role: 'user', content: 'y' })) }))).data).toHaveLength(7);
  });

  it('a response reads the conversation before its input and adds its input and output to it; the conversation becomes its user\'s', async () => {
    await setup();
    await h.req('PUT', '/v1/users/bob');
    const conv = await create({ items: [{ role: 'user', content: 'I like soup' }] });
    const first = await respond({ user: 'alice', conversation: conv.id, input: 'what do I like?', instructions: 'be kind' });
    expect(first.conversation).toEqual({ id: conv.id });
    expect(sent()).toEqual(['be kind', 'I like soup', 'what do I like?']);
    expect(texts(await items(conv.id))).toEqual(['I like soup', 'what do I like?', 'echo what do I like?']);
    expect((await json(await h.req('GET', `/v1/conversations/${conv.id}`))).memlora).toEqual({ userId: 'alice' });
    // The next turn reads all of it ({ id } form too); store false still adds to the conversation.
    await respond({ model: 'memlora:alice', conversation: { id: conv.id }, input: 'and then?', store: false });
    expect(sent()).toEqual(['I like soup', 'what do I like?', 'echo what do I like?', 'and then?']);
    expect(texts(await items(conv.id))).toHaveLength(5);
    // Streamed, the items are added before the last event.
    const events = parseSse(await (await h.req('POST', '/v1/responses', { user: 'alice', conversation: conv.id, input: 'streamed', stream: true })).text());
    expect(JSON.parse(events.at(-1)!.data).response.conversation).toEqual({ id: conv.id });
    expect(texts(await items(conv.id, 'limit=2'))).toEqual(['echo streamed', 'streamed']);
    await h.req('DELETE', `/v1/conversations/${conv.id}/items/${(await items(conv.id, 'limit=1')).data[0].id}`);
    await h.req('DELETE', `/v1/conversations/${conv.id}/items/${(await items(conv.id, 'limit=1')).data[0].id}`);
    // Another user's conversation is not found, and nothing is generated or added.
    const calls = gen.calls.length;
    await expectError(await h.req('POST', '/v1/responses', { user: 'bob', conversation: conv.id, input: 'x' }), 404, 'conversation_not_found');
    await expectError(await h.req('POST', '/v1/responses', { user: 'alice', conversation: 'conv_none', input: 'x' }), 404, 'conversation_not_found');
    await expectError(await h.req('POST', '/v1/responses', { user: 'alice', conversation: conv.id, previous_response_id: first.id, input: 'x' }), 422, 'validation_failed');
    expect(gen.calls).toHaveLength(calls);
    expect(texts(await items(conv.id))).toHaveLength(5);
    // Erasing alice erases her conversations with their items.
    expect((await json(await h.req('DELETE', '/v1/users/alice'))).removed.conversations).toBe(1);
    expect((h.db.sqlite.prepare('SELECT count(*) AS n FROM conversation_items').get() as { n: number }).n).toBe(0);
  });

  it('function calls made in a conversation are answered in the next turn; truncation auto reads the conversation\'s tail, which keeps everything', async () => {
    await setup();
    const conv = await create();
    gen.replyText = '{"get_time": {}}';
    const tools = [{ type: 'function', name: 'get_time' }];
    const asked = await respond({ user: 'alice', conversation: conv.id, input: 'time?', tools, tool_choice: 'required' });
    const call = asked.output[0] as { call_id: string };
    gen.replyText = 'noon';
    await respond({ user: 'alice', conversation: conv.id, tools, input: [{ type: 'function_call_output', call_id: call.call_id, output: '12:00' }] });
    expect(sent().slice(1)).toEqual(['time?', '{"get_time": {}}', 'Result of get_time: 12:00']);
    expect(texts(await items(conv.id))).toEqual(['time?', 'call get_time', 'output 12:00', 'noon']);
    gen.replyText = undefined;
    const long = Array.from({ length: 8 }, (_, i) => ({ role: 'user', content: String(i).padStart(100, '-') }));
    await h.req('POST', `/v1/conversations/${conv.id}/items`, { items: long });
    await respond({ user: 'alice', conversation: conv.id, input: 'last', truncation: 'auto', max_output_tokens: 100 });
    expect(sent().length).toBeLessThan(13);
    expect(sent().at(-1)).toBe('last');
    expect(texts(await items(conv.id))).toHaveLength(4 + 8 + 2);
  });

  it('a conversation past 256 items: refused as sent, its tail read with truncation auto (no more of it read than a request can use)', async () => {
    await setup();
    const conv = await create();
    appendConversationItems(h.db, conv.id, Array.from({ length: 300 }, (_, i) => ({ id: `m${i}`, type: 'message', role: 'user', status: 'completed', content: [{ type: 'input_text', text: String.fromCharCode(0x100 + i) }] })), 0);
    const err = await expectError(await h.req('POST', '/v1/responses', { user: 'alice', conversation: conv.id, input: 'x' }), 422, 'validation_failed');
    expect(err.message).toContain('300 items before the input');
    await respond({ user: 'alice', conversation: conv.id, input: 'x', truncation: 'auto', max_output_tokens: 10 });
    expect(sent()).toEqual([...Array.from({ length: 255 }, (_, i) => String.fromCharCode(0x100 + 45 + i)), 'x']);
    expect(texts(await items(conv.id, 'limit=2'))).toEqual(['echo x', 'x']);
  });

  it('a conversation deleted while its response runs: the response is answered, the failure logged and counted', async () => {
    await setup();
    const conv = await create();
    const generate = gen.generate.bind(gen);
    gen.generate = async (req, signal) => {
      h.db.sqlite.prepare('DELETE FROM conversations WHERE id = ?').run(conv.id);
      return generate(req, signal);
    };
    const r = await respond({ user: 'alice', conversation: conv.id, input: 'x' });
    expect(r.output[0]).toMatchObject({ content: [{ text: 'echo x' }] });
    expect(await (await h.req('GET', '/metrics')).text()).toMatch(/^memlora_responses_conversation_failures_total 1$/m);
    expect(h.logger.lines.find((l) => l.msg === 'conversation items not added')).toMatchObject({ level: 'error', fields: { conversationId: conv.id } });
  });

  it('kept MEMLORA_RESPONSES_RETENTION_DAYS after their last change; with 0 none are made', async () => {
    await setup({ MEMLORA_RESPONSES_RETENTION_DAYS: '1' });
    const old = await create({ items: [{ role: 'user', content: 'x' }] });
    const live = await create();
    h.db.sqlite.prepare('UPDATE conversations SET updated_at = ? WHERE id = ?').run(Date.now() - 1.01 * DAY_MS, old.id);
    h.db.sqlite.prepare('UPDATE conversations SET updated_at = ? WHERE id = ?').run(Date.now() - 0.99 * DAY_MS, live.id);
    await expectError(await h.req('GET', `/v1/conversations/${old.id}`), 404, 'conversation_not_found');
    await expectError(await h.req('POST', '/v1/responses', { user: 'alice', conversation: old.id, input: 'x' }), 404, 'conversation_not_found');
    // A change renews it.
    await h.req('POST', `/v1/conversations/${live.id}/items`, { items: [{ role: 'user', content: 'y' }] });
    expect((await h.req('GET', `/v1/conversations/${live.id}`)).status).toBe(200);
    // The next creation purges the old one and its items.
    await create();
    expect(h.db.sqlite.prepare('SELECT 1 FROM conversations WHERE id = ?').get(old.id)).toBeUndefined();
    expect((h.db.sqlite.prepare('SELECT count(*) AS n FROM conversation_items WHERE conversation_id = ?').get(old.id) as { n: number }).n).toBe(0);
    h.cleanup();
    await setup({ MEMLORA_RESPONSES_RETENTION_DAYS: '0' });
    await expectError(await h.req('POST', '/v1/conversations', {}), 409, 'conversations_disabled');
    const err = await expectError(await h.req('POST', '/v1/responses', { user: 'alice', conversation: 'conv_x', input: 'x' }), 404, 'conversation_not_found');
    expect(err.message).toContain('MEMLORA_RESPONSES_RETENTION_DAYS=0');
  });
});
