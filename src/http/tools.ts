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
 * so a model sees what it would write. A call's arguments are the text the model wrote for them (white
 * space outside strings left out), and
 * `CallSplitter` cuts a reply into calls as it is written, so that a guided call streams as OpenAI's
 * do: its name first, then its arguments piece by piece.
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

/** What a piece of a reply added to its calls: call `index` begins (its `name`), and/or text of its arguments. */
export interface CallPiece {
  index: number;
  name?: string;
  arguments: string;
}

type SplitState = 'lead' | 'item' | 'open' | 'name' | 'colon' | 'value' | 'args' | 'close' | 'next' | 'end' | 'not';

/** A name's JSON string as text; null if it is not a valid one. */
function nameOf(literal: string): string | null {
  try {
    return JSON.parse(literal) as string;
  } catch {
    return null;
  }
}

const isSpace = (ch: string): boolean => ch === ' ' || ch === '\n' || ch === '\r' || ch === '\t';

/**
 * Cuts a reply, as it is written, into calls of the form the tools prompt asks for: one object
 * `{"name": arguments}` or (`several`) an array of them. `push` takes the next piece of text and
 * returns what it added: a call's name once its string is closed, and its arguments' text as it comes
 * (the value as written, without the white space between its tokens). It follows the form, not JSON: a
 * reply it can follow is calls only if the whole text also parses (`callsOf`). Text that leaves the
 * form stops it (`failed`); `done` says that the calls are closed.
 */
export class CallSplitter {
  private state: SplitState = 'lead';
  private index = -1;
  private name = '';
  private escaped = false;
  private inString = false;
  private depth = 0;
  /** Whether the calls are an array (only with `several`). */
  array = false;

  constructor(private readonly several = true) {}

  get done(): boolean {
    return this.state === 'end';
  }

  get failed(): boolean {
    return this.state === 'not';
  }

  /** Calls begun so far. */
  get calls(): number {
    return this.index + 1;
  }

  push(text: string): CallPiece[] {
    const pieces: CallPiece[] = [];
    let args = '';
    const flush = () => {
      if (args === '') return;
      const last = pieces.at(-1);
      if (last?.index === this.index) last.arguments += args;
      else pieces.push({ index: this.index, arguments: args });
      args = '';
    };
    for (const ch of text) {
      const state = this.state;
      if (state === 'not') break;
      if (state === 'name') {
        this.name += ch;
        if (this.escaped) this.escaped = false;
        else if (ch === '\\') this.escaped = true;
        else if (ch === '"') {
          const name = nameOf(this.name);
          if (name === null) {
            this.state = 'not';
            break;
          }
          pieces.push({ index: this.index, name, arguments: '' });
          this.state = 'colon';
        }
        continue;
      }
      if (state === 'args') {
        if (this.depth > 0 || this.inString) {
          // Inside a string, object or array value: it ends where its string or outer bracket closes.
          // White space between its tokens is left out, as JSON.stringify would.
          if (!this.inString && isSpace(ch)) continue;
          args += ch;
          if (this.inString) {
            if (this.escaped) this.escaped = false;
            else if (ch === '\\') this.escaped = true;
            else if (ch === '"') this.inString = false;
          } else if (ch === '"') this.inString = true;
          else if (ch === '{' || ch === '[') this.depth++;
          else if (ch === '}' || ch === ']') this.depth--;
          if (this.depth === 0 && !this.inString) {
            flush();
            this.state = 'close';
          }
          continue;
        }
        // A number or literal: white space or the call's close ends it.
        if (!isSpace(ch) && ch !== '}') {
          if (',:[]{}"'.includes(ch)) {
            this.state = 'not';
            break;
          }
          args += ch;
          continue;
        }
        flush();
        this.state = 'close';
      }
      if (isSpace(ch)) continue;
      this.state = this.after(this.state, ch);
      if (this.state === 'args') {
        // The value's first character.
        args += ch;
        this.depth = ch === '{' || ch === '[' ? 1 : 0;
        this.inString = ch === '"';
        this.escaped = false;
      }
    }
    flush();
    return pieces;
  }

  /** The state after `ch` (not white space, outside a name or a value) in `state`. */
  private after(state: SplitState, ch: string): SplitState {
    switch (state) {
      case 'lead':
        if (ch === '[' && this.several) {
          this.array = true;
          return 'item';
        }
        return ch === '{' ? this.begin() : 'not';
      case 'item':
        return ch === '{' ? this.begin() : 'not';
      case 'open':
        if (ch !== '"') return 'not';
        this.name = '"';
        this.escaped = false;
        return 'name';
      case 'colon':
        return ch === ':' ? 'value' : 'not';
      case 'value':
        return ch === ',' || ch === '}' || ch === ']' || ch === ':' ? 'not' : 'args';
      case 'close':
        if (ch !== '}') return 'not';
        return this.array ? 'next' : 'end';
      case 'next':
        if (ch === ',' && this.index + 1 < MAX_CALLS) return 'item';
        return ch === ']' ? 'end' : 'not';
      default:
        return 'not';
    }
  }

  private begin(): SplitState {
    this.index++;
    return 'open';
  }
}

/** Whether a parsed call is of an offered function (given their names) with an object of arguments. */
function offered(doc: unknown, names: readonly string[] | undefined): boolean {
  if (names === undefined) return true;
  const args = Object.values(doc as object)[0] as unknown;
  return names.includes(Object.keys(doc as object)[0]) && args !== null && typeof args === 'object' && !Array.isArray(args);
}

/**
 * The calls a reply wrote, each with its arguments as written (white space outside strings left out): one call, or (`several`) an array of
 * 1 to MAX_CALLS calls; null if the text is not wholly that (valid JSON, each call an object of one
 * member), or (given the offered names) a call is not of an offered function with an object of
 * arguments.
 */
export function callsOf(text: string, names?: readonly string[], several = true): Call[] | null {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return null;
  }
  const splitter = new CallSplitter(several);
  const calls: Call[] = [];
  for (const piece of splitter.push(text)) {
    if (piece.name !== undefined) calls.push({ name: piece.name, arguments: '' });
    calls[piece.index].arguments += piece.arguments;
  }
  if (!splitter.done) return null;
  // The splitter followed the form and the text is JSON: each call is an object of one member.
  const docs = splitter.array ? (doc as unknown[]) : [doc];
  return docs.every((d) => offered(d, names)) ? calls : null;
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
