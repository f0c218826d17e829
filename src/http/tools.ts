/**
 * OpenAI's function calling on chat completions. Offered tools (any tool_choice but `none`) are
 * described to the model in the system message, with the form of a call: one JSON object with exactly
 * one member, the function's name, whose value is the arguments (`{"get_weather": {"city": "Lyon"}}`).
 * A tool_choice that asks for a call (`required`, or a named function) guides the reply to that form,
 * the arguments a document of the function's parameters schema. With `auto` the reply is free, and
 * becomes a call when the whole reply is one of an offered function with an object of arguments (the
 * arguments are then as the model wrote them, not checked against the schema). Calls and their results
 * sent back in the conversation are rendered for the chat template in the same form, so a model sees
 * what it would write.
 */
import type { z } from 'zod';
import type { chatCompletionRequestSchema } from './schemas.js';
import type { ChatMessage, GenerateRequest } from './services.js';

type ChatBody = z.output<typeof chatCompletionRequestSchema>;
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

/** The responseFormat that makes the reply one call of the tools tool_choice allows; undefined when it asks for none. */
export function toolCallFormat(body: Pick<ChatBody, 'tools' | 'tool_choice'>): GenerateRequest['responseFormat'] {
  if (callingOf(body) !== 'guided') return undefined;
  const properties = Object.fromEntries(offeredTools(body).map((t) => [t.function.name, t.function.parameters ?? NO_PARAMETERS]));
  return { type: 'json_schema', jsonSchema: { name: 'tool_call', schema: { type: 'object', properties, minProperties: 1, maxProperties: 1, additionalProperties: false } } };
}

/**
 * The system text that offers the body's tools (those tool_choice allows) to the model: how to call
 * one, and each function's name, description and parameters; undefined when none is offered.
 */
export function toolsPrompt(body: Pick<ChatBody, 'tools' | 'tool_choice'>): string | undefined {
  const offered = offeredTools(body);
  if (offered.length === 0) return undefined;
  const lines = offered.map((t) => {
    const f = t.function;
    return `- ${f.name}${f.description ? `: ${f.description}` : ''} Arguments: ${JSON.stringify(f.parameters ?? NO_PARAMETERS)}`;
  });
  return [`You can call functions. To call one, reply with only the call, a JSON object whose one member is the function's name and its arguments: ${callText('name', '{...}')}`, 'Functions:', ...lines].join('\n');
}

/** The messages with the tools' system text first: in the conversation's system message, or in one put before it. */
export function withToolsPrompt(messages: ChatMessage[], prompt: string | undefined): ChatMessage[] {
  if (prompt === undefined) return messages;
  if (messages[0]?.role === 'system') return [{ role: 'system', content: `${prompt}\n${messages[0].content}` }, ...messages.slice(1)];
  return [{ role: 'system', content: prompt }, ...messages];
}

/**
 * The call a reply wrote: the function's name and its arguments as JSON text; null if the text is not
 * one whole call, or (given the offered names) not of an offered function with an object of arguments.
 */
export function callOf(text: string, names?: readonly string[]): { name: string; arguments: string } | null {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return null;
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) return null;
  const entries = Object.entries(doc);
  if (entries.length !== 1) return null;
  const [name, args] = entries[0];
  if (names && !(names.includes(name) && args !== null && typeof args === 'object' && !Array.isArray(args))) return null;
  return { name, arguments: JSON.stringify(args) };
}

/** Whether a free reply's text so far may still become a call: nothing but white space yet, or an object opened. */
export function mayBeCall(text: string): boolean {
  const start = text.trimStart();
  return start === '' || start.startsWith('{');
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
    const parts = [textOf(m.content), ...calls.map((c) => callText(c.function.name, c.function.arguments))].filter((p) => p !== '');
    return { role: m.role === 'developer' ? 'system' : m.role, content: parts.join('\n') };
  });
}
