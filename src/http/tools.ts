/**
 * OpenAI's function calling on chat completions. Offered tools (any tool_choice but `none`) are
 * described to the model in the system message, with the form of a call: one JSON object with exactly
 * one member, the function's name, whose value is the arguments (`{"get_weather": {"city": "Lyon"}}`),
 * and, unless parallel_tool_calls is false, of several calls at once: a JSON array of calls.
 * A tool_choice that asks for a call (`required`, or a named function) guides the reply to that form,
 * the arguments a document of the function's parameters schema. With `auto` the reply is free, and
 * becomes calls when the whole reply is a call (or an array of them) of offered functions with objects
 * of arguments (the arguments are then as the model wrote them, not checked against the schema). Calls
 * and their results sent back in the conversation are rendered for the chat template in the same form,
 * so a model sees what it would write.
 */
import type { z } from 'zod';
import type { chatCompletionRequestSchema } from './schemas.js';
import type { ChatMessage, GenerateRequest } from './services.js';

type ChatBody = z.output<typeof chatCompletionRequestSchema>;
type ToolBody = Pick<ChatBody, 'tools' | 'tool_choice' | 'parallel_tool_calls'>;

/** Most calls one reply may make at once. */
export const MAX_CALLS = 16;

/** Whether a reply may make several calls at once (OpenAI's parallel_tool_calls, true unless false). */
export const allowsSeveral = (body: ToolBody): boolean => body.parallel_tool_calls !== false;
type OpenAiMessage = ChatBody['messages'][number];

/** A call as the model writes it, and as calls in the conversation are shown to it. */
export function callText(name: string, args: string): string {
  return `{${JSON.stringify(name)}: ${args}}`;
}

/** The arguments of a function without parameters: an empty object. */
const NO_PARAMETERS = { type: 'object', properties: {}, additionalProperties: false };

/** How a reply may call a tool: `guided` (tool_choice required or named), `parsed` (auto, OpenAI's default with tools), or null (no tools, or none). */
export type Calling = 'guided' | 'parsed' | null;

export function callingOf(body: Pick<ChatBody, 'tools' | 'tool_choice'>): Calling {
  const choice = body.tool_choice;
  if (!body.tools?.length || choice === 'none') return null;
  return choice == null || choice === 'auto' ? 'parsed' : 'guided';
}

/** The tools a reply may call: the one tool_choice names, or all; none with tool_choice none. */
export function offeredTools(body: Pick<ChatBody, 'tools' | 'tool_choice'>): NonNullable<ChatBody['tools']> {
  const choice = body.tool_choice;
  if (callingOf(body) === null) return [];
  return typeof choice === 'object' && choice !== null ? body.tools!.filter((t) => t.function.name === choice.function.name) : body.tools!;
}

/**
 * The responseFormat that makes the reply a call of the tools tool_choice allows, or (parallel calls
 * allowed) an array of 1 to MAX_CALLS of them; undefined when it asks for none.
 */
export function toolCallFormat(body: ToolBody): GenerateRequest['responseFormat'] {
  if (callingOf(body) !== 'guided') return undefined;
  const properties = Object.fromEntries(offeredTools(body).map((t) => [t.function.name, t.function.parameters ?? NO_PARAMETERS]));
  const call = { type: 'object', properties, minProperties: 1, maxProperties: 1, additionalProperties: false };
  const schema = allowsSeveral(body) ? { $defs: { call }, anyOf: [{ $ref: '#/$defs/call' }, { type: 'array', items: { $ref: '#/$defs/call' }, minItems: 1, maxItems: MAX_CALLS }] } : call;
  return { type: 'json_schema', jsonSchema: { name: 'tool_call', schema } };
}

/**
 * The system text that offers the body's tools (those tool_choice allows) to the model: how to call
 * one, and each function's name, description and parameters; undefined when none is offered.
 */
export function toolsPrompt(body: ToolBody): string | undefined {
  const offered = offeredTools(body);
  if (offered.length === 0) return undefined;
  const lines = offered.map((t) => {
    const f = t.function;
    return `- ${f.name}${f.description ? `: ${f.description}` : ''} Arguments: ${JSON.stringify(f.parameters ?? NO_PARAMETERS)}`;
  });
  const several = allowsSeveral(body) ? ` To call several at once, reply with a JSON array of calls.` : '';
  return [`You can call functions. To call one, reply with only the call, a JSON object whose one member is the function's name and its arguments: ${callText('name', '{...}')}.${several}`, 'Functions:', ...lines].join('\n');
}

/** The messages with the tools' system text first: in the conversation's system message, or in one put before it. */
export function withToolsPrompt(messages: ChatMessage[], prompt: string | undefined): ChatMessage[] {
  if (prompt === undefined) return messages;
  if (messages[0]?.role === 'system') return [{ role: 'system', content: `${prompt}\n${messages[0].content}` }, ...messages.slice(1)];
  return [{ role: 'system', content: prompt }, ...messages];
}

export interface Call {
  name: string;
  /** The arguments as JSON text. */
  arguments: string;
}

/** A parsed call: an object of one member; given the offered names, of one of them with an object of arguments. */
function callIn(doc: unknown, names: readonly string[] | undefined): Call | null {
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) return null;
  const entries = Object.entries(doc);
  if (entries.length !== 1) return null;
  const [name, args] = entries[0];
  if (names && !(names.includes(name) && args !== null && typeof args === 'object' && !Array.isArray(args))) return null;
  return { name, arguments: JSON.stringify(args) };
}

/**
 * The calls a reply wrote: one call, or (`several`) an array of 1 to MAX_CALLS calls; null if the
 * text is not wholly that, or (given the offered names) a call is not of an offered function with an
 * object of arguments.
 */
export function callsOf(text: string, names?: readonly string[], several = true): Call[] | null {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return null;
  }
  if (!Array.isArray(doc)) {
    const call = callIn(doc, names);
    return call && [call];
  }
  if (!several || doc.length === 0 || doc.length > MAX_CALLS) return null;
  const calls = doc.map((d) => callIn(d, names));
  return calls.every((c) => c !== null) ? (calls as Call[]) : null;
}

/** Whether a free reply's text so far may still become calls: nothing but white space yet, an object opened, or (`several`) an array. */
export function mayBeCall(text: string, several = true): boolean {
  const start = text.trimStart();
  return start === '' || start.startsWith('{') || (several && start.startsWith('['));
}

const textOf = (content: OpenAiMessage['content']): string => (content == null ? '' : typeof content === 'string' ? content : content.map((p) => p.text).join(''));

/**
 * OpenAI's chat messages as memlora's: a developer message is a system message, content parts
 * joined; an assistant's tool calls follow its text as calls; a tool's result is a user turn naming
 * the function it answers.
 */
export function serveMessages(messages: readonly OpenAiMessage[]): ChatMessage[] {
  const names = new Map<string, string>();
  return messages.map((m) => {
    if (m.role === 'tool') {
      const name = names.get(m.tool_call_id ?? '');
      return { role: 'user', content: `Result of ${name ?? 'the tool call'}: ${textOf(m.content)}` };
    }
    const calls = m.tool_calls ?? [];
    for (const c of calls) names.set(c.id, c.function.name);
    const written = calls.map((c) => callText(c.function.name, c.function.arguments));
    // Several calls at once are written as their array.
    const parts = [textOf(m.content), written.length > 1 ? `[${written.join(', ')}]` : (written[0] ?? '')].filter((p) => p !== '');
    return { role: m.role === 'developer' ? 'system' : m.role, content: parts.join('\n') };
  });
}
