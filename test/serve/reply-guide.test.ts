/** The reply's guide of a request: what it asks for itself, and tool calls under tool_choice auto beside it. */
import { describe, expect, it } from 'vitest';
import { ServeError } from '../../src/serve/errors.js';
import { guideOf } from '../../src/serve/reply-guide.js';
import type { ServeRequest, ToolCallGuide } from '../../src/serve/types.js';

const base: ServeRequest = { userId: 'u', prompt: 'x', maxTokens: 4, temperature: 0, topP: 1, stop: [], stream: false, mode: 'auto' } as ServeRequest;
const call = (params: Record<string, unknown>) => ({ type: 'object', properties: { f: params }, minProperties: 1, maxProperties: 1, additionalProperties: false });
const good = call({ type: 'object', properties: { n: { type: 'integer' } } });
const bad = call({ type: 'object', properties: { d: { type: 'string', format: 'iri' } } });
const answer = { type: 'object', properties: { a: { type: 'string' } }, required: ['a'] };
const tools = (schema: Record<string, unknown>, strict: boolean, orFormat?: Record<string, unknown>): ToolCallGuide => ({ schema, several: false, strict, ...(orFormat ? { orFormat } : {}) });
const format = { type: 'json_schema' as const, jsonSchema: { name: 'a', schema: answer } };
const code = (f: () => unknown) => {
  try {
    f();
    return null;
  } catch (e) {
    return e instanceof ServeError ? e.code : e;
  }
};

describe('guideOf', () => {
  it('asked guides rule alone; tool calls make free text that may open calls, or join a response format; what cannot guide is refused only when strict', () => {
    expect(guideOf(base)).toBeUndefined();
    expect(guideOf({ ...base, guidedChoice: ['a'] })?.type).toBe('choice');
    expect(guideOf({ ...base, toolCalls: tools(good, false) })).toMatchObject({ type: 'text_or_json', openers: ['{'] });
    expect(guideOf({ ...base, toolCalls: { ...tools(good, false), several: true } })).toMatchObject({ openers: ['{', '[{'] });
    // Parameters that cannot guide: unguided, or refused when a tool is strict.
    expect(guideOf({ ...base, toolCalls: tools(bad, false) })).toBeUndefined();
    expect(code(() => guideOf({ ...base, toolCalls: tools(bad, true) }))).toBe('unsupported_schema');
    // Beside JSON mode (no orFormat): JSON mode rules.
    expect(guideOf({ ...base, responseFormat: { type: 'json_object' }, toolCalls: tools(good, false) })).toEqual({ type: 'json_object' });
    // Beside a schema: the union when it compiles; else the format alone, or refused when strict.
    const joined = { anyOf: [good, answer] };
    const union = guideOf({ ...base, responseFormat: format, toolCalls: tools(good, false, joined) });
    const alone = guideOf({ ...base, responseFormat: format });
    expect(union?.type).toBe('json_schema');
    expect(union).not.toEqual(alone);
    const broken = { anyOf: [bad, answer] };
    expect(guideOf({ ...base, responseFormat: format, toolCalls: tools(bad, false, broken) })).toEqual(alone);
    expect(code(() => guideOf({ ...base, responseFormat: format, toolCalls: tools(bad, true, broken) }))).toBe('unsupported_schema');
    // A format that cannot guide is refused for itself, tools or not.
    const iri = { type: 'json_schema' as const, jsonSchema: { name: 'a', schema: { type: 'object', properties: { d: { type: 'string', format: 'iri' } } } } };
    expect(code(() => guideOf({ ...base, responseFormat: iri, toolCalls: tools(good, false) }))).toBe('unsupported_schema');
  });
});
