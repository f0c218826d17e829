/**
 * Guided decoding to JSON: a byte-level pushdown automaton that takes exactly the documents of a
 * compiled JSON schema (json-schema.ts), and, at every step, the mask of the vocabulary's tokens whose
 * bytes keep the reply a prefix of such a document. Sampling draws only among them (the model's own
 * probabilities, renormalised), and the reply ends the moment the root closes; a reply cut by
 * maxTokens or the context window is a prefix. OpenAI's JSON mode (`{"type": "json_object"}`) is the
 * schema of any object (JSON_OBJECT); structured outputs and vLLM's guided_json give their own.
 *
 * The state is a stack of frames, one per value being written (an object, an array, a string, a
 * number, a literal of an enum), each at a phase of its grammar (RFC 8259); every step runs each token's
 * bytes from a copy of the state, so one token may close a string and open the next key. A number or
 * a literal ends only when a byte that cannot continue it comes, and that byte goes to the container.
 * Runs of whitespace between tokens are bounded (MAX_WHITESPACE bytes, one line break: pretty-printing
 * never needs a blank line), so a model cannot fill its reply with blank lines. Special tokens (control
 * tokens of the chat template, EOS) are never drawn: the document's end ends the reply. Masks are kept
 * per schema and state (mask-cache.ts); counts that no bound reads (a string's length without
 * minLength / maxLength) are left out of the state so that its masks repeat.
 *
 * anyOf alternatives that start alike (two kinds of object) are followed together: where more than
 * one may begin, each takes a state of its own (a fork, followed within the token too), and the
 * guide keeps every state the reply so far may be in (at most MAX_BRANCHES, those alike once); a
 * token is allowed when any of them takes it, and states that cannot take it are dropped.
 *
 * An object with free keys (JSON mode's, additionalProperties) never repeats a key: each key's bytes
 * are hashed as they come (FNV-1a, 32 bits) and a closing quote that would write a hash the object
 * holds is refused (a new key colliding with a written one is refused too, about once in 2^32 / keys
 * written; the model writes another). So that the same key is always the same bytes, such keys are
 * written without `\u` escapes or `\/` (characters as themselves, `\"` `\\` and the short
 * escapes of control characters). The written keys are left out of the state's cached mask, which
 * is the mask without the rule: only tokens with a quote can close a key, so those alone are run
 * again with it.
 */
import type { Guide } from './guide.js';
import { type CompiledSchema, MAX_ALIKE, type SchemaNode, compileJsonSchema } from './json-schema.js';
import { cachedBy, cachedMask } from './mask-cache.js';
import { endsMultiple, stepMultiple } from './multiple-of.js';
import { fewestToMatch, matchWithin, regexAccepts, stepRegex } from './regex.js';

/** Most whitespace bytes in a row between two JSON tokens (pretty-printing needs a newline and some indent). */
export const MAX_WHITESPACE = 16;

/** OpenAI's JSON mode: any JSON object. */
export const JSON_OBJECT = { type: 'object' } as const;

// Phases of an object frame.
const O_OPEN = 0; // after '{': a key or '}'
const O_NEXT = 1; // after ',': a key
const O_KEY = 2; // in a named property's key (`cands` still possible, `pos` bytes in)
const O_KEYSTR = 3; // a free key (a string frame above)
const O_COLON = 4; // after a key
const O_VALUE = 5; // after ':': a value must start
const O_WAIT = 6; // a value (a frame above)
const O_AFTER = 7; // after a value: ',' or '}'
// Phases of an array frame.
const A_OPEN = 0; // after '[': a value or ']'
const A_VALUE = 1; // after ',': a value
const A_WAIT = 2;
const A_AFTER = 3;
// Phases of a string frame: in the text, after a backslash, or HEX + the hex digits of a \u escape still to come.
const S_TEXT = 0;
const S_ESC = 1;
const S_HEX = 10;
// Phases of a number frame.
const N_SIGN = 0; // after '-'
const N_ZERO = 1; // a leading 0 (may end)
const N_INT = 2; // integer digits (may end)
const N_DOT = 3; // after '.'
const N_FRAC = 4; // fraction digits (may end)
const N_E = 5; // after 'e'
const N_ESIGN = 6; // after the exponent's sign
const N_EXP = 7; // exponent digits (may end)
/**
 * A number with neither bounds nor multipleOf (JSON mode's, a plain "number" or "integer") has at
 * most 15 integer digits and 2 exponent digits (the frame counts them in `b`), so that it parses to
 * the same finite double (JSON.parse of 1e999 is Infinity, of 20 digits a rounded value). Every
 * digit count may end there, so the cap is no dead end. A multiple (one bound or none) has at most
 * 15 integer digits too, each taken only where a multiple can still end within them.
 */
export const MAX_INTEGER_DIGITS = 15;
export const MAX_EXPONENT_DIGITS = 2;

interface Frame {
  /** The schema node being written. */
  n: number;
  p: number;
  /** Object: the last property written (-1: none); array: items written; string: code points; literal: bytes matched. */
  a: number;
  /** Object: bytes of the key matched; string: UTF-8 continuation bytes still to come. */
  b: number;
  /** Object: the properties the key may still be; literal: the values still possible; string with a pattern: its NFA's states. */
  c: readonly number[];
  /**
   * Object: members written, counted only as far as its minProperties / maxProperties read (so that
   * states repeat); a free key: its hash so far (never 0), the object keeping the written keys'
   * hashes in `c`; another string: 0.
   */
  m: number;
}

interface State {
  frames: Frame[];
  /** The bottom frames still shared with the state this one was copied from (copied before they are written). */
  shared: number;
  /** Whitespace bytes in the current run, and its line feeds. */
  ws: number;
  nl: number;
  done: boolean;
  /** Take a free key an object holds already (the masks kept per state are those without the rule). */
  laxKeys: boolean;
  /** States of the other alternatives that the last byte began (anyOf alternatives that start alike), for run() to follow. */
  forks: State[] | null;
}

const fresh = (): State => ({ frames: [], shared: 0, ws: 0, nl: 0, done: false, laxKeys: false, forks: null });

/** A copy of `from` (into `into` where given) sharing its frames, which each copies before it writes one. */
function copyOf(from: State, into: State = fresh()): State {
  into.frames = from.frames.slice();
  into.shared = into.frames.length;
  into.ws = from.ws;
  into.nl = from.nl;
  into.done = from.done;
  into.laxKeys = from.laxKeys;
  into.forks = null;
  return into;
}

const OK = 0; // taken
const FAIL = 1; // no document continues this way
const END = 2; // taken, and the frame's value is whole
const PASS = 3; // the frame's value was whole before this byte, which is the container's

const NONE: readonly number[] = [];
const isDigit = (b: number) => b >= 0x30 && b <= 0x39;
const isHex = (b: number) => isDigit(b) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);
export const isWhitespace = (b: number) => b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;
/** The range of the first continuation byte: after most lead bytes, after E0, ED, F0 and F4. */
const FIRST_CONTINUATION: ReadonlyArray<readonly [number, number]> = [
  [0x80, 0xbf],
  [0xa0, 0xbf],
  [0x80, 0x9f],
  [0x90, 0xbf],
  [0x80, 0x8f],
];
const ESCAPABLE = new Set([...'"\\/bfnrt'].map((c) => c.charCodeAt(0)));
/** A free key's escapes: those of characters that cannot be written as themselves (no `\/`, no `\u`). */
const KEY_ESCAPABLE = new Set([...'"\\bfnrt'].map((c) => c.charCodeAt(0)));
/** FNV-1a's offset basis: a free key's hash before its first byte. */
const FNV_BASIS = 2166136261;

/** Whitespace between tokens, bounded; any other byte ends the run. */
function whitespace(s: State, b: number): number {
  return ++s.ws <= MAX_WHITESPACE && (b !== 0x0a || ++s.nl <= 1) ? OK : FAIL;
}

/** Start a value of node `id` with its first byte: push its frame. */
function begin(c: CompiledSchema, s: State, id: number, b: number): boolean {
  const node = c.nodes[id];
  switch (node.k) {
    case 'alt': {
      const cands = node.alts.filter((alt) => c.first[alt].has(b));
      if (cands.length <= 1) return cands.length === 1 && begin(c, s, cands[0], b);
      // Alternatives that start alike: the first that begins takes the state, each later one begins in a copy (a fork).
      const before = copyOf(s);
      s.shared = s.frames.length;
      let taken = false;
      for (const alt of cands) {
        if (!taken) {
          taken = begin(c, s, alt, b);
          continue;
        }
        const fork = copyOf(before);
        if (!begin(c, fork, alt, b)) continue;
        (s.forks ??= []).push(fork, ...(fork.forks ?? []));
        fork.forks = null;
      }
      return taken;
    }
    case 'obj':
      if (b !== 0x7b) return false;
      s.frames.push({ n: id, p: O_OPEN, a: -1, b: 0, c: NONE, m: 0 });
      return true;
    case 'arr':
      if (b !== 0x5b) return false;
      s.frames.push({ n: id, p: A_OPEN, a: 0, b: 0, c: NONE, m: 0 });
      return true;
    case 'str': {
      if (b !== 0x22) return false;
      // An item of an array of unique strings is hashed as it comes, as a free key is (and written as one: one spelling per string).
      const parent = s.frames[s.frames.length - 1];
      const parentNode = parent && c.nodes[parent.n];
      const hashed = parentNode?.k === 'arr' && parentNode.unique === 'strings';
      s.frames.push({ n: id, p: S_TEXT, a: 0, b: 0, c: node.regex ? node.regex.start : NONE, m: hashed ? FNV_BASIS : 0 });
      return true;
    }
    case 'num': {
      let f: Frame;
      if (node.regex) {
        // Bounded: the pattern of the numbers within the bounds decides every byte.
        const states = stepRegex(node.regex, node.regex.start, b);
        if (states.length === 0) return false;
        f = { n: id, p: 0, a: -1, b: isDigit(b) ? 1 : 0, c: states, m: 0 };
      } else {
        const p = b === 0x2d ? N_SIGN : b === 0x30 ? N_ZERO : isDigit(b) ? N_INT : -1;
        if (p < 0) return false;
        f = { n: id, p, a: -1, b: isDigit(b) ? 1 : 0, c: NONE, m: 0 };
      }
      // A multiple: its first digit counts (a sign does not).
      if (node.multiple && !multipleStep(node, f, b)) return false;
      s.frames.push(f);
      return true;
    }
    case 'lit': {
      // An item of an array of unique items: not a value written already.
      const parent = s.frames[s.frames.length - 1];
      const parentNode = parent && c.nodes[parent.n];
      const taken = parentNode?.k === 'arr' && parentNode.unique === 'values' ? parent.c : NONE;
      const cands: number[] = [];
      node.values.forEach((v, i) => v[0] === b && !taken.includes(i) && cands.push(i));
      if (cands.length === 0) return false;
      s.frames.push({ n: id, p: 0, a: 1, b: 0, c: cands, m: 0 });
      return true;
    }
  }
}

/**
 * The named properties that may come next: those after the last one written up to and including the
 * next required one (none at maxProperties), leaving enough after them to reach minProperties, and
 * an optional one only where the required ones after it still fit within maxProperties.
 */
function nextProps(node: Extract<SchemaNode, { k: 'obj' }>, f: Frame): number[] {
  const { props } = node;
  const out: number[] = [];
  if (f.m >= node.maxProps) return out;
  // Writing property j leaves props.length - 1 - j to come: with it, m + 1 + those must reach minProperties.
  const last = props.length - Math.max(1, node.minProps - f.m);
  let required = 0;
  if (node.maxProps !== Infinity) for (let j = f.a + 1; j < props.length; j++) if (props[j].required) required++;
  for (let j = f.a + 1; j <= last; j++) {
    if (props[j].required) {
      out.push(j);
      break;
    }
    if (f.m + 1 + required <= node.maxProps) out.push(j);
  }
  return out;
}

function stepObject(c: CompiledSchema, s: State, f: Frame, b: number): number {
  const node = c.nodes[f.n] as Extract<SchemaNode, { k: 'obj' }>;
  if (f.p === O_KEY) {
    const cands = f.c.filter((j) => node.props[j].key[f.b] === b);
    if (cands.length === 0) return FAIL;
    f.b++;
    // A key ends at its closing quote, which no other key has at that byte (theirs would be escaped there).
    const whole = cands.find((j) => node.props[j].key.length === f.b);
    if (whole !== undefined) {
      f.a = whole;
      f.p = O_COLON;
      f.c = NONE;
      f.b = 0;
    } else f.c = cands;
    return OK;
  }
  if (isWhitespace(b)) return whitespace(s, b);
  s.ws = s.nl = 0;
  const free = node.values !== null;
  switch (f.p) {
    case O_OPEN:
      if (b === 0x7d) return closable(node, f) ? END : FAIL;
      return startKey(c, s, node, f, b);
    case O_NEXT:
      return startKey(c, s, node, f, b);
    case O_COLON:
      if (b !== 0x3a) return FAIL;
      f.p = O_VALUE;
      return OK;
    case O_VALUE:
      f.p = O_WAIT;
      return begin(c, s, free ? node.values! : node.props[f.a].node, b) ? OK : FAIL;
    case O_AFTER:
      if (b === 0x2c && (free ? f.m < node.maxProps : nextProps(node, f).length > 0)) {
        f.p = O_NEXT;
        return OK;
      }
      return b === 0x7d && closable(node, f) ? END : FAIL;
    default:
      return FAIL;
  }
}

/** Every required property written (they come in order, so none after the last one written), and minProperties. */
function closable(node: Extract<SchemaNode, { k: 'obj' }>, f: Frame): boolean {
  if (f.m < node.minProps) return false;
  if (node.values !== null) return true;
  for (let j = f.a + 1; j < node.props.length; j++) if (node.props[j].required) return false;
  return true;
}

/** A key's opening quote: a free key's string, or the named properties it may be. */
function startKey(c: CompiledSchema, s: State, node: Extract<SchemaNode, { k: 'obj' }>, f: Frame, b: number): number {
  if (b !== 0x22) return FAIL;
  if (node.values !== null) {
    if (f.m >= node.maxProps) return FAIL;
    f.p = O_KEYSTR;
    if (!begin(c, s, node.keys ?? c.keyNode, b)) return FAIL;
    s.frames[s.frames.length - 1].m = FNV_BASIS;
    return OK;
  }
  const cands = nextProps(node, f);
  if (cands.length === 0) return FAIL;
  f.p = O_KEY;
  f.c = cands;
  f.b = 0;
  return OK;
}

function stepArray(c: CompiledSchema, s: State, f: Frame, b: number): number {
  const node = c.nodes[f.n] as Extract<SchemaNode, { k: 'arr' }>;
  if (isWhitespace(b)) return whitespace(s, b);
  s.ws = s.nl = 0;
  switch (f.p) {
    case A_OPEN:
    case A_VALUE:
      if (f.p === A_OPEN && b === 0x5d) return node.min === 0 ? END : FAIL;
      if (node.max === 0) return FAIL;
      f.p = A_WAIT;
      // The item's index: a tuple's item, or one of `items` after it.
      const item = f.a < node.prefix.length ? node.prefix[f.a] : node.items!;
      // Without a most, the count matters only up to the least and the tuple's end (so that the state repeats).
      f.a = node.max === Infinity ? Math.min(f.a + 1, Math.max(node.min, node.prefix.length)) : f.a + 1;
      return begin(c, s, item, b) ? OK : FAIL;
    case A_AFTER:
      if (b === 0x2c && f.a < node.max) {
        f.p = A_VALUE;
        return OK;
      }
      return b === 0x5d && f.a >= node.min ? END : FAIL;
    default:
      return FAIL;
  }
}

/**
 * Whether a string with a pattern can still reach a match within its length bounds from here: with
 * both bounds, a match of a length between them (the node's lengths per NFA state); with one, one
 * short enough for maxLength, or one long enough for minLength.
 */
function withinLength(node: Extract<SchemaNode, { k: 'str' }>, f: Frame): boolean {
  // Both bounds: a match whose length is within them, exactly.
  if (node.lengths) return matchWithin(node.lengths, f.c, node.min - f.a, node.max - f.a);
  if (node.max < Infinity && fewestToMatch(node.regex!, f.c) > node.max - f.a) return false;
  if (!node.most || f.a >= node.min) return true;
  for (const s of f.c) if (node.most[s] >= node.min - f.a) return true;
  return false;
}

/** A byte of a string with a pattern, through its NFA. */
function stepPattern(node: Extract<SchemaNode, { k: 'str' }>, f: Frame, b: number): number {
  const next = stepRegex(node.regex!, f.c, b);
  if (next.length === 0) return FAIL;
  f.c = next;
  return OK;
}

function stepString(c: CompiledSchema, f: Frame, b: number): number {
  const node = c.nodes[f.n] as Extract<SchemaNode, { k: 'str' }>;
  const counted = node.min > 0 || node.max < Infinity;
  // A free key: its bytes hashed as they come (never 0, which marks other strings), the closing quote not.
  if (f.m !== 0 && b !== 0x22) f.m = Math.imul(f.m ^ b, 16777619) >>> 0 || 1;
  if (f.p === S_ESC) {
    if (f.m !== 0) {
      if (!KEY_ESCAPABLE.has(b)) return FAIL;
      f.p = S_TEXT;
    } else if (b === 0x75) f.p = S_HEX + 4;
    else if (ESCAPABLE.has(b)) f.p = S_TEXT;
    else return FAIL;
    return OK;
  }
  if (f.p > S_HEX) {
    if (!isHex(b)) return FAIL;
    f.p = f.p === S_HEX + 1 ? S_TEXT : f.p - 1;
    return OK;
  }
  // UTF-8: continuation bytes still to come of the code point begun (f.b & 3), the first of them
  // within a narrower range after some lead bytes (f.b >> 2: no overlong forms, surrogates or code
  // points past U+10FFFF, which a decoder would replace).
  if (f.b > 0) {
    const [lo, hi] = FIRST_CONTINUATION[f.b >> 2];
    if (b < lo || b > hi) return FAIL;
    f.b = (f.b & 3) - 1;
    // The pattern reads every byte of a character.
    if (!node.regex) return OK;
    return stepPattern(node, f, b) === OK && (!counted || withinLength(node, f)) ? OK : FAIL;
  }
  if (b === 0x22) return f.a >= node.min && (!node.regex || regexAccepts(node.regex, f.c)) ? END : FAIL;
  if (b < 0x20) return FAIL; // control characters must be escaped
  // A pattern's text is written as it is, without escapes: its characters that would need one are left out.
  if (node.regex && (b === 0x5c || stepPattern(node, f, b) === FAIL)) return FAIL;
  if (b === 0x5c) f.p = S_ESC;
  else if (b >= 0x80) {
    // A lead byte of 2, 3 or 4 bytes (not overlong C0/C1, not past U+10FFFF); a continuation byte cannot start one.
    const more = b >= 0xc2 && b <= 0xdf ? 1 : b >= 0xe0 && b <= 0xef ? 2 : b >= 0xf0 && b <= 0xf4 ? 3 : 0;
    if (more === 0) return FAIL;
    f.b = more | ((b === 0xe0 ? 1 : b === 0xed ? 2 : b === 0xf0 ? 3 : b === 0xf4 ? 4 : 0) << 2);
  }
  // A code point (or an escape) counts one; without a maxLength only up to minLength (so that the state repeats).
  if (counted && (f.a = node.max === Infinity ? Math.min(f.a + 1, node.min) : f.a + 1) > node.max) return FAIL;
  return node.regex && counted && !withinLength(node, f) ? FAIL : OK;
}

/**
 * A number's byte for its multiple (multiple-of.ts): the frame keeps the remainder in m, the fraction
 * digits written in a (-1: none yet, in the integer part) and the integer digits in b, at most
 * MAX_INTEGER_DIGITS, so that a digit is taken only where a multiple can still end within them.
 */
function multipleStep(node: Extract<SchemaNode, { k: 'num' }>, f: Frame, b: number): boolean {
  const state = { r: f.m, f: f.a };
  const ok = stepMultiple(node.multiple!, state, b, { integerPlaces: MAX_INTEGER_DIGITS - f.b, fractions: !node.integer });
  f.m = state.r;
  f.a = state.f;
  return ok;
}

function stepNumber(c: CompiledSchema, f: Frame, b: number): number {
  const node = c.nodes[f.n] as Extract<SchemaNode, { k: 'num' }>;
  const { multiple } = node;
  const r = stepNumberText(c, f, b);
  if (!multiple) return r;
  // The number ends (the byte is its container's) only as a multiple; a byte of it must leave one possible.
  if (r === PASS) return endsMultiple(multiple, { r: f.m, f: f.a }) ? PASS : FAIL;
  if (r !== OK) return r;
  // Integer digits through a bounds pattern are counted here (without one, stepNumberText counts them).
  if (node.regex && isDigit(b) && f.a < 0 && ++f.b > MAX_INTEGER_DIGITS) return FAIL;
  return multipleStep(node, f, b) ? OK : FAIL;
}

/** A number's byte as JSON (or its bounds' pattern) writes it. */
function stepNumberText(c: CompiledSchema, f: Frame, b: number): number {
  const { integer, regex, multiple } = c.nodes[f.n] as Extract<SchemaNode, { k: 'num' }>;
  if (regex) {
    const next = stepRegex(regex, f.c, b);
    if (next.length > 0) {
      f.c = next;
      return OK;
    }
    // The number ends where the pattern matches; the byte is its container's.
    return regexAccepts(regex, f.c) ? PASS : FAIL;
  }
  switch (f.p) {
    case N_SIGN:
      if (!isDigit(b)) return FAIL;
      f.p = b === 0x30 ? N_ZERO : N_INT;
      f.b = 1;
      return OK;
    case N_DOT:
      if (!isDigit(b)) return FAIL;
      f.p = N_FRAC;
      return OK;
    case N_E:
    case N_ESIGN:
      if (f.p === N_E && (b === 0x2b || b === 0x2d)) {
        f.p = N_ESIGN;
        return OK;
      }
      if (!isDigit(b)) return FAIL;
      f.p = N_EXP;
      f.b = 1;
      return OK;
    default: {
      // N_ZERO, N_INT, N_FRAC, N_EXP: the number may end here.
      if (isDigit(b) && f.p !== N_ZERO) {
        if (f.p === N_FRAC) return OK;
        if (f.b >= (f.p === N_INT ? MAX_INTEGER_DIGITS : MAX_EXPONENT_DIGITS)) return FAIL;
        f.b++;
        return OK;
      }
      if (b === 0x2e && !integer && (f.p === N_ZERO || f.p === N_INT)) {
        f.p = N_DOT;
        return OK;
      }
      if ((b === 0x65 || b === 0x45) && !integer && f.p !== N_EXP) {
        f.p = N_E;
        return OK;
      }
      return PASS;
    }
  }
}

function stepLiteral(c: CompiledSchema, f: Frame, b: number): number {
  const values = (c.nodes[f.n] as Extract<SchemaNode, { k: 'lit' }>).values;
  const cands = f.c.filter((i) => values[i][f.a] === b);
  if (cands.length > 0) {
    f.c = cands;
    f.a++;
    return OK;
  }
  return f.c.some((i) => values[i].length === f.a) ? PASS : FAIL;
}

/** The top frame, made the state's own before it is written. */
function top(s: State): Frame | undefined {
  const i = s.frames.length - 1;
  if (i >= 0 && i < s.shared) {
    s.frames[i] = { ...s.frames[i] };
    s.shared = i;
  }
  return s.frames[i];
}

/** Feed one byte; false if no document of the schema continues this way (the state is then undefined). */
function feed(c: CompiledSchema, s: State, b: number): boolean {
  for (;;) {
    const f = top(s);
    if (!f) {
      if (s.done) return false;
      if (isWhitespace(b)) return whitespace(s, b) === OK;
      s.ws = s.nl = 0;
      return begin(c, s, c.root, b);
    }
    const kind = c.nodes[f.n].k;
    const r =
      kind === 'obj' ? stepObject(c, s, f, b) : kind === 'arr' ? stepArray(c, s, f, b) : kind === 'str' ? stepString(c, f, b) : kind === 'num' ? stepNumber(c, f, b) : stepLiteral(c, f, b);
    if (r === OK) return true;
    if (r === FAIL) return false;
    // The frame's value is whole: its container goes on after it (a key: to the colon).
    s.frames.pop();
    const parent = top(s);
    if (!parent) s.done = true;
    else if (c.nodes[parent.n].k === 'arr') {
      parent.p = A_AFTER;
      // Unique items: the value written joins those the next items may not be (a listed value's
      // index, a string's hash: a string written already is refused at its closing quote).
      if ((c.nodes[parent.n] as Extract<SchemaNode, { k: 'arr' }>).unique) {
        const item = c.nodes[f.n];
        if (item.k === 'lit') parent.c = [...parent.c, f.c.find((i) => item.values[i].length === f.a)!];
        else if (!parent.c.includes(f.m)) parent.c = [...parent.c, f.m];
        else if (!s.laxKeys) return false;
      }
    }
    else if (parent.p === O_KEYSTR) {
      parent.p = O_COLON;
      // A key the object holds already is refused.
      if (!parent.c.includes(f.m)) parent.c = [...parent.c, f.m];
      else if (!s.laxKeys) return false;
    } else {
      parent.p = O_AFTER;
      const obj = c.nodes[parent.n] as Extract<SchemaNode, { k: 'obj' }>;
      parent.m = Math.min(parent.m + 1, obj.maxProps < Infinity ? obj.maxProps : obj.minProps);
    }
    if (r === END) return true;
  }
}

/** How each token of a vocabulary writes inside a string with no pattern (not a free key), from between two characters. */
interface StringTable {
  /** The code points a token writes when it is string content that does not close the string; -1 when it is not. */
  content: Int32Array;
  /** The tokens whose bytes close the string (content up to an unescaped quote), and the code points before that quote. */
  closers: number[];
  closerCodePoints: Int32Array;
}

const stringTables = new WeakMap<ReadonlyArray<Uint8Array | null>, StringTable>();
/** A string counted without bound, whose frame stringTable runs each token through. */
const COUNTED = compileJsonSchema({ type: 'object', properties: { s: { type: 'string', maxLength: Number.MAX_SAFE_INTEGER } } });
const COUNTED_STRING = COUNTED.nodes.findIndex((n) => n.k === 'str');

/** Each token's bytes run through a string's own automaton (stepString), counting its code points as a bounded string does. */
function stringTable(vocab: ReadonlyArray<Uint8Array | null>): StringTable {
  let table = stringTables.get(vocab);
  if (table) return table;
  const content = new Int32Array(vocab.length).fill(-1);
  const closers: number[] = [];
  const closerCodePoints: number[] = [];
  vocab.forEach((bytes, id) => {
    if (!bytes) return;
    const f: Frame = { n: COUNTED_STRING, p: S_TEXT, a: 0, b: 0, c: NONE, m: 0 };
    for (let i = 0; i < bytes.length; i++) {
      const r = stepString(COUNTED, f, bytes[i]);
      if (r === FAIL) return;
      if (r === END) {
        closers.push(id);
        closerCodePoints.push(f.a);
        return;
      }
    }
    content[id] = f.a;
  });
  table = { content, closers, closerCodePoints: Int32Array.from(closerCodePoints) };
  stringTables.set(vocab, table);
  return table;
}

const quoteTokenLists = new WeakMap<ReadonlyArray<Uint8Array | null>, number[]>();

/** The vocabulary's tokens whose bytes hold a double quote. */
function quoteTokens(vocab: ReadonlyArray<Uint8Array | null>): number[] {
  let ids = quoteTokenLists.get(vocab);
  if (!ids) {
    ids = [];
    for (let id = 0; id < vocab.length; id++) if (vocab[id]?.includes(0x22)) ids.push(id);
    quoteTokenLists.set(vocab, ids);
  }
  return ids;
}

/**
 * Run bytes[i..] on `s` (in place), following in their own states the alternatives begun on the way
 * (forks); with `out`, every state they all reach is pushed to it, without, the first to take them
 * all returns true.
 */
function run(c: CompiledSchema, s: State, bytes: ArrayLike<number>, i: number, out: State[] | null): boolean {
  for (; i < bytes.length; i++) {
    const ok = feed(c, s, bytes[i]);
    const forks = s.forks;
    if (forks) {
      s.forks = null;
      for (const f of forks) if (run(c, f, bytes, i + 1, out) && !out) return true;
    }
    if (!ok) return false;
  }
  out?.push(s);
  return true;
}

/** A state as a string: every frame whole (the keys written too); two states alike take the same documents. */
const stateKey = (s: State): string => `${s.ws}|${s.nl}|${s.done ? 1 : 0}|${s.frames.map((f) => `${f.n}.${f.p}.${f.a}.${f.b}.${f.m}.${f.c.join(',')}`).join('/')}`;

/**
 * Most states a guide follows at once (alternatives that start alike; compileJsonSchema refuses an
 * anyOf with more alike than this): past it, through nested unions, the last found are dropped,
 * which only narrows what may be written.
 */
export const MAX_BRANCHES = MAX_ALIKE;

export class SchemaGuide implements Guide {
  /**
   * The states the reply so far may be in: one, but for alternatives (anyOf) that start alike, each
   * followed until the bytes written rule it out.
   */
  private branches: State[] = [fresh()];
  /** Where accepts() runs bytes. */
  private readonly scratch: State = fresh();

  constructor(
    private readonly schema: CompiledSchema,
    private readonly vocab: ReadonlyArray<Uint8Array | null>,
  ) {}

  /** A guide of OpenAI's JSON mode: any JSON object. */
  static jsonObject(vocab: ReadonlyArray<Uint8Array | null>): SchemaGuide {
    return new SchemaGuide(compileJsonSchema(JSON_OBJECT), vocab);
  }

  /** The root has closed: the reply is a whole document of the schema. */
  get done(): boolean {
    return this.branches.some((s) => s.done);
  }

  /** How many states the reply so far may be in (more than one while anyOf alternatives that start alike are still both possible). */
  get stateCount(): number {
    return this.branches.length;
  }

  /** Whether `bytes` may come next (the state is left as it is); `laxKeys`: even by writing a key its object holds. */
  accepts(bytes: ArrayLike<number>, laxKeys = false): boolean {
    for (const s of this.branches) if (this.acceptsFrom(s, bytes, laxKeys)) return true;
    return false;
  }

  private acceptsFrom(from: State, bytes: ArrayLike<number>, laxKeys: boolean): boolean {
    const s = copyOf(from, this.scratch);
    s.laxKeys = laxKeys;
    return run(this.schema, s, bytes, 0, null);
  }

  /** The tokens that may come next: 1 where a token's bytes continue the document. Shared between sequences: do not write to it. */
  allowed(): Uint8Array {
    if (this.branches.length === 1) return this.maskFrom(this.branches[0]);
    // Several states: a token any of them takes (masks joined four bytes at a time).
    const n = this.vocab.length;
    const mask = new Uint8Array(n);
    const words = new Uint32Array(mask.buffer, 0, n >> 2);
    for (const s of this.branches) {
      const m = this.maskFrom(s);
      if (m.byteOffset % 4 === 0) {
        const mw = new Uint32Array(m.buffer, m.byteOffset, n >> 2);
        for (let i = 0; i < words.length; i++) words[i] |= mw[i];
      } else for (let i = 0; i < words.length * 4; i++) mask[i] |= m[i];
      for (let i = words.length * 4; i < n; i++) mask[i] |= m[i];
    }
    return mask;
  }

  /** The tokens that continue the document from one state. */
  private maskFrom(s: State): Uint8Array {
    const { nodes, keyNode } = this.schema;
    // The state without the keys written (free objects' hashes, a free key's so far), and likewise
    // without an array's unique strings: its mask, without the rule against repeats, is kept.
    let freeKeys = false;
    const frames = s.frames
      .map((f) => {
        const node = nodes[f.n];
        // (a key of propertyNames' pattern: its NFA states too)
        if (f.n === keyNode || (node.k === 'str' && f.m !== 0)) return `${f.n}.${f.p}.${f.a}.${f.b}.key.${f.c.join(',')}`;
        if (node.k === 'arr' && node.unique === 'strings') {
          freeKeys = true;
          return `${f.n}.${f.p}.${f.a}.${f.b}.unique`;
        }
        if (node.k !== 'obj' || node.values === null) return `${f.n}.${f.p}.${f.a}.${f.b}.${f.m}.${f.c.join(',')}`;
        freeKeys = true;
        return `${f.n}.${f.p}.${f.a}.${f.b}.${f.m}`;
      })
      .join('/');
    const key = `schema ${this.schema.id}|${s.ws}|${s.nl}|${s.done ? 1 : 0}|${frames}`;
    const lax = this.inBoundedString(s) ? cachedBy(this.vocab, key, () => this.boundedStringMask(s, frames)) : cachedMask(this.vocab, key, (bytes) => this.acceptsFrom(s, bytes, true));
    if (!freeKeys) return lax;
    // Only a token with a quote can close a key: those the lax mask takes are run again with the rule.
    let mask = lax;
    for (const id of quoteTokens(this.vocab)) {
      if (!lax[id] || this.acceptsFrom(s, this.vocab[id]!, false)) continue;
      if (mask === lax) mask = lax.slice();
      mask[id] = 0;
    }
    return mask;
  }

  /**
   * Whether the state is inside a string of length bounds and no pattern, between characters (not in
   * an escape or a character's bytes): its mask is then built from the string's own tables (below)
   * rather than by running the vocabulary, as each length written is a state of its own.
   */
  private inBoundedString(s: State): boolean {
    const f = s.frames[s.frames.length - 1];
    if (!f || f.p !== S_TEXT || f.b !== 0 || f.m !== 0) return false;
    const node = this.schema.nodes[f.n];
    return node.k === 'str' && node.regex === null && (node.min > 0 || node.max < Infinity);
  }

  /**
   * The mask of a bounded string's state, `written` code points in: the tokens that are string content
   * (stringTable: the same for every string) whose code points still fit, and those that close the
   * string where its length may end and whose bytes after the quote the state takes. Which of the
   * closing tokens the state takes does not depend on the length written, so it is run once per state
   * without the count (`frames`' key with the string's count left out) and kept.
   */
  private boundedStringMask(s: State, frames: string): Uint8Array {
    const f = s.frames[s.frames.length - 1];
    const node = this.schema.nodes[f.n] as Extract<SchemaNode, { k: 'str' }>;
    const table = stringTable(this.vocab);
    const written = f.a;
    const countless = frames.slice(0, frames.lastIndexOf('/') + 1) + `${f.n}.${f.p}.*.${f.b}.${f.m}.`;
    const takes = cachedBy(this.vocab, `schema ${this.schema.id}|${s.ws}|${s.nl}|closers|${countless}`, () =>
      Uint8Array.from(table.closers, (id, i) => {
        // Run the token from the state with as many code points written as make its quote end the string within the bounds, if any do.
        const cp = table.closerCodePoints[i];
        const a = Math.max(0, node.min - cp);
        if (a + cp > node.max) return 0;
        const from = copyOf(s);
        from.frames[from.frames.length - 1] = { ...f, a };
        return this.acceptsFrom(from, this.vocab[id]!, true) ? 1 : 0;
      }),
    );
    const mask = new Uint8Array(this.vocab.length);
    const room = node.max - written;
    const { content } = table;
    for (let id = 0; id < content.length; id++) if (content[id] >= 0 && content[id] <= room) mask[id] = 1;
    table.closers.forEach((id, i) => {
      const total = written + table.closerCodePoints[i];
      if (takes[i] && total >= node.min && total <= node.max) mask[id] = 1;
    });
    return mask;
  }

  /** Take a drawn token's bytes; throws if they do not continue the document (a token the mask excluded). */
  advance(id: number): void {
    const bytes = this.vocab[id];
    if (!bytes || !this.take(bytes)) throw new Error(`token ${id} does not continue the JSON document`);
  }

  /** Take bytes written next: false (and the state left as it was) if they do not continue the document. */
  take(bytes: ArrayLike<number>): boolean {
    const next: State[] = [];
    for (const s of this.branches) run(this.schema, copyOf(s), bytes, 0, next);
    if (next.length === 0) return false;
    if (next.length === 1) {
      this.branches = next;
      return true;
    }
    // States alike are followed once.
    const seen = new Set<string>();
    this.branches = [];
    for (const s of next) {
      const key = stateKey(s);
      if (seen.has(key) || this.branches.length === MAX_BRANCHES) continue;
      seen.add(key);
      this.branches.push(s);
    }
    return true;
  }
}
