/**
 * Guided decoding to JSON (OpenAI's `response_format: {"type": "json_object"}`): a byte-level
 * automaton of the JSON grammar (RFC 8259) whose document is one object, and, at every step, the
 * mask of the vocabulary's tokens whose bytes keep the reply a prefix of such a document. Sampling
 * draws only among them (the model's own probabilities, renormalised), and the reply ends the moment
 * the object closes. A reply cut by maxTokens or the context window is a prefix, as OpenAI's is.
 *
 * The automaton keeps a stack of open containers (a string, cheap to copy) and a lexical mode; every
 * step runs each token's bytes from the current state (the state is copied, never changed), so a
 * token may close a string and open the next key in one go. Runs of whitespace between tokens are
 * bounded (MAX_WHITESPACE bytes, one line break: pretty-printing never needs a blank line), so a model
 * cannot fill its reply with blank lines. Special tokens
 * (control tokens of the chat template, EOS) are never drawn: the document's end ends the reply.
 * A mask depends on the state alone, and replies revisit few states (inside a string value, after a
 * key...), so masks are kept per vocabulary and state (MASK_CACHE_BYTES at most) and shared by every
 * sequence: running the vocabulary through the automaton costs about 0.3 ms a step on the default
 * model's 2,048 tokens, a lookup much less (bench/sampling-options.ts).
 */
import type { Guide } from './guide.js';

/** Most whitespace bytes in a row between two JSON tokens (pretty-printing needs a newline and some indent). */
export const MAX_WHITESPACE = 16;

// Lexical modes.
const TOP = 0; // before the document: whitespace or '{'
const VALUE = 1; // a value must start
const OBJ_OPEN = 2; // after '{': a key or '}'
const KEY = 3; // after ',' in an object: a key
const COLON = 4; // after a key
const ARR_OPEN = 5; // after '[': a value or ']'
const AFTER = 6; // after a value: ',' or the container's closer
const STR = 7; // in a string
const ESC = 8; // after a backslash in a string
const HEX = 9; // in a \u escape (`hex` digits left)
const N_SIGN = 10; // after '-'
const N_ZERO = 11; // a leading 0 (may end)
const N_INT = 12; // integer digits (may end)
const N_DOT = 13; // after '.'
const N_FRAC = 14; // fraction digits (may end)
const N_E = 15; // after 'e'
const N_ESIGN = 16; // after the exponent's sign
const N_EXP = 17; // exponent digits (may end)
const LIT = 18; // in true / false / null (`lit` bytes left)
const DONE = 19; // the object closed: nothing more

interface State {
  m: number;
  /** Open containers, innermost last: 'o' object, 'a' array. */
  stack: string;
  /** Whitespace bytes in the current run, and its line feeds. */
  ws: number;
  nl: number;
  /** The string being read is an object key. */
  key: boolean;
  /** Bytes of a literal still to come. */
  lit: string;
  /** Hex digits of a \u escape still to come. */
  hex: number;
}

const isDigit = (b: number) => b >= 0x30 && b <= 0x39;
const isHex = (b: number) => isDigit(b) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);
const isWhitespace = (b: number) => b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;
const ESCAPABLE = new Set([...'"\\/bfnrt'].map((c) => c.charCodeAt(0)));

/** A value ends: the container's next element or closer follows. */
function endValue(s: State): void {
  s.m = AFTER;
}

/** Close the innermost container with `closer` ('}' or ']'), if it is that kind. */
function close(s: State, kind: string): boolean {
  if (s.stack[s.stack.length - 1] !== kind) return false;
  s.stack = s.stack.slice(0, -1);
  s.m = s.stack.length === 0 ? DONE : AFTER;
  return true;
}

function startValue(s: State, b: number): boolean {
  switch (b) {
    case 0x7b: // {
      s.stack += 'o';
      s.m = OBJ_OPEN;
      return true;
    case 0x5b: // [
      s.stack += 'a';
      s.m = ARR_OPEN;
      return true;
    case 0x22: // "
      s.m = STR;
      s.key = false;
      return true;
    case 0x2d: // -
      s.m = N_SIGN;
      return true;
    case 0x74: // t
      s.m = LIT;
      s.lit = 'rue';
      return true;
    case 0x66: // f
      s.m = LIT;
      s.lit = 'alse';
      return true;
    case 0x6e: // n
      s.m = LIT;
      s.lit = 'ull';
      return true;
    default:
      if (b === 0x30) s.m = N_ZERO;
      else if (isDigit(b)) s.m = N_INT;
      else return false;
      return true;
  }
}

/** Feed one byte; false if no JSON object document continues this way (the state is then undefined). */
function feed(s: State, b: number): boolean {
  const m = s.m;
  if (m <= AFTER) {
    if (isWhitespace(b)) return ++s.ws <= MAX_WHITESPACE && (b !== 0x0a || ++s.nl <= 1);
    s.ws = 0;
    s.nl = 0;
  }
  switch (m) {
    case TOP:
      if (b !== 0x7b) return false;
      s.stack = 'o';
      s.m = OBJ_OPEN;
      return true;
    case VALUE:
      return startValue(s, b);
    case OBJ_OPEN:
    case KEY:
      if (b === 0x7d && m === OBJ_OPEN) return close(s, 'o');
      if (b !== 0x22) return false;
      s.m = STR;
      s.key = true;
      return true;
    case COLON:
      if (b !== 0x3a) return false;
      s.m = VALUE;
      return true;
    case ARR_OPEN:
      if (b === 0x5d) return close(s, 'a');
      return startValue(s, b);
    case AFTER:
      if (b === 0x2c) {
        s.m = s.stack[s.stack.length - 1] === 'o' ? KEY : VALUE;
        return true;
      }
      if (b === 0x7d) return close(s, 'o');
      if (b === 0x5d) return close(s, 'a');
      return false;
    case STR:
      if (b === 0x22) {
        s.m = s.key ? COLON : AFTER;
        return true;
      }
      if (b === 0x5c) {
        s.m = ESC;
        return true;
      }
      return b >= 0x20; // control characters must be escaped; any other byte is text
    case ESC:
      if (b === 0x75) {
        s.m = HEX;
        s.hex = 4;
        return true;
      }
      if (!ESCAPABLE.has(b)) return false;
      s.m = STR;
      return true;
    case HEX:
      if (!isHex(b)) return false;
      if (--s.hex === 0) s.m = STR;
      return true;
    case N_SIGN:
      if (!isDigit(b)) return false;
      s.m = b === 0x30 ? N_ZERO : N_INT;
      return true;
    case N_DOT:
      if (!isDigit(b)) return false;
      s.m = N_FRAC;
      return true;
    case N_E:
      if (b === 0x2b || b === 0x2d) {
        s.m = N_ESIGN;
        return true;
      }
      if (!isDigit(b)) return false;
      s.m = N_EXP;
      return true;
    case N_ESIGN:
      if (!isDigit(b)) return false;
      s.m = N_EXP;
      return true;
    case N_ZERO:
    case N_INT:
    case N_FRAC:
    case N_EXP:
      if (isDigit(b) && m !== N_ZERO) return true;
      if (b === 0x2e && (m === N_ZERO || m === N_INT)) {
        s.m = N_DOT;
        return true;
      }
      if ((b === 0x65 || b === 0x45) && m !== N_EXP) {
        s.m = N_E;
        return true;
      }
      // The number ended: the byte belongs to what follows it.
      endValue(s);
      return feed(s, b);
    case LIT:
      if (b !== s.lit.charCodeAt(0)) return false;
      s.lit = s.lit.slice(1);
      if (s.lit === '') endValue(s);
      return true;
    default:
      return false; // DONE
  }
}

/** Bytes of masks kept per vocabulary; past it the vocabulary's masks are dropped and computed again. */
export const MASK_CACHE_BYTES = 16 * 1024 * 1024;
const maskCache = new WeakMap<ReadonlyArray<Uint8Array | null>, Map<string, Uint8Array>>();

export class JsonGuide implements Guide {
  private readonly state: State = { m: TOP, stack: '', ws: 0, nl: 0, key: false, lit: '', hex: 0 };
  private readonly scratch: State = { ...this.state };

  constructor(private readonly vocab: ReadonlyArray<Uint8Array | null>) {}

  /** The object has closed: the reply is a whole JSON document. */
  get done(): boolean {
    return this.state.m === DONE;
  }

  /** Whether `bytes` may come next (the state is left as it is). */
  accepts(bytes: ArrayLike<number>): boolean {
    const s = Object.assign(this.scratch, this.state);
    for (let i = 0; i < bytes.length; i++) if (!feed(s, bytes[i])) return false;
    return true;
  }

  /** The tokens that may come next: 1 where a token's bytes continue the document. Shared between sequences: do not write to it. */
  allowed(): Uint8Array {
    let masks = maskCache.get(this.vocab);
    if (!masks) maskCache.set(this.vocab, (masks = new Map()));
    const s = this.state;
    const key = `${s.m}|${s.stack}|${s.ws}|${s.nl}|${s.key ? 1 : 0}|${s.lit}|${s.hex}`;
    let mask = masks.get(key);
    if (mask) return mask;
    mask = new Uint8Array(this.vocab.length);
    for (let id = 0; id < this.vocab.length; id++) {
      const bytes = this.vocab[id];
      if (bytes && this.accepts(bytes)) mask[id] = 1;
    }
    if ((masks.size + 1) * this.vocab.length > MASK_CACHE_BYTES) masks.clear();
    masks.set(key, mask);
    return mask;
  }

  /** Take a drawn token's bytes; throws if they do not continue the document (a token the mask excluded). */
  advance(id: number): void {
    const bytes = this.vocab[id];
    if (!bytes || !this.accepts(bytes)) throw new Error(`token ${id} does not continue the JSON document`);
    Object.assign(this.state, this.scratch);
  }
}
