/**
 * The guide of a request's reply, compiled when the request arrives: JSON mode, a JSON schema's
 * documents, a regular expression, a grammar or a choice among strings (what the request asks), and the chat
 * route's tool calls under tool_choice auto: free text that may open calls, or, beside a JSON schema
 * response format, a document that is either calls or one of the format's. A guide that cannot be
 * enforced is refused (unsupported_schema, unsupported_regex, unsupported_grammar), never silently dropped, except the
 * calls of tools that are not strict, which are then left unguided as OpenAI leaves them.
 */
import { GrammarError } from '../model/grammar.js';
import type { GuideSpec } from '../model/guide.js';
import { type CompiledSchema, SchemaError, compileJsonSchema } from '../model/json-schema.js';
import { compileGuideGrammar } from '../model/lark.js';
import { RegexError } from '../model/regex.js';
import { compileGuideRegex } from '../model/regex-guide.js';
import { ServeError, type ServeErrorCode } from './errors.js';
import type { ServeRequest, ToolCallGuide } from './types.js';

/** What of a request its guide is made from. */
export type GuideRequest = Pick<ServeRequest, 'responseFormat' | 'guidedRegex' | 'guidedGrammar' | 'guidedChoice' | 'toolCalls'>;

/** The fields of `req` its guide is made from (data only: what a compile thread is sent). */
export function guideRequestOf(req: ServeRequest): GuideRequest {
  const { responseFormat, guidedRegex, guidedGrammar, guidedChoice, toolCalls } = req;
  return { responseFormat, guidedRegex, guidedGrammar, guidedChoice, toolCalls };
}

/** Whether a request's guide compiles anything: a JSON schema, a pattern, a grammar or tools' calls. */
export function guideCompiles(req: GuideRequest): boolean {
  return req.responseFormat?.type === 'json_schema' || req.guidedRegex !== undefined || req.guidedGrammar !== undefined || req.toolCalls !== undefined;
}

/** The guide of a request's reply (none: free text). */
export function guideOf(req: GuideRequest): GuideSpec | undefined {
  const asked = askedGuideOf(req);
  const calls = req.toolCalls;
  if (!calls) return asked;
  if (calls.orFormat) {
    const either = callSchemaOf(calls, calls.orFormat);
    return either ? { type: 'json_schema', schema: either } : asked;
  }
  if (asked) return asked;
  const schema = callSchemaOf(calls, calls.schema);
  return schema ? { type: 'text_or_json', schema, openers: calls.several ? ['{', '[{'] : ['{'] } : undefined;
}

/** The guide the request asks for itself: JSON mode, a schema's documents, a pattern, a grammar, or a choice. */
function askedGuideOf(req: GuideRequest): GuideSpec | undefined {
  const format = req.responseFormat;
  if (format?.type === 'json_object') return { type: 'json_object' };
  if (format?.type === 'json_schema') {
    try {
      return { type: 'json_schema', schema: compileJsonSchema(format.jsonSchema.schema) };
    } catch (e) {
      if (!(e instanceof SchemaError)) throw e;
      throw new ServeError('unsupported_schema', `the JSON schema cannot guide a reply: ${e.message}`, { details: { path: e.path, keyword: e.keyword } });
    }
  }
  const pattern = req.guidedRegex;
  if (pattern !== undefined) return { type: 'regex', regex: orRefused(() => compileGuideRegex(pattern), RegexError, 'unsupported_regex', 'the pattern') };
  const grammar = req.guidedGrammar;
  if (grammar !== undefined) return { type: 'grammar', grammar: orRefused(() => compileGuideGrammar(grammar), GrammarError, 'unsupported_grammar', 'the grammar') };
  return req.guidedChoice ? { type: 'choice', choices: req.guidedChoice } : undefined;
}

/** `compile()`; where it throws `refusal` (what cannot guide a reply), the request is refused with `code` and the reason. */
function orRefused<T>(compile: () => T, refusal: new (message: string) => Error, code: ServeErrorCode, what: string): T {
  try {
    return compile();
  } catch (e) {
    if (!(e instanceof refusal)) throw e;
    throw new ServeError(code, `${what} cannot guide a reply: ${e.message}`, { details: { reason: e.message } });
  }
}

/** A schema of tool calls compiled: null where the tools' parameters cannot guide a reply, unless a tool is strict (unsupported_schema). */
function callSchemaOf(calls: ToolCallGuide, schema: Record<string, unknown>): CompiledSchema | null {
  try {
    return compileJsonSchema(schema);
  } catch (e) {
    if (!(e instanceof SchemaError)) throw e;
    if (!calls.strict) return null;
    throw new ServeError('unsupported_schema', `a strict tool's parameters cannot guide a call: ${e.message}`, { details: { path: e.path, keyword: e.keyword } });
  }
}
