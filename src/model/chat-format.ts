/**
 * Chat templates: how a list of messages becomes the token stream a model sees.
 *
 * `memlora` (our default model's format), exact bytes, no whitespace added anywhere:
 *
 *     <|system|>{content}<|end|><|user|>{content}<|end|><|assistant|>{content}<|end|>
 *
 * Content is inserted verbatim (callers clean it). With `addGenerationPrompt` the text ends in
 * `<|assistant|>` and the model's reply follows directly; the reply ends with `<|end|>` (the stop
 * token). Token sequences start with the tokenizer's BOS (`<|endoftext|>`): `encodeChat` adds it,
 * `renderChat` does not (it renders text, and text has no BOS).
 *
 * `dialogpt` (Hugging Face DialoGPT): every message is its content followed by `<|endoftext|>`,
 * roles are not marked, no BOS; the reply follows the last `<|endoftext|>` and ends with one.
 *
 * `plain` (base models without chat tuning, e.g. an imported Llama): one line per message,
 * `System: {content}\n`, `User: {content}\n`, `Assistant: {content}\n`; the generation prompt is
 * `Assistant:` and the reply starts with a space (so the rendered prompt and the rendered full
 * conversation tokenise alike); it ends at a newline, and generation stops at `\nUser:` or EOS.
 *
 * Messages render as segments marked special or not, so that content is always encoded as plain
 * text: a user who types `<|end|>` gets the characters, never the control token.
 */
import type { Tokenizer } from './tokenizer.js';

export type ChatRole = 'system' | 'user' | 'assistant';

export interface ChatMessage {
  role: ChatRole;
  content: string;
}

export const CHAT_TEMPLATE_NAMES = ['memlora', 'dialogpt', 'plain'] as const;
export type ChatTemplateName = (typeof CHAT_TEMPLATE_NAMES)[number];

/** A piece of rendered chat: either a control token (special) or text to encode as text. */
export interface ChatSegment {
  text: string;
  special: boolean;
}

export interface ChatTemplate {
  readonly name: ChatTemplateName;
  /** Whether token sequences start with the tokenizer's BOS id. */
  readonly addBos: boolean;
  /** Segments that open a message of `role`; `open('assistant')` is the generation prompt. */
  open(role: ChatRole): ChatSegment[];
  /** Text between a message's opening and its content; for a reply it is part of the reply. */
  readonly contentPrefix: string;
  /** Segments that close a message of `role`; for the assistant they are the end of the reply. */
  close(role: ChatRole): ChatSegment[];
  /** Special tokens that end a reply (the tokenizer's EOS always does too). */
  readonly stopTokens: readonly string[];
  /** Strings that end a reply when generated as text. */
  readonly stopStrings: readonly string[];
}

export const SPECIAL_TOKENS = {
  endOfText: '<|endoftext|>',
  system: '<|system|>',
  user: '<|user|>',
  assistant: '<|assistant|>',
  end: '<|end|>',
} as const;

/** The special tokens our own tokenizer carries, in id order (id 0 is BOS/EOS/pad). */
export const MEMLORA_SPECIAL_TOKENS: readonly string[] = [
  SPECIAL_TOKENS.endOfText,
  SPECIAL_TOKENS.system,
  SPECIAL_TOKENS.user,
  SPECIAL_TOKENS.assistant,
  SPECIAL_TOKENS.end,
];

/** The `memlora` template in Jinja, for tokenizer_config.json (Hugging Face `apply_chat_template`). */
export const MEMLORA_JINJA_TEMPLATE =
  "{% for message in messages %}{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}";

const special = (text: string): ChatSegment => ({ text, special: true });
const plainText = (text: string): ChatSegment => ({ text, special: false });

const ROLE_TOKEN: Record<ChatRole, string> = {
  system: SPECIAL_TOKENS.system,
  user: SPECIAL_TOKENS.user,
  assistant: SPECIAL_TOKENS.assistant,
};
const ROLE_LABEL: Record<ChatRole, string> = { system: 'System', user: 'User', assistant: 'Assistant' };

const TEMPLATES: Record<ChatTemplateName, ChatTemplate> = {
  memlora: {
    name: 'memlora',
    addBos: true,
    open: (role) => [special(ROLE_TOKEN[role])],
    contentPrefix: '',
    close: () => [special(SPECIAL_TOKENS.end)],
    stopTokens: [SPECIAL_TOKENS.end, SPECIAL_TOKENS.endOfText],
    stopStrings: [],
  },
  dialogpt: {
    name: 'dialogpt',
    addBos: false,
    open: () => [],
    contentPrefix: '',
    close: () => [special(SPECIAL_TOKENS.endOfText)],
    stopTokens: [SPECIAL_TOKENS.endOfText],
    stopStrings: [],
  },
  plain: {
    name: 'plain',
    addBos: true,
    open: (role) => [plainText(`${ROLE_LABEL[role]}:`)],
    contentPrefix: ' ',
    close: () => [plainText('\n')],
    stopTokens: [],
    stopStrings: ['\nUser:'],
  },
};

export class ChatFormatError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly value?: unknown,
  ) {
    super(message);
    this.name = 'ChatFormatError';
  }
}

export function isChatTemplateName(name: string): name is ChatTemplateName {
  return (CHAT_TEMPLATE_NAMES as readonly string[]).includes(name);
}

export function getChatTemplate(name: ChatTemplateName | string = 'memlora'): ChatTemplate {
  if (!isChatTemplateName(name)) {
    throw new ChatFormatError('unknown_chat_template', `unknown chat template "${name}" (known: ${CHAT_TEMPLATE_NAMES.join(', ')})`, name);
  }
  return TEMPLATES[name];
}

export interface RenderChatOptions {
  /** End with the opening of an assistant message, so the model writes the reply next. */
  addGenerationPrompt: boolean;
  /**
   * Leave the last message, the assistant's, open (no closing), so the model continues it: a reply
   * prefilled by the client (vLLM's continue_final_message). Not with addGenerationPrompt.
   */
  continueFinalMessage?: boolean;
  template?: ChatTemplateName;
}

/** The rendered conversation as segments; join their texts for the string form. */
export function renderChatSegments(messages: readonly ChatMessage[], opts: RenderChatOptions): ChatSegment[] {
  const t = getChatTemplate(opts.template ?? 'memlora');
  const continued = opts.continueFinalMessage === true;
  if (continued && (opts.addGenerationPrompt || messages[messages.length - 1]?.role !== 'assistant')) {
    throw new ChatFormatError('bad_continue', 'continuing the final message needs it to be the assistant\'s, and no generation prompt', messages[messages.length - 1]?.role);
  }
  const out: ChatSegment[] = [];
  messages.forEach((m, i) => {
    if (!(m.role in ROLE_TOKEN)) throw new ChatFormatError('bad_role', `unknown chat role "${String(m.role)}"`, m.role);
    out.push(...t.open(m.role));
    const body = t.contentPrefix + m.content;
    if (body.length > 0) out.push(plainText(body));
    if (!(continued && i === messages.length - 1)) out.push(...t.close(m.role));
  });
  if (opts.addGenerationPrompt) out.push(...t.open('assistant'));
  return mergeText(out);
}

/** The rendered conversation as text (special tokens appear as their strings). */
export function renderChat(messages: readonly ChatMessage[], opts: RenderChatOptions): string {
  return renderChatSegments(messages, opts)
    .map((s) => s.text)
    .join('');
}

/** Adjacent text segments encode as one string, exactly as the rendered text would. */
function mergeText(segments: ChatSegment[]): ChatSegment[] {
  const out: ChatSegment[] = [];
  for (const s of segments) {
    const last = out[out.length - 1];
    if (last && !last.special && !s.special) last.text += s.text;
    else out.push({ ...s });
  }
  return out;
}

/** Token ids of segments: special segments become their single id, text is encoded as text. */
export function encodeSegments(tokenizer: Tokenizer, segments: readonly ChatSegment[]): number[] {
  const ids: number[] = [];
  for (const s of mergeText([...segments])) {
    if (s.special) ids.push(requireSpecialId(tokenizer, s.text));
    else if (s.text.length > 0) ids.push(...tokenizer.encode(s.text, { parseSpecial: false }));
  }
  return ids;
}

export function requireSpecialId(tokenizer: Tokenizer, token: string): number {
  const id = tokenizer.tokenToId(token);
  if (id === undefined) {
    throw new ChatFormatError('missing_special_token', `the tokenizer has no token "${token}" that this chat template needs`, token);
  }
  return id;
}

/** Token ids of a conversation, with BOS when the template wants it. */
export function encodeChat(tokenizer: Tokenizer, messages: readonly ChatMessage[], opts: RenderChatOptions): number[] {
  const t = getChatTemplate(opts.template ?? 'memlora');
  const ids = t.addBos ? [tokenizer.bosId] : [];
  ids.push(...encodeSegments(tokenizer, renderChatSegments(messages, opts)));
  return ids;
}

/** Ids that end a reply under this template: its stop tokens the tokenizer knows, plus EOS. */
export function stopTokenIds(tokenizer: Tokenizer, template: ChatTemplateName = 'memlora'): number[] {
  const ids = new Set<number>([tokenizer.eosId]);
  for (const s of getChatTemplate(template).stopTokens) {
    const id = tokenizer.tokenToId(s);
    if (id !== undefined) ids.add(id);
  }
  return [...ids].sort((a, b) => a - b);
}
