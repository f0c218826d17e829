/** Function calling on chat completions: the tool-call format, the rendering of calls and results, and the route's validation (the engine's guiding is tested through the real server). */
import { afterEach, describe, expect, it } from 'vitest';
import { callOf, callText, serveMessages, toolCallFormat } from '../../src/http/tools.js';
import { fakeGenerateApp, type FakeGenerate } from './fake-generate.js';
import { expectError, type Harness } from './helpers.js';

let h: Harness;
let gen: FakeGenerate;
afterEach(() => h?.cleanup());

const weather = { type: 'function' as const, function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } };
const time = { type: 'function' as const, function: { name: 'get_time' } };

describe('tool calls', () => {
  it('a call asked for (required, or named) is one member named after a function, of its parameters; auto and none ask for none', () => {
    expect(toolCallFormat({ tools: [weather, time], tool_choice: 'required' })).toEqual({
      type: 'json_schema',
      jsonSchema: {
        name: 'tool_call',
        schema: {
          type: 'object',
          properties: { get_weather: weather.function.parameters, get_time: { type: 'object', properties: {}, additionalProperties: false } },
          minProperties: 1,
          maxProperties: 1,
          additionalProperties: false,
        },
      },
    });
    const named = toolCallFormat({ tools: [weather, time], tool_choice: { type: 'function', function: { name: 'get_time' } } });
    expect(named).toMatchObject({ jsonSchema: { schema: { properties: { get_time: { type: 'object' } } } } });
    expect(Object.keys((named as unknown as { jsonSchema: { schema: { properties: object } } }).jsonSchema.schema.properties)).toEqual(['get_time']);
    for (const tool_choice of ['auto', 'none', undefined] as const) expect(toolCallFormat({ tools: [weather], tool_choice })).toBeUndefined();
    // The reply's text back to a call; anything else is no call.
    expect(callOf(' {"get_weather" : {"city": "Lyon"}}\n')).toEqual({ name: 'get_weather', arguments: '{"city":"Lyon"}' });
    expect(callOf(callText('get_time', '{}'))).toEqual({ name: 'get_time', arguments: '{}' });
    for (const text of ['{"a": {}, "b": {}}', '{}', '{"a": ', '[{"a": 1}]', 'hello']) expect(callOf(text), text).toBeNull();
  });

  it('calls and results in the conversation are shown to the model as it writes calls, results as user turns naming the function', () => {
    const messages = serveMessages([
      { role: 'user', content: 'Weather in Lyon?' },
      { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Lyon"}' } }] },
      { role: 'tool', tool_call_id: 'call_1', content: '21 °C, sunny' },
      { role: 'tool', tool_call_id: 'call_unknown', content: [{ type: 'text', text: 'late' }] },
      { role: 'developer', content: 'Be brief.' },
    ]);
    expect(messages).toEqual([
      { role: 'user', content: 'Weather in Lyon?' },
      { role: 'assistant', content: '{"get_weather": {"city":"Lyon"}}' },
      { role: 'user', content: 'Result of get_weather: 21 °C, sunny' },
      { role: 'user', content: 'Result of the tool call: late' },
      { role: 'system', content: 'Be brief.' },
    ]);
  });

  it('the route guides a requested call, takes tool messages, and refuses choices it cannot honour with 422 before the service', async () => {
    ({ h, gen } = await fakeGenerateApp());
    const msg = [{ role: 'user', content: 'Weather in Lyon?' }];
    expect((await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: msg, tools: [weather], tool_choice: 'required' })).status).toBe(200);
    expect(gen.calls[0].req.responseFormat).toEqual(toolCallFormat({ tools: [weather], tool_choice: 'required' }));
    // auto (OpenAI's default with tools): free text.
    await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: msg, tools: [weather] });
    expect(gen.calls[1].req.responseFormat).toBeUndefined();
    const conversation = [...msg, { role: 'assistant', tool_calls: [{ id: 'c1', type: 'function', function: { name: 'get_weather', arguments: '{}' } }] }, { role: 'tool', tool_call_id: 'c1', content: 'sunny' }];
    expect((await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: conversation, tools: [weather] })).status).toBe(200);
    expect(gen.calls[2].req.messages?.at(-1)).toEqual({ role: 'user', content: 'Result of get_weather: sunny' });
    for (const body of [
      { tool_choice: 'required' },
      { tools: [weather], tool_choice: { type: 'function', function: { name: 'get_time' } } },
      { tools: [weather, weather] },
      { tools: [{ type: 'function', function: { name: 'bad name' } }] },
      { tools: [weather], tool_choice: 'required', response_format: { type: 'json_object' } },
      { tools: [weather], tool_choice: 'required', guided_regex: 'a+' },
      { tools: [weather], tool_choice: 'sometimes' },
    ]) {
      await expectError(await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: msg, ...body }), 422, 'validation_failed');
    }
    for (const messages of [[{ role: 'tool', content: 'x' }], [{ role: 'assistant', content: null }], [{ role: 'user', content: 'x', tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: '{}' } }] }]]) {
      await expectError(await h.req('POST', '/v1/chat/completions', { user: 'alice', messages }), 422, 'validation_failed');
    }
    expect(gen.calls).toHaveLength(3);
  });
});
