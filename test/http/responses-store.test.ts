import { afterEach, describe, expect, it } from 'vitest';
import { responsesDeletedSchema, responsesInputItemListSchema, responsesResponseSchema, userStoredDeletedSchema, userStoredSchema } from '../../src/http/schemas.js';
import { fakeGenerateApp, parseSse, type FakeGenerate } from './fake-generate.js';
import { expectError, json, type Harness } from './helpers.js';

let h: Harness;
let gen: FakeGenerate;
afterEach(() => h?.cleanup());

async function setup(env: Record<string, string> = {}) {
  ({ h, gen } = await fakeGenerateApp(true, env));
}

const post = async (body: Record<string, unknown>) => {
  const res = await h.req('POST', '/v1/responses', body);
  expect(res.status).toBe(200);
  return responsesResponseSchema.parse(await json(res));
};
const rows = () => (h.db.sqlite.prepare('SELECT count(*) AS n FROM stored_responses').get() as { n: number }).n;
const DAY_MS = 86_400_000;

describe('stored responses: previous_response_id, GET, input_items, DELETE', () => {
  it('stores a response unless store is false; a later request of the same user continues it (its input and output, not its instructions)', async () => {
    await setup();
    const first = await post({ user: 'alice', instructions: 'be kind', input: 'hello there' });
    expect(first).toMatchObject({ store: true, previous_response_id: null });
    // Read back as answered.
    expect(await json(await h.req('GET', `/v1/responses/${first.id}`))).toEqual(first);

    const second = await post({ user: 'alice', instructions: 'be brief', input: [{ role: 'user', content: 'and then?' }], previous_response_id: first.id });
    expect(second).toMatchObject({ store: true, previous_response_id: first.id, instructions: 'be brief' });
    expect(gen.calls.at(-1)!.req.messages).toEqual([
      { role: 'system', content: 'be brief' },
      { role: 'user', content: 'hello there' },
      { role: 'assistant', content: 'echo hello there' },
      { role: 'user', content: 'and then?' },
    ]);
    // A chain: the third reads both turns before it.
    await post({ model: 'memlora:alice', input: 'last', previous_response_id: second.id });
    expect(gen.calls.at(-1)!.req.messages!.map((m) => m.content)).toEqual(['hello there', 'echo hello there', 'and then?', 'echo and then?', 'last']);

    // store: false keeps nothing: it cannot be read or continued.
    const unstored = await post({ user: 'alice', input: 'secret', store: false });
    expect(unstored.store).toBe(false);
    expect(rows()).toBe(3);
    await expectError(await h.req('GET', `/v1/responses/${unstored.id}`), 404, 'response_not_found');
    const calls = gen.calls.length;
    await expectError(await h.req('POST', '/v1/responses', { user: 'alice', input: 'x', previous_response_id: unstored.id }), 404, 'response_not_found');
    expect(gen.calls).toHaveLength(calls);
  });

  it('input_items lists the items the model read, newest first unless order=asc, paged by after', async () => {
    await setup();
    const first = await post({ user: 'alice', input: 'one' });
    const second = await post({ user: 'alice', input: [{ role: 'developer', content: 'two' }, { role: 'user', content: [{ type: 'input_text', text: 'thr' }, { type: 'input_text', text: 'ee' }] }], previous_response_id: first.id });
    const list = responsesInputItemListSchema.parse(await json(await h.req('GET', `/v1/responses/${second.id}/input_items?order=asc`)));
    const k1 = first.id.slice(5);
    const k2 = second.id.slice(5);
    expect(list).toEqual({
      object: 'list',
      data: [
        { type: 'message', id: `msg_${k1}_in0`, status: 'completed', role: 'user', content: [{ type: 'input_text', text: 'one' }] },
        // The first response's output, as it answered it.
        { type: 'message', id: first.output[0].id, status: 'completed', role: 'assistant', content: [{ type: 'output_text', text: 'echo one' }] },
        { type: 'message', id: `msg_${k2}_in0`, status: 'completed', role: 'developer', content: [{ type: 'input_text', text: 'two' }] },
        { type: 'message', id: `msg_${k2}_in1`, status: 'completed', role: 'user', content: [{ type: 'input_text', text: 'thr' }, { type: 'input_text', text: 'ee' }] },
      ],
      first_id: `msg_${k1}_in0`,
      last_id: `msg_${k2}_in1`,
      has_more: false,
    });
    // Newest first by default; pages of `limit` after an item.
    const ids = list.data.map((i) => i.id);
    const page1 = responsesInputItemListSchema.parse(await json(await h.req('GET', `/v1/responses/${second.id}/input_items?limit=3`)));
    expect(page1).toMatchObject({ first_id: ids[3], last_id: ids[1], has_more: true });
    expect(page1.data.map((i) => i.id)).toEqual([ids[3], ids[2], ids[1]]);
    const page2 = responsesInputItemListSchema.parse(await json(await h.req('GET', `/v1/responses/${second.id}/input_items?limit=3&after=${ids[1]}`)));
    expect(page2).toMatchObject({ data: [list.data[0]], has_more: false });
    const empty = responsesInputItemListSchema.parse(await json(await h.req('GET', `/v1/responses/${second.id}/input_items?after=${ids[0]}`)));
    expect(empty).toEqual({ object: 'list', data: [], first_id: null, last_id: null, has_more: false });
    await expectError(await h.req('GET', `/v1/responses/${second.id}/input_items?after=msg_nope`), 422, 'invalid_cursor');
    for (const q of ['limit=0', 'limit=101', 'order=up', 'include=x', 'include[]=message.output_text.logprobs&include[]=x']) {
      await expectError(await h.req('GET', `/v1/responses/${second.id}/input_items?${q}`), 422, 'validation_failed');
    }
    // include as OpenAI's clients send it (inputItems.list) is taken: the same page.
    expect(await json(await h.req('GET', `/v1/responses/${second.id}/input_items?include[]=message.output_text.logprobs&limit=3`))).toEqual(page1);
    await expectError(await h.req('GET', '/v1/responses/resp_nope/input_items'), 404, 'response_not_found');
  });

  it('function calls carry across: a call of the stored output and its result in the next input reach the model as one exchange', async () => {
    await setup();
    const weather = { type: 'function', name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } };
    gen.replyText = '{"get_weather": {"city": "Lyon"}}';
    const asked = await post({ user: 'alice', input: 'Weather in Lyon?', tools: [weather] });
    const call = asked.output[0];
    expect(call).toMatchObject({ type: 'function_call', name: 'get_weather' });
    gen.replyText = 'It is sunny';
    const answered = await post({
      user: 'alice',
      tools: [weather],
      input: [{ type: 'function_call_output', call_id: (call as { call_id: string }).call_id, output: '{"sky":"sunny"}' }],
      previous_response_id: asked.id,
    });
    expect(answered.output[0]).toMatchObject({ type: 'message', content: [{ text: 'It is sunny' }] });
    expect(gen.calls.at(-1)!.req.messages!.slice(1)).toEqual([
      { role: 'user', content: 'Weather in Lyon?' },
      { role: 'assistant', content: '{"get_weather": {"city":"Lyon"}}' },
      { role: 'user', content: 'Result of get_weather: {"sky":"sunny"}' },
    ]);
    const items = responsesInputItemListSchema.parse(await json(await h.req('GET', `/v1/responses/${answered.id}/input_items?order=asc`)));
    expect(items.data.map((i) => i.type)).toEqual(['message', 'function_call', 'function_call_output']);
    expect(items.data[1]).toMatchObject({ id: call.id, call_id: (call as { call_id: string }).call_id, arguments: '{"city":"Lyon"}', status: 'completed' });
  });

  it('a user never continues or reaches another user\'s response through generation; unknown ids are 404', async () => {
    await setup();
    await h.req('PUT', '/v1/users/bob');
    const alices = await post({ user: 'alice', input: 'my secret' });
    const calls = gen.calls.length;
    const err = await expectError(await h.req('POST', '/v1/responses', { user: 'bob', input: 'what did she say?', previous_response_id: alices.id }), 404, 'response_not_found');
    expect(err.details).toEqual({ id: alices.id });
    expect(gen.calls).toHaveLength(calls);
    for (const [method, path] of [['GET', '/v1/responses/resp_0'], ['GET', '/v1/responses/resp_0/input_items'], ['DELETE', '/v1/responses/resp_0']] as const) {
      await expectError(await h.req(method, path), 404, 'response_not_found');
    }
    await expectError(await h.req('GET', `/v1/responses/${alices.id}?stream=true`), 409, 'stream_unavailable');
    // include as OpenAI's clients send it (include[], repeated), and include_obfuscation, are taken: the response as stored.
    const asStored = await json(await h.req('GET', `/v1/responses/${alices.id}`));
    for (const q of ['include[]=message.output_text.logprobs&include[]=message.output_text.logprobs&include_obfuscation=false', 'include=message.output_text.logprobs']) {
      const res = await h.req('GET', `/v1/responses/${alices.id}?${q}`);
      expect(res.status, q).toBe(200);
      expect(await json(res)).toEqual(asStored);
    }
    // What no request may include is refused, wherever it stands among several.
    for (const q of ['include=x', 'include[]=file_search_call.results&include[]=message.output_text.logprobs', 'include[]=message.output_text.logprobs&include[]=file_search_call.results', 'include_obfuscation=maybe']) {
      const err = await expectError(await h.req('GET', `/v1/responses/${alices.id}?${q}`), 422, 'validation_failed');
      expect(err.message, q).toMatch(/^invalid query: include/);
    }
    await expectError(await h.req('POST', `/v1/responses/${alices.id}/cancel`), 409, 'response_not_cancellable');
  });

  it('DELETE removes a response (its continuations keep their own copy of the conversation); erasing the user erases theirs', async () => {
    await setup();
    const first = await post({ user: 'alice', input: 'one' });
    const second = await post({ user: 'alice', input: 'two', previous_response_id: first.id });
    expect(responsesDeletedSchema.parse(await json(await h.req('DELETE', `/v1/responses/${first.id}`)))).toEqual({ id: first.id, object: 'response', deleted: true });
    await expectError(await h.req('GET', `/v1/responses/${first.id}`), 404, 'response_not_found');
    await expectError(await h.req('DELETE', `/v1/responses/${first.id}`), 404, 'response_not_found');
    expect(await (await h.req('GET', '/metrics')).text()).toMatch(/^memlora_responses_deleted_total 1$/m);
    await expectError(await h.req('POST', '/v1/responses', { user: 'alice', input: 'x', previous_response_id: first.id }), 404, 'response_not_found');
    await post({ user: 'alice', input: 'three', previous_response_id: second.id });
    expect(gen.calls.at(-1)!.req.messages!.map((m) => m.content)).toEqual(['one', 'echo one', 'two', 'echo two', 'three']);
    expect(rows()).toBe(2);
    const erased = await json(await h.req('DELETE', '/v1/users/alice'));
    expect(erased.removed.responses).toBe(2);
    expect(rows()).toBe(0);
    await expectError(await h.req('GET', `/v1/responses/${second.id}`), 404, 'response_not_found');
  });

  it('operators read what a user\'s stored responses and conversations hold, and erase them while the user stays', async () => {
    await setup();
    await h.req('PUT', '/v1/users/bob');
    await h.req('POST', '/v1/users/alice/history', { items: [{ kind: 'post', text: 'I like soup' }] });
    const first = await post({ user: 'alice', input: 'one' });
    await post({ user: 'alice', input: 'two', previous_response_id: first.id });
    const bobs = await post({ user: 'bob', input: 'mine' });
    const conv = (await json(await h.req('POST', '/v1/conversations', { user: 'alice', items: [{ role: 'user', content: 'hi' }] }))).id as string;
    await h.req('POST', '/v1/conversations', { items: [{ role: 'user', content: 'nobody\'s' }] });
    const before = userStoredSchema.parse(await json(await h.admin('GET', '/v1/admin/users/alice/responses')));
    expect(before).toMatchObject({ userId: 'alice', responses: { count: 2 }, conversations: { count: 1, items: 1 } });
    expect(before.responses.bytes).toBeGreaterThan(0);
    expect(Date.parse(before.responses.newest!)).toBeGreaterThanOrEqual(Date.parse(before.responses.oldest!));
    await expectError(await h.req('GET', '/v1/admin/users/alice/responses'), 401, 'unauthorized');
    const erased = userStoredDeletedSchema.parse(await json(await h.admin('DELETE', '/v1/admin/users/alice/responses')));
    expect(erased).toEqual({ userId: 'alice', deleted: { responses: 2, conversations: 1, conversationItems: 1 } });
    await expectError(await h.req('GET', `/v1/responses/${first.id}`), 404, 'response_not_found');
    await expectError(await h.req('GET', `/v1/conversations/${conv}`), 404, 'conversation_not_found');
    // Bob's, the unowned conversation, alice herself and her history stay.
    expect((await h.req('GET', `/v1/responses/${bobs.id}`)).status).toBe(200);
    expect((h.db.sqlite.prepare('SELECT count(*) AS n FROM conversations').get() as { n: number }).n).toBe(1);
    expect((await json(await h.req('GET', '/v1/users/alice/history'))).items).toHaveLength(1);
    expect(userStoredSchema.parse(await json(await h.admin('GET', '/v1/admin/users/alice/responses')))).toEqual({
      userId: 'alice',
      responses: { count: 0, bytes: 0, oldest: null, newest: null },
      conversations: { count: 0, items: 0, bytes: 0 },
    });
    await expectError(await h.admin('DELETE', '/v1/admin/users/carol/responses'), 404, 'user_not_found');
    await expectError(await h.admin('GET', '/v1/admin/users/carol/responses'), 404, 'user_not_found');
  });

  it('keeps responses MEMLORA_RESPONSES_RETENTION_DAYS: older ones are gone at once and purged at the next write', async () => {
    await setup({ MEMLORA_RESPONSES_RETENTION_DAYS: '2' });
    const old = await post({ user: 'alice', input: 'old' });
    const recent = await post({ user: 'alice', input: 'recent' });
    const backdate = (id: string, days: number) => h.db.sqlite.prepare('UPDATE stored_responses SET created_at = ? WHERE id = ?').run(Date.now() - days * DAY_MS, id);
    backdate(old.id, 2.01);
    backdate(recent.id, 1.99);
    await expectError(await h.req('GET', `/v1/responses/${old.id}`), 404, 'response_not_found');
    await expectError(await h.req('POST', '/v1/responses', { user: 'alice', input: 'x', previous_response_id: old.id }), 404, 'response_not_found');
    await expectError(await h.req('DELETE', `/v1/responses/${old.id}`), 404, 'response_not_found');
    expect((await h.req('GET', `/v1/responses/${recent.id}`)).status).toBe(200);
    expect(rows()).toBe(2);
    await post({ user: 'alice', input: 'new', previous_response_id: recent.id });
    expect(rows()).toBe(2); // the old one purged, the new one written
    expect(h.db.sqlite.prepare('SELECT id FROM stored_responses WHERE id = ?').get(old.id)).toBeUndefined();
    const m = await (await h.req('GET', '/metrics')).text();
    expect(m).toMatch(/^memlora_responses_stored_total 3$/m);
    expect(m).toMatch(/^memlora_responses_purged_total 1$/m);
  });

  it('with retention 0 nothing is stored: responses say store false and previous_response_id is 404 with the reason', async () => {
    await setup({ MEMLORA_RESPONSES_RETENTION_DAYS: '0' });
    const r = await post({ user: 'alice', input: 'x', store: true });
    expect(r.store).toBe(false);
    expect(rows()).toBe(0);
    const err = await expectError(await h.req('POST', '/v1/responses', { user: 'alice', input: 'x', previous_response_id: r.id }), 404, 'response_not_found');
    expect(err.message).toContain('MEMLORA_RESPONSES_RETENTION_DAYS=0');
    await expectError(await h.req('GET', `/v1/responses/${r.id}`), 404, 'response_not_found');
  });

  it('a streamed response is stored as its last event holds it, before that event is sent', async () => {
    await setup();
    const events = parseSse(await (await h.req('POST', '/v1/responses', { user: 'alice', input: 'streamed words', stream: true })).text()).map((e) => JSON.parse(e.data) as Record<string, any>);
    const last = responsesResponseSchema.parse(events.at(-1)!.response);
    expect(events[0].response).toMatchObject({ id: last.id, store: true });
    expect(last.store).toBe(true);
    expect(await json(await h.req('GET', `/v1/responses/${last.id}`))).toEqual(last);
  });

  it('a failed write answers the response with store false (logged), never fails the request', async () => {
    await setup();
    h.db.sqlite.exec('DROP TABLE stored_responses');
    const r = await post({ user: 'alice', input: 'x' });
    expect(r).toMatchObject({ store: false, output: [{ content: [{ text: 'echo x' }] }] });
    expect(await (await h.req('GET', '/metrics')).text()).toMatch(/^memlora_responses_store_failures_total 1$/m);
  });

  it('a conversation past 256 items is 422 before anything is generated', async () => {
    await setup();
    const many = (n: number) => Array.from({ length: n }, (_, i) => ({ role: 'user', content: `m${i}` }));
    const first = await post({ user: 'alice', input: many(200) });
    const calls = gen.calls.length;
    const err = await expectError(await h.req('POST', '/v1/responses', { user: 'alice', input: many(56), previous_response_id: first.id }), 422, 'validation_failed');
    expect(err.details.issues[0]).toMatchObject({ path: 'input', code: 'too_big' });
    expect(gen.calls).toHaveLength(calls);
    await post({ user: 'alice', input: many(55), previous_response_id: first.id });
  });
});

describe('truncation auto', () => {
  // The fake tokenizer: one token per character of the messages' contents, plus BOS; a 512-token window.
  const long = (n: number) => Array.from({ length: n }, (_, i) => ({ role: 'user', content: String(i).padStart(100, '-') }));
  const sent = () => gen.calls.at(-1)!.req.messages!.map((m) => m.content);

  it('drops the oldest items, as few as let the prompt and max_output_tokens fit the window; the stored response keeps what was read', async () => {
    await setup();
    // A conversation that fits is sent whole, measured once.
    const small = await post({ user: 'alice', input: long(3), truncation: 'auto', max_output_tokens: 100 });
    expect(small.truncation).toBe('auto');
    expect(sent()).toHaveLength(3);
    expect(gen.tokenizeCalls).toHaveLength(1);
    // 10 items of 100 tokens with 100 for the reply: the last 4 fit (1 + 8 + 400 + 100 <= 512), 5 would not.
    const cut = await post({ user: 'alice', instructions: 'be brief', input: long(10), truncation: 'auto', max_output_tokens: 100 });
    expect(sent()).toEqual(['be brief', ...long(10).slice(6).map((m) => m.content)]);
    const read = responsesInputItemListSchema.parse(await json(await h.req('GET', `/v1/responses/${cut.id}/input_items?order=asc`)));
    expect(read.data.map((i) => (i.type === 'message' ? i.content[0].text : ''))).toEqual(long(10).slice(6).map((m) => m.content));
    // Disabled (the default): all of it reaches the engine, which judges the window.
    const whole = await post({ user: 'alice', input: long(10), max_output_tokens: 100 });
    expect(whole.truncation).toBe('disabled');
    expect(sent()).toHaveLength(10);
  });

  it('where no cut leaves room for max_output_tokens, keeps what fits the prompt alone; a chain stays within the window', async () => {
    await setup();
    await post({ user: 'alice', input: long(10), truncation: 'auto', max_output_tokens: 500 });
    expect(sent()).toHaveLength(5); // 1 + 500 < 512; 6 items would fill it
    // Each turn continues the last, and reads only what fits.
    let last = await post({ user: 'alice', input: long(3), truncation: 'auto', max_output_tokens: 100 });
    for (let turn = 0; turn < 4; turn++) {
      last = await post({ user: 'alice', input: long(2), truncation: 'auto', max_output_tokens: 100, previous_response_id: last.id });
      const tokens = 1 + sent().join('').length;
      expect(tokens + 100).toBeLessThanOrEqual(512);
      expect(tokens + 100 + 110).toBeGreaterThan(512); // nothing dropped that would have fit
    }
  });

  it('never starts the conversation at a function call\'s output without its call', async () => {
    await setup();
    const pad = 'x'.repeat(400);
    const withCall = (args: string) =>
      post({
        user: 'alice',
        truncation: 'auto',
        max_output_tokens: 100,
        input: [
          { role: 'user', content: pad },
          { type: 'function_call', call_id: 'c1', name: 'f', arguments: args },
          { type: 'function_call_output', call_id: 'c1', output: 'ok' },
          { role: 'user', content: 'and now?' },
        ],
      });
    await withCall(pad);
    // Cut before the call, 431 tokens and 100 for the reply do not fit; the output alone may not open the conversation.
    expect(sent()).toEqual(['and now?']);
    await withCall('{}');
    expect(sent()).toEqual(['{"f": {}}', 'Result of f: ok', 'and now?']);
  });

  it('past 256 messages drops the oldest instead of refusing; 503 where the server cannot count tokens', async () => {
    await setup();
    // One token each, so that the window holds them all: 200 + the reply + 100 = 301 items, of which the last 255 go with the instructions.
    const many = (n: number, from: string) => Array.from({ length: n }, (_, i) => ({ role: 'user', content: String.fromCharCode(from.charCodeAt(0) + i) }));
    const first = await post({ user: 'alice', input: many(200, 'A') });
    await post({ user: 'alice', instructions: 'h', input: many(100, '\u0400'), previous_response_id: first.id, truncation: 'auto', max_output_tokens: 10 });
    const reply = (first.output[0] as { content: Array<{ text: string }> }).content[0].text;
    expect(sent()).toEqual(['h', ...many(200, 'A').slice(46).map((m) => m.content), reply, ...many(100, '\u0400').map((m) => m.content)]);
    delete (gen as { tokenize?: unknown }).tokenize;
    await expectError(await h.req('POST', '/v1/responses', { user: 'alice', input: 'x', truncation: 'auto' }), 503, 'model_unavailable');
    await expectError(await h.req('POST', '/v1/responses', { user: 'alice', input: 'x', truncation: 'sometimes' }), 422, 'validation_failed');
  });

  it('POST /v1/responses/input_tokens counts what the model would read for such a request (its conversation continued, cut with truncation auto), generating nothing', async () => {
    await setup();
    const tokens = async (messages: unknown[]) => (await json<{ count: number }>(await h.req('POST', '/tokenize', { messages }))).count;
    const count = async (body: Record<string, unknown>) => {
      const res = await h.req('POST', '/v1/responses/input_tokens', body);
      expect(res.status).toBe(200);
      return json<{ object: string; input_tokens: number }>(res);
    };
    expect(await count({ user: 'alice', input: 'hello there', instructions: 'be kind' })).toEqual({ object: 'response.input_tokens', input_tokens: await tokens([{ role: 'system', content: 'be kind' }, { role: 'user', content: 'hello there' }]) });
    const first = await post({ user: 'alice', input: 'hello there' });
    const calls = gen.calls.length;
    const whole = [{ role: 'user', content: 'hello there' }, { role: 'assistant', content: 'echo hello there' }];
    expect((await count({ model: 'memlora:alice', previous_response_id: first.id })).input_tokens).toBe(await tokens(whole));
    expect((await count({ user: 'alice', previous_response_id: first.id, input: 'and?' })).input_tokens).toBe(await tokens([...whole, { role: 'user', content: 'and?' }]));
    const conv = (await json<{ id: string }>(await h.req('POST', '/v1/conversations', { items: whole }))).id;
    expect((await count({ user: 'alice', conversation: conv })).input_tokens).toBe(await tokens(whole));
    // Past the window (the fake's 512): truncation auto counts what would be kept.
    const long = Array.from({ length: 40 }, (_, i) => ({ role: 'user', content: `line ${i} `.repeat(3) }));
    const cut = (await count({ user: 'alice', input: long, truncation: 'auto', max_output_tokens: 16 })).input_tokens;
    expect(cut).toBeLessThanOrEqual(512 - 16);
    expect(cut).toBeGreaterThan(512 - 16 - 40);
    expect(gen.calls).toHaveLength(calls);
    await expectError(await h.req('POST', '/v1/responses/input_tokens', { user: 'alice' }), 422, 'validation_failed');
    await expectError(await h.req('POST', '/v1/responses/input_tokens', { user: 'carol', input: 'x' }), 404, 'user_not_found');
    await h.req('PUT', '/v1/users/bob');
    await expectError(await h.req('POST', '/v1/responses/input_tokens', { user: 'bob', previous_response_id: first.id }), 404, 'response_not_found');
  });
});
