import { afterEach, describe, expect, it } from 'vitest';
import { ServiceError } from '../../src/http/services.js';
import { responsesResponseSchema } from '../../src/http/schemas.js';
import { fakeGenerateApp, parseSse, type FakeGenerate } from './fake-generate.js';
import { expectError, json, type Harness } from './helpers.js';

let h: Harness;
let gen: FakeGenerate;
afterEach(() => h?.cleanup());

async function setup(withService = true) {
  ({ h, gen } = await fakeGenerateApp(withService));
}

describe('POST /v1/responses', () => {
  it('maps instructions and input onto GenerateService and answers a response object', async () => {
    await setup();
    const res = await h.req('POST', '/v1/responses', {
      model: 'memlora:alice',
      instructions: 'be kind',
      input: [
        { role: 'developer', content: 'short answers' },
        { type: 'message', role: 'assistant', content: [{ type: 'output_text', text: 'hello' }] },
        { role: 'user', content: [{ type: 'input_text', text: 'good ' }, { type: 'input_text', text: 'morning' }] },
      ],
      max_output_tokens: 2,
      temperature: 0.5,
      top_p: 0.8,
      store: true, // accepted: nothing is stored either way
      metadata: { session: 's1' },
    });
    expect(res.status).toBe(200);
    const body = responsesResponseSchema.parse(await json(res));
    expect(body).toMatchObject({
      id: 'resp_test1',
      object: 'response',
      status: 'incomplete',
      incomplete_details: { reason: 'max_output_tokens' },
      instructions: 'be kind',
      max_output_tokens: 2,
      model: 'memlora:alice',
      output: [{ type: 'message', id: 'msg_test1', status: 'incomplete', role: 'assistant', content: [{ type: 'output_text', text: 'echo good', annotations: [] }] }],
      temperature: 0.5,
      top_p: 0.8,
      usage: { input_tokens: 7, output_tokens: 2, total_tokens: 9, input_tokens_details: { cached_tokens: 0 } },
      memlora: { personalization: { mode: 'injected', adapterVersion: 3 } },
    });
    expect(gen.calls[0].req).toEqual({
      userId: 'alice',
      messages: [
        { role: 'system', content: 'be kind' },
        { role: 'system', content: 'short answers' },
        { role: 'assistant', content: 'hello' },
        { role: 'user', content: 'good morning' },
      ],
      maxTokens: 2,
      temperature: 0.5,
      topP: 0.8,
      stop: [],
      stream: false,
      mode: 'auto',
      logprobs: false,
    });
  });

  it('takes a text input, the user by `user`, memlora defaults, and text.format as a response format', async () => {
    await setup();
    const body = responsesResponseSchema.parse(await json(await h.req('POST', '/v1/responses', { user: 'alice', input: 'hi there', mode: 'vanilla' })));
    expect(body).toMatchObject({ status: 'completed', incomplete_details: null, instructions: null, max_output_tokens: 128, temperature: 0, top_p: 1, text: { format: { type: 'text' } } });
    expect(body.output[0].content[0].text).toBe('echo hi there');
    expect(gen.calls[0].req).toMatchObject({ userId: 'alice', messages: [{ role: 'user', content: 'hi there' }], maxTokens: 128, mode: 'vanilla' });
    const schema = { type: 'object', properties: { a: { type: 'integer' } }, required: ['a'] };
    const formats = [
      [{ type: 'json_schema', name: 'nums', schema, strict: true }, { type: 'json_schema', jsonSchema: { name: 'nums', schema, strict: true } }],
      [{ type: 'json_object' }, { type: 'json_object' }],
      [{ type: 'text' }, { type: 'text' }],
    ] as const;
    for (const [format, want] of formats) {
      const res = responsesResponseSchema.parse(await json(await h.req('POST', '/v1/responses', { user: 'alice', input: 'x', text: { format } })));
      expect(gen.calls.at(-1)!.req.responseFormat).toEqual(want);
      expect(res.text.format).toEqual(format);
    }
  });

  it('streams the Responses API events in order: the deltas add up to the text, the last event holds the whole response', async () => {
    await setup();
    gen.replyText = 'one two three';
    const res = await h.req('POST', '/v1/responses', { user: 'alice', input: 'x', stream: true });
    expect(res.headers.get('content-type')).toContain('text/event-stream');
    const events = parseSse(await res.text()).map((e) => ({ event: e.event, data: JSON.parse(e.data) as Record<string, any> }));
    const types = events.map((e) => e.event);
    expect(types).toEqual([
      'response.created',
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
    for (const [i, e] of events.entries()) {
      expect(e.data.type).toBe(e.event);
      expect(e.data.sequence_number).toBe(i);
    }
    const first = responsesResponseSchema.parse(events[0].data.response);
    expect(first).toMatchObject({ status: 'in_progress', output: [], usage: null, memlora: null });
    const deltas = events.filter((e) => e.event === 'response.output_text.delta').map((e) => e.data.delta as string);
    expect(deltas.join('')).toBe('one two three');
    expect(events[7].data.text).toBe('one two three');
    const last = responsesResponseSchema.parse(events.at(-1)!.data.response);
    expect(last.id).toBe(first.id);
    expect(last).toMatchObject({ status: 'completed', output: [{ id: events[2].data.item.id, content: [{ text: 'one two three' }] }], usage: { output_tokens: 3 } });
    // Cut by max_output_tokens: the stream ends with response.incomplete.
    const cut = parseSse(await (await h.req('POST', '/v1/responses', { user: 'alice', input: 'x', stream: true, max_output_tokens: 1 })).text());
    expect(cut.at(-1)!.event).toBe('response.incomplete');
    expect(JSON.parse(cut.at(-1)!.data).response.incomplete_details).toEqual({ reason: 'max_output_tokens' });
  });

  it('a failure after the stream began is an error event; before it, an HTTP error', async () => {
    await setup();
    gen.failMidway = new ServiceError('shutting_down', 'going away');
    const events = parseSse(await (await h.req('POST', '/v1/responses', { user: 'alice', input: 'a b c', stream: true })).text());
    expect(events.at(-1)!.event).toBe('error');
    expect(JSON.parse(events.at(-1)!.data)).toMatchObject({ type: 'error', code: 'shutting_down', message: 'going away' });
    gen.failMidway = undefined;
    gen.failWith = new ServiceError('queue_full', 'full', { retryAfterS: 2 });
    const full = await h.req('POST', '/v1/responses', { user: 'alice', input: 'x', stream: true });
    await expectError(full, 429, 'queue_full');
    expect(full.headers.get('retry-after')).toBe('2');
  });

  it('refuses what it cannot do (422, nothing generated), an unknown user (404), and answers 503 without a model', async () => {
    await setup();
    for (const body of [
      { input: 'x' },
      { user: 'alice', model: 'memlora:bob', input: 'x' },
      { user: 'alice', input: '' },
      { user: 'alice', input: [] },
      { user: 'alice', input: [{ role: 'user', content: [{ type: 'input_image', image_url: 'https://x/y.png' }] }] },
      { user: 'alice', input: [{ type: 'function_call_output', call_id: 'c1', output: '{}' }] },
      { user: 'alice', input: 'x', previous_response_id: 'resp_1' },
      { user: 'alice', input: 'x', conversation: 'conv_1' },
      { user: 'alice', input: 'x', background: true },
      { user: 'alice', input: 'x', tools: [{ type: 'function', name: 'f' }] },
      { user: 'alice', input: 'x', tool_choice: 'required' },
      { user: 'alice', input: 'x', reasoning: { effort: 'high' } },
      { user: 'alice', input: 'x', include: ['message.output_text.logprobs'] },
      { user: 'alice', input: 'x', prompt: { id: 'pmpt_1' } },
      { user: 'alice', input: 'x', max_output_tokens: 0 },
      { user: 'alice', input: 'x', text: { format: { type: 'json_schema', schema: {} } } },
      { user: 'alice', input: 'x', text: { format: { type: 'xml' } } },
    ]) {
      await expectError(await h.req('POST', '/v1/responses', body), 422, 'validation_failed');
    }
    // What asks for nothing passes: empty tools and include, a null reasoning, background false.
    const res = await h.req('POST', '/v1/responses', { user: 'alice', input: 'x', tools: [], include: [], reasoning: { effort: null }, background: false, previous_response_id: null });
    expect(res.status).toBe(200);
    await expectError(await h.req('POST', '/v1/responses', { user: 'bob', input: 'x' }), 404, 'user_not_found');
    expect(gen.calls).toHaveLength(1);
    await setup(false);
    await expectError(await h.req('POST', '/v1/responses', { user: 'alice', input: 'x' }), 503, 'model_unavailable');
  });
});
