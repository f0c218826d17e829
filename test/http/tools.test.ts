/** Function calling on chat completions: the tool-call format, the rendering of calls and results, and the route's validation (the engine's guiding is tested through the real server). */
import { afterEach, describe, expect, it } from 'vitest';
import { chatCompletionChunkSchema, chatCompletionResponseSchema } from '../../src/http/schemas.js';
import { CallSplitter, type CallPiece, MAX_CALLS, ReplyCalls, CALL_DEF, autoCallGuide, callText, callsOrDocument, readCalls, serveMessages, toolCallFormat, toolsPrompt, withToolsPrompt } from '../../src/http/tools.js';
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
    // The reply's text back to calls (and the text after them); text that never began a call is text.
    const calls = (text: string, several = true, names?: string[]) => readCalls(text, several, names);
    expect(calls(' {"get_weather" : {"city": "Lyon"}}\n')).toEqual({ calls: [{ name: 'get_weather', arguments: '{"city":"Lyon"}' }], array: false, content: null, cut: false });
    expect(calls(callText('get_time', '{}')).calls).toEqual([{ name: 'get_time', arguments: '{}' }]);
    expect(calls(both)).toEqual({ calls: [{ name: 'get_time', arguments: '{}' }, { name: 'get_weather', arguments: '{"city":"Lyon"}' }], array: true, content: null, cut: false });
    for (const text of ['{}', '{"a": ', '[]', 'hello', ' Sure {"a": {}}']) expect(calls(text), text).toEqual({ calls: [], array: false, content: text.trim() === '' ? null : text, cut: false });
    expect(calls(both, false)).toEqual({ calls: [], array: false, content: both, cut: false });
    // A call whose arguments the reply ended inside is cut; one whose arguments closed is not, whatever follows.
    expect(['{"get_time": {', '{"a": 12', '[{"a": {}}, {"b": {"c": [1', '{"a": {}', '[{"a": {}}', '{"a": {}} and', '{}', 'hello'].map((t) => calls(t).cut)).toEqual([
      true, true, true, false, false, false, false, false,
    ]);
    // Calls begun are calls; what follows them, or breaks their form, is text.
    expect(calls('{"a": {}, "b": {}}')).toMatchObject({ calls: [{ name: 'a', arguments: '{}' }], content: ', "b": {}}' });
    expect(calls('[{"a": 1}, 2]')).toMatchObject({ calls: [{ name: 'a', arguments: '1' }], content: '2]' });
    const tooMany = `[${Array.from({ length: MAX_CALLS + 1 }, () => '{"get_time": {}}').join(',')}]`;
    expect(calls(tooMany).calls).toHaveLength(MAX_CALLS);
    // A free reply's calls are only of offered functions, with objects of arguments.
    const names = ['get_weather', 'get_time'];
    expect(calls('{"get_time": {}}', true, names).calls).toEqual([{ name: 'get_time', arguments: '{}' }]);
    for (const text of ['{"get_date": {}}', '{"get_time": 3}', '{"get_time": null}', '{"get_time": []}']) expect(calls(text, true, names), text).toEqual({ calls: [], array: false, content: text, cut: false });
    expect(calls('{"get_time": {}} and more', true, names)).toEqual({ calls: [{ name: 'get_time', arguments: '{}' }], array: false, content: ' and more', cut: false });
    expect(calls('[{"get_time": {}}, {"get_date": {}}]', true, names)).toEqual({ calls: [{ name: 'get_time', arguments: '{}' }], array: true, content: '{"get_date": {}}]', cut: false });
  });

  it('with tool_choice auto and no other guide, a free reply may open calls of the schema a required call has; strict when a tool is', () => {
    const required = (body: Parameters<typeof toolCallFormat>[0]) => (toolCallFormat({ ...body, tool_choice: 'required' }) as { jsonSchema: { schema: unknown } }).jsonSchema.schema;
    const free = {};
    for (const tool_choice of ['auto', undefined] as const) {
      expect(autoCallGuide({ tools: [weather, time], tool_choice }, free)).toEqual({ schema: required({ tools: [weather, time] }), several: true, strict: false });
    }
    expect(autoCallGuide({ tools: [weather, time], parallel_tool_calls: false }, free)).toEqual({ schema: required({ tools: [weather, time], parallel_tool_calls: false }), several: false, strict: false });
    const strict = { type: 'function' as const, function: { ...time.function, strict: true } };
    expect(autoCallGuide({ tools: [weather, strict] }, free)?.strict).toBe(true);
    expect(autoCallGuide({ tools: [weather] }, { responseFormat: { type: 'text' } })).toBeDefined();
    // A call asked for is guided as a response format; none or no tools: no call guide.
    for (const body of [{ tools: [weather], tool_choice: 'required' as const }, { tools: [weather], tool_choice: 'none' as const }, { tools: [] }, {}]) {
      expect(autoCallGuide(body, free), JSON.stringify(body)).toBeUndefined();
    }
    // Beside JSON mode, a pattern or a choice, that guide rules the reply.
    for (const req of [{ responseFormat: { type: 'json_object' as const } }, { guidedRegex: 'a+' }, { guidedChoice: ['a'] }]) {
      expect(autoCallGuide({ tools: [weather] }, req), JSON.stringify(req)).toBeUndefined();
    }
  });

  it('beside a JSON schema response format, a reply is one document: calls of the offered tools, or a document of the format (its definitions kept where its references find them)', () => {
    const answer = { type: 'object', properties: { answer: { $ref: '#/$defs/short' } }, required: ['answer'], additionalProperties: false, $defs: { short: { type: 'string', maxLength: 3 } } };
    const format = (schema: Record<string, unknown>) => ({ responseFormat: { type: 'json_schema' as const, jsonSchema: { name: 'a', schema } } });
    const guide = autoCallGuide({ tools: [weather, time] }, format(answer))!;
    expect(guide.orFormat).toBeDefined();
    // An independent check of what the union takes: the guide, byte by byte, on whole documents.
    const takes = (schema: unknown, text: string) => {
      const g = new SchemaGuide(compileJsonSchema(schema), [null, ...Array.from({ length: 255 }, (_, i) => Uint8Array.of(i + 1))]);
      return [...new TextEncoder().encode(text)].every((b) => g.accepts([b]) && (g.advance(b), true)) && g.done;
    };
    const texts = ['{"answer": "abc"}', '{"get_weather": {"city": "Lyon"}}', '[{"get_time": {}}, {"get_weather": {"city": "Lyon"}}]', '{"answer": "abcd"}', '{"get_weather": {}}', '{"get_date": {}}', '{"answer": "a", "get_time": {}}'];
    expect(texts.map((t) => takes(guide.orFormat, t))).toEqual([true, true, true, false, false, false, false]);
    // One call at a time: no array.
    const single = autoCallGuide({ tools: [weather, time], parallel_tool_calls: false }, format(answer))!;
    expect(takes(single.orFormat, texts[2])).toBe(false);
    expect(takes(single.orFormat, texts[1])).toBe(true);
    // Formats that cannot be joined so: references to other places in their root, a definition of the call's name.
    const rooted = { type: 'object', properties: { next: { $ref: '#' } } };
    expect(autoCallGuide({ tools: [weather] }, format(rooted))).toBeUndefined();
    expect(autoCallGuide({ tools: [weather] }, format({ ...answer, $defs: { ...answer.$defs, [CALL_DEF]: { type: 'string' } } }))).toBeUndefined();
    // A property named "$ref" is no reference.
    const named = { type: 'object', properties: { $ref: { type: 'string' } } };
    expect(autoCallGuide({ tools: [weather] }, format(named))?.orFormat).toBeDefined();
    expect(callsOrDocument({ tools: [weather] }, { $defs: [] })).toBeUndefined();
  });

  it('a reply read as it is written: held back while it may still begin a call, then calls piece by piece and text, whatever the pieces', () => {
    const names = ['get_weather', 'get_time'];
    const read = (parts: string[], several = true) => {
      const r = new ReplyCalls(several, names);
      const out = parts.map((p) => r.push(p));
      return { out, end: r.end(), calls: r.calls };
    };
    // Held while it may begin a call; released as text the moment it cannot.
    expect(read([' ', '{"get_', 'date"']).out.map((o) => o.content)).toEqual(['', '', ' {"get_date"']);
    expect(read(['[', '{"get']).out.map((o) => o.content)).toEqual(['', '']);
    expect(read(['[', '{"get'], false).out.map((o) => o.content)).toEqual(['[', '{"get']);
    expect(read(['Sure', ' {']).out.map((o) => o.content)).toEqual(['Sure', ' {']);
    // Never begun by the end: the held text is given back then.
    expect(read(['{"get_time"']).end).toBe('{"get_time"');
    // Begun at the arguments' first character: the name comes with it, then the arguments as they come, then text.
    const r = read(['{"get_time": ', '{"tz"', ': "UTC"}}', ' thanks']);
    expect(r.out).toEqual([
      { content: '', calls: [] },
      { content: '', calls: [{ index: 0, name: 'get_time', arguments: '{"tz"' }] },
      { content: '', calls: [{ index: 0, arguments: ':"UTC"}' }] },
      { content: ' thanks', calls: [] },
    ]);
    expect([r.calls, r.end]).toEqual([1, '']);
    // A second call opened but not begun leaves the count at the calls begun.
    expect(read(['[{"get_time": {}}, ', '{"get_w']).calls).toBe(1);
    // Whatever the pieces, the same calls and text as the whole.
    for (const text of ['{"get_time": {"tz": "UTC"}} ok', '[{"get_weather": {"city": "Ly}on"}}, {"get_time": {}}]', ' {"get_date": {}}', '{"get_time": [1]}', 'plain words']) {
      const whole = readCalls(text, true, names);
      for (let cut = 1; cut < text.length; cut++) {
        const rc = new ReplyCalls(true, names);
        const parts = [rc.push(text.slice(0, cut)), rc.push(text.slice(cut))];
        const got: Array<{ name: string; arguments: string }> = [];
        for (const p of parts.flatMap((x) => x.calls)) {
          if (p.name !== undefined) got.push({ name: p.name, arguments: '' });
          got[p.index].arguments += p.arguments;
        }
        const content = parts.map((x) => x.content).join('') + rc.end();
        expect({ calls: got, content: content.trim() === '' ? null : content }, `${text} cut at ${cut}`).toEqual({ calls: whole.calls, content: whole.content });
      }
    }
  });

  it('the splitter cuts calls as they are written: each name once its string closes, then its arguments as written, however the text is cut', () => {
    /** The calls the pieces make (names and joined arguments), and whether each call's name came before its arguments. */
    const join = (pieces: CallPiece[]) => {
      const calls: Array<{ name: string; arguments: string }> = [];
      for (const p of pieces) {
        if (p.name !== undefined) {
          expect(p.index).toBe(calls.length);
          calls.push({ name: p.name, arguments: '' });
        }
        calls[p.index].arguments += p.arguments;
      }
      return calls;
    };
    const texts = [
      ' {"get_weather" : {"city": "Lyon"}}\n',
      '[{"get_time": {}}, {"get_weather": {"city": "Ly}o]n\\"{"}}]',
      '{"a\\"b": [1, {"c": []}]}',
      '{"n": -1.5e3 }',
      '{"s": "x"}',
      '{"t": true}',
      '{"q": { "text" : "two  words",\n "n": [1, 2] }}',
    ];
    for (const text of texts) {
      const { calls } = readCalls(text);
      expect(calls.length, text).toBeGreaterThan(0);
      // Whole, character by character, and cut at every point in two: the same calls as readCalls'.
      const cuts = [[text], [...text], ...Array.from({ length: text.length - 1 }, (_, i) => [text.slice(0, i + 1), text.slice(i + 1)])];
      for (const parts of cuts) {
        const s = new CallSplitter();
        expect(join(parts.flatMap((p) => s.push(p))), JSON.stringify(parts)).toEqual(calls);
        expect(s.done).toBe(true);
      }
    }
    // The arguments are the text as written, white space between tokens left out, and JSON.
    expect(readCalls(texts[6]).calls[0].arguments).toBe('{"text":"two  words","n":[1,2]}');
    expect(readCalls(texts[1]).calls[1].arguments).toBe('{"city":"Ly}o]n\\"{"}');
    expect(JSON.parse(readCalls(texts[2]).calls[0].arguments)).toEqual([1, { c: [] }]);
    expect(readCalls(texts[2]).calls[0].name).toBe('a"b');
    // A name is handed out with its arguments' first character.
    const s = new CallSplitter();
    expect(s.push('{"get_wea')).toEqual([]);
    expect(s.push('ther": {"ci')).toEqual([{ index: 0, name: 'get_weather', arguments: '{"ci' }]);
    expect(s.push('ty": 1}')).toEqual([{ index: 0, arguments: 'ty":1}' }]);
    expect([s.done, s.failed]).toEqual([false, false]);
    expect(s.push('}')).toEqual([]);
    expect(s.done).toBe(true);
    // Text that leaves the form stops the splitter, and is its rest (with the text of a call not begun); an array only with several, of at most MAX_CALLS.
    for (const [text, rest] of [['{}', '{}'], ['[]', ']'], ['{"a": 3, "b": 4}', ', "b": 4}'], ['{"a": {}, "b": {}}', ', "b": {}}'], ['{"a" 1}', '{"a" 1}'], ['{"a": }', '{"a": }'], ['hi', 'hi']]) {
      const t = new CallSplitter();
      t.push(text);
      expect([t.done, t.failed, t.takeRest()], text).toEqual([false, true, rest]);
    }
    // What follows closed calls is the rest too.
    const after = new CallSplitter();
    after.push('{"a": {}} x');
    expect([after.done, after.takeRest()]).toEqual([true, ' x']);
    // With offered names: another function, or arguments that are not an object, break the form before the call begins.
    for (const text of ['{"b": {}}', '{"a": 1}']) {
      const t = new CallSplitter(true, ['a']);
      expect([t.push(text), t.calls, t.takeRest()], text).toEqual([[], 0, text]);
    }
    const array = new CallSplitter(false);
    array.push('[{"a": {}}]');
    expect(array.failed).toBe(true);
    const many = new CallSplitter();
    const pieces = many.push(`[${Array.from({ length: MAX_CALLS + 1 }, () => '{"a": {}}').join(', ')}]`);
    expect([many.failed, pieces.filter((p) => p.name !== undefined).length]).toEqual([true, MAX_CALLS]);
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

  it('with tool_choice auto a reply that begins a call of an offered tool comes back as the call (text after it as content), plain and streamed piece by piece; other replies stream as they come', async () => {
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
    // Streamed: no content; the call in pieces, from its arguments' first token (the fake's words: 2 of its 3), finish tool_calls.
    const chunks = await streamed({ tools: [weather, time] });
    expect(chunks.map((c) => c.delta.content ?? '').join('')).toBe('');
    const pieces = chunks.flatMap((c) => c.delta.tool_calls ?? []);
    expect(pieces).toHaveLength(2);
    expect(pieces[0]).toMatchObject({ index: 0, type: 'function', function: { name: 'get_weather' } });
    expect(pieces[0].id).toMatch(/^call_[0-9a-f]{16}$/);
    expect(pieces.map((p) => p.function!.arguments).join('')).toBe('{"city":"Lyon"}');
    expect(chunks.at(-1)!.finish_reason).toBe('tool_calls');
    // Text after the call is the message's content, plain and streamed.
    gen.replyText = '{"get_time": {}} as asked';
    expect(await plain({ tools: [weather, time] })).toMatchObject({ finish_reason: 'tool_calls', message: { content: ' as asked', tool_calls: [{ function: { name: 'get_time', arguments: '{}' } }] } });
    const trailing = await streamed({ tools: [weather, time] });
    expect(trailing.map((c) => c.delta.content ?? '').join('')).toBe(' as asked');
    expect(trailing.at(-1)!.finish_reason).toBe('tool_calls');
    // A reply that ended inside a call's arguments (an end token, or a stop string) is no call to run: finish stop, the call as far as written.
    gen.replyText = '{"get_weather": {"city": "Ly';
    expect(await plain({ tools: [weather, time] })).toMatchObject({ finish_reason: 'stop', message: { content: null, tool_calls: [{ function: { name: 'get_weather', arguments: '{"city":"Ly' } }] } });
    expect((await streamed({ tools: [weather, time] })).at(-1)!.finish_reason).toBe('stop');
    gen.replyText = '{"get_weather": {"city": "Lyon"}}';
    // The same text is no call with tool_choice none (nor are the tools shown), or when it names no offered tool.
    const none = await plain({ tools: [weather], tool_choice: 'none' });
    expect(none).toMatchObject({ finish_reason: 'stop', message: { content: gen.replyText } });
    expect(gen.calls.at(-1)!.req.messages).toEqual(msg);
    expect(await plain({ tools: [time] })).toMatchObject({ finish_reason: 'stop', message: { content: gen.replyText } });
    // A reply that opens an object but is no call of an offered function is held back until it cannot be one, then sent as text.
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
    expect([...new Set((await streamed({ tools: [weather, time] })).flatMap((c) => c.delta.tool_calls ?? []).map((c) => c.index))]).toEqual([0, 1]);
    expect(await plain({ tools: [weather, time], parallel_tool_calls: false })).toMatchObject({ finish_reason: 'stop', message: { content: gen.replyText } });
  });

  it('a guided call streams as it is written: id, type and name first, then its arguments piece by piece with each token\'s logprobs; a reply cut short streams what it wrote', async () => {
    ({ h, gen } = await fakeGenerateApp());
    const body = { user: 'alice', messages: [{ role: 'user', content: 'Weather in Lyon?' }], tools: [weather, time], tool_choice: 'required' };
    const streamed = async (extra: Record<string, unknown>) => {
      const events = parseSse(await (await h.req('POST', '/v1/chat/completions', { ...body, ...extra, stream: true })).text());
      expect(events.at(-1)!.data).toBe('[DONE]');
      return events.slice(0, -1).flatMap((e) => chatCompletionChunkSchema.parse(JSON.parse(e.data)).choices);
    };
    // The fake writes the reply's words as tokens: 7 here, 5 of them adding to a call (a call begins
    // with its arguments' first character: the tokens that write only its name add nothing yet).
    gen.replyText = '[{"get_weather": {"city": "Lyon", "days": 3}}, {"get_time": {}}]';
    const plain = chatCompletionResponseSchema.parse(await (await h.req('POST', '/v1/chat/completions', body)).json()).choices[0];
    expect(plain.message.tool_calls!.map((c) => c.function)).toEqual([
      { name: 'get_weather', arguments: '{"city":"Lyon","days":3}' },
      { name: 'get_time', arguments: '{}' },
    ]);
    const chunks = await streamed({ logprobs: true });
    const deltas = chunks.filter((c) => c.delta.tool_calls);
    expect(deltas).toHaveLength(5);
    expect(chunks.map((c) => c.delta.content ?? '').join('')).toBe('');
    const parts = deltas.flatMap((c) => c.delta.tool_calls!);
    // Each call's first delta has its id (numbered within the array), type and name; the others only arguments.
    const firsts = parts.filter((p) => p.id !== undefined);
    expect(firsts.map((p) => [p.index, p.type, p.function?.name])).toEqual([[0, 'function', 'get_weather'], [1, 'function', 'get_time']]);
    expect(firsts[0].id).toMatch(/^call_[0-9a-f]{16}_0$/);
    expect(firsts[1].id).toBe(firsts[0].id!.replace(/_0$/, '_1'));
    for (const p of parts.filter((q) => q.id === undefined)) expect(Object.keys(p.function!)).toEqual(['arguments']);
    // Joined, the arguments are the plain reply's.
    const joined = [0, 1].map((i) => parts.filter((p) => p.index === i).map((p) => p.function!.arguments ?? '').join(''));
    expect(joined).toEqual(plain.message.tool_calls!.map((c) => c.function.arguments));
    // Every token's log-probability, in order, on the chunk that carries it.
    expect(chunks.flatMap((c) => c.logprobs?.content ?? []).map((l) => l.token)).toEqual(gen.replyText.split(' ').map((w, i) => (i ? ` ${w}` : w)));
    expect(chunks.at(-1)!.finish_reason).toBe('tool_calls');
    // Cut by max_tokens inside a call: what was written of it, finish length.
    const cut = await streamed({ max_tokens: 3 });
    expect(cut.flatMap((c) => c.delta.tool_calls ?? []).map((p) => p.function?.arguments).join('')).toBe('{"city":"Lyon",');
    expect(cut.at(-1)!.finish_reason).toBe('length');
    // Unstreamed alike: the call as far as it was written, finish length.
    const cutPlain = chatCompletionResponseSchema.parse(await (await h.req('POST', '/v1/chat/completions', { ...body, max_tokens: 3 })).json()).choices[0];
    expect(cutPlain).toMatchObject({ finish_reason: 'length', message: { content: null, tool_calls: [{ function: { name: 'get_weather', arguments: '{"city":"Lyon",' } }] } });
    // Cut before a call's name is whole: nothing of a call was written, and the text comes as content, as it does unstreamed.
    gen.replyText = '{"get_ weather": {}}';
    const early = await streamed({ max_tokens: 1 });
    expect(early.flatMap((c) => c.delta.tool_calls ?? [])).toEqual([]);
    expect(early.map((c) => c.delta.content ?? '').join('')).toBe('{"get_');
    expect(early.at(-1)!.finish_reason).toBe('length');
    const earlyPlain = chatCompletionResponseSchema.parse(await (await h.req('POST', '/v1/chat/completions', { ...body, max_tokens: 1 })).json()).choices[0];
    expect(earlyPlain.message.content).toBe('{"get_');
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
    // OpenAI's allowed_tools: required or auto among a subset; only the subset is described and guided.
    const allowed = (mode: string, names: string[]) => ({ type: 'allowed_tools', allowed_tools: { mode, tools: names.map((name) => ({ type: 'function', function: { name } })) } });
    expect((await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: msg, tools: [weather, time], tool_choice: allowed('required', ['get_time']) })).status).toBe(200);
    expect(gen.calls[3].req.responseFormat).toEqual(toolCallFormat({ tools: [time], tool_choice: 'required' }));
    expect(gen.calls[3].req.messages![0]).toEqual({ role: 'system', content: toolsPrompt({ tools: [time] }) });
    expect((await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: msg, tools: [weather, time], tool_choice: allowed('auto', ['get_weather']) })).status).toBe(200);
    expect(gen.calls[4].req.responseFormat).toBeUndefined();
    expect(gen.calls[4].req.toolCalls).toEqual(autoCallGuide({ tools: [weather] }, {}));
    // Reading the reply: a call of a tool outside the subset is text.
    gen.replyText = '{"get_time": {}}';
    const outside = chatCompletionResponseSchema.parse(await (await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: msg, tools: [weather, time], tool_choice: allowed('auto', ['get_weather']) })).json());
    expect(outside.choices[0]).toMatchObject({ finish_reason: 'stop', message: { content: '{"get_time": {}}' } });
    gen.replyText = undefined;
    for (const body of [
      { tools: [weather], tool_choice: allowed('auto', ['get_time']) },
      { tool_choice: allowed('auto', ['get_time']) },
      { tools: [weather], tool_choice: allowed('sometimes', ['get_weather']) },
      { tools: [weather], tool_choice: allowed('auto', []) },
      { tools: [weather], tool_choice: allowed('required', ['get_weather']), guided_choice: ['a'] },
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
    expect(gen.calls).toHaveLength(6);
    // allowed_tools in mode auto beside another guide is allowed, as auto is.
    expect((await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: msg, tools: [weather], tool_choice: allowed('auto', ['get_weather']), response_format: { type: 'json_object' } })).status).toBe(200);
  });
});
