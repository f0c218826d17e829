import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { type CompiledGrammar, GrammarError, MAX_GRAMMAR_STATES, compileGrammar } from '../../src/model/grammar.js';
import { GrammarGuide, MAX_FRAMES, MAX_PARSES } from '../../src/model/grammar-guide.js';
import { Rng } from '../../src/util/rng.js';
import { BYTES, accepts } from './grammar-accepts.js';

const enc = new TextEncoder();
const dec = new TextDecoder();


/**
 * A random walk through the guide's masks: the bytes written, whether it ended (on the end token, or
 * by itself), and at each step the bytes before it and whether the end token was allowed there.
 */
function walk(grammar: CompiledGrammar, vocab: Array<Uint8Array | null>, rng: Rng, steps: number, endChance: number): { bytes: Uint8Array; ended: boolean; steps: Array<{ before: Uint8Array; end: boolean }> } {
  const g = new GrammarGuide(grammar, vocab, [0]);
  const out: number[] = [];
  const seen: Array<{ before: Uint8Array; end: boolean }> = [];
  for (let step = 0; step < steps; step++) {
    if (g.done) return { bytes: Uint8Array.from(out), ended: true, steps: seen };
    const mask = g.allowed();
    const ids = [...mask.keys()].filter((id) => mask[id] && id !== 0);
    seen.push({ before: Uint8Array.from(out), end: mask[0] === 1 });
    if (mask[0] && (ids.length === 0 || rng.uniform() < endChance)) return { bytes: Uint8Array.from(out), ended: true, steps: seen };
    expect(ids.length).toBeGreaterThan(0);
    const id = ids[Math.floor(rng.uniform() * ids.length)];
    g.advance(id);
    out.push(...vocab[id]!);
  }
  return { bytes: Uint8Array.from(out), ended: false, steps: seen };
}

/** Letters a-c and brackets, nested as deep as written. */
const BRACKETS = 'root ::= item*\nitem ::= "(" root ")" | [a-c]';

/** The test's own reading of BRACKETS: how many brackets `s` leaves open, or null where no string of the grammar begins with it. */
function bracketDepth(s: string): number | null {
  let depth = 0;
  for (const ch of s) {
    if (ch === '(') depth++;
    else if (ch === ')') {
      if (--depth < 0) return null;
    } else if (!'abc'.includes(ch)) return null;
  }
  return depth;
}

/** JSON text as RFC 8259 defines it (the example grammar docs/grammars/json.gbnf). */
const JSON_GRAMMAR = readFileSync(new URL('../../docs/grammars/json.gbnf', import.meta.url), 'utf8');

function parsesAsJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

describe('compileGrammar', () => {
  it('takes exactly the strings an equivalent regular expression matches: random strings, its own walks, and those walks altered by a character', () => {
    const cases: Array<[string, RegExp]> = [
      ['root ::= (word " ")* word\nword ::= [a-c]+ | num\nnum ::= "-"? [0-9]{1,3}', /^(?:(?:[a-c]+|-?[0-9]{1,3}) )*(?:[a-c]+|-?[0-9]{1,3})$/],
      ['root ::= "a"{2,3} b? | c*\nb ::= "b" | "-" "b"+\nc ::= "x" | "y" "z"', /^(?:a{2,3}(?:b|-b+)?|(?:x|yz)*)$/],
      ['root ::= ( [^a-c ] | "a" "b"{,2} )+ # a comment\n', /^(?:[^a-c ]|ab{0,2})+$/u],
      ['root ::= [0-9]{3,} "."? \n  | "x" . "y"', /^(?:[0-9]{3,}\.?|x.y)$/su],
    ];
    const alphabet = ['a', 'b', 'c', 'x', 'y', 'z', '-', '0', '1', '9', ' ', '.', 'é'];
    const tokens: Array<Uint8Array | null> = [null, ...alphabet.map((s) => enc.encode(s))];
    const rng = new Rng(7);
    const draw = () => alphabet[Math.floor(rng.uniform() * alphabet.length)];
    for (const [text, oracle] of cases) {
      const grammar = compileGrammar(text);
      const check = (s: string) => expect(accepts(grammar, s), `${text} on ${JSON.stringify(s)}`).toBe(oracle.test(s));
      for (let n = 0; n < 1000; n++) check(Array.from({ length: Math.floor(rng.uniform() * 7) }, draw).join(''));
      let walked = 0;
      for (let n = 0; n < 150; n++) {
        const { bytes, ended } = walk(grammar, tokens, rng, 12, 0.25);
        if (!ended) continue;
        walked++;
        const s = dec.decode(bytes);
        expect(oracle.test(s), `${text}: its walk ${JSON.stringify(s)}`).toBe(true);
        const chars = [...s];
        const at = Math.floor(rng.uniform() * (chars.length + 1));
        check([...chars.slice(0, at), draw(), ...chars.slice(at + 1)].join(''));
        check([...chars.slice(0, at), draw(), ...chars.slice(at)].join(''));
        check([...chars.slice(0, at), ...chars.slice(at + 1)].join(''));
      }
      expect(walked, text).toBeGreaterThan(50);
    }
  });

  it('runs a grammar no regular expression can: balanced parentheses, nested as deep as written', () => {
    const grammar = compileGrammar(BRACKETS);
    const balanced = (s: string) => bracketDepth(s) === 0;
    const rng = new Rng(3);
    for (let n = 0; n < 2000; n++) {
      const s = Array.from({ length: Math.floor(rng.uniform() * 9) }, () => '(()ax'[Math.floor(rng.uniform() * 5)]).join('');
      expect(accepts(grammar, s), s).toBe(balanced(s));
    }
    expect(accepts(grammar, '('.repeat(300) + 'a' + ')'.repeat(300))).toBe(true);
    expect(accepts(grammar, '('.repeat(300) + 'a' + ')'.repeat(299))).toBe(false);
  });

  it('writes characters of any Unicode range as UTF-8, and only valid UTF-8', () => {
    const grammar = compileGrammar(String.raw`root ::= [à-ÿ\u4e00-\u9fff\U0001F600-\U0001F64F]+ [^a-z\u0100-\U0010FFFF]?`);
    const oracle = /^[à-ÿ\u4e00-\u9fff\u{1F600}-\u{1F64F}]+[^a-z\u0100-\u{10FFFF}]?$/u;
    const edges = [0x41, 0x61, 0x7a, 0x7b, 0x7f, 0x80, 0xdf, 0xe0, 0xff, 0x100, 0x7ff, 0x800, 0x4dff, 0x4e00, 0x9fff, 0xa000, 0xd7ff, 0xe000, 0xffff, 0x10000, 0x1f5ff, 0x1f600, 0x1f64f, 0x1f650, 0x10ffff];
    const rng = new Rng(11);
    const pick = () => (rng.uniform() < 0.6 ? edges[Math.floor(rng.uniform() * edges.length)] : Math.floor(rng.uniform() * 0x110000));
    for (let n = 0; n < 3000; n++) {
      const cps = Array.from({ length: 1 + Math.floor(rng.uniform() * 3) }, pick).filter((cp) => cp < 0xd800 || cp > 0xdfff);
      const s = String.fromCodePoint(...cps);
      expect(accepts(grammar, s), cps.map((c) => c.toString(16)).join(' ')).toBe(oracle.test(s));
    }
    // Random classes of random ranges, plain and negated, against the engine's own classes.
    const hex = (cp: number) => cp.toString(16).padStart(8, '0');
    for (let n = 0; n < 40; n++) {
      const ranges = Array.from({ length: 1 + Math.floor(rng.uniform() * 3) }, () => {
        const [a, b] = [pick(), pick()].sort((x, y) => x - y);
        return [a, b].map((cp) => (cp >= 0xd800 && cp <= 0xdfff ? 0xe000 : cp)).sort((x, y) => x - y);
      });
      const negated = rng.uniform() < 0.4;
      const body = ranges.map(([a, b]) => `\\U${hex(a)}-\\U${hex(b)}`).join('');
      const cls = compileGrammar(`root ::= [${negated ? '^' : ''}${body}]`);
      const re = new RegExp(`^[${negated ? '^' : ''}${ranges.map(([a, b]) => `\\u{${a.toString(16)}}-\\u{${b.toString(16)}}`).join('')}]$`, 'u');
      const near = ranges.flat().flatMap((cp) => [cp - 1, cp, cp + 1]);
      for (let k = 0; k < 150; k++) {
        const cp = k < near.length ? near[k] : rng.uniform() < 0.5 ? near[Math.floor(rng.uniform() * near.length)] + Math.floor(rng.uniform() * 200) - 100 : pick();
        if (cp < 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) continue;
        const s = String.fromCodePoint(cp);
        expect(accepts(cls, s), `${re} on ${cp.toString(16)}`).toBe(re.test(s));
      }
    }
    // `.` is any character, and never a byte sequence that is not one.
    const any = compileGrammar('root ::= .*');
    for (const cp of [0, 0x7f, 0x80, 0x7ff, 0x800, 0xd7ff, 0xe000, 0xfffd, 0x10000, 0x10ffff]) expect(accepts(any, String.fromCodePoint(cp)), cp.toString(16)).toBe(true);
    for (const bad of [[0x80], [0xc0, 0x80], [0xc1, 0xbf], [0xe0, 0x80, 0x80], [0xed, 0xa0, 0x80], [0xf0, 0x80, 0x80, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xf5, 0x80, 0x80, 0x80], [0xff]]) {
      expect(accepts(any, Uint8Array.from(bad)), bad.map((b) => b.toString(16)).join(' ')).toBe(false);
    }
  });

  it('refuses what it cannot run, saying why', () => {
    const refused: Array<[string, RegExp]> = [
      ['rot ::= "a"', /no rule "root"/],
      ['root ::= a', /no rule is named "a" \(at line 1, column 10\)/],
      ['root ::= "a"\nroot ::= "b"', /defined twice at line 2, column 1/],
      ['root ::= root "a" | "a"', /left-recursive/],
      ['root ::= b "x" | "y"\nb ::= c? root\nc ::= "c"', /left-recursive/],
      ['root ::= "a\n"', /unterminated string literal at line 1/],
      ['root ::= [a-c', /unterminated character class/],
      ['root ::= []', /empty character class/],
      ['root ::= [z-a]', /out of order/],
      ['root ::= "\\q"', /unknown escape/],
      ['root ::= "\\x4"', /needs 2 hexadecimal digits/],
      ['root ::= "\\uD800"', /not a character/],
      ['root ::= "\uD800"', /lone surrogate/],
      ['root ::= ( "a" ', /expected "\)"/],
      ['root ::= "a" )', /unmatched/],
      ['root = "a"', /expected "::="/],
      ['root ::= <[1000]>', /token references/],
      ['root ::= "a"{1001}', /counts above 1000/],
      ['root ::= "a"{3,2}', /more at least than at most/],
      ['root ::= "a"{}', /expected a count/],
      [`root ::= ${'('.repeat(20_000)}"a"${')'.repeat(20_000)}`, /groups nested more than 128 deep/],
      [`root ::= "a"${'?'.repeat(20_000)}`, /more than 8 repetitions of one item/],
      ['root ::= loop\nloop ::= "b" loop', /derives no finite string/],
      [`root ::= ("a"{1000}){1000}`, new RegExp(`more than ${MAX_GRAMMAR_STATES} states`)],
    ];
    for (const [text, message] of refused) {
      let err: unknown;
      try {
        compileGrammar(text);
      } catch (e) {
        err = e;
      }
      expect(err, text).toBeInstanceOf(GrammarError);
      expect((err as Error).message, text).toMatch(message);
    }
    // A call returns to a state that may still write (only empty moves out of it, one of them to more
    // bytes): not a tail call.
    const after = compileGrammar('root ::= r1 ( "" | "" "a" )\nr1 ::= "x"');
    expect(['x', 'xa', 'a', 'xaa'].map((s) => accepts(after, s))).toEqual([true, true, false, false]);
    // Right recursion, and recursion behind a byte, are fine.
    for (const ok of ['root ::= "x" root | ""', 'root ::= "(" root ")" | ""', 'root ::= a\na ::= "-"* "x" a?']) expect(() => compileGrammar(ok)).not.toThrow();
  });
});

/** A grammar in BNF: per rule its alternatives, each a list of symbols (a terminal character, or a rule's index). */
type Bnf = Array<Array<Array<string | number>>>;

/** An Earley recogniser, written for these tests: whether `text` derives from rule 0. */
function earley(g: Bnf, text: string): boolean {
  type Item = { rule: number; alt: number; dot: number; from: number };
  const sets: Item[][] = [];
  const keys: Array<Set<string>> = [];
  const add = (k: number, it: Item) => {
    const key = `${it.rule}.${it.alt}.${it.dot}.${it.from}`;
    if (keys[k].has(key)) return false;
    keys[k].add(key);
    sets[k].push(it);
    return true;
  };
  for (let k = 0; k <= text.length; k++) {
    sets.push([]);
    keys.push(new Set());
  }
  g[0].forEach((_, alt) => add(0, { rule: 0, alt, dot: 0, from: 0 }));
  for (let k = 0; k <= text.length; k++) {
    // Predict and complete to a fixed point (nullable rules complete in the set they start in).
    for (let grew = true; grew; ) {
      grew = false;
      for (const it of [...sets[k]]) {
        const sym = g[it.rule][it.alt][it.dot];
        if (typeof sym === 'number') {
          g[sym].forEach((_, alt) => (grew = add(k, { rule: sym, alt, dot: 0, from: k }) || grew));
        } else if (sym === undefined) {
          for (const p of sets[it.from]) if (g[p.rule][p.alt][p.dot] === it.rule) grew = add(k, { ...p, dot: p.dot + 1 }) || grew;
        }
      }
    }
    if (k < text.length) for (const it of sets[k]) if (g[it.rule][it.alt][it.dot] === text[k]) add(k + 1, { ...it, dot: it.dot + 1 });
  }
  return sets[text.length].some((it) => it.rule === 0 && it.from === 0 && it.dot === g[0][it.alt].length);
}

/** The rules that derive a finite string, and those that derive the empty one, to a fixed point. */
function derives(g: Bnf): { finite: boolean[]; empty: boolean[] } {
  const fix = (ok: (sym: string | number, known: boolean[]) => boolean) => {
    const known = g.map(() => false);
    for (let grew = true; grew; ) {
      grew = false;
      g.forEach((alts, r) => {
        if (!known[r] && alts.some((seq) => seq.every((sym) => ok(sym, known)))) known[r] = grew = true;
      });
    }
    return known;
  };
  return { finite: fix((sym, known) => typeof sym === 'string' || known[sym]), empty: fix((sym, known) => typeof sym === 'number' && known[sym]) };
}

/**
 * Whether some rule can call itself before a character (through rules that derive the empty string),
 * in alternatives that can finish (the others are never entered).
 */
function leftRecursive(g: Bnf): boolean {
  const { empty, finite } = derives(g);
  const first = g.map((alts) => {
    const out = new Set<number>();
    for (const seq of alts) {
      if (!seq.every((sym) => typeof sym === 'string' || finite[sym])) continue;
      for (const sym of seq) {
        if (typeof sym === 'string') break;
        out.add(sym);
        if (!empty[sym]) break;
      }
    }
    return out;
  });
  const reaches = (from: number, to: number, seen = new Set<number>()): boolean => [...first[from]].some((r) => r === to || (!seen.has(r) && (seen.add(r), reaches(r, to, seen))));
  return g.some((_, r) => finite[r] && reaches(r, r));
}

describe('compileGrammar against an Earley recogniser', () => {
  it('random grammars (recursion, empty alternatives, rules that never finish): the guide takes exactly the strings Earley derives, and never walks into a dead end', () => {
    const rng = new Rng(2026);
    const pick = <T>(xs: readonly T[]) => xs[Math.floor(rng.uniform() * xs.length)];
    let compiled = 0;
    let refusedLeft = 0;
    for (let n = 0; n < 300; n++) {
      const rules = 1 + Math.floor(rng.uniform() * 4);
      // Rules of alternatives of characters, rule names and groups (written in the grammar as
      // parentheses, each a rule of its own here), sequences sometimes led by an empty literal.
      const g: Bnf = [];
      const texts: string[] = [];
      const symbol = (depth: number): string | number => {
        const u = rng.uniform();
        if (u < 0.5) return pick(['a', 'b', 'c']);
        if (u < 0.85 || depth > 0) return Math.floor(rng.uniform() * rules);
        const group = g.push([]) - 1;
        g[group] = alternatives(depth + 1, 2, 2);
        return group;
      };
      const alternatives = (depth: number, most: number, longest: number) => Array.from({ length: 1 + Math.floor(rng.uniform() * most) }, () => Array.from({ length: Math.floor(rng.uniform() * (longest + 1)) }, () => symbol(depth)));
      for (let r = 0; r < rules; r++) g.push([]);
      const render = (alts: Array<Array<string | number>>): string =>
        alts.map((seq) => (seq.length === 0 ? '""' : `${rng.uniform() < 0.2 ? '"" ' : ''}${seq.map((s) => (typeof s === 'string' ? `"${s}"` : s >= rules ? `( ${render(g[s])} )` : s === 0 ? 'root' : `r${s}`)).join(' ')}`)).join(' | ');
      for (let r = 0; r < rules; r++) g[r] = alternatives(0, 3, 3);
      for (let r = 0; r < rules; r++) texts.push(`${r === 0 ? 'root' : `r${r}`} ::= ${render(g[r])}`);
      const text = texts.join('\n');
      let grammar: CompiledGrammar;
      try {
        grammar = compileGrammar(text);
      } catch (e) {
        expect(e, text).toBeInstanceOf(GrammarError);
        const message = (e as Error).message;
        if (/left-recursive/.test(message)) {
          expect(leftRecursive(g), `${text}\n${message}`).toBe(true);
          refusedLeft++;
        } else {
          expect(message, text).toMatch(/derives no finite string/);
          expect(derives(g).finite[0], text).toBe(false);
        }
        continue;
      }
      compiled++;
      expect(leftRecursive(g), text).toBe(false);
      for (let k = 0; k < 60; k++) {
        const s = Array.from({ length: Math.floor(rng.uniform() * 7) }, () => pick(['a', 'b', 'c'])).join('');
        expect(accepts(grammar, s), `${text}\non ${JSON.stringify(s)}`).toBe(earley(g, s));
      }
      const tokens: Array<Uint8Array | null> = [null, ...['a', 'b', 'c', 'ab', 'ca', 'bbc'].map((s) => enc.encode(s))];
      for (let w = 0; w < 10; w++) {
        const guide = new GrammarGuide(grammar, tokens, [0]);
        let out = '';
        for (let step = 0; step < 25 && !guide.done; step++) {
          const mask = guide.allowed();
          const ids = [...mask.keys()].filter((id) => mask[id] && id !== 0);
          // Never a dead end: something may follow, or the reply may end here.
          expect(ids.length > 0 || mask[0] === 1, `${text}\nafter ${JSON.stringify(out)}`).toBe(true);
          expect(mask[0] === 1, `${text}\nend after ${JSON.stringify(out)}`).toBe(earley(g, out));
          if (ids.length === 0 || (mask[0] && rng.uniform() < 0.3)) break;
          const id = pick(ids);
          guide.advance(id);
          out += dec.decode(tokens[id]!);
        }
        if (guide.done) expect(earley(g, out), `${text}\nwalked ${JSON.stringify(out)}`).toBe(true);
      }
    }
    expect(compiled).toBeGreaterThan(120);
    expect(refusedLeft).toBeGreaterThan(10);
  });
});

describe('GrammarGuide', () => {
  /** Printable bytes and a few longer tokens, some of them parts of a character. */
  const vocab: Array<Uint8Array | null> = [
    null,
    ...Array.from({ length: 0x7f - 0x20 }, (_, i) => Uint8Array.of(0x20 + i)),
    Uint8Array.of(0x0a),
    ...['{"', '":', '",', 'true', 'null', ', ', '12', '"a"', '\\u00e9', 'é', '€', '😀', '[]', '{}'].map((s) => enc.encode(s)),
    Uint8Array.of(0xc3),
    Uint8Array.of(0xa9),
  ];

  it('random walks through a JSON grammar write only JSON text; the end token exactly where the text so far is JSON', () => {
    const grammar = compileGrammar(JSON_GRAMMAR);
    let ended = 0;
    for (let seed = 1; seed <= 120; seed++) {
      const rng = new Rng(seed);
      const { bytes, ended: whole, steps } = walk(grammar, vocab, rng, 60, 0.4);
      // At each step the end token against JSON.parse of the text written before it (a text that
      // cuts a character in two is inside a string, so neither).
      for (const { before, end } of steps) expect(end, JSON.stringify(dec.decode(before))).toBe(parsesAsJson(dec.decode(before)));
      expect(bytes.length === 0 || (bytes[0] !== 0xa9 && bytes[0] !== 0xc3)).toBe(true);
      if (whole) {
        ended++;
        expect(parsesAsJson(dec.decode(bytes)), dec.decode(bytes)).toBe(true);
      }
    }
    expect(ended).toBeGreaterThan(40);
  });

  it('allows exactly the tokens that keep the reply a prefix of a string of the grammar', () => {
    const grammar = compileGrammar(BRACKETS);
    const viable = (s: string) => bracketDepth(s) !== null;
    const tokens: Array<Uint8Array | null> = [null, ...['(', ')', 'a', 'b', 'c', 'd', '((', '()', 'a)', ')(', '))', 'é', ' '].map((s) => enc.encode(s))];
    for (let seed = 1; seed <= 60; seed++) {
      const rng = new Rng(seed);
      const g = new GrammarGuide(grammar, tokens, [0]);
      let text = '';
      for (let step = 0; step < 40; step++) {
        const mask = g.allowed();
        tokens.forEach((t, id) => {
          if (t) expect(mask[id] === 1, `${JSON.stringify(text)} + ${JSON.stringify(dec.decode(t))}`).toBe(viable(text + dec.decode(t)));
        });
        expect(mask[0] === 1, text).toBe(bracketDepth(text) === 0);
        const ids = [...mask.keys()].filter((id) => mask[id] && id !== 0);
        const id = ids[Math.floor(rng.uniform() * ids.length)];
        g.advance(id);
        text += dec.decode(tokens[id]!);
      }
    }
  });

  it('never enters an alternative that cannot finish, and ends by itself when nothing can follow', () => {
    const grammar = compileGrammar('root ::= "a" | "a" loop | "c" tail | "e" ("b" loop)?\nloop ::= "b" loop\ntail ::= "d"');
    const g = new GrammarGuide(grammar, BYTES, [0]);
    expect(g.done).toBe(false);
    g.advance(1 + 0x61);
    const mask = g.allowed();
    expect(mask[1 + 0x62]).toBe(0);
    expect(g.done).toBe(true);
    const h = new GrammarGuide(grammar, BYTES, [0]);
    h.advance(1 + 0x63);
    expect([...h.allowed().keys()].filter((id) => h.allowed()[id])).toEqual([1 + 0x64]);
    h.advance(1 + 0x64);
    expect(h.done).toBe(true);
    expect(() => new GrammarGuide(grammar, BYTES, [0]).advance(1 + 0x62)).toThrow(/does not continue/);
    // A byte into a way that cannot finish is not offered either.
    const e = new GrammarGuide(grammar, BYTES, [0]);
    e.advance(1 + 0x65);
    expect(e.allowed()[1 + 0x62]).toBe(0);
    expect(e.done).toBe(true);
  });

  it('keeps a long right-recursive reply and a deeply ambiguous one running', () => {
    // A list written as right recursion: one call per item, returning straight to the caller's caller.
    const list = compileGrammar('root ::= item ("," root)?\nitem ::= [0-9]+');
    expect(accepts(list, Array.from({ length: 3000 }, (_, i) => String(i)).join(','))).toBe(true);
    // Nested deeper than the grammar's table of frames holds: it starts afresh mid-reply, and the reply
    // (and a new one beside it) goes on.
    const nest = compileGrammar('root ::= "(" root ")" | "x"');
    const deep = new GrammarGuide(nest, BYTES, [0]);
    const depth = MAX_FRAMES + 100;
    for (let k = 0; k < depth; k++) deep.advance(1 + 0x28);
    expect(accepts(nest, '((x))')).toBe(true);
    deep.advance(1 + 0x78);
    for (let k = 0; k < depth - 1; k++) deep.advance(1 + 0x29);
    expect(deep.allowed()[0]).toBe(0);
    deep.advance(1 + 0x29);
    expect(deep.done).toBe(true);
    // Each x may close with y or z: 2^n stacks after n x's, cut at MAX_PARSES, and the reply stays valid.
    const ambiguous = compileGrammar('root ::= "x" root "y" | "x" root "z" | ""');
    const n = Math.ceil(Math.log2(MAX_PARSES)) + 4;
    const oracle = new RegExp(`^x{${n}}[yz]{${n}}$`);
    for (let seed = 1; seed <= 5; seed++) {
      const rng = new Rng(seed);
      const g = new GrammarGuide(ambiguous, BYTES, [0]);
      let text = '';
      for (let k = 0; k < n; k++) {
        g.advance(1 + 0x78);
        text += 'x';
      }
      while (!g.allowed()[0]) {
        const mask = g.allowed();
        const ids = [1 + 0x79, 1 + 0x7a].filter((id) => mask[id]);
        expect(ids.length).toBeGreaterThan(0);
        const id = ids[Math.floor(rng.uniform() * ids.length)];
        g.advance(id);
        text += String.fromCharCode(id - 1);
      }
      expect(text).toMatch(oracle);
    }
  });
});
