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
      store: true,
      metadata: { session: 's1' },
    });
    expect(res.status).toBe(200);
    const body = responsesResponseSchema.parse(await json(res));
    const key = body.id.slice('resp_'.length);
    expect(key).toMatch(/^[0-9a-f]{24}$/);
    expect(body).toMatchObject({
      object: 'response',
      status: 'incomplete',
      incomplete_details: { reason: 'max_output_tokens' },
      instructions: 'be kind',
      max_output_tokens: 2,
      model: 'memlora:alice',
      output: [{ type: 'message', id: `msg_${key}`, status: 'incomplete', role: 'assistant', content: [{ type: 'output_text', text: 'echo good', annotations: [], logprobs: [] }] }],
      temperature: 0.5,
      top_p: 0.8,
      usage: { input_tokens: 7, output_tokens: 2, total_tokens: 9, input_tokens_details: { cached_tokens: 0 } },
      memlora: { personalization: { mode: 'injected', adapterVersion: 3 } },
      store: true,
      previous_response_id: null,
      metadata: { session: 's1' },
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
      skipSpecialTokens: true,
    });
  });

  it('takes a text input, the user by `user`, memlora defaults and extensions (mode, seed), and text.format as a response format', async () => {
    await setup();
    const body = responsesResponseSchema.parse(await json(await h.req('POST', '/v1/responses', { user: 'alice', input: 'hi there', mode: 'vanilla', seed: 42 })));
    expect(body).toMatchObject({ status: 'completed', incomplete_details: null, instructions: null, max_output_tokens: 128, temperature: 0, top_p: 1, text: { format: { type: 'text' } } });
    expect(body.output[0]).toMatchObject({ type: 'message', content: [{ text: 'echo hi there' }] });
    expect(gen.calls[0].req).toMatchObject({ userId: 'alice', messages: [{ role: 'user', content: 'hi there' }], maxTokens: 128, mode: 'vanilla', seed: 42 });
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

  it('include message.output_text.logprobs with top_logprobs: each output token\'s log-probability and alternatives, plain and in the stream\'s deltas', async () => {
    await setup();
    gen.replyText = 'one two three';
    const body = { user: 'alice', input: 'x', include: ['message.output_text.logprobs'], top_logprobs: 2 };
    const plain = responsesResponseSchema.parse(await json(await h.req('POST', '/v1/responses', body)));
    expect(gen.calls[0].req).toMatchObject({ logprobs: true, topLogprobs: 2 });
    const part = (plain.output[0] as { content: Array<{ logprobs: Array<{ token: string; logprob: number; top_logprobs: unknown[] }> }> }).content[0];
    expect(part.logprobs.map((l) => l.token)).toEqual(['one', ' two', ' three']);
    expect(part.logprobs.map((l) => l.logprob)).toEqual([-0.1, -0.2, -0.3]);
    expect(part.logprobs.every((l) => l.top_logprobs.length === 2)).toBe(true);
    const events = parseSse(await (await h.req('POST', '/v1/responses', { ...body, stream: true })).text()).map((e) => JSON.parse(e.data) as Record<string, any>);
    const streamed = events.filter((e) => e.type === 'response.output_text.delta').flatMap((e) => e.logprobs);
    expect(streamed).toEqual(part.logprobs);
    expect(events.find((e) => e.type === 'response.output_text.done')!.logprobs).toEqual(part.logprobs);
    // Not asked: none.
    const none = responsesResponseSchema.parse(await json(await h.req('POST', '/v1/responses', { user: 'alice', input: 'x' })));
    expect((none.output[0] as { content: Array<{ logprobs: unknown[] }> }).content[0].logprobs).toEqual([]);
    expect(gen.calls.at(-1)!.req.logprobs).toBe(false);
  });

  it('function tools: calls come back as function_call items (plain and streamed as the API\'s events), the conversation\'s calls and outputs reach the model, tool_choice guides', async () => {
    await setup();
    const weather = { type: 'function', name: 'get_weather', description: 'The weather in a city', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } };
    const time = { type: 'function', name: 'get_time' };
    gen.replyText = '{"get_weather": {"city": "Lyon"}} as asked';
    const plain = responsesResponseSchema.parse(await json(await h.req('POST', '/v1/responses', { user: 'alice', input: 'Weather in Lyon?', tools: [weather, time] })));
    const k = plain.id.slice('resp_'.length);
    expect(plain.output).toEqual([
      { type: 'function_call', id: `fc_${k}_0`, call_id: `call_${k}_0`, name: 'get_weather', arguments: '{"city":"Lyon"}', status: 'completed' },
      { type: 'message', id: `msg_${k}`, status: 'completed', role: 'assistant', content: [{ type: 'output_text', text: ' as asked', annotations: [], logprobs: [] }] },
    ]);
    expect(plain.tools).toEqual([weather, time]);
    // The model was told of the tools, in chat's form, before the conversation.
    expect(gen.calls[0].req.messages![0].content).toContain('get_weather');
    expect(gen.calls[0].req.messages!.at(-1)).toEqual({ role: 'user', content: 'Weather in Lyon?' });
    // Streamed: the call's item, its arguments in pieces, then the message of the text after it.
    const events = parseSse(await (await h.req('POST', '/v1/responses', { user: 'alice', input: 'Weather in Lyon?', tools: [weather, time], stream: true })).text()).map((e) => JSON.parse(e.data) as Record<string, any>);
    const types = events.map((e) => e.type);
    expect(types.filter((t) => t.startsWith('response.output_item.'))).toEqual(['response.output_item.added', 'response.output_item.added', 'response.output_item.done', 'response.output_item.done']);
    expect(events.find((e) => e.type === 'response.output_item.added')!.item).toMatchObject({ type: 'function_call', name: 'get_weather', arguments: '', status: 'in_progress' });
    const args = events.filter((e) => e.type === 'response.function_call_arguments.delta');
    expect(args.map((e) => e.delta).join('')).toBe('{"city":"Lyon"}');
    expect(events.find((e) => e.type === 'response.function_call_arguments.done')).toMatchObject({ output_index: 0, name: 'get_weather', arguments: '{"city":"Lyon"}' });
    expect(events.filter((e) => e.type === 'response.output_text.delta').map((e) => e.delta).join('')).toBe(' as asked');
    const last = responsesResponseSchema.parse(events.at(-1)!.response);
    expect(last.output.map((o) => o.type)).toEqual(['function_call', 'message']);
    expect(events.filter((e) => e.type === 'response.output_item.done').map((e) => e.item)).toEqual(last.output);
    expect(events.map((e) => e.sequence_number)).toEqual(events.map((_, i) => i));
    // A call with nothing after it: no message item.
    gen.replyText = '{"get_time": {}}';
    const only = responsesResponseSchema.parse(await json(await h.req('POST', '/v1/responses', { user: 'alice', input: 'x', tools: [weather, time], tool_choice: { type: 'function', name: 'get_time' } })));
    const ko = only.id.slice('resp_'.length);
    expect(only.output).toEqual([{ type: 'function_call', id: `fc_${ko}_0`, call_id: `call_${ko}_0`, name: 'get_time', arguments: '{}', status: 'completed' }]);
    // tool_choice naming a function: the reply is guided to its call, as chat guides it.
    expect(gen.calls.at(-1)!.req.responseFormat).toMatchObject({ type: 'json_schema' });
    // The conversation's calls and their outputs: an assistant turn of the calls, the results as the model reads tool messages.
    gen.replyText = 'It is sunny';
    await h.req('POST', '/v1/responses', {
      user: 'alice',
      tools: [weather],
      input: [
        { role: 'user', content: 'Weather in Lyon?' },
        { type: 'function_call', call_id: 'call_1', name: 'get_weather', arguments: '{"city":"Lyon"}' },
        { type: 'function_call_output', call_id: 'call_1', output: [{ type: 'input_text', text: '{"sky":' }, { type: 'input_text', text: '"sunny"}' }] },
      ],
    });
    expect(gen.calls.at(-1)!.req.messages!.slice(1)).toEqual([
      { role: 'user', content: 'Weather in Lyon?' },
      { role: 'assistant', content: '{"get_weather": {"city":"Lyon"}}' },
      { role: 'user', content: 'Result of get_weather: {"sky":"sunny"}' },
    ]);
    // Text under tools is one message.
    const words = responsesResponseSchema.parse(await json(await h.req('POST', '/v1/responses', { user: 'alice', input: 'x', tools: [weather] })));
    expect(words.output).toEqual([{ type: 'message', id: words.id.replace('resp_', 'msg_'), status: 'completed', role: 'assistant', content: [{ type: 'output_text', text: 'It is sunny', annotations: [], logprobs: [] }] }]);
  });

  it('refuses what it cannot do (422, nothing generated), an unknown user (404), and answers 503 without a model', async () => {
    await setup();
    for (const body of [
      { input: 'x' },
      { user: 'alice', model: 'memlora:bob', input: 'x' },
      { user: 'alice', input: '' },
      { user: 'alice', input: [] },
      { user: 'alice', input: [{ role: 'user', content: [{ type: 'input_image', image_url: 'https://x/y.png' }] }] },
      { user: 'alice', input: [{ type: 'function_call_output', call_id: 'c1', output: [{ type: 'input_image', image_url: 'https://x/y.png' }] }] },
      { user: 'alice', input: 'x', background: true, store: false },
      { user: 'alice', input: 'x', tools: [{ type: 'web_search' }] },
      { user: 'alice', input: 'x', tool_choice: 'required' },
      { user: 'alice', input: 'x', tools: [{ type: 'function', name: 'f' }], tool_choice: { type: 'function', name: 'g' } },
      { user: 'alice', input: [{ type: 'function_call_output', output: '{}' }] },
      { user: 'alice', input: 'x', reasoning: { effort: 'high' } },
      { user: 'alice', input: 'x', include: ['reasoning.encrypted_content'] },
      { user: 'alice', input: 'x', top_logprobs: 21 },
      { user: 'alice', input: 'x', prompt: { id: 'pmpt_1' } },
      { user: 'alice', input: 'x', max_output_tokens: 0 },
      { user: 'alice', input: 'x', text: { format: { type: 'json_schema', schema: {} } } },
      { user: 'alice', input: 'x', text: { format: { type: 'xml' } } },
      { user: 'alice', input: 'x', metadata: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v'])) },
      { user: 'alice', input: 'x', metadata: { k: 'v'.repeat(513) } },
      { user: 'alice', input: 'x', metadata: { ['k'.repeat(65)]: 'v' } },
      { user: 'alice', input: 'x', metadata: { k: 1 } },
    ]) {
      await expectError(await h.req('POST', '/v1/responses', body), 422, 'validation_failed');
    }
    // What asks for nothing passes: empty tools and include, a null reasoning, background false.
    const res = await h.req('POST', '/v1/responses', { user: 'alice', input: 'x', tools: [], include: [], reasoning: { effort: null }, background: false, previous_response_id: null });
    expect(res.status).toBe(200);
    await expectError(await h.req('POST', '/v1/responses', { user: 'bob', input: 'x' }), 404, 'user_not_found');
    await expectError(await h.req('POST', '/v1/responses', { user: 'alice', input: 'x', previous_response_id: 'resp_1' }), 404, 'response_not_found');
    await expectError(await h.req('POST', '/v1/responses', { user: 'alice', input: 'x', conversation: 'conv_1' }), 404, 'conversation_not_found');
    expect(gen.calls).toHaveLength(1);
    await setup(false);
    await expectError(await h.req('POST', '/v1/responses', { user: 'alice', input: 'x' }), 503, 'model_unavailable');
  });
});
