/**
 * OpenAI's function calling on chat completions. Offered tools (any tool_choice but `none`) are
 * described to the model in the system message, with the form of a call: one JSON object with exactly
 * one member, the function's name, whose value is the arguments (`{"get_weather": {"city": "Lyon"}}`),
 * and, unless parallel_tool_calls is false, of several calls at once: a JSON array of calls.
 * A tool_choice that asks for a call (`required`, a named function, or `allowed_tools` in mode
 * `required`: a call among the tools it lists) guides the reply to that form,
 * the arguments a document of the function's parameters schema. With `auto` the model decides: a
 * reply is free text unless it opens a call (`{`, or `[` then `{` for several), and a reply it
 * opens so is guided to calls of the offered functions with arguments of their parameters, and ends
 * when they close (autoCallGuide); beside a JSON schema response format the reply is one document,
 * calls or one of the format's (callsOrDocument). Beside JSON mode, a pattern or a choice, or where
 * the parameters cannot guide a reply and no tool is strict, the reply is not guided as calls: one
 * that begins a call (or an array of them) of offered functions with objects of arguments is calls,
 * and any text after them the message's content (the arguments as the model wrote them, not checked
 * against the schema). Calls and their results sent back in the conversation are rendered for
 * the chat template in the same form, so a model sees what it would write. A call's arguments are the
 * text the model wrote for them (white space outside strings left out). `CallSplitter` cuts a reply
 * into calls as it is written and `ReplyCalls` reads a reply as calls and text as it comes, so that
 * calls stream as OpenAI's do (the name with the arguments' first piece, then the arguments piece by
 * piece) and a reply reads the same streamed or not.
 */
import type { z } from 'zod';
import type { chatCompletionRequestSchema } from './schemas.js';
import type { ToolCallGuide } from '../serve/types.js';
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

/**
 * How a reply may call a tool: `guided` (tool_choice required, named, or allowed_tools in mode
 * required), `parsed` (auto, OpenAI's default with tools, or allowed_tools in mode auto), or null
 * (no tools, or none).
 */
export type Calling = 'guided' | 'parsed' | null;

export function callingOf(body: Pick<ChatBody, 'tools' | 'tool_choice'>): Calling {
  const choice = body.tool_choice;
  if (!body.tools?.length || choice === 'none') return null;
  if (typeof choice === 'object' && choice?.type === 'allowed_tools') return choice.allowed_tools.mode === 'auto' ? 'parsed' : 'guided';
  return choice == null || choice === 'auto' ? 'parsed' : 'guided';
}

/** The tools a reply may call: the one tool_choice names, those allowed_tools lists, or all; none with tool_choice none. */
export function offeredTools(body: Pick<ChatBody, 'tools' | 'tool_choice'>): NonNullable<ChatBody['tools']> {
  const choice = body.tool_choice;
  if (callingOf(body) === null) return [];
  if (typeof choice !== 'object' || choice === null) return body.tools!;
  const allowed = new Set(choice.type === 'allowed_tools' ? choice.allowed_tools.tools.map((t) => t.function.name) : [choice.function.name]);
  return body.tools!.filter((t) => allowed.has(t.function.name));
}

/**
 * The responseFormat that makes the reply a call of the tools tool_choice allows, or (parallel calls
 * allowed) an array of 1 to MAX_CALLS of them; undefined when it asks for none.
 */
export function toolCallFormat(body: ToolBody): GenerateRequest['responseFormat'] {
  if (callingOf(body) !== 'guided') return undefined;
  return { type: 'json_schema', jsonSchema: { name: 'tool_call', schema: callSchema(body) } };
}

/** One call: an object whose one member is an offered tool's name, its value the arguments. */
function callObject(body: ToolBody): Record<string, unknown> {
  const properties = Object.fromEntries(offeredTools(body).map((t) => [t.function.name, t.function.parameters ?? NO_PARAMETERS]));
  return { type: 'object', properties, minProperties: 1, maxProperties: 1, additionalProperties: false };
}

/** The alternatives of a reply's calls, each call a reference to `ref`: one call, or (parallel calls allowed) an array of 1 to MAX_CALLS of them. */
const callForms = (body: ToolBody, ref: string): Array<Record<string, unknown>> =>
  allowsSeveral(body) ? [{ $ref: ref }, { type: 'array', items: { $ref: ref }, minItems: 1, maxItems: MAX_CALLS }] : [{ $ref: ref }];

/** The schema of a reply's calls: one call of an offered tool, or (parallel calls allowed) an array of 1 to MAX_CALLS of them. */
function callSchema(body: ToolBody): Record<string, unknown> {
  const call = callObject(body);
  return allowsSeveral(body) ? { $defs: { call }, anyOf: callForms(body, '#/$defs/call') } : call;
}

/** Where a union of calls and a response format's documents keeps the call's schema: a name of its own among the format's definitions. */
export const CALL_DEF = 'memlora_tool_call';

/** Whether every reference within `schema` (a `$ref` string starting with #) points into its definitions (`#/$defs/`, `#/definitions/`), which a union keeps at the root. */
function refersOnlyToDefinitions(value: unknown): boolean {
  if (Array.isArray(value)) return value.every(refersOnlyToDefinitions);
  if (typeof value !== 'object' || value === null) return true;
  return Object.entries(value).every(([k, v]) =>
    k === '$ref' && typeof v === 'string' && v.startsWith('#') ? v.startsWith('#/$defs/') || v.startsWith('#/definitions/') : refersOnlyToDefinitions(v),
  );
}

/**
 * The schema of a reply that is calls of the offered tools or a document of `format` (a response
 * format's JSON schema): the format's definitions stay at the root, so its references into them
 * resolve as before, with the call's beside them. Undefined where that cannot be: a reference
 * elsewhere in the format's root (`#`, `#/properties/...`), which would move, or a definition
 * already named CALL_DEF.
 */
export function callsOrDocument(body: ToolBody, format: Record<string, unknown>): Record<string, unknown> | undefined {
  const { $defs, definitions, ...document } = format;
  const defs = typeof $defs === 'object' && $defs !== null && !Array.isArray($defs) ? ($defs as Record<string, unknown>) : $defs === undefined ? {} : null;
  if (defs === null || CALL_DEF in defs || !refersOnlyToDefinitions(format)) return undefined;
  return {
    $defs: { ...defs, [CALL_DEF]: callObject(body) },
    ...(definitions !== undefined ? { definitions } : {}),
    anyOf: [...callForms(body, `#/$defs/${CALL_DEF}`), document],
  };
}

/**
 * With tool_choice auto, how calls are guided, given the request's own guides (`req`, as
 * /v1/generate has them): with none, a reply that opens with `{` (or `[` then `{`, parallel calls
 * allowed) is guided as calls of the offered tools with arguments of their parameters, and ends when
 * they close, and any other reply is free text; beside a JSON schema response format (response_format
 * json_schema, guided_json), the reply is one document that is either calls or one of the format's
 * (`orFormat`), so a model asked for a structured answer can still call a tool (as OpenAI's agents
 * ask). Undefined with tool_choice none, required or named (toolCallFormat), or beside JSON mode, a
 * pattern, a grammar or a choice, and a format that cannot be joined with calls (callsOrDocument): that guide
 * rules the reply, and calls are read from it as written.
 */
export function autoCallGuide(body: ToolBody, req: Pick<GenerateRequest, 'responseFormat' | 'guidedChoice' | 'guidedRegex' | 'guidedGrammar'>): ToolCallGuide | undefined {
  if (callingOf(body) !== 'parsed') return undefined;
  const guide: ToolCallGuide = { schema: callSchema(body), several: allowsSeveral(body), strict: offeredTools(body).some((t) => t.function.strict === true) };
  const format = req.responseFormat;
  if (format?.type === 'json_schema') {
    const orFormat = callsOrDocument(body, format.jsonSchema.schema);
    return orFormat ? { ...guide, orFormat } : undefined;
  }
  const other = format?.type === 'json_object' || req.guidedChoice !== undefined || req.guidedRegex !== undefined || req.guidedGrammar !== undefined;
  return other ? undefined : guide;
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
 * returns what it added: a call's name with the first character of its arguments, then the rest of
 * its arguments as they come (the value as written, without the white space between its tokens). It
 * follows the form, not JSON. With `names`, a call must be of one of them with an object of
 * arguments. What comes after the calls, or from where the form breaks (a call's own text when it
 * breaks before its arguments begin), is the reply's rest (`takeRest`); `done` says that the calls
 * closed, `failed` that the form broke.
 */
export class CallSplitter {
  private state: SplitState = 'lead';
  private index = -1;
  private name = '';
  /** The current call's text from its opening brace until its arguments begin, and its name once read. */
  private opening = '';
  private pendingName = '';
  private escaped = false;
  private inString = false;
  private depth = 0;
  private rest = '';
  /** Whether the calls are an array (only with `several`). */
  array = false;

  constructor(
    private readonly several = true,
    private readonly names?: readonly string[],
  ) {}

  get done(): boolean {
    return this.state === 'end';
  }

  get failed(): boolean {
    return this.state === 'not';
  }

  /** Calls begun so far (their arguments begun). */
  get calls(): number {
    return this.index + 1;
  }

  /** The last call's arguments have begun and not closed (the reply, if it ends here, cut them). */
  get inArguments(): boolean {
    return this.state === 'args';
  }

  /** The text past the calls since the last take. */
  takeRest(): string {
    const rest = this.rest;
    this.rest = '';
    return rest;
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
    const chars = [...text];
    /** The form broke at chars[k] (a call not begun gives back its own text too). */
    const broke = (k: number) => {
      this.state = 'not';
      this.rest += this.opening + chars.slice(k).join('');
      this.opening = '';
    };
    for (let k = 0; k < chars.length; k++) {
      const ch = chars[k];
      const state = this.state;
      if (state === 'not' || state === 'end') {
        this.rest += chars.slice(k).join('');
        break;
      }
      if (state === 'name') {
        this.opening += ch;
        this.name += ch;
        if (this.escaped) this.escaped = false;
        else if (ch === '\\') this.escaped = true;
        else if (ch === '"') {
          const name = nameOf(this.name);
          if (name === null || (this.names && !this.names.includes(name))) {
            broke(k + 1);
            break;
          }
          this.pendingName = name;
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
            flush();
            broke(k);
            break;
          }
          args += ch;
          continue;
        }
        flush();
        this.state = 'close';
      }
      if (isSpace(ch)) {
        if (this.opening !== '') this.opening += ch;
        continue;
      }
      const from = this.state;
      const next = this.after(from, ch);
      if (next === 'not') {
        flush();
        broke(k);
        break;
      }
      if (next === 'open') this.opening = ch;
      else if (from === 'open' || from === 'colon') this.opening += ch;
      this.state = next;
      if (next === 'args') {
        // The arguments' first character: the call begins.
        this.index++;
        this.opening = '';
        pieces.push({ index: this.index, name: this.pendingName, arguments: '' });
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
        return ch === '{' ? 'open' : 'not';
      case 'item':
        return ch === '{' ? 'open' : 'not';
      case 'open':
        if (ch !== '"') return 'not';
        this.name = '"';
        this.escaped = false;
        return 'name';
      case 'colon':
        return ch === ':' ? 'value' : 'not';
      case 'value':
        // With the offered names, the arguments are an object.
        if (this.names) return ch === '{' ? 'args' : 'not';
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
}

/**
 * A reply read as it is written, as OpenAI's tool calls or text. Its text is held back while it may
 * still begin a call; once a call's arguments begin it is calls (each piece handed out as it comes),
 * and whatever follows them, or breaks their form, is text again; a reply that cannot begin a call is
 * text throughout. With `names` (tool_choice auto) only calls of those functions, with objects of
 * arguments, count; without (a guided call) any.
 */
export class ReplyCalls {
  private held = '';
  private splitter: CallSplitter | null = null;
  private text = false;

  constructor(
    private readonly several: boolean,
    private readonly names?: readonly string[],
  ) {}

  /** Calls begun. */
  get calls(): number {
    return this.splitter?.calls ?? 0;
  }

  /** Whether the calls are an array (their ids are then numbered). */
  get array(): boolean {
    return this.splitter?.array ?? false;
  }

  /** A call's arguments begun and not closed: a reply ending here cut them (max_tokens, a stop string). */
  get cut(): boolean {
    return this.splitter?.inArguments ?? false;
  }

  /** The next piece of the reply: the text it releases and the pieces of calls it writes. */
  push(piece: string): { content: string; calls: CallPiece[] } {
    if (this.text) return { content: piece, calls: [] };
    if (this.splitter) {
      const calls = this.splitter.push(piece);
      return { content: this.splitter.takeRest(), calls };
    }
    this.held += piece;
    // Not begun yet: read what is held afresh (a few characters), and keep the reader once a call begins.
    const trial = new CallSplitter(this.several, this.names);
    const calls = trial.push(this.held);
    if (trial.calls > 0) {
      this.splitter = trial;
      this.held = '';
      return { content: trial.takeRest(), calls };
    }
    if (!trial.failed) return { content: '', calls: [] };
    this.text = true;
    const content = this.held;
    this.held = '';
    return { content, calls: [] };
  }

  /** The reply has ended: the text still held back (it never began a call). */
  end(): string {
    const held = this.held;
    this.held = '';
    return held;
  }
}

/** How a body's replies may call its tools: guided or parsed (or not at all), the functions offered, and whether several at once. */
export interface ToolOffer {
  calling: Calling;
  names: readonly string[];
  several: boolean;
}

export function toolOffer(body: ToolBody): ToolOffer {
  return { calling: callingOf(body), names: offeredTools(body).map((t) => t.function.name), several: allowsSeveral(body) };
}

/** The names a reply's calls are read against: the offered functions' where calls are parsed, none (any) where guided. */
const readNames = (offer: ToolOffer) => (offer.calling === 'parsed' ? offer.names : undefined);

/** A reader of a reply as calls and text under the offer, or null where no tool is offered (no tools, or tool_choice none). */
export const offerReader = (offer: ToolOffer): ReplyCalls | null => (offer.calling === null ? null : new ReplyCalls(offer.several, readNames(offer)));

/** A whole reply read under the offer (readCalls), or null where no tool is offered. */
export const readOffered = (text: string, offer: ToolOffer) => (offer.calling === null ? null : readCalls(text, offer.several, readNames(offer)));

/**
 * A whole reply as calls and text, as `ReplyCalls` reads it piece by piece (so a reply reads the same
 * streamed or not): the calls it began, and its text (null when only white space).
 */
export function readCalls(text: string, several = true, names?: readonly string[]): { calls: Call[]; array: boolean; content: string | null; cut: boolean } {
  const reader = new ReplyCalls(several, names);
  const { content, calls: pieces } = reader.push(text);
  const calls: Call[] = [];
  for (const p of pieces) {
    if (p.name !== undefined) calls.push({ name: p.name, arguments: '' });
    calls[p.index].arguments += p.arguments;
  }
  const rest = content + reader.end();
  return { calls, array: reader.array, content: rest.trim() === '' ? null : rest, cut: reader.cut };
}

/** A message's text: its content, or the text of its parts (none: empty). */
export const textOf = (content: string | ReadonlyArray<{ text: string }> | null | undefined): string => (content == null ? '' : typeof content === 'string' ? content : content.map((p) => p.text).join(''));

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
