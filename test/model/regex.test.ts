import { describe, expect, it } from 'vitest';
import { type Nfa, RegexError, compileRegex, fewestToMatch, lengthsToAccept, matchWithin, mostToAccept, regexAccepts, stepRegex } from '../../src/model/regex.js';
import { RegexGuide, compileGuideRegex } from '../../src/model/regex-guide.js';
import { Rng } from '../../src/util/rng.js';

/** Whether the pattern's NFA matches `text` whole. */
function matches(pattern: string | Nfa, text: string): boolean {
  const nfa = typeof pattern === 'string' ? compileRegex(pattern) : pattern;
  let states = nfa.start;
  for (const b of new TextEncoder().encode(text)) {
    states = stepRegex(nfa, states, b);
    if (states.length === 0) return false;
  }
  return regexAccepts(nfa, states);
}

/** Each pattern with a string it matches whole. */
const PATTERNS: Array<[string, string]> = [
  ['abc', 'abc'],
  ['a|bc|', ''],
  ['^[a-c]+x?$', 'cabx'],
  ['(ab|a)*b', 'aabab'],
  ['\\d{2,4}-\\w+', '123-a_b'],
  ['[^a-c]{3}', 'x9 '],
  ['a.c', 'a-c'],
  ['(?:xy){2}z{0,2}', 'xyxyzz'],
  ['(?<year>[0-9]{4})-(0[1-9]|1[0-2])', '2026-12'],
  ['[-a-c]\\.-\\[', '-.-['],
  ['é+|ü?ß', 'ééé'],
  ['\\s\\S\\W\\D', ' a%x'],
  ['a+?b*?c??', 'aab'],
  ['[\\d.]+e[+-]?\\d', '1.5e-3'],
  ['[^]b|[]a', 'xb'],
  ['a\\\\$', 'a\\'],
  ['x\\$', 'x$'],
];
const ALPHABET = ['a', 'b', 'c', 'x', 'y', 'z', '0', '1', '9', '-', '.', ' ', '[', 'é', 'ü', 'ß', '_', 'e', '+', '%'];

describe('compileRegex', () => {
  it('matches exactly the strings the ECMAScript engine matches whole, on random strings', () => {
    const rng = new Rng(7);
    for (const [p, example] of PATTERNS) {
      expect(matches(p, example), `${p} on ${example}`).toBe(true);
      const oracle = new RegExp(`^(?:${p})$`, 'u');
      const nfa = compileRegex(p);
      for (let n = 0; n < 3000; n++) {
        const len = Math.floor(rng.uniform() * 7);
        const text = Array.from({ length: len }, () => ALPHABET[Math.floor(rng.uniform() * ALPHABET.length)]).join('');
        const want = oracle.test(text);
        // Wildcards and negations stand for printable ASCII only: the NFA may match less than the engine, never more.
        const ascii = /^[\x20-\x7e]*$/.test(text);
        if (ascii || !want) expect(matches(nfa, text), `${p} on ${JSON.stringify(text)}`).toBe(want);
      }
    }
  });

  it('never leads a guide into a dead end: states from which no match is reachable are dropped', () => {
    const nfa = compileRegex('a[]c|ad|x[]');
    const afterA = stepRegex(nfa, nfa.start, 0x61);
    expect(afterA.length).toBeGreaterThan(0);
    // After "a" only "d" leads on ("a" + an empty class + "c" can never match), and "x" leads nowhere.
    expect(stepRegex(nfa, afterA, 0x64).length).toBeGreaterThan(0);
    for (const byte of [0x63, 0x61, 0x78]) expect(stepRegex(nfa, afterA, byte)).toEqual([]);
    expect(stepRegex(nfa, nfa.start, 0x78)).toEqual([]);
    expect(() => compileRegex('[]')).toThrow(/matches nothing/);
  });

  it('counts the fewest and the most characters (code points, not bytes) to a match', () => {
    const most = (pattern: string, cap: number) => {
      const nfa = compileRegex(pattern);
      const table = mostToAccept(nfa, cap)!;
      return Math.max(...nfa.start.map((s) => table[s]));
    };
    for (const [pattern, fewest, mostUpTo10] of [
      ['ab|c{3,5}', 2, 5],
      ['c+', 1, 10],
      ['(é|x){2}', 2, 2],
      ['[a-z]*@x\\.org', 6, 10],
      ['(ab)?', 0, 2],
      ['((a*)*b)', 1, 10],
    ] as const) {
      expect(fewestToMatch(compileRegex(pattern), compileRegex(pattern).start), pattern).toBe(fewest);
      expect(most(pattern, 10), pattern).toBe(mostUpTo10);
    }
    // After "ab", a match of ab|abcd is 0 or 2 characters away.
    const nfa = compileRegex('ab|abcd');
    let states = nfa.start;
    for (const b of new TextEncoder().encode('ab')) states = stepRegex(nfa, states, b);
    expect(fewestToMatch(nfa, states)).toBe(0);
    const table = mostToAccept(nfa, 10)!;
    expect(Math.max(...states.map((s) => table[s]))).toBe(2);
  });

  it('refuses what it cannot run', () => {
    // Groups nested past MAX_GROUP_DEPTH (deep enough, unbounded, to overflow the parser's stack).
    for (const p of ['(?=a)b', '(?!a)b', '(a)\\1', 'a^b', 'a$b', '[a', '(a', 'a)', '*a', 'a{3,2}', '\\b', 'a{2000}', '(?:a{1000}){1000}', `${'('.repeat(2000)}a${')'.repeat(2000)}`]) {
      expect(() => compileRegex(p), p).toThrow(RegexError);
    }
  });
});

describe('RegexGuide', () => {
  /** id 0: an end token (no bytes); then every printable byte a token, then a few longer ones. */
  const vocab: Array<Uint8Array | null> = [null, ...Array.from({ length: 0x7f - 0x20 }, (_, i) => Uint8Array.of(0x20 + i)), ...['ab', '-1', '2026-', '@x.', 'é', 'zz'].map((s) => new TextEncoder().encode(s))];

  it('random walks through the mask write only strings the ECMAScript engine matches whole; the end token only where the text matches', () => {
    for (const pattern of ['[a-c]{2,5}-\\d+', '(ab|b)*@[xyz]+\\.(com|org)', '\\d{4}-(0[1-9]|1[0-2])', 'é?zz|a+']) {
      const oracle = new RegExp(`^(?:${pattern})$`, 'u');
      const regex = compileGuideRegex(pattern);
      let ended = 0;
      for (let seed = 1; seed <= 100; seed++) {
        const rng = new Rng(seed);
        const g = new RegexGuide(regex, vocab, [0]);
        const out: number[] = [];
        for (let step = 0; step < 60 && !g.done; step++) {
          const mask = g.allowed();
          const ids = [...mask.keys()].filter((id) => mask[id]);
          expect(ids.length, pattern).toBeGreaterThan(0);
          // The end token is allowed exactly when the text so far matches.
          expect(mask[0] === 1, `${pattern} after ${JSON.stringify(new TextDecoder().decode(Uint8Array.from(out)))}`).toBe(oracle.test(new TextDecoder().decode(Uint8Array.from(out))));
          const id = mask[0] && rng.uniform() < 0.3 ? 0 : ids[Math.floor(rng.uniform() * ids.length)];
          if (id === 0) break;
          g.advance(id);
          out.push(...vocab[id]!);
        }
        const text = new TextDecoder().decode(Uint8Array.from(out));
        if (oracle.test(text)) ended++;
        else expect(g.done, text).toBe(false);
      }
      expect(ended, pattern).toBeGreaterThan(30);
    }
  });
});

describe('lengthsToAccept', () => {
  it('gives each match length of a pattern up to the cap, as every string of up to 9 characters tried against the JavaScript engine says', () => {
    const strings: string[] = [''];
    for (let n = 1; n <= 9; n++) for (const s of strings.filter((x) => x.length === n - 1)) strings.push(`${s}a`, `${s}b`);
    for (const pattern of ['a{2}|a{5,7}', '(ab)+', 'a*b?a{3}', '(a|bb)(a|bb)', 'b|ab{2,3}|a{9}', '(aa|b){0,3}', 'é|ab']) {
      const nfa = compileRegex(pattern);
      const oracle = new RegExp(`^(?:${pattern})$`, 'u');
      const lengths = lengthsToAccept(nfa, 9)!;
      const want = [...new Set(strings.filter((s) => oracle.test(s)).map((s) => s.length))].sort((x, y) => x - y);
      const got = Array.from({ length: 10 }, (_, r) => r).filter((r) => matchWithin(lengths, nfa.start, r, r));
      // é is one character of two bytes: never among the a-b strings, but a match of length 1.
      expect(got, pattern).toEqual(pattern === 'é|ab' ? [1, 2] : want);
    }
    // Lengths past one 32-bit word (the shift carries between words), and the cap.
    const long = compileRegex('a{30,40}|b{70}');
    const ls = lengthsToAccept(long, 64)!;
    expect(Array.from({ length: 65 }, (_, r) => r).filter((r) => matchWithin(ls, long.start, r, r))).toEqual(Array.from({ length: 11 }, (_, i) => 30 + i));
    // A window: any length within it.
    const nfa = compileRegex('a{2}|a{10}');
    expect([matchWithin(lengthsToAccept(nfa, 12)!, nfa.start, 4, 6), matchWithin(lengthsToAccept(nfa, 12)!, nfa.start, 3, 10)]).toEqual([false, true]);
  });
});
