/**
 * Lark grammars for guided decoding: vLLM's guided_grammar may be written in Lark's syntax (as its
 * outlines backend reads it, and its xgrammar backend converts it) instead of GBNF. A Lark grammar is
 * translated here to GBNF, which grammar.ts compiles; the reply is then a string of the Lark grammar's
 * start rule.
 *
 * Read: rules (`name: ...`, with `?`, `!` or `_` before the name and `.priority` after it), terminals
 * (`NAME: ...`), alternatives (continued on lines that begin with `|`), `-> alias`, string literals
 * (with the `i` flag), regular expressions `/.../` (flags `i`, and `s`, `m`, `u`, `l` that change no
 * string of a whole match here; in the subset regex.ts reads), ranges `"a".."z"`, groups, `[optional]`,
 * `? * +`, `~ n` and `~ n..m`, `//` and `#` comments, `%import common.NAME` (and `-> ALIAS`, and
 * `%import common (A, B)`) of Lark's common terminals, and `%ignore` (terminals allowed between any
 * two tokens of a rule, and before the first and after the last). The start rule is `start`, else the
 * first rule written, as vLLM takes it. Direct left recursion (`sum: sum "+" product | product`, as
 * Lark's Earley and LALR parsers allow) is written as repetition (`sum: product ("+" product)*`), the
 * same strings. Rule templates (`_separated{x, sep}: x (sep x)*`, used as `_separated{item, ","}`)
 * are instantiated, each use with its arguments a rule of its own; a template that keeps using itself
 * with new arguments is refused past 256 uses, as are expansions past 200,000 items. `%declare`,
 * `%override`, `%extend` and imports of other grammars are refused (GrammarError), as is any left
 * recursion through other rules (by grammar.ts).
 *
 * The strings are the grammar's at the level of characters: Lark's lexer cuts text into the longest
 * tokens it can, so where two terminals may touch without an ignored gap (two names in a row), a reply
 * may run them together as Lark's lexer would not read them; grammars whose tokens are separated by
 * literals or ignored white space read the same.
 */
import { TextCache } from '../util/text-cache.js';
import { type CompiledGrammar, GrammarError, compileGrammar, where } from './grammar.js';
import { RegexError, type RegexNode, parseRegex } from './regex.js';

/** Whether a guided grammar is written in Lark's syntax: no line (comments aside) defines a GBNF rule (`::=`), as vLLM tells them apart. */
export function isLarkGrammar(text: string): boolean {
  return !text.split('\n').some((line) => line.replace(/(#|\/\/).*$/, '').includes('::='));
}

const translated = new TextCache<string>(16, 'lark', undefined, {
  is: (e): e is GrammarError => e instanceof GrammarError,
  revive: (f) => new GrammarError(f.message),
});

/** A guided grammar compiled, written in GBNF or in Lark's syntax (translated first; what its GBNF cannot run is refused as that GBNF says). */
export function compileGuideGrammar(text: string): CompiledGrammar {
  if (!isLarkGrammar(text)) return compileGrammar(text);
  const gbnf = larkToGbnf(text);
  try {
    return compileGrammar(gbnf);
  } catch (e) {
    if (e instanceof GrammarError) throw new GrammarError(`${e.message} (in the GBNF the Lark grammar translates to)`);
    throw e;
  }
}

/** The GBNF of a Lark grammar (kept by its text); GrammarError where it cannot be read. */
export function larkToGbnf(text: string): string {
  return translated.get(text, () => translate(text));
}

type Item =
  /** A token written in place (a literal, a regular expression, a range): its GBNF. */
  | { t: 'token'; gbnf: string }
  | { t: 'name'; name: string; at: number }
  /** A template used: its name and arguments (each a value: a name, a literal, a pattern, a group...). */
  | { t: 'use'; name: string; args: Item[]; at: number }
  | { t: 'seq'; items: Item[] }
  | { t: 'alt'; items: Item[] }
  | { t: 'rep'; item: Item; min: number; max: number };

interface Definition {
  /** A terminal (lexical: no ignored gap inside) or a rule. */
  terminal: boolean;
  body: Item;
  at: number;
}

/** A rule template (`_separated{x, sep}: x (sep x)*`): its parameters and body. */
interface Template {
  params: string[];
  body: Item;
  at: number;
}

/** Lark's common terminals (lark/grammars/common.lark) that a grammar may import, in Lark's syntax. */
const COMMON = String.raw`
DIGIT: "0".."9"
HEXDIGIT: "a".."f" | "A".."F" | DIGIT
INT: DIGIT+
SIGNED_INT: ["+" | "-"] INT
DECIMAL: INT "." INT? | "." INT
_EXP: ("e" | "E") SIGNED_INT
FLOAT: INT _EXP | DECIMAL _EXP?
SIGNED_FLOAT: ["+" | "-"] FLOAT
NUMBER: FLOAT | INT
SIGNED_NUMBER: ["+" | "-"] NUMBER
ESCAPED_STRING: "\"" /([^"\\\n]|\\[^\n])*/ "\""
LCASE_LETTER: "a".."z"
UCASE_LETTER: "A".."Z"
LETTER: UCASE_LETTER | LCASE_LETTER
WORD: LETTER+
CNAME: ("_" | LETTER) ("_" | LETTER | DIGIT)*
WS_INLINE: (" " | /\t/)+
WS: /[ \t\f\r\n]/+
CR: /\r/
LF: /\n/
NEWLINE: (CR? LF)+
SH_COMMENT: /#[^\n]*/
CPP_COMMENT: /\/\/[^\n]*/
C_COMMENT: /\/\*([^*]|\*+[^*\/])*\*+\//
SQL_COMMENT: /--[^\n]*/
`;

/** The prefix of the GBNF names of imported common terminals (Lark names hold no `-`, so none collides). */
const COMMON_PREFIX = 'common-';
const IGNORED = 'ignored-';
/** Most groups one inside another (the parser and the translation recurse into each), as GBNF's. */
const MAX_DEPTH = 128;
/** Most distinct uses of templates (each becomes a rule): a template that uses itself with growing arguments stops here. */
const MAX_INSTANCES = 256;
/** Most items the templates' expansion may write (arguments copied into bodies can double at each use). */
const MAX_EXPANDED = 200_000;

const isTerminalName = (name: string): boolean => /^_?[A-Z]/.test(name);
const NAME = /[A-Za-z0-9_]/;
const STRING_ESCAPES: Record<string, string> = { n: '\n', r: '\r', t: '\t', f: '\f', v: '\v', '0': '\0', '\\': '\\', '"': '"', "'": "'" };

class LarkParser {
  private i = 0;
  private depth = 0;
  readonly defs = new Map<string, Definition>();
  readonly templates = new Map<string, Template>();
  /** The parameters of the template whose body is being read (its names are not references). */
  private params: ReadonlySet<string> | null = null;
  /** Rules in the order written (the start rule is `start`, else the first). */
  readonly ruleOrder: string[] = [];
  readonly ignored: Item[] = [];
  /** Imported names: the name in this grammar, the common terminal's name. */
  readonly imports: Array<{ name: string; common: string; at: number }> = [];
  readonly refs: Array<{ name: string; at: number }> = [];

  constructor(private readonly src: string) {}

  parse(): void {
    for (;;) {
      this.blank(true);
      if (this.i >= this.src.length) return;
      const at = this.i;
      if (this.src[this.i] === '%') this.statement();
      else this.definition(at);
      this.endOfLine();
    }
  }

  error(message: string, at = this.i): GrammarError {
    return new GrammarError(`${message} at ${where(this.src, at)} (Lark)`);
  }

  /** Spaces, tabs and comments; new lines too where `lines`, or inside brackets. */
  private blank(lines = this.depth > 0): void {
    const s = this.src;
    while (this.i < s.length) {
      const c = s[this.i];
      if (c === ' ' || c === '\t' || c === '\r' || (lines && c === '\n')) this.i++;
      else if (c === '#' || (c === '/' && s[this.i + 1] === '/')) while (this.i < s.length && s[this.i] !== '\n') this.i++;
      else break;
    }
  }

  /** Past white space and comments, the end of the line (or of the text). */
  private endOfLine(): void {
    this.blank();
    if (this.i < this.src.length && this.src[this.i] !== '\n') throw this.error(`unexpected ${JSON.stringify(this.src[this.i])}`);
  }

  /** Whether the next line (blank ones and comments skipped) continues a definition with `|`; if so, stands on that `|`. */
  private continues(): boolean {
    const from = this.i;
    this.blank(true);
    if (this.src[this.i] === '|') return true;
    this.i = from;
    return false;
  }

  private name(): string {
    const from = this.i;
    while (this.i < this.src.length && NAME.test(this.src[this.i])) this.i++;
    if (this.i === from) throw this.error(this.i < this.src.length ? `unexpected ${JSON.stringify(this.src[this.i])}` : 'expected a name');
    return this.src.slice(from, this.i);
  }

  private definition(at: number): void {
    const s = this.src;
    if (s[this.i] === '?' || s[this.i] === '!') this.i++;
    const name = this.name();
    const params = s[this.i] === '{' ? this.templateParams(name) : null;
    if (s[this.i] === '.') {
      const m = /^\.-?\d+/.exec(s.slice(this.i));
      if (!m) throw this.error('expected a priority after "."');
      this.i += m[0].length;
    }
    this.blank();
    if (s[this.i] !== ':') throw this.error(`expected ":" after "${name}"`);
    this.i++;
    if (this.defs.has(name) || this.templates.has(name) || this.imports.some((x) => x.name === name)) throw this.error(`"${name}" is defined twice`, at);
    const terminal = isTerminalName(name);
    // Alternatives may all begin with `|`, the first too (on the line of the name, or the next).
    this.blank();
    if (this.src[this.i] === '|' || (this.src[this.i] === '\n' && this.continues())) this.i++;
    if (params !== null) {
      this.params = new Set(params);
      this.templates.set(name, { params, body: this.expansions(), at });
      this.params = null;
      return;
    }
    this.defs.set(name, { terminal, body: this.expansions(), at });
    if (!terminal) this.ruleOrder.push(name);
  }

  /** A template's parameters, `{a, b}`, after its name (a rule's: terminals have none). */
  private templateParams(name: string): string[] {
    if (isTerminalName(name)) throw this.error('templates of terminals are not supported');
    this.i++;
    const params: string[] = [];
    for (;;) {
      this.blank(true);
      const at = this.i;
      const param = this.name();
      if (params.includes(param)) throw this.error(`parameter "${param}" is named twice`, at);
      params.push(param);
      this.blank(true);
      if (this.src[this.i] === ',') this.i++;
      else break;
    }
    if (this.src[this.i] !== '}') throw this.error('expected "}"');
    this.i++;
    return params;
  }

  private statement(): void {
    const s = this.src;
    const at = this.i;
    this.i++;
    const word = this.name();
    this.blank();
    if (word === 'ignore') {
      this.ignored.push(this.expansions());
      return;
    }
    if (word !== 'import') throw this.error(`%${word} is not supported`, at);
    const from = this.i;
    while (this.i < s.length && /[A-Za-z0-9_.]/.test(s[this.i])) this.i++;
    const path = s.slice(from, this.i);
    this.blank();
    if (s[this.i] === '(') {
      if (path !== 'common') throw this.error(`only Lark's common terminals can be imported, not "${path}"`, from);
      this.i++;
      for (;;) {
        this.blank(true);
        const nameAt = this.i;
        const name = this.name();
        this.imported(name, name, nameAt);
        this.blank(true);
        if (s[this.i] === ',') this.i++;
        else break;
      }
      if (s[this.i] !== ')') throw this.error('expected ")"');
      this.i++;
      return;
    }
    const dot = path.lastIndexOf('.');
    if (path.slice(0, dot) !== 'common' || dot < 0) throw this.error(`only Lark's common terminals can be imported, not "${path}"`, from);
    const common = path.slice(dot + 1);
    let name = common;
    if (s.startsWith('->', this.i)) {
      this.i += 2;
      this.blank();
      name = this.name();
    }
    this.imported(name, common, from);
  }

  private imported(name: string, common: string, at: number): void {
    if (this.defs.has(name) || this.imports.some((x) => x.name === name)) throw this.error(`"${name}" is defined twice`, at);
    this.imports.push({ name, common, at });
  }

  private expansions(): Item {
    const items = [this.aliased()];
    for (;;) {
      this.blank();
      if (this.src[this.i] === '|' || (this.src[this.i] === '\n' && this.continues())) {
        this.i++;
        items.push(this.aliased());
      } else break;
    }
    return items.length === 1 ? items[0] : { t: 'alt', items };
  }

  /** An alternative, and its `-> alias` (which names a tree node, not strings). */
  private aliased(): Item {
    const seq = this.sequence();
    this.blank();
    if (this.src.startsWith('->', this.i)) {
      this.i += 2;
      this.blank();
      this.name();
    }
    return seq;
  }

  private sequence(): Item {
    const items: Item[] = [];
    for (;;) {
      this.blank();
      const c = this.src[this.i];
      if (c === undefined || c === '\n' || c === '|' || c === ')' || c === ']' || this.src.startsWith('->', this.i)) break;
      items.push(this.operated(this.atom()));
    }
    return items.length === 1 ? items[0] : { t: 'seq', items };
  }

  private operated(atom: Item): Item {
    this.blank();
    const s = this.src;
    const c = s[this.i];
    if (c === '?' || c === '*' || c === '+') {
      this.i++;
      const [min, max] = c === '*' ? [0, Infinity] : c === '+' ? [1, Infinity] : [0, 1];
      return { t: 'rep', item: atom, min, max };
    }
    if (c === '~') {
      this.i++;
      this.blank();
      const m = /^(\d+)(?:[ \t]*\.\.[ \t]*(\d+))?/.exec(s.slice(this.i));
      if (!m) throw this.error('expected a count after "~"');
      this.i += m[0].length;
      const min = Number(m[1]);
      const max = m[2] === undefined ? min : Number(m[2]);
      if (min > max) throw this.error(`repetition ~ ${m[0]}: more at least than at most`);
      return { t: 'rep', item: atom, min, max };
    }
    return atom;
  }

  private atom(): Item {
    const s = this.src;
    const c = s[this.i];
    if (c === '(' || c === '[') {
      const close = c === '(' ? ')' : ']';
      this.i++;
      if (++this.depth > MAX_DEPTH) throw this.error(`groups nested more than ${MAX_DEPTH} deep`);
      const inner = this.expansions();
      this.blank();
      if (s[this.i] !== close) throw this.error(`expected "${close}"`);
      this.depth--;
      this.i++;
      return c === '(' ? inner : { t: 'rep', item: inner, min: 0, max: 1 };
    }
    if (c === '"' || c === "'") {
      const at = this.i;
      const text = this.string();
      const folded = this.flags('i') === 'i';
      this.blank();
      if (s.startsWith('..', this.i)) {
        this.i += 2;
        this.blank();
        const hiAt = this.i;
        if (s[this.i] !== '"' && s[this.i] !== "'") throw this.error('expected a string after ".."');
        const hi = this.string();
        const [lo, top] = [[...text], [...hi]];
        if (lo.length !== 1) throw this.error('a range is between two single characters', at);
        if (top.length !== 1) throw this.error('a range is between two single characters', hiAt);
        const [a, b] = [lo[0].codePointAt(0)!, top[0].codePointAt(0)!];
        if (b < a) throw this.error('a range out of order', at);
        return { t: 'token', gbnf: `[${gbnfChar(a)}-${gbnfChar(b)}]` };
      }
      if (text === '') throw this.error('an empty string is not a token', at);
      return { t: 'token', gbnf: folded ? foldedLiteral(text) : gbnfLiteral(text) };
    }
    if (c === '/' && s[this.i + 1] !== '/') return this.regex();
    if (c === '%') throw this.error('a directive must begin its line');
    const at = this.i;
    const name = this.name();
    if (s[this.i] === '{') return this.use(name, at);
    if (!this.params?.has(name)) this.refs.push({ name, at });
    return { t: 'name', name, at };
  }

  /** A template used: `name{value, value}`. */
  private use(name: string, at: number): Item {
    this.i++;
    const args: Item[] = [];
    for (;;) {
      this.blank(true);
      if (++this.depth > MAX_DEPTH) throw this.error(`groups nested more than ${MAX_DEPTH} deep`);
      args.push(this.operated(this.atom()));
      this.depth--;
      this.blank(true);
      if (this.src[this.i] === ',') this.i++;
      else break;
    }
    if (this.src[this.i] !== '}') throw this.error('expected "}" after the arguments of a template');
    this.i++;
    return { t: 'use', name, args, at };
  }

  /** A string literal's characters (Python's escapes), past its closing quote. */
  private string(): string {
    const s = this.src;
    const quote = s[this.i++];
    let out = '';
    for (;;) {
      const c = s[this.i];
      if (c === undefined || c === '\n') throw this.error('unterminated string');
      this.i++;
      if (c === quote) return out;
      if (c !== '\\') {
        out += c;
        continue;
      }
      const e = s[this.i++];
      if (e === undefined) throw this.error('unterminated string');
      if (e in STRING_ESCAPES) out += STRING_ESCAPES[e];
      else if (e === 'x' || e === 'u' || e === 'U') {
        const n = e === 'x' ? 2 : e === 'u' ? 4 : 8;
        const hex = s.slice(this.i, this.i + n);
        if (!new RegExp(`^[0-9A-Fa-f]{${n}}$`).test(hex)) throw this.error(`\\${e} needs ${n} hexadecimal digits`);
        const cp = parseInt(hex, 16);
        if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) throw this.error(`\\${e}${hex} is not a character`);
        out += String.fromCodePoint(cp);
        this.i += n;
      } else out += `\\${e}`; // As Python keeps an unknown escape.
    }
  }

  /** Flags after a literal or a regular expression (those of `allowed`). */
  private flags(allowed: string): string {
    const from = this.i;
    while (this.i < this.src.length && /[a-z]/.test(this.src[this.i])) {
      if (!allowed.includes(this.src[this.i])) throw this.error(`flag "${this.src[this.i]}" is not supported`);
      this.i++;
    }
    return this.src.slice(from, this.i);
  }

  private regex(): Item {
    const s = this.src;
    const at = this.i;
    this.i++;
    let pattern = '';
    for (;;) {
      const c = s[this.i];
      if (c === undefined || c === '\n') throw this.error('unterminated regular expression', at);
      this.i++;
      if (c === '/') break;
      if (c === '\\' && s[this.i] === '/') {
        pattern += '/';
        this.i++;
      } else if (c === '\\') {
        pattern += c + (s[this.i++] ?? '');
      } else pattern += c;
    }
    if (pattern === '') throw this.error('an empty regular expression', at);
    const flags = this.flags('imslux');
    if (flags.includes('x')) throw this.error('flag "x" (verbose) is not supported', at);
    // Python's forms that ECMAScript reads otherwise (or not at all).
    if (/\\[AZzG]/.test(pattern)) throw this.error('\\A, \\Z and \\G are not supported', at);
    if (/\(\?[aiLmsux-]+[:)]/.test(pattern)) throw this.error('inline flags are not supported', at);
    let node: RegexNode;
    try {
      node = parseRegex(asEcmaScript(pattern));
    } catch (e) {
      if (e instanceof RegexError) throw this.error(`regular expression /${pattern}/: ${e.message}`, at);
      throw e;
    }
    return { t: 'token', gbnf: regexGbnf(node, flags.includes('i'), () => this.error(`regular expression /${pattern}/ matches nothing`, at)) };
  }
}

/**
 * A Python pattern in the forms ECMAScript reads alike: named groups `(?P<name>` as `(?<name>`, and
 * `{,n}` (at most n, which ECMAScript would read as text) as `{0,n}`; outside classes and escapes.
 */
function asEcmaScript(pattern: string): string {
  let out = '';
  let inClass = false;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '\\') {
      out += c + (pattern[i + 1] ?? '');
      i++;
    } else if (inClass) {
      if (c === ']') inClass = false;
      out += c;
    } else if (c === '[') {
      inClass = true;
      out += c;
      // A ] first in a class is one of its characters.
      if (pattern[i + 1] === '^') out += pattern[++i];
      if (pattern[i + 1] === ']') out += pattern[++i];
    } else if (pattern.startsWith('(?P<', i)) {
      out += '(?<';
      i += 3;
    } else if (c === '{' && /^\{,\d+\}/.test(pattern.slice(i))) {
      out += '{0';
    } else out += c;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// GBNF text.

/** A code point as GBNF writes it in a literal or a class. */
function gbnfChar(cp: number): string {
  if (cp < 0x20 || cp === 0x7f) return `\\x${cp.toString(16).padStart(2, '0')}`;
  if (cp === 0x22 || cp === 0x5c || cp === 0x5d || cp === 0x5b || cp === 0x2d || cp === 0x5e) return `\\${String.fromCodePoint(cp)}`;
  return String.fromCodePoint(cp);
}

const gbnfLiteral = (text: string): string => `"${[...text].map((ch) => gbnfChar(ch.codePointAt(0)!)).join('')}"`;

/** A literal whose ASCII letters match either case. */
function foldedLiteral(text: string): string {
  const parts = [...text].map((ch) => {
    const [lo, up] = [ch.toLowerCase(), ch.toUpperCase()];
    return lo !== up && /^[a-z]$/.test(lo) ? `[${lo}${up}]` : gbnfLiteral(ch);
  });
  return parts.length === 1 ? parts[0] : `(${parts.join(' ')})`;
}

const byteHex = (b: number) => `\\x${b.toString(16).padStart(2, '0')}`;

/** A parsed regular expression as GBNF (its ASCII byte sets as classes, other characters as literals). */
function regexGbnf(node: RegexNode, folded: boolean, empty: () => GrammarError): string {
  const go = (n: RegexNode): string => {
    switch (n.t) {
      case 'bytes': {
        let ranges = n.set.map(([lo, hi]): [number, number] => [lo, hi]);
        if (folded) {
          for (const [lo, hi] of [...ranges]) {
            for (const [from, to, shift] of [[0x41, 0x5a, 32], [0x61, 0x7a, -32]] as const) {
              const [a, b] = [Math.max(lo, from), Math.min(hi, to)];
              if (a <= b) ranges.push([a + shift, b + shift]);
            }
          }
          ranges = ranges.sort((x, y) => x[0] - y[0]);
        }
        if (ranges.length === 0) throw empty();
        return `[${ranges.map(([lo, hi]) => (lo === hi ? byteHex(lo) : `${byteHex(lo)}-${byteHex(hi)}`)).join('')}]`;
      }
      case 'seq':
        return gbnfLiteral(new TextDecoder().decode(Uint8Array.from(n.bytes)));
      case 'cat':
        return n.items.length === 0 ? '""' : `(${n.items.map(go).join(' ')})`;
      case 'alt':
        return `(${n.items.map(go).join(' | ')})`;
      case 'rep':
        return `(${go(n.item)})${quantifier(n.min, n.max)}`;
    }
  };
  return go(node);
}

function quantifier(min: number, max: number): string {
  if (min === 0 && max === 1) return '?';
  if (min === 0 && max === Infinity) return '*';
  if (min === 1 && max === Infinity) return '+';
  if (max === Infinity) return `{${min},}`;
  return min === max ? `{${min}}` : `{${min},${max}}`;
}

/** A rule's alternatives. */
const alternatives = (body: Item): Item[] => (body.t === 'alt' ? body.items : [body]);

/**
 * A rule's direct left recursion written as repetition: `r: r a | r b | c | d` is `r: (c | d) (a | b)*`
 * (an alternative that is `r` alone adds no string and is dropped). Other rules as they are.
 */
function withoutLeftRecursion(name: string, body: Item): Item {
  const tails: Item[] = [];
  const bases: Item[] = [];
  for (const alt of alternatives(body)) {
    if (alt.t === 'name' && alt.name === name) continue;
    if (alt.t === 'seq' && alt.items[0]?.t === 'name' && alt.items[0].name === name) {
      const rest = alt.items.slice(1);
      tails.push(rest.length === 1 ? rest[0] : { t: 'seq', items: rest });
    } else bases.push(alt);
  }
  if (tails.length === 0 || bases.length === 0) return body;
  const one = (items: Item[]): Item => (items.length === 1 ? items[0] : { t: 'alt', items });
  return { t: 'seq', items: [one(bases), { t: 'rep', item: one(tails), min: 0, max: Infinity }] };
}

/**
 * Every use of a template made a rule of its own (one per template and arguments), its body the
 * template's with the arguments in place of the parameters; uses replaced by that rule's name.
 */
function instantiate(parser: LarkParser): void {
  const made = new Map<string, string>();
  // Arguments are shared, not copied, so items form a graph: their identity (the same structure,
  // the same number) and their size as written out are both counted once per item.
  const ids = new WeakMap<Item, number>();
  const shapes = new Map<string, number>();
  const idOf = (item: Item): number => {
    let id = ids.get(item);
    if (id === undefined) {
      const inner = (items: Item[]) => items.map(idOf).join(',');
      const shape =
        item.t === 'token' ? `k${item.gbnf}` : item.t === 'name' ? `n${item.name}` : item.t === 'rep' ? `r${item.min},${item.max},${idOf(item.item)}` : item.t === 'use' ? `u${item.name}(${inner(item.args)})` : `${item.t}(${inner(item.items)})`;
      id = shapes.get(shape) ?? shapes.size;
      shapes.set(shape, id);
      ids.set(item, id);
    }
    return id;
  };
  const sizes = new WeakMap<Item, number>();
  const sizeOf = (item: Item): number => {
    let n = sizes.get(item);
    if (n === undefined) {
      const inner = (items: Item[]) => items.reduce((sum, x) => sum + sizeOf(x), 0);
      n = 1 + (item.t === 'rep' ? sizeOf(item.item) : item.t === 'seq' || item.t === 'alt' ? inner(item.items) : item.t === 'use' ? inner(item.args) : 0);
      sizes.set(item, n);
    }
    return n;
  };
  let written = 0;
  const expand = (item: Item, bind: ReadonlyMap<string, Item> | null): Item => {
    switch (item.t) {
      case 'token':
        return item;
      case 'name':
        return bind?.get(item.name) ?? item;
      case 'use': {
        const template = parser.templates.get(item.name);
        if (template === undefined) throw parser.error(`template "${item.name}" is not defined`, item.at);
        if (item.args.length !== template.params.length) throw parser.error(`template "${item.name}" takes ${template.params.length} arguments, not ${item.args.length}`, item.at);
        const args = item.args.map((a) => expand(a, bind));
        const id = `${item.name}{${args.map(idOf).join(',')}}`;
        let name = made.get(id);
        if (name === undefined) {
          if (made.size >= MAX_INSTANCES) throw parser.error(`templates are used with more than ${MAX_INSTANCES} different arguments`, item.at);
          name = `template-${made.size}`;
          made.set(id, name);
          const body = expand(template.body, new Map(template.params.map((p, i) => [p, args[i]])));
          written += sizeOf(body);
          if (written > MAX_EXPANDED) throw parser.error(`the templates expand to more than ${MAX_EXPANDED} items`, item.at);
          parser.defs.set(name, { terminal: false, body, at: template.at });
        }
        return { t: 'name', name, at: item.at };
      }
      case 'rep':
        return { ...item, item: expand(item.item, bind) };
      case 'seq':
      case 'alt':
        return { ...item, items: item.items.map((x) => expand(x, bind)) };
    }
  };
  for (const def of [...parser.defs.values()]) def.body = expand(def.body, null);
  parser.ignored.forEach((item, i) => (parser.ignored[i] = expand(item, null)));
}

function translate(text: string): string {
  const parser = new LarkParser(text);
  parser.parse();
  instantiate(parser);
  const common = commonDefinitions();
  // A name of this grammar as GBNF writes it: an imported one is the common terminal's; `root` is
  // the start wrapper's, so a rule of that name is renamed.
  const imported = new Map(parser.imports.map((x) => [x.name, x]));
  for (const x of parser.imports) if (!common.has(x.common)) throw parser.error(`Lark's common terminals have no "${x.common}"`, x.at);
  const own = (name: string) => (imported.has(name) ? COMMON_PREFIX + imported.get(name)!.common : name === 'root' ? 'root-' : name);
  for (const ref of parser.refs) {
    if (!parser.defs.has(ref.name) && !imported.has(ref.name)) throw parser.error(`"${ref.name}" is not defined`, ref.at);
  }
  for (const [name, def] of parser.defs) {
    if (!def.terminal) continue;
    const rule = namesIn(def.body).find((n) => !isTerminalName(n));
    if (rule !== undefined) throw parser.error(`terminal "${name}" refers to rule "${rule}": a terminal is made of terminals`, def.at);
  }
  const ignoredRule = parser.ignored.flatMap(namesIn).find((n) => !isTerminalName(n));
  if (ignoredRule !== undefined) throw new GrammarError(`%ignore takes terminals, not the rule "${ignoredRule}" (Lark)`);
  const start = parser.defs.has('start') && !parser.defs.get('start')!.terminal ? 'start' : parser.ruleOrder[0];
  if (start === undefined) throw new GrammarError('the Lark grammar has no rule (a start rule is `start`, else the first rule written)');
  const ignoring = parser.ignored.length > 0;
  const isTerminal = (name: string) => imported.has(name) || parser.defs.get(name)!.terminal;

  // Tokens in a rule follow an ignored gap; inside terminals there is none.
  const emit = (item: Item, inRule: boolean, rename: (name: string) => string, terminal: (name: string) => boolean): string => {
    const gap = inRule && ignoring ? `${IGNORED} ` : '';
    switch (item.t) {
      case 'token':
        return gap + item.gbnf;
      case 'name':
        return (terminal(item.name) ? gap : '') + rename(item.name);
      case 'seq':
        return item.items.length === 0 ? '""' : `(${item.items.map((x) => emit(x, inRule, rename, terminal)).join(' ')})`;
      case 'alt':
        return `(${item.items.map((x) => emit(x, inRule, rename, terminal)).join(' | ')})`;
      case 'rep':
        return `(${emit(item.item, inRule, rename, terminal)})${quantifier(item.min, item.max)}`;
      case 'use':
        throw new Error('a template use left after instantiation');
    }
  };

  const lines = [`root ::= ${own(start)}${ignoring ? ` ${IGNORED}` : ''}`];
  for (const [name, def] of parser.defs) {
    const body = def.terminal ? def.body : withoutLeftRecursion(name, def.body);
    lines.push(`${own(name)} ::= ${emit(body, !def.terminal, own, isTerminal)}`);
  }
  if (ignoring) lines.push(`${IGNORED} ::= (${parser.ignored.map((x) => emit(x, false, own, isTerminal)).join(' | ')})*`);
  // The common terminals imported, and those they are made of.
  const needed = new Set<string>();
  const visit = (name: string) => {
    if (needed.has(name)) return;
    needed.add(name);
    for (const ref of namesIn(common.get(name)!.body)) visit(ref);
  };
  for (const x of parser.imports) visit(x.common);
  for (const name of needed) lines.push(`${COMMON_PREFIX}${name} ::= ${emit(common.get(name)!.body, false, (n) => COMMON_PREFIX + n, () => true)}`);
  return `${lines.join('\n')}\n`;
}

function namesIn(item: Item): string[] {
  switch (item.t) {
    case 'token':
      return [];
    case 'name':
    case 'use':
      return [item.name];
    case 'rep':
      return namesIn(item.item);
    default:
      return item.items.flatMap(namesIn);
  }
}

let commonDefs: Map<string, Definition> | null = null;
function commonDefinitions(): Map<string, Definition> {
  if (commonDefs === null) {
    const p = new LarkParser(COMMON);
    p.parse();
    commonDefs = p.defs;
  }
  return commonDefs;
}
