import { afterEach, describe, expect, it } from 'vitest';
import { storeResponse, updateStoredResponse } from '../../src/db/queries/responses.js';
import { responsesResponseSchema } from '../../src/http/schemas.js';
import { ServiceError } from '../../src/http/services.js';
import { fakeGenerateApp, parseSse, type FakeGenerate } from './fake-generate.js';
import { expectError, json, until, type Harness } from './helpers.js';

let h: Harness;
let gen: FakeGenerate;
afterEach(() => h?.cleanup());

async function setup(env: Record<string, string> = {}) {
  ({ h, gen } = await fakeGenerateApp(true, env));
}

type Response = ReturnType<typeof responsesResponseSchema.parse>;
const read = async (id: string): Promise<Response> => {
  const res = await h.req('GET', `/v1/responses/${id}`);
  expect(res.status).toBe(200);
  return responsesResponseSchema.parse(await json(res));
};
const start = async (body: Record<string, unknown>): Promise<Response> => {
  const res = await h.req('POST', '/v1/responses', { user: 'alice', background: true, ...body });
  expect(res.status).toBe(200);
  return responsesResponseSchema.parse(await json(res));
};
const storedStatus = (id: string) => JSON.parse((h.db.sqlite.prepare('SELECT response FROM stored_responses WHERE id = ?').get(id) as { response: string }).response).status as string;
const conversationItems = (id: string) => (h.db.sqlite.prepare('SELECT count(*) AS n FROM conversation_items WHERE conversation_id = ?').get(id) as { n: number }).n;
/** Reads the response until its status is `status` (the run moves on between reads). */
async function untilStatus(id: string, status: string): Promise<Response> {
  for (let i = 0; i < 500; i++) {
    const r = await read(id);
    if (r.status === status) return r;
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  throw new Error(`response ${id} never reached ${status}`);
}
const events = (text: string) => parseSse(text).map((e) => ({ event: e.event, data: JSON.parse(e.data) as Record<string, any> }));

describe('background responses (background: true)', () => {
  it('answers at once as queued, stored; runs apart from the request; reads back done, and is continued like any response', async () => {
    await setup();
    gen.hangAfterFirst = true;
    const queued = await start({ input: 'one two three', metadata: { job: '7' } });
    expect(queued).toMatchObject({ status: 'queued', background: true, store: true, output: [], usage: null, metadata: { job: '7' } });
    expect(storedStatus(queued.id)).toBe('queued');
    // The run is the engine's from now on: this request's end did not stop it. Its first token: running.
    const running = await untilStatus(queued.id, 'in_progress');
    expect(running).toMatchObject({ output: [], usage: null });
    expect(storedStatus(queued.id)).toBe('queued');
    expect(gen.calls[0].signal.aborted).toBe(false);

    // A run to its end: completed, stored as such, counted.
    gen.hangAfterFirst = false;
    const second = await start({ input: 'four five' });
    await until(() => storedStatus(second.id) === 'completed');
    const done = await read(second.id);
    expect(done).toMatchObject({ status: 'completed', background: true, error: null, output: [{ type: 'message', status: 'completed', content: [{ text: 'echo four five' }] }] });
    expect(done.usage).not.toBeNull();
    expect(await (await h.req('GET', '/metrics')).text()).toMatch(/^memlora_responses_background_total\{status="completed"\} 1$/m);
    // Continued as any stored response is.
    const next = await h.req('POST', '/v1/responses', { user: 'alice', input: 'six', previous_response_id: second.id });
    expect(next.status).toBe(200);
    expect(gen.calls.at(-1)!.req.messages!.map((m) => m.content)).toEqual(['four five', 'echo four five', 'six']);
    // The one still running cannot be continued yet (409), and nothing is generated for it.
    const calls = gen.calls.length;
    const err = await expectError(await h.req('POST', '/v1/responses', { user: 'alice', input: 'x', previous_response_id: queued.id }), 409, 'response_in_progress');
    expect(err.details).toMatchObject({ id: queued.id });
    expect(gen.calls).toHaveLength(calls);
    expect((await read(queued.id)).status).toBe('in_progress');
    expect(await (await h.req('GET', '/metrics')).text()).toMatch(/^memlora_responses_background_running 1$/m);
    await h.req('POST', `/v1/responses/${queued.id}/cancel`);
  });

  it('cancel stops a running response: cancelled with what it wrote, stored, idempotent; its conversation is left as it was', async () => {
    await setup();
    gen.hangAfterFirst = true;
    const conv = (await json<{ id: string }>(await h.req('POST', '/v1/conversations', { items: [{ role: 'user', content: 'hi' }] }))).id;
    const queued = await start({ input: 'alpha beta gamma', conversation: conv });
    await untilStatus(queued.id, 'in_progress');

    const res = await h.req('POST', `/v1/responses/${queued.id}/cancel`);
    expect(res.status).toBe(200);
    const cancelled = responsesResponseSchema.parse(await json(res));
    expect(gen.calls[0].signal.aborted).toBe(true);
    expect(cancelled).toMatchObject({ id: queued.id, status: 'cancelled', output: [{ type: 'message', status: 'incomplete', content: [{ text: 'echo' }] }] });
    expect(storedStatus(queued.id)).toBe('cancelled');
    expect(await read(queued.id)).toEqual(cancelled);
    // Cancelling again answers the response as it is.
    expect(await json(await h.req('POST', `/v1/responses/${queued.id}/cancel`))).toEqual(cancelled);
    expect(conversationItems(conv)).toBe(1);
    expect(await (await h.req('GET', '/metrics')).text()).toMatch(/^memlora_responses_background_total\{status="cancelled"\} 1$/m);
    // A cancelled response may be continued: it holds what it wrote.
    gen.hangAfterFirst = false;
    expect((await h.req('POST', '/v1/responses', { user: 'alice', input: 'x', previous_response_id: queued.id })).status).toBe(200);
  });

  it('streams its events numbered from 0 (created, queued, in_progress, ...), and GET ?stream=true replays them from starting_after', async () => {
    await setup();
    const res = await h.req('POST', '/v1/responses', { user: 'alice', input: 'red green', background: true, stream: true });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/event-stream');
    const sent = events(await res.text());
    expect(sent.map((e) => e.event)).toEqual([
      'response.created',
      'response.queued',
      'response.in_progress',
      'response.output_item.added',
      'response.content_part.added',
      'response.output_text.delta',
      'response.output_text.delta',
      'response.output_text.delta',
      'response.output_text.done',
      'response.content_part.done',
      'response.output_item.done',
      'response.completed',
    ]);
    expect(sent.map((e) => e.data.sequence_number)).toEqual(sent.map((_, i) => i));
    expect(sent[0].data.response).toMatchObject({ status: 'queued', background: true });
    expect(sent[2].data.response.status).toBe('in_progress');
    const id = sent[0].data.response.id as string;
    expect(sent.at(-1)!.data.response).toEqual(await read(id));
    expect(sent.at(-1)!.data.response.output[0].content[0].text).toBe('echo red green');

    const again = await h.req('GET', `/v1/responses/${id}?stream=true&starting_after=4`);
    expect(again.status).toBe(200);
    expect(events(await again.text())).toEqual(sent.slice(5));
    expect(events(await (await h.req('GET', `/v1/responses/${id}?stream=true`)).text())).toEqual(sent);
    // stream=false reads the response.
    expect(await json(await h.req('GET', `/v1/responses/${id}?stream=false`))).toEqual(sent.at(-1)!.data.response);
  });

  it('a reader of a running stream gets the events as they come, and the stream ends when the response is cancelled', async () => {
    await setup();
    gen.hangAfterFirst = true;
    const queued = await start({ input: 'slow reply here' });
    const res = await h.req('GET', `/v1/responses/${queued.id}?stream=true&starting_after=0`);
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    let text = '';
    while (!text.includes('response.output_text.delta')) text += new TextDecoder().decode((await reader.read()).value);
    await h.req('POST', `/v1/responses/${queued.id}/cancel`);
    for (let r = await reader.read(); !r.done; r = await reader.read()) text += new TextDecoder().decode(r.value);
    const got = events(text);
    expect(got[0]).toMatchObject({ event: 'response.queued', data: { sequence_number: 1 } });
    // Cancelled: the stream ends after what was written, with no terminal event.
    expect(got.at(-1)!.event).toBe('response.output_text.delta');
  });

  it('a generation that fails midway leaves the response failed with the error, ending its stream with response.failed', async () => {
    await setup();
    gen.failMidway = new Error('decoder crashed');
    const res = await h.req('POST', '/v1/responses', { user: 'alice', input: 'a b c', background: true, stream: true });
    const got = events(await res.text());
    expect(got.at(-1)).toMatchObject({ event: 'response.failed', data: { response: { status: 'failed', error: { code: 'internal', message: 'internal server error' } } } });
    const id = got[0].data.response.id as string;
    expect(await read(id)).toMatchObject({ status: 'failed', error: { code: 'internal' }, output: [] });
    expect(h.logger.lines.some((l) => l.level === 'error' && String(l.fields.err).includes('decoder crashed'))).toBe(true);
    expect(await (await h.req('GET', '/metrics')).text()).toMatch(/^memlora_responses_background_total\{status="failed"\} 1$/m);
  });

  it('refuses what it cannot run before storing anything: a full queue (429), store false (422), no storage (409)', async () => {
    await setup();
    gen.failWith = new ServiceError('queue_full', 'the generation queue is full', { retryAfterS: 2 });
    const res = await h.req('POST', '/v1/responses', { user: 'alice', input: 'x', background: true });
    await expectError(res, 429, 'queue_full');
    expect((h.db.sqlite.prepare('SELECT count(*) AS n FROM stored_responses').get() as { n: number }).n).toBe(0);
    gen.failWith = undefined;
    await expectError(await h.req('POST', '/v1/responses', { user: 'alice', input: 'x', background: true, store: false }), 422, 'validation_failed');
    h.cleanup();
    await setup({ MEMLORA_RESPONSES_RETENTION_DAYS: '0' });
    await expectError(await h.req('POST', '/v1/responses', { user: 'alice', input: 'x', background: true }), 409, 'background_disabled');
    expect(gen.calls).toHaveLength(0);
  });

  it('a background response a restart cut off runs again at the next start, from the conversation it had read; cancelled meanwhile, it does not; stored without its request, it reads as failed', async () => {
    await setup();
    gen.hangAfterFirst = true;
    const conv = (await json<{ id: string }>(await h.req('POST', '/v1/conversations', { items: [{ role: 'user', content: 'hi' }] }))).id;
    const cut = await start({ input: 'x y', conversation: conv });
    const dropped = await start({ input: 'never mind' });
    await untilStatus(cut.id, 'in_progress');
    // Given no seed, each was given one, kept with its request.
    const seeds = gen.calls.map((c) => c.req.seed);
    expect(seeds).toEqual([expect.any(Number), expect.any(Number)]);
    // A new server on the same database: the runs are gone, their rows say queued with their requests.
    h.restart();
    expect(await read(cut.id)).toMatchObject({ status: 'queued', error: null });
    const notYet = await h.req('GET', `/v1/responses/${cut.id}?stream=true`);
    expect(notYet.headers.get('retry-after')).toBe('1');
    await expectError(notYet, 409, 'stream_unavailable');
    // The start waits for the model; one cancelled meanwhile is not run.
    gen.loaded = false;
    const resuming = h.lifecycle.resume!();
    expect(await json(await h.req('POST', `/v1/responses/${dropped.id}/cancel`))).toMatchObject({ status: 'cancelled' });
    // The conversation gained an item meanwhile: the run reads what it had read.
    await h.req('POST', `/v1/conversations/${conv}/items`, { items: [{ role: 'user', content: 'later' }] });
    gen.hangAfterFirst = false;
    const calls = gen.calls.length;
    gen.loaded = true;
    expect(await resuming).toBe(1);
    const done = await untilStatus(cut.id, 'completed');
    expect(done.output).toMatchObject([{ content: [{ text: 'echo x y' }] }]);
    expect(gen.calls.slice(calls).map((c) => c.req.messages!.map((m) => m.content))).toEqual([['hi', 'x y']]);
    // With the seed it was first run with: it samples the same reply again.
    expect(gen.calls[calls].req.seed).toBe(seeds[0]);
    expect(storedStatus(dropped.id)).toBe('cancelled');
    // Added to its conversation once, after the item added meanwhile.
    const items = await json<{ data: Array<{ content: Array<{ text: string }> }> }>(await h.req('GET', `/v1/conversations/${conv}/items?order=asc`));
    expect(items.data.map((i) => i.content[0].text)).toEqual(['hi', 'later', 'x y', 'echo x y']);
    expect(await h.lifecycle.resume!()).toBe(0);

    // Stored pending without its request (before memlora kept it): cut off, read as failed.
    const { background: _, ...legacy } = { ...done, id: 'resp_legacy0', status: 'queued' };
    storeResponse(h.db, { id: legacy.id, userId: 'alice', createdAt: Date.now(), previousResponseId: null, response: legacy, items: [] }, 0);
    const lost = await read(legacy.id);
    expect(lost).toMatchObject({ status: 'failed', background: false, error: { code: 'server_error' } });
    await expectError(await h.req('POST', `/v1/responses/${legacy.id}/cancel`), 409, 'response_not_cancellable');
    // It can be continued: it holds no output of its own.
    expect((await h.req('POST', '/v1/responses', { user: 'alice', input: 'y', previous_response_id: legacy.id })).status).toBe(200);
  });

  it('a resumed response cancelled while the engine takes it stays cancelled: it is not run, and its engine request is aborted', async () => {
    await setup();
    gen.hangAfterFirst = true;
    const cut = await start({ input: 'x y' });
    await untilStatus(cut.id, 'in_progress');
    h.restart();
    gen.hangAfterFirst = false;
    // The cancel lands between the start's last read of the row and the run's registration: the
    // route finds no run, so it stores the response cancelled itself, its request dropped.
    gen.onStream = () => {
      gen.onStream = undefined;
      updateStoredResponse(h.db, cut.id, { ...cut, status: 'cancelled' }, 'drop');
    };
    const calls = gen.calls.length;
    expect(await h.lifecycle.resume!()).toBe(0);
    expect(gen.calls.length).toBe(calls + 1);
    expect(gen.calls[calls].signal.aborted).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(await read(cut.id)).toMatchObject({ status: 'cancelled', output: [] });
    await expectError(await h.req('GET', `/v1/responses/${cut.id}?stream=true`), 409, 'stream_unavailable');
  });

  it('a response not in the background whose client goes away is neither stored nor added to its conversation', async () => {
    await setup();
    gen.hangAfterFirst = true;
    const conv = (await json<{ id: string }>(await h.req('POST', '/v1/conversations', { items: [{ role: 'user', content: 'hi' }] }))).id;
    for (const stream of [false, true]) {
      const ac = new AbortController();
      const sent = Promise.resolve(h.app.request(new Request('http://localhost/v1/responses', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user: 'alice', input: 'p q r', conversation: conv, stream }), signal: ac.signal })));
      await until(() => gen.calls.length === (stream ? 2 : 1));
      ac.abort();
      const res = await sent.catch(() => null);
      await res?.text().catch(() => null);
      await until(() => gen.calls.at(-1)!.signal.aborted);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect((h.db.sqlite.prepare('SELECT count(*) AS n FROM stored_responses').get() as { n: number }).n).toBe(0);
    expect(conversationItems(conv)).toBe(1);
  });

  it('one response at a time in a conversation: another meanwhile is 409 conversation_locked with Retry-After, released however the first ends', async () => {
    await setup();
    const conversation = async () => (await json<{ id: string }>(await h.req('POST', '/v1/conversations', { items: [{ role: 'user', content: 'hi' }] }))).id;
    const [conv, other] = [await conversation(), await conversation()];
    const ask = (id: string, extra: Record<string, unknown> = {}) => h.req('POST', '/v1/responses', { user: 'alice', input: 'more', conversation: id, ...extra });
    // A stream holds it until its client goes away.
    gen.hangAfterFirst = true;
    const ac = new AbortController();
    const streaming = await h.app.request(new Request('http://localhost/v1/responses', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user: 'alice', input: 'first', conversation: conv, stream: true }), signal: ac.signal }));
    const reader = streaming.body!.getReader();
    await reader.read();
    gen.hangAfterFirst = false;
    const locked = await ask(conv);
    expect(locked.headers.get('retry-after')).toBe('1');
    expect((await expectError(locked, 409, 'conversation_locked')).details).toEqual({ id: conv });
    expect(gen.calls).toHaveLength(1);
    expect((await ask(other)).status).toBe(200);
    // Nor may a client change its items meanwhile; its metadata it may.
    const firstItem = (await json<{ data: Array<{ id: string }> }>(await h.req('GET', `/v1/conversations/${conv}/items`))).data[0].id;
    await expectError(await h.req('POST', `/v1/conversations/${conv}/items`, { items: [{ role: 'user', content: 'x' }] }), 409, 'conversation_locked');
    await expectError(await h.req('DELETE', `/v1/conversations/${conv}/items/${firstItem}`), 409, 'conversation_locked');
    await expectError(await h.req('DELETE', `/v1/conversations/${conv}`), 409, 'conversation_locked');
    expect((await h.req('POST', `/v1/conversations/${conv}`, { metadata: { k: 'v' } })).status).toBe(200);
    ac.abort();
    await reader.cancel().catch(() => undefined);
    await until(() => gen.calls[0].signal.aborted);
    await new Promise((r) => setTimeout(r, 10));
    expect((await ask(conv)).status).toBe(200);
    // A background run holds it until it ends (here, cancelled).
    gen.hangAfterFirst = true;
    const queued = await start({ input: 'bg', conversation: conv });
    await untilStatus(queued.id, 'in_progress');
    await expectError(await ask(conv, { background: true }), 409, 'conversation_locked');
    await h.req('POST', `/v1/responses/${queued.id}/cancel`);
    gen.hangAfterFirst = false;
    expect((await ask(conv)).status).toBe(200);
    // A request refused by the engine releases it at once.
    gen.failWith = new ServiceError('queue_full', 'the generation queue is full', { retryAfterS: 2 });
    await expectError(await ask(conv), 429, 'queue_full');
    await expectError(await ask(conv, { background: true }), 429, 'queue_full');
    gen.failWith = undefined;
    expect((await ask(conv)).status).toBe(200);
    // The conversation: its first item, then the three responses that finished (input and output each).
    expect(conversationItems(conv)).toBe(1 + 3 * 2);
  });

  it('erasing a user (or an operator erasing their chats) stops their background responses first: nothing is written after', async () => {
    await setup();
    await h.req('PUT', '/v1/users/bob');
    gen.hangAfterFirst = true;
    const conv = (await json<{ id: string }>(await h.req('POST', '/v1/conversations', { user: 'alice', items: [{ role: 'user', content: 'hi' }] }))).id;
    const alices = await start({ input: 'one', conversation: conv });
    const bobs = await start({ user: 'bob', input: 'two' });
    await untilStatus(alices.id, 'in_progress');
    await untilStatus(bobs.id, 'in_progress');
    const erased = await h.admin('DELETE', '/v1/admin/users/alice/responses');
    expect(await json(erased)).toMatchObject({ deleted: { responses: 1, conversations: 1 } });
    expect(gen.calls[0].signal.aborted).toBe(true);
    expect(gen.calls[1].signal.aborted).toBe(false);
    await expectError(await h.req('GET', `/v1/responses/${alices.id}`), 404, 'response_not_found');
    expect((await h.req('DELETE', '/v1/users/bob')).status).toBe(200);
    expect(gen.calls[1].signal.aborted).toBe(true);
    expect((h.db.sqlite.prepare('SELECT count(*) AS n FROM stored_responses').get() as { n: number }).n).toBe(0);
    expect(h.logger.lines.filter((l) => l.level !== 'info')).toEqual([]);
  });

  it('DELETE cancels a running response before deleting it', async () => {
    await setup();
    gen.hangAfterFirst = true;
    const queued = await start({ input: 'one two' });
    await until(() => gen.calls.length === 1);
    const res = await h.req('DELETE', `/v1/responses/${queued.id}`);
    expect(await json(res)).toEqual({ id: queued.id, object: 'response', deleted: true });
    expect(gen.calls[0].signal.aborted).toBe(true);
    await expectError(await h.req('GET', `/v1/responses/${queued.id}`), 404, 'response_not_found');
    expect((h.db.sqlite.prepare('SELECT count(*) AS n FROM stored_responses').get() as { n: number }).n).toBe(0);
  });
});
