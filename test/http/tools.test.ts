/** Function calling on chat completions: the tool-call format, the rendering of calls and results, and the route's validation (the engine's guiding is tested through the real server). */
import { afterEach, describe, expect, it } from 'vitest';
import { chatCompletionChunkSchema, chatCompletionResponseSchema } from '../../src/http/schemas.js';
import { MAX_CALLS, callText, callsOf, mayBeCall, serveMessages, toolCallFormat, toolsPrompt, withToolsPrompt } from '../../src/http/tools.js';
import { SchemaGuide } from '../../src/model/schema-guide.js';
import { compileJsonSchema } from '../../src/model/json-schema.js';
import { fakeGenerateApp, parseSse, type FakeGenerate } from './fake-generate.js';
import { expectError, type Harness } from './helpers.js';

let h: Harness;
let gen: FakeGenerate;
afterEach(() => h?.cleanup());

const weather = { type: 'function' as const, function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } };
const time = { type: 'function' as const, function: { name: 'get_time', description: 'The time now.' } };

describe('tool calls', () => {
  it('a call asked for (required, or named) is one member named after a function, of its parameters, or an array of such calls unless parallel_tool_calls is false; auto and none ask for none', () => {
    const call = {
      type: 'object',
      properties: { get_weather: weather.function.parameters, get_time: { type: 'object', properties: {}, additionalProperties: false } },
      minProperties: 1,
      maxProperties: 1,
      additionalProperties: false,
    };
    expect(toolCallFormat({ tools: [weather, time], tool_choice: 'required', parallel_tool_calls: false })).toEqual({ type: 'json_schema', jsonSchema: { name: 'tool_call', schema: call } });
    expect(toolCallFormat({ tools: [weather, time], tool_choice: 'required' })).toEqual({
      type: 'json_schema',
      jsonSchema: { name: 'tool_call', schema: { $defs: { call }, anyOf: [{ $ref: '#/$defs/call' }, { type: 'array', items: { $ref: '#/$defs/call' }, minItems: 1, maxItems: MAX_CALLS }] } },
    });
    const named = toolCallFormat({ tools: [weather, time], tool_choice: { type: 'function', function: { name: 'get_time' } }, parallel_tool_calls: false });
    expect(Object.keys((named as unknown as { jsonSchema: { schema: { properties: object } } }).jsonSchema.schema.properties)).toEqual(['get_time']);
    for (const tool_choice of ['auto', 'none', undefined] as const) expect(toolCallFormat({ tools: [weather], tool_choice })).toBeUndefined();
    // The guide takes one call, or an array of calls; with parallel_tool_calls false only one.
    const takes = (body: Parameters<typeof toolCallFormat>[0], text: string) => {
      const format = toolCallFormat(body) as { jsonSchema: { schema: unknown } };
      const g = new SchemaGuide(compileJsonSchema(format.jsonSchema.schema), [null, ...Array.from({ length: 255 }, (_, i) => Uint8Array.of(i + 1))]);
      for (const b of new TextEncoder().encode(text)) {
        if (!g.accepts([b])) return false;
        g.advance(b);
      }
      return g.done;
    };
    const both = '[{"get_time": {}}, {"get_weather": {"city": "Lyon"}}]';
    expect([takes({ tools: [weather, time], tool_choice: 'required' }, both), takes({ tools: [weather, time], tool_choice: 'required', parallel_tool_calls: false }, both)]).toEqual([true, false]);
    expect(takes({ tools: [weather, time], tool_choice: 'required' }, '{"get_time": {}}')).toBe(true);
    // The reply's text back to calls; anything else is none.
    expect(callsOf(' {"get_weather" : {"city": "Lyon"}}\n')).toEqual([{ name: 'get_weather', arguments: '{"city":"Lyon"}' }]);
    expect(callsOf(callText('get_time', '{}'))).toEqual([{ name: 'get_time', arguments: '{}' }]);
    expect(callsOf(both)).toEqual([{ name: 'get_time', arguments: '{}' }, { name: 'get_weather', arguments: '{"city":"Lyon"}' }]);
    const tooMany = `[${Array.from({ length: MAX_CALLS + 1 }, () => '{"get_time": {}}').join(',')}]`;
    for (const text of ['{"a": {}, "b": {}}', '{}', '{"a": ', '[]', '[{"a": 1}, 2]', tooMany, 'hello']) expect(callsOf(text), text).toBeNull();
    expect(callsOf(both, undefined, false)).toBeNull();
    // A free reply is calls only of offered functions, with objects of arguments.
    const names = ['get_weather', 'get_time'];
    expect(callsOf('{"get_time": {}}', names)).toEqual([{ name: 'get_time', arguments: '{}' }]);
    for (const text of ['{"get_date": {}}', '{"get_time": 3}', '{"get_time": null}', '{"get_time": []}', '{"get_time": {}} and more', '[{"get_time": {}}, {"get_date": {}}]']) {
      expect(callsOf(text, names), text).toBeNull();
    }
    expect(mayBeCall('')).toBe(true);
    expect(mayBeCall(' \n {"get')).toBe(true);
    expect(mayBeCall(' [{"get')).toBe(true);
    expect(mayBeCall(' [{"get', false)).toBe(false);
    expect(mayBeCall(' Sure {')).toBe(false);
  });

  it('offered tools are described to the model in the system message; with tool_choice none, none is', () => {
    const text = toolsPrompt({ tools: [weather, time] })!;
    expect(text).toContain('{"name": {...}}. To call several at once, reply with a JSON array of calls.');
    expect(toolsPrompt({ tools: [weather], parallel_tool_calls: false })).not.toContain('several');
    expect(text).toContain(`- get_weather Arguments: ${JSON.stringify(weather.function.parameters)}`);
    expect(text).toContain('- get_time: The time now. Arguments: {"type":"object","properties":{},"additionalProperties":false}');
    const named = toolsPrompt({ tools: [weather, time], tool_choice: { type: 'function', function: { name: 'get_time' } } })!;
    expect(named).toContain('get_time');
    expect(named).not.toContain('get_weather');
    expect(toolsPrompt({ tools: [weather], tool_choice: 'none' })).toBeUndefined();
    expect(toolsPrompt({ tools: [] })).toBeUndefined();
    const user = { role: 'user' as const, content: 'hi' };
    expect(withToolsPrompt([user], text)).toEqual([{ role: 'system', content: text }, user]);
    expect(withToolsPrompt([{ role: 'system', content: 'Be brief.' }, user], text)).toEqual([{ role: 'system', content: `${text}\nBe brief.` }, user]);
    expect(withToolsPrompt([user], undefined)).toEqual([user]);
  });

  it('with tool_choice auto a reply that is wholly a call of an offered tool comes back as the call, plain and streamed; other replies stream as they come', async () => {
    ({ h, gen } = await fakeGenerateApp());
    const msg = [{ role: 'user', content: 'Weather in Lyon?' }];
    const ask = async (body: Record<string, unknown>) => {
      const res = await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: msg, ...body });
      expect(res.status).toBe(200);
      return res;
    };
    const plain = async (body: Record<string, unknown>) => chatCompletionResponseSchema.parse(await (await ask(body)).json()).choices[0];
    const streamed = async (body: Record<string, unknown>) => {
      const events = parseSse(await (await ask({ ...body, stream: true })).text());
      expect(events.at(-1)!.data).toBe('[DONE]');
      return events.slice(0, -1).flatMap((e) => chatCompletionChunkSchema.parse(JSON.parse(e.data)).choices);
    };

    gen.replyText = '{"get_weather": {"city": "Lyon"}}';
    const call = await plain({ tools: [weather, time] });
    expect(call.finish_reason).toBe('tool_calls');
    expect(call.message).toEqual({ role: 'assistant', content: null, tool_calls: [{ id: 'call_test1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Lyon"}' } }] });
    // The model was told of both tools, before the conversation.
    expect(gen.calls[0].req.messages![0]).toEqual({ role: 'system', content: toolsPrompt({ tools: [weather, time] }) });
    expect(gen.calls[0].req.messages!.slice(1)).toEqual(msg);
    // Streamed: no content, one tool_calls delta, finish tool_calls.
    const chunks = await streamed({ tools: [weather, time] });
    expect(chunks.map((c) => c.delta.content ?? '').join('')).toBe('');
    expect(chunks.flatMap((c) => c.delta.tool_calls ?? [])).toEqual([{ index: 0, id: 'call_test1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Lyon"}' } }]);
    expect(chunks.at(-1)!.finish_reason).toBe('tool_calls');
    // The same text is no call with tool_choice none (nor are the tools shown), or when it names no offered tool.
    const none = await plain({ tools: [weather], tool_choice: 'none' });
    expect(none).toMatchObject({ finish_reason: 'stop', message: { content: gen.replyText } });
    expect(gen.calls.at(-1)!.req.messages).toEqual(msg);
    expect(await plain({ tools: [time] })).toMatchObject({ finish_reason: 'stop', message: { content: gen.replyText } });
    // A reply that opens an object but is no call is held back and sent whole at its end, as text.
    let texts = (await streamed({ tools: [time] })).filter((c) => c.delta.content);
    expect(texts.map((c) => c.delta.content).join('')).toBe(gen.replyText);
    // Free text streams token by token once it cannot be a call.
    gen.replyText = 'It is sunny in Lyon';
    expect(await plain({ tools: [weather] })).toMatchObject({ finish_reason: 'stop', message: { content: 'It is sunny in Lyon' } });
    texts = (await streamed({ tools: [weather] })).filter((c) => c.delta.content);
    expect(texts.map((c) => c.delta.content)).toEqual(['It', ' is', ' sunny', ' in', ' Lyon']);
    // ... as it comes: a stream that fails after its first token has sent that token, unless it may be a call.
    gen.failMidway = new Error('decoder crashed');
    const contents = async () => parseSse(await (await ask({ tools: [weather], stream: true })).text()).flatMap((e) => (JSON.parse(e.data).choices ?? []).map((c: { delta: { content?: string } }) => c.delta.content));
    expect(await contents()).toEqual(['', 'It']);
    gen.replyText = '{"get_weather": {"city": "Lyon"}}';
    expect(await contents()).toEqual(['']);
    gen.failMidway = undefined;
    // An array of calls is several calls, numbered; not with parallel_tool_calls false.
    gen.replyText = '[{"get_weather": {"city": "Lyon"}}, {"get_time": {}}]';
    const several = await plain({ tools: [weather, time] });
    expect(several.finish_reason).toBe('tool_calls');
    expect(several.message.tool_calls).toEqual([
      { id: 'call_test1_0', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Lyon"}' } },
      { id: 'call_test1_1', type: 'function', function: { name: 'get_time', arguments: '{}' } },
    ]);
    expect((await streamed({ tools: [weather, time] })).flatMap((c) => c.delta.tool_calls ?? []).map((c) => c.index)).toEqual([0, 1]);
    expect(await plain({ tools: [weather, time], parallel_tool_calls: false })).toMatchObject({ finish_reason: 'stop', message: { content: gen.replyText } });
  });

  it('calls and results in the conversation are shown to the model as it writes calls, results as user turns naming the function', () => {
    const messages = serveMessages([
      { role: 'user', content: 'Weather in Lyon?' },
      { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Lyon"}' } }] },
      { role: 'tool', tool_call_id: 'call_1', content: '21 °C, sunny' },
      { role: 'tool', tool_call_id: 'call_unknown', content: [{ type: 'text', text: 'late' }] },
      { role: 'developer', content: 'Be brief.' },
      {
        role: 'assistant',
        content: 'Both:',
        tool_calls: [
          { id: 'call_2', type: 'function', function: { name: 'get_time', arguments: '{}' } },
          { id: 'call_3', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Nice"}' } },
        ],
      },
      { role: 'tool', tool_call_id: 'call_3', content: 'rain' },
    ]);
    expect(messages).toEqual([
      { role: 'user', content: 'Weather in Lyon?' },
      { role: 'assistant', content: '{"get_weather": {"city":"Lyon"}}' },
      { role: 'user', content: 'Result of get_weather: 21 °C, sunny' },
      { role: 'user', content: 'Result of the tool call: late' },
      { role: 'system', content: 'Be brief.' },
      // Several calls at once: their array, as the model writes them.
      { role: 'assistant', content: 'Both:\n[{"get_time": {}}, {"get_weather": {"city":"Nice"}}]' },
      { role: 'user', content: 'Result of get_weather: rain' },
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
