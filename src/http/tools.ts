/**
 * OpenAI's function calling on chat completions. A tool_choice that asks for a call (`required`, or a
 * named function) guides the reply to one JSON object with exactly one member, the function's name,
 * whose value is a document of that function's parameters schema (`{"get_weather": {"city": "Lyon"}}`);
 * that text becomes the message's `tool_calls`. `auto` and `none` leave the reply free text: memlora has
 * no parser that finds calls in free text. Calls and their results sent back in the conversation are
 * rendered for the chat template in the same form, so a model sees what it would write.
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

/** Whether the body asks for a call: tools, and tool_choice required or a named function. */
export function asksForCall(body: Pick<ChatBody, 'tools' | 'tool_choice'>): boolean {
  const choice = body.tool_choice;
  return Boolean(body.tools?.length) && choice != null && choice !== 'none' && choice !== 'auto';
}

/** The responseFormat that makes the reply one call of the tools tool_choice allows; undefined when it asks for none. */
export function toolCallFormat(body: Pick<ChatBody, 'tools' | 'tool_choice'>): GenerateRequest['responseFormat'] {
  if (!asksForCall(body)) return undefined;
  const choice = body.tool_choice!;
  const allowed = typeof choice === 'object' ? body.tools!.filter((t) => t.function.name === choice.function.name) : body.tools!;
  const properties = Object.fromEntries(allowed.map((t) => [t.function.name, t.function.parameters ?? NO_PARAMETERS]));
  return { type: 'json_schema', jsonSchema: { name: 'tool_call', schema: { type: 'object', properties, minProperties: 1, maxProperties: 1, additionalProperties: false } } };
}

/** The call a guided reply wrote: the function's name and its arguments as JSON text; null if the text is not a whole call. */
export function callOf(text: string): { name: string; arguments: string } | null {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return null;
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) return null;
  const entries = Object.entries(doc);
  return entries.length === 1 ? { name: entries[0][0], arguments: JSON.stringify(entries[0][1]) } : null;
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
