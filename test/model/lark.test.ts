import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { GrammarError, compileGrammar } from '../../src/model/grammar.js';
import { compileGuideGrammar, isLarkGrammar, larkToGbnf } from '../../src/model/lark.js';
import { Rng } from '../../src/util/rng.js';
import { accepts } from './grammar-accepts.js';

const lark = (text: string) => compileGrammar(larkToGbnf(text));

/** Lark's JSON example (its docs, and vLLM's), white space ignored between tokens. */
const JSON_LARK = readFileSync(new URL('../../docs/grammars/json.lark', import.meta.url), 'utf8');

/** Lark's calculator example: left-recursive sums and products, spaces and tabs ignored. */
const CALC_LARK = String.raw`
?start: sum
?sum: product
    | sum "+" product   -> add
    | sum "-" product   -> sub
?product: atom
    | product "*" atom  -> mul
    | product "/" atom  -> div
?atom: NUMBER           -> number
     | "-" atom         -> neg
     | "(" sum ")"

%import common.NUMBER
%import common.WS_INLINE
%ignore WS_INLINE
`;

/**
 * An independent reader of a grammar's language, as Lark reads it: a lexer of the given token
 * patterns (tried in order at each place, each its longest match by construction) that skips the
 * ignored pattern, then a recursive-descent parser of the token kinds. Negated classes and string
 * contents are printable ASCII, as memlora's patterns draw them.
 */
function lexer(tokens: Array<[string, RegExp]>, ignored: RegExp | null) {
  return (text: string): Array<{ kind: string; text: string }> | null => {
    const out: Array<{ kind: string; text: string }> = [];
    let i = 0;
    for (;;) {
      if (ignored) {
        ignored.lastIndex = i;
        const m = ignored.exec(text);
        if (m) i += m[0].length;
      }
      if (i >= text.length) return out;
      const found = tokens.find(([, re]) => ((re.lastIndex = i), re.test(text)));
      if (!found) return null;
      const [kind, re] = found;
      re.lastIndex = i;
      const m = re.exec(text)!;
      out.push({ kind, text: m[0] });
      i += m[0].length;
    }
  };
}

const NUMBER = /(\d+\.\d*|\.\d+)([eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+/y;

/** The calculator's language, read independently. */
function isCalc(text: string): boolean {
  const toks = lexer(
    [
      ['num', NUMBER],
      ['op', /[-+*/()]/y],
    ],
    /[ \t]+/y,
  )(text);
  if (toks === null) return false;
  let k = 0;
  const is = (t: string) => toks[k]?.text === t && toks[k].kind === 'op';
  const atom = (): boolean => {
    if (toks[k]?.kind === 'num') return (k++, true);
    if (is('-')) return (k++, atom());
    if (is('(')) {
      k++;
      if (!sum() || !is(')')) return false;
      return (k++, true);
    }
    return false;
  };
  /** Items joined by any of the operators. */
  const chain = (item: () => boolean, ops: string[]) => (): boolean => {
    if (!item()) return false;
    while (ops.some(is)) {
      k++;
      if (!item()) return false;
    }
    return true;
  };
  const product = chain(atom, ['*', '/']);
  const sum = chain(product, ['+', '-']);
  return sum() && k === toks.length;
}

/** The JSON example's language, read independently. */
function isLarkJson(text: string): boolean {
  const toks = lexer(
    [
      ['string', /"([ !#-[\]-~]|\\[ -~])*"/y],
      ['number', new RegExp(`[+-]?(?:${NUMBER.source})`, 'y')],
      ['word', /true|false|null/y],
      ['punct', /[[\]{},:]/y],
    ],
    /[ \t\f\r\n]+/y,
  )(text);
  if (toks === null) return false;
  let k = 0;
  const is = (t: string) => toks[k]?.kind === 'punct' && toks[k].text === t;
  const value = (): boolean => {
    const t = toks[k];
    if (t === undefined) return false;
    if (t.kind !== 'punct') return (k++, true);
    const [open, close, item] = t.text === '[' ? ['[', ']', value] : t.text === '{' ? ['{', '}', pair] : [null, null, null];
    if (open === null) return false;
    k++;
    if (is(close!)) return (k++, true);
    for (;;) {
      if (!item!()) return false;
      if (is(',')) k++;
      else break;
    }
    if (!is(close!)) return false;
    return (k++, true);
  };
  const pair = (): boolean => {
    if (toks[k]?.kind !== 'string') return false;
    k++;
    if (!is(':')) return false;
    k++;
    return value();
  };
  return value() && k === toks.length;
}

/** A random string over `alphabet`, of length 0 to `max`. */
const randomText = (rng: Rng, alphabet: string, max: number) => Array.from({ length: Math.floor(rng.uniform() * (max + 1)) }, () => alphabet[Math.floor(rng.uniform() * alphabet.length)]).join('');

describe('Lark grammars (translated to GBNF)', () => {
  it('tells Lark from GBNF as vLLM does: a GBNF rule (::=) outside comments makes it GBNF', () => {
    expect(isLarkGrammar(JSON_LARK)).toBe(true);
    expect(isLarkGrammar('root ::= "a"')).toBe(false);
    expect(isLarkGrammar('// a ::= comment\nstart: "a"')).toBe(true);
    expect(isLarkGrammar('# x ::= y\nstart: "a"')).toBe(true);
  });

  it("Lark's calculator (left-recursive, white space ignored) takes exactly the strings an independent lexer and parser take", () => {
    const g = lark(CALC_LARK);
    for (const text of ['1', '1+2*3', ' 1 + 2 ', '-(1.5e3 -\t.5)/2', '2*-3', '((1))', '1-2-3', '1.', '7E-2']) expect(accepts(g, text), text).toBe(true);
    for (const text of ['', '1+', '+1', '1 2', '(1', '1)', '1..2', 'e5', '1\n+2', '1e', '1 .5']) expect(accepts(g, text), text).toBe(false);
    const rng = new Rng(11);
    const agree = (text: string) => {
      const want = isCalc(text);
      expect(accepts(g, text), JSON.stringify(text)).toBe(want);
      return want;
    };
    for (let n = 0; n < 3000; n++) agree(randomText(rng, '12.e+-*/() \t', 9));
    // Expressions written at random (white space between tokens), each taken; one character changed, read both ways.
    const pick = <T>(xs: readonly T[]) => xs[Math.floor(rng.uniform() * xs.length)];
    const gap = () => pick(['', '', ' ', '\t', '  \t']);
    const expr = (depth: number): string => {
      const r = rng.uniform();
      if (depth <= 0 || r < 0.35) return gap() + pick(['1', '23', '1.5', '.5', '2e3', '7E-2', '1.']);
      if (r < 0.5) return `${gap()}-${expr(depth - 1)}`;
      if (r < 0.65) return `${gap()}(${expr(depth - 1)}${gap()})`;
      return `${expr(depth - 1)}${gap()}${pick(['+', '-', '*', '/'])}${expr(depth - 1)}`;
    };
    const outcomes = new Set<boolean>();
    for (let n = 0; n < 500; n++) {
      const text = expr(4) + gap();
      expect(agree(text), text).toBe(true);
      const at = Math.floor(rng.uniform() * text.length);
      outcomes.add(agree(text.slice(0, at) + pick([...'12.e+-*/() ']) + text.slice(at + 1)));
    }
    expect([...outcomes].sort()).toEqual([false, true]);
  });

  it("Lark's JSON example (common imports, %ignore WS) takes exactly the strings an independent lexer and parser take", () => {
    const g = lark(JSON_LARK);
    for (const text of ['{}', '[]', ' { "a" : [1, -2.5e3, true, null, "x\\"y"] } ', '"\\n"', '+1', '.5', '1.', '\n[\t]\r']) expect(accepts(g, text), text).toBe(true);
    for (const text of ['', '{', '[1,]', '{"a"}', '{1:2}', 'tru', '"a', '"\\"', '"a\nb"', '[1 2]', '01x']) expect(accepts(g, text), text).toBe(false);
    const rng = new Rng(12);
    for (let n = 0; n < 3000; n++) {
      const text = randomText(rng, '{}[],:"a\\1-.e tn', 10);
      expect(accepts(g, text), JSON.stringify(text)).toBe(isLarkJson(text));
    }
    // Real JSON documents, each taken; one character changed, read both ways.
    const outcomes = new Set<boolean>();
    for (let n = 0; n < 300; n++) {
      const doc = JSON.stringify({ k: [n, -n / 7, 'v' + n, n % 2 === 0, null, { z: [] }] }, null, n % 3);
      expect(accepts(g, doc)).toBe(true);
      const at = Math.floor(rng.uniform() * doc.length);
      const mutated = doc.slice(0, at) + '{}[],:"1 x'[Math.floor(rng.uniform() * 10)] + doc.slice(at + 1);
      const want = isLarkJson(mutated);
      outcomes.add(want);
      expect(accepts(g, mutated), mutated).toBe(want);
    }
    expect([...outcomes].sort()).toEqual([false, true]);
    // A long run of ignored white space is one gap, however the ignored terminal repeats inside it.
    expect(accepts(g, `[${' \n'.repeat(3000)}1]`)).toBe(true);
  });

  it('reads the rest of the syntax: regular expressions with flags, folded literals, ranges, counts, optionals, imports, aliases, priorities, comments', () => {
    const g = lark(String.raw`
      // the start rule is "start" wherever it stands
      word.2: WORD "!"?       -> shout
      start: greeting ~ 1..2 [tail] // trailing comment
      greeting: "hi"i | /he(y|llo)/i | NAME
      tail: "#" DIGIT ~ 3 | range
      range: "a".."c"
      NAME.-1: /[A-Z][a-z]+/
      %import common (DIGIT, WORD)
      %import common.WS_INLINE -> SPACE
      %ignore SPACE
      %ignore "_"
    `);
    for (const text of ['hi', 'HI', 'Hey', 'HELLO hi', 'Bob#123', 'hi b', ' _hi_Bob_ ', 'hi #1 2 3']) expect(accepts(g, text), text).toBe(true);
    for (const text of ['h', 'hi hi hi', 'bob', 'hi#12', 'hi d', 'hiya', 'hello!', '-hi']) expect(accepts(g, text), text).toBe(false);
    // Without "start", the first rule written; a rule named root keeps its own name.
    const first = lark('root: "x" other\nother: "y" | root');
    expect(accepts(first, 'xy')).toBe(true);
    expect(accepts(first, 'xxy')).toBe(true);
    expect(accepts(first, 'x')).toBe(false);
    // Every alternative led by "|", the first too; an empty alternative where one is written.
    const led = lark('start:\n  | "a"\n  | "b" // b\n\n  | "c"\nother: | "x" | "y"\nmaybe: "m" |');
    for (const [text, want] of [['a', true], ['b', true], ['c', true], ['', false]] as const) expect(accepts(led, text), text).toBe(want);
    expect(accepts(lark('start: "m" |'), '')).toBe(true);
    // Python's pattern forms: {,n}, named groups; not inside a class.
    const python = lark('start: /(?P<x>a{,2})[{,]b/');
    for (const [text, want] of [['b', false], ['{b', true], ['aa,b', true], ['aaa{b', false], ['a{,2}{b', false]] as const) expect(accepts(python, text), text).toBe(want);
    // Templates: each use a rule of its own, its arguments in place of the parameters (recursion through rules too).
    const lists = lark(String.raw`
      start: _separated{item, ","}
      item: WORD | "[" _separated{item, ";"} "]"
      _separated{x, sep}: x (sep x)*
      %import common.WORD
      %ignore " "
    `);
    for (const [text, want] of [['a,b', true], ['a , [b;c] ,d', true], ['[a]', true], ['[[a;b];c]', true], ['a,', false], ['a;b', false], ['[a,b]', false]] as const) expect(accepts(lists, text), text).toBe(want);
    // Characters beyond ASCII, in patterns and literals.
    const accented = lark('start: /caf(é|e)/ "→"');
    for (const [text, want] of [['café→', true], ['cafe→', true], ['cafx→', false], ['café', false]] as const) expect(accepts(accented, text), text).toBe(want);
    // Python's string escapes, and a terminal made of terminals.
    const escaped = lark('start: QUOTED "\\t" "\\x41"\nQUOTED: "\\"" LETTERS "\\""\nLETTERS: /[a-z]+/');
    expect(accepts(escaped, '"ab"\tA')).toBe(true);
    expect(accepts(escaped, '"ab" A')).toBe(false);
  });

  it('refuses what it cannot read or run, saying where (GrammarError)', () => {
    const refusals: Array<[string, RegExp]> = [
      ['start: _sep{x, ","}\n_sep{x, sep}: x (sep x)*', /"x" is not defined at line 1, column 13/],
      ['start: _sep{"a"}\n_sep{x, sep}: x (sep x)*', /template "_sep" takes 2 arguments, not 1 at line 1, column 8/],
      ['start: _nope{"a"}', /template "_nope" is not defined/],
      ['start: _T{"a"}\n_T{x}: x', /templates of terminals are not supported/],
      ['start: _t{"a", "b"}\n_t{x, x}: x', /parameter "x" is named twice/],
      ['start: _grow{"a"}\n_grow{x}: x | _grow{(x "b")}', /more than 256 different arguments/],
      ['start: _grow{"a"}\n_grow{x}: x | _grow{(x x)}', /more than 256 different arguments/],
      // Arguments doubled through 20 templates: 2^20 items written out.
      [['start: _t0{"a"}', ...Array.from({ length: 20 }, (_, i) => `_t${i}{x}: _t${i + 1}{(x x)}`), '_t20{x}: x'].join('\n'), /expand to more than 200000 items/],
      ['start: A\n%declare A', /%declare is not supported at line 2/],
      ['start: NAME\n%import python.NAME', /only Lark's common terminals/],
      ['start: NOPE\n%import common.NOPE', /common terminals have no "NOPE"/],
      ['start: missing', /"missing" is not defined at line 1, column 8/],
      ['start: A\nA: "a" b\nb: "b"', /terminal "A" refers to rule "b"/],
      ['start: "a\n', /unterminated string/],
      ['start: /a/x', /flag "x"/],
      ['start: /(?<=a)b/', /lookarounds are not supported/],
      ['start: /a\\Z/', /\\A, \\Z and \\G are not supported/],
      ['start: /(?i)a/', /inline flags/],
      ['start: "b".."a"', /out of order/],
      ['start: "ab".."c"', /two single characters/],
      ['start: "a" ~ 3..1', /more at least than at most/],
      ['start: "a"\nstart: "b"', /"start" is defined twice at line 2/],
      ['start: A\nA: "a"\n%import common.DIGIT -> A', /"A" is defined twice/],
      ['A: "a"', /has no rule/],
      ['start: "a"\nc: "#"\n%ignore c', /%ignore takes terminals, not the rule "c"/],
      ['start: ""', /an empty string is not a token/],
      [`start: ${'('.repeat(5000)}"a"${')'.repeat(5000)}`, /groups nested more than 128 deep/],
      [`start: ${'['.repeat(200)}"a"${']'.repeat(200)}`, /groups nested more than 128 deep/],
    ];
    for (const [text, why] of refusals) expect(() => larkToGbnf(text), text).toThrow(why);
    for (const [text] of refusals) expect(() => larkToGbnf(text)).toThrow(GrammarError);
    // Whatever the text, a grammar or a GrammarError, never another failure.
    const pieces = ['start', ':', 'a', 'A', '"x"', '/y+/', '/[/', '|', '(', ')', '[', ']', '*', '+', '?', '~ 2', '~ 1..3', '\n', '%ignore', '%import common.WS', '->', 'b', ' ', '"a".."c"', '.2', '//c', '{', '"', 'root', '_B', '?a'];
    const rng = new Rng(13);
    let compiled = 0;
    for (let n = 0; n < 3000; n++) {
      const words = Array.from({ length: 1 + Math.floor(rng.uniform() * 14) }, () => pieces[Math.floor(rng.uniform() * pieces.length)]);
      const text = (n % 2 ? 'start: ' : '') + words.join(rng.uniform() < 0.5 ? ' ' : '') + (n % 3 ? '\na: "q"\nA: "Q"' : '');
      try {
        compileGuideGrammar(text);
        compiled++;
      } catch (e) {
        expect(e, text).toBeInstanceOf(GrammarError);
      }
    }
    expect(compiled).toBeGreaterThan(10);
    // Left recursion through another rule is GBNF's to refuse; the direct kind is rewritten.
    expect(() => lark('start: a\na: b "x" | "y"\nb: a "z"')).toThrow(/left-recursive/);
    expect(accepts(lark('start: start "x" | "y"'), 'yxx')).toBe(true);
  });
});
